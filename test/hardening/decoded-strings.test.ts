/**
 * "Scanned equals delivered" for what body parsers decode: a signature written with JSON
 * escapes (`\u0045ICAR…`, or EICAR as any JSON string: its backslash is `\\` there) or with
 * urlencoded escapes (`%45ICAR…`, `%u0045`, a raw high-bit byte formidable reads as ASCII) is
 * blocked in every reader (framework + parser) and both failure actions, because the decoded
 * strings of a JSON or urlencoded body are scanned as a second object. Clean bodies with escapes
 * pass with the strings the parser decodes; bodies without escapes cost one exchange only.
 */
import { gzipSync } from 'node:zlib';
import type { IcapProfile } from '@icapkit/core';
import { eicar, type IcapTestServer, startIcapServer } from '@icapkit/testing';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { JsonStrings } from '../../packages/core/src/engine/decoded/readings.js';
import { send } from '../support/http-client.js';
import { type BodyKind, READERS, type Reader } from './decoded-apps.js';

let icap: IcapTestServer;
beforeAll(async () => {
  icap = await startIcapServer({
    recordBodies: true,
    rewrite: { from: 'rewrite-me', to: 'rewritten!' },
    signatures: [{ name: 'Binary.Test', pattern: BINARY }],
  });
});
afterAll(() => icap?.close());
afterEach(() => icap.setScript(undefined));

const E = eicar().toString('latin1');
/** A signature of bytes above 0x7F (what a binary payload's signature is made of). */
const BINARY = Buffer.from([0xde, 0xad, 0xbe, 0xef, 0x90, 0x90, 0xcc, 0xe8, 0xff, 0x00, 0x42]);
const FAIL_ACTIONS = ['fail-closed', 'fail-open'] as const;

const profile = (over: Partial<IcapProfile> = {}): IcapProfile => ({
  name: 'decoded',
  poolGroup: icap.url(),
  serviceUri: '/avscan',
  startupCheck: 'off',
  ...over,
});

const reqmods = () => icap.requests.filter((r) => r.method === 'REQMOD');

/** Every character as `\uXXXX`. */
const jsonAllEscaped = (s: string) =>
  [...s].map((c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`).join('');
/** Every byte as `%XX`. */
const percentAll = (s: string) =>
  [...Buffer.from(s, 'latin1')].map((b) => `%${b.toString(16).padStart(2, '0').toUpperCase()}`).join('');

/** [name, Content-Type, body] per kind of reader: each decodes to a string holding EICAR. */
const THREATS: Record<BodyKind, Array<[string, string, Buffer]>> = {
  json: [
    ['EICAR as a JSON string (\\\\)', 'application/json', Buffer.from(JSON.stringify({ file: E }))],
    ['EICAR in \\u escapes', 'application/json', Buffer.from(`{"file":"${jsonAllEscaped(E)}"}`)],
    ['EICAR in a key', 'application/json; charset=utf-8', Buffer.from(`{${JSON.stringify(E)}:1}`)],
    [
      'EICAR in an array, split by \\/',
      'application/json',
      Buffer.from(`[1,"${E.replace('\\', '\\\\').replace('P', '\\u0050')}"]`),
    ],
  ],
  'json-as-text': [
    ['EICAR as a JSON string, text/plain', 'text/plain', Buffer.from(JSON.stringify({ file: E }))],
    [
      'after a BOM and white space',
      'text/plain; charset=utf-8',
      Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(` \n\t{"f":"${jsonAllEscaped(E)}"}`)]),
    ],
  ],
  form: [
    [
      'EICAR with encodeURIComponent',
      'application/x-www-form-urlencoded',
      Buffer.from(`file=${encodeURIComponent(E)}`),
    ],
    ['EICAR with every byte %XX', 'application/x-www-form-urlencoded', Buffer.from(`a=1&${percentAll(E)}=x`)],
    [
      'EICAR in %uXXXX, Latin-1 charset',
      'application/x-www-form-urlencoded; charset=iso-8859-1',
      Buffer.from(`f=${[...E].map((c) => `%u${c.charCodeAt(0).toString(16).padStart(4, '0')}`).join('')}`),
    ],
    [
      'EICAR as high-bit bytes (formidable reads them as ascii)',
      'application/x-www-form-urlencoded',
      Buffer.concat([
        Buffer.from('f='),
        Buffer.from([...Buffer.from(encodeURIComponent(E))].map((b) => (b === 0x25 ? b : b | 0x80))),
      ]),
    ],
  ],
};

async function withReader(
  reader: Reader,
  p: IcapProfile,
  fn: (app: Awaited<ReturnType<Reader['start']>>) => Promise<void>,
) {
  const app = await reader.start(p);
  try {
    icap.reset();
    await fn(app);
  } finally {
    await app.close();
  }
}

describe.each(READERS.map((r) => [r.name, r] as const))('%s', (_name, reader) => {
  for (const failAction of FAIL_ACTIONS) {
    it.each(THREATS[reader.kind])(
      `${failAction}: %s is blocked, the handler never runs`,
      async (_c, type, body) => {
        await withReader(reader, profile({ failAction }), async (app) => {
          const r = await send(app.url, '/upload', {
            method: 'POST',
            headers: { 'content-type': type },
            body,
          });
          expect(r.status).toBe(403);
          expect(app.delivered).toEqual([]);
          const log = app.logs.at(-1)!;
          expect(log.action).toBe('ICAP_BLOCKED');
          expect(log.significance).toEqual(expect.arrayContaining(['ICAP_BLOCKED', 'DECODED_STRINGS']));
          // The body as sent, then its decoded strings (where the scanner found EICAR).
          const sent = reqmods();
          expect(sent).toHaveLength(2);
          expect(sent[0]!.verdict).toBe('clean');
          expect(sent[1]!.verdict).toBe('infected');
          expect(log.request_logs.at(-1)!.file_name).toBe('(decoded strings)');
        });
      },
    );
  }

  it('a clean body with escapes passes: the handler gets the decoded strings, the scanner saw them', async () => {
    const json = '{"caf\\u00e9":"a \\"quoted\\" \\\\ path\\/x","n":[1,"\\ud83d\\ude00"]}';
    const form = 'caf%C3%A9=a+%22quoted%22+%5C+path%2Fx&n=%F0%9F%98%80';
    const body = reader.kind === 'form' ? form : json;
    const type = {
      form: 'application/x-www-form-urlencoded',
      json: 'application/json',
      'json-as-text': 'text/plain',
    }[reader.kind];
    await withReader(reader, profile(), async (app) => {
      const r = await send(app.url, '/upload', { method: 'POST', headers: { 'content-type': type }, body });
      expect(r.status).toBe(200);
      const strings = app.delivered[0]!;
      expect(strings).toEqual(expect.arrayContaining(['café', 'a "quoted" \\ path/x', '😀']));
      const sent = reqmods();
      expect(sent).toHaveLength(2);
      expect(sent[0]!.body!.toString()).toBe(body);
      const decoded = sent[1]!.body!.toString('utf8');
      for (const s of ['café', 'a "quoted" \\ path/x', '😀']) expect(decoded).toContain(s);
      expect(app.logs.at(-1)!.action).toBe('ICAP_PASSED');
    });
  });

  it('a body without escapes is scanned once', async () => {
    // A form's raw UTF-8 is not "without escapes": formidable reads `café` as `cafC)`.
    const body = reader.kind === 'form' ? 'name=plain&x=cafe' : '{"name":"plain","x":"café"}';
    const type =
      reader.kind === 'form'
        ? 'application/x-www-form-urlencoded'
        : reader.kind === 'json'
          ? 'application/json'
          : 'text/plain';
    await withReader(reader, profile(), async (app) => {
      const r = await send(app.url, '/upload', { method: 'POST', headers: { 'content-type': type }, body });
      expect(r.status).toBe(200);
      expect(app.delivered[0]).toEqual(
        expect.arrayContaining(['plain', reader.kind === 'form' ? 'cafe' : 'café']),
      );
      expect(reqmods()).toHaveLength(1);
      expect(app.logs.at(-1)!.significance).not.toContain('DECODED_STRINGS');
    });
  });
});

describe('the decoded strings as a second object', () => {
  const [express] = READERS;

  it('a gzip-compressed JSON body: its decoded text is lexed (EICAR in escapes, 403)', async () => {
    await withReader(express!, profile(), async (app) => {
      const body = gzipSync(JSON.stringify({ file: E }));
      const r = await send(app.url, '/upload', {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'content-encoding': 'gzip' },
        body,
      });
      expect(r.status).toBe(403);
      expect(app.delivered).toEqual([]);
    });
  });

  it('the same body in 1-byte chunks: the lexers read it the same way', async () => {
    for (const body of [JSON.stringify({ file: E }), `{"f":"${jsonAllEscaped(E)}"}`]) {
      await withReader(express!, profile(), async (app) => {
        const r = await send(app.url, '/upload', {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body,
          chunked: 1,
        });
        expect(r.status).toBe(403);
        expect(app.delivered).toEqual([]);
      });
    }
  });

  it.each([
    ['held in memory (sniffed once it passed)', {}],
    ['spooled to a temp file', { memoryThreshold: 1024 }],
    ['streamed, not held (allow204 off: read while it arrives)', { allow204: false }],
  ])('JSON sent as text/plain, %s: EICAR in it is found', async (_c, over) => {
    const textReader = READERS.find((r) => r.kind === 'json-as-text')!;
    await withReader(textReader, profile(over as Partial<IcapProfile>), async (app) => {
      const filler = 'x'.repeat(4000);
      const r = await send(app.url, '/upload', {
        method: 'POST',
        headers: { 'content-type': 'text/plain' },
        body: `  {"pad":"${filler}","file":${JSON.stringify(E)}}`,
        chunked: 700,
      });
      expect(r.status).toBe(403);
      expect(app.delivered).toEqual([]);
      expect(app.logs.at(-1)!.significance).toContain('DECODED_STRINGS');
    });
  });

  it('a fault in the lexers fails closed, in fail-open too: never a pass without the decoded strings', async () => {
    const write = JsonStrings.prototype.write;
    JsonStrings.prototype.write = () => {
      throw new Error('lexer fault');
    };
    try {
      await withReader(express!, profile({ failAction: 'fail-open' }), async (app) => {
        const r = await send(app.url, '/upload', {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ file: E }),
        });
        expect(r.status).toBe(503);
        expect(app.delivered).toEqual([]);
        expect(app.logs.at(-1)!.error_code).toBe('ICAP_ERR_INTERNAL');
      });
    } finally {
      JsonStrings.prototype.write = write;
    }
  });

  it('decoded strings larger than bufferSize: 413 in fail-open too, never passed unscanned', async () => {
    // 2005 bytes of body, under bufferSize; its readings (percent-decoded, Latin-1, formidable's
    // ascii, Node's unescapeBuffer: U+FFFD for each raw é next to an escape) are four times more.
    const value = `${'é'.repeat(1000)}%41`;
    const formReader = READERS.find((r) => r.kind === 'form')!;
    await withReader(
      formReader,
      profile({ bufferSize: 3000, failAction: 'fail-open', bufferSizeExceedAction: 'fail-open' }),
      async (app) => {
        const r = await send(app.url, '/upload', {
          method: 'POST',
          headers: { 'content-type': 'application/x-www-form-urlencoded' },
          body: `v=${value}`,
        });
        expect(r.status).toBe(413);
        expect(app.delivered).toEqual([]);
        expect(app.logs.at(-1)!.error_code).toBe('ICAP_ERR_REQUEST_TOO_LARGE');
      },
    );
  });

  it('bytes in \\u00XX escapes (binary in a JSON string) are scanned as those bytes too (Latin-1)', async () => {
    const escaped = [...BINARY].map((b) => `\\u00${b.toString(16).padStart(2, '0')}`).join('');
    await withReader(express!, profile(), async (app) => {
      const r = await send(app.url, '/upload', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: `{"payload":"${escaped}"}`,
      });
      expect(r.status).toBe(403);
      expect(app.delivered).toEqual([]);
      expect(reqmods()[1]!.body!.includes(BINARY)).toBe(true);
    });
  });

  it('bytes as Latin-1 characters in a form field are scanned as those bytes, whatever the other fields hold', async () => {
    // The payload's bytes as the characters U+00XX, percent-encoded as UTF-8 (a form sends a
    // string so), beside a field with a character above U+00FF in the same batch of fields.
    const payload = encodeURIComponent(BINARY.toString('latin1'));
    for (const body of [`payload=${payload}&name=%C4%81`, `name=%C4%81&payload=${payload}`]) {
      await withReader(express!, profile({ failAction: 'fail-open' }), async (app) => {
        const r = await send(app.url, '/upload', {
          method: 'POST',
          headers: { 'content-type': 'application/x-www-form-urlencoded' },
          body,
        });
        expect(r.status).toBe(403);
        expect(app.delivered).toEqual([]);
        expect(reqmods()[1]!.body!.includes(BINARY)).toBe(true);
      });
    }
  });

  it.each([
    ['application/x-www-form-urlencoded; charset=iso-8859-1', 'f=caf\xe9'],
    ['application/json; charset=windows-1252', '{"f":"caf\xe9"}'],
  ])('%s with a raw byte above 0x7F: 415, in fail-open too', async (type, body) => {
    await withReader(express!, profile({ failAction: 'fail-open' }), async (app) => {
      const r = await send(app.url, '/upload', {
        method: 'POST',
        headers: { 'content-type': type },
        body: Buffer.from(body, 'latin1'),
      });
      expect(r.status).toBe(415);
      expect(app.delivered).toEqual([]);
      expect(app.logs.at(-1)!.error_code).toBe('ICAP_ERR_CONTENT_TYPE');
    });
  });

  it('the same bodies percent-encoded or escaped (ASCII) pass under those charsets', async () => {
    const formReader = READERS.find((r) => r.name === 'express5 + urlencoded')!;
    await withReader(formReader, profile(), async (app) => {
      const r = await send(app.url, '/upload', {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded; charset=iso-8859-1' },
        body: 'f=caf%E9',
      });
      expect(r.status).toBe(200);
      expect(app.delivered).toEqual([['f', 'café']]);
    });
  });

  it('a scanner that rewrites the decoded strings: 403 (a rewrite cannot be put back into the body)', async () => {
    await withReader(express!, profile({ serviceUri: '/modify' }), async (app) => {
      const r = await send(app.url, '/upload', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: '{"f":"rewrite\\u002dme"}',
      });
      expect(r.status).toBe(403);
      expect(app.delivered).toEqual([]);
      expect(app.logs.at(-1)!.error_message).toMatch(/rewrote the decoded strings/);
    });
  });

  it('a scanner that fails on the decoded strings: 503, and fail-open passes only when it fails its health check too', async () => {
    for (const failAction of FAIL_ACTIONS) {
      for (const broken of ['on the strings', 'on everything'] as const) {
        await withReader(express!, profile({ failAction }), async (app) => {
          // The decoded strings (UTF-8 text) are answered 500; the JSON body itself passes. Or
          // every REQMOD is, the health check's too: a broken server.
          icap.setScript((req) =>
            broken === 'on everything' && req.httpRequest?.target === '/icapkit-health-check'
              ? { kind: 'status', status: 500 }
              : req.httpRequest?.headers.get('content-type') === 'text/plain; charset=utf-8'
                ? { kind: 'status', status: 500 }
                : undefined,
          );
          const r = await send(app.url, '/upload', {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body: '{"f":"caf\\u00e9"}',
          });
          const passes = failAction === 'fail-open' && broken === 'on everything';
          expect(r.status).toBe(passes ? 200 : 503);
          expect(app.delivered).toEqual(passes ? [['f', 'café']] : []);
          const log = app.logs.at(-1)!;
          expect(log.error_code).toBe('ICAP_ERR_SERVER_STATUS');
          // The server answered its check: the upload made the scan fail (under fail-open).
          expect(log.significance.includes('CONTENT_PROVOKED')).toBe(
            failAction === 'fail-open' && broken === 'on the strings',
          );
        });
      }
    }
  });
});
