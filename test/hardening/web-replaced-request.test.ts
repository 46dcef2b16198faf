/**
 * campaign-br BR4 (a 5xx chosen by the client's framing): the Hono middleware refused with 500
 * ICAP_ERR_BODY_CONSUMED a request whose `c.req.raw` no longer reads its body from the Node
 * request, judging `env.incoming` instead of the Request it scans:
 *
 * - two scans in a row (a global `app.use(icap(av))` and a route's `icap(cdr)`): a multipart
 *   form (handed on in a new Request, icapkit's canonical form) passed the first and got 500 at
 *   the second, while a plain body (handed back in the Node request) passed both;
 * - hono/body-limit before the scan: with Content-Length it only reads the header (scanned), a
 *   chunked upload is read into `new Request(c.req.raw, { body: buffer })` and got 500.
 *
 * Now a Request other than the lightweight one over a Node request read to its end is scanned
 * through its own body. A Node request read before the scan under the Request that reads it is
 * still refused (web-consumed.test.ts), and EICAR is still blocked on each path.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { getRequestListener } from '@hono/node-server';
import { icap as honoIcap } from '@icapkit/hono';
import { eicar, type IcapTestServer, startIcapServer } from '@icapkit/testing';
import { Hono } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rawExchange } from '../support/raw-http.js';

let icap: IcapTestServer;
beforeAll(async () => {
  icap = await startIcapServer();
});
afterAll(() => icap?.close());

const profile = (name: string) => ({
  name,
  poolGroup: icap.url(),
  serviceUri: '/avscan',
  startupCheck: 'off' as const,
});

async function listen(app: Hono): Promise<{ url: string; server: Server }> {
  const server = createServer(getRequestListener(app.fetch));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, server };
}

describe('BR4 Hono: a Request not read from env.incoming is refused as if read before the scan', () => {
  it('a global scan and a route scan: a clean multipart form reaches the handler', async () => {
    const av = honoIcap(profile('av'));
    const cdr = honoIcap(profile('cdr'));
    const app = new Hono();
    app.use(av);
    app.post('/docs', cdr, async (c) => c.json(Object.keys(await c.req.parseBody())));
    const { url, server } = await listen(app);
    try {
      const fd = new FormData();
      fd.append('a', 'x');
      fd.append('f', new Blob(['clean']), 'f.txt');
      const r = await fetch(`${url}/docs`, { method: 'POST', body: fd });
      expect({ status: r.status, body: await r.text() }).toEqual({ status: 200, body: '["a","f"]' });
      const bad = new FormData();
      bad.append('a', 'x');
      bad.append('f', new Blob([eicar()]), 'f.txt');
      const blocked = await fetch(`${url}/docs`, { method: 'POST', body: bad });
      expect(blocked.status).toBe(403);
    } finally {
      server.closeAllConnections();
      server.close();
      await av.close();
      await cdr.close();
    }
  });

  it('hono/body-limit before the scan: a clean chunked upload is scanned like one with Content-Length', async () => {
    const mw = honoIcap(profile('limit'));
    const app = new Hono();
    app.use(bodyLimit({ maxSize: 1024 * 1024 }));
    app.use(mw);
    app.post('/raw', async (c) => c.text(await c.req.text()));
    const { url, server } = await listen(app);
    try {
      const post = async (framing: string, body: string) =>
        (
          await rawExchange(
            url,
            [`POST /raw HTTP/1.1\r\nHost: a\r\n${framing}Connection: close\r\n\r\n${body}`],
            { responses: 1, waitMs: 5000 },
          )
        ).responses[0]?.status;
      expect(await post('Content-Length: 5\r\n', 'hello')).toBe(200);
      expect(await post('Transfer-Encoding: chunked\r\n', '5\r\nhello\r\n0\r\n\r\n')).toBe(200);
      const e = eicar().toString('latin1');
      expect(await post(`Content-Length: ${e.length}\r\n`, e)).toBe(403);
      expect(
        await post('Transfer-Encoding: chunked\r\n', `${e.length.toString(16)}\r\n${e}\r\n0\r\n\r\n`),
      ).toBe(403);
    } finally {
      server.closeAllConnections();
      server.close();
      await mw.close();
    }
  });
});
