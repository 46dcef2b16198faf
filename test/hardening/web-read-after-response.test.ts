/**
 * campaign-br BR3 (availability): a Hono handler that reads the approved body after its
 * response started (hono/streaming's `stream()`/`streamSSE()` callback reading `c.req.text()`
 * or `c.req.parseBody()` after an await), or a `withIcap` handler whose Response body stream
 * reads `request.text()`, got nothing: the middleware freed the held body as soon as the
 * handler returned. A body handed back in the Node request then never ended (the read hung
 * until the client left), and a multipart form in a new Request failed with a premature close.
 * Now what the handler has not read is freed once its response is done.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { getRequestListener } from '@hono/node-server';
import { icap as honoIcap } from '@icapkit/hono';
import { type IcapTestServer, startIcapServer } from '@icapkit/testing';
import { withIcap } from '@icapkit/web';
import { Hono } from 'hono';
import { stream } from 'hono/streaming';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

let icap: IcapTestServer;
beforeAll(async () => {
  icap = await startIcapServer();
});
afterAll(() => icap?.close());

const DEADLINE_MS = 3000;
const within = <T>(p: Promise<T>): Promise<T | 'TIMEOUT'> =>
  Promise.race([p, new Promise<'TIMEOUT'>((r) => setTimeout(() => r('TIMEOUT'), DEADLINE_MS))]);

describe('BR3 Hono: the approved body read inside a streamed response', () => {
  it('c.req.text() and c.req.parseBody() after the response started get the scanned body', async () => {
    const mw = honoIcap({ name: 'br3', poolGroup: icap.url(), serviceUri: '/avscan', startupCheck: 'off' });
    const app = new Hono();
    app.use(mw);
    app.post('/text', (c) =>
      stream(c, async (s) => {
        await s.sleep(100);
        const t = await within(c.req.text()).catch((e: unknown) => `ERR ${String(e)}`);
        await s.write(t);
      }),
    );
    app.post('/form', (c) =>
      stream(c, async (s) => {
        await s.sleep(100);
        const t = await within(c.req.parseBody().then((b) => Object.keys(b).join(','))).catch(
          (e: unknown) => `ERR ${String(e)}`,
        );
        await s.write(t);
      }),
    );
    const server: Server = createServer(getRequestListener(app.fetch));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    try {
      const r1 = await fetch(`${url}/text`, { method: 'POST', body: 'hello world' });
      const fd = new FormData();
      fd.append('a', 'x');
      fd.append('f', new Blob(['abc']), 'f.txt');
      const r2 = await fetch(`${url}/form`, { method: 'POST', body: fd });
      expect({ text: await r1.text(), form: await r2.text() }).toEqual({ text: 'hello world', form: 'a,f' });
    } finally {
      server.closeAllConnections();
      server.close();
      await mw.close();
    }
  });

  it('@icapkit/web withIcap: request.text() inside the streamed Response body', async () => {
    const route = withIcap(
      { name: 'br3w', poolGroup: icap.url(), serviceUri: '/avscan', startupCheck: 'off' },
      async (request: Request) =>
        new Response(
          new ReadableStream({
            async start(controller) {
              await new Promise((r) => setTimeout(r, 100));
              const t = await within(request.text()).catch((e: unknown) => `ERR ${String(e)}`);
              controller.enqueue(new TextEncoder().encode(t));
              controller.close();
            },
          }),
        ),
    );
    const server: Server = createServer(getRequestListener(route as never));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    try {
      const r = await fetch(url, { method: 'POST', body: 'hello world' });
      expect(await r.text()).toBe('hello world');
    } finally {
      server.closeAllConnections();
      server.close();
      await route.close();
    }
  });
  it('withIcap without a Node response (a fetch-style server): read inside the Response body, then freed', async () => {
    const route = withIcap(
      { name: 'br3n', poolGroup: icap.url(), serviceUri: '/avscan', startupCheck: 'off' },
      async (request: Request) =>
        new Response(
          new ReadableStream({
            async start(controller) {
              await new Promise((r) => setTimeout(r, 50));
              const t = await within(request.text()).catch((e: unknown) => `ERR ${String(e)}`);
              controller.enqueue(new TextEncoder().encode(t));
              controller.close();
            },
          }),
        ),
    );
    try {
      const body = new TextEncoder().encode('x'.repeat(200_000));
      const request = new Request('http://app.test/upload', {
        method: 'POST',
        body,
        duplex: 'half',
      } as RequestInit);
      const response = await route(request, {});
      expect((await response.text()).length).toBe(200_000);
    } finally {
      await route.close();
    }
  });
});
