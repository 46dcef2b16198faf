/**
 * HTTP/2: a client that resets its stream while the application reads the approved body. The
 * body is handed back in the same request object (rearmRequest); Node's HTTP/2 compatibility
 * layer pushes `null` into that object when its stream closes. Before, that ended the handed-back
 * body early and cleanly: the application read a prefix of the upload as the whole of it (40 MB
 * scanned, 4-11 MB read, then 'end'), where Node without the middleware reports a premature
 * close. Found by an attack campaign. Now the re-armed body has one source: a reader that is not
 * done when the stream resets never sees a clean end short of the body (it gets the premature
 * close, or nothing more). Control: without a reset every reader gets the whole body.
 */
import {
  connect,
  constants,
  createServer,
  type Http2ServerRequest,
  type Http2ServerResponse,
} from 'node:http2';
import type { AddressInfo } from 'node:net';
import { getRequestListener } from '@hono/node-server';
import type { IcapProfile } from '@icapkit/core';
import { icap as fastifyIcap } from '@icapkit/fastify';
import { icap as honoIcap } from '@icapkit/hono';
import { icap as koaIcap } from '@icapkit/koa';
import { type IcapTestServer, startIcapServer } from '@icapkit/testing';
import Fastify from 'fastify';
import { Hono } from 'hono';
import Koa from 'koa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

let icap: IcapTestServer;
beforeAll(async () => {
  icap = await startIcapServer({ recordBodies: false });
});
afterAll(() => icap?.close());

const SIZE = 12 * 1024 * 1024;

/** What the handler's reader saw: 'end <n>' or 'error <code> <n>'. */
type Reading = string;

/**
 * Reads `req` with `for await`. With `closed`: `before-read` waits for the stream's 'close' (the
 * client's reset has landed) before reading at all; `mid-read` reads the first chunk, then
 * nothing more until then, then the rest.
 */
async function readAll(req: Http2ServerRequest, closed: Promise<void> | null, when: When): Promise<Reading> {
  let n = 0;
  try {
    if (closed !== null && when === 'before-read') {
      await closed;
      closed = null;
    }
    for await (const c of req) {
      n += (c as Buffer).length;
      if (closed !== null) {
        await closed;
        closed = null;
      }
    }
    return `end ${n}`;
  } catch (err) {
    return `error ${(err as NodeJS.ErrnoException).code} ${n}`;
  }
}

type When = 'before-read' | 'mid-read';

type Framework = 'fastify' | 'koa' | 'hono';

interface H2App {
  url: string;
  /** Resolves with the reader's result once the handler has read to an end or an error. */
  readings: Promise<Reading>[];
  /** Resolves when a handler has started reading (the scan passed). */
  started: Promise<void>;
  close(): Promise<void>;
}

async function startH2App(framework: Framework, profile: IcapProfile, reset: When | null): Promise<H2App> {
  const readings: Promise<Reading>[] = [];
  let started!: () => void;
  const startedP = new Promise<void>((r) => (started = r));
  const read = (req: Http2ServerRequest, res: Http2ServerResponse): Promise<Reading> => {
    const closed = reset !== null ? new Promise<void>((r) => res.once('close', () => r())) : null;
    started();
    const p = readAll(req, closed, reset ?? 'mid-read');
    readings.push(p);
    return p;
  };
  let server: ReturnType<typeof createServer>;
  let closeApp = async () => {};
  if (framework === 'fastify') {
    const app = Fastify({ http2: true });
    await app.register(fastifyIcap, { startupCheck: 'off', ...profile });
    app.removeAllContentTypeParsers();
    app.addContentTypeParser('*', (_req, _payload, done) => done(null));
    app.post('/u', async (request, reply) => {
      const r = await read(request.raw as Http2ServerRequest, reply.raw as Http2ServerResponse);
      return r;
    });
    await app.listen({ port: 0, host: '127.0.0.1' });
    return {
      url: `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`,
      readings,
      started: startedP,
      close: () => app.close(),
    };
  }
  if (framework === 'koa') {
    const app = new Koa();
    app.silent = true;
    const mw = koaIcap({ startupCheck: 'off', ...profile });
    app.use(mw as unknown as Koa.Middleware);
    app.use(async (ctx) => {
      ctx.body = await read(
        ctx.req as unknown as Http2ServerRequest,
        ctx.res as unknown as Http2ServerResponse,
      );
    });
    server = createServer(app.callback() as never);
    closeApp = () => mw.close();
  } else {
    const app = new Hono<{ Bindings: { incoming: Http2ServerRequest; outgoing: Http2ServerResponse } }>();
    const mw = honoIcap({ startupCheck: 'off', ...profile });
    app.use(mw);
    app.post('/u', async (c) => c.text(await read(c.env.incoming, c.env.outgoing)));
    server = createServer(getRequestListener(app.fetch) as never);
    closeApp = () => mw.close();
  }
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    readings,
    started: startedP,
    close: async () => {
      await new Promise<void>((r) => server.close(() => r()));
      await closeApp();
    },
  };
}

/** Settles within `ms`, or says it did not. */
function within<T>(p: Promise<T>, ms: number): Promise<T | 'pending'> {
  return Promise.race([p, new Promise<'pending'>((r) => setTimeout(() => r('pending'), ms).unref())]);
}

describe.each(['fastify', 'koa', 'hono'] as const)('%s over HTTP/2', (framework) => {
  for (const memoryThreshold of ['16kb', '64mb'])
    for (const when of ['before-read', 'mid-read'] as const) {
      const where = memoryThreshold === '16kb' ? 'spooled' : 'in memory';
      it(`the client resets ${when === 'before-read' ? 'before the handler reads' : 'while the handler reads'} the approved body (${where}): no clean end short of it`, async () => {
        const app = await startH2App(
          framework,
          { name: 'h2-reset', poolGroup: icap.url(), serviceUri: '/avscan', memoryThreshold },
          when,
        );
        const client = connect(app.url);
        client.on('error', () => {});
        try {
          const s = client.request({
            ':method': 'POST',
            ':path': '/u',
            'content-type': 'application/octet-stream',
          });
          s.on('error', () => {});
          s.end(Buffer.alloc(SIZE, 0x61));
          // The scan passed and the handler has its first chunk: reset the stream now.
          await within(app.started, 15_000);
          expect(app.readings).toHaveLength(1);
          s.close(constants.NGHTTP2_CANCEL);
          const reading = await within(app.readings[0]!, 3000);
          // A premature close, or no end at all; never a clean end before the whole body.
          if (reading !== 'pending')
            expect(reading).toMatch(new RegExp(`^(error ERR_STREAM_PREMATURE_CLOSE \\d+|end ${SIZE})$`));
        } finally {
          client.destroy();
          await app.close();
        }
      }, 30_000);
    }

  it('control: without a reset the handler reads the whole body', async () => {
    const app = await startH2App(
      framework,
      { name: 'h2-reset', poolGroup: icap.url(), serviceUri: '/avscan', memoryThreshold: '16kb' },
      null,
    );
    const client = connect(app.url);
    client.on('error', () => {});
    try {
      const s = client.request({
        ':method': 'POST',
        ':path': '/u',
        'content-type': 'application/octet-stream',
      });
      s.end(Buffer.alloc(SIZE, 0x61));
      const status = await new Promise<number>((r) => s.on('response', (h) => r(Number(h[':status']))));
      let text = '';
      s.setEncoding('utf8');
      for await (const c of s) text += c;
      expect([status, text]).toEqual([200, `end ${SIZE}`]);
    } finally {
      client.destroy();
      await app.close();
    }
  }, 30_000);
});
