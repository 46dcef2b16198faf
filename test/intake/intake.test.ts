/**
 * Intake: bodyDeadline bounds a trickling upload (408, never the failure action, never the
 * ICAP server's health); a body complete before the exchange starts is sent with its length
 * (a chunked one too), and lengthRequired holds every body whole for servers that need one;
 * maxBodiesPerClient caps what one address holds (429). In Express, Fastify and Koa.
 */
import { Readable } from 'node:stream';
import { createEngine, type IcapLog, type IcapProfile } from '@icapkit/core';
import { type IcapTestServer, type RecordedRequest, startIcapServer } from '@icapkit/testing';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { type App, type Framework, startApp } from '../conformance/apps.js';
import { send } from '../support/http-client.js';
import { postHead, rawExchange, type Step } from '../support/raw-http.js';

const FRAMEWORKS: Framework[] = ['express5', 'fastify', 'koa3'];

function text(n: number, seed = 0): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = 0x61 + ((i + seed) % 26);
  return b;
}

let plain: IcapTestServer;
let strict: IcapTestServer;
beforeAll(async () => {
  plain = await startIcapServer({ recordBodies: false });
  strict = await startIcapServer({ recordBodies: false, lengthRequired: true });
});
afterAll(async () => {
  await plain?.close();
  await strict?.close();
});

let app: App | undefined;
afterEach(async () => {
  await app?.close();
  app = undefined;
  plain.reset();
  strict.reset();
});

const reqmods = (s: IcapTestServer): RecordedRequest[] => s.requests.filter((r) => r.method === 'REQMOD');

/** A chunked request for /raw in two chunks, `pause` ms apart. */
function chunkedSteps(body: Buffer, split: number, pause: number): Step[] {
  const chunk = (b: Buffer) =>
    Buffer.concat([Buffer.from(`${b.length.toString(16)}\r\n`), b, Buffer.from('\r\n')]);
  return [
    'POST /raw HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n',
    chunk(body.subarray(0, split)),
    { pause },
    chunk(body.subarray(split)),
    '0\r\n\r\n',
  ];
}

async function waitFor(condition: () => boolean, withinMs = 5000): Promise<void> {
  const deadline = Date.now() + withinMs;
  while (!condition() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
}

describe.each(FRAMEWORKS)('intake: %s', (framework) => {
  const start = async (server: IcapTestServer, profile: Partial<IcapProfile>, logs: IcapLog[] = []) => {
    app = await startApp(framework, {
      name: 'intake',
      poolGroup: server.url(),
      serviceUri: '/avscan',
      onLog: (l) => logs.push(l),
      ...profile,
    });
    return app;
  };

  for (const failAction of ['fail-closed', 'fail-open'] as const) {
    it(`${failAction}: a trickle that never idles for bodyTimeout ends at bodyDeadline with 408; no ICAP connection was taken`, async () => {
      const logs: IcapLog[] = [];
      const a = await start(plain, { failAction, bodyTimeout: 5000, bodyDeadline: 1000 }, logs);
      const steps: Step[] = [postHead('/raw', 100_000)];
      // 10 bytes every 100 ms, for up to 10 s.
      for (let i = 0; i < 100; i++) steps.push(text(10, i), { pause: 100 });
      const t0 = Date.now();
      const r = await rawExchange(a.url, steps, { responses: 1, waitMs: 5000 });
      expect(r.responses[0]?.status).toBe(408);
      expect(Date.now() - t0).toBeLessThan(8000);
      expect(a.seen).toHaveLength(0);
      await waitFor(() => logs.length > 0);
      expect(logs[0]).toMatchObject({ action: 'ICAP_FAILED', error_code: 'ICAP_ERR_BODY_TIMEOUT' });
      expect(logs[0]!.significance).toContain('CLIENT_TIMEOUT');
      expect(logs[0]!.error_message).toContain('bodyDeadline');
      // A slow client is not a slow scanner: no connection held, no health counted.
      expect(reqmods(plain)).toHaveLength(0);
      expect(a.engine.status()[0]!.consecutiveFailures).toBe(0);
      // Never contacted at all: still unknown (not suspended, not up).
      expect(a.engine.status()[0]!.state).toBe('unknown');
    });
  }

  it('a small chunked upload is sent with its encapsulated Content-Length (and whole, without preview)', async () => {
    const a = await start(plain, {});
    const body = text(20_000, 1);
    const r = await send(a.url, '/raw', {
      body,
      chunked: 1000,
      headers: { 'content-type': 'application/octet-stream' },
    });
    expect(r.status).toBe(200);
    expect(a.seen[0]!.raw!.equals(body)).toBe(true);
    const sent = reqmods(plain).at(-1)!;
    expect(sent.httpRequest?.headers.get('content-length')).toBe(String(body.length));
    expect(sent.httpRequest?.headers.get('transfer-encoding')).toBeUndefined();
    expect(sent.preview).toBeUndefined();
  });

  it('a server that requires the length: a chunked upload within holdBodySize is held to its end and passes', async () => {
    const body = text(30_000, 2);
    const a = await start(strict, {});
    expect((await send(a.url, '/raw', { body: 'x', headers: { 'content-type': 'text/plain' } })).status).toBe(
      200,
    );
    const r = await rawExchange(a.url, chunkedSteps(body, 15_000, 300), { responses: 1, waitMs: 5000 });
    expect(r.responses[0]?.status).toBe(200);
    expect(a.seen.at(-1)!.raw!.equals(body)).toBe(true);
    const sent = reqmods(strict).at(-1)!;
    expect(sent.status).not.toBe(400);
    expect(sent.httpRequest?.headers.get('content-length')).toBe(String(body.length));
  });

  it('a server that requires the length: a large chunked upload gets 503 without lengthRequired, 200 with it', async () => {
    const body = text(300_000, 3);
    // Chunked, with a pause half-way: the exchange may start before the end.
    const steps = chunkedSteps(body, 150_000, 300);
    const warm = () => send(app!.url, '/raw', { body: 'x', headers: { 'content-type': 'text/plain' } });
    // What the finding was: streamed at once, the length is not known when the exchange starts.
    const without = await start(strict, { holdBodySize: 0, health: { failureLimit: 1000 } });
    expect((await warm()).status).toBe(200);
    const refused = await rawExchange(without.url, steps, { responses: 1, waitMs: 5000 });
    expect(refused.responses[0]?.status).toBe(503);
    expect(reqmods(strict).at(-1)!.status).toBe(400);
    await without.close();
    app = undefined;
    const logs: IcapLog[] = [];
    const withLength = await start(strict, { lengthRequired: true, memoryThreshold: '64kb' }, logs);
    expect((await warm()).status).toBe(200);
    const r = await rawExchange(withLength.url, steps, { responses: 1, waitMs: 5000 });
    expect(r.responses[0]?.status).toBe(200);
    expect(withLength.seen.at(-1)!.raw!.equals(body)).toBe(true);
    expect(reqmods(strict).at(-1)!.httpRequest?.headers.get('content-length')).toBe(String(body.length));
    expect(logs.at(-1)!.action).toBe('ICAP_PASSED');
  });

  it('maxBodiesPerClient: one address holds at most that many uploads arriving; more get 429', async () => {
    const logs: IcapLog[] = [];
    const a = await start(plain, { maxBodiesPerClient: 2, bodyTimeout: 10_000 }, logs);
    // Two uploads that stall after their head, holding both places.
    const stalls = [0, 1].map(() =>
      rawExchange(a.url, [postHead('/raw', 50_000), text(1000)], { waitMs: 3000, finally: 'keep' }),
    );
    await waitFor(
      () => a.engine.uploadsArriving('127.0.0.1') + a.engine.uploadsArriving('::ffff:127.0.0.1') === 2,
    );
    const third = await send(a.url, '/raw', {
      body: text(1000),
      headers: { 'content-type': 'application/octet-stream' },
    });
    expect(third.status).toBe(429);
    expect(logs.at(-1)!.error_code).toBe('ICAP_ERR_CLIENT_LIMIT');
    await Promise.all(stalls);
    // Once they are gone, the address has its places back.
    await waitFor(() => logs.length >= 3);
    const later = await send(a.url, '/raw', {
      body: text(1000),
      headers: { 'content-type': 'application/octet-stream' },
    });
    expect(later.status).toBe(200);
  });
});

describe('intake profile options', () => {
  const base = { name: 'p', poolGroup: 'icap://127.0.0.1:1344', serviceUri: '/avscan' };
  it('are validated', () => {
    for (const bad of [
      { bodyDeadline: 10 },
      { bodyDeadline: 1.5 },
      { holdBodySize: -1 },
      { holdBodySize: 'lots' },
      { minBodyRate: -5 },
      { lengthRequired: 'yes' },
      { maxBodiesPerClient: 0 },
      { drainAfterAnswer: { bytes: 'x' } },
      { drainAfterAnswer: { timeout: -1 } },
      { maxStreamingUploads: -1 },
      { maxStreamingUploads: 1.5 },
      { maxStreamingUploads: 33 },
      { maxStreamingUploads: 5, connection: { maxConnections: 4 } },
    ]) {
      expect(() => createEngine({ ...base, ...(bad as object) }), JSON.stringify(bad)).toThrow(
        /ICAP profile: profile\.(bodyDeadline|holdBodySize|minBodyRate|lengthRequired|maxBodiesPerClient|drainAfterAnswer|maxStreamingUploads)/,
      );
    }
    expect(() => createEngine({ ...base, maxStreamingUploads: 33 })).toThrow(
      /profile\.maxStreamingUploads must be an integer from 0 to 32 uploads \(connection\.maxConnections\) \(got 33\)/,
    );
  });
  it('maxStreamingUploads: half the connections by default, at least one', async () => {
    for (const [maxConnections, expected] of [
      [32, 16],
      [5, 2],
      [2, 1],
      [1, 1],
    ] as const) {
      const e = createEngine({ ...base, connection: { maxConnections } });
      expect(e.profile.maxStreamingUploads, String(maxConnections)).toBe(expected);
      await e.close();
    }
    const e = createEngine({ ...base, maxStreamingUploads: 0 });
    expect(e.profile.maxStreamingUploads).toBe(0);
    await e.close();
  });
  it('have defaults', async () => {
    const e = createEngine(base);
    expect(e.profile).toMatchObject({
      bodyDeadline: 600_000,
      holdBodySize: 64 * 1024,
      minBodyRate: 128 * 1024,
      lengthRequired: false,
      maxBodiesPerClient: undefined,
      drainBytes: 16 * 1024 * 1024,
      drainTimeout: 5000,
    });
    await e.close();
    const f = createEngine({ ...base, previewMinBodySize: '16kb', holdBodySize: undefined });
    expect(f.profile.holdBodySize).toBe(16 * 1024);
    await f.close();
  });
});

describe('embedded server records', () => {
  it('keep copies of the heads, not slices pinning the reads they came in (up to 64 KiB of body each)', async () => {
    const engine = createEngine({ name: 'r', poolGroup: plain.url(), serviceUri: '/avscan' });
    try {
      const body = text(300_000, 4);
      const r = await engine.scan(
        Object.assign(Readable.from([body]), {
          method: 'POST',
          url: '/upload',
          headers: {
            host: 'a',
            'content-type': 'application/octet-stream',
            'content-length': String(body.length),
          },
          httpVersion: '1.1',
        }) as never,
      );
      expect(r.action).toBe('ICAP_PASSED');
      r.dispose();
      const rec = reqmods(plain).at(-1)!;
      // A buffer of its own: its memory is its bytes.
      expect(rec.rawHead.buffer.byteLength).toBe(rec.rawHead.byteLength);
      expect(rec.httpRequest!.raw.buffer.byteLength).toBe(rec.httpRequest!.raw.byteLength);
    } finally {
      await engine.close();
    }
  });
});
