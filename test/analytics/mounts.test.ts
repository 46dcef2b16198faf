/**
 * The analytics page mounted in each framework, over real sockets, with a real engine and the
 * embedded ICAP server: the page and its JSON answer below the mount path, other paths are
 * left to the application, the guard applies, the page's own requests are not logged, and
 * close() stops the recording.
 */
import { once } from 'node:events';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { icapAnalytics as expressAnalytics, icap as expressIcap } from '@icapkit/express';
import { icapAnalytics as fastifyAnalytics, icap as fastifyIcap } from '@icapkit/fastify';
import { icapAnalytics as koaAnalytics, icap as koaIcap } from '@icapkit/koa';
import { eicar, type IcapTestServer, startIcapServer } from '@icapkit/testing';
import express from 'express';
import Fastify, { type FastifyInstance } from 'fastify';
import Koa from 'koa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { send } from '../support/http-client.js';
import { FakeEngine, record } from './records.js';

interface Mounted {
  url: string;
  /** Stops recording (the middleware's close()). */
  stopRecording: (() => void) | undefined;
  close(): Promise<void>;
}

async function overview(m: Mounted): Promise<{ stored: number; [k: string]: unknown }> {
  const res = await send(m.url, '/icap-analytics/api/overview', { headers: OPS });
  expect(res.status).toBe(200);
  return JSON.parse(res.text);
}

const PROFILE = { name: 'uploads', serviceUri: '/avscan' } as const;
/**
 * The guard of these tests: a header says who may look. `x-ops: odd` gets a refusal object that
 * throws when read (a guard that fails refuses, on every mount).
 */
const guard = (req: { headers: Record<string, string | string[] | undefined> }) => {
  if (req.headers['x-ops'] !== 'odd') return req.headers['x-ops'] === 'yes';
  return Object.defineProperty({}, 'status', {
    get() {
      throw new Error('a guard result that cannot be read');
    },
  }) as { status: 401 };
};
const OPS = { 'x-ops': 'yes' };

async function listening(server: Server): Promise<string> {
  if (!server.listening) await once(server, 'listening');
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

async function mountExpress(icapUrl: string): Promise<Mounted> {
  const scan = expressIcap({ ...PROFILE, poolGroup: icapUrl });
  const analytics = expressAnalytics(scan, { guard });
  const app = express();
  app.use('/icap-analytics', analytics);
  app.use(scan);
  app.post('/upload', (_req, res) => {
    res.type('text').send('stored');
  });
  app.get(['/icap-analytics-other', '/icap-analytics/other'], (_req, res) => {
    res.type('text').send('the application');
  });
  const server = app.listen(0, '127.0.0.1');
  const url = await listening(server);
  return {
    url,
    stopRecording: () => analytics.close(),
    async close() {
      analytics.close();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await scan.close();
    },
  };
}

async function mountFastify(icapUrl: string): Promise<Mounted> {
  const app: FastifyInstance = Fastify();
  await app.register(fastifyIcap, { ...PROFILE, poolGroup: icapUrl });
  await app.register(fastifyAnalytics, { prefix: '/icap-analytics', guard });
  app.addContentTypeParser('*', (_req, payload, done) => {
    payload.resume();
    payload.on('end', () => done(null, null));
  });
  app.post('/upload', async () => 'stored');
  app.get('/icap-analytics-other', async () => 'the application');
  app.get('/icap-analytics/other', async () => 'the application');
  await app.listen({ port: 0, host: '127.0.0.1' });
  const url = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
  return {
    url,
    // The plugin's recording stops with app.close() (its onClose hook): tested on its own below.
    stopRecording: undefined,
    async close() {
      await app.close();
    },
  };
}

async function mountKoa(icapUrl: string): Promise<Mounted> {
  const scan = koaIcap({ ...PROFILE, poolGroup: icapUrl });
  const analytics = koaAnalytics(scan, { prefix: '/icap-analytics', guard });
  const app = new Koa();
  app.use(analytics);
  app.use(scan);
  app.use(async (ctx) => {
    if (ctx.method === 'POST' && ctx.path === '/upload') {
      ctx.req.resume();
      await once(ctx.req, 'end');
      ctx.body = 'stored';
      return;
    }
    if (ctx.path === '/icap-analytics/other' || ctx.path === '/icap-analytics-other') {
      ctx.body = 'the application';
      return;
    }
    ctx.status = 404;
  });
  const server = app.listen(0, '127.0.0.1');
  const url = await listening(server);
  return {
    url,
    stopRecording: () => analytics.close(),
    async close() {
      analytics.close();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await scan.close();
    },
  };
}

const MOUNTS = { express: mountExpress, fastify: mountFastify, koa: mountKoa };

describe.each(Object.keys(MOUNTS) as Array<keyof typeof MOUNTS>)('analytics mounted in %s', (name) => {
  let icapServer: IcapTestServer;
  let m: Mounted;

  beforeAll(async () => {
    icapServer = await startIcapServer({ host: '127.0.0.1' });
    m = await MOUNTS[name](icapServer.url());
  });
  afterAll(async () => {
    await m?.close();
    await icapServer?.close();
  });

  it('serves the page at the prefix, with and without the trailing slash', async () => {
    for (const path of ['/icap-analytics', '/icap-analytics/']) {
      const res = await send(m.url, path, { headers: OPS });
      expect([path, res.status]).toEqual([path, 200]);
      expect(res.headers['content-type']).toBe('text/html; charset=utf-8');
      expect(res.headers['content-security-policy']).toMatch(/^default-src 'none'; script-src 'sha256-/);
      expect(res.headers['x-content-type-options']).toBe('nosniff');
      expect(res.headers['cache-control']).toBe('no-store');
      expect(res.headers['referrer-policy']).toBe('no-referrer');
      expect(res.text).toContain('<h1>ICAP log analytics</h1>');
    }
  });

  it('the guard applies to the page and the JSON', async () => {
    for (const path of [
      '/icap-analytics/',
      '/icap-analytics/api/overview',
      '/icap-analytics/api/records/1',
    ]) {
      const res = await send(m.url, path);
      expect([path, res.status]).toEqual([path, 403]);
      expect(res.text).toBe('Forbidden\n');
    }
  });

  it('a guard whose answer throws when read refuses (403), never a hang or a 500', async () => {
    const res = await send(m.url, '/icap-analytics/api/overview', {
      headers: { 'x-ops': 'odd' },
      timeoutMs: 10_000,
    });
    expect([res.status, res.text]).toEqual([403, 'Forbidden\n']);
  });

  it('counts the scans in the JSON; the page and its JSON are not scanned or logged', async () => {
    expect(
      (await send(m.url, '/upload', { body: 'clean', headers: { 'content-type': 'text/plain' } })).text,
    ).toBe('stored');
    const blocked = await send(m.url, '/upload', {
      body: eicar(),
      headers: { 'content-type': 'application/octet-stream' },
    });
    expect(blocked.status).toBe(403);
    for (let i = 0; i < 3; i++) await send(m.url, '/icap-analytics/', { headers: OPS });
    // biome-ignore lint/suspicious/noExplicitAny: JSON
    const o: any = await overview(m);
    expect(o.actions).toMatchObject({ ICAP_PASSED: 1, ICAP_BLOCKED: 1, ICAP_DISABLED: 0 });
    expect(o.stored).toBe(2);
    expect(o.servers[0]).toMatchObject({
      server: icapServer.url(),
      transactions: 2,
      health: [{ state: 'up' }],
    });
    const id = o.records.find((r: { action: string }) => r.action === 'ICAP_BLOCKED').id;
    const one = await send(m.url, `/icap-analytics/api/records/${id}`, { headers: OPS });
    expect(JSON.parse(one.text).log.request_logs[0].icap_headers_received_from_server).toMatch(
      /X-Infection-Found/,
    );
  });

  it('answers 405 to other methods, before reading any body', async () => {
    const res = await send(m.url, '/icap-analytics/api/overview', {
      method: 'POST',
      body: 'x',
      headers: { ...OPS, 'content-type': 'application/x-unknown' },
    });
    expect(res.status).toBe(405);
    expect(res.headers.allow).toBe('GET, HEAD');
  });

  it('leaves other paths to the application', async () => {
    for (const path of ['/icap-analytics-other', '/icap-analytics/other']) {
      const other = await send(m.url, path, { headers: OPS });
      expect([path, other.status, other.text]).toEqual([path, 200, 'the application']);
    }
    const unknown = await send(m.url, '/icap-analytics/nope', { headers: OPS });
    expect(unknown.status).toBe(404);
    expect(unknown.text).not.toContain('ICAP log analytics');
  });
});

// Fastify's routes under the prefix opt out of scanning (Express and Koa pass such paths on).
describe('the Fastify plugin, a path under its prefix that is not the page', () => {
  let icap: IcapTestServer;
  beforeAll(async () => {
    icap = await startIcapServer({ host: '127.0.0.1' });
  });
  afterAll(async () => {
    await icap?.close();
  });

  it('a body sent to a path under the prefix the page does not own never reaches a not-found handler unscanned', async () => {
    const seen: unknown[] = [];
    const app = Fastify();
    await app.register(fastifyIcap, { ...PROFILE, poolGroup: icap.url() });
    await app.register(fastifyAnalytics, { prefix: '/icap-analytics', guard });
    app.setNotFoundHandler(async (request, reply) => {
      seen.push(request.body);
      return reply.code(404).send('not found');
    });
    await app.listen({ port: 0, host: '127.0.0.1' });
    try {
      const url = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
      const res = await send(url, '/icap-analytics/nope', {
        method: 'POST',
        body: eicar(),
        headers: { ...OPS, 'content-type': 'text/plain' },
      });
      expect(res.status).toBe(404);
      expect(seen).toEqual([]);
      // Without a body the application's not-found handler still answers.
      expect((await send(url, '/icap-analytics/nope', { headers: OPS })).text).toBe('not found');
    } finally {
      await app.close();
    }
  });
});

describe.each(['express', 'koa'] as const)('the %s middleware', (name) => {
  it('close() stops the recording', async () => {
    const icapServer = await startIcapServer({ host: '127.0.0.1' });
    const m = await MOUNTS[name](icapServer.url());
    try {
      await send(m.url, '/upload', { body: 'counted', headers: { 'content-type': 'text/plain' } });
      expect((await overview(m)).stored).toBe(1);
      m.stopRecording?.();
      await send(m.url, '/upload', { body: 'later', headers: { 'content-type': 'text/plain' } });
      expect((await overview(m)).stored).toBe(1);
    } finally {
      await m.close();
      await icapServer.close();
    }
  });
});

describe('the Fastify plugin', () => {
  it('shows another engine when told, and stops recording when Fastify closes', async () => {
    const engine = new FakeEngine();
    const app = Fastify();
    await app.register(fastifyAnalytics, { prefix: '/ops', guard: () => true, engine, capacity: 10 });
    await app.listen({ port: 0, host: '127.0.0.1' });
    const url = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
    try {
      expect(engine.listeners.size).toBe(1);
      engine.emit(record('ICAP_BLOCKED'));
      const o = JSON.parse((await send(url, '/ops/api/overview')).text);
      expect(o).toMatchObject({ capacity: 10, stored: 1, actions: { ICAP_BLOCKED: 1 } });
    } finally {
      await app.close();
    }
    expect(engine.listeners.size).toBe(0);
  });

  it('refuses to start without an engine or a guard', async () => {
    const bare = Fastify();
    await expect(bare.register(fastifyAnalytics, { guard: () => true }).ready()).rejects.toThrow(/engine/);
    await bare.close();
    const noGuard = Fastify();
    await expect(
      noGuard.register(fastifyAnalytics, { engine: new FakeEngine() } as never).ready(),
    ).rejects.toThrow(/needs a guard/);
    await noGuard.close();
  });
});
