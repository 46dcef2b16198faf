/**
 * campaign-br BR7 (invariant 1): @hono/node-server's lightweight Request reads the Node request
 * itself for `text()`, `json()`, `arrayBuffer()` of a TRACE request, whose Web body is null. The
 * web adapter refuses such a request (400) when it knows the Node request; an application that
 * serves Hono through a fetch wrapper that does not pass the env on (`serve({ fetch: (req) =>
 * app.fetch(req) })`) gave the middleware none, so the scan saw a bodiless TRACE (NO_BODY, not
 * scanned) and an `app.all()` handler read EICAR. Now the scan takes the Node request the
 * Request carries (its own `incomingKey` field) when the env does not give one.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { getRequestListener } from '@hono/node-server';
import type { IcapLog } from '@icapkit/core';
import { icap as honoIcap } from '@icapkit/hono';
import { eicar, type IcapTestServer, startIcapServer } from '@icapkit/testing';
import { Hono } from 'hono';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rawExchange } from '../support/raw-http.js';

let icap: IcapTestServer;
beforeAll(async () => {
  icap = await startIcapServer();
});
afterAll(() => icap?.close());
const E = eicar();

describe('BR7 Hono without env: a TRACE body read through the Request', () => {
  it('TRACE /upload with an EICAR body never reaches the handler', async () => {
    const logs: IcapLog[] = [];
    const scan = honoIcap({
      name: 'br7',
      poolGroup: icap.url(),
      serviceUri: '/avscan',
      startupCheck: 'off',
      onLog: (l) => logs.push(l),
    });
    const app = new Hono();
    app.use(scan);
    const got: boolean[] = [];
    app.all('/upload', async (c) => {
      const body = Buffer.from(await c.req.arrayBuffer());
      got.push(body.includes(E));
      return c.text(`stored ${body.length}`);
    });
    // A fetch wrapper that does not pass @hono/node-server's env on.
    const server: Server = createServer(getRequestListener((req: Request) => app.fetch(req)));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    try {
      // Control: POST is scanned and blocked.
      const post = await rawExchange(
        url,
        [`POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: ${E.length}\r\nConnection: close\r\n\r\n`, E],
        { responses: 1 },
      );
      expect(post.responses[0]?.status).toBe(403);
      const trace = await rawExchange(
        url,
        [`TRACE /upload HTTP/1.1\r\nHost: a\r\nContent-Length: ${E.length}\r\nConnection: close\r\n\r\n`, E],
        { responses: 1 },
      );
      expect(
        { status: trace.responses[0]?.status, eicarDelivered: got.includes(true) },
        JSON.stringify(logs.at(-1)?.policy_reason),
      ).toEqual({ status: 400, eicarDelivered: false });
      // The other methods: a body the Web Request carries is scanned, one it does not is refused.
      for (const method of ['GET', 'HEAD', 'OPTIONS', 'DELETE']) {
        const r = await rawExchange(
          url,
          [
            `${method} /upload HTTP/1.1\r\nHost: a\r\nContent-Length: ${E.length}\r\nConnection: close\r\n\r\n`,
            E,
          ],
          { responses: 1 },
        );
        expect({ method, status: r.responses[0]?.status, eicarDelivered: got.includes(true) }).toEqual({
          method,
          status: /GET|HEAD/.test(method) ? 400 : 403,
          eicarDelivered: false,
        });
      }
    } finally {
      server.closeAllConnections();
      server.close();
      await scan.close();
    }
  });
});
