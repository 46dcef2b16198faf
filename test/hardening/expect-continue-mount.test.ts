/**
 * campaign-br BR6: Hono's `guardExpectContinue(server)` judged every `Expect: 100-continue`
 * request of the server with the middleware's profile, while the middleware only runs where it
 * is mounted (`app.use('/upload/*', scan)`, the README's example): an upload to another route,
 * never scanned, was refused 413 before its body whenever it sent Expect. Given the app
 * (`guardExpectContinue(server, app)`), the guard answers early only for requests Hono's router
 * sends through the middleware. The same for Express (`guardExpectContinue(server, app)`, the
 * app's router read for a layer of the middleware that matches the path; Express 5 and 4), and
 * Koa, whose chain cannot be read (`guardExpectContinue(server, runsFor)`).
 */
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { serve } from '@hono/node-server';
import { icap as expressIcap } from '@icapkit/express';
import { icap as honoIcap } from '@icapkit/hono';
import { icap as koaIcap } from '@icapkit/koa';
import { type IcapTestServer, startIcapServer } from '@icapkit/testing';
import express5 from 'express';
import express4 from 'express4';
import { Hono } from 'hono';
import Koa from 'koa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { expectContinue } from '../support/expect-continue.js';

let icap: IcapTestServer;
beforeAll(async () => {
  icap = await startIcapServer();
});
afterAll(() => icap?.close());

const BODY = Buffer.alloc(5000, 0x61);

describe('BR6 Hono: guardExpectContinue and routes the middleware is not mounted on', () => {
  it('only requests routed through the middleware are answered before their body', async () => {
    const scan = honoIcap({
      name: 'br6',
      poolGroup: icap.url(),
      serviceUri: '/avscan',
      startupCheck: 'off',
      bufferSize: 1000,
      bufferSizeExceedAction: 'fail-closed',
    });
    const read = async (c: { req: { arrayBuffer(): Promise<ArrayBuffer> }; text(s: string): Response }) =>
      c.text(String((await c.req.arrayBuffer()).byteLength));
    const api = new Hono();
    api.use('/scanned/*', scan);
    api.post('/scanned/file', read);
    api.onError((err, c) => c.text(String(err), 500));
    const app = new Hono();
    app.use('/upload/*', scan);
    app.post('/upload/file', read);
    app.post('/import', read);
    app.route('/api', api);
    app.post('/api/other', read);
    const server = scan.guardExpectContinue(serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }), app);
    await new Promise<void>((r) => (server.listening ? r() : server.once('listening', () => r())));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    try {
      expect({
        import: await expectContinue(url, 'POST', '/import', BODY),
        apiOther: await expectContinue(url, 'POST', '/api/other', BODY),
        upload: await expectContinue(url, 'POST', '/upload/file', BODY),
        // Through a sub-app with its own onError (Hono wraps its handlers).
        apiScanned: await expectContinue(url, 'POST', '/api/scanned/file', BODY),
      }).toEqual({
        import: { continued: true, status: 200 },
        apiOther: { continued: true, status: 200 },
        upload: { continued: false, status: 413 },
        apiScanned: { continued: false, status: 413 },
      });
    } finally {
      (server as unknown as { closeAllConnections(): void }).closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
      await scan.close();
    }
  });
});

describe.each([
  ['express5', express5],
  ['express4', express4],
] as const)('BR6 %s: guardExpectContinue(server, app)', (_name, express) => {
  it('only requests routed through the middleware are answered before their body', async () => {
    const scan = expressIcap({
      name: 'br6e',
      poolGroup: icap.url(),
      serviceUri: '/avscan',
      startupCheck: 'off',
      bufferSize: 1000,
      bufferSizeExceedAction: 'fail-closed',
    });
    const read = (req: import('node:http').IncomingMessage, res: import('node:http').ServerResponse) => {
      let n = 0;
      req.on('data', (d: Buffer) => {
        n += d.length;
      });
      req.on('end', () => res.end(String(n)));
    };
    const app = (express as unknown as () => import('express').Express)();
    const api = (express as unknown as { Router(): import('express').Router }).Router();
    api.use('/scanned', scan);
    api.post('/scanned/file', read);
    api.post('/other', read);
    app.use('/upload', scan);
    app.post('/upload/file', read);
    app.post('/import', read);
    app.post('/route', scan, read);
    app.use('/api', api);
    const server: Server = scan.guardExpectContinue(app.listen(0, '127.0.0.1'), app);
    await new Promise<void>((r) => (server.listening ? r() : server.once('listening', () => r())));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    try {
      expect({
        import: await expectContinue(url, 'POST', '/import', BODY),
        apiOther: await expectContinue(url, 'POST', '/api/other', BODY),
        upload: await expectContinue(url, 'POST', '/upload/file', BODY),
        route: await expectContinue(url, 'POST', '/route', BODY),
        apiScanned: await expectContinue(url, 'POST', '/api/scanned/file', BODY),
      }).toEqual({
        import: { continued: true, status: 200 },
        apiOther: { continued: true, status: 200 },
        upload: { continued: false, status: 413 },
        route: { continued: false, status: 413 },
        apiScanned: { continued: false, status: 413 },
      });
    } finally {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
      await scan.close();
    }
  });
});

describe('BR6 Koa: guardExpectContinue(server, runsFor)', () => {
  it('requests runsFor says the middleware does not run for get 100 Continue', async () => {
    const scan = koaIcap({
      name: 'br6k',
      poolGroup: icap.url(),
      serviceUri: '/avscan',
      startupCheck: 'off',
      bufferSize: 1000,
      bufferSizeExceedAction: 'fail-closed',
    });
    const app = new Koa();
    const scanned = (path: string) => path.startsWith('/upload/');
    app.use((ctx, next) => (scanned(ctx.path) ? scan(ctx as never, next) : next()));
    app.use(async (ctx) => {
      let n = 0;
      for await (const d of ctx.req) n += (d as Buffer).length;
      ctx.body = String(n);
    });
    const server: Server = scan.guardExpectContinue(app.listen(0, '127.0.0.1'), (req) =>
      scanned(new URL(req.url ?? '/', 'http://x').pathname),
    );
    await new Promise<void>((r) => (server.listening ? r() : server.once('listening', () => r())));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    try {
      expect({
        import: await expectContinue(url, 'POST', '/import', BODY),
        upload: await expectContinue(url, 'POST', '/upload/file', BODY),
      }).toEqual({
        import: { continued: true, status: 200 },
        upload: { continued: false, status: 413 },
      });
    } finally {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
      await scan.close();
    }
  });
});
