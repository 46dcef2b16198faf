/**
 * HTTP/1.1 request trailers (fields after the last chunk of a chunked body) reach the handler
 * (`req.trailers`, `req.rawTrailers`; the Koa hand-off copies them) but are no part of what
 * the ICAP server scans: a request with any is refused (400, ICAP_ERR_BAD_REQUEST, whatever
 * the failure action) before the handler runs. The same chunked request without trailers passes.
 *
 * Hono: its Web `Request` has no trailers, but the Node request under it (@hono/node-server's
 * `env.incoming`) has them, where a handler can read them; @icapkit/web passes that request's
 * trailers to the engine, which refuses them as for the Node adapters.
 */
import { createServer as createHttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { getRequestListener } from '@hono/node-server';
import type { IcapLog, IcapProfile } from '@icapkit/core';
import { icap as expressIcap } from '@icapkit/express';
import { icap as fastifyIcap } from '@icapkit/fastify';
import { icap as honoIcap } from '@icapkit/hono';
import { icap as koaIcap } from '@icapkit/koa';
import { eicar, type IcapTestServer, startIcapServer } from '@icapkit/testing';
import express5 from 'express';
import Fastify from 'fastify';
import { Hono } from 'hono';
import Koa from 'koa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rawExchange } from '../support/raw-http.js';
import { readAll, served } from '../support/served.js';

let icap: IcapTestServer;
beforeAll(async () => {
  icap = await startIcapServer({ recordBodies: true });
});
afterAll(() => icap?.close());

interface Seen {
  body: string;
  trailers: Record<string, unknown>;
}

interface App {
  url: string;
  seen: Seen[];
  logs: IcapLog[];
  close(): Promise<void>;
}

const profileFor = (logs: IcapLog[]): IcapProfile => ({
  name: 'trailers',
  poolGroup: icap.url(),
  serviceUri: '/avscan',
  startupCheck: 'off',
  // A client's doing is never the failure action: fail-open must not let it through.
  failAction: 'fail-open',
  onLog: (l) => logs.push(l),
});

const FRAMEWORKS: Array<[string, () => Promise<App>]> = [
  [
    'express5',
    async () => {
      const seen: Seen[] = [];
      const logs: IcapLog[] = [];
      const mw = expressIcap(profileFor(logs));
      const app = express5();
      app.use(mw);
      app.post('/upload', async (req, res) => {
        const body = (await readAll(req)).toString('latin1');
        seen.push({ body, trailers: { ...req.trailers } });
        res.json({ ok: true });
      });
      return { seen, logs, ...(await served(app.listen(0, '127.0.0.1'), () => mw.close())) };
    },
  ],
  [
    'fastify',
    async () => {
      const seen: Seen[] = [];
      const logs: IcapLog[] = [];
      const app = Fastify();
      await app.register(fastifyIcap, profileFor(logs) as never);
      app.post('/upload', async (request) => {
        seen.push({ body: String(request.body), trailers: { ...request.raw.trailers } });
        return { ok: true };
      });
      await app.listen({ port: 0, host: '127.0.0.1' });
      const url = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
      return { url, seen, logs, close: () => app.close() };
    },
  ],
  [
    'koa3',
    async () => {
      const seen: Seen[] = [];
      const logs: IcapLog[] = [];
      const app = new Koa();
      app.silent = true;
      const mw = koaIcap(profileFor(logs));
      app.use(mw as unknown as Koa.Middleware);
      app.use(async (ctx) => {
        const body = (await readAll(ctx.req)).toString('latin1');
        seen.push({ body, trailers: { ...ctx.req.trailers } });
        ctx.body = { ok: true };
      });
      const server = createHttpServer(app.callback()).listen(0, '127.0.0.1');
      return { seen, logs, ...(await served(server, () => mw.close())) };
    },
  ],
  [
    'hono',
    async () => {
      const seen: Seen[] = [];
      const logs: IcapLog[] = [];
      const mw = honoIcap(profileFor(logs));
      const app = new Hono<{ Bindings: { incoming: { trailers: Record<string, unknown> } } }>();
      app.use(mw);
      app.post('/upload', async (c) => {
        const body = await c.req.text();
        seen.push({ body, trailers: { ...c.env.incoming.trailers } });
        return c.json({ ok: true });
      });
      const server = createHttpServer(getRequestListener(app.fetch)).listen(0, '127.0.0.1');
      return { seen, logs, ...(await served(server, () => mw.close())) };
    },
  ],
];

const E = eicar().toString('latin1');

function chunkedPost(trailer: string): string {
  return (
    'POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\n' +
    'Transfer-Encoding: chunked\r\nTrailer: X-Payload\r\nConnection: close\r\n\r\n' +
    `5\r\nhello\r\n0\r\n${trailer}\r\n`
  );
}

describe('request trailers', () => {
  for (const [name, start] of FRAMEWORKS) {
    it(`${name}: a chunked request with a trailer field is refused (400), the handler never runs`, async () => {
      const app = await start();
      try {
        const { responses } = await rawExchange(app.url, [chunkedPost(`X-Payload: ${E}\r\n`)], {
          responses: 1,
        });
        expect(responses[0]?.status).toBe(400);
        expect(app.seen).toHaveLength(0);
        const log = app.logs.at(-1)!;
        expect(log.error_code).toBe('ICAP_ERR_BAD_REQUEST');
        expect(log.error_message).toMatch(/trailer fields after its body \("X-Payload"\)/);
        expect(log.significance).toContain('REQUEST_REFUSED');
        expect(log.fail_action).toBeUndefined();
      } finally {
        await app.close();
      }
    });

    it(`${name}: a harmless trailer is refused too (it is not scanned, whatever it holds)`, async () => {
      const app = await start();
      try {
        const { responses } = await rawExchange(app.url, [chunkedPost('X-Checksum: 1234\r\n')], {
          responses: 1,
        });
        expect(responses[0]?.status).toBe(400);
        expect(app.seen).toHaveLength(0);
      } finally {
        await app.close();
      }
    });

    it(`${name}: the same chunked request without trailers passes`, async () => {
      const app = await start();
      try {
        const { responses } = await rawExchange(app.url, [chunkedPost('')], { responses: 1 });
        expect(responses[0]?.status).toBe(200);
        expect(app.seen).toEqual([{ body: 'hello', trailers: {} }]);
        expect(app.logs.at(-1)!.action).toBe('ICAP_PASSED');
      } finally {
        await app.close();
      }
    });
  }
});
