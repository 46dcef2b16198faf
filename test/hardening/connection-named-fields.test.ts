/**
 * Fields a request's `Connection` header names (finding F3). Node's HTTP server hands every
 * field to the application, those `Connection` names included, but a field `Connection` names is
 * hop-by-hop by declaration and is never encapsulated for the ICAP server. So a client sending
 * `Connection: keep-alive, Content-Type, Content-Disposition` would have the handler read a
 * Content-Type and a file name the scanner never saw (policies by type or name bypassed). Such a
 * request is refused (400, ICAP_ERR_BAD_REQUEST, whatever the failure action) before any REQMOD
 * and before the handler runs.
 *
 * What stays normal: `Connection: keep-alive`, `close`, a token naming a fixed hop-by-hop field
 * (`TE`), and a token naming a field the request does not have: those are scanned and delivered.
 *
 * Hono: its Web `Request` (from @hono/node-server) keeps `Connection` and the fields it names,
 * and @icapkit/web hands them to the engine, which refuses them as for the Node adapters.
 */
import { createServer as createHttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Readable } from 'node:stream';
import { getRequestListener } from '@hono/node-server';
import type { IcapLog, IcapProfile } from '@icapkit/core';
import { icap as expressIcap } from '@icapkit/express';
import { icap as fastifyIcap } from '@icapkit/fastify';
import { icap as honoIcap } from '@icapkit/hono';
import { icap as koaIcap } from '@icapkit/koa';
import { type IcapTestServer, startIcapServer } from '@icapkit/testing';
import express5 from 'express';
import Fastify from 'fastify';
import { Hono } from 'hono';
import Koa from 'koa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  encapsulationProblem,
  requestFacts,
  type ScanRequest,
} from '../../packages/core/src/engine/request.js';
import { rawExchange } from '../support/raw-http.js';
import { readAll, served } from '../support/served.js';

let icap: IcapTestServer;
beforeAll(async () => {
  icap = await startIcapServer({ recordBodies: true });
});
afterAll(() => icap?.close());

/** What the handler read. */
interface Seen {
  body: string;
  contentType: string | undefined;
  disposition: string | undefined;
  authorization: string | undefined;
  custom: string | undefined;
}

interface App {
  url: string;
  seen: Seen[];
  logs: IcapLog[];
  close(): Promise<void>;
}

type FailAction = 'fail-closed' | 'fail-open';

const profileFor = (logs: IcapLog[], failAction: FailAction): IcapProfile => ({
  name: 'connection-named',
  poolGroup: icap.url(),
  serviceUri: '/avscan',
  startupCheck: 'off',
  failAction,
  onLog: (l) => logs.push(l),
});

type Get = (name: string) => string | undefined;
const seenOf = (body: string, get: Get): Seen => ({
  body,
  contentType: get('content-type'),
  disposition: get('content-disposition'),
  authorization: get('authorization'),
  custom: get('x-custom'),
});
const nodeGet =
  (headers: Record<string, string | string[] | undefined>): Get =>
  (name) => {
    const v = headers[name];
    return Array.isArray(v) ? v.join(', ') : v;
  };

const FRAMEWORKS: Array<[string, (failAction: FailAction) => Promise<App>]> = [
  [
    'express5',
    async (failAction) => {
      const seen: Seen[] = [];
      const logs: IcapLog[] = [];
      const mw = expressIcap(profileFor(logs, failAction));
      const app = express5();
      app.use(mw);
      app.post('/upload', async (req, res) => {
        seen.push(seenOf((await readAll(req)).toString('latin1'), nodeGet(req.headers)));
        res.json({ ok: true });
      });
      return { seen, logs, ...(await served(app.listen(0, '127.0.0.1'), () => mw.close())) };
    },
  ],
  [
    'fastify',
    async (failAction) => {
      const seen: Seen[] = [];
      const logs: IcapLog[] = [];
      const app = Fastify();
      await app.register(fastifyIcap, profileFor(logs, failAction) as never);
      app.addContentTypeParser('*', { parseAs: 'buffer' }, (_req, body, done) => done(null, body));
      app.post('/upload', async (request) => {
        seen.push(seenOf(String(request.body), nodeGet(request.headers)));
        return { ok: true };
      });
      await app.listen({ port: 0, host: '127.0.0.1' });
      const url = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
      return { url, seen, logs, close: () => app.close() };
    },
  ],
  [
    'koa3',
    async (failAction) => {
      const seen: Seen[] = [];
      const logs: IcapLog[] = [];
      const app = new Koa();
      app.silent = true;
      const mw = koaIcap(profileFor(logs, failAction));
      app.use(mw as unknown as Koa.Middleware);
      app.use(async (ctx) => {
        seen.push(seenOf((await readAll(ctx.req)).toString('latin1'), nodeGet(ctx.req.headers)));
        ctx.body = { ok: true };
      });
      const server = createHttpServer(app.callback()).listen(0, '127.0.0.1');
      return { seen, logs, ...(await served(server, () => mw.close())) };
    },
  ],
  [
    'hono',
    async (failAction) => {
      const seen: Seen[] = [];
      const logs: IcapLog[] = [];
      const mw = honoIcap(profileFor(logs, failAction));
      const app = new Hono();
      app.use(mw);
      app.post('/upload', async (c) => {
        seen.push(seenOf(await c.req.text(), (n) => c.req.header(n)));
        return c.json({ ok: true });
      });
      const server = createHttpServer(getRequestListener(app.fetch)).listen(0, '127.0.0.1');
      return { seen, logs, ...(await served(server, () => mw.close())) };
    },
  ],
];

const FIELDS =
  'Content-Type: text/html\r\n' +
  'Content-Disposition: attachment; filename="x.exe"\r\n' +
  'Authorization: Bearer a\r\n' +
  'X-Custom: 1\r\n';

function post(connection: string): string {
  return `POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: ${connection}\r\n${FIELDS}Content-Length: 5\r\n\r\nhello`;
}

const reqmods = () => icap.requests.filter((r) => r.method === 'REQMOD');

/** [Connection value, the field the log names]: a present end-to-end field named: refused. */
const REFUSED: Array<[string, string]> = [
  ['Content-Type', 'Content-Type'],
  ['keep-alive, Content-Type, Content-Disposition, Authorization, Host', 'Content-Type'],
  ['close, content-disposition', 'content-disposition'],
  ['Authorization', 'Authorization'],
  ['keep-alive, HOST', 'HOST'],
  ['X-Custom', 'X-Custom'],
  ['keep-alive,X-Absent ,  x-custom', 'x-custom'],
];

/** A Connection value that names no present end-to-end field: scanned and delivered as before. */
const CONTROLS = ['keep-alive', 'close', 'keep-alive, X-Absent', 'Keep-Alive, TE'];

describe('Connection naming end-to-end fields', () => {
  for (const [name, start] of FRAMEWORKS) {
    for (const failAction of ['fail-closed', 'fail-open'] as const) {
      for (const [connection, field] of REFUSED) {
        it(`${name}, ${failAction}: Connection: ${connection} is refused (400), no REQMOD, the handler never runs`, async () => {
          const app = await start(failAction);
          try {
            const before = reqmods().length;
            const { responses } = await rawExchange(app.url, [post(connection)], { responses: 1 });
            expect(responses[0]?.status).toBe(400);
            expect(app.seen).toHaveLength(0);
            expect(reqmods().length).toBe(before);
            expect(app.logs).toHaveLength(1);
            const log = app.logs[0]!;
            expect(log.action).toBe('ICAP_BLOCKED');
            expect(log.http_response_code).toBe(400);
            expect(log.error_code).toBe('ICAP_ERR_BAD_REQUEST');
            expect(log.error_message).toContain(`the Connection header names the "${field}" field`);
            expect(log.significance).toContain('REQUEST_REFUSED');
            expect(log.fail_action).toBeUndefined();
          } finally {
            await app.close();
          }
        });
      }

      for (const connection of CONTROLS) {
        it(`${name}, ${failAction}: Connection: ${connection} is scanned with every field, then delivered`, async () => {
          const app = await start(failAction);
          try {
            const before = reqmods().length;
            const te = connection.includes('TE') ? 'TE: trailers\r\n' : '';
            const raw = post(connection).replace('Host: 127.0.0.1\r\n', `Host: 127.0.0.1\r\n${te}`);
            const { responses } = await rawExchange(app.url, [raw], { responses: 1 });
            expect(responses[0]?.status).toBe(200);
            expect(app.seen).toEqual([
              {
                body: 'hello',
                contentType: 'text/html',
                disposition: 'attachment; filename="x.exe"',
                authorization: 'Bearer a',
                custom: '1',
              },
            ]);
            const sent = reqmods().slice(before);
            expect(sent).toHaveLength(1);
            const head = sent[0]!.httpRequest!.headers;
            expect(head.get('content-type')).toBe('text/html');
            expect(head.get('content-disposition')).toBe('attachment; filename="x.exe"');
            expect(head.get('authorization')).toBe('Bearer a');
            expect(head.get('x-custom')).toBe('1');
            expect(head.get('host')).toBe('127.0.0.1');
            expect(head.has('connection')).toBe(false);
            expect(head.has('te')).toBe(false);
            expect(sent[0]!.body?.toString('latin1')).toBe('hello');
            expect(app.logs.at(-1)!.action).toBe('ICAP_PASSED');
          } finally {
            await app.close();
          }
        });
      }
    }
  }
});

/** The check itself, on request shapes the servers above cannot send (HTTP/2, repeated fields). */
describe('encapsulationProblem and Connection', () => {
  const problem = (rawHeaders: string[], httpVersion = '1.1') => {
    const req = Object.assign(Readable.from([]), {
      method: 'POST',
      url: '/upload',
      headers: {},
      rawHeaders,
      httpVersion,
    }) as unknown as ScanRequest;
    return encapsulationProblem(requestFacts(req), false);
  };

  it('a present end-to-end field named in any Connection field is refused', () => {
    const base = ['Host', 'a', 'Content-Type', 'text/html'];
    expect(problem([...base, 'Connection', 'content-type'])).toMatch(/names the "content-type" field/);
    expect(problem([...base, 'Connection', 'keep-alive', 'Connection', 'Content-Type'])).toMatch(
      /names the "Content-Type" field/,
    );
    expect(problem([...base, 'Connection', ',, CONTENT-TYPE'])).toMatch(/names the "CONTENT-TYPE" field/);
    expect(problem([...base, 'Content-Length', '5', 'Connection', 'Content-Length'])).toMatch(
      /names the "Content-Length" field/,
    );
  });

  it('hop-by-hop tokens, absent fields and pseudo-headers are harmless', () => {
    const base = ['Host', 'a', 'Content-Type', 'text/html'];
    for (const c of ['keep-alive', 'close', 'Upgrade', 'keep-alive, X-Absent', '', ',', 'TE, Trailer'])
      expect(
        problem([...base, 'TE', 'trailers', 'Keep-Alive', 'timeout=5', 'Connection', c]),
      ).toBeUndefined();
    // HTTP/2 forbids Connection (Node refuses such a stream); were one handed over, the same rule holds.
    const h2 = [
      ':method',
      'POST',
      ':path',
      '/upload',
      ':authority',
      'a',
      ':scheme',
      'http',
      'content-type',
      'x/y',
    ];
    expect(problem([...h2, 'connection', ':authority, :path'], '2.0')).toBeUndefined();
    expect(problem([...h2, 'connection', 'content-type'], '2.0')).toMatch(/names the "content-type" field/);
  });
});
