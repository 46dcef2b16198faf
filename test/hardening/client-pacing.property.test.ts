/**
 * A client can never choose fail-open by its pace, property-based: whatever an HTTP client's
 * upload looks like in time (a burst, then pauses and bursts of random sizes, with either
 * framing) and whatever time limits the scanner has on receiving a request (an idle limit, a
 * total limit, both or none, from 50 ms), an upload ending in EICAR is blocked and a clean one
 * reaches the handler whole, in Express 5, Fastify, Koa 3 and Hono, in both failure modes;
 * no request takes the failure action (the scanner never fails on its own here) and none
 * waits long (every upload answered within a bound).
 *
 * The scanner (the embedded ICAP server) gives up on the first REQMOD of an upload that names
 * limits (the `give-up` fault: it closes the connection while the request is incomplete); a
 * request sent again whole after that is answered, as a scanner that only gives up on a pace
 * would. What the engine must do: hold or stream the upload as its pace says, and when the
 * scanner gave up on an attempt the client paced, send the whole body again once it is here
 * (client-held-connections.test.ts has the cases one by one).
 *
 * `ICAPKIT_PACING_RUNS` sets the number of uploads (default 40, spread over the frameworks and
 * failure modes); `scripts/fuzz.sh` runs this file too, with 1000 unless set.
 */
import { connect } from 'node:net';
import type { IcapLog, IcapProfile } from '@icapkit/core';
import { eicar, type IcapTestServer, startIcapServer } from '@icapkit/testing';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type App, type Framework, startApp } from '../conformance/apps.js';
import { checkAsyncProperty, runsFromEnv, timeoutFor } from '../fuzz/support.js';

const RUNS = runsFromEnv('ICAPKIT_PACING_RUNS', 40);
const EICAR = eicar();
const FRAMEWORKS: Framework[] = ['express5', 'fastify', 'koa3', 'hono'];
const FAIL_ACTIONS = ['fail-closed', 'fail-open'] as const;
/** Time one upload may take to be answered once all of it was sent. */
const ANSWER_BOUND_MS = 8_000;

interface Target {
  app: App;
  logs: IcapLog[];
}
const targets = new Map<string, Target>();
let server: IcapTestServer;
/** Uploads whose first REQMOD the scanner has seen (it gives up on that one only). */
const seenUploads = new Set<string>();

beforeAll(async () => {
  server = await startIcapServer({
    recordBodies: false,
    script: (r) => {
      if (r.method !== 'REQMOD') return undefined;
      const h = r.httpRequest?.headers;
      const id = h?.get('x-upload');
      if (id === undefined || seenUploads.has(id)) return undefined;
      seenUploads.add(id);
      const idle = h?.get('x-idle-limit');
      const total = h?.get('x-total-limit');
      if (idle === undefined && total === undefined) return undefined;
      return {
        kind: 'give-up',
        idleMs: idle === undefined ? undefined : Number(idle),
        totalMs: total === undefined ? undefined : Number(total),
      };
    },
  });
  for (const framework of FRAMEWORKS) {
    for (const failAction of FAIL_ACTIONS) {
      const logs: IcapLog[] = [];
      const profile: IcapProfile = {
        name: `pacing-${framework}-${failAction}`,
        poolGroup: server.url(),
        serviceUri: '/avscan',
        failAction,
        responseTimeout: 3_000,
        startupCheck: 'off',
        onLog: (l) => logs.push(l),
      };
      targets.set(`${framework}/${failAction}`, { app: await startApp(framework, profile), logs });
    }
  }
}, 60_000);

afterAll(async () => {
  for (const t of targets.values()) await t.app.close();
  await server?.close();
});

interface Pace {
  framework: Framework;
  failAction: (typeof FAIL_ACTIONS)[number];
  /** Bytes sent at once after the head (below and above holdBodySize, 64 KiB). */
  first: number;
  /** Then, in turn: a pause, and that many bytes at once. */
  steps: Array<{ pauseMs: number; bytes: number }>;
  chunked: boolean;
  threat: boolean;
  idleLimit: number | undefined;
  totalLimit: number | undefined;
}

const paceArb: fc.Arbitrary<Pace> = fc.record({
  framework: fc.constantFrom(...FRAMEWORKS),
  failAction: fc.constantFrom(...FAIL_ACTIONS),
  first: fc.oneof(fc.integer({ min: 0, max: 60_000 }), fc.integer({ min: 66_000, max: 200_000 })),
  steps: fc.array(
    fc.record({ pauseMs: fc.integer({ min: 0, max: 350 }), bytes: fc.integer({ min: 1, max: 40_000 }) }),
    { maxLength: 4 },
  ),
  chunked: fc.boolean(),
  threat: fc.boolean(),
  idleLimit: fc.option(fc.integer({ min: 50, max: 400 }), { nil: undefined }),
  totalLimit: fc.option(fc.integer({ min: 100, max: 1_200 }), { nil: undefined }),
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls `check` until it holds or `ms` pass (no fixed sleep). */
async function until(check: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`not within ${ms} ms: ${what}`);
    await sleep(5);
  }
}

let uploads = 0;

/** Sends the upload as `pace` says; its status and the body it carried. */
async function paced(app: App, pace: Pace, id: string): Promise<{ status: number; body: Buffer }> {
  const sizes = [pace.first, ...pace.steps.map((s) => s.bytes)];
  const filler = Buffer.alloc(
    sizes.reduce((a, b) => a + b, 0),
    0x61,
  );
  const body = Buffer.concat([filler, pace.threat ? EICAR : Buffer.from(`clean end ${id}`)]);
  const u = new URL(app.url);
  const socket = connect(Number(u.port), u.hostname);
  socket.on('error', () => {});
  let reply = '';
  socket.on('data', (d: Buffer) => {
    reply += d.toString('latin1');
  });
  const answered = () => reply.includes('\r\n\r\n');
  const limits =
    (pace.idleLimit === undefined ? '' : `X-Idle-Limit: ${pace.idleLimit}\r\n`) +
    (pace.totalLimit === undefined ? '' : `X-Total-Limit: ${pace.totalLimit}\r\n`);
  const framing = pace.chunked ? 'Transfer-Encoding: chunked\r\n' : `Content-Length: ${body.length}\r\n`;
  const piece = (b: Buffer) =>
    pace.chunked ? Buffer.concat([Buffer.from(`${b.length.toString(16)}\r\n`), b, Buffer.from('\r\n')]) : b;
  try {
    socket.write(
      `POST /raw HTTP/1.1\r\nHost: ${u.host}\r\nContent-Type: application/octet-stream\r\n` +
        `X-Upload: ${id}\r\n${limits}${framing}Connection: close\r\n\r\n`,
    );
    let at = 0;
    const send = (n: number) => {
      if (n > 0 && !socket.destroyed) socket.write(piece(body.subarray(at, at + n)));
      at += n;
    };
    send(pace.first);
    for (const step of pace.steps) {
      // An answer before the end (it would be a refusal) ends the upload.
      if (answered()) break;
      await sleep(step.pauseMs);
      send(step.bytes);
    }
    if (!answered() && !socket.destroyed) {
      send(body.length - at);
      if (pace.chunked) socket.write('0\r\n\r\n');
    }
    await until(() => answered() || socket.destroyed, ANSWER_BOUND_MS, `the answer to upload ${id}`);
    const status = /^HTTP\/1\.1 (\d{3})/.exec(reply)?.[1];
    return { status: status === undefined ? 0 : Number(status), body };
  } finally {
    socket.destroy();
  }
}

describe('a client cannot choose fail-open by its pace, whatever the scanner gives up on', () => {
  it(
    `${RUNS} paced uploads over ${FRAMEWORKS.join(', ')}, both failure modes`,
    async () => {
      await checkAsyncProperty(
        'client pacing',
        fc.asyncProperty(paceArb, async (pace) => {
          const target = targets.get(`${pace.framework}/${pace.failAction}`)!;
          const { app, logs } = target;
          const id = `u${++uploads}`;
          const logsBefore = logs.length;
          const { status, body } = await paced(app, pace, id);
          await until(() => logs.length > logsBefore, 5_000, `the record of upload ${id}`);
          const log = logs.at(-1)!;
          const handled = app.seen.filter((s) => s.headers['x-upload'] === id);
          const what = `${JSON.stringify(pace)} -> ${status}, ${JSON.stringify(log.request_logs.map((e) => e.error_code))}`;
          expect(log.significance, what).not.toContain('FAIL_OPEN');
          expect(log.error_code, what).toBeUndefined();
          if (pace.threat) {
            expect(status, what).toBe(403);
            expect(handled, what).toEqual([]);
          } else {
            expect(status, what).toBe(200);
            expect(handled.length, what).toBe(1);
            expect(handled[0]?.raw?.equals(body), what).toBe(true);
          }
          // The scanner stays up: a pace never gets it suspended.
          expect(app.engine.status()[0]?.state, what).not.toBe('suspended');
        }),
        RUNS,
      );
      // At least one upload was given up on and sent again (the property met the case it is about).
      const retried = [...targets.values()].flatMap((t) =>
        t.logs.filter((l) => l.request_logs.length === 2 && l.request_logs[0]?.error_code !== undefined),
      );
      expect(retried.length).toBeGreaterThan(0);
      // (About a third of a second per upload; the uploads' own pauses are most of it.)
    },
    timeoutFor(RUNS, 400_000),
  );
});
