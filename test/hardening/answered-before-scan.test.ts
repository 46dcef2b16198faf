/**
 * A response that closes before the scan's outcome comes: a timeout middleware mounted before
 * the scan answers 503 while the ICAP server is still scanning, and the scan then passes the
 * body. Before, the outcome that came after the close was never disposed: a body spooled to
 * disk kept its temp file and descriptor for good, one per such request. Now it is freed as it
 * comes, whatever the handler then does with the body (reads it or not), and nothing crashes.
 * Control: the same request without the timeout gets its 200 and leaves nothing either.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { IcapProfile } from '@icapkit/core';
import { icap as expressIcap } from '@icapkit/express';
import { icap as fastifyIcap } from '@icapkit/fastify';
import { icap as koaIcap } from '@icapkit/koa';
import { type IcapTestServer, startIcapServer } from '@icapkit/testing';
import express from 'express';
import Fastify from 'fastify';
import Koa from 'koa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { leftoverSpoolFiles } from '../support/leaks.js';

let icap: IcapTestServer;
beforeAll(async () => {
  icap = await startIcapServer();
  // Every REQMOD answered (204) after 400 ms; the timeout middleware answers after 100.
  icap.setScript((r) => (r.method === 'OPTIONS' ? undefined : { kind: 'delay', ms: 400 }));
});
afterAll(() => icap?.close());

const TIMEOUT_MS = 100;
const BODY = 'a'.repeat(20_000);

interface App {
  url: string;
  /** Bodies the handler read to their end, and handler runs. */
  readonly seen: { runs: number; bodies: number[] };
  close(): Promise<void>;
}

type Framework = 'express' | 'fastify' | 'koa';
type Options = { timeout: boolean; handlerReads: boolean };

/** Reads a Node request to its end; resolves with its length (never rejects). */
function lengthOf(req: NodeJS.ReadableStream): Promise<number> {
  return new Promise((resolve) => {
    let n = 0;
    req.on('data', (c: Buffer) => {
      n += c.length;
    });
    req.on('end', () => resolve(n));
    req.on('error', () => resolve(-1));
  });
}

async function startApp(framework: Framework, profile: IcapProfile, o: Options): Promise<App> {
  const seen = { runs: 0, bodies: [] as number[] };
  const handle = (req: NodeJS.ReadableStream, answer: (s: string) => void) => {
    seen.runs++;
    if (!o.handlerReads) return answer('not read');
    void lengthOf(req).then((n) => {
      seen.bodies.push(n);
      answer(String(n));
    });
  };
  if (framework === 'express') {
    const app = express();
    const mw = expressIcap(profile);
    if (o.timeout)
      app.use((_req, res, next) => {
        setTimeout(() => {
          if (!res.headersSent) res.status(503).send('timeout');
        }, TIMEOUT_MS);
        next();
      });
    app.use(mw);
    app.post('/u', (req, res) => handle(req, (s) => res.headersSent || res.send(s)));
    const server = app.listen(0, '127.0.0.1');
    await new Promise((r) => server.once('listening', r));
    return {
      url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
      seen,
      close: async () => {
        server.closeAllConnections();
        await new Promise((r) => server.close(r));
        await mw.close();
      },
    };
  }
  if (framework === 'fastify') {
    const app = Fastify();
    if (o.timeout)
      app.addHook('onRequest', (_request, reply, done) => {
        setTimeout(() => {
          if (!reply.raw.headersSent) reply.raw.writeHead(503).end('timeout');
        }, TIMEOUT_MS);
        done();
      });
    await app.register(fastifyIcap, { startupCheck: 'off', ...profile });
    app.removeAllContentTypeParsers();
    app.addContentTypeParser('*', (_req, payload, done) => {
      seen.runs++;
      if (!o.handlerReads) return done(null, 'not read');
      void lengthOf(payload).then((n) => {
        seen.bodies.push(n);
        done(null, String(n));
      });
    });
    app.post('/u', async (req, reply) => {
      if (reply.raw.headersSent) return reply.hijack();
      return req.body as string;
    });
    await app.listen({ port: 0, host: '127.0.0.1' });
    return {
      url: `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`,
      seen,
      close: () => app.close(),
    };
  }
  const app = new Koa();
  app.silent = true;
  const mw = koaIcap(profile);
  if (o.timeout)
    app.use(async (ctx, next) => {
      setTimeout(() => {
        if (!ctx.res.headersSent) ctx.res.writeHead(503).end('timeout');
      }, TIMEOUT_MS);
      await next();
    });
  app.use(mw as unknown as Koa.Middleware);
  app.use(async (ctx) => {
    ctx.body = await new Promise<string>((resolve) => handle(ctx.req, resolve));
  });
  const server = app.listen(0, '127.0.0.1');
  await new Promise((r) => server.once('listening', r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    seen,
    close: async () => {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
      await mw.close();
    },
  };
}

/** Waits (bounded) until `ok()`. */
async function until(ok: () => boolean, withinMs = 5000): Promise<void> {
  const deadline = Date.now() + withinMs;
  while (!ok() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
}

describe.each(['express', 'fastify', 'koa'] as const)('%s', (framework) => {
  for (const handlerReads of [false, true]) {
    for (const timeout of [true, false]) {
      it(`${timeout ? 'answered by a timeout middleware before the scan passes' : 'control, no timeout'}, handler ${handlerReads ? 'reads' : 'does not read'} the body: no temp file or fd left`, async () => {
        const spoolDir = await mkdtemp(join(tmpdir(), 'icapkit-answered-'));
        const app = await startApp(
          framework,
          { name: 'answered', poolGroup: icap.url(), serviceUri: '/avscan', memoryThreshold: 1024, spoolDir },
          { timeout, handlerReads },
        );
        try {
          const scans = icap.requests.filter((r) => r.method === 'REQMOD').length;
          const r = await fetch(`${app.url}/u`, { method: 'POST', body: BODY });
          const text = await r.text();
          if (timeout) expect([r.status, text]).toEqual([503, 'timeout']);
          else {
            expect([r.status, text]).toEqual([200, handlerReads ? String(BODY.length) : 'not read']);
            expect(app.seen).toEqual({ runs: 1, bodies: handlerReads ? [BODY.length] : [] });
          }
          // The scan went on to its pass (the ICAP server answers after 400 ms).
          await until(() => icap.requests.filter((q) => q.method === 'REQMOD').length > scans);
          expect(icap.requests.filter((q) => q.method === 'REQMOD').length).toBe(scans + 1);
          expect(await leftoverSpoolFiles(spoolDir, { withinMs: 5000 })).toEqual([]);
        } finally {
          await app.close();
          await rm(spoolDir, { recursive: true, force: true });
        }
      }, 20_000);
    }
  }
});
