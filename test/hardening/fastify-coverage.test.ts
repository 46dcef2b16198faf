/**
 * Fastify coverage is explicit: every route that can receive a body is scanned by
 * @icapkit/fastify before any other preParsing hook, or opted out with `config: { icap: false }`,
 * or the application refuses to start (ICAP_ERR_UNSCANNED_ROUTE naming the route), or, with
 * `unscannedRoutes: 'warn'`, starts with a warning naming it. The plugin's one context hook
 * reaches routes of its context (also those declared before it, or after a register() that was
 * not awaited) and below, and not-found handlers there; it cannot reach a parent or sibling
 * context, or a child context loaded before it, and hooks added before it run first.
 */
import type { AddressInfo } from 'node:net';
import { findUnscannedRoutes, icap, UNSCANNED_ROUTE, UnscannedRouteError } from '@icapkit/fastify';
import { eicar, type IcapTestServer, startIcapServer } from '@icapkit/testing';
import Fastify, { type FastifyInstance } from 'fastify';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { send } from '../support/http-client.js';

let server: IcapTestServer;
beforeAll(async () => {
  server = await startIcapServer({ recordBodies: true });
});
afterAll(() => server?.close());

const profile = () => ({ name: 'coverage', poolGroup: server.url(), serviceUri: '/avscan', onLog: () => {} });

let app: FastifyInstance | undefined;
afterEach(async () => {
  await app?.close();
  app = undefined;
});

function octetParser(a: FastifyInstance) {
  a.addContentTypeParser('application/octet-stream', { parseAs: 'buffer' }, (_req, body, done) =>
    done(null, body),
  );
}

async function refusal(a: FastifyInstance): Promise<UnscannedRouteError> {
  const err = await a.ready().then(
    () => null,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(UnscannedRouteError);
  expect((err as UnscannedRouteError).code).toBe(UNSCANNED_ROUTE);
  return err as UnscannedRouteError;
}

async function listening(a: FastifyInstance): Promise<string> {
  await a.listen({ port: 0, host: '127.0.0.1' });
  return `http://127.0.0.1:${(a.server.address() as AddressInfo).port}`;
}

const OCTETS = { 'content-type': 'application/octet-stream' };

describe("@icapkit/fastify: routes of the plugin's context are scanned, wherever they were declared", () => {
  it('a route declared before the plugin on the same context, and one after a register() not awaited', async () => {
    app = Fastify();
    octetParser(app);
    const seen: string[] = [];
    app.post('/early', async (req) => {
      seen.push('early');
      return { length: (req.body as Buffer).length };
    });
    app.register(icap, profile());
    app.post('/no-await', async () => {
      seen.push('no-await');
      return 'ok';
    });
    const url = await listening(app);
    expect(findUnscannedRoutes(app)).toEqual([]);
    for (const path of ['/early', '/no-await']) {
      expect((await send(url, path, { body: eicar(), headers: OCTETS })).status, path).toBe(403);
      expect((await send(url, path, { body: 'clean', headers: OCTETS })).status, path).toBe(200);
    }
    expect(seen).toEqual(['early', 'no-await']);
  });

  it('a child context loaded before the plugin registered on the root is scanned too', async () => {
    app = Fastify();
    octetParser(app);
    app.register(async (early) => {
      early.post('/early-child', async () => 'ok');
    });
    await app.register(icap, profile());
    const url = await listening(app);
    expect(findUnscannedRoutes(app)).toEqual([]);
    expect((await send(url, '/early-child', { body: eicar(), headers: OCTETS })).status).toBe(403);
  });
});

describe('@icapkit/fastify: a route that can receive a body and is not scanned first stops start-up', () => {
  it('a route in a parent context and one in a sibling context of an encapsulated plugin', async () => {
    app = Fastify();
    app.patch('/parent', async () => 'unscanned');
    await app.register(
      async (uploads) => {
        await uploads.register(icap, profile());
        uploads.post('/in', async () => 'scanned');
      },
      { prefix: '/uploads' },
    );
    await app.register(
      async (other) => {
        other.post('/sibling/:id', async () => 'unscanned');
        other.delete('/sibling', async () => 'unscanned');
      },
      { prefix: '/other' },
    );
    const err = await refusal(app);
    expect(err.routes.sort()).toEqual(['DELETE /other/sibling', 'PATCH /parent', 'POST /other/sibling/:id']);
  });

  it('one route with several methods is named with the methods that carry a body', async () => {
    app = Fastify();
    await app.register(async (other) => {
      other.route({ method: ['GET', 'POST', 'PUT'], url: '/both', handler: async () => 'x' });
    });
    await app.register(async (uploads) => {
      await uploads.register(icap, profile());
    });
    const err = await refusal(app);
    expect(err.routes).toEqual(['POST,PUT /both']);
  });

  it('a preParsing hook that runs before the scan (added before the plugin) is named', async () => {
    app = Fastify();
    app.addHook('preParsing', async function readsTheBodyFirst(_req, _reply, payload) {
      return payload;
    });
    await app.register(icap, profile());
    app.addHook('preParsing', async function afterTheScan(_req, _reply, payload) {
      return payload;
    });
    app.post('/upload', { preParsing: [async (_r, _p, payload) => payload] }, async () => 'x');
    const err = await refusal(app);
    expect(err.routes).toEqual(['POST /upload (preParsing hook "readsTheBodyFirst" runs before the scan)']);
  });

  it("hooks added after the plugin and a route's own hooks run after the scan: they get approved bytes", async () => {
    app = Fastify();
    await app.register(icap, profile());
    const order: string[] = [];
    app.addHook('preParsing', async (req, _reply, payload) => {
      order.push(`context hook, scanned: ${req.icap?.action}`);
      return payload;
    });
    octetParser(app);
    app.post(
      '/upload',
      {
        preParsing: [
          async (req, _reply, payload) => {
            order.push(`route hook, scanned: ${req.icap?.action}`);
            return payload;
          },
        ],
      },
      async () => 'ok',
    );
    const url = await listening(app);
    expect(findUnscannedRoutes(app)).toEqual([]);
    expect((await send(url, '/upload', { body: eicar(), headers: OCTETS })).status).toBe(403);
    expect(order).toEqual([]);
    expect((await send(url, '/upload', { body: 'clean', headers: OCTETS })).status).toBe(200);
    expect(order).toEqual(['context hook, scanned: ICAP_PASSED', 'route hook, scanned: ICAP_PASSED']);
  });

  it('names each route by its full path, whatever the shape of the route tree', async () => {
    app = Fastify();
    app.post('/before', async () => 'x');
    app.register(
      async (c) => {
        c.post('/a/:id', async () => 1);
        c.put('/b/*', async () => 1);
        c.post('/b/:x/y(^\\d+)z', async () => 1);
        c.post('/sibling/:id', async () => 1);
        c.delete('/sibling', async () => 1);
        c.post('/', async () => 1);
      },
      { prefix: '/p' },
    );
    app.get('/g', async () => 1);
    app.post('/*', async () => 1);
    await app.register(async (uploads) => {
      await uploads.register(icap, profile());
      uploads.post('/after', async () => 'scanned');
    });
    const err = await refusal(app);
    expect(err.routes.sort()).toEqual(
      [
        'POST /before',
        'POST /p',
        'POST /p/',
        'POST /p/a/:id',
        'PUT /p/b/*',
        'POST /p/b/:x/y(^\\d+)z',
        'DELETE /p/sibling',
        'POST /p/sibling/:id',
        'POST /*',
      ].sort(),
    );
  });

  it("unscannedRoutes: 'warn' starts, and warns naming the route (log and process warning)", async () => {
    const logs: string[] = [];
    const warnings: Error[] = [];
    const onWarning = (w: Error) => warnings.push(w);
    process.on('warning', onWarning);
    try {
      app = Fastify({
        logger: { level: 'warn', stream: { write: (line: string) => void logs.push(line) } },
      });
      octetParser(app);
      app.post('/early', async () => 'unscanned');
      await app.register(async (uploads) => {
        await uploads.register(icap, { ...profile(), unscannedRoutes: 'warn' });
      });
      await app.listen({ port: 0, host: '127.0.0.1' });
      const deadline = Date.now() + 5_000;
      while (
        !warnings.some((w) => (w as { code?: string }).code === UNSCANNED_ROUTE) &&
        Date.now() < deadline
      )
        await new Promise((r) => setTimeout(r, 10));
      const warning = warnings.find((w) => (w as { code?: string }).code === UNSCANNED_ROUTE);
      expect(warning?.message).toContain('POST /early');
      expect(logs.some((l) => l.includes(UNSCANNED_ROUTE) && l.includes('POST /early'))).toBe(true);
    } finally {
      process.off('warning', onWarning);
    }
  });

  it('starts when every route with a body is scanned or opted out, in any context below the plugin', async () => {
    app = Fastify();
    app.get('/before', async () => 'bodyless');
    await app.register(icap, profile());
    app.post('/a', async () => 'scanned');
    app.post('/webhook', { config: { icap: false } }, async () => 'opted out');
    await app.register(
      async (child) => {
        child.put('/b/*', async () => 'scanned');
        child.register(async (grandchild) => {
          grandchild.post('/c/:id', async () => 'scanned');
        });
      },
      { prefix: '/child' },
    );
    await app.ready();
    expect(findUnscannedRoutes(app)).toEqual([]);
  });
});

describe('@icapkit/fastify: not-found handlers', () => {
  it('a not-found handler that reads the body gets only a scanned body (EICAR: 403, clean: the handler)', async () => {
    const seen: unknown[] = [];
    app = Fastify();
    await app.register(icap, profile());
    octetParser(app);
    app.setNotFoundHandler(async (req, reply) => {
      seen.push(req.body);
      return reply.code(404).send({ missing: req.url });
    });
    await app.listen({ port: 0, host: '127.0.0.1' });
    const url = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
    const headers = { 'content-type': 'application/octet-stream' };
    const before = server.requests.length;
    const blocked = await send(url, '/nowhere', { body: eicar(), headers });
    expect(blocked.status).toBe(403);
    expect(seen).toEqual([]);
    const clean = await send(url, '/nowhere', { body: 'clean bytes', headers });
    expect(clean.status).toBe(404);
    expect(seen.map((b) => Buffer.from(b as Buffer).toString())).toEqual(['clean bytes']);
    const scanned = server.requests.slice(before).filter((r) => r.method === 'REQMOD');
    expect(scanned.map((r) => r.body?.toString('latin1'))).toEqual([
      eicar().toString('latin1'),
      'clean bytes',
    ]);
  });

  it('a not-found handler in a child context of the plugin is scanned too; config icap false opts one out', async () => {
    app = Fastify();
    await app.register(icap, profile());
    octetParser(app);
    await app.register(
      async (child) => {
        child.setNotFoundHandler(async (_req, reply) => reply.code(404).send('child'));
      },
      { prefix: '/scanned' },
    );
    await app.register(
      async (child) => {
        child.setNotFoundHandler({ config: { icap: false } } as never, async (_req, reply) =>
          reply.code(404).send('not scanned'),
        );
      },
      { prefix: '/optout' },
    );
    await app.listen({ port: 0, host: '127.0.0.1' });
    const url = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
    const headers = { 'content-type': 'application/octet-stream' };
    expect((await send(url, '/scanned/x', { body: eicar(), headers })).status).toBe(403);
    const before = server.requests.length;
    const out = await send(url, '/optout/x', { body: eicar(), headers });
    expect({ status: out.status, text: out.text }).toEqual({ status: 404, text: 'not scanned' });
    expect(server.requests.slice(before).filter((r) => r.method === 'REQMOD')).toEqual([]);
  });

  it('routes are scanned once (the not-found hook does nothing for them)', async () => {
    app = Fastify();
    await app.register(icap, profile());
    octetParser(app);
    app.post('/upload', async (req) => ({ length: (req.body as Buffer).length }));
    await app.listen({ port: 0, host: '127.0.0.1' });
    const url = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
    const before = server.requests.length;
    const r = await send(url, '/upload', {
      body: 'one scan',
      headers: { 'content-type': 'application/octet-stream' },
    });
    expect(r.status).toBe(200);
    expect(server.requests.slice(before).filter((q) => q.method === 'REQMOD')).toHaveLength(1);
  });
});
