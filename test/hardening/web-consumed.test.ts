/**
 * Wrong order on @hono/node-server is an immediate, clear error, as in the Node adapters
 * (body-consumed.test.ts): something before the scan that read the Node request under the Web
 * one (`env.incoming`: a 'data' or 'readable' listener, async iteration, a pipe, one read(),
 * reading it all, or the Request's own text() or body stream, which read it) has taken the body
 * the Web `Request` reads from there. Before the fix the scan read what was left: mostly nothing,
 * so a REQMOD of an empty body passed (200, ICAP_PASSED) while the reader before it had the EICAR
 * bytes unscanned and the handler got 0 bytes; a 'readable' listener left the scan waiting for
 * bodyTimeout (408, blaming the client); a Request read first was a thrown INVALID_ARGUMENT. Now
 * refused at once, in both failure modes: 500 ICAP_ERR_BODY_CONSUMED, no REQMOD, the handler
 * never runs, and the Node adapters' warning said once per middleware. A body nothing read still
 * scans.
 */
import type { IncomingMessage, Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { createAdaptorServer } from '@hono/node-server';
import { bodyConsumedMessage, type IcapLog, type IcapProfile } from '@icapkit/core';
import { icap as honoIcap } from '@icapkit/hono';
import { eicar, type IcapTestServer, startIcapServer } from '@icapkit/testing';
import { withIcap } from '@icapkit/web';
import { Hono } from 'hono';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { capture, expectConsumedRecords } from '../support/consumed-capture.js';
import { rawExchange } from '../support/raw-http.js';

let icap: IcapTestServer;
beforeAll(async () => {
  icap = await startIcapServer({ recordBodies: true });
});
afterAll(() => icap?.close());

const BODY_TIMEOUT = 20_000;

type Before = (incoming: IncomingMessage, request: Request) => Promise<void>;

/** Ways something before the scan reads `env.incoming`; each resolves when the scan may run. */
const readers: Record<string, Before> = {
  'a data listener': async (incoming) => {
    incoming.on('data', () => {});
  },
  'a paused data listener (nothing read yet)': async (incoming) => {
    incoming.on('data', () => {});
    incoming.pause();
  },
  'a readable listener (nothing read yet)': async (incoming) => {
    incoming.on('readable', () => {});
  },
  'async iteration to the end': async (incoming) => {
    for await (const _ of incoming) void _;
  },
  'a pipe': async (incoming) => {
    incoming.pipe(new Writable({ write: (_chunk, _enc, cb) => cb() }));
  },
  'one read() on readable': async (incoming) => {
    await new Promise<void>((resolve) => incoming.once('readable', resolve));
    incoming.read();
  },
  'reading it all, then the handler runs': async (incoming) => {
    await buffer(incoming);
  },
  "the Request's text() (@hono/node-server reads env.incoming)": async (_incoming, request) => {
    await request.text();
  },
  "the Request's body stream (a Web stream over env.incoming)": async (_incoming, request) => {
    for await (const _ of request.body ?? []) void _;
  },
};

interface App {
  url: string;
  /** Bodies the handler got. */
  handled: Buffer[];
  logs: IcapLog[];
  close(): Promise<void>;
}

async function startApp(
  framework: 'hono' | 'web',
  profile: IcapProfile,
  before: Before | undefined,
): Promise<App> {
  const handled: Buffer[] = [];
  const logs: IcapLog[] = [];
  const p: IcapProfile = { ...profile, onLog: (l) => logs.push(l) };
  const handle = async (request: Request) => {
    const body = Buffer.from(await request.arrayBuffer());
    handled.push(body);
    return new Response(`got ${body.length}`);
  };
  let fetch: (request: Request, env: { incoming: IncomingMessage }) => Promise<Response> | Response;
  let close: () => Promise<void>;
  if (framework === 'hono') {
    const mw = honoIcap(p);
    const app = new Hono<{ Bindings: { incoming: IncomingMessage } }>();
    if (before)
      app.use(async (c, next) => {
        await before(c.env.incoming, c.req.raw);
        await next();
      });
    app.use(mw);
    app.post('*', (c) => handle(c.req.raw));
    fetch = app.fetch as never;
    close = () => mw.close();
  } else {
    const route = withIcap(p, (request: Request) => handle(request));
    fetch = async (request, env) => {
      if (before) await before(env.incoming, request);
      return route(request, env);
    };
    close = () => route.close();
  }
  const server = createAdaptorServer({ fetch: fetch as never }) as Server;
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    handled,
    logs,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await close();
    },
  };
}

const E = eicar().toString('latin1');
const reqmods = () => icap.requests.filter((r) => r.method === 'REQMOD');

/** One POST of `body` framed with Content-Length or chunked; the status and how long it took. */
async function post(url: string, framing: 'length' | 'chunked', body: string) {
  const head =
    framing === 'length'
      ? `POST /upload HTTP/1.1\r\nHost: x\r\nAccept: application/json\r\nContent-Type: application/octet-stream\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n`
      : `POST /upload HTTP/1.1\r\nHost: x\r\nAccept: application/json\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n`;
  const payload = framing === 'length' ? body : `${body.length.toString(16)}\r\n${body}\r\n0\r\n\r\n`;
  const t0 = performance.now();
  const { responses } = await rawExchange(url, [head + payload], {
    responses: 1,
    waitMs: BODY_TIMEOUT + 5000,
  });
  return { res: responses[0], elapsed: performance.now() - t0 };
}

describe.each(['hono', 'web'] as const)('%s on @hono/node-server', (framework) => {
  describe.each(['fail-closed', 'fail-open'] as const)('%s', (failAction) => {
    it.each(Object.keys(readers))(
      'env.incoming read first with %s: 500 ICAP_ERR_BODY_CONSUMED at once, no REQMOD, the handler never runs',
      async (reader) => {
        const c = capture();
        const app = await startApp(
          framework,
          {
            name: 'web-order',
            poolGroup: icap.url(),
            serviceUri: '/avscan',
            startupCheck: 'off',
            failAction,
            bodyTimeout: BODY_TIMEOUT,
            logger: c.logger,
          },
          readers[reader]!,
        );
        try {
          icap.reset();
          for (const framing of ['length', 'chunked'] as const) {
            const { res, elapsed } = await post(app.url, framing, E);
            expect(res?.status, framing).toBe(500);
            expect(elapsed, framing).toBeLessThan(BODY_TIMEOUT / 2);
            expect(JSON.parse(res!.body.toString())).toMatchObject({
              type: 'urn:icapkit:problem:misconfigured',
              status: 500,
            });
          }
          expect(reqmods()).toEqual([]);
          expect(app.handled).toEqual([]);
          expect(app.logs).toHaveLength(2);
          expectConsumedRecords(app.logs);
          // Warnings are emitted on the next tick: give them a turn to arrive before looking.
          await new Promise((r) => setImmediate(r));
          // The Node adapters' warning, naming what the Node request's stream says was done to it.
          expect(c.warnings).toHaveLength(1);
          const reason = /already read before the scan \((.+?)\), so/.exec(c.warnings[0]!.message)?.[1];
          expect(reason).toMatch(/^(?:the request stream|part of the request stream)/);
          expect(c.warnings[0]!.message).toBe(bodyConsumedMessage('web-order', reason!));
          expect(
            c.errors.filter((e) => (e.obj as { code?: string }).code === 'ICAP_ERR_BODY_CONSUMED'),
          ).toHaveLength(1);
        } finally {
          c.stop();
          await app.close();
        }
      },
      BODY_TIMEOUT * 3,
    );
  });

  it('a POST nothing read first still scans and passes; EICAR is still blocked', async () => {
    const c = capture();
    const app = await startApp(
      framework,
      { name: 'web-order', poolGroup: icap.url(), serviceUri: '/avscan', startupCheck: 'off' },
      undefined,
    );
    try {
      for (const framing of ['length', 'chunked'] as const) {
        icap.reset();
        const data = `a clean upload, ${framing}`;
        const { res } = await post(app.url, framing, data);
        expect(res?.status, framing).toBe(200);
        expect(app.handled.at(-1)?.toString()).toBe(data);
        expect(reqmods().map((r) => r.body?.toString())).toEqual([data]);
        const blocked = await post(app.url, framing, E);
        expect(blocked.res?.status, framing).toBe(403);
      }
      expect(app.handled).toHaveLength(2);
      expect(app.logs.map((l) => l.error_code ?? null)).not.toContain('ICAP_ERR_BODY_CONSUMED');
      await new Promise((r) => setImmediate(r));
      expect(c.warnings).toEqual([]);
    } finally {
      c.stop();
      await app.close();
    }
  });
});
