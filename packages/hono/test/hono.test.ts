/**
 * What @icapkit/hono adds to @icapkit/web, on @hono/node-server over real sockets: `c.var.icap`,
 * the approved request in `c.req.raw` for Hono's readers, scanner response headers on the
 * handler's response, a rewritten URL in `c.req.path`, routes outside the middleware untouched,
 * and `guardExpectContinue`. The conformance scenarios: test/conformance (target `hono`).
 */
import { createServer, type Server } from 'node:http';
import { type AddressInfo, connect } from 'node:net';
import { getRequestListener } from '@hono/node-server';
import type { IcapLog, IcapProfile } from '@icapkit/core';
import { icap } from '@icapkit/hono';
import { EICAR_NAME, eicar, type IcapTestServer, startIcapServer } from '@icapkit/testing';
import { Hono } from 'hono';
import { afterEach, expect, it } from 'vitest';
import { send } from '../../../test/support/http-client.js';

const closers: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close();
});

async function icapServer(options: Parameters<typeof startIcapServer>[0] = {}): Promise<IcapTestServer> {
  const s = await startIcapServer(options);
  closers.push(() => s.close());
  return s;
}

async function listen(app: Hono, guard?: (server: Server) => Server): Promise<string> {
  const server = createServer(getRequestListener(app.fetch));
  guard?.(server);
  server.listen(0, '127.0.0.1');
  await new Promise<void>((r) => server.once('listening', () => r()));
  closers.push(async () => {
    server.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
  });
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

function middleware(server: IcapTestServer, extra: Partial<IcapProfile> = {}) {
  const logs: IcapLog[] = [];
  const mw = icap({
    name: 'hono',
    poolGroup: server.url(),
    serviceUri: '/avscan',
    onLog: (l) => logs.push(l),
    ...extra,
  });
  closers.push(() => mw.close());
  return { mw, logs };
}

it('c.var.icap and the approved body for c.req.json(); routes outside the middleware are not scanned', async () => {
  const server = await icapServer();
  const { mw, logs } = middleware(server);
  const app = new Hono();
  app.use('/api/*', mw);
  app.post('/api/doc', async (c) => c.json({ action: c.var.icap.action, doc: await c.req.json() }));
  app.post('/open', async (c) => c.json({ length: (await c.req.arrayBuffer()).byteLength }));
  const url = await listen(app);
  const doc = { title: 'report', n: 3 };
  const r = await send(url, '/api/doc', {
    body: JSON.stringify(doc),
    headers: { 'content-type': 'application/json' },
  });
  expect(r.status).toBe(200);
  expect(JSON.parse(r.text)).toEqual({ action: 'ICAP_PASSED', doc });
  const blocked = await send(url, '/api/doc', { body: eicar(), headers: { accept: 'application/json' } });
  expect(blocked.status).toBe(403);
  expect(JSON.parse(blocked.text)).toMatchObject({ threat: EICAR_NAME });
  // /open is not behind the middleware: EICAR reaches it (the app chose so), and nothing is logged.
  expect((await send(url, '/open', { body: eicar() })).status).toBe(200);
  expect(logs.map((l) => l.action)).toEqual(['ICAP_PASSED', 'ICAP_BLOCKED']);
});

it("the scanner's response headers (NSX Defender X-Lastline-*) reach the client, not the handler", async () => {
  const server = await icapServer({ vendor: 'nsx-defender', nsxLastlineHeadersOnClean: true });
  const { mw } = middleware(server, { vendor: 'nsx-defender' });
  const app = new Hono();
  app.use(mw);
  let seen: string | undefined;
  app.post('/up', async (c) => {
    seen = c.req.header('x-lastline-status');
    return c.text(await c.req.text());
  });
  const url = await listen(app);
  const r = await send(url, '/up', { body: 'clean body' });
  expect(r.status).toBe(200);
  expect(r.text).toBe('clean body');
  expect(r.headers['x-lastline-status']).toBe('known');
  expect(seen).toBeUndefined();
});

it('a request the ICAP server rewrote: c.req.text() reads the new body, c.req.path the URL it gives', async () => {
  const server = await icapServer({ rewrite: { from: 'EVIL', to: 'GOOD-LONGER' } });
  const { mw } = middleware(server, { serviceUri: '/modify' });
  const app = new Hono();
  app.use(mw);
  app.post('/up', async (c) =>
    c.json({ path: c.req.path, body: await c.req.text(), action: c.var.icap.action }),
  );
  const url = await listen(app);
  const r = await send(url, '/up?x=1', { body: 'an EVIL word', headers: { 'content-type': 'text/plain' } });
  expect(JSON.parse(r.text)).toEqual({ path: '/up', body: 'an GOOD-LONGER word', action: 'ICAP_MODIFIED' });
});

it('guardExpectContinue: a declared length over bufferSize gets 413 before the body is sent', async () => {
  const server = await icapServer();
  const { mw } = middleware(server, { bufferSize: 1000 });
  const app = new Hono();
  app.use(mw);
  app.post('/up', async (c) => c.text(String((await c.req.arrayBuffer()).byteLength)));
  const url = await listen(app, (s) => mw.guardExpectContinue(s));
  // Only the head is sent: the first thing back must be the 413, not 100 Continue (without the
  // guard, Node sends 100 Continue at once and the client would send its body).
  expect(
    await firstStatusLine(
      url,
      'POST /up HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n',
    ),
  ).toBe('HTTP/1.1 413 Payload Too Large');
  expect(server.requests.filter((r) => r.method === 'REQMOD')).toHaveLength(0);
  const small = await send(url, '/up', { body: Buffer.alloc(500, 0x61), expectContinue: true });
  expect([small.status, small.text]).toEqual([200, '500']);
});

/** The first line the server answers to `head` (bounded in time). */
function firstStatusLine(url: string, head: string): Promise<string> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), hostname);
    let got = '';
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no answer within 5 s (got ${JSON.stringify(got)})`));
    }, 5000);
    socket.on('data', (d: Buffer) => {
      got += d.toString('latin1');
      const eol = got.indexOf('\r\n');
      if (eol < 0) return;
      clearTimeout(timer);
      socket.destroy();
      resolve(got.slice(0, eol));
    });
    socket.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    socket.write(head);
  });
}
