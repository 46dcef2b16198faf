/**
 * HTTP clients that hold the scanner's connections cannot choose the failure action.
 *
 * An upload whose first `holdBodySize` bytes come fast gets its ICAP connection and streams the
 * rest as it arrives; its client can then stop sending (just under bodyTimeout, for as long as
 * bodyDeadline). A few such uploads hold every connection of the pool. Before this suite, the
 * next upload (the same client's EICAR, say) waited for a connection until responseTimeout
 * and then took the failure action: under `fail-open` it reached the handler unscanned. And a
 * suspect server's health check waited behind them until it failed, which suspended a healthy
 * server and sent everyone's uploads to the failure action.
 *
 * In Express, Fastify, Koa and Hono, in both failure modes:
 * - uploads whose clients stop sending hold at most `maxStreamingUploads` connections (half
 *   by default): the next holding upload is held whole, never given a connection, and other
 *   uploads are scanned meanwhile (EICAR blocked, a clean upload passed); the held one is
 *   scanned once its client sends the rest; a server's lower `Max-Connections` scales that
 *   share down; with 0, no upload holds a connection at all;
 * - where the profile lets them hold every connection (`maxStreamingUploads` =
 *   `maxConnections`), another upload gets 503 `ICAP_ERR_SATURATED` (never passed unscanned,
 *   never the handler), the server's health untouched; once they are gone, EICAR is blocked
 *   and a clean upload passes;
 * - a suspect server's health check goes out on a connection of its own while HTTP clients
 *   hold the pool: it is answered and the server stays up;
 * - a scanner that gives up on an upload still arriving (an idle or total time limit of its
 *   own, 1.5 s or 300 ms: the test server's `give-up` fault) gets the whole body once more
 *   when it has arrived: EICAR at its end is blocked, a clean upload passes whole, never the
 *   failure action; a client that pauses or trickles past the scanner's limit cannot have the
 *   rest of its body pass unscanned. The failure counts as one the upload provoked;
 * - a server that fails that whole body too fails on its own: the failure action applies.
 */
import { connect, type Socket } from 'node:net';
import type { IcapLog, IcapProfile } from '@icapkit/core';
import { eicar, type IcapTestServer, type RecordedRequest, startIcapServer } from '@icapkit/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type App, type Framework, startApp } from '../conformance/apps.js';
import { send } from '../support/http-client.js';

const FRAMEWORKS: Framework[] = ['express5', 'fastify', 'koa3', 'hono'];
const FAIL_ACTIONS = ['fail-closed', 'fail-open'] as const;
type FailAction = (typeof FAIL_ACTIONS)[number];

const EICAR = eicar();
const RESPONSE_TIMEOUT = 1_000;
/** What a holding client declares, and what it sends at once: past holdBodySize (64 KiB), fast. */
const DECLARED = 1024 * 1024;
const FIRST = 200_000;

/** Polls `check` until it holds or `ms` pass (no fixed sleep). */
async function until(check: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`not within ${ms} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const isCheck = (r: RecordedRequest) => r.httpRequest?.target === '/icapkit-health-check';
const header = (r: RecordedRequest, name: string) => r.httpRequest?.headers.get(name) ?? undefined;

interface Run {
  app: App;
  logs: IcapLog[];
  holders: Socket[];
}

async function start(
  framework: Framework,
  failAction: FailAction,
  server: IcapTestServer,
  more: Partial<IcapProfile> = {},
): Promise<Run> {
  const logs: IcapLog[] = [];
  const profile: IcapProfile = {
    name: `client-held-${framework}-${failAction}`,
    poolGroup: server.url(),
    serviceUri: '/avscan',
    failAction,
    responseTimeout: RESPONSE_TIMEOUT,
    bodyTimeout: 30_000,
    connection: { maxConnections: 2 },
    health: { failureLimit: 1, probeInterval: 60_000 },
    // Counts the uploads arriving (engine.uploadsArriving); no test reaches the limit.
    maxBodiesPerClient: 100,
    onLog: (l) => logs.push(l),
    ...more,
  };
  return { app: await startApp(framework, profile), logs, holders: [] };
}

const busy = (run: Run) => run.app.engine.status()[0]?.connections.busy ?? 0;
const arriving = (run: Run) => run.app.engine.uploadsArriving('127.0.0.1');
/** Every connection may carry a body still arriving: HTTP clients can hold the whole pool. */
const NO_SHARE_KEPT: Partial<IcapProfile> = { maxStreamingUploads: 2 };
const pending = (run: Run) => run.app.engine.status()[0]?.connections.pending ?? 0;

/**
 * An upload of DECLARED bytes whose client sends FIRST of them at once, then nothing (until the
 * test ends): `scan` is its X-Scan header (the test server's script).
 */
function holdingUpload(run: Run, scan?: string): Socket {
  const u = new URL(run.app.url);
  const socket = connect(Number(u.port), u.hostname);
  socket.on('error', () => {});
  run.holders.push(socket);
  const extra = scan === undefined ? '' : `X-Scan: ${scan}\r\n`;
  socket.write(
    `POST /raw HTTP/1.1\r\nHost: ${u.host}\r\nContent-Type: application/octet-stream\r\n${extra}` +
      `Content-Length: ${DECLARED}\r\n\r\n`,
  );
  socket.write(Buffer.alloc(FIRST, 0x61));
  return socket;
}

/** Posts to /raw; the status, the record and what the handler got. */
async function upload(run: Run, body: Buffer) {
  const seen = run.app.seen.length;
  const logs = run.logs.length;
  const reply = await send(run.app.url, '/raw', {
    body,
    headers: { 'content-type': 'application/octet-stream' },
    timeoutMs: 10_000,
  });
  await until(() => run.logs.length > logs, 2_000, 'the icap_log record');
  return { status: reply.status, handled: run.app.seen.slice(seen), log: run.logs.at(-1)! };
}

async function stop(run: Run): Promise<void> {
  for (const s of run.holders) s.destroy();
  await run.app.close();
}

/** The holders gone, their connections closed: EICAR is blocked, a clean upload passes. */
async function expectScanningAgain(run: Run): Promise<void> {
  for (const s of run.holders.splice(0)) s.destroy();
  await until(() => busy(run) === 0, 5_000, 'the held connections given back');
  const threat = await upload(run, EICAR);
  expect(threat.status).toBe(403);
  expect(threat.handled).toEqual([]);
  expect(threat.log.action).toBe('ICAP_BLOCKED');
  const clean = await upload(run, Buffer.from('hello'));
  expect(clean.status).toBe(200);
  expect(clean.handled.map((s) => s.raw?.toString())).toEqual(['hello']);
}

let server: IcapTestServer;
/** The server fails its health check too (a REQMOD of a fixed body: pool-group.ts). */
let checksFail = false;
beforeAll(async () => {
  server = await startIcapServer({
    recordBodies: false,
    script: (r) => {
      if (r.method !== 'REQMOD') return undefined;
      if (checksFail && r.httpRequest?.target === '/icapkit-health-check')
        return { kind: 'reset', when: 'mid-body' };
      const scan = header(r, 'x-scan');
      if (scan === 'error') return { kind: 'status', status: 500 };
      // A scanner's own limits on receiving a request: 1.5 s without a byte, or 1.5 s in all.
      if (scan === 'idle-limit') return { kind: 'give-up', idleMs: 1_500 };
      if (scan === 'total-limit') return { kind: 'give-up', totalMs: 1_500 };
      // A short one: it gives up within the exchange's first second.
      if (scan === 'short-idle-limit') return { kind: 'give-up', idleMs: 300 };
      // A server that breaks on this request however it is sent.
      if (scan === 'reset-always') return { kind: 'reset', when: 'mid-body' };
      return undefined;
    },
  });
});
afterAll(async () => {
  await server?.close();
});

describe('uploads whose clients stop sending hold at most half the connections: the others are scanned', () => {
  for (const framework of FRAMEWORKS) {
    for (const failAction of FAIL_ACTIONS) {
      it(`${framework}, ${failAction}`, async () => {
        const run = await start(framework, failAction, server);
        const reqmods = () => server.requests.filter((r) => r.method === 'REQMOD' && !isCheck(r)).length;
        try {
          const before = reqmods() + 1;
          holdingUpload(run);
          // (The server has its REQMOD: a connection taken is not yet a request seen.)
          await until(() => busy(run) === 1 && reqmods() === before, 5_000, 'the first connection held');
          const second = holdingUpload(run);
          await until(() => arriving(run) === 2, 5_000, 'the second upload arriving');
          // Its first bytes came as fast as the first's, but no place is left: it is held.
          for (const body of [EICAR, Buffer.from('hello')]) {
            const r = await upload(run, body);
            expect(r.log.error_code).toBeUndefined();
            if (body === EICAR) {
              expect(r.status).toBe(403);
              expect(r.handled).toEqual([]);
              expect(r.log.action).toBe('ICAP_BLOCKED');
            } else {
              expect(r.status).toBe(200);
              expect(r.handled.map((s) => s.raw?.toString())).toEqual(['hello']);
            }
          }
          expect(reqmods()).toBe(before + 2);
          expect(busy(run)).toBe(1);
          // The held upload is scanned once its client sends the rest: EICAR at its end is blocked.
          const logs = run.logs.length;
          const seen = run.app.seen.length;
          second.write(Buffer.concat([Buffer.alloc(DECLARED - FIRST - EICAR.length, 0x62), EICAR]));
          await until(() => run.logs.length > logs, 5_000, "the held upload's record");
          expect(run.logs.at(-1)?.action).toBe('ICAP_BLOCKED');
          expect(run.logs.at(-1)?.request_body_length).toBe(DECLARED);
          expect(run.app.seen.length).toBe(seen);
          const [status] = run.app.engine.status();
          expect(status?.consecutiveFailures).toBe(0);
          await expectScanningAgain(run);
        } finally {
          await stop(run);
        }
      });
    }
  }
});

describe('a server that allows one connection: no upload streams, so a client that stops sending holds nothing', () => {
  let single: IcapTestServer;
  beforeAll(async () => {
    single = await startIcapServer({ recordBodies: false, maxConnections: 1 });
  });
  afterAll(async () => {
    await single?.close();
  });
  for (const framework of FRAMEWORKS) {
    for (const failAction of FAIL_ACTIONS) {
      it(`${framework}, ${failAction}: maxConnections 32, the server allows 1`, async () => {
        const run = await start(framework, failAction, single, { connection: { maxConnections: 32 } });
        try {
          // The first exchange reads the server's OPTIONS (its Max-Connections).
          expect((await upload(run, Buffer.from('hello'))).status).toBe(200);
          expect(run.app.engine.status()[0]?.connections.limit).toBe(1);
          holdingUpload(run);
          await until(() => arriving(run) === 1, 5_000, 'the stalled upload arriving');
          // Held whole, not streamed: the one connection stays free for uploads that have arrived.
          expect(busy(run)).toBe(0);
          const threat = await upload(run, EICAR);
          expect({ status: threat.status, handled: threat.handled, action: threat.log.action }).toEqual({
            status: 403,
            handled: [],
            action: 'ICAP_BLOCKED',
          });
          const clean = await upload(run, Buffer.from('clean'));
          expect({ status: clean.status, action: clean.log.action }).toEqual({
            status: 200,
            action: 'ICAP_PASSED',
          });
        } finally {
          await stop(run);
        }
      });
    }
  }
});

describe("a server's Max-Connections scales the share down: holders still leave connections for the others", () => {
  let limited: IcapTestServer;
  beforeAll(async () => {
    limited = await startIcapServer({ recordBodies: false, maxConnections: 2 });
  });
  afterAll(async () => {
    await limited?.close();
  });
  for (const framework of FRAMEWORKS) {
    it(`${framework}, fail-open: maxConnections 32 (16 streamed at most), the server allows 2`, async () => {
      const run = await start(framework, 'fail-open', limited, { connection: { maxConnections: 32 } });
      try {
        // The first exchange reads the server's OPTIONS (its Max-Connections).
        expect((await upload(run, Buffer.from('hello'))).status).toBe(200);
        expect(run.app.engine.status()[0]?.connections.limit).toBe(2);
        holdingUpload(run);
        await until(() => busy(run) === 1, 5_000, 'one connection held');
        holdingUpload(run);
        await until(() => arriving(run) === 2, 5_000, 'the second upload arriving');
        const threat = await upload(run, EICAR);
        expect(threat.status).toBe(403);
        expect(threat.handled).toEqual([]);
        expect(threat.log.action).toBe('ICAP_BLOCKED');
        expect(busy(run)).toBe(1);
        await expectScanningAgain(run);
      } finally {
        await stop(run);
      }
    });
  }
});

describe('maxStreamingUploads 0: no upload takes a connection before all of it is here', () => {
  for (const framework of FRAMEWORKS) {
    it(framework, async () => {
      const run = await start(framework, 'fail-open', server, { maxStreamingUploads: 0 });
      const reqmods = () => server.requests.filter((r) => r.method === 'REQMOD' && !isCheck(r)).length;
      try {
        const before = reqmods();
        const first = holdingUpload(run);
        await until(() => arriving(run) === 1, 5_000, 'the upload arriving');
        // Well past the hold rule (200 KB at once): still no connection, nothing sent to ICAP.
        const r = await upload(run, EICAR);
        expect(r.status).toBe(403);
        expect(busy(run)).toBe(0);
        expect(reqmods()).toBe(before + 1);
        const logs = run.logs.length;
        first.write(Buffer.alloc(DECLARED - FIRST, 0x62));
        await until(() => run.logs.length > logs, 5_000, "the held upload's record");
        expect(run.logs.at(-1)?.action).toBe('ICAP_PASSED');
        expect(reqmods()).toBe(before + 2);
        await expectScanningAgain(run);
      } finally {
        await stop(run);
      }
    });
  }
});

describe('where every connection may carry an arriving body, HTTP clients that hold them all: 503, never the failure action', () => {
  for (const framework of FRAMEWORKS) {
    for (const failAction of FAIL_ACTIONS) {
      it(`${framework}, ${failAction}`, async () => {
        const run = await start(framework, failAction, server, NO_SHARE_KEPT);
        try {
          holdingUpload(run);
          holdingUpload(run);
          await until(() => busy(run) === 2, 5_000, 'both connections held');
          for (const body of [EICAR, Buffer.from('hello')]) {
            const r = await upload(run, body);
            expect(r.status).toBe(503);
            expect(r.handled).toEqual([]);
            expect(r.log.action).toBe('ICAP_FAILED');
            expect(r.log.error_code).toBe('ICAP_ERR_SATURATED');
            expect(r.log.error_message).toMatch(/held by uploads whose HTTP clients were still sending/);
            expect(r.log.significance).not.toContain('FAIL_OPEN');
            expect(r.log.fail_action).toBe('fail-closed');
          }
          // Busy is not broken: the server's health is untouched.
          const [status] = run.app.engine.status();
          expect(status?.state).not.toBe('suspended');
          expect(status?.consecutiveFailures).toBe(0);
          await expectScanningAgain(run);
        } finally {
          await stop(run);
        }
      });
    }
  }
});

describe("a suspect server's health check does not wait behind HTTP clients holding the pool", () => {
  for (const framework of FRAMEWORKS) {
    for (const failAction of FAIL_ACTIONS) {
      it(`${framework}, ${failAction}: the check is answered on a connection of its own, the server stays up`, async () => {
        const run = await start(framework, failAction, server, NO_SHARE_KEPT);
        const checksBefore = server.requests.filter(isCheck).length;
        const failures = run.logs.length;
        try {
          // One connection held; the other taken by an upload the scanner will answer 500 once it
          // has it all (a failure the upload provokes: with failureLimit 1, a check follows).
          holdingUpload(run);
          await until(() => busy(run) === 1, 5_000, 'the first connection held');
          const trigger = holdingUpload(run, 'error');
          await until(() => busy(run) === 2, 5_000, 'the second connection taken');
          // A third upload, complete, waits for a connection: it takes the one the 500 frees.
          const third = upload(run, Buffer.from('third'));
          await until(() => pending(run) === 1, 5_000, 'the third upload queued');
          trigger.write(Buffer.alloc(DECLARED - FIRST, 0x62));
          // (The third upload's record may come first: it gets the connection the 500 frees.)
          const failed = () => run.logs.slice(failures).filter((l) => l.error_code !== undefined);
          await until(() => failed().length > 0, 5_000, "the 500'd upload's record");
          expect(failed().map((l) => l.error_code)).toEqual(['ICAP_ERR_SERVER_STATUS']);
          await until(() => server.requests.filter(isCheck).length > checksBefore, 5_000, 'the health check');
          const check = server.requests.filter(isCheck).at(-1)!;
          // Not on any of the pool's connections: those were all held.
          const pooled = new Set(
            server.requests.filter((r) => r.method === 'REQMOD' && !isCheck(r)).map((r) => r.connectionId),
          );
          expect(pooled.has(check.connectionId)).toBe(false);
          // The check's result reached the engine (answered: the server is known to be up).
          await until(() => run.app.engine.status()[0]?.state !== 'unknown', 5_000, "the check's result");
          // The check was answered: the server is not suspended, though every connection is busy.
          const [status] = run.app.engine.status();
          expect(status?.state).toBe('up');
          expect(status?.suspensions).toBe(0);
          expect((await third).status).toBe(200);
          await expectScanningAgain(run);
        } finally {
          await stop(run);
        }
      });
    }
  }
});

type Pace = 'pause' | 'trickle' | 'short pause';

/** What a slow upload sends at once: past holdBodySize, fast; then far below minBodyRate on average. */
const START = 100_000;

/**
 * An upload of START bytes at once, then (`pause`) nothing until the server's limit has passed,
 * or (`trickle`) a byte every 100 ms; then the rest, `tail` at its end. `scan` is its X-Scan
 * header (the server's limit). The HTTP answer's status.
 */
async function slowUpload(run: Run, how: Pace, tail: Buffer, scan: string): Promise<number> {
  const body = Buffer.concat([Buffer.alloc(START, 0x61), Buffer.alloc(1_000, 0x62), tail]);
  const u = new URL(run.app.url);
  const socket = connect(Number(u.port), u.hostname);
  run.holders.push(socket);
  socket.on('error', () => {});
  let reply = '';
  socket.on('data', (d: Buffer) => {
    reply += d.toString('latin1');
  });
  const answered = () => reply.includes('\r\n\r\n');
  socket.write(
    `POST /raw HTTP/1.1\r\nHost: ${u.host}\r\nContent-Type: application/octet-stream\r\n` +
      `X-Scan: ${scan}\r\nContent-Length: ${body.length}\r\n\r\n`,
  );
  socket.write(body.subarray(0, START));
  let sent = START;
  // Past the server's limit (1.5 s; 300 ms), until the scanner has given up: the connection
  // icapkit sent the upload on was busy, and is no longer. Bounded: an answer before the rest
  // ends it too.
  let held = false;
  const gaveUp = () => {
    const now = busy(run);
    held ||= now > 0;
    return held && now === 0;
  };
  const until = Date.now() + 2_500;
  while (Date.now() < until && !answered() && !gaveUp()) {
    await new Promise((r) => setTimeout(r, 100));
    if (how === 'trickle' && sent < START + 1_000 && !socket.destroyed)
      socket.write(body.subarray(sent, ++sent));
  }
  if (!socket.destroyed) socket.write(body.subarray(sent));
  const deadline = Date.now() + 5_000;
  while (!answered() && !socket.destroyed && Date.now() < deadline)
    await new Promise((r) => setTimeout(r, 10));
  const status = /^HTTP\/1\.1 (\d{3})/.exec(reply)?.[1];
  return status === undefined ? 0 : Number(status);
}

/** The scanner's limit each pace runs into. */
const LIMIT = { pause: 'idle-limit', trickle: 'total-limit', 'short pause': 'short-idle-limit' } as const;
const PACES = ['pause', 'trickle', 'short pause'] as const;

describe('a scanner that gives up on an upload still arriving slowly: the whole body once more, never the failure action', () => {
  for (const framework of FRAMEWORKS) {
    for (const failAction of FAIL_ACTIONS) {
      for (const how of PACES) {
        it(`${framework}, ${failAction}: a client that ${how === 'trickle' ? 'trickles' : 'pauses'} past the scanner's ${how === 'short pause' ? '300 ms ' : ''}limit`, async () => {
          const run = await start(framework, failAction, server);
          try {
            for (const [tail, expected] of [
              [EICAR, 403],
              [Buffer.from('clean end'), 200],
            ] as const) {
              const logs = run.logs.length;
              const status = await slowUpload(run, how, tail, LIMIT[how]);
              await until(() => run.logs.length > logs, 5_000, 'the icap_log record');
              const log = run.logs.at(-1)!;
              expect(status).toBe(expected);
              // The first attempt: given up on by the scanner while the client was sending.
              expect(log.request_logs.map((e) => e.error_code)).toEqual(['ICAP_ERR_CLOSED', undefined]);
              // (Within the first second nothing says the client was slow: no such words then.)
              if (how !== 'short pause')
                expect(log.request_logs[0]?.error_message).toMatch(/the upload was still arriving, slowly/);
              expect(log.significance).not.toContain('FAIL_OPEN');
              expect(log.error_code).toBeUndefined();
              if (expected === 403) {
                expect(run.app.seen).toEqual([]);
                expect(log.action).toBe('ICAP_BLOCKED');
              } else {
                // Delivered whole, as scanned the second time.
                expect(run.app.seen.map((x) => x.raw?.length)).toEqual([START + 1_000 + tail.length]);
                expect(run.app.seen[0]?.raw?.subarray(-tail.length).toString()).toBe('clean end');
                expect(log.action).toBe('ICAP_PASSED');
              }
            }
            // Provoked by the upload: it counts, but the server is never suspended for it.
            const [health] = run.app.engine.status();
            expect(health?.suspensions).toBe(0);
            await expectScanningAgain(run);
          } finally {
            await stop(run);
          }
        });
      }
    }
  }
});

describe('a server that fails the whole body too: that failure is its own, the failure action only if the server fails its health check too', () => {
  for (const framework of FRAMEWORKS) {
    for (const failAction of FAIL_ACTIONS) {
      for (const check of ['answered', 'failed'] as const) {
        it(`${framework}, ${failAction}, the health check ${check}`, async () => {
          // (Two resets in a row must not suspend the server before the second attempt.)
          const run = await start(framework, failAction, server, { health: { failureLimit: 5 } });
          checksFail = check === 'failed';
          try {
            const logs = run.logs.length;
            const status = await slowUpload(run, 'pause', Buffer.from('clean end'), 'reset-always');
            await until(() => run.logs.length > logs, 5_000, 'the icap_log record');
            const log = run.logs.at(-1)!;
            expect(log.request_logs.map((e) => e.error_code)).toEqual(['ICAP_ERR_RESET', 'ICAP_ERR_RESET']);
            expect(log.error_code).toBe('ICAP_ERR_RESET');
            if (failAction === 'fail-open' && check === 'failed') {
              // Broken for everyone: the failure action.
              expect(log.fail_action).toBe('fail-open');
              expect(status).toBe(200);
              expect(log.significance).toContain('FAIL_OPEN');
              expect(run.app.seen).toHaveLength(1);
            } else {
              // Under fail-open, a server that answers its check failed on this upload: 503.
              expect(log.fail_action).toBe('fail-closed');
              expect(status).toBe(503);
              expect(run.app.seen).toEqual([]);
              if (failAction === 'fail-open') expect(log.significance).toContain('CONTENT_PROVOKED');
            }
          } finally {
            checksFail = false;
            await stop(run);
          }
        });
      }
    }
  }
});

describe('a client that goes away while its upload waits for a second chance: the client error, never the failure action', () => {
  for (const framework of FRAMEWORKS) {
    it(`${framework}, fail-open`, async () => {
      const run = await start(framework, 'fail-open', server);
      try {
        const logs = run.logs.length;
        const closes = () =>
          server.requests.filter((r) => r.httpRequest?.headers.get('x-scan') === 'short-idle-limit').length;
        const before = closes();
        // The scanner gives up after 300 ms without a byte; the exchange then waits for the rest.
        const socket = holdingUpload(run, 'short-idle-limit');
        await until(() => closes() > before, 5_000, 'the REQMOD the scanner gives up on');
        // Given up on: its connection is gone, the exchange waits for the rest without one.
        await until(() => busy(run) === 0, 5_000, 'the connection the scanner closed');
        socket.destroy();
        await until(() => run.logs.length > logs, 5_000, 'the icap_log record');
        const log = run.logs.at(-1)!;
        // (Hono hears it as the request's abort, the others as the body's end.)
        expect(['ICAP_ERR_BODY_SOURCE', 'ICAP_ERR_ABORTED']).toContain(log.error_code);
        expect(log.significance).not.toContain('FAIL_OPEN');
        expect(log.request_logs.map((e) => e.error_code)).toEqual(['ICAP_ERR_CLOSED']);
        expect(run.app.seen).toEqual([]);
        await expectScanningAgain(run);
      } finally {
        await stop(run);
      }
    });
  }
});
