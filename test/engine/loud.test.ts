/**
 * Loud by default. Without a logger or onLog in the profile, a server suspended or back up and
 * the first ICAP failure of a burst are reported once each through process warnings (type
 * IcapkitWarning, stable ICAP_WARN_* codes), later failures summed up at most once per interval;
 * with a logger or onLog, no process warning at all. The start-up check (engine.ready(),
 * Express and Koa mw.ready(), Fastify's ready()) sends OPTIONS to every server and per
 * `startupCheck` rejects naming each server that did not answer, warns, or sends nothing; and
 * status() says `unknown` for a server until it has answered. Every wait polls with a deadline.
 */
import {
  createEngine,
  ICAP_WARNING_TYPE,
  type IcapLog,
  type IcapProfile,
  IcapWarningCodes,
  type PinoLike,
  type StartupCheckError,
  type StartupReport,
} from '@icapkit/core';
import { icap as expressIcap } from '@icapkit/express';
import { icap as fastifyIcap } from '@icapkit/fastify';
import { icap as koaIcap } from '@icapkit/koa';
import { type Fault, type IcapTestServer, type RecordedRequest, startIcapServer } from '@icapkit/testing';
import Fastify from 'fastify';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { ProcessAlerts } from '../../packages/core/src/engine/alerts.js';
import { type Framework, startApp } from '../conformance/apps.js';
import { refusingPort } from '../support/c-icap.js';
import { send } from '../support/http-client.js';
import { startScanServer } from '../support/scan-server.js';

const OCTETS = { 'content-type': 'application/octet-stream' };

async function waitFor(cond: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Lets process.nextTick callbacks (where emitWarning delivers) and timers of 0 ms run. */
function settle(): Promise<void> {
  return new Promise((r) => setTimeout(r, 0));
}

const toClose: Array<{ close(): Promise<unknown> | unknown }> = [];
let warnings: Array<Error & { code?: string }> = [];
const onWarning = (w: Error & { code?: string }) => {
  if (w.name === ICAP_WARNING_TYPE) warnings.push(w);
};
beforeEach(() => {
  warnings = [];
  process.on('warning', onWarning);
});
afterEach(async () => {
  process.removeListener('warning', onWarning);
  for (const c of toClose.splice(0).reverse()) await c.close();
});

const byCode = (code: string) => warnings.filter((w) => w.code === code);

async function deadUrl(): Promise<string> {
  return `icap://127.0.0.1:${await refusingPort()}`;
}

async function icapServer(script?: (r: RecordedRequest) => Fault | undefined): Promise<IcapTestServer> {
  const s = await startIcapServer({ recordBodies: false, script });
  toClose.push(s);
  return s;
}

function upload(url: string, body = 'hello') {
  return send(url, '/raw', { body: Buffer.from(body), headers: OCTETS });
}

const FRAMEWORKS: Framework[] = ['express5', 'fastify', 'koa3'];

describe('without a logger: process warnings, once', () => {
  it.each(FRAMEWORKS)(
    '%s: a dead server gives one warning for the first failure and one for the suspension',
    async (framework) => {
      const dead = await deadUrl();
      const app = await startApp(framework, {
        name: 'loud',
        poolGroup: dead,
        serviceUri: '/avscan',
        health: { failureLimit: 2, probeInterval: 60_000 },
      });
      toClose.push(app);
      for (let i = 0; i < 5; i++) expect((await upload(app.url)).status).toBe(503);
      await waitFor(
        () =>
          byCode(IcapWarningCodes.SERVER_DOWN).length === 1 &&
          byCode(IcapWarningCodes.SCAN_FAILED).length === 1,
        5000,
        'the two warnings',
      );
      // The five 503s (two connect failures, three with every server suspended) said it once.
      for (let i = 0; i < 3; i++) expect((await upload(app.url)).status).toBe(503);
      await settle();
      expect(warnings.map((w) => w.code).sort()).toEqual([
        IcapWarningCodes.SCAN_FAILED,
        IcapWarningCodes.SERVER_DOWN,
      ]);
      const failed = byCode(IcapWarningCodes.SCAN_FAILED)[0]!;
      expect(failed.message).toContain(
        `on ICAP server ${dead}, answered 503 (fail-closed): ICAP_ERR_CONNECT`,
      );
      expect(failed.message).toContain('profile "loud"');
      expect(byCode(IcapWarningCodes.SERVER_DOWN)[0]!.message).toMatch(
        new RegExp(`ICAP server ${dead} suspended: 2 failures in a row`),
      );
    },
  );

  it("a server's reason phrase with control characters (ESC, backspaces) is written escaped, never raw to a terminal (campaign-ag F3)", async () => {
    const REASON = '\x1b[31;1mFAKE LOG LINE\x1b[0m\b\b\bok';
    const hostile = await icapServer((r) =>
      r.method !== 'OPTIONS' ? { kind: 'status', status: 500, reason: REASON } : undefined,
    );
    const logs: IcapLog[] = [];
    const quiet = createEngine({
      name: 'quiet',
      poolGroup: hostile.url(),
      serviceUri: '/avscan',
      onLog: (l) => logs.push(l),
    });
    const loud = createEngine({ name: 'loud', poolGroup: hostile.url(), serviceUri: '/avscan' });
    const apps = [await startScanServer(quiet), await startScanServer(loud)];
    toClose.push(quiet, loud, ...apps);
    for (const app of apps) expect((await upload(app.url)).status).toBe(503);
    await waitFor(() => byCode(IcapWarningCodes.SCAN_FAILED).length === 1, 5000, 'the warning');
    const message = byCode(IcapWarningCodes.SCAN_FAILED)[0]!.message;
    expect(message).toContain('answered 500 \\x1b[31;1mFAKE LOG LINE\\x1b[0m\\x08\\x08\\x08ok');
    expect(message).not.toMatch(/[\x00-\x1f\x7f]/);
    // The record's error message too (read by whatever prints it).
    expect(logs[0]?.error_message).not.toMatch(/[\x00-\x1f\x7f]/);
    expect(logs[0]?.error_message).toContain('\\x1b[31;1mFAKE');
  });

  it('a suspended server that comes back gives one recovery warning (a failed trial in between says nothing)', async () => {
    let failing = true;
    const flaky = await icapServer((r) =>
      r.method !== 'OPTIONS' && failing ? { kind: 'status', status: 500 } : undefined,
    );
    const engine = createEngine({
      name: 'recovering',
      poolGroup: flaky.url(),
      serviceUri: '/avscan',
      health: { failureLimit: 1, probeInterval: 100, maxProbeInterval: 400, successThreshold: 1 },
    });
    const app = await startScanServer(engine);
    toClose.push(engine, app);
    const state = () => engine.status()[0]!.state;

    // (A 500 may be the upload's doing: suspended once the server's health check gets a 500 too.)
    expect((await upload(app.url)).status).toBe(503);
    await waitFor(() => state() === 'suspended', 5000, 'suspended');
    await waitFor(() => byCode(IcapWarningCodes.SERVER_DOWN).length === 1, 5000, 'the suspension warning');
    // The probe succeeds, the trial fails: suspended again, no second warning.
    await waitFor(() => state() === 'half-open', 5000, 'half-open');
    expect((await upload(app.url)).status).toBe(503);
    await waitFor(() => state() === 'suspended', 5000, 'suspended again');
    failing = false;
    await waitFor(() => state() === 'half-open', 5000, 'half-open again');
    expect((await upload(app.url)).status).toBe(200);
    expect(state()).toBe('up');
    await waitFor(() => byCode(IcapWarningCodes.SERVER_UP).length === 1, 5000, 'the recovery warning');
    await settle();
    expect(byCode(IcapWarningCodes.SERVER_DOWN)).toHaveLength(1);
    expect(byCode(IcapWarningCodes.SERVER_UP)).toHaveLength(1);
    expect(byCode(IcapWarningCodes.SERVER_UP)[0]!.message).toContain(
      `ICAP server ${flaky.url()} is up again`,
    );
    // Both 503s were on the same server within the summary interval: one failure warning.
    expect(byCode(IcapWarningCodes.SCAN_FAILED)).toHaveLength(1);
  }, 20_000);

  it('failures after the first are summed up once per interval, per server; a quiet interval ends the burst', () => {
    vi.useFakeTimers();
    try {
      const got: Array<{ message: string; code: string }> = [];
      const alerts = new ProcessAlerts('p', {
        interval: 30_000,
        sink: (message, code) => got.push({ message, code }),
      });
      const failure = (server: string, code = 'ICAP_ERR_CONNECT'): IcapLog =>
        ({
          action: 'ICAP_FAILED',
          significance: ['ICAP_ERROR'],
          fail_action: 'fail-closed',
          http_response_code: 503,
          error_code: code,
          error_message: `cannot connect to ${server}`,
          request_logs: [{ icap_absolute_uri: `${server}/avscan` }],
        }) as unknown as IcapLog;
      for (let i = 0; i < 5; i++) alerts.record(failure('icap://a:1344'));
      alerts.record(failure('icap://b:1344'));
      // Not an ICAP-side failure (a slow client): nothing.
      alerts.record({ ...failure('icap://a:1344'), significance: ['CLIENT_TIMEOUT'] } as IcapLog);
      expect(got.map((g) => /on ICAP server (\S+),/.exec(g.message)?.[1])).toEqual([
        'icap://a:1344',
        'icap://b:1344',
      ]);
      vi.advanceTimersByTime(29_000);
      expect(got).toHaveLength(2);
      vi.advanceTimersByTime(1_000);
      // a: four more within the interval, one summary; b: nothing more, no summary.
      expect(got).toHaveLength(3);
      expect(got[2]!.message).toMatch(
        /4 more scans failed on ICAP server icap:\/\/a:1344 in the last 30 s; the last: ICAP_ERR_CONNECT/,
      );
      alerts.record(failure('icap://a:1344', 'ICAP_ERR_RESET'));
      vi.advanceTimersByTime(30_000);
      expect(got).toHaveLength(4);
      expect(got[3]!.message).toMatch(
        /1 more scan failed on ICAP server icap:\/\/a:1344 in the last 30 s; the last: ICAP_ERR_RESET/,
      );
      // A quiet interval ends the burst: the next failure is warned about on its own again.
      vi.advanceTimersByTime(30_000);
      expect(got).toHaveLength(4);
      alerts.record(failure('icap://a:1344', 'ICAP_ERR_RESET'));
      expect(got).toHaveLength(5);
      expect(got[4]!.message).toMatch(
        /a scan failed on ICAP server icap:\/\/a:1344, answered 503 \(fail-closed\): ICAP_ERR_RESET/,
      );
      expect(got.every((g) => g.code === IcapWarningCodes.SCAN_FAILED)).toBe(true);
      alerts.close();
      alerts.record(failure('icap://c:1344'));
      vi.advanceTimersByTime(60_000);
      expect(got).toHaveLength(5);
    } finally {
      vi.useRealTimers();
    }
  });

  it('scans that find no server because of a suspension already warned about are only summed up', () => {
    vi.useFakeTimers();
    try {
      const got: string[] = [];
      const alerts = new ProcessAlerts('p', { interval: 30_000, sink: (message) => got.push(message) });
      alerts.transition('icap://a:1344', {
        from: 'up',
        to: 'suspended',
        reason: '3 failures in a row',
        backoff: 5000,
        consecutiveFailures: 3,
      });
      const noServer = {
        action: 'ICAP_FAILED',
        significance: ['ICAP_ERROR'],
        http_response_code: 503,
        error_code: 'ICAP_ERR_NO_SERVER',
        error_message: 'no ICAP server is available',
        request_logs: [],
      } as unknown as IcapLog;
      alerts.record(noServer);
      alerts.record(noServer);
      expect(got).toHaveLength(1);
      expect(got[0]).toMatch(
        /ICAP server icap:\/\/a:1344 suspended: 3 failures in a row; next OPTIONS probe in 5000 ms/,
      );
      vi.advanceTimersByTime(30_000);
      expect(got[1]).toMatch(/2 scans failed before any ICAP server was tried in the last 30 s/);
      alerts.close();
    } finally {
      vi.useRealTimers();
    }
  });

  it('with a logger: no process warning; the failures, the suspension and the start-up check go to it', async () => {
    const sink: string[] = [];
    const engine = createEngine({
      name: 'quiet',
      poolGroup: await deadUrl(),
      serviceUri: '/avscan',
      health: { failureLimit: 1, probeInterval: 60_000 },
      startupCheck: 'warn',
      logger: recordingLogger(sink),
    });
    const app = await startScanServer(engine);
    toClose.push(engine, app);
    await engine.ready();
    for (let i = 0; i < 3; i++) expect((await upload(app.url)).status).toBe(503);
    await waitFor(
      () => sink.filter((m) => m === 'error icap: scan failed').length === 3,
      5000,
      'the records',
    );
    await settle();
    expect(warnings).toEqual([]);
    // The failed check counts as one failure (failureLimit 1: suspended), then it is reported.
    expect(sink.filter((m) => m.startsWith('warn icapkit'))).toEqual([
      expect.stringMatching(/^warn icapkit: ICAP server icap:\/\/127\.0\.0\.1:\d+ up -> suspended$/),
      expect.stringMatching(/^warn icapkit \(profile "quiet"\): 1 of 1 ICAP server did not answer OPTIONS/),
    ]);
  });

  it('with onLog: no process warning for failures and suspensions (the records go to onLog)', async () => {
    const actions: string[] = [];
    const engine = createEngine({
      name: 'quiet',
      poolGroup: await deadUrl(),
      serviceUri: '/avscan',
      health: { failureLimit: 1, probeInterval: 60_000 },
      startupCheck: 'warn',
      onLog: (l) => actions.push(l.action),
    });
    const app = await startScanServer(engine);
    toClose.push(engine, app);
    await engine.ready();
    for (let i = 0; i < 3; i++) expect((await upload(app.url)).status).toBe(503);
    await waitFor(() => actions.length === 3, 5000, 'the records');
    await settle();
    // startupCheck 'warn' without a logger has nowhere else to go: it stays a process warning.
    expect(warnings.map((w) => w.code)).toEqual([IcapWarningCodes.STARTUP_CHECK]);
  });
});

function recordingLogger(sink: string[]): PinoLike {
  return {
    debug: () => {},
    info: (_o, m) => sink.push(`info ${m}`),
    warn: (_o, m) => sink.push(`warn ${m}`),
    error: (_o, m) => sink.push(`error ${m}`),
  };
}

// ---------------------------------------------------------------- start-up check

type Mode = 'fail' | 'warn' | 'off';

interface Started {
  ready: Promise<unknown>;
  status: () => Array<{ state: string; consecutiveFailures: number }>;
}

/** The adapter's start-up check against `server`: mw.ready() (Express, Koa), app.ready() (Fastify). */
async function startUp(framework: 'express' | 'koa' | 'fastify', profile: IcapProfile): Promise<Started> {
  if (framework === 'fastify') {
    const app = Fastify();
    toClose.push(app);
    await app.register(fastifyIcap, profile);
    app.post('/raw', async () => 'ok');
    return { ready: app.ready(), status: () => app.icapEngine.status() };
  }
  const mw = framework === 'express' ? expressIcap(profile) : koaIcap(profile);
  toClose.push(mw);
  return { ready: mw.ready(), status: () => mw.engine.status() };
}

async function outcome(p: Promise<unknown>): Promise<{ value?: unknown; error?: unknown }> {
  return p.then(
    (value) => ({ value }),
    (error: unknown) => ({ error }),
  );
}

describe('start-up check: ready() per startupCheck', () => {
  const adapters = ['express', 'koa', 'fastify'] as const;
  const cases = adapters.flatMap((a) => (['fail', 'warn', 'off'] as Mode[]).map((m) => [a, m] as const));

  it.each(cases)('%s, %s: a dead port', async (adapter, mode) => {
    const dead = await deadUrl();
    const started = await startUp(adapter, {
      name: 'boot',
      poolGroup: dead,
      serviceUri: '/avscan',
      startupCheck: mode,
    });
    const result = await outcome(started.ready);
    if (mode === 'fail') {
      const err = result.error as StartupCheckError;
      expect(err).toBeInstanceOf(Error);
      expect(err.code).toBe('ICAP_ERR_STARTUP_CHECK');
      expect(err.message).toContain(`${dead} (ICAP_ERR_CONNECT: cannot connect to ICAP server ${dead}`);
      expect(err.message).toContain("startupCheck: 'warn' or 'off'");
      expect(err.servers).toMatchObject([{ server: dead, ok: false, code: 'ICAP_ERR_CONNECT' }]);
    } else {
      expect(result.error).toBeUndefined();
    }
    if (mode === 'warn') {
      await waitFor(() => byCode(IcapWarningCodes.STARTUP_CHECK).length === 1, 5000, 'the start-up warning');
      expect(byCode(IcapWarningCodes.STARTUP_CHECK)[0]!.message).toContain(
        `1 of 1 ICAP server did not answer OPTIONS /avscan: ${dead} (ICAP_ERR_CONNECT`,
      );
      if (adapter !== 'fastify') expect((result.value as StartupReport).ok).toBe(false);
    }
    await settle();
    if (mode !== 'warn') expect(byCode(IcapWarningCodes.STARTUP_CHECK)).toEqual([]);
    // Never answered: unknown, whatever the check did (a failed check counts one failure).
    expect(started.status()).toMatchObject([
      { state: 'unknown', consecutiveFailures: mode === 'off' ? 0 : 1 },
    ]);
  });

  it.each(cases)('%s, %s: a live embedded server', async (adapter, mode) => {
    const live = await icapServer();
    const started = await startUp(adapter, {
      name: 'boot',
      poolGroup: live.url(),
      serviceUri: '/avscan',
      startupCheck: mode,
    });
    const result = await outcome(started.ready);
    expect(result.error).toBeUndefined();
    await settle();
    expect(warnings).toEqual([]);
    const options = live.requests.filter((r) => r.method === 'OPTIONS');
    if (mode === 'off') {
      expect(options).toHaveLength(0);
      expect(started.status()[0]!.state).toBe('unknown');
    } else {
      expect(options).toHaveLength(1);
      expect(started.status()[0]!.state).toBe('up');
    }
  });

  it('engine.ready() reports each server; one dead server of two fails the check and names only it', async () => {
    const live = await icapServer();
    const dead = await deadUrl();
    const engine = createEngine({ name: 'two', poolGroup: [live.url(), dead], serviceUri: '/avscan' });
    toClose.push(engine);
    const err = (await outcome(engine.ready())).error as StartupCheckError;
    expect(err.code).toBe('ICAP_ERR_STARTUP_CHECK');
    expect(err.message).toContain('1 of 2 ICAP servers did not answer');
    expect(err.message).toContain(dead);
    expect(err.message).not.toContain(live.url());
    expect(engine.status().map((s) => s.state)).toEqual(['up', 'unknown']);
    const warn = createEngine({
      name: 'two',
      poolGroup: [live.url(), dead],
      serviceUri: '/avscan',
      startupCheck: 'warn',
      logger: recordingLogger([]),
    });
    toClose.push(warn);
    const report = (await warn.ready()) as StartupReport;
    expect(report).toMatchObject({
      mode: 'warn',
      ok: false,
      servers: [
        { server: live.url(), ok: true, istag: expect.any(String) },
        { server: dead, ok: false, code: 'ICAP_ERR_CONNECT' },
      ],
    });
  });

  it("fastify: a route profile's servers are checked too", async () => {
    const live = await icapServer();
    const dead = await deadUrl();
    const app = Fastify();
    toClose.push(app);
    await app.register(fastifyIcap, { name: 'root', poolGroup: live.url(), serviceUri: '/avscan' });
    app.post('/docs', { config: { icap: { poolGroup: dead } } }, async () => 'ok');
    const err = (await outcome(app.ready())).error as StartupCheckError;
    expect(err.code).toBe('ICAP_ERR_STARTUP_CHECK');
    expect(err.servers.map((s) => s.server)).toEqual([dead]);
    // The root profile's server was asked as well (its answer may come after the rejection).
    await waitFor(() => live.requests.some((r) => r.method === 'OPTIONS'), 5000, "the root server's OPTIONS");
  });

  it('a service that does not take REQMOD fails the check', async () => {
    const respmodOnly = await icapServer();
    respmodOnly.setScript((r) =>
      r.method === 'OPTIONS'
        ? {
            kind: 'raw',
            response:
              'ICAP/1.0 200 OK\r\nMethods: RESPMOD\r\nISTag: "x"\r\nEncapsulated: null-body=0\r\n\r\n',
          }
        : undefined,
    );
    const engine = createEngine({ name: 'respmod', poolGroup: respmodOnly.url(), serviceUri: '/avscan' });
    toClose.push(engine);
    const err = (await outcome(engine.ready())).error as StartupCheckError;
    expect(err.code).toBe('ICAP_ERR_STARTUP_CHECK');
    expect(err.message).toMatch(
      /ICAP_ERR_METHOD_NOT_SUPPORTED: the service does not support REQMOD \(Methods: RESPMOD\)/,
    );
  });
});

describe('status(): unknown until the server has answered', () => {
  it('unknown, then up after the first transaction; a dead server stays unknown until suspended', async () => {
    const live = await icapServer();
    const dead = await deadUrl();
    const engine = createEngine({
      name: 'status',
      poolGroup: { pools: [{ name: 'only', servers: [live.url()] }] },
      serviceUri: '/avscan',
    });
    const app = await startScanServer(engine);
    toClose.push(engine, app);
    expect(engine.status()).toMatchObject([{ server: live.url(), state: 'unknown', consecutiveFailures: 0 }]);
    expect((await upload(app.url)).status).toBe(200);
    expect(engine.status()[0]!.state).toBe('up');

    const down = createEngine({
      name: 'status-dead',
      poolGroup: dead,
      serviceUri: '/avscan',
      onLog: () => {},
      health: { failureLimit: 2, probeInterval: 60_000 },
    });
    const downApp = await startScanServer(down);
    toClose.push(down, downApp);
    expect((await upload(downApp.url)).status).toBe(503);
    expect(down.status()[0]).toMatchObject({ state: 'unknown', consecutiveFailures: 1 });
    expect((await upload(downApp.url)).status).toBe(503);
    expect(down.status()[0]!.state).toBe('suspended');
  });
});
