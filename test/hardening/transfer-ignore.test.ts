/**
 * `Transfer-Ignore: jpg` from the ICAP server's OPTIONS must not let an HTTP client skip the scan
 * by naming its upload `evil.jpg`: by default every body is scanned (403 for EICAR in each
 * framework); only the explicit profile option `transferIgnore: 'extension'` honours it.
 */
import type { AddressInfo } from 'node:net';
import type { IcapLog, IcapProfile } from '@icapkit/core';
import { icap as fastifyIcap } from '@icapkit/fastify';
import { eicar, type IcapTestServer, startIcapServer } from '@icapkit/testing';
import Fastify from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Framework, startApp } from '../conformance/apps.js';
import { send } from '../support/http-client.js';

const FRAMEWORKS: Framework[] = ['express5', 'fastify', 'koa3'];

let server: IcapTestServer;
beforeAll(async () => {
  server = await startIcapServer({
    recordBodies: false,
    transfer: { preview: ['*'], ignore: ['jpg', 'mp4'] },
  });
});
afterAll(async () => {
  await server.close();
});

interface TiApp {
  url: string;
  seen: number;
  close(): Promise<void>;
}

/**
 * The conformance app, except for Fastify: its routing runs before its hooks, and the shared
 * app has no route for `/files/*.jpg`; here is one (a raw PUT), with icapkit registered the same way.
 */
async function start(framework: Framework, profile: IcapProfile): Promise<TiApp> {
  if (framework !== 'fastify') {
    const app = await startApp(framework, profile);
    return {
      url: app.url,
      get seen() {
        return app.seen.length;
      },
      close: () => app.close(),
    };
  }
  const app = Fastify();
  await app.register(fastifyIcap, profile);
  app.addContentTypeParser('*', { parseAs: 'buffer' }, (_req, body, done) => done(null, body));
  let seen = 0;
  app.put('/files/:name', async () => {
    seen++;
    return { ok: true };
  });
  await app.listen({ port: 0, host: '127.0.0.1' });
  const port = (app.server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    get seen() {
      return seen;
    },
    close: () => app.close(),
  };
}

async function waitFor(condition: () => boolean, withinMs = 3000): Promise<void> {
  const deadline = Date.now() + withinMs;
  while (!condition() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
}

describe.each(FRAMEWORKS)('Transfer-Ignore: %s', (framework) => {
  for (const failAction of ['fail-closed', 'fail-open'] as const) {
    it(`${failAction}: PUT /files/evil.jpg with EICAR is scanned and blocked by default`, async () => {
      const logs: IcapLog[] = [];
      const app = await start(framework, {
        name: 'ti',
        poolGroup: server.url(),
        serviceUri: '/avscan',
        failAction,
        onLog: (l) => logs.push(l),
      });
      try {
        server.reset();
        const r = await send(app.url, '/files/evil.jpg', {
          method: 'PUT',
          body: eicar(),
          headers: { 'content-type': 'image/jpeg' },
        });
        expect(r.status).toBe(403);
        await waitFor(() => logs.length > 0);
        expect(logs.at(-1)?.action).toBe('ICAP_BLOCKED');
        expect(server.requests.filter((q) => q.method === 'REQMOD')).toHaveLength(1);
        expect(app.seen).toBe(0);
      } finally {
        await app.close();
      }
    });
  }

  it("transferIgnore: 'extension' (opt-in) honours it: not sent, logged with the reason", async () => {
    const logs: IcapLog[] = [];
    const app = await start(framework, {
      name: 'ti',
      poolGroup: server.url(),
      serviceUri: '/avscan',
      transferIgnore: 'extension',
      onLog: (l) => logs.push(l),
    });
    try {
      server.reset();
      const r = await send(app.url, '/files/evil.jpg', { method: 'PUT', body: eicar() });
      // Passed unscanned: the handler's 200 (Fastify) or, without a route for it, the framework's 404.
      expect(r.status).toBe(framework === 'fastify' ? 200 : 404);
      expect(app.seen).toBe(framework === 'fastify' ? 1 : 0);
      await waitFor(() => logs.length > 0);
      expect(logs.at(-1)?.request_logs.at(-1)?.reason).toBe('Transfer-Ignore: jpg');
      expect(server.requests.filter((q) => q.method === 'REQMOD')).toHaveLength(0);
    } finally {
      await app.close();
    }
  });
});
