/**
 * What a client's header fields can do to the scan, found by campaign-z.
 *
 * - Node's HTTP/1 server keeps the first `maxHeadersCount` fields of a request (1000 by
 *   default) and drops the rest without a word, while the framing a dropped Content-Length or
 *   Transfer-Encoding carried still applies: 1,100 short fields (5.5 KB) before them, and the
 *   request looked bodiless to icapkit (ICAP_DISABLED, nothing sent to the scanner) while
 *   Fastify's parsers, Koa's stream readers and multipart parsers read its EICAR body, in both
 *   failure modes. Such a request is now refused (400), as is any with more than 500 fields
 *   (a scanner returning the request's head returns them: the client must not be able to push
 *   that head past the 1,000 fields icapkit reads of one).
 * - With an application that raised Node's header size limit, 70 KiB of fields returned by an
 *   echoing scanner went past what icapkit reads of a head (64 KiB): a threat named in it was
 *   lost, and a second server's 204 passed the upload. A scanned request's fields are now
 *   bounded at 32 KiB (400 above).
 */
import { createServer, type Server } from 'node:http';
import { type AddressInfo, connect } from 'node:net';
import type { IcapLog } from '@icapkit/core';
import { icap as expressIcap } from '@icapkit/express';
import { eicar, type IcapTestServer, startIcapServer } from '@icapkit/testing';
import express from 'express';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type App, type Framework, startApp } from '../conformance/apps.js';
import { rawExchange } from '../support/raw-http.js';

const FRAMEWORKS: Framework[] = ['express5', 'fastify', 'koa3', 'hono'];
const MODES = ['fail-open', 'fail-closed'] as const;
const EICAR = eicar();

let icap: IcapTestServer;
beforeAll(async () => {
  icap = await startIcapServer();
});
afterAll(() => icap?.close());

const reqmods = () => icap.requests.filter((r) => r.method === 'REQMOD').length;

/** `n` short fields (`x1: v`, ...). */
function fields(n: number): string {
  let out = '';
  for (let i = 0; i < n; i++) out += `x${i}: v\r\n`;
  return out;
}

/** A POST of EICAR to `path` with `before` fields ahead of its framing and `after` behind it. */
function upload(path: string, before: number, after: number, framing: 'length' | 'chunked'): string {
  const frame =
    framing === 'length' ? `Content-Length: ${EICAR.length}\r\n` : 'Transfer-Encoding: chunked\r\n';
  const body =
    framing === 'length'
      ? EICAR.toString('latin1')
      : `${EICAR.length.toString(16)}\r\n${EICAR.toString('latin1')}\r\n0\r\n\r\n`;
  return (
    `POST ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\n` +
    `${fields(before)}${frame}${fields(after)}\r\n${body}`
  );
}

/** The latest record once one came after the first `before` (waited for, with a deadline). */
async function logAfter(logs: IcapLog[], before: number): Promise<IcapLog | undefined> {
  const deadline = Date.now() + 5_000;
  while (logs.length === before && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
  return logs.at(-1);
}

describe.each(FRAMEWORKS)('%s: header fields past what Node keeps', (framework) => {
  for (const failAction of MODES) {
    describe(failAction, () => {
      let app: App;
      const logs: IcapLog[] = [];
      beforeAll(async () => {
        app = await startApp(framework, {
          name: 'fields',
          poolGroup: icap.url(),
          serviceUri: '/avscan',
          failAction,
          onLog: (l) => logs.push(l),
        });
      });
      afterAll(() => app?.close());

      it.each([
        ['1,100 fields before Content-Length', 1100, 0, 'length'],
        ['1,100 fields before Transfer-Encoding: chunked', 1100, 0, 'chunked'],
        ['600 fields after Content-Length', 0, 600, 'length'],
      ] as const)(
        '%s: 400, never delivered nor sent to the scanner',
        async (_label, before, after, framing) => {
          const seen = app.seen.length;
          const scans = reqmods();
          const logged = logs.length;
          const { responses } = await rawExchange(app.url, [upload('/raw', before, after, framing)], {
            responses: 1,
          });
          expect(responses[0]?.status).toBe(400);
          const log = await logAfter(logs, logged);
          expect(log?.error_code).toBe('ICAP_ERR_BAD_REQUEST');
          expect(log?.error_message).toMatch(/header fields/);
          expect(app.seen.length).toBe(seen);
          expect(reqmods()).toBe(scans);
          // What the dropped fields said of the body is unknown: the connection is not kept.
          expect(responses[0]?.headers.connection).toBe('close');
        },
      );

      it('100 fields before Content-Length: scanned as usual (EICAR: 403)', async () => {
        const seen = app.seen.length;
        const { responses } = await rawExchange(app.url, [upload('/raw', 100, 0, 'length')], {
          responses: 1,
        });
        expect(responses[0]?.status).toBe(403);
        expect(app.seen.length).toBe(seen);
      });
    });
  }
});

describe('too many fields with Expect: 100-continue (Fastify guards it): 400 before the body is asked for (campaign-ac AC4)', () => {
  it('the head alone gets the refusal; the body is never sent', async () => {
    const app = await startApp('fastify', { name: 'expect', poolGroup: icap.url(), serviceUri: '/avscan' });
    try {
      // Expect and the framing first (Node keeps them), then the fields past its limit.
      const head =
        'POST /raw HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\n' +
        `Content-Length: ${EICAR.length}\r\nExpect: 100-continue\r\n${fields(1100)}\r\n`;
      // The first bytes back: the refusal, not a 100 Continue asking for the body.
      const first = await new Promise<string>((resolve) => {
        const { port } = new URL(app.url);
        const socket = connect({ host: '127.0.0.1', port: Number(port) }, () => socket.write(head));
        const timer = setTimeout(() => socket.destroy(), 5_000);
        socket.once('data', (d) => {
          clearTimeout(timer);
          socket.destroy();
          resolve(d.toString('latin1'));
        });
        socket.once('close', () => resolve(''));
      });
      expect(first).toMatch(/^HTTP\/1\.1 400 /);
      expect(app.seen).toEqual([]);
    } finally {
      await app.close();
    }
  });
});

describe('an application with its own header limits (Express, node:http options)', () => {
  const logs: IcapLog[] = [];
  let server: Server;
  let url: string;
  const got: Buffer[] = [];

  beforeAll(async () => {
    const app = express();
    app.use(
      expressIcap({ name: 'big', poolGroup: icap.url(), serviceUri: '/avscan', onLog: (l) => logs.push(l) }),
    );
    app.post('/stream', async (req, res) => {
      const chunks: Buffer[] = [];
      for await (const c of req) chunks.push(c as Buffer);
      got.push(Buffer.concat(chunks));
      res.json({ ok: true });
    });
    // Raised, as applications with large cookies or tokens do; and a field count of its own.
    server = createServer({ maxHeaderSize: 128 * 1024 }, app);
    server.maxHeadersCount = 50;
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(() => new Promise<void>((r) => server.close(() => r())));

  it('more fields than the server keeps (its maxHeadersCount): 400, never delivered', async () => {
    const { responses } = await rawExchange(url, [upload('/stream', 60, 0, 'length')], { responses: 1 });
    expect(responses[0]?.status).toBe(400);
    expect(got).toEqual([]);
    // The same on a request line that says HTTP/2.0 (llhttp takes it): still an HTTP/1 request.
    const h2line = await rawExchange(
      url,
      [upload('/stream', 60, 0, 'length').replace('HTTP/1.1', 'HTTP/2.0')],
      {
        responses: 1,
      },
    );
    expect(h2line.responses[0]?.status).toBe(400);
    expect(got).toEqual([]);
  });

  it('a maxHeadersCount raised after a connection was accepted: that connection keeps its bound (campaign-aa AA2)', async () => {
    const socket = connect({ host: '127.0.0.1', port: (server.address() as AddressInfo).port });
    const answers: string[] = [];
    let buffered = '';
    socket.setEncoding('latin1');
    socket.on('data', (d: string) => {
      buffered += d;
      // Each answer here is small and has a Content-Length: one per blank line and body.
      for (;;) {
        const end = buffered.indexOf('\r\n\r\n');
        if (end === -1) return;
        const length = Number(/content-length: (\d+)/i.exec(buffered.slice(0, end))?.[1] ?? 0);
        if (buffered.length < end + 4 + length) return;
        answers.push(buffered.slice(0, end + 4 + length));
        buffered = buffered.slice(end + 4 + length);
      }
    });
    const answered = async (n: number) => {
      const deadline = Date.now() + 5_000;
      while (answers.length < n && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
      return answers[n - 1] ?? '';
    };
    try {
      await new Promise((r) => socket.once('connect', r));
      socket.write('POST /stream HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n\r\nclean');
      expect(await answered(1)).toMatch(/^HTTP\/1\.1 200/);
      server.maxHeadersCount = 2000;
      socket.write(upload('/stream', 60, 0, 'length'));
      expect(await answered(2)).toMatch(/^HTTP\/1\.1 400/);
      expect(got.map((b) => b.toString())).toEqual(['clean']);
    } finally {
      server.maxHeadersCount = 50;
      socket.destroy();
      got.length = 0;
    }
  });

  it('a target of 34 KiB on a scanned request: 400 (the head the scanner gets back counts it; campaign-aa AA1)', async () => {
    const logged = logs.length;
    const target = `/stream?q=${'a'.repeat(34 * 1024)}`;
    const { responses } = await rawExchange(
      url,
      [
        `POST ${target} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: ${EICAR.length}\r\n\r\n${EICAR.toString('latin1')}`,
      ],
      { responses: 1 },
    );
    expect(responses[0]?.status).toBe(400);
    expect((await logAfter(logs, logged))?.error_message).toMatch(/exceeds 32 KiB/);
    expect(got).toEqual([]);
  });

  it('a Host of 17 KiB: 400 (the absolute target carries it a second time; campaign-ac AC3)', async () => {
    const logged = logs.length;
    const host = 'a'.repeat(17 * 1024);
    const { responses } = await rawExchange(
      url,
      [
        `POST /stream HTTP/1.1\r\nHost: ${host}\r\nContent-Length: ${EICAR.length}\r\n\r\n${EICAR.toString('latin1')}`,
      ],
      { responses: 1 },
    );
    expect(responses[0]?.status).toBe(400);
    expect((await logAfter(logs, logged))?.error_message).toMatch(/exceeds 32 KiB/);
    expect(got).toEqual([]);
  });

  it('40 KiB of fields on a scanned request: 400; 20 KiB: scanned', async () => {
    const big = (bytes: number) => `X-Big: ${'a'.repeat(bytes)}\r\n`;
    const head = (bytes: number) =>
      `POST /stream HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\n${big(bytes)}` +
      `Content-Length: ${EICAR.length}\r\n\r\n${EICAR.toString('latin1')}`;
    let logged = logs.length;
    const refused = await rawExchange(url, [head(40 * 1024)], { responses: 1 });
    expect(refused.responses[0]?.status).toBe(400);
    expect((await logAfter(logs, logged))?.error_message).toMatch(/exceeds 32 KiB/);
    logged = logs.length;
    const scanned = await rawExchange(url, [head(20 * 1024)], { responses: 1 });
    expect(scanned.responses[0]?.status).toBe(403);
    expect((await logAfter(logs, logged))?.action).toBe('ICAP_BLOCKED');
    expect(got).toEqual([]);
  });
});
