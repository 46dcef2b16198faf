/**
 * Multipart shapes that parsers read differently, each hiding an EICAR file from a scanner that
 * would parse them one way while the application's parser (multer, @fastify/multipart,
 * koa-body + formidable, a raw-body reader) parses them another. In Express 5/4, Fastify
 * (HTTP/1.1 and HTTP/2) and Koa 3/2 (and Koa 3 over HTTP/2), against the embedded ICAP server (recording what it
 * scanned) and, for a subset, a real c-icap + ClamAV. Each shape is refused (4xx, the handler
 * never runs, an ICAP_ERR_MULTIPART log record) or the handler gets only content the ICAP server
 * scanned. The 97-byte request that used to exit the process gets a 400 and the app keeps serving.
 */
import { gzipSync } from 'node:zlib';
import type { IcapLog, IcapProfile } from '@icapkit/core';
import { eicar, type IcapTestServer, startIcapServer } from '@icapkit/testing';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { type App, type Framework, type Seen, startApp } from '../conformance/apps.js';
import { type CIcapServer, describeWithCIcap, refusingPort, startCIcap } from '../support/c-icap.js';
import { send } from '../support/http-client.js';
import { rawExchange } from '../support/raw-http.js';

interface Variant {
  label: string;
  framework: Framework;
  http2: boolean;
}

const VARIANTS: Variant[] = [
  { label: 'express5', framework: 'express5', http2: false },
  { label: 'express4', framework: 'express4', http2: false },
  { label: 'fastify', framework: 'fastify', http2: false },
  { label: 'fastify h2', framework: 'fastify', http2: true },
  { label: 'koa3', framework: 'koa3', http2: false },
  { label: 'koa2', framework: 'koa2', http2: false },
  { label: 'koa3 h2', framework: 'koa3', http2: true },
  // Web-standard adapters (issue 16), on @hono/node-server: undici's form parser downstream
  { label: 'hono', framework: 'hono', http2: false },
  { label: 'web (withIcap)', framework: 'web', http2: false },
  { label: 'hono h2', framework: 'hono', http2: true },
  // ---- NestJS (issue 16) ----
  { label: 'nest-express', framework: 'nest-express', http2: false },
  { label: 'nest-fastify', framework: 'nest-fastify', http2: false },
  { label: 'nest-fastify h2', framework: 'nest-fastify', http2: true },
  // ---- end NestJS ----
];

const B = 'B0undary';
const E = eicar().toString('latin1');
const CD = (name: string, filename?: string) =>
  `Content-Disposition: form-data; name="${name}"${filename === undefined ? '' : `; filename="${filename}"`}`;
const part = (headers: string, content: string) => `--${B}\r\n${headers}\r\n\r\n${content}\r\n`;
const close = `--${B}--\r\n`;
const clean = part(`${CD('note', 'note.txt')}\r\nContent-Type: text/plain`, 'clean text');
const ct = (extra = '') => `multipart/form-data; boundary=${B}${extra}`;

/** [name, content-type, body, expected status]. Each hides EICAR somewhere some parser looks. */
const SHAPES: Array<[string, string, string, number]> = [
  // Content-Disposition busboy rejects and others accept
  ['filename with a trailing ";"', ct(), `${clean}${part(`${CD('f')}; filename="m.bin";`, E)}${close}`, 400],
  ['filename = "x" (spaces)', ct(), `${clean}${part(`${CD('f')}; filename = "x.com"`, E)}${close}`, 400],
  ['filename=m[1].bin unquoted', ct(), `${clean}${part(`${CD('f')}; filename=m[1].bin`, E)}${close}`, 400],
  ['filename="x" junk', ct(), `${clean}${part(`${CD('f')}; filename="x.com" junk`, E)}${close}`, 400],
  [
    'a duplicate filename parameter',
    ct(),
    `${part(`${CD('f', 'a.txt')}; filename="e.com"`, E)}${close}`,
    400,
  ],
  ['filename*', ct(), `${part(`${CD('f', 'a.txt')}; filename*=UTF-8''e.com`, E)}${close}`, 400],
  // dispositions other than form-data
  [
    'attachment',
    ct(),
    `${clean}${part('Content-Disposition: attachment; name="f"; filename="e.com"', E)}${close}`,
    400,
  ],
  [
    'inline',
    ct(),
    `${clean}${part('Content-Disposition: inline; name="f"; filename="e.com"', E)}${close}`,
    400,
  ],
  [
    'no disposition type',
    ct(),
    `${clean}${part('Content-Disposition: name="f"; filename="e.com"', E)}${close}`,
    400,
  ],
  [
    'no Content-Disposition',
    ct(),
    `${clean}${part('Content-Type: application/octet-stream', E)}${close}`,
    400,
  ],
  [
    'a part without a name',
    ct(),
    `${clean}${part('Content-Disposition: form-data; filename="e.com"', E)}${close}`,
    400,
  ],
  ['a field without a name', ct(), `${clean}${part('Content-Disposition: form-data', E)}${close}`, 400],
  // text between a delimiter and its CRLF
  ['--B X-Pad: 1', ct(), `${clean}--${B} X-Pad: 1\r\n${CD('f', 'e.com')}\r\n\r\n${E}\r\n${close}`, 400],
  ['--B-X: header', ct(), `${clean}--${B}-X: 1\r\n${CD('f', 'e.com')}\r\n\r\n${E}\r\n${close}`, 400],
  ['--B + padding', ct(), `${clean}--${B}   \r\n${CD('f', 'e.com')}\r\n\r\n${E}\r\n${close}`, 400],
  ['padding on the first delimiter', ct(), `--${B} \r\n${CD('f', 'e.com')}\r\n\r\n${E}\r\n${close}`, 400],
  [
    'a header on the first delimiter line',
    ct(),
    `--${B}X-Pad: 1\r\n${CD('f', 'e.com')}\r\n\r\n${E}\r\n${close}`,
    400,
  ],
  [
    '--BQ inside a file (formidable)',
    ct(),
    `${part(CD('f', 'a.txt'), `text\r\n--${B}Q\r\n${CD('g', 'e.com')}\r\n\r\n${E}`)}${close}`,
    400,
  ],
  [
    'an LF-only delimiter inside a file',
    ct(),
    `${part(CD('f', 'a.txt'), `x\n--${B}\r\n${CD('g', 'e.com')}\r\n\r\n${E}`)}${close}`,
    400,
  ],
  // bytes after the close delimiter, parts after the first --B--
  ['a part after the close delimiter', ct(), `${clean}${close}${part(CD('f', 'e.com'), E)}${close}`, 400],
  ['an epilogue', ct(), `${clean}${close}${E}`, 400],
  ['a preamble', ct(), `${E}\r\n${clean}${close}`, 400],
  // boundary-like Content-Type parameters
  [
    "boundary*=utf-8''AAA; boundary=B",
    `multipart/form-data; boundary*=utf-8''AAA; boundary=${B}`,
    `--AAA\r\n${CD('f', 'e.com')}\r\n\r\n${E}\r\n--AAA--\r\n${clean}${close}`,
    400,
  ],
  [
    'xboundary=AAA',
    `multipart/form-data; xboundary=AAA; boundary=${B}`,
    `--AAA\r\n${CD('f', 'e.com')}\r\n\r\n${E}\r\n--AAA--\r\n`,
    400,
  ],
  [
    'x="boundary=AAA"',
    `multipart/form-data; x="boundary=AAA"; boundary=${B}`,
    `--AAA\r\n${CD('f', 'e.com')}\r\n\r\n${E}\r\n--AAA--\r\n`,
    400,
  ],
  [
    'two boundary parameters',
    `multipart/form-data; boundary=AAA; boundary=${B}`,
    `--AAA\r\n${CD('f', 'e.com')}\r\n\r\n${E}\r\n--AAA--\r\n`,
    400,
  ],
  // transfer encodings, header syntax
  [
    'Content-Transfer-Encoding: base64',
    ct(),
    `${part(`${CD('f', 'e.com')}\r\nContent-Transfer-Encoding: base64`, eicar().toString('base64'))}${close}`,
    400,
  ],
  [
    'Content-Transfer-Encoding: quoted-printable',
    ct(),
    `${part(`${CD('f', 'e.com')}\r\nContent-Transfer-Encoding: quoted-printable`, E)}${close}`,
    400,
  ],
  ['LF-only part headers', ct(), `--${B}\r\n${CD('f', 'e.com')}\n\n${E}\r\n${close}`, 400],
  [
    'header folding',
    ct(),
    `${part(`Content-Disposition: form-data; name="f";\r\n filename="e.com"`, E)}${close}`,
    400,
  ],
  ['a duplicate part header', ct(), `${part(`${CD('f', 'a.txt')}\r\n${CD('g', 'e.com')}`, E)}${close}`, 400],
  // other multipart types (koa-body parses any multipart/*)
  ['multipart/mixed', `multipart/mixed; boundary=${B}`, `${part(CD('f', 'e.com'), E)}${close}`, 415],
  ['multipart/related', `multipart/related; boundary=${B}`, `${part(CD('f', 'e.com'), E)}${close}`, 415],
];

/** The nameless file part (97 bytes) that used to throw inside busboy's 'file' handler. */
const NAMELESS = `--b\r\nContent-Disposition: form-data; filename="a.txt"\r\nContent-Type: text/plain\r\n\r\nhello\r\n--b--\r\n`;

let icap: IcapTestServer;
beforeAll(async () => {
  icap = await startIcapServer({ recordBodies: true });
});
afterAll(() => icap?.close());

/** Bodies the ICAP server received (what was scanned), since the last reset. */
function scanned(): Buffer[] {
  return icap.requests.filter((r) => r.method === 'REQMOD').map((r) => r.body ?? Buffer.alloc(0));
}

/** Every file and field the handler's parser extracted has content the ICAP server scanned. */
function expectOnlyScanned(seen: Seen, bodies: Buffer[]): void {
  for (const f of seen.files ?? []) {
    expect(
      bodies.some((b) => b.equals(f.data)),
      `file ${f.name} was scanned`,
    ).toBe(true);
  }
  for (const [name, value] of Object.entries(seen.fields ?? {})) {
    for (const v of Array.isArray(value) ? value : [value]) {
      const bytes = Buffer.from(String(v));
      if (bytes.length === 0) continue;
      expect(
        bodies.some((b) => b.equals(bytes)),
        `field ${name} was scanned`,
      ).toBe(true);
    }
  }
}

describe.each(VARIANTS)('$label', ({ framework, http2 }) => {
  let app: App;
  let logs: IcapLog[] = [];
  beforeAll(async () => {
    const profile: IcapProfile = {
      name: 'shapes',
      poolGroup: icap.url(),
      serviceUri: '/avscan',
      onLog: (l) => logs.push(l),
    };
    app = await startApp(framework, profile, { http2 });
  });
  afterAll(() => app?.close());
  afterEach(() => {
    logs = [];
    app.seen.length = 0;
    icap.reset();
  });
  const post = (path: string, contentType: string, body: string | Buffer) =>
    send(app.url, path, {
      http2,
      body: typeof body === 'string' ? Buffer.from(body, 'latin1') : body,
      headers: { 'content-type': contentType, accept: 'application/json' },
    });

  it('the 97-byte nameless file part: 400, and the app keeps serving', async () => {
    expect(Buffer.byteLength(NAMELESS)).toBe(97);
    const r = await post('/multipart', 'multipart/form-data; boundary=b', NAMELESS);
    expect(r.status).toBe(400);
    expect(JSON.parse(r.text).detail).toMatch(/no name/);
    expect(app.seen).toHaveLength(0);
    expect(logs[0]).toMatchObject({ error_code: 'ICAP_ERR_MULTIPART', http_response_code: 400 });
    // The same part without filename (a field without a name): 400 too, not an ICAP failure.
    const field = NAMELESS.replace('; filename="a.txt"', '');
    expect((await post('/multipart', 'multipart/form-data; boundary=b', field)).status).toBe(400);
    expect(logs[1]).toMatchObject({ error_code: 'ICAP_ERR_MULTIPART', http_response_code: 400 });
    const health = await send(app.url, '/health', { http2 });
    expect(health.status).toBe(200);
    expect(scanned()).toHaveLength(0);
  });

  it.each(SHAPES)('%s: refused, nothing reaches the handler', async (_name, contentType, body, status) => {
    const r = await post('/multipart', contentType, body);
    expect(r.status).toBe(status);
    expect(app.seen).toHaveLength(0);
    expect(logs[0]).toMatchObject({
      action: 'ICAP_BLOCKED',
      error_code: 'ICAP_ERR_MULTIPART',
      http_response_code: status,
    });
    // Refused before anything of it was scanned or delivered.
    expect(scanned().some((b) => b.includes(eicar()))).toBe(false);
  });

  it('a well-formed form: the handler gets only scanned parts, under a fresh boundary', async () => {
    const body =
      part(CD('title'), 'two files') +
      part(`${CD('doc', 'notes.txt')}\r\nContent-Type: text/plain`, 'some notes\r\n--B0undar') +
      part(`${CD('bin', 'a b.bin')}\r\nContent-Type: application/octet-stream`, '\x00\x01binary') +
      close;
    const r = await post('/multipart', ct(), body);
    expect(r.status).toBe(200);
    const seen = app.seen[0]!;
    // formidable (Koa) lists files in the order their temp files were written, not the form's:
    // there the order is not the handler's to see (the canonical form's order is tested in core).
    const files = framework.startsWith('koa')
      ? [...seen.files!].sort((x, y) => y.field.localeCompare(x.field))
      : seen.files!;
    expect(files.map((f) => [f.field, f.name, f.data.toString('latin1')])).toEqual([
      ['doc', 'notes.txt', 'some notes\r\n--B0undar'],
      ['bin', 'a b.bin', '\x00\x01binary'],
    ]);
    expect(seen.fields).toMatchObject({ title: 'two files' });
    expectOnlyScanned(seen, scanned());
    expect(String(seen.headers['content-type'])).toMatch(
      /^multipart\/form-data; boundary=----icapkit[0-9a-f]{32}$/,
    );
    expect(seen.icap?.action).toBe('ICAP_PASSED');
    expect(logs[0]).toMatchObject({ action: 'ICAP_PASSED', file_names: ['notes.txt', 'a b.bin'] });
  });

  it('a field with an undecodable charset is scanned as its raw bytes (EICAR found)', async () => {
    for (const charset of ['x-unknown-42', 'utf-16be']) {
      const body = part(`${CD('comment')}\r\nContent-Type: text/plain; charset=${charset}`, E) + close;
      const r = await post('/multipart', ct(), body);
      expect(r.status, charset).toBe(403);
    }
    expect(app.seen).toHaveLength(0);
  });

  it('a field labelled utf-16be reaches every parser as the bytes scanned, not decoded into text the scanner never saw', async () => {
    // EICAR written in UTF-16BE: the scanner sees the UTF-16 bytes; a parser honouring the
    // label would hand the handler the EICAR string. The canonical form drops the label.
    const utf16 = Buffer.from(E, 'utf16le').swap16().toString('latin1');
    const body = part(`${CD('comment')}\r\nContent-Type: text/plain; charset=utf-16be`, utf16) + close;
    const r = await post('/multipart', ct(), body);
    expect(r.status).toBe(200);
    const seen = app.seen[0]!;
    expect(JSON.stringify(seen.fields ?? {})).not.toContain('EICAR-STANDARD-ANTIVIRUS-TEST-FILE');
    expect(scanned().some((b) => b.toString('latin1') === utf16)).toBe(true);
  });

  it('EICAR in a well-formed form is blocked (403), the handler never runs', async () => {
    const r = await post('/multipart', ct(), `${clean}${part(CD('f', 'e.com'), E)}${close}`);
    expect(r.status).toBe(403);
    expect(app.seen).toHaveLength(0);
  });

  if (framework !== 'fastify') {
    it('a raw-body handler gets the canonical form, not the bytes sent', async () => {
      const body = `${part(`${CD('doc', 'n.txt')}\r\nX-Extra: dropped\r\nContent-Transfer-Encoding: binary`, 'abc')}${close}`;
      const r = await post('/raw', ct(), body);
      expect(r.status).toBe(200);
      const seen = app.seen[0]!;
      const boundary = /boundary=(\S+)$/.exec(String(seen.headers['content-type']))![1]!;
      expect(boundary).not.toBe(B);
      expect(seen.raw!.toString('latin1')).toBe(
        `--${boundary}\r\nContent-Disposition: form-data; name="doc"; filename="n.txt"\r\nContent-Type: application/octet-stream\r\n\r\nabc\r\n--${boundary}--\r\n`,
      );
      expect(Number(seen.headers['content-length'])).toBe(seen.raw!.length);
      expect(scanned().some((b) => b.toString() === 'abc')).toBe(true);
    });
  }
});

describe('multipart: whole', () => {
  let app: App | undefined;
  let logs: IcapLog[] = [];
  afterEach(async () => {
    await app?.close();
    app = undefined;
    logs = [];
    icap.reset();
  });

  for (const framework of ['express5', 'fastify', 'koa3'] as const) {
    it(`${framework}: the same shapes are refused before the raw body is passed on; a well-formed form passes as sent`, async () => {
      app = await startApp(framework, {
        name: 'whole',
        poolGroup: icap.url(),
        serviceUri: '/avscan',
        multipart: 'whole',
        onLog: (l) => logs.push(l),
      });
      // EICAR inside base64 is not found by the scanner, yet formidable decodes it.
      for (const [name, contentType, body, status] of SHAPES.filter(([n]) =>
        [
          'Content-Transfer-Encoding: base64',
          '--B X-Pad: 1',
          'attachment',
          'multipart/mixed',
          'a part without a name',
        ].includes(n),
      )) {
        const r = await send(app.url, '/multipart', {
          body: Buffer.from(body, 'latin1'),
          headers: { 'content-type': contentType },
        });
        // The raw body is scanned while the parser checks it: a 403 (EICAR seen) may come first.
        if (status === 400) expect([400, 403], name).toContain(r.status);
        else expect(r.status, name).toBe(status);
      }
      expect(app.seen).toHaveLength(0);
      const good = `${clean}${close}`;
      const r = await send(app.url, '/multipart', { body: good, headers: { 'content-type': ct() } });
      expect(r.status).toBe(200);
      expect(app.seen[0]!.files![0]!.data.toString()).toBe('clean text');
      expect(scanned().some((b) => b.toString('latin1') === good)).toBe(true);
    });
  }

  for (const framework of ['express5', 'fastify', 'koa3'] as const) {
    it(`${framework}: part headers that make parsers transform content are refused (Content-Transfer-Encoding, a field charset other than UTF-8)`, async () => {
      app = await startApp(framework, {
        name: 'whole',
        poolGroup: icap.url(),
        serviceUri: '/avscan',
        multipart: 'whole',
        onLog: (l) => logs.push(l),
      });
      const utf16 = Buffer.from(E, 'utf16le').swap16().toString('latin1');
      const bodies = [
        // formidable throws on `new StringDecoder('8bit')` in a callback nobody awaits.
        part(`${CD('f0')}\r\nContent-Transfer-Encoding: 8bit`, 'clean'),
        part(`${CD('f1', 'a.txt')}\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: 7bit`, 'clean'),
        part(`${CD('comment')}\r\nContent-Type: text/plain; charset=utf-16be`, utf16),
      ];
      for (const b of bodies) {
        const r = await send(app.url, '/multipart', {
          body: Buffer.from(b + close, 'latin1'),
          headers: { 'content-type': ct() },
        });
        expect(r.status, b.slice(0, 90)).toBe(400);
      }
      expect(app.seen).toHaveLength(0);
      expect(logs.every((l) => l.error_code === 'ICAP_ERR_MULTIPART')).toBe(true);
      // UTF-8 fields and files without a transfer encoding pass as sent.
      const ok =
        part(`${CD('title')}\r\nContent-Type: text/plain; charset=utf-8`, 'h\xc3\xa9') + clean + close;
      const r = await send(app.url, '/multipart', {
        body: Buffer.from(ok, 'latin1'),
        headers: { 'content-type': ct() },
      });
      expect(r.status).toBe(200);
    });
  }

  it('base64 in whole mode is refused with 400 (ICAP_ERR_MULTIPART), not scanned and passed', async () => {
    app = await startApp('koa3', {
      name: 'whole',
      poolGroup: icap.url(),
      serviceUri: '/avscan',
      multipart: 'whole',
      onLog: (l) => logs.push(l),
    });
    const body = `${part(`${CD('f', 'e.com')}\r\nContent-Transfer-Encoding: base64`, eicar().toString('base64'))}${close}`;
    const r = await send(app.url, '/multipart', { body, headers: { 'content-type': ct() } });
    expect(r.status).toBe(400);
    expect(app.seen).toHaveLength(0);
    expect(logs[0]).toMatchObject({ error_code: 'ICAP_ERR_MULTIPART', http_response_code: 400 });
  });
});

describe('fail-open with the ICAP server down: a client cannot choose it with a malformed form', () => {
  for (const mode of ['per-file', 'whole'] as const) {
    for (const framework of ['express5', 'koa3'] as const) {
      it(`${mode}, ${framework}: ambiguous shapes still get 400; a well-formed form passes unscanned as the profile allows`, async () => {
        const logs: IcapLog[] = [];
        const app = await startApp(framework, {
          name: 'fail-open',
          poolGroup: `icap://127.0.0.1:${await refusingPort()}`,
          serviceUri: '/avscan',
          failAction: 'fail-open',
          multipart: mode,
          onLog: (l) => logs.push(l),
        });
        try {
          for (const [name, contentType, body] of SHAPES.filter(([n]) =>
            [
              '--BQ inside a file (formidable)',
              'a part without a name',
              'Content-Transfer-Encoding: base64',
              'an epilogue',
            ].includes(n),
          )) {
            const r = await send(app.url, '/multipart', {
              body: Buffer.from(body, 'latin1'),
              headers: { 'content-type': contentType },
            });
            expect([name, r.status]).toEqual([name, 400]);
          }
          expect(app.seen).toHaveLength(0);
          expect(
            logs.every((l) => l.error_code === 'ICAP_ERR_MULTIPART' && l.fail_action === undefined),
          ).toBe(true);
          const ok = await send(app.url, '/multipart', {
            body: `${clean}${close}`,
            headers: { 'content-type': ct() },
          });
          expect(ok.status).toBe(200);
          expect(app.seen[0]!.files!.map((f) => f.data.toString())).toEqual(['clean text']);
          expect(logs.at(-1)).toMatchObject({ action: 'ICAP_FAILED', fail_action: 'fail-open' });
          // Per-file mode delivers its own serialisation even unscanned; whole mode the bytes sent.
          const boundary = /boundary=(\S+)$/.exec(String(app.seen[0]!.headers['content-type']))![1];
          if (mode === 'per-file') expect(boundary).toMatch(/^----icapkit/);
          else expect(boundary).toBe(B);
        } finally {
          await app.close();
        }
      });
    }
  }
});

describe('fail-open, whole mode: the ICAP failure comes before the malformed end of the form', () => {
  it('the form is still checked to its end: 400, not the raw body passed unscanned', async () => {
    const logs: IcapLog[] = [];
    const app = await startApp('express5', {
      name: 'fail-open-whole',
      poolGroup: `icap://127.0.0.1:${await refusingPort()}`,
      serviceUri: '/avscan',
      failAction: 'fail-open',
      multipart: 'whole',
      onLog: (l) => logs.push(l),
    });
    try {
      const tail = `${part(CD('f', 'e.com'), E)}${close}`;
      const head = `POST /multipart HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: ${ct()}\r\nContent-Length: ${clean.length + close.length + tail.length}\r\n\r\n`;
      // The connection to the ICAP server is refused while the client is still sending.
      const r = await rawExchange(app.url, [head, clean, { pause: 500 }, close, tail], { responses: 1 });
      expect(r.responses[0]?.status).toBe(400);
      expect(app.seen).toHaveLength(0);
      expect(logs[0]).toMatchObject({ error_code: 'ICAP_ERR_MULTIPART' });
    } finally {
      await app.close();
    }
  });
});

describe('a threat found before the form turns out malformed', () => {
  it('is not lost: 403 naming it, not 400', async () => {
    const logs: IcapLog[] = [];
    const app = await startApp('express5', {
      name: 'threat-first',
      poolGroup: icap.url(),
      serviceUri: '/avscan',
      onLog: (l) => logs.push(l),
    });
    try {
      // The infected part ends where the clean one begins: both in the first chunk.
      const infected = part(`${CD('f', 'e.com')}\r\nContent-Type: application/octet-stream`, E) + clean;
      const rest = `--${B} X-Pad: 1\r\n${CD('g', 'x.txt')}\r\n\r\nmore\r\n${close}`;
      const head = `POST /multipart HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: ${ct()}\r\nContent-Length: ${infected.length + rest.length}\r\n\r\n`;
      // The infected part is complete (and scanned) before the malformed delimiter arrives.
      const r = await rawExchange(app.url, [head, infected, { pause: 700 }, rest], { responses: 1 });
      expect(r.responses[0]?.status).toBe(403);
      expect(app.seen).toHaveLength(0);
      expect(logs[0]).toMatchObject({ action: 'ICAP_BLOCKED', error_code: 'ICAP_ERR_MULTIPART' });
      expect(logs[0]!.significance).toEqual(expect.arrayContaining(['ICAP_BLOCKED', 'MULTIPART_REFUSED']));
    } finally {
      await app.close();
    }
  });
});

describe('a gzip-compressed form', () => {
  for (const framework of ['express5', 'fastify', 'koa3'] as const) {
    it(`${framework}: scanned decoded, delivered as the decoded canonical form without Content-Encoding`, async () => {
      const app = await startApp(framework, { name: 'gzip', poolGroup: icap.url(), serviceUri: '/avscan' });
      try {
        const headers = { 'content-type': ct(), 'content-encoding': 'gzip' };
        const bad = await send(app.url, '/multipart', {
          body: gzipSync(Buffer.from(`${clean}${part(CD('f', 'e.com'), E)}${close}`, 'latin1')),
          headers,
        });
        expect(bad.status).toBe(403);
        const ok = await send(app.url, '/multipart', {
          body: gzipSync(Buffer.from(`${clean}${close}`)),
          headers,
        });
        expect(ok.status).toBe(200);
        const seen = app.seen[0]!;
        expect(seen.files!.map((f) => f.data.toString())).toEqual(['clean text']);
        expect(seen.headers['content-encoding']).toBeUndefined();
        expect(String(seen.headers['content-type'])).toMatch(/boundary=----icapkit/);
      } finally {
        await app.close();
      }
    });
  }
});

describe("multipartFields: 'skip'", () => {
  it('a field whose name holds filename= is scanned anyway', async () => {
    const app = await startApp('koa3', {
      name: 'skip',
      poolGroup: icap.url(),
      serviceUri: '/avscan',
      multipartFields: 'skip',
    });
    try {
      // Serialised as name="x; filename=e.com; ": a regex-based parser could find a file name in it.
      const sneaky = part('Content-Disposition: form-data; name="x; filename=e.com; "', E) + close;
      expect(
        (await send(app.url, '/multipart', { body: sneaky, headers: { 'content-type': ct() } })).status,
      ).toBe(403);
      // A plain field is skipped, as the profile says.
      const plain = part(CD('comment'), 'not scanned') + close;
      expect(
        (await send(app.url, '/multipart', { body: plain, headers: { 'content-type': ct() } })).status,
      ).toBe(200);
      expect(scanned().some((b) => b.toString() === 'not scanned')).toBe(false);
      expect(app.seen[0]!.fields).toMatchObject({ comment: 'not scanned' });
    } finally {
      await app.close();
    }
  });
});

describe('otherMultipart: whole', () => {
  it('scans multipart/mixed as raw bytes when the profile says so (EICAR found, clean passes)', async () => {
    const app = await startApp('express5', {
      name: 'mixed',
      poolGroup: icap.url(),
      serviceUri: '/avscan',
      otherMultipart: 'whole',
    });
    try {
      const mixed = `multipart/mixed; boundary=${B}`;
      const bad = await send(app.url, '/raw', {
        body: `${part(CD('f', 'e.com'), E)}${close}`,
        headers: { 'content-type': mixed },
      });
      expect(bad.status).toBe(403);
      const good = `${clean}${close}`;
      const ok = await send(app.url, '/raw', { body: good, headers: { 'content-type': mixed } });
      expect(ok.status).toBe(200);
      expect(app.seen[0]!.raw!.toString()).toBe(good);
    } finally {
      await app.close();
    }
  });
});

describeWithCIcap('multipart shapes against real c-icap + ClamAV', () => {
  let server: CIcapServer;
  beforeAll(async () => {
    server = await startCIcap();
  });
  afterAll(() => server?.stop());

  for (const framework of ['fastify', 'koa3', 'hono'] as const) {
    it(`${framework}: shapes that delivered EICAR to the README's parsers are refused; EICAR in a clean form is blocked`, async () => {
      const app = await startApp(framework, {
        name: 'c-icap',
        poolGroup: `icap://127.0.0.1:${server.port}`,
        serviceUri: '/avscan',
      });
      try {
        for (const [name, contentType, body, status] of SHAPES.filter(([n]) =>
          [
            'filename with a trailing ";"',
            '--BQ inside a file (formidable)',
            'attachment',
            'multipart/mixed',
            'Content-Transfer-Encoding: base64',
            "boundary*=utf-8''AAA; boundary=B",
          ].includes(n),
        )) {
          const r = await send(app.url, '/multipart', {
            body: Buffer.from(body, 'latin1'),
            headers: { 'content-type': contentType },
          });
          expect([name, r.status]).toEqual([name, status]);
        }
        expect(app.seen).toHaveLength(0);
        const blocked = await send(app.url, '/multipart', {
          body: `${clean}${part(CD('f', 'e.com'), E)}${close}`,
          headers: { 'content-type': ct() },
        });
        expect(blocked.status).toBe(403);
        const ok = await send(app.url, '/multipart', {
          body: `${clean}${close}`,
          headers: { 'content-type': ct() },
        });
        expect(ok.status).toBe(200);
        expect(app.seen[0]!.files!.map((f) => f.data.toString())).toEqual(['clean text']);
      } finally {
        await app.close();
      }
    }, 60_000);
  }
});
