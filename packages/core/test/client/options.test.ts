/**
 * OPTIONS handling: Options-TTL, ISTag churn rate-limited, incomplete answers warned about,
 * error statuses with an odd Encapsulated kept as statuses; Transfer-Ignore off by default.
 */
import { eicar, type IcapTestServer, startIcapServer } from '@icapkit/testing';
import { afterEach, describe, expect, it } from 'vitest';
import { IcapClient, type IcapClientOptions, isSkipped } from '../../src/client/client.js';

let server: IcapTestServer | undefined;
const clients: IcapClient[] = [];

afterEach(async () => {
  for (const c of clients.splice(0)) c.destroy();
  await server?.close();
  server = undefined;
});

function newClient(url: string, opts: Partial<IcapClientOptions> = {}) {
  const c = new IcapClient({ url, timeout: 3000, ioTimeout: 3000, ...opts });
  clients.push(c);
  return c;
}

async function reqmod(c: IcapClient, target = '/upload', body: Buffer = Buffer.alloc(100, 0x61)) {
  const r = await c.request({
    method: 'REQMOD',
    service: '/avscan',
    httpRequest: { method: 'POST', target, headers: { host: 'app' } },
    body,
  });
  if (isSkipped(r)) return r;
  r.body?.resume();
  await r.done.catch(() => undefined);
  return r;
}

const optionsCount = (s: IcapTestServer) => s.requests.filter((q) => q.method === 'OPTIONS').length;

async function waitFor(condition: () => Promise<boolean> | boolean, withinMs = 5000): Promise<boolean> {
  const deadline = Date.now() + withinMs;
  while (Date.now() < deadline) {
    if (await condition()) return true;
    await new Promise((r) => setTimeout(r, 20));
  }
  return condition();
}

describe('OPTIONS', () => {
  it('ISTag churn (a new ISTag on every answer): one OPTIONS for 6 REQMODs, not 6', async () => {
    server = await startIcapServer({ istagChurn: true });
    const c = newClient(server.url());
    for (let i = 0; i < 6; i++) await reqmod(c);
    expect(server.requests.filter((q) => q.method === 'REQMOD')).toHaveLength(6);
    expect(optionsCount(server)).toBe(1);
  });

  it('ISTag churn: at most one refresh per optionsRefreshInterval, and one does come', async () => {
    server = await startIcapServer({ istagChurn: true });
    const c = newClient(server.url(), { optionsRefreshInterval: 200 });
    const started = Date.now();
    await reqmod(c);
    expect(optionsCount(server)).toBe(1);
    // Requests keep coming; after the interval the changed ISTag is acted on, once.
    expect(
      await waitFor(async () => {
        await reqmod(c);
        return optionsCount(server!) >= 2;
      }),
    ).toBe(true);
    const elapsed = Date.now() - started;
    // Never more than one fetch per started interval (plus the first).
    expect(optionsCount(server)).toBeLessThanOrEqual(1 + Math.ceil(elapsed / 200));
    expect(elapsed).toBeGreaterThanOrEqual(200);
  });

  it('an unchanged ISTag keeps the OPTIONS until Options-TTL, then they are fetched again', async () => {
    server = await startIcapServer({ optionsTtl: 1 });
    const c = newClient(server.url());
    await reqmod(c);
    await reqmod(c);
    expect(optionsCount(server)).toBe(1);
    expect(
      await waitFor(async () => {
        await reqmod(c);
        return optionsCount(server!) === 2;
      }),
    ).toBe(true);
  });

  it('an answer without ISTag and Methods: used, missingHeaders named, onWarning called', async () => {
    server = await startIcapServer({ incompleteOptions: true });
    const warnings: Array<{ message: string; missing: string[] }> = [];
    const c = newClient(server.url(), {
      onWarning: (message, d) => warnings.push({ message, missing: d.missingHeaders }),
    });
    const o = await c.options('/avscan');
    expect(o.missingHeaders).toEqual(['ISTag', 'Methods']);
    expect(warnings).toEqual([
      {
        message: `OPTIONS ${server.url('/avscan')} lacks the required ISTag and Methods headers`,
        missing: ['ISTag', 'Methods'],
      },
    ]);
    const complete = await startIcapServer();
    try {
      expect((await newClient(complete.url()).options('/avscan')).missingHeaders).toEqual([]);
    } finally {
      await complete.close();
    }
  });

  it('a Preview, Max-Connections or Options-TTL that is not a whole number: read as absent, named, scanning goes on', async () => {
    const optionsAnswer =
      'ICAP/1.0 200 OK\r\nISTag: "bad-numbers"\r\nMethods: REQMOD\r\nAllow: 204\r\n' +
      'Preview: 1k\r\nMax-Connections: -1\r\nOptions-TTL: 1h\r\nEncapsulated: null-body=0\r\n\r\n';
    server = await startIcapServer({
      script: (r) => (r.method === 'OPTIONS' ? { kind: 'raw', response: optionsAnswer } : undefined),
    });
    const warnings: Array<{ message: string; malformed: string[] }> = [];
    const c = newClient(server.url(), {
      defaultOptionsTtl: 200,
      onWarning: (message, d) => warnings.push({ message, malformed: d.malformedHeaders }),
    });
    const o = await c.options('/avscan');
    expect(o.preview).toBeUndefined();
    expect(o.maxConnections).toBeUndefined();
    expect(o.optionsTtl).toBeUndefined();
    const malformed = ['Preview: "1k"', 'Max-Connections: "-1"', 'Options-TTL: "1h"'];
    expect(o.malformedHeaders).toEqual(malformed);
    expect(o.missingHeaders).toEqual([]);
    expect(warnings).toEqual([
      {
        message: `OPTIONS ${server.url('/avscan')} has ${malformed.join(', ')}, not a whole number (read as absent)`,
        malformed,
      },
    ]);
    // The server is used: EICAR is still found, a clean body passes.
    const threat = await reqmod(c, '/upload', eicar());
    expect(isSkipped(threat) ? 0 : threat.status).toBe(200);
    expect(isSkipped(threat) ? undefined : threat.headers.get('x-infection-found')).toBeDefined();
    const clean = await reqmod(c);
    expect(isSkipped(clean) ? 0 : clean.status).toBe(204);
    // No preview offered, none sent; the default TTL applies (fetched again after 200 ms).
    expect(server.requests.filter((q) => q.method === 'REQMOD').map((q) => q.preview)).toEqual([
      undefined,
      undefined,
    ]);
    expect(
      await waitFor(async () => {
        await reqmod(c);
        return optionsCount(server!) >= 2;
      }),
    ).toBe(true);
  });

  it('OPTIONS answered 500 with Encapsulated: opt-body=0 (no body): ICAP_ERR_SERVER_STATUS 500, at once', async () => {
    server = await startIcapServer({
      script: (q) =>
        q.method === 'OPTIONS' ? { kind: 'status', status: 500, encapsulated: 'opt-body=0' } : undefined,
    });
    const c = newClient(server.url(), { ioTimeout: 2000, timeout: 2000 });
    const t = performance.now();
    await expect(c.options('/avscan')).rejects.toMatchObject({ code: 'ICAP_ERR_SERVER_STATUS', status: 500 });
    // Not a wait for a body that never comes.
    expect(performance.now() - t).toBeLessThan(1500);
  });

  it('REQMOD answered 500 with Encapsulated: opt-body=0: a response with status 500 (not ICAP_ERR_PROTOCOL), connection not reused', async () => {
    server = await startIcapServer({
      script: (q) =>
        q.method === 'REQMOD' ? { kind: 'status', status: 500, encapsulated: 'opt-body=0' } : undefined,
    });
    const c = newClient(server.url());
    const r = await reqmod(c);
    if (isSkipped(r)) throw new Error('skipped');
    expect(r.status).toBe(500);
    expect(r.body).toBeNull();
    expect((await r.done).reused).toBe(false);
    // A 4xx with a body where none may be (REQMOD res-body without res-hdr) likewise.
    server.setScript((q) =>
      q.method === 'REQMOD' ? { kind: 'status', status: 403, encapsulated: 'res-body=0' } : undefined,
    );
    const f = await reqmod(c);
    if (isSkipped(f)) throw new Error('skipped');
    expect(f.status).toBe(403);
  });
});

describe('Transfer-Ignore', () => {
  it('by default a listed extension is scanned all the same; honourTransferIgnore: true skips it', async () => {
    server = await startIcapServer({ transfer: { preview: ['*'], ignore: ['jpg'] } });
    const c = newClient(server.url());
    const r = await reqmod(c, '/files/evil.jpg', eicar());
    expect(isSkipped(r)).toBe(false);
    if (!isSkipped(r)) expect(r.httpResponse?.status).toBe(403);
    const skipped = await c.request({
      method: 'REQMOD',
      service: '/avscan',
      httpRequest: { method: 'PUT', target: '/files/evil.jpg' },
      body: eicar(),
      honourTransferIgnore: true,
    });
    expect(isSkipped(skipped)).toBe(true);
    expect(server.requests.filter((q) => q.method === 'REQMOD')).toHaveLength(1);
  });
});

describe('OptionsCache: a caller that leaves never leaves a fetch failing unobserved', () => {
  it('an already-aborted caller starts no fetch; one that leaves mid-fetch leaves no unhandled rejection', async () => {
    const { OptionsCache } = await import('../../src/client/options.js');
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => unhandled.push(reason);
    process.on('unhandledRejection', onUnhandled);
    try {
      let fetches = 0;
      let fail: (err: Error) => void = () => {};
      const cache = new OptionsCache(() => {
        fetches++;
        return new Promise((_, reject) => {
          fail = reject;
        });
      });
      const gone = new AbortController();
      gone.abort(new Error('gone'));
      await expect(cache.get('/avscan', gone.signal)).rejects.toThrow('gone');
      expect(fetches).toBe(0);

      const leaving = new AbortController();
      const waiting = cache.get('/avscan', leaving.signal);
      expect(fetches).toBe(1);
      leaving.abort(new Error('left'));
      await expect(waiting).rejects.toThrow('left');
      fail(new Error('connect refused'));
      // Node reports unhandled rejections after the microtask queue drains: two macrotask turns.
      await new Promise((r) => setImmediate(r));
      await new Promise((r) => setImmediate(r));
      expect(unhandled).toEqual([]);
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
  });
});
