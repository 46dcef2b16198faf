/**
 * campaign-br BR8 (invariant 1): a UTF-8 BOM in front of a text body was scanned (the ICAP
 * server got EF BB BF + the text) but stripped by the readers handlers use: Hono's
 * `c.req.text()` (TextDecoder), a Web handler's `request.text()` (undici), Nest on Express's
 * `useBodyParser('text')` (iconv-lite), undici's multipart field values (`c.req.parseBody()`).
 * A scanner whose signature is anchored at offset 0 of the object (EICAR's own rule, ClamAV's
 * offset-0 body signatures, whole-object hashes) passed `BOM + EICAR` while the handler held
 * exactly the EICAR file. (Nest on Express: test/nestjs/bom-stripped-text.test.ts.) test/support/anchored-scanner.ts models such a signature. Fix: a body (and a
 * per-file multipart field part) that starts with a BOM is also scanned without it.
 * (The decoded JSON strings as one newline-joined object are campaign-bj BJ6: not covered here.)
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { getRequestListener } from '@hono/node-server';
import { icap as honoIcap } from '@icapkit/hono';
import { withIcap } from '@icapkit/web';
import { Hono } from 'hono';
import { describe, expect, it } from 'vitest';
import { anchoredScanner, BOM, E, postText, THREAT } from '../support/anchored-scanner.js';
import { rawExchange } from '../support/raw-http.js';
import { chunked, scripted } from '../support/scripted-icap.js';

const anchored = anchoredScanner();
const { profile } = anchored;
const post = postText;

async function listen(fetch: (req: Request, env: unknown) => Response | Promise<Response>) {
  const server: Server = createServer(getRequestListener(fetch as never));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, server };
}

describe('BR8 a BOM before a text body: also scanned without it', () => {
  it('Hono c.req.text()', async () => {
    const mw = honoIcap(profile());
    const app = new Hono();
    const got: string[] = [];
    app.use(mw);
    app.post('/upload', async (c) => {
      got.push(await c.req.text());
      return c.text('stored');
    });
    const { url, server } = await listen(app.fetch);
    try {
      expect(await post(url, E)).toBe(403); // control: the file itself is caught
      const status = await post(url, Buffer.concat([BOM, E]));
      expect({ status, handlerReadEicarFile: got.includes(E.toString('latin1')) }).toEqual({
        status: 403,
        handlerReadEicarFile: false,
      });
    } finally {
      server.closeAllConnections();
      server.close();
      await mw.close();
    }
  });

  it('Hono c.req.parseBody(): a multipart field (each part is an object of its own, with the BOM)', async () => {
    const mw = honoIcap(profile());
    const app = new Hono();
    const got: unknown[] = [];
    app.use(mw);
    app.post('/upload', async (c) => {
      got.push((await c.req.parseBody()).f);
      return c.text('stored');
    });
    const { url, server } = await listen(app.fetch);
    try {
      const form = Buffer.concat([
        Buffer.from('--B\r\nContent-Disposition: form-data; name="f"\r\n\r\n'),
        BOM,
        E,
        Buffer.from('\r\n--B--\r\n'),
      ]);
      const r = await rawExchange(
        url,
        [
          Buffer.concat([
            Buffer.from(
              `POST /upload HTTP/1.1\r\nHost: a\r\nContent-Type: multipart/form-data; boundary=B\r\nContent-Length: ${form.length}\r\nConnection: close\r\n\r\n`,
            ),
            form,
          ]),
        ],
        { responses: 1, waitMs: 5000 },
      );
      expect({
        status: r.responses[0]?.status,
        handlerReadEicarFile: got.includes(E.toString('latin1')),
      }).toEqual({
        status: 403,
        handlerReadEicarFile: false,
      });
    } finally {
      server.closeAllConnections();
      server.close();
      await mw.close();
    }
  });

  it('@icapkit/web withIcap: request.text()', async () => {
    const got: string[] = [];
    const route = withIcap(profile(), async (request: Request) => {
      got.push(await request.text());
      return new Response('stored');
    });
    const { url, server } = await listen(route);
    try {
      expect(await post(url, E)).toBe(403);
      const status = await post(url, Buffer.concat([BOM, E]));
      expect({ status, handlerReadEicarFile: got.includes(E.toString('latin1')) }).toEqual({
        status: 403,
        handlerReadEicarFile: false,
      });
    } finally {
      server.closeAllConnections();
      server.close();
      await route.close();
    }
  });
  it('controls: a clean body is one REQMOD; a clean one with a BOM two, and reaches the handler', async () => {
    const mw = honoIcap(profile());
    const app = new Hono();
    const got: string[] = [];
    app.use(mw);
    app.post('/upload', async (c) => {
      got.push(await c.req.text());
      return c.text('stored');
    });
    const { url, server } = await listen(app.fetch);
    try {
      const reqmods = () => anchored.scanner.requests.filter((r) => r.method === 'REQMOD');
      const before = reqmods().length;
      expect(await post(url, Buffer.from('hello'))).toBe(200);
      expect(reqmods().length - before).toBe(1);
      const bom = Buffer.concat([BOM, Buffer.from('hello')]);
      expect(await post(url, bom)).toBe(200);
      const sent = reqmods()
        .slice(before + 1)
        .map((r) => r.body.toString('latin1'));
      expect(sent).toEqual([bom.toString('latin1'), 'hello']);
      expect(got).toEqual(['hello', 'hello']);
    } finally {
      server.closeAllConnections();
      server.close();
      await mw.close();
    }
  });
  it('a scanner that answers a clean body with a 200 echo (no 204): the body without its BOM is scanned too', async () => {
    const echo = await scripted((r) => {
      if (r.body.subarray(0, E.length).equals(E)) {
        r.sock.write(THREAT);
        return;
      }
      const reqHdr = r.encap.toString('latin1');
      r.sock.write(
        `ICAP/1.0 200 OK\r\nISTag: "x1"\r\nEncapsulated: req-hdr=0, req-body=${reqHdr.length}\r\n\r\n${reqHdr}${chunked(r.body)}0\r\n\r\n`,
        'latin1',
      );
    });
    const mw = honoIcap({ ...profile(), poolGroup: echo.url, name: 'br8-echo' });
    const app = new Hono();
    const got: string[] = [];
    app.use(mw);
    app.post('/upload', async (c) => {
      got.push(await c.req.text());
      return c.text('stored');
    });
    const { url, server } = await listen(app.fetch);
    try {
      expect(await post(url, Buffer.concat([BOM, Buffer.from('hello')]))).toBe(200);
      const status = await post(url, Buffer.concat([BOM, E]));
      expect({ status, got }).toEqual({ status: 403, got: ['hello'] });
      // Per-file multipart: a part the scanner echoes is scanned without its BOM too.
      const form = Buffer.concat([
        Buffer.from('--B\r\nContent-Disposition: form-data; name="f"\r\n\r\n'),
        BOM,
        E,
        Buffer.from('\r\n--B--\r\n'),
      ]);
      const r = await rawExchange(
        url,
        [
          Buffer.concat([
            Buffer.from(
              `POST /upload HTTP/1.1\r\nHost: a\r\nContent-Type: multipart/form-data; boundary=B\r\nContent-Length: ${form.length}\r\nConnection: close\r\n\r\n`,
            ),
            form,
          ]),
        ],
        { responses: 1, waitMs: 5000 },
      );
      expect(r.responses[0]?.status).toBe(403);
    } finally {
      server.closeAllConnections();
      server.close();
      await mw.close();
      await echo.close();
    }
  });
  it('a body spooled to disk (memoryThreshold 0): with a BOM, scanned without it too; without one, once', async () => {
    const mw = honoIcap({ ...profile(), name: 'br8-spool', memoryThreshold: 0 });
    const app = new Hono();
    const got: string[] = [];
    app.use(mw);
    app.post('/upload', async (c) => {
      got.push(await c.req.text());
      return c.text('stored');
    });
    const { url, server } = await listen(app.fetch);
    try {
      const reqmods = () => anchored.scanner.requests.filter((r) => r.method === 'REQMOD').length;
      const pad = Buffer.alloc(20_000, 0x20);
      const before = reqmods();
      expect(await post(url, Buffer.concat([Buffer.from('hello'), pad]))).toBe(200);
      expect(reqmods() - before).toBe(1);
      expect(await post(url, Buffer.concat([BOM, E, pad]))).toBe(403);
      expect(got.length).toBe(1);
    } finally {
      server.closeAllConnections();
      server.close();
      await mw.close();
    }
  });
});
