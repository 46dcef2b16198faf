/**
 * The Web adapters on @hono/node-server, where a body can be read two ways: through the Web
 * `Request` (@hono/node-server's lightweight one, which reads the Node request itself) and
 * through the Node request under it (`env.incoming`).
 *
 * - A GET, HEAD or TRACE request carrying a body: a Web Request has none, so the scan saw none,
 *   but `c.req.text()` of a TRACE request reads the Node request (@hono/node-server), and so does
 *   anything reading `env.incoming`. Before the fix the handler of a TRACE request read an EICAR
 *   body that was never sent to the ICAP server. Now refused (400, ICAP_ERR_BAD_REQUEST), in
 *   both failure modes.
 * - A body nothing asked for before the scan is read from the Node request and handed back in
 *   it (no Web stream, no second Request): every reader the handler has gets the bytes the ICAP
 *   server got, with their Content-Length, and the same Request object stays in `c.req.raw`.
 * - Something before the scan that made the Request's body a Web stream gets the former path:
 *   still the scanned bytes.
 */
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { getRequestListener } from '@hono/node-server';
import type { IcapLog, IcapProfile } from '@icapkit/core';
import { icap as honoIcap } from '@icapkit/hono';
import { eicar, type IcapTestServer, startIcapServer } from '@icapkit/testing';
import { withIcap } from '@icapkit/web';
import fc from 'fast-check';
import { Hono, type MiddlewareHandler } from 'hono';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rawExchange } from '../support/raw-http.js';

let icap: IcapTestServer;
beforeAll(async () => {
  icap = await startIcapServer({ recordBodies: true });
});
afterAll(() => icap?.close());

type Reader = 'text' | 'arrayBuffer' | 'incoming' | 'body-stream';

interface Seen {
  method: string;
  body: Buffer;
  sameRequest: boolean;
  contentLength: string | null;
  transferEncoding: string | null;
}

interface WebApp {
  url: string;
  seen: Seen[];
  logs: IcapLog[];
  close(): Promise<void>;
}

/** Reads the body the way `reader` says, from the Request or from the Node request under it. */
async function readBody(request: Request, incoming: IncomingMessage, reader: Reader): Promise<Buffer> {
  switch (reader) {
    case 'text':
      return Buffer.from(await request.text(), 'latin1');
    case 'arrayBuffer':
      return Buffer.from(await request.arrayBuffer());
    case 'body-stream': {
      const chunks: Buffer[] = [];
      if (request.body !== null) for await (const c of request.body) chunks.push(Buffer.from(c));
      return Buffer.concat(chunks);
    }
    case 'incoming': {
      const chunks: Buffer[] = [];
      for await (const c of incoming) chunks.push(c as Buffer);
      return Buffer.concat(chunks);
    }
  }
}

async function listen(
  fetch: (request: Request, env: unknown) => Promise<Response> | Response,
): Promise<Server> {
  const server = createServer(getRequestListener(fetch as never));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return server;
}

async function startWebApp(
  framework: 'hono' | 'web',
  profile: IcapProfile,
  reader: Reader | 'x-read',
  before?: MiddlewareHandler,
): Promise<WebApp> {
  const seen: Seen[] = [];
  const logs: IcapLog[] = [];
  const p: IcapProfile = { ...profile, onLog: (l) => logs.push(l) };
  const handle = async (request: Request, original: Request, incoming: IncomingMessage) => {
    // 'x-read': the request's own x-read header names the reader (a property test varies it).
    const how = reader === 'x-read' ? (request.headers.get('x-read') as Reader) : reader;
    const body = await readBody(request, incoming, how);
    seen.push({
      method: request.method,
      body,
      sameRequest: request === original,
      contentLength: request.headers.get('content-length'),
      transferEncoding: request.headers.get('transfer-encoding'),
    });
    return new Response(`got ${body.length}`);
  };
  let server: Server;
  let close: () => Promise<void>;
  if (framework === 'hono') {
    const mw = honoIcap(p);
    const app = new Hono<{ Bindings: { incoming: IncomingMessage } }>();
    let original: Request | undefined;
    app.use(async (c, next) => {
      original = c.req.raw;
      await next();
    });
    if (before) app.use(before);
    app.use(mw);
    app.all('*', (c) => handle(c.req.raw, original!, c.env.incoming));
    server = await listen(app.fetch);
    close = () => mw.close();
  } else {
    const route = withIcap(p, (request: Request, env: { incoming: IncomingMessage }) =>
      handle(request, originals.get(env.incoming)!, env.incoming),
    );
    const originals = new WeakMap<IncomingMessage, Request>();
    server = await listen((request, env) => {
      originals.set((env as { incoming: IncomingMessage }).incoming, request);
      return route(request, env as { incoming: IncomingMessage });
    });
    close = () => route.close();
  }
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    seen,
    logs,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await close();
    },
  };
}

const profile = (over: Partial<IcapProfile> = {}): IcapProfile => ({
  name: 'node-body',
  poolGroup: icap.url(),
  serviceUri: '/avscan',
  startupCheck: 'off',
  ...over,
});

const reqmods = () => icap.requests.filter((r) => r.method === 'REQMOD');
const E = eicar().toString('latin1');

async function exchange(url: string, head: string, body: Buffer | string = '') {
  const { responses } = await rawExchange(url, [Buffer.concat([Buffer.from(head), Buffer.from(body)])], {
    responses: 1,
    waitMs: 5000,
  });
  return responses[0];
}

describe.each(['hono', 'web'] as const)('%s on @hono/node-server', (framework) => {
  describe.each(['fail-closed', 'fail-open'] as const)('%s', (failAction) => {
    it.each([
      ['TRACE', 'text'],
      ['TRACE', 'incoming'],
      ['GET', 'incoming'],
      ['HEAD', 'incoming'],
    ] as const)(
      'a %s request with a body is refused (the handler reading it with %s never runs)',
      async (method, reader) => {
        const app = await startWebApp(framework, profile({ failAction }), reader);
        try {
          for (const framing of ['length', 'chunked'] as const) {
            icap.reset();
            const head =
              framing === 'length'
                ? `${method} /upload HTTP/1.1\r\nHost: x\r\nContent-Length: ${E.length}\r\nConnection: close\r\n\r\n`
                : `${method} /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n`;
            const body = framing === 'length' ? E : `${E.length.toString(16)}\r\n${E}\r\n0\r\n\r\n`;
            const res = await exchange(app.url, head, body);
            expect(res?.status, `${method} ${framing}`).toBe(400);
            expect(app.seen).toEqual([]);
            expect(reqmods()).toEqual([]);
          }
          const log = app.logs.at(-1)!;
          expect(log.error_code).toBe('ICAP_ERR_BAD_REQUEST');
          expect(log.error_message).toMatch(/request with a body/);
        } finally {
          await app.close();
        }
      },
    );
  });

  it('a GET announcing an empty chunked body goes by the rules: it reaches the handler where they scan nothing, 400 where they would (campaign-aj AJ5)', async () => {
    const rules = [{ name: 'api', match: { path: { prefix: ['/api/'] } }, action: 'enable-icap' as const }];
    const app = await startWebApp(framework, profile({ rules }), 'incoming');
    try {
      icap.reset();
      const get = (path: string) =>
        exchange(
          app.url,
          `GET ${path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n`,
          '0\r\n\r\n',
        );
      expect((await get('/x'))?.status).toBe(200);
      expect((await get('/api/x'))?.status).toBe(400);
      expect(app.seen.map((s) => [s.method, s.body.length])).toEqual([['GET', 0]]);
      expect(reqmods()).toEqual([]);
    } finally {
      await app.close();
    }
  });

  it('GET, HEAD and TRACE without a body still reach the handler, unscanned', async () => {
    const app = await startWebApp(framework, profile(), 'incoming');
    try {
      icap.reset();
      for (const method of ['GET', 'HEAD', 'TRACE']) {
        const res = await exchange(app.url, `${method} /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
        expect(res?.status, method).toBe(200);
      }
      expect(app.seen.map((s) => [s.method, s.body.length])).toEqual([
        ['GET', 0],
        ['HEAD', 0],
        ['TRACE', 0],
      ]);
      expect(reqmods()).toEqual([]);
    } finally {
      await app.close();
    }
  });
  describe.each(['text', 'arrayBuffer', 'body-stream', 'incoming'] as const)('read with %s', (reader) => {
    it('gets the bytes the ICAP server got, with their length, in the same Request', async () => {
      const app = await startWebApp(framework, profile(), reader);
      try {
        const data = Buffer.from('x'.repeat(70_000) + 'clean upload');
        for (const framing of ['length', 'chunked'] as const) {
          icap.reset();
          const head =
            framing === 'length'
              ? `POST /upload HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: ${data.length}\r\nConnection: close\r\n\r\n`
              : `POST /upload HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n`;
          const body =
            framing === 'length'
              ? data
              : Buffer.concat([
                  Buffer.from(`${data.length.toString(16)}\r\n`),
                  data,
                  Buffer.from('\r\n0\r\n\r\n'),
                ]);
          const res = await exchange(app.url, head, body);
          expect(res?.status, framing).toBe(200);
          const seen = app.seen.at(-1)!;
          expect(seen.body.equals(data)).toBe(true);
          expect(Buffer.concat(reqmods().map((r) => r.body ?? Buffer.alloc(0))).equals(data)).toBe(true);
          expect(seen.sameRequest).toBe(true);
          expect(seen.contentLength).toBe(String(data.length));
          expect(seen.transferEncoding).toBeNull();
        }
        // EICAR the same way: blocked, the handler never runs.
        const before = app.seen.length;
        const res = await exchange(
          app.url,
          `POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: ${E.length}\r\nConnection: close\r\n\r\n`,
          E,
        );
        expect(res?.status).toBe(403);
        expect(app.seen.length).toBe(before);
      } finally {
        await app.close();
      }
    });
  });

  it('a body larger than memoryThreshold (held in a temp file) comes back whole', async () => {
    const app = await startWebApp(framework, profile({ memoryThreshold: '16kb' }), 'arrayBuffer');
    try {
      icap.reset();
      const data = Buffer.alloc(300_000, 'y');
      const res = await exchange(
        app.url,
        `POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: ${data.length}\r\nConnection: close\r\n\r\n`,
        data,
      );
      expect(res?.status).toBe(200);
      expect(app.seen.at(-1)!.body.equals(data)).toBe(true);
    } finally {
      await app.close();
    }
  });
});

describe('hono: something before the scan', () => {
  it.each([
    [
      'made the Request body a Web stream',
      (async (c, next) => {
        void c.req.raw.body;
        await next();
      }) as MiddlewareHandler,
    ],
    [
      'read every header',
      (async (c, next) => {
        for (const _ of c.req.raw.headers) void _;
        await next();
      }) as MiddlewareHandler,
    ],
  ])('%s: the handler still gets the scanned bytes', async (_name, before) => {
    const app = await startWebApp('hono', profile(), 'text', before);
    try {
      icap.reset();
      const data = 'a clean body';
      const res = await exchange(
        app.url,
        `POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n`,
        `${data.length.toString(16)}\r\n${data}\r\n0\r\n\r\n`,
      );
      expect(res?.status).toBe(200);
      expect(app.seen.at(-1)!.body.toString()).toBe(data);
      expect(reqmods().map((r) => r.body?.toString())).toEqual([data]);
      const blocked = await exchange(
        app.url,
        `POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: ${E.length}\r\nConnection: close\r\n\r\n`,
        E,
      );
      expect(blocked?.status).toBe(403);
      expect(app.seen.length).toBe(1);
    } finally {
      await app.close();
    }
  });
});

describe.each(['hono', 'web'] as const)('%s: any method, framing and reader (property)', (framework) => {
  it('no handler reads an EICAR body, in either failure mode', async () => {
    const apps = {
      'fail-closed': await startWebApp(framework, profile({ failAction: 'fail-closed' }), 'x-read'),
      'fail-open': await startWebApp(framework, profile({ failAction: 'fail-open' }), 'x-read'),
    };
    try {
      await fc.assert(
        fc.asyncProperty(
          fc.constantFrom('GET', 'HEAD', 'TRACE', 'OPTIONS', 'DELETE', 'PUT', 'POST', 'PATCH', 'QUERY'),
          fc.constantFrom('length', 'chunked', 'both'),
          fc.constantFrom<Reader>('text', 'arrayBuffer', 'body-stream', 'incoming'),
          fc.constantFrom('fail-closed', 'fail-open') as fc.Arbitrary<keyof typeof apps>,
          async (method, framing, reader, failAction) => {
            const app = apps[failAction];
            const before = app.seen.length;
            const chunked = `${E.length.toString(16)}\r\n${E}\r\n0\r\n\r\n`;
            const fields =
              framing === 'length'
                ? `Content-Length: ${E.length}`
                : framing === 'chunked'
                  ? 'Transfer-Encoding: chunked'
                  : `Transfer-Encoding: chunked\r\nContent-Length: ${E.length}`;
            const res = await exchange(
              app.url,
              `${method} /upload HTTP/1.1\r\nHost: x\r\nX-Read: ${reader}\r\n${fields}\r\nConnection: close\r\n\r\n`,
              framing === 'length' ? E : chunked,
            );
            expect(res).toBeDefined();
            expect(app.seen.slice(before).filter((seen) => seen.body.includes('EICAR'))).toEqual([]);
          },
        ),
        { numRuns: 60 },
      );
    } finally {
      await apps['fail-closed'].close();
      await apps['fail-open'].close();
    }
  });
});
