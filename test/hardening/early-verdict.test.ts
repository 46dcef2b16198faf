/**
 * A scanner that refuses an upload from its first bytes: 100 Continue, a little more read, a
 * complete block answer (encapsulated 403), then FIN or RST without reading the rest. In each
 * framework and both failure actions the upload is blocked: 403, the handler never called, the
 * log record says ICAP_BLOCKED. The HTTP client holds the rest of its (large, EICAR-first)
 * upload until the ICAP server is about to answer, so icapkit writes into the dead ICAP
 * connection while the answer waits there unread (the write fails with EPIPE/ECONNRESET). Also: an answer whose head is complete but whose block page is cut off by
 * the reset still blocks.
 */
import { request } from 'node:http';
import type { IcapLog } from '@icapkit/core';
import { eicar, type IcapTestServer, startIcapServer } from '@icapkit/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type App, type Framework, startApp } from '../conformance/apps.js';

// hono and web: the Web-standard adapters (issue 16), on @hono/node-server
const FRAMEWORKS: Framework[] = ['express5', 'fastify', 'koa3', 'hono', 'web'];
const RUNS = 5;
const MiB = 1024 * 1024;
const FIRST = Buffer.concat([eicar(), Buffer.alloc(64 * 1024 - eicar().length, 0x61)]);
const REST = Buffer.alloc(8 * MiB, 0x62);

let server: IcapTestServer;
beforeAll(async () => {
  server = await startIcapServer({ recordBodies: false });
});
afterAll(async () => {
  await server.close();
});

/**
 * POSTs FIRST, then REST when the ICAP server is about to answer (`hold.release`, called
 * synchronously before the answer and the close are written): the rest reaches the app in the
 * same instant as the answer reaches icapkit, so icapkit writes into the closed ICAP connection
 * before it reads the answer. Resolves with the status (the app may answer early).
 */
function upload(app: App, hold: { release: () => void }): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    const req = request(new URL('/raw', app.url), {
      method: 'POST',
      headers: {
        'content-type': 'application/octet-stream',
        'content-length': String(FIRST.length + REST.length),
      },
    });
    let status: number | undefined;
    const timer = setTimeout(() => req.destroy(new Error('no answer within 15 s')), 15_000);
    req.on('response', (res) => {
      status = res.statusCode;
      res.resume();
      res.on('end', () => {
        clearTimeout(timer);
        resolve(status!);
        req.destroy();
      });
    });
    req.on('error', (err) => {
      // The app may answer and close before the whole upload is sent: the answer is what counts.
      if (status === undefined) {
        clearTimeout(timer);
        reject(err);
      }
    });
    req.write(FIRST);
    hold.release = () => {
      if (!req.destroyed) req.end(REST);
    };
  });
}

async function waitFor(condition: () => boolean, withinMs = 5000): Promise<void> {
  const deadline = Date.now() + withinMs;
  while (!condition() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
}

const VARIANTS = [
  { name: 'then FIN', ending: 'close', truncate: false, withContinue: true },
  { name: 'then RST', ending: 'reset', truncate: false, withContinue: true },
  { name: 'then RST, the block page cut off', ending: 'reset', truncate: true, withContinue: true },
  {
    name: 'on the ICAP head (no 100 Continue), then RST',
    ending: 'reset',
    truncate: false,
    withContinue: false,
  },
  {
    name: 'then no close (the rest read and dropped)',
    ending: 'keep-alive',
    truncate: false,
    withContinue: true,
  },
] as const;

describe.each(FRAMEWORKS)('early verdict then close: %s', (framework) => {
  describe.each(['fail-closed', 'fail-open'] as const)('%s', (failAction) => {
    for (const v of VARIANTS) {
      it(`${v.name}: 403, the handler never gets the body, logged as blocked (${RUNS} runs)`, async () => {
        const logs: IcapLog[] = [];
        const app = await startApp(framework, {
          name: 'early',
          poolGroup: server.url(),
          serviceUri: '/avscan',
          failAction,
          bufferSize: '32mb',
          previewMinBodySize: 0,
          responseTimeout: 10_000,
          connection: { ioTimeout: 5000 },
          onLog: (l) => logs.push(l),
        });
        try {
          for (let i = 0; i < RUNS; i++) {
            const hold = { release: () => {} };
            server.setScript((req) =>
              req.method === 'OPTIONS'
                ? undefined
                : {
                    kind: 'early-verdict',
                    ending: v.ending,
                    continue: v.withContinue,
                    after: 1,
                    truncate: v.truncate,
                    beforeAnswer: () => hold.release(),
                  },
            );
            const status = await upload(app, hold);
            expect(status).toBe(403);
            await waitFor(() => logs.length === i + 1);
            const log = logs[i]!;
            expect(log.action).toBe('ICAP_BLOCKED');
            expect(log.significance).toContain('ICAP_BLOCKED');
            expect(log.significance).not.toContain('FAIL_OPEN');
          }
          expect(app.seen).toHaveLength(0);
          await waitFor(() =>
            app.engine.status().every((s) => s.outstanding === 0 && s.connections.busy === 0),
          );
          expect(app.engine.status().every((s) => s.outstanding === 0)).toBe(true);
        } finally {
          server.setScript(undefined);
          await app.close();
        }
      }, 60_000);
    }
  });
});
