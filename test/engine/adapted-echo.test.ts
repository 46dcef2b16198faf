/**
 * A 200 that carries the request back (c-icap's `echo`, a modifying server): the engine reads
 * the returned body, compares it and its head with what was sent, and passes the original
 * (ICAP_PASSED) or delivers the server's bytes (ICAP_MODIFIED). The cheap paths (a head
 * returned in the same field order, nothing stored while an echo matches, a response body
 * read to its end) must decide exactly as the general ones (fields in another order, a body
 * held in a temp file, a stored difference): same handler bytes, status and log record.
 */
import { request as httpRequest } from 'node:http';
import { createServer, type Server } from 'node:net';
import { createEngine, type IcapEngine, type IcapLog, type IcapProfile } from '@icapkit/core';
import { type Fault, type IcapTestServer, type RecordedRequest, startIcapServer } from '@icapkit/testing';
import { afterEach, describe, expect, it } from 'vitest';
import { type ScanServer, startScanServer } from '../support/scan-server.js';

let icap: IcapTestServer | undefined;
let engine: IcapEngine | undefined;
let app: ScanServer | undefined;

afterEach(async () => {
  await app?.close();
  await engine?.close();
  await icap?.close();
  app = undefined;
  engine = undefined;
  icap = undefined;
});

async function setup(
  script: (r: RecordedRequest) => Fault | undefined,
  profile: Partial<IcapProfile> = {},
  service = '/avscan',
) {
  icap = await startIcapServer({ script: (r) => (r.method === 'OPTIONS' ? undefined : script(r)) });
  engine = createEngine({
    name: 'echo',
    poolGroup: { name: 'g', pools: [{ name: 'g', servers: [icap.url()] }] },
    serviceUri: service,
    health: { failureLimit: 100 },
    ...profile,
  });
  app = await startScanServer(engine);
  return app;
}

function post(url: string, body: Buffer, headers: Record<string, string> = {}) {
  return new Promise<{ status: number; text: string }>((resolve, reject) => {
    const req = httpRequest(
      new URL('/upload/report.pdf', url),
      {
        method: 'POST',
        headers: {
          'content-type': 'application/pdf',
          'x-first': 'one',
          'x-second': 'two',
          'content-length': String(body.length),
          ...headers,
        },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode!, text: Buffer.concat(chunks).toString() }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

interface Echo {
  /** The returned body (default: the body sent). */
  body?: Buffer;
  /** Pieces the returned body is cut into (default 1). */
  chunks?: number;
  /** Rewrites the returned HTTP head (the one received, CRLFs included). */
  head?: (head: string) => string;
  /** ICAP header lines added to the 200. */
  icapHeaders?: string;
}

/** A 200 returning the request as the server received it, changed as `e` says. */
function echoOf(r: RecordedRequest, sent: Buffer, e: Echo = {}): Fault {
  const raw = r.rawHead.toString('latin1');
  let http = raw.slice(raw.indexOf('\r\n\r\n') + 4);
  if (e.head !== undefined) http = e.head(http);
  const body = e.body ?? sent;
  // A whole answer declares its body's length (one that does not is partial: campaign-bs BS6).
  if (e.body !== undefined) http = http.replace(/content-length: *\d+/i, `content-length: ${body.length}`);
  const n = Math.max(1, Math.min(e.chunks ?? 1, body.length));
  const size = Math.ceil(body.length / n);
  const parts: Buffer[] = [];
  for (let at = 0; at < body.length; at += size) {
    const c = body.subarray(at, at + size);
    parts.push(Buffer.from(`${c.length.toString(16)}\r\n`, 'latin1'), c, Buffer.from('\r\n'));
  }
  parts.push(Buffer.from('0\r\n\r\n'));
  const icapHead =
    `ICAP/1.0 200 OK\r\nISTag: "echo-1"\r\n${e.icapHeaders ?? ''}` +
    `Encapsulated: req-hdr=0, req-body=${Buffer.byteLength(http, 'latin1')}\r\n\r\n`;
  return { kind: 'raw', response: Buffer.concat([Buffer.from(icapHead + http, 'latin1'), ...parts]) };
}

/** What a log record says about the request, without its timings, ids and exchanged headers. */
function essence(log: IcapLog) {
  const entry = log.request_logs[0];
  return {
    action: log.action,
    significant: log.significant,
    significance: [...log.significance].sort(),
    error_code: log.error_code,
    fail_action: log.fail_action,
    entry: entry && {
      action: entry.action,
      icap_response_code: entry.icap_response_code,
      http_response_code: entry.http_response_code,
      modified_content_length: entry.modified_content_length,
      error_code: entry.error_code,
    },
  };
}

/**
 * An ICAP server that answers OPTIONS, and a REQMOD (once its body is in) with a 200 that
 * returns the request head and the first bytes of its body, then closes or resets.
 */
async function droppingServer(ending: 'close' | 'reset'): Promise<{ url: string; close(): Promise<void> }> {
  const server: Server = createServer((socket) => {
    let buffered = '';
    socket.on('error', () => {});
    socket.on('data', (d: Buffer) => {
      buffered += d.toString('latin1');
      if (buffered.startsWith('OPTIONS') && buffered.includes('\r\n\r\n')) {
        buffered = '';
        socket.write(
          'ICAP/1.0 200 OK\r\nISTag: "drop-1"\r\nMethods: REQMOD\r\nAllow: 204\r\nEncapsulated: null-body=0\r\n\r\n',
        );
        return;
      }
      if (!buffered.startsWith('REQMOD') || !buffered.endsWith('\r\n0\r\n\r\n')) return;
      const head = buffered.indexOf('\r\n\r\n');
      const http = buffered.slice(head + 4, buffered.indexOf('\r\n\r\n', head + 4) + 4);
      socket.write(
        `ICAP/1.0 200 OK\r\nISTag: "drop-1"\r\nEncapsulated: req-hdr=0, req-body=${Buffer.byteLength(http, 'latin1')}\r\n\r\n` +
          `${http}${(BODY.length).toString(16)}\r\n${BODY.subarray(0, 100).toString('latin1')}`,
        'latin1',
        () => (ending === 'close' ? socket.end() : socket.resetAndDestroy()),
      );
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  return {
    url: `icap://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections?.();
      }),
  };
}

const BODY = Buffer.from('a small upload, returned as it came by an echo service\n'.repeat(40));

/** One request through an engine whose server answers with `e` (or `fault`). */
async function through(
  e: Echo | ((r: RecordedRequest) => Fault),
  body = BODY,
  profile: Partial<IcapProfile> = {},
  headers: Record<string, string> = {},
) {
  const a = await setup((r) => (typeof e === 'function' ? e(r) : echoOf(r, body, e)), profile);
  const res = await post(a.url, body, headers);
  const result = {
    status: res.status,
    seen: a.seen[0] && {
      body: a.seen[0].body,
      // Without Host: each run has its own port.
      headers: { ...a.seen[0].headers, host: undefined },
      url: a.seen[0].url,
    },
    log: essence(a.logs[0]!),
  };
  await app?.close();
  await engine?.close();
  await icap?.close();
  app = undefined;
  engine = undefined;
  icap = undefined;
  return result;
}

describe('a 200 returning the request: identical', () => {
  it('in one chunk, in many, with its fields in another order: the original passes, ICAP_PASSED, alike', async () => {
    const one = await through({});
    expect(one.status).toBe(200);
    expect(one.seen!.body.equals(BODY)).toBe(true);
    expect(one.log).toMatchObject({
      action: 'ICAP_PASSED',
      significant: false,
      entry: { action: 'ICAP_PASSED' },
    });
    expect(one.log.entry!.modified_content_length).toBeUndefined();
    const many = await through({ chunks: 37 });
    expect(many).toEqual(one);
    const bytes = await through({ chunks: BODY.length });
    expect(bytes).toEqual(one);
    // Fields in reverse order, names in capitals, values with spaces around: not a change.
    const reordered = await through({
      head: (h) => {
        const lines = h.split('\r\n');
        const fields = lines.slice(1, -2).map((l) => {
          const i = l.indexOf(':');
          return `${l.slice(0, i).toUpperCase()}:  ${l.slice(i + 1).trim()}  `;
        });
        return [lines[0], ...fields.reverse(), '', ''].join('\r\n');
      },
    });
    expect(reordered).toEqual(one);
    // Fields the comparison ignores (Via, Date, Connection) added: not a change either.
    const via = await through({
      head: (h) => h.replace('\r\n\r\n', '\r\nVia: 1.0 echo\r\nDate: today\r\n\r\n'),
    });
    expect(via).toEqual(one);
  });

  it('a body held in a temp file (compared by hash or read back), in one chunk or many: the same', async () => {
    const big = Buffer.alloc(100_000, 'b');
    const profile = { memoryThreshold: '16kb' } as Partial<IcapProfile>;
    const one = await through({}, big, profile);
    expect(one.status).toBe(200);
    expect(one.seen!.body.equals(big)).toBe(true);
    expect(one.log).toMatchObject({ action: 'ICAP_PASSED', entry: { action: 'ICAP_PASSED' } });
    expect(await through({ chunks: 50 }, big, profile)).toEqual(one);
    // And the same body held in memory (compared on the fly) decides alike.
    expect(await through({ chunks: 50 }, big)).toEqual(one);
  });
});

describe('a 200 returning the request: changed', () => {
  const lastByte = Buffer.from(BODY);
  lastByte[lastByte.length - 1] = 0x21;

  // (Shorter, the body is not a prefix of the one sent: a prefix under the head sent is a partial
  // answer, blocked: test/hardening/partial-echo.test.ts.)
  const shorter = Buffer.from(BODY.subarray(0, BODY.length - 1));
  shorter[0] = 0x41;
  const otherHead = (h: string) => h.replace('x-second: two', 'x-second: three');
  for (const [name, body, head] of [
    ['only its last byte differs', lastByte],
    ['one byte longer', Buffer.concat([BODY, Buffer.from('!')])],
    ['one byte shorter, its first byte changed', shorter],
    ['empty, under a changed head', Buffer.alloc(0), otherHead],
  ] as Array<[string, Buffer, ((h: string) => string)?]>) {
    it(`${name}: the server's bytes are delivered, ICAP_MODIFIED, in one chunk or many`, async () => {
      const one = await through({ body, head });
      expect(one.status).toBe(200);
      expect(one.seen!.body.equals(body)).toBe(true);
      expect(one.seen!.headers['content-length']).toBe(String(body.length));
      expect(one.log).toMatchObject({
        action: 'ICAP_MODIFIED',
        significant: true,
        entry: { action: 'ICAP_MODIFIED', modified_content_length: body.length },
      });
      expect(await through({ body, head, chunks: 23 })).toEqual(one);
      // Held in a temp file instead (a larger body): the same decision.
      const big = Buffer.concat([Buffer.alloc(50_000, 'c'), BODY]);
      const bigChanged = Buffer.concat([Buffer.alloc(50_000, 'c'), body]);
      const spooled = await through({ body: bigChanged, head, chunks: 9 }, big, { memoryThreshold: '16kb' });
      expect(spooled.status).toBe(200);
      expect(spooled.seen!.body.equals(bigChanged)).toBe(true);
      expect(spooled.log).toMatchObject({
        action: 'ICAP_MODIFIED',
        entry: { modified_content_length: bigChanged.length },
      });
    });
  }

  it('a head that differs (a field changed, one added, one dropped): ICAP_MODIFIED with the returned head', async () => {
    const changed = await through({ head: (h) => h.replace('x-second: two', 'x-second: three') });
    expect(changed.status).toBe(200);
    expect(changed.seen!.headers['x-second']).toBe('three');
    expect(changed.seen!.body.equals(BODY)).toBe(true);
    expect(changed.log).toMatchObject({ action: 'ICAP_MODIFIED', entry: { action: 'ICAP_MODIFIED' } });
    const added = await through({ head: (h) => h.replace('\r\n\r\n', '\r\nx-third: 3\r\n\r\n') });
    expect(added.seen!.headers['x-third']).toBe('3');
    expect(added.log.action).toBe('ICAP_MODIFIED');
    const dropped = await through({ head: (h) => h.replace('x-first: one\r\n', '') });
    expect(dropped.seen!.headers['x-first']).toBeUndefined();
    expect(dropped.log.action).toBe('ICAP_MODIFIED');
    // The same change with the fields in another order: the same decision.
    const reordered = await through({
      head: (h) => {
        const lines = h.replace('x-second: two', 'x-second: three').split('\r\n');
        return [lines[0], ...lines.slice(1, -2).reverse(), '', ''].join('\r\n');
      },
    });
    expect(reordered.log).toEqual(changed.log);
    expect(reordered.seen!.headers['x-second']).toBe('three');
    const target = await through({ head: (h) => h.replace('/upload/report.pdf', '/upload/other.pdf') });
    expect(target.seen!.url).toBe('/upload/other.pdf');
    expect(target.log.action).toBe('ICAP_MODIFIED');
  });
});

describe('a 200 returning the request: failures and threats', () => {
  it('a 200 that names a threat blocks (403), the body identical or not, in both failure modes', async () => {
    for (const failAction of ['fail-closed', 'fail-open'] as const) {
      for (const e of [{}, { chunks: 5 }, { body: Buffer.from('cleaned') }] as Echo[]) {
        const r = await through(
          { ...e, icapHeaders: 'X-Infection-Found: Type=0; Resolution=2; Threat=EICAR-Test-Signature;\r\n' },
          BODY,
          { failAction },
        );
        expect(r.status).toBe(403);
        expect(r.seen).toBeUndefined();
        expect(r.log).toMatchObject({ action: 'ICAP_BLOCKED', significant: true });
      }
    }
  });

  it('an answer cut off or dropped mid-body is an ICAP-side failure: 503 fail-closed, the original fail-open', async () => {
    const cut = (r: RecordedRequest): Fault => {
      const full = echoOf(r, BODY, { chunks: 4 }) as { kind: 'raw'; response: Buffer };
      return { kind: 'raw', response: full.response.subarray(0, full.response.length - 100) };
    };
    for (const failAction of ['fail-closed', 'fail-open'] as const) {
      // The cut answer never ends: the response timeout ends it.
      const r = await through(cut, BODY, { failAction, responseTimeout: 300 });
      expect(r.status).toBe(failAction === 'fail-closed' ? 503 : 200);
      if (failAction === 'fail-open') expect(r.seen!.body.equals(BODY)).toBe(true);
      else expect(r.seen).toBeUndefined();
      expect(r.log).toMatchObject({ action: 'ICAP_FAILED', significant: true, fail_action: failAction });
      // A server that sends its 200, the returned head and part of the body, then closes or resets.
      for (const ending of ['close', 'reset'] as const) {
        const server = await droppingServer(ending);
        try {
          engine = createEngine({
            name: 'echo',
            poolGroup: { name: 'g', pools: [{ name: 'g', servers: [server.url] }] },
            serviceUri: '/echo',
            health: { failureLimit: 100 },
            failAction,
          });
          app = await startScanServer(engine);
          const d = await post(app.url, BODY);
          expect(d.status).toBe(failAction === 'fail-closed' ? 503 : 200);
          if (failAction === 'fail-open') expect(app.seen[0]!.body.equals(BODY)).toBe(true);
          else expect(app.seen).toHaveLength(0);
          expect(app.logs[0]).toMatchObject({
            action: 'ICAP_FAILED',
            significant: true,
            fail_action: failAction,
          });
          expect(app.logs[0]!.error_code).toMatch(/^ICAP_ERR_(CLOSED|RESET)$/);
        } finally {
          await app?.close();
          await engine?.close();
          app = undefined;
          engine = undefined;
          await server.close();
        }
      }
    }
  });

  it('a returned body above bufferSize fails the scan (the bound holds), fail-closed 503', async () => {
    const r = await through({ body: Buffer.alloc(BODY.length + 1000, 'z'), chunks: 3 }, BODY, {
      bufferSize: BODY.length + 10,
    } as Partial<IcapProfile>);
    expect(r.status).toBe(503);
    expect(r.seen).toBeUndefined();
    expect(r.log).toMatchObject({ action: 'ICAP_FAILED', error_code: 'ICAP_ERR_BODY_TOO_LARGE' });
  });
});
