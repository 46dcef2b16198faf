/**
 * Server health, retries and failover against the embedded ICAP server's scripted faults:
 * a request whose attempt failed before an answer goes to the next healthy server or pool (no
 * 503 while one can answer); hung and trickling servers are caught by the no-progress
 * watchdog and suspended (a stall once the request went out, like a 5xx answer, may be the
 * upload's doing: the server is suspended once its health check, a REQMOD of a fixed body,
 * fails too); a suspended server comes back through a half-open trial with an exponential
 * backoff; a saturated pool spills over. Every wait polls with a deadline.
 */
import * as dc from 'node:diagnostics_channel';
import { createServer, type Server, type Socket } from 'node:net';
import {
  createEngine,
  type IcapEngine,
  type IcapLog,
  type IcapProfile,
  type PinoLike,
  type ServerStateMessage,
} from '@icapkit/core';
import {
  eicar,
  type Fault,
  type IcapTestServer,
  type RecordedRequest,
  startIcapServer,
} from '@icapkit/testing';
import { Registry } from 'prom-client';
import { afterEach, describe, expect, it } from 'vitest';
import { type App, type Framework, startApp } from '../conformance/apps.js';
import { refusingPort } from '../support/c-icap.js';
import { send } from '../support/http-client.js';
import { postHead, rawExchange } from '../support/raw-http.js';
import { type ScanServer, startScanServer } from '../support/scan-server.js';

const FRAMEWORKS: Framework[] = ['express5', 'fastify', 'koa3'];
const OCTETS = { 'content-type': 'application/octet-stream' };

function text(n: number, seed = 0): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = 0x61 + ((i + seed) % 26);
  return b;
}

/** Polls `cond` every 10 ms until it holds; fails with `what` after `ms`. */
async function waitFor(cond: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const toClose: Array<{ close(): Promise<unknown> | unknown }> = [];
afterEach(async () => {
  for (const c of toClose.splice(0).reverse()) await c.close();
});

async function icapServer(script?: (r: RecordedRequest) => Fault | undefined): Promise<IcapTestServer> {
  const s = await startIcapServer({ recordBodies: false, script });
  toClose.push(s);
  return s;
}

/** A server that accepts connections and never reads or answers (a SIGSTOPped scanner). */
async function frozenServer(): Promise<{ url: string; sockets: Set<Socket> }> {
  const sockets = new Set<Socket>();
  const server: Server = createServer((s) => {
    sockets.add(s);
    s.on('error', () => {});
    s.on('close', () => sockets.delete(s));
    s.pause();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  toClose.push({
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  });
  const port = (server.address() as { port: number }).port;
  return { url: `icap://127.0.0.1:${port}`, sockets };
}

async function engineServer(profile: IcapProfile): Promise<{ engine: IcapEngine; app: ScanServer }> {
  const engine = createEngine(profile);
  const app = await startScanServer(engine);
  toClose.push(engine, app);
  return { engine, app };
}

function upload(url: string, body: Buffer, path = '/upload/file.bin') {
  return send(url, path, { body, headers: { 'content-type': 'application/octet-stream' } });
}

const reqmod = (fault: Fault) => (r: RecordedRequest) => (r.method === 'OPTIONS' ? undefined : fault);

/** The ports of the servers each record's attempts went to, and their error codes. */
function attempts(log: IcapLog): Array<{ port: number; error: string | undefined }> {
  return log.request_logs.map((e) => ({ port: e.icap_server_port, error: e.error_code }));
}

function portOf(url: string): number {
  return Number(new URL(url.replace(/^icap/, 'http')).port);
}

describe('pool A failing, pool B healthy: every request answered by pool B, no 503', () => {
  const modes: Array<{ name: string; poolA: () => Promise<string[]>; codes: string[] }> = [
    {
      name: 'refused connections',
      poolA: async () => [
        `icap://127.0.0.1:${await refusingPort()}`,
        `icap://127.0.0.1:${await refusingPort()}`,
      ],
      codes: ['ICAP_ERR_CONNECT'],
    },
    {
      name: 'resets before any answer (OPTIONS still answered)',
      poolA: async () => [
        (await icapServer(reqmod({ kind: 'reset', when: 'on-head' }))).url(),
        (await icapServer(reqmod({ kind: 'reset', when: 'mid-body' }))).url(),
      ],
      codes: ['ICAP_ERR_RESET', 'ICAP_ERR_CLOSED'],
    },
    {
      name: 'hung servers (one answers nothing at all, one reads requests but never answers)',
      poolA: async () => [(await frozenServer()).url, (await icapServer(reqmod({ kind: 'hang' }))).url()],
      codes: ['ICAP_ERR_STALLED', 'ICAP_ERR_TIMEOUT'],
    },
  ];
  for (const framework of FRAMEWORKS) {
    for (const mode of modes) {
      it(`${framework}: ${mode.name}`, async () => {
        const poolB = await icapServer();
        const poolA = await mode.poolA();
        const logs: IcapLog[] = [];
        const app: App = await startApp(framework, {
          name: 'failover',
          poolGroup: {
            pools: [
              { name: 'A', priority: 20, servers: poolA },
              { name: 'B', priority: 10, servers: [poolB.url()] },
            ],
          },
          serviceUri: '/avscan',
          // ioTimeout left at its default (= responseTimeout): the stall watchdog catches hangs.
          responseTimeout: 3000,
          connection: { stallTimeout: 300 },
          health: { failureLimit: 2, probeInterval: 60_000 },
          onLog: (l) => logs.push(l),
        });
        toClose.push(app);
        const bodies = Array.from({ length: 12 }, (_, i) =>
          i % 4 === 3 ? Buffer.concat([text(2000, i), eicar()]) : text(1000 + i * 3000, i),
        );
        // Six at once (they all meet pool A before it is suspended), then six more.
        const replies = [
          ...(await Promise.all(
            bodies.slice(0, 6).map((b) => send(app.url, '/raw', { body: b, headers: OCTETS })),
          )),
          ...(await Promise.all(
            bodies.slice(6).map((b) => send(app.url, '/raw', { body: b, headers: OCTETS })),
          )),
        ];
        expect(replies.map((r) => r.status)).toEqual(bodies.map((_, i) => (i % 4 === 3 ? 403 : 200)));
        // The handler got exactly the clean bodies, each whole.
        const clean = bodies.filter((_, i) => i % 4 !== 3).map((b) => b.toString('hex'));
        expect(app.seen.map((s) => s.raw!.toString('hex')).sort()).toEqual(clean.sort());
        // Every decision came from pool B; the attempts on pool A failed with the mode's errors.
        const portB = poolB.port;
        for (const log of logs) {
          const tries = attempts(log);
          expect(tries.at(-1)!.port).toBe(portB);
          for (const t of tries.slice(0, -1)) expect(mode.codes).toContain(t.error);
        }
        // (A server that hangs once it has the request is suspended when its health check fails.)
        await waitFor(
          () => app.engine.status().every((s) => s.pool !== 'A' || s.state === 'suspended'),
          10_000,
          'pool A suspended',
        );
        const status = app.engine.status();
        expect(status.filter((s) => s.pool === 'A').map((s) => s.state)).toEqual(['suspended', 'suspended']);
        expect(status.find((s) => s.pool === 'B')!.consecutiveFailures).toBe(0);
      }, 30_000);
    }
  }
});

describe('timeouts and stalls count toward health', () => {
  it('a SIGSTOPped-like server (accepts, answers nothing) with ioTimeout at its default: suspended, requests retried', async () => {
    const frozen = await frozenServer();
    const good = await icapServer();
    const { engine, app } = await engineServer({
      name: 'frozen',
      poolGroup: { pools: [{ name: 'p', servers: [frozen.url, good.url()], loadBalancing: 'round-robin' }] },
      serviceUri: '/avscan',
      // stallTimeout and ioTimeout left at their defaults: a third of responseTimeout, and responseTimeout.
      responseTimeout: 3000,
      health: { failureLimit: 2, probeInterval: 60_000 },
    });
    expect(engine.profile.stallTimeout).toBe(1000);
    expect(engine.profile.ioTimeout).toBe(3000);
    for (let i = 0; i < 4; i++) {
      const r = await upload(app.url, text(20_000, i));
      expect(r.status).toBe(200);
    }
    expect(app.seen).toHaveLength(4);
    const frozenStatus = engine.status().find((s) => s.server === frozen.url)!;
    expect(frozenStatus.state).toBe('suspended');
    expect(frozenStatus.suspensions).toBe(1);
    // The frozen server's attempts: its OPTIONS not answered within stallTimeout.
    const onFrozen = app.logs
      .flatMap((l) => l.request_logs)
      .filter((e) => e.icap_server_port === portOf(frozen.url));
    expect(onFrozen.map((e) => e.error_code)).toEqual(['ICAP_ERR_STALLED', 'ICAP_ERR_STALLED']);
    // Each of those requests was then answered by the good server, well within responseTimeout.
    for (const log of app.logs) expect(log.request_logs.at(-1)!.icap_server_port).toBe(good.port);
  }, 20_000);

  it('a server that reads the request and never answers stalls (ICAP_ERR_STALLED), is suspended, requests retried', async () => {
    const hung = await icapServer(reqmod({ kind: 'hang' }));
    const good = await icapServer();
    const { engine, app } = await engineServer({
      name: 'hung',
      poolGroup: {
        pools: [
          { name: 'A', priority: 2, servers: [hung.url()] },
          { name: 'B', priority: 1, servers: [good.url()] },
        ],
      },
      serviceUri: '/avscan',
      responseTimeout: 3000,
      connection: { stallTimeout: 250 },
      health: { failureLimit: 2, probeInterval: 60_000 },
    });
    const replies = await Promise.all([0, 1, 2].map((i) => upload(app.url, text(100_000, i))));
    expect(replies.map((r) => r.status)).toEqual([200, 200, 200]);
    // Stalled with the request: suspended once its health check (a REQMOD of its own) fails too.
    await waitFor(
      () => engine.status().find((s) => s.pool === 'A')!.state === 'suspended',
      10_000,
      'suspended',
    );
    const checks = hung.requests.filter((r) => r.httpRequest?.target === '/icapkit-health-check');
    expect(checks).toHaveLength(1);
    const codes = app.logs.flatMap((l) => l.request_logs).filter((e) => e.icap_server_port === hung.port);
    expect(codes.map((e) => e.error_code)).toEqual(codes.map(() => 'ICAP_ERR_STALLED'));
    // Once suspended, the hung server gets nothing more.
    const before = hung.requests.filter((r) => r.method === 'REQMOD').length;
    expect((await upload(app.url, text(10))).status).toBe(200);
    expect(hung.requests.filter((r) => r.method === 'REQMOD').length).toBe(before);
  }, 20_000);

  it('a server trickling its answer one byte at a time is suspended (ioTimeout never fires)', async () => {
    const trickle = await icapServer(reqmod({ kind: 'trickle', intervalMs: 40 }));
    const good = await icapServer();
    const { engine, app } = await engineServer({
      name: 'trickle',
      poolGroup: {
        pools: [
          { name: 'A', priority: 2, servers: [trickle.url()] },
          { name: 'B', priority: 1, servers: [good.url()] },
        ],
      },
      serviceUri: '/avscan',
      responseTimeout: 5000,
      connection: { stallTimeout: 400 },
      health: { failureLimit: 2, probeInterval: 60_000 },
    });
    for (let i = 0; i < 2; i++) expect((await upload(app.url, text(3000, i))).status).toBe(200);
    // Its health check trickles too: suspended once that times out.
    await waitFor(
      () => engine.status().find((s) => s.pool === 'A')!.state === 'suspended',
      10_000,
      'suspended',
    );
    expect((await upload(app.url, text(3000, 2))).status).toBe(200);
    const onTrickle = app.logs
      .flatMap((l) => l.request_logs)
      .filter((e) => e.icap_server_port === trickle.port);
    expect(onTrickle.map((e) => e.error_code)).toEqual(['ICAP_ERR_STALLED', 'ICAP_ERR_STALLED']);
  }, 20_000);

  it('responseTimeout running out while the server is waited for counts against it', async () => {
    const hung = await icapServer(reqmod({ kind: 'hang' }));
    const { engine, app } = await engineServer({
      name: 'timeout',
      poolGroup: hung.url(),
      serviceUri: '/avscan',
      responseTimeout: 400,
      // A stall watchdog longer than the whole budget: the request's own timeout ends it.
      connection: { stallTimeout: 5000, ioTimeout: 5000 },
      health: { failureLimit: 5 },
    });
    const r = await upload(app.url, text(2000));
    expect(r.status).toBe(503);
    expect(app.logs[0]!.error_code).toBe('ICAP_ERR_TIMEOUT');
    const s = engine.status()[0]!;
    expect(s.consecutiveFailures).toBe(1);
    expect(s.lastError).toMatch(/responseTimeout/);
  }, 20_000);

  it('a slow scan with no other server to go to is waited for (a stall is acted on only when a retry is possible)', async () => {
    const slow = await icapServer(reqmod({ kind: 'delay', ms: 600 }));
    const { engine, app } = await engineServer({
      name: 'slow-alone',
      poolGroup: slow.url(),
      serviceUri: '/avscan',
      responseTimeout: 5000,
      connection: { stallTimeout: 150 },
      health: { failureLimit: 1 },
    });
    const r = await upload(app.url, text(2000));
    expect(r.status).toBe(200);
    expect(app.logs[0]!.request_logs.map((e) => e.error_code)).toEqual([undefined]);
    expect(engine.status()[0]).toMatchObject({ state: 'up', consecutiveFailures: 0 });
  }, 20_000);

  it('a client pausing longer than stallTimeout in the middle of its body is not a stalled server', async () => {
    const good = await icapServer();
    const app = await startApp('express5', {
      name: 'slow-client',
      poolGroup: good.url(),
      serviceUri: '/avscan',
      responseTimeout: 3000,
      bodyTimeout: 2000,
      connection: { stallTimeout: 150 },
      health: { failureLimit: 1 },
    });
    toClose.push(app);
    const body = text(40_000, 7);
    const parts = [0, 1, 2, 3].map((i) => body.subarray(i * 10_000, (i + 1) * 10_000));
    const r = await rawExchange(
      app.url,
      [postHead('/raw', body.length), ...parts.flatMap((p, i) => (i < 3 ? [p, { pause: 400 }] : [p]))],
      { responses: 1 },
    );
    expect(r.responses[0]?.status).toBe(200);
    expect(app.seen[0]!.raw!.equals(body)).toBe(true);
    expect(app.engine.status()[0]).toMatchObject({ state: 'up', consecutiveFailures: 0 });
  }, 20_000);
});

describe('a threat verdict is never lost to a retry', () => {
  it('a block whose page breaks off after the head still blocks (fail-open, another server available)', async () => {
    const http = 'HTTP/1.1 403 Forbidden\r\nContent-Type: text/html\r\n\r\n';
    const broken = await icapServer(
      reqmod({
        kind: 'raw',
        response:
          'ICAP/1.0 200 OK\r\nISTag: "x"\r\nX-Infection-Found: Type=0; Resolution=2; Threat=Eicar-Test-Signature;\r\n' +
          `Encapsulated: res-hdr=0, res-body=${http.length}\r\n\r\n${http}400\r\n<html>blocked`,
      }),
    );
    const lenient = await icapServer(() => ({ kind: 'status', status: 500 }));
    const { engine, app } = await engineServer({
      name: 'verdict',
      poolGroup: {
        pools: [
          { name: 'A', priority: 2, servers: [broken.url()] },
          { name: 'B', priority: 1, servers: [lenient.url()] },
        ],
      },
      serviceUri: '/avscan',
      failAction: 'fail-open',
      responseTimeout: 3000,
      connection: { ioTimeout: 200, stallTimeout: 200 },
    });
    const r = await upload(app.url, text(3000));
    expect(r.status).toBe(403);
    expect(app.seen).toHaveLength(0);
    expect(app.logs[0]!.action).toBe('ICAP_BLOCKED');
    expect(app.logs[0]!.request_logs.map((e) => e.icap_server_port)).toEqual([broken.port]);
    expect(engine.status().find((s) => s.pool === 'B')!.consecutiveFailures).toBe(0);
  }, 20_000);
});

describe('circuit breaker: suspension, half-open trial, backoff', () => {
  it('exactly one trial after the backoff, the backoff doubles on a failed trial, consecutive successes close it; each transition reported once', async () => {
    let failing = true;
    const flaky = await icapServer((r) =>
      r.method !== 'OPTIONS' && failing ? { kind: 'status', status: 500 } : undefined,
    );
    const good = await icapServer();
    const logged: Array<{ obj: Record<string, unknown>; msg: string | undefined }> = [];
    const logger: PinoLike = {
      debug: () => {},
      info: (obj, msg) => logged.push({ obj: obj as Record<string, unknown>, msg }),
      warn: (obj, msg) => logged.push({ obj: obj as Record<string, unknown>, msg }),
      error: () => {},
    };
    const published: Array<ServerStateMessage & { at: number }> = [];
    const onState = (m: unknown) => published.push({ ...(m as ServerStateMessage), at: performance.now() });
    dc.subscribe('icapkit:server:state', onState);
    toClose.push({ close: () => dc.unsubscribe('icapkit:server:state', onState) });
    const registry = new Registry();
    const { engine, app } = await engineServer({
      name: 'breaker',
      poolGroup: {
        pools: [
          { name: 'A', priority: 2, servers: [flaky.url()] },
          { name: 'B', priority: 1, servers: [good.url()] },
        ],
      },
      serviceUri: '/avscan',
      responseTimeout: 3000,
      logger,
      metrics: { registry },
      // Backoffs long enough that no probe slips in between a step and its check on a busy machine.
      health: { failureLimit: 1, probeInterval: 400, maxProbeInterval: 10_000, successThreshold: 2 },
    });
    const flakyStatus = () => engine.status().find((s) => s.pool === 'A')!;
    // A 5xx may be the upload's doing: each failure is confirmed by a health check (a REQMOD to
    // /icapkit-health-check, answered 500 too) before the server is suspended; not counted here.
    const reqmods = () =>
      flaky.requests.filter((r) => r.method === 'REQMOD' && r.httpRequest?.target !== '/icapkit-health-check')
        .length;
    const transitions = () => published.filter((m) => m.profile === 'breaker');

    // 1. The first failure suspends it (failureLimit 1); the request is answered by pool B.
    expect((await upload(app.url, text(100))).status).toBe(200);
    await waitFor(() => flakyStatus().state === 'suspended', 5000, 'the first suspension');
    expect(flakyStatus().backoff).toBe(400);

    // 2. While suspended, nothing goes to it.
    expect((await upload(app.url, text(100))).status).toBe(200);
    expect(reqmods()).toBe(1);

    // 3. After the backoff the OPTIONS probe succeeds: half-open, not up.
    await waitFor(() => flakyStatus().state === 'half-open', 5000, 'half-open after the first backoff');

    // 4. Half-open: of several requests at once, exactly one is the trial; it fails (500), the
    //    request goes on to pool B, the server is suspended again with the backoff doubled.
    const burst = await Promise.all([0, 1, 2, 3].map((i) => upload(app.url, text(100, i))));
    expect(burst.map((r) => r.status)).toEqual([200, 200, 200, 200]);
    expect(reqmods()).toBe(2);
    await waitFor(() => flakyStatus().state === 'suspended', 5000, 'the second suspension');
    expect(flakyStatus().backoff).toBe(800);

    // 5. The next trial fails too: 1600.
    await waitFor(() => flakyStatus().state === 'half-open', 5000, 'half-open after the second backoff');
    expect((await upload(app.url, text(100))).status).toBe(200);
    expect(reqmods()).toBe(3);
    await waitFor(() => flakyStatus().state === 'suspended', 5000, 'the third suspension');
    expect(flakyStatus().backoff).toBe(1600);

    // 6. The server heals: the next trial succeeds, but one success does not close the breaker.
    failing = false;
    await waitFor(() => flakyStatus().state === 'half-open', 8000, 'half-open after the third backoff');
    expect((await upload(app.url, text(100))).status).toBe(200);
    expect(reqmods()).toBe(4);
    expect(flakyStatus()).toMatchObject({ state: 'half-open', trialSuccesses: 1 });
    // The second consecutive success does.
    expect((await upload(app.url, text(100))).status).toBe(200);
    expect(reqmods()).toBe(5);
    expect(flakyStatus()).toMatchObject({ state: 'up', consecutiveFailures: 0 });
    const last = app.logs.at(-1)!;
    expect(last.request_logs.map((e) => e.icap_server_port)).toEqual([flaky.port]);

    // Each transition reported once, in order, on the channel and in the logger alike.
    const seq = transitions().map(
      (m) => `${m.from}->${m.to}${m.backoff === undefined ? '' : `@${m.backoff}`}`,
    );
    expect(seq).toEqual([
      'up->suspended@400',
      'suspended->half-open',
      'half-open->suspended@800',
      'suspended->half-open',
      'half-open->suspended@1600',
      'suspended->half-open',
      'half-open->up',
    ]);
    const fromLogger = logged
      .filter((l) => l.obj.icapkit === 'server-state')
      .map((l) => `${l.obj.from}->${l.obj.to}${l.obj.backoff === undefined ? '' : `@${l.obj.backoff}`}`);
    expect(fromLogger).toEqual(seq);
    // Each probe came no sooner than its backoff after the suspension. The times are taken where
    // the messages arrive, and the suspension's message is published after its probe timer is
    // set (a loaded machine delayed it by 3 ms once): 10% of the backoff is allowed for that,
    // which still fails a probe sent at once or after half the backoff.
    const t = transitions();
    for (const [i, m] of t.entries()) {
      if (m.to !== 'suspended') continue;
      expect(t[i + 1]!.to).toBe('half-open');
      expect(t[i + 1]!.at - m.at).toBeGreaterThanOrEqual(m.backoff! * 0.9);
    }
    expect(logged.find((l) => l.obj.to === 'suspended')!.msg).toContain(flaky.url());
    expect(flakyStatus().suspensions).toBe(3);
    // And counted once each in Prometheus.
    const prom = await registry.getSingleMetricAsString('icapkit_icap_server_transitions_total');
    const count = (state: string) => Number(new RegExp(`state="${state}"\\} (\\d+)`).exec(prom)?.[1] ?? 0);
    expect([count('suspended'), count('half-open'), count('up')]).toEqual([3, 3, 1]);
  }, 30_000);

  it('a slow success that started before a suspension does not revive the server', async () => {
    let mode: 'slow' | 'fail' = 'slow';
    const server = await icapServer((r) =>
      r.method === 'OPTIONS'
        ? undefined
        : mode === 'slow'
          ? { kind: 'delay', ms: 300 }
          : { kind: 'status', status: 500 },
    );
    const good = await icapServer();
    const { engine, app } = await engineServer({
      name: 'stale-success',
      poolGroup: {
        pools: [
          { name: 'A', priority: 2, servers: [server.url()] },
          { name: 'B', priority: 1, servers: [good.url()] },
        ],
      },
      serviceUri: '/avscan',
      responseTimeout: 3000,
      connection: { stallTimeout: 2000 },
      health: { failureLimit: 1, probeInterval: 60_000 },
    });
    const slow = upload(app.url, text(100, 1));
    await waitFor(() => server.requests.some((r) => r.method === 'REQMOD'), 5000, 'the slow request');
    mode = 'fail';
    expect((await upload(app.url, text(100, 2))).status).toBe(200);
    // A 500 the upload may have provoked: suspended once the health check fails too.
    await waitFor(
      () => engine.status().find((s) => s.pool === 'A')!.state === 'suspended',
      5000,
      'the suspension',
    );
    expect((await slow).status).toBe(200);
    expect(engine.status().find((s) => s.pool === 'A')!.state).toBe('suspended');
  }, 20_000);
});

describe('a saturated pool spills over', () => {
  it('all connections busy for queueTimeout: the request goes to the next pool, the busy server stays healthy', async () => {
    const slow = await icapServer(reqmod({ kind: 'delay', ms: 3000 }));
    const good = await icapServer();
    const { engine, app } = await engineServer({
      name: 'saturated',
      poolGroup: {
        pools: [
          { name: 'A', priority: 2, servers: [slow.url()] },
          { name: 'B', priority: 1, servers: [good.url()] },
        ],
      },
      serviceUri: '/avscan',
      responseTimeout: 10_000,
      connection: { maxConnections: 2, queueTimeout: 150, stallTimeout: 5000 },
    });
    // Two slow scans hold both connections to pool A.
    const holders = [upload(app.url, text(500, 1)), upload(app.url, text(500, 2))];
    let holdersDone = false;
    void Promise.all(holders).then(() => {
      holdersDone = true;
    });
    await waitFor(
      () => engine.status().find((s) => s.pool === 'A')!.connections.busy === 2,
      5000,
      'both connections of pool A busy',
    );
    const others = await Promise.all([3, 4, 5].map((i) => upload(app.url, text(500, i))));
    expect(others.map((r) => r.status)).toEqual([200, 200, 200]);
    // Answered by pool B after the bounded wait, before the slow scans end.
    expect(holdersDone).toBe(false);
    const spilled = app.logs.filter((l) => l.request_logs.at(-1)!.icap_server_port === good.port);
    expect(spilled).toHaveLength(3);
    for (const l of spilled)
      expect(attempts(l)).toEqual([
        { port: slow.port, error: 'ICAP_ERR_SATURATED' },
        { port: good.port, error: undefined },
      ]);
    expect((await Promise.all(holders)).map((r) => r.status)).toEqual([200, 200]);
    // Busy is not broken.
    expect(engine.status().find((s) => s.pool === 'A')).toMatchObject({
      state: 'up',
      consecutiveFailures: 0,
    });
  }, 20_000);

  it('with no other server to go to, a request waits for the busy server (no 503 after queueTimeout)', async () => {
    const slow = await icapServer(reqmod({ kind: 'delay', ms: 600 }));
    const { engine, app } = await engineServer({
      name: 'saturated-alone',
      poolGroup: slow.url(),
      serviceUri: '/avscan',
      responseTimeout: 10_000,
      connection: { maxConnections: 1, queueTimeout: 100, stallTimeout: 5000 },
    });
    const holder = upload(app.url, text(500, 1));
    await waitFor(() => engine.status()[0]!.connections.busy === 1, 5000, 'the connection busy');
    const r = await upload(app.url, text(500, 2));
    expect(r.status).toBe(200);
    expect(app.logs.at(-1)!.request_logs.map((e) => e.error_code)).toEqual([undefined]);
    expect((await holder).status).toBe(200);
    expect(slow.requests.filter((q) => q.method === 'REQMOD')).toHaveLength(2);
    expect(engine.status()[0]).toMatchObject({ state: 'up', consecutiveFailures: 0 });
  }, 20_000);
});

describe('health and retry options', () => {
  it('defaults follow responseTimeout and connectTimeout; invalid values name their field', () => {
    const base = { name: 'opts', poolGroup: 'icap://127.0.0.1:1', serviceUri: '/avscan' };
    const engine = createEngine({ ...base, responseTimeout: 9000, connection: { connectTimeout: 1000 } });
    toClose.push(engine);
    expect(engine.profile).toMatchObject({
      stallTimeout: 3000,
      queueTimeout: 1000,
      failureLimit: 3,
      probeInterval: 5000,
      maxProbeInterval: 60_000,
      successThreshold: 3,
    });
    for (const [over, field] of [
      [{ connection: { stallTimeout: 0 } }, 'profile.connection.stallTimeout'],
      [{ connection: { queueTimeout: 1.5 } }, 'profile.connection.queueTimeout'],
      [{ health: { successThreshold: 0 } }, 'profile.health.successThreshold'],
      [{ health: { maxProbeInterval: 'soon' } }, 'profile.health.maxProbeInterval'],
      [{ health: { backoff: 1 } }, 'profile.health'],
    ] as Array<[Partial<IcapProfile>, string]>) {
      let caught: unknown;
      try {
        createEngine({ ...base, ...over });
      } catch (err) {
        caught = err;
      }
      expect(caught).toMatchObject({ code: 'ICAP_ERR_INVALID_PROFILE' });
      expect((caught as Error).message).toContain(field);
    }
  });
});
