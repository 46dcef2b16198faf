/**
 * A compressed request body is decoded for the scan, but raw readers (Fastify's buffer parser,
 * Express `for await (const c of req)`, Hono's arrayBuffer, Koa's `ctx.req`) get it as sent:
 * so the body as sent is scanned as an object of its own too (Content-Encoding kept), and
 * bytes after the end of the compressed data (which zlib and brotli drop silently, and other
 * decoders read or refuse) are refused with 400. Before: what a decoder skips (gzip header
 * fields, brotli metadata blocks, a tail after the stream) reached those readers unscanned.
 */
import { createServer as createHttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { brotliCompressSync, deflateSync, gzipSync } from 'node:zlib';
import { getRequestListener } from '@hono/node-server';
import type { IcapLog, IcapProfile } from '@icapkit/core';
import { icap as expressIcap } from '@icapkit/express';
import { icap as fastifyIcap } from '@icapkit/fastify';
import { icap as honoIcap } from '@icapkit/hono';
import { icap as koaIcap } from '@icapkit/koa';
import { eicar, type IcapTestServer, startIcapServer } from '@icapkit/testing';
import express5 from 'express';
import Fastify from 'fastify';
import { Hono } from 'hono';
import Koa from 'koa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { send } from '../support/http-client.js';
import { readAll, served } from '../support/served.js';

let icap: IcapTestServer;
beforeAll(async () => {
  icap = await startIcapServer({ recordBodies: true });
});
afterAll(() => icap?.close());

const E = eicar();

/** A gzip member of `data` whose header carries `field` (FEXTRA, FNAME or FCOMMENT), which gunzip skips. */
function gzipWithHeaderField(data: Buffer, flag: 'FEXTRA' | 'FNAME' | 'FCOMMENT', field: Buffer): Buffer {
  const plain = gzipSync(data);
  const head = Buffer.from(plain.subarray(0, 10));
  if (flag === 'FEXTRA') {
    head[3] = head[3]! | 0x04;
    const xlen = Buffer.alloc(2);
    xlen.writeUInt16LE(field.length + 4);
    const sub = Buffer.alloc(4);
    sub.write('IK', 0, 'latin1');
    sub.writeUInt16LE(field.length, 2);
    return Buffer.concat([head, xlen, sub, field, plain.subarray(10)]);
  }
  head[3] = head[3]! | (flag === 'FNAME' ? 0x08 : 0x10);
  return Buffer.concat([head, field, Buffer.from([0]), plain.subarray(10)]);
}

/**
 * A brotli stream whose output is `data` and that carries `meta` in a metadata meta-block
 * (RFC 7932 §9.2: the decoder skips it), then `data` in an uncompressed meta-block.
 */
function brotliWithMetadata(data: Buffer, meta: Buffer): Buffer {
  const bytes: number[] = [];
  let cur = 0;
  let n = 0;
  const bits = (v: number, count: number) => {
    for (let i = 0; i < count; i++) {
      cur |= ((v >> i) & 1) << n;
      if (++n === 8) {
        bytes.push(cur);
        cur = n = 0;
      }
    }
  };
  const align = () => {
    if (n > 0) bytes.push(cur);
    cur = n = 0;
  };
  bits(0, 1); // WBITS 16
  bits(0, 1); // ISLAST 0
  bits(3, 2); // MNIBBLES 0: metadata
  bits(0, 1); // reserved
  bits(1, 2); // MSKIPBYTES 1
  bits(meta.length - 1, 8);
  align();
  bytes.push(...meta);
  bits(0, 1); // ISLAST 0
  bits(0, 2); // MNIBBLES 4
  bits(data.length - 1, 16);
  bits(1, 1); // ISUNCOMPRESSED
  align();
  bytes.push(...data);
  bits(1, 1); // ISLAST
  bits(1, 1); // ISLASTEMPTY
  align();
  return Buffer.from(bytes);
}

const hello = Buffer.from('hello, a clean upload');

/** Bodies whose decoded bytes are clean and whose bytes as sent hold EICAR: 403 (the object as sent). */
const HIDDEN: Array<[string, string, Buffer]> = [
  ['gzip, EICAR in FNAME', 'gzip', gzipWithHeaderField(hello, 'FNAME', E)],
  ['gzip, EICAR in FCOMMENT', 'gzip', gzipWithHeaderField(hello, 'FCOMMENT', E)],
  ['gzip, EICAR in FEXTRA', 'gzip', gzipWithHeaderField(hello, 'FEXTRA', E)],
  ['br, EICAR in a metadata meta-block', 'br', brotliWithMetadata(hello, E)],
];

/** Bodies with bytes after the end of the compressed data: 400 (parsers disagree about them). */
const TRAILING: Array<[string, string, Buffer]> = [
  ['deflate + trailing EICAR', 'deflate', Buffer.concat([deflateSync(hello), E])],
  ['br + trailing EICAR', 'br', Buffer.concat([brotliCompressSync(hello), E])],
  ['deflate + a second deflate stream', 'deflate', Buffer.concat([deflateSync(hello), deflateSync(E)])],
  ['gzip + zero padding', 'gzip', Buffer.concat([gzipSync(hello), Buffer.alloc(16)])],
];

const CLEAN: Array<[string, (b: Buffer) => Buffer]> = [
  ['gzip', gzipSync],
  ['deflate', deflateSync],
  ['br', brotliCompressSync],
];

interface App {
  url: string;
  /** What each handler call read as the body. */
  got: unknown[];
  logs: IcapLog[];
  close(): Promise<void>;
}

const profileFor = (logs: IcapLog[]): IcapProfile => ({
  name: 'encoded',
  poolGroup: icap.url(),
  serviceUri: '/avscan',
  startupCheck: 'off',
  failAction: 'fail-open',
  onLog: (l) => logs.push(l),
});

type Start = () => Promise<App>;

/** Readers of the body as sent. */
const RAW_READERS: Array<[string, Start]> = [
  [
    'fastify (parseAs buffer)',
    async () => {
      const got: unknown[] = [];
      const logs: IcapLog[] = [];
      const app = Fastify();
      await app.register(fastifyIcap, profileFor(logs) as never);
      app.addContentTypeParser('*', { parseAs: 'buffer' }, (_r, body, done) => done(null, body));
      app.post('/upload', async (request) => {
        got.push(request.body);
        return { ok: true };
      });
      await app.listen({ port: 0, host: '127.0.0.1' });
      const url = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
      return { url, got, logs, close: () => app.close() };
    },
  ],
  [
    'express5 (for await of req)',
    async () => {
      const got: unknown[] = [];
      const logs: IcapLog[] = [];
      const mw = expressIcap(profileFor(logs));
      const app = express5();
      app.use(mw);
      app.post('/upload', async (req, res) => {
        got.push(await readAll(req));
        res.json({ ok: true });
      });
      return { got, logs, ...(await served(app.listen(0, '127.0.0.1'), () => mw.close())) };
    },
  ],
  [
    'hono (arrayBuffer)',
    async () => {
      const got: unknown[] = [];
      const logs: IcapLog[] = [];
      const mw = honoIcap(profileFor(logs));
      const app = new Hono();
      app.use(mw);
      app.post('/upload', async (c) => {
        got.push(Buffer.from(await c.req.arrayBuffer()));
        return c.json({ ok: true });
      });
      const server = createHttpServer(getRequestListener(app.fetch)).listen(0, '127.0.0.1');
      return { got, logs, ...(await served(server, () => mw.close())) };
    },
  ],
  [
    'koa3 (ctx.req)',
    async () => {
      const got: unknown[] = [];
      const logs: IcapLog[] = [];
      const app = new Koa();
      app.silent = true;
      const mw = koaIcap(profileFor(logs));
      app.use(mw as unknown as Koa.Middleware);
      app.use(async (ctx) => {
        got.push(await readAll(ctx.req));
        ctx.body = { ok: true };
      });
      return { got, logs, ...(await served(app.listen(0, '127.0.0.1'), () => mw.close())) };
    },
  ],
];

/** Express with body-parser inflating (express.raw / express.json): they get the decoded bytes. */
function expressInflating(parser: 'raw' | 'json'): Start {
  return async () => {
    const got: unknown[] = [];
    const logs: IcapLog[] = [];
    const mw = expressIcap(profileFor(logs));
    const app = express5();
    app.use(mw);
    const parse = parser === 'raw' ? express5.raw({ type: '*/*', inflate: true }) : express5.json();
    app.post('/upload', parse, (req, res) => {
      got.push(req.body);
      res.json({ ok: true });
    });
    return { got, logs, ...(await served(app.listen(0, '127.0.0.1'), () => mw.close())) };
  };
}

/** The REQMODs the ICAP server got for one request (the test server records them all). */
function reqmods() {
  return icap.requests.filter((q) => q.method === 'REQMOD');
}

async function upload(app: App, coding: string, body: Buffer, type = 'application/octet-stream') {
  icap.reset();
  return send(app.url, '/upload', { headers: { 'content-type': type, 'content-encoding': coding }, body });
}

describe('a compressed body is scanned as sent too', () => {
  for (const [reader, start] of RAW_READERS) {
    for (const [name, coding, body] of HIDDEN) {
      it(`${reader}: ${name} is blocked (403), the handler never runs`, async () => {
        const app = await start();
        try {
          const r = await upload(app, coding, body);
          expect(r.status).toBe(403);
          expect(app.got).toHaveLength(0);
          const log = app.logs.at(-1)!;
          expect(log.action).toBe('ICAP_BLOCKED');
          // Two objects: the decoded body (clean), then the body as sent (EICAR in it).
          const sent = reqmods();
          expect(sent).toHaveLength(2);
          expect(sent[0]!.httpRequest?.headers.get('content-encoding')).toBeUndefined();
          expect(sent[0]!.body?.includes(E)).toBe(false);
          expect(sent[1]!.httpRequest?.headers.get('content-encoding')).toBe(coding);
          expect(sent[1]!.body?.equals(body)).toBe(true);
          expect(log.request_logs).toHaveLength(2);
          expect(log.request_logs[1]!.file_name).toBe('(body as sent, compressed)');
          expect(log.request_logs[1]!.action).toBe('ICAP_BLOCKED');
        } finally {
          await app.close();
        }
      });
    }

    for (const [name, coding, body] of TRAILING) {
      it(`${reader}: ${name} is refused (400, ICAP_ERR_CONTENT_ENCODING), even with fail-open`, async () => {
        const app = await start();
        try {
          const r = await upload(app, coding, body);
          expect(r.status).toBe(400);
          expect(app.got).toHaveLength(0);
          const log = app.logs.at(-1)!;
          expect(log.error_code).toBe('ICAP_ERR_CONTENT_ENCODING');
          expect(log.error_message).toMatch(/bytes after the end of its compressed data/);
          expect(log.significance).toContain('CONTENT_ENCODING_REFUSED');
          expect(log.fail_action).toBeUndefined();
        } finally {
          await app.close();
        }
      });
    }

    for (const [coding, encode] of CLEAN) {
      it(`${reader}: a clean ${coding} body passes, delivered exactly as sent, both objects scanned`, async () => {
        const app = await start();
        try {
          const wire = encode(hello);
          const r = await upload(app, coding, wire);
          expect(r.status).toBe(200);
          expect(app.got).toHaveLength(1);
          expect(Buffer.from(app.got[0] as Buffer).equals(wire)).toBe(true);
          const sent = reqmods();
          expect(sent).toHaveLength(2);
          expect(sent[0]!.body?.equals(hello)).toBe(true);
          expect(sent[0]!.httpRequest?.headers.get('content-encoding')).toBeUndefined();
          expect(sent[1]!.body?.equals(wire)).toBe(true);
          expect(sent[1]!.httpRequest?.headers.get('content-encoding')).toBe(coding);
          expect(sent[1]!.httpRequest?.headers.get('content-length')).toBe(String(wire.length));
          const log = app.logs.at(-1)!;
          expect(log.action).toBe('ICAP_PASSED');
          expect(log.request_logs.map((e) => e.action)).toEqual(['ICAP_PASSED', 'ICAP_PASSED']);
          expect(log.request_logs[1]!.file_name).toBe('(body as sent, compressed)');
          expect(log.request_body_length).toBe(wire.length);
        } finally {
          await app.close();
        }
      });
    }
  }

  for (const [coding, encode] of CLEAN) {
    it(`express.raw({inflate: true}): a clean ${coding} body arrives decoded; both objects scanned`, async () => {
      const app = await expressInflating('raw')();
      try {
        const r = await upload(app, coding, encode(hello));
        expect(r.status).toBe(200);
        expect(Buffer.from(app.got[0] as Buffer).equals(hello)).toBe(true);
        expect(reqmods()).toHaveLength(2);
      } finally {
        await app.close();
      }
    });

    it(`express.json: a clean ${coding} JSON body arrives parsed`, async () => {
      const app = await expressInflating('json')();
      try {
        const json = Buffer.from(JSON.stringify({ note: 'clean' }));
        const r = await upload(app, coding, encode(json), 'application/json');
        expect(r.status).toBe(200);
        expect(app.got[0]).toEqual({ note: 'clean' });
        const sent = reqmods();
        expect(sent.map((q) => q.httpRequest?.headers.get('content-encoding'))).toEqual([undefined, coding]);
      } finally {
        await app.close();
      }
    });
  }

  it('several gzip members are one body (RFC 1952): decoded whole for the scan, passed as sent', async () => {
    const app = await RAW_READERS[1]![1]();
    try {
      const wire = Buffer.concat([gzipSync('hello, '), gzipSync('a second member')]);
      const r = await upload(app, 'gzip', wire);
      expect(r.status).toBe(200);
      expect(Buffer.from(app.got[0] as Buffer).equals(wire)).toBe(true);
      expect(reqmods().map((q) => q.body?.toString('latin1'))).toEqual([
        'hello, a second member',
        wire.toString('latin1'),
      ]);
    } finally {
      await app.close();
    }
  });

  it('EICAR inside the compressed data is still found in the decoded object (one REQMOD, 403)', async () => {
    const app = await RAW_READERS[1]![1]();
    try {
      const r = await upload(app, 'gzip', gzipSync(Buffer.concat([hello, E])));
      expect(r.status).toBe(403);
      expect(app.got).toHaveLength(0);
      // A threat in the decoded copy blocks at once: the body as sent is not sent after it.
      expect(reqmods()).toHaveLength(1);
    } finally {
      await app.close();
    }
  });
});
