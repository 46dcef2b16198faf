/**
 * An application on Node's lenient HTTP parser (`insecureHTTPParser`, `--insecure-http-parser`)
 * takes `Content-Length : 68` and `Transfer-Encoding : chunked` (a space before the colon) as
 * the framing, while the field's name, a space in it, names another field to every reader:
 * icapkit saw a request without a body, scanned nothing, and a handler reading the request
 * got EICAR (campaign-ah AH2). A name that is not a token is now refused (400, before the
 * rules), whatever the parser; Node's strict parser refuses it itself.
 *
 * On @hono/node-server (Hono, @icapkit/web) the same bytes, or a NUL in any field's value,
 * make a Web Request whose headers the Fetch API refuses to read: icapkit saw a request without
 * fields, the rules did not select it, and the handler read the body through the Node request
 * (campaign-ai AI1). A request the adapter cannot read is now refused (400) whatever the rules.
 */
import { createServer, type Server } from 'node:http';
import { type AddressInfo, connect } from 'node:net';
import { deflateRawSync, gunzipSync } from 'node:zlib';
import { getRequestListener } from '@hono/node-server';
import { icap as expressIcap } from '@icapkit/express';
import { icap as honoIcap } from '@icapkit/hono';
import { icap as koaIcap } from '@icapkit/koa';
import { eicar, type IcapTestServer, startIcapServer } from '@icapkit/testing';
import { withIcap } from '@icapkit/web';
import express from 'express';
import { Hono } from 'hono';
import Koa from 'koa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

let icap: IcapTestServer;
beforeAll(async () => {
  icap = await startIcapServer({ recordBodies: false });
});
afterAll(() => icap?.close());

const EICAR = eicar().toString('latin1');
const profile = () => ({ name: 'lenient', poolGroup: icap.url(), serviceUri: '/avscan' });

/** What the server answers to `bytes` (its status line), within 5 s. */
function exchange(port: number, bytes: string): Promise<string> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1');
    let out = '';
    const timer = setTimeout(() => s.destroy(), 5000);
    s.on('data', (d: Buffer) => {
      out += d.toString('latin1');
      // The answer's head is in: done (the client stays open till then: a FIN aborts the upload).
      if (out.includes('\r\n\r\n')) s.destroy();
    });
    s.on('error', () => {});
    s.on('close', () => {
      clearTimeout(timer);
      resolve(out.split('\r\n')[0] ?? '');
    });
    s.write(Buffer.from(bytes, 'latin1'));
  });
}

type Start = (read: (body: string) => void) => {
  handler: Parameters<typeof createServer>[1];
  close(): Promise<void>;
};

const APPS: Record<string, Start> = {
  express: (read) => {
    const scan = expressIcap(profile());
    const app = express();
    app.use(scan);
    app.post('/up', async (req, res) => {
      const chunks: Buffer[] = [];
      for await (const c of req) chunks.push(c as Buffer);
      read(Buffer.concat(chunks).toString('latin1'));
      res.end('read');
    });
    return { handler: app, close: () => scan.close() };
  },
  koa: (read) => {
    const scan = koaIcap(profile());
    const app = new Koa();
    app.use(scan);
    app.use(async (ctx) => {
      const chunks: Buffer[] = [];
      for await (const c of ctx.req) chunks.push(c as Buffer);
      read(Buffer.concat(chunks).toString('latin1'));
      ctx.body = 'read';
    });
    return { handler: app.callback(), close: () => scan.close() };
  },
  hono: (read) => {
    const scan = honoIcap(profile());
    const app = new Hono();
    app.use(scan);
    app.post('/up', async (c) => {
      read(await c.req.text());
      return c.text('read');
    });
    return { handler: getRequestListener(app.fetch), close: () => scan.close() };
  },
  web: (read) => {
    const route = withIcap(profile(), async (request) => {
      read(await request.text());
      return new Response('read');
    });
    return { handler: getRequestListener(route), close: () => route.close() };
  },
};

/** `name`'s app on a lenient Node server for the length of `use` (given its port); what its handler read. */
async function onLenientServer(name: string, use: (port: number) => Promise<void>): Promise<string> {
  const bodies: string[] = [];
  const app = APPS[name]!((b) => bodies.push(b));
  const server: Server = createServer({ insecureHTTPParser: true }, app.handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  try {
    await use((server.address() as AddressInfo).port);
  } finally {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await app.close();
  }
  return bodies.join('');
}

describe.each(Object.keys(APPS))('%s on the lenient parser', (name) => {
  it('a framing field whose name is not a token gets 400; nothing unscanned is read', async () => {
    const read = await onLenientServer(name, async (port) => {
      const head = 'POST /up HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n';
      const framings = [
        `Content-Length : ${EICAR.length}\r\n\r\n${EICAR}`,
        `Transfer-Encoding : chunked\r\n\r\n${EICAR.length.toString(16)}\r\n${EICAR}\r\n0\r\n\r\n`,
        `Content-Length\t: ${EICAR.length}\r\n\r\n${EICAR}`,
        // Framed as the strict parser would, with a NUL in another field's value.
        `X-A: a\x00b\r\nContent-Length: ${EICAR.length}\r\n\r\n${EICAR}`,
      ];
      for (const framing of framings)
        expect(await exchange(port, head + framing)).toBe('HTTP/1.1 400 Bad Request');
      // The same upload framed as Node's strict parser would read it: scanned, blocked.
      expect(await exchange(port, `${head}Content-Length: ${EICAR.length}\r\n\r\n${EICAR}`)).toBe(
        'HTTP/1.1 403 Forbidden',
      );
    });
    expect(read).not.toContain('EICAR');
  });

  it('chunked beside content-length: 0, a gzip body that decodes to nothing: its bytes as sent are scanned (campaign-an AN1)', async () => {
    const read = await onLenientServer(name, async (port) => {
      // A gzip member of nothing, EICAR in its comment field (FCOMMENT): no decoder outputs it.
      const member = Buffer.concat([
        Buffer.from([0x1f, 0x8b, 8, 0x10, 0, 0, 0, 0, 0, 0xff]),
        Buffer.from(`${EICAR}\0`, 'latin1'),
        deflateRawSync(Buffer.alloc(0)),
        Buffer.alloc(8),
      ]);
      expect(gunzipSync(member)).toHaveLength(0);
      const status = await exchange(
        port,
        'POST /up HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Encoding: gzip\r\n' +
          `Content-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n${member.length.toString(16)}\r\n${member.toString('latin1')}\r\n0\r\n\r\n`,
      );
      expect(status).toBe('HTTP/1.1 403 Forbidden');
    });
    expect(read).not.toContain('EICAR');
  });
});
