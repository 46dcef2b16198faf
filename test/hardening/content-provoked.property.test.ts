/**
 * A client can never choose fail-open through what its upload makes the scanner do,
 * property-based. With `failAction: 'fail-open'` and a scanner that works (it answers its
 * health check), an upload the scanner fails on (answers a 5xx to, is slow on, hangs on,
 * crashes on, garbles its answer to, or rewrites into an endless body) never reaches the
 * handler: 503 (or 403 for an answer that says the file cannot be scanned), `fail_action`
 * `fail-closed`, `CONTENT_PROVOKED` in the record. A client could otherwise pick the failure
 * action with a file its scanner chokes on (a decompression bomb, a crafted archive).
 *
 * And the other side, so the property cannot hold by refusing everything: when the scanner
 * fails the same way on every REQMOD, its health check too (broken for everyone), fail-open
 * passes the upload whole, as the failure action says.
 *
 * Two ways around it that campaign-u found, below the property: a multipart file scanned per
 * file that outlasts responseTimeout (the form passed, and with it parts never sent to ICAP);
 * and connections held by scans other uploads made slow, so that an upload waiting for one
 * timed out in the queue and failed open.
 *
 * And last, a file that crashes the whole scanner daemon: the connection drops while the server
 * has the upload, and the check finds nothing listening (the keep-alive retry meets the refusal
 * too). That upload gets 503; the outage after it takes the failure action.
 *
 * `ICAPKIT_CONTENT_PROVOKED_RUNS` sets the uploads per framework (default 12).
 */
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { type AddressInfo, connect, createServer, type Socket } from 'node:net';
import type { IcapLog, IcapProfile } from '@icapkit/core';
import {
  eicar,
  type Fault,
  type IcapTestServer,
  type RecordedRequest,
  startIcapServer,
} from '@icapkit/testing';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type App, type Framework, startApp } from '../conformance/apps.js';
import { checkAsyncProperty, runsFromEnv } from '../fuzz/support.js';
import { refusingPort } from '../support/c-icap.js';
import { multipart, send } from '../support/http-client.js';

const RUNS = runsFromEnv('ICAPKIT_CONTENT_PROVOKED_RUNS', 12);
const FRAMEWORKS: Framework[] = ['express5', 'fastify', 'koa3', 'hono'];
const RESPONSE_TIMEOUT = 600;
const EICAR = eicar();

type Failure =
  | { kind: 'status'; status: number }
  | { kind: 'hang' }
  | { kind: 'delay' }
  | { kind: 'reset' }
  | { kind: 'close' }
  | { kind: 'garbage' }
  | { kind: 'endless' }
  /** The scanning process crashes: every connection reset, the daemon still listening. */
  | { kind: 'crash-process' }
  /** The whole daemon crashes: every connection reset, new ones refused (restarted after the case). */
  | { kind: 'crash-daemon' };

const failureArb: fc.Arbitrary<Failure> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.integer({ min: 500, max: 599 }).map((status) => ({ kind: 'status' as const, status })),
  },
  { weight: 1, arbitrary: fc.constant({ kind: 'hang' as const }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'delay' as const }) },
  { weight: 2, arbitrary: fc.constant({ kind: 'reset' as const }) },
  { weight: 2, arbitrary: fc.constant({ kind: 'close' as const }) },
  { weight: 2, arbitrary: fc.constant({ kind: 'garbage' as const }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'endless' as const }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'crash-process' as const }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'crash-daemon' as const }) },
);

/** The scanner's misbehaviour for a failure, once the whole request (or its preview) is in. */
function faultOf(f: Failure, previewed: boolean): Fault {
  switch (f.kind) {
    case 'status':
      return { kind: 'status', status: f.status };
    case 'hang':
      return { kind: 'hang' };
    case 'delay':
      return { kind: 'delay', ms: RESPONSE_TIMEOUT * 3 };
    case 'reset':
    case 'close':
      return { kind: f.kind, when: previewed ? 'after-preview' : 'after-body' };
    case 'garbage':
      return { kind: 'garbage' };
    case 'endless':
      return { kind: 'endless-chunk', in: 'request' };
    case 'crash-process':
      return { kind: 'crash', keepListening: true };
    case 'crash-daemon':
      return { kind: 'crash' };
  }
}

interface Upload {
  failure: Failure;
  /** EICAR inside the body, or a clean body: neither may pass. */
  infected: boolean;
  padBefore: Uint8Array;
  padAfter: Uint8Array;
}

/**
 * An embedded scanner for the describe block this is called in: started before its tests and
 * closed after them; each REQMOD misbehaves as `fault` says (undefined: answered normally).
 */
function describeScanner(fault: (r: RecordedRequest) => Fault | undefined): {
  readonly server: IcapTestServer;
} {
  const scanner = {} as { server: IcapTestServer };
  beforeAll(async () => {
    scanner.server = await startIcapServer({
      recordBodies: false,
      script: (r) => (r.method === 'REQMOD' ? fault(r) : undefined),
    });
  });
  afterAll(async () => {
    await scanner.server?.closeConnections();
    await scanner.server?.close();
  });
  return scanner;
}

/** An app under fail-open on `server`'s /avscan, its records in `logs` (RESPONSE_TIMEOUT unless `extra` says). */
function failOpenApp(
  framework: Framework,
  server: IcapTestServer,
  logs: IcapLog[],
  extra: Partial<IcapProfile>,
) {
  return startApp(framework, {
    poolGroup: server.url(),
    serviceUri: '/avscan',
    failAction: 'fail-open',
    responseTimeout: RESPONSE_TIMEOUT,
    onLog: (l) => logs.push(l),
    ...extra,
  });
}

/** The latest record once one came after the first `before` (waited for, with a deadline). */
async function logAfter(logs: IcapLog[], before: number): Promise<IcapLog> {
  const deadline = Date.now() + 5_000;
  while (logs.length === before && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
  return logs.at(-1)!;
}

const uploadArb: fc.Arbitrary<Upload> = fc.record({
  failure: failureArb,
  infected: fc.boolean(),
  padBefore: fc.uint8Array({ maxLength: 3000 }),
  padAfter: fc.uint8Array({ maxLength: 3000 }),
});

describe('what an upload makes the scanner do never chooses fail-open (fail-open profile)', () => {
  let server: IcapTestServer;
  const apps = new Map<Framework, App>();
  const logs: IcapLog[] = [];
  /** The failure the scanner shows the upload marked `x-case`, and whether its check fails too. */
  let current: { failure: Failure; everyRequest: boolean } | undefined;

  const profile = (framework: Framework): IcapProfile => ({
    name: `content-provoked-${framework}`,
    poolGroup: server.url(),
    serviceUri: '/avscan',
    failAction: 'fail-open',
    responseTimeout: RESPONSE_TIMEOUT,
    bufferSize: 1024 * 1024,
    // Neither suspended nor half-open during the property: each upload meets the same server.
    health: { failureLimit: 1000 },
    onLog: (l) => {
      logs.push(l);
      if (logs.length > 1000) logs.splice(0, 500);
    },
  });

  beforeAll(async () => {
    server = await startIcapServer({
      recordBodies: false,
      script: (r) => {
        if (r.method !== 'REQMOD' || current === undefined) return undefined;
        const check = r.httpRequest?.target === '/icapkit-health-check';
        if (check && !current.everyRequest) return undefined;
        if (!check && r.httpRequest?.headers.get('x-case') === undefined) return undefined;
        return faultOf(current.failure, typeof r.preview === 'number');
      },
    });
    for (const f of FRAMEWORKS) apps.set(f, await startApp(f, profile(f)));
  });

  afterAll(async () => {
    await Promise.all([...apps.values()].map((a) => a.close()));
    await server?.closeConnections();
    await server?.close();
  });

  async function upload(app: App, u: Upload, everyRequest: boolean) {
    const body = Buffer.concat([u.padBefore, u.infected ? EICAR : Buffer.from('clean'), u.padAfter]);
    // A check answered in the last second is reused (health-check.ts, FRESH_FOR): a crash case
    // waits it out, so that its own check meets the crashed server (dropped, or refused).
    if (u.failure.kind === 'crash-process' || u.failure.kind === 'crash-daemon')
      await new Promise((r) => setTimeout(r, 1_100));
    const before = logs.length;
    const seenBefore = app.seen.length;
    current = { failure: u.failure, everyRequest };
    try {
      const reply = await send(app.url, '/raw', {
        body,
        headers: { 'content-type': 'application/octet-stream', 'x-case': 'provoked' },
        timeoutMs: 10_000,
      });
      const deadline = Date.now() + 3_000;
      while (logs.length === before && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
      return { body, status: reply.status, seen: app.seen.slice(seenBefore), log: logs.slice(before).at(-1) };
    } finally {
      current = undefined;
      // A crashed daemon is brought back (same port) before the next case meets it.
      if (u.failure.kind === 'crash-daemon') await server.restart();
    }
  }

  for (const framework of FRAMEWORKS) {
    it(
      `${framework}: an upload the scanner fails on never reaches the handler while the scanner answers its check`,
      async () => {
        const app = apps.get(framework)!;
        await checkAsyncProperty(
          `content-provoked ${framework}`,
          fc.asyncProperty(uploadArb, async (u) => {
            const r = await upload(app, u, false);
            expect(r.seen).toEqual([]);
            expect(r.log).toBeDefined();
            expect(r.log!.significance).not.toContain('FAIL_OPEN');
            if (r.status === 403) {
              // A 5xx some vendors send for a file they cannot open: a block, never a pass.
              expect(r.log!.significance).toContain('UNSCANNABLE');
            } else {
              expect(r.status).toBe(503);
              expect(r.log!.fail_action).toBe('fail-closed');
              expect(r.log!.significance).toContain('CONTENT_PROVOKED');
            }
          }),
          RUNS,
        );
        // Still scanning: a plain EICAR upload is blocked, a clean one passes.
        const threat = await send(app.url, '/raw', {
          body: EICAR,
          headers: { 'content-type': 'application/octet-stream' },
        });
        expect(threat.status).toBe(403);
      },
      RUNS * 3 * RESPONSE_TIMEOUT + 30_000,
    );

    it(`${framework}: a scanner failing the same way on every REQMOD (its check too) takes the failure action`, async () => {
      // An engine of its own: none of the property's answered checks to reuse.
      const app = await startApp(framework, profile(framework));
      try {
        for (const failure of [
          { kind: 'status', status: 500 },
          { kind: 'reset' },
          { kind: 'garbage' },
          { kind: 'hang' },
          // A scanning process that crashes on every REQMOD, the check's too (tried twice).
          { kind: 'crash-process' },
        ] as Failure[]) {
          const u: Upload = {
            failure,
            infected: false,
            padBefore: new Uint8Array(),
            padAfter: new Uint8Array(),
          };
          const r = await upload(app, u, true);
          expect(r.status).toBe(200);
          expect(r.seen.map((s) => s.raw?.toString())).toEqual(['clean']);
          expect(r.log!.significance).toContain('FAIL_OPEN');
          expect(r.log!.significance).not.toContain('CONTENT_PROVOKED');
        }
      } finally {
        await app.close();
      }
    }, 30_000);
  }
});

describe('per-file multipart and the connection queue (campaign-u)', () => {
  const scanner = describeScanner((r) => {
    const disposition = r.httpRequest?.headers.get('content-disposition') ?? '';
    // The scanner takes longer than responseTimeout on a "bomb" (a part or a raw body).
    if (disposition.includes('bomb') || r.httpRequest?.headers.get('x-bomb') !== undefined)
      return { kind: 'delay', ms: RESPONSE_TIMEOUT * 4 };
    // A CDR rewrite it sends slowly, a byte at a time (the connection busy meanwhile).
    if (disposition.includes('hold')) return { kind: 'trickle', intervalMs: 100 };
    return undefined;
  });

  const start = (framework: Framework, logs: IcapLog[], extra: Partial<IcapProfile> = {}) =>
    failOpenApp(framework, scanner.server, logs, {
      name: `content-provoked-parts-${framework}`,
      multipart: 'per-file',
      ...extra,
    });

  for (const framework of FRAMEWORKS) {
    it(`${framework}: a file scanned per file that outlasts responseTimeout fails the form closed, parts never sent with it`, async () => {
      const logs: IcapLog[] = [];
      const app = await start(framework, logs);
      try {
        for (const parts of [
          // The slow file carries EICAR itself.
          [{ name: 'f', filename: 'bomb.zip', data: EICAR }],
          // Four slow files fill multipartConcurrency; the fifth (EICAR) is never sent to ICAP.
          [
            ...[1, 2, 3, 4].map((i) => ({ name: `b${i}`, filename: `bomb${i}.zip`, data: `slow ${i}` })),
            { name: 'p', filename: 'payload.com', data: EICAR },
          ],
        ]) {
          const form = multipart(parts);
          const before = logs.length;
          const reply = await send(app.url, '/multipart', {
            body: form.body,
            headers: { 'content-type': form.contentType },
            timeoutMs: 10_000,
          });
          const log = await logAfter(logs, before);
          expect(reply.status).toBe(503);
          expect(app.seen).toEqual([]);
          expect(log.fail_action).toBe('fail-closed');
          expect(log.significance).toContain('CONTENT_PROVOKED');
          expect(log.significance).not.toContain('FAIL_OPEN');
          // Said once, though the parts share the timeout's error.
          expect(log.error_message!.split('answered its health check').length).toBe(2);
        }
      } finally {
        await app.close();
      }
    }, 30_000);

    it(`${framework}: an upload that waits for a connection held by scans other uploads made slow gets 503, not the failure action`, async () => {
      const logs: IcapLog[] = [];
      const app = await start(framework, logs, { connection: { maxConnections: 2 } });
      const holders: Socket[] = [];
      const timers: NodeJS.Timeout[] = [];
      try {
        // Two forms whose first file the scanner is slow on (sent once complete, holding a
        // connection each), their rest trickling in (their responseTimeout not yet armed).
        const { port } = new URL(app.url);
        for (const i of [1, 2]) {
          const b = `holder${i}`;
          const head = `--${b}\r\nContent-Disposition: form-data; name="f"; filename="hold${i}.zip"\r\nContent-Type: application/octet-stream\r\n\r\nslow ${i}\r\n--${b}\r\nContent-Disposition: form-data; name="pad"\r\n\r\n`;
          const socket = connect(Number(port), '127.0.0.1');
          socket.on('error', () => {});
          socket.write(
            `POST /multipart HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=${b}\r\nContent-Length: 100000\r\n\r\n${head}`,
          );
          holders.push(socket);
          timers.push(setInterval(() => socket.write('z'), 100));
        }
        const deadline = Date.now() + 5_000;
        while (app.engine.status()[0]!.connections.busy < 2 && Date.now() < deadline)
          await new Promise((r) => setTimeout(r, 5));
        expect(app.engine.status()[0]!.connections.busy).toBe(2);
        const before = logs.length;
        const victim = await send(app.url, '/raw', {
          body: EICAR,
          headers: { 'content-type': 'application/octet-stream' },
          timeoutMs: 10_000,
        });
        // Queued until responseTimeout: the server answers its check, so the wait is load its
        // scans of other uploads made, not a broken server.
        expect(victim.status).toBe(503);
        expect(app.seen).toEqual([]);
        const log = await logAfter(logs, before);
        expect(log.fail_action).toBe('fail-closed');
        expect(log.significance).toContain('CONTENT_PROVOKED');
        expect(log.significance).not.toContain('FAIL_OPEN');
      } finally {
        for (const t of timers) clearInterval(t);
        for (const h of holders) h.destroy();
        await app.close();
      }
    }, 30_000);
  }
});

describe('a scanner daemon that crashes on the upload (it goes down: refused connections)', () => {
  const scanner = describeScanner((r) => {
    const disposition = r.httpRequest?.headers.get('content-disposition') ?? '';
    const crashes = r.httpRequest?.headers.get('x-crash') !== undefined || disposition.includes('crash');
    return crashes ? { kind: 'crash' } : undefined;
  });

  /** Waits (bounded) until a connection to the server is refused: it is down. */
  async function down(): Promise<void> {
    const deadline = Date.now() + 5_000;
    for (;;) {
      const refused = await new Promise<boolean>((resolve) => {
        const s = connect(scanner.server.port, '127.0.0.1');
        s.once('connect', () => {
          s.destroy();
          resolve(false);
        });
        s.once('error', () => resolve(true));
      });
      if (refused) return;
      if (Date.now() > deadline) throw new Error('the server did not go down');
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  for (const framework of FRAMEWORKS) {
    it(`${framework}: the upload that took the scanner down gets 503 under fail-open; the outage after it takes the failure action`, async () => {
      const logs: IcapLog[] = [];
      const app = await startApp(framework, {
        name: `content-crash-${framework}`,
        poolGroup: scanner.server.url(),
        serviceUri: '/avscan',
        failAction: 'fail-open',
        responseTimeout: 2_000,
        multipart: 'per-file',
        // Never suspended here: each upload meets the server as it is.
        health: { failureLimit: 1000 },
        onLog: (l) => logs.push(l),
      });
      try {
        const uploads = [
          // Below the preview threshold, and above it (crashed after its 100 Continue).
          { path: '/raw', body: EICAR, type: 'application/octet-stream' },
          {
            path: '/raw',
            body: Buffer.concat([Buffer.alloc(200_000, 'a'), EICAR]),
            type: 'application/octet-stream',
          },
          { path: '/raw', body: Buffer.from('clean'), type: 'application/octet-stream' },
        ].map((u) => ({ ...u, headers: { 'content-type': u.type, 'x-crash': '1' } }));
        const form = multipart([
          { name: 'a', filename: 'fine.txt', data: 'fine' },
          { name: 'f', filename: 'crash.zip', data: EICAR },
        ]);
        uploads.push({
          path: '/multipart',
          body: form.body,
          type: form.contentType,
          headers: { 'content-type': form.contentType, 'x-crash': '' },
        });
        for (const u of uploads) {
          if (u.headers['x-crash'] === '') delete (u.headers as Record<string, string>)['x-crash'];
          await scanner.server.restart();
          const before = logs.length;
          const reply = await send(app.url, u.path, { body: u.body, headers: u.headers, timeoutMs: 10_000 });
          const log = await logAfter(logs, before);
          expect(reply.status).toBe(503);
          expect(app.seen).toEqual([]);
          expect(log.fail_action).toBe('fail-closed');
          expect(log.significance).toContain('CONTENT_PROVOKED');
          expect(log.significance).not.toContain('FAIL_OPEN');
          expect(log.error_message).toContain('may have taken it down');
        }
        // The outage that follows is one: an upload that meets the server down (refused at
        // connect, nothing of it sent) takes the failure action, as fail-open says.
        await down();
        // And the app has seen its kept-alive connections go (no reset still to be read).
        const deadline = Date.now() + 5_000;
        while (app.engine.status()[0]!.connections.open > 0 && Date.now() < deadline)
          await new Promise((r) => setTimeout(r, 5));
        expect(app.engine.status()[0]!.connections.open).toBe(0);
        let before = logs.length;
        const during = await send(app.url, '/raw', {
          body: Buffer.from('clean'),
          headers: { 'content-type': 'application/octet-stream' },
          timeoutMs: 10_000,
        });
        let log = await logAfter(logs, before);
        expect(during.status).toBe(200);
        expect(log.significance).toContain('FAIL_OPEN');
        expect(log.significance).not.toContain('CONTENT_PROVOKED');
        // Back up: scanned again.
        await scanner.server.restart();
        before = logs.length;
        const threat = await send(app.url, '/raw', {
          body: EICAR,
          headers: { 'content-type': 'application/octet-stream' },
          timeoutMs: 10_000,
        });
        log = await logAfter(logs, before);
        expect(threat.status).toBe(403);
        expect(app.seen.map((s) => s.raw?.toString())).toEqual(['clean']);
      } finally {
        await app.close();
        await scanner.server.restart();
      }
    }, 60_000);
  }
});

describe('campaign-w: a request without a body, a crash during the check, a check from before the failure', () => {
  /** Every REQMOD (the check's too) is reset on its head: a scanner broken for everyone. */
  let brokenForEveryone = false;
  const scanner = describeScanner((r) => {
    if (brokenForEveryone) return { kind: 'reset', when: 'on-head' };
    const h = r.httpRequest?.headers;
    const disposition = h?.get('content-disposition') ?? '';
    if (h?.get('x-poison') !== undefined) return { kind: 'reset', when: 'on-head' };
    if (h?.get('x-crash') !== undefined || disposition.includes('crash')) return { kind: 'crash' };
    if (h?.get('x-500') !== undefined || disposition.includes('five-hundred'))
      return { kind: 'status', status: 500 };
    return undefined;
  });

  const start = (framework: Framework, logs: IcapLog[], extra: Partial<IcapProfile> = {}) =>
    failOpenApp(framework, scanner.server, logs, {
      name: `content-provoked-w-${framework}`,
      responseTimeout: 2_000,
      ...extra,
    });

  for (const framework of FRAMEWORKS) {
    it(`${framework}: a request without a body that a rule scans: a failure on its head is checked (503), and never suspends the server`, async () => {
      const logs: IcapLog[] = [];
      const app = await start(framework, logs, { rules: [{ name: 'all', action: 'enable-icap' }] });
      try {
        for (let i = 0; i < 4; i++) {
          const before = logs.length;
          const reply = await send(app.url, '/raw', {
            body: Buffer.alloc(0),
            headers: { 'content-type': 'application/octet-stream', 'x-poison': String(i) },
            timeoutMs: 10_000,
          });
          const log = await logAfter(logs, before);
          expect(reply.status).toBe(503);
          expect(log.significance).toContain('CONTENT_PROVOKED');
          expect(log.significance).not.toContain('FAIL_OPEN');
        }
        // Three such failures used to suspend it (failureLimit): it answers its checks, so it
        // stays up, and an EICAR upload is still scanned.
        expect(app.engine.status()[0]!.state).not.toBe('suspended');
        const threat = await send(app.url, '/raw', {
          body: EICAR,
          headers: { 'content-type': 'application/octet-stream' },
          timeoutMs: 10_000,
        });
        expect(threat.status).toBe(403);
        expect(app.seen).toEqual([]);
      } finally {
        await app.close();
      }
      // The other side: broken for everyone (its check too: reset, yet still accepting
      // connections), the failure action applies. An engine of its own: no answered check to reuse.
      const other = await start(framework, logs, { rules: [{ name: 'all', action: 'enable-icap' }] });
      brokenForEveryone = true;
      try {
        const before = logs.length;
        const reply = await send(other.url, '/raw', {
          body: Buffer.alloc(0),
          headers: { 'content-type': 'application/octet-stream' },
          timeoutMs: 10_000,
        });
        expect(reply.status).toBe(200);
        expect((await logAfter(logs, before)).significance).toContain('FAIL_OPEN');
      } finally {
        brokenForEveryone = false;
        await other.close();
      }
    }, 30_000);

    it(`${framework}: an upload answered 500 whose check a crash (from another upload) prevents gets 503, not the failure action`, async () => {
      const logs: IcapLog[] = [];
      const app = await start(framework, logs, { multipart: 'per-file', health: { failureLimit: 1000 } });
      try {
        await scanner.server.restart();
        // One form: a file the scanner answers 500 to, then one that crashes the daemon while
        // the first one's check is made.
        const form = multipart([
          { name: 'a', filename: 'five-hundred.com', data: EICAR },
          { name: 'b', filename: 'crash.bin', data: Buffer.alloc(200_000, 'c') },
        ]);
        let before = logs.length;
        const reply = await send(app.url, '/multipart', {
          body: form.body,
          headers: { 'content-type': form.contentType },
          timeoutMs: 10_000,
        });
        let log = await logAfter(logs, before);
        expect(reply.status).toBe(503);
        expect(log.significance).toContain('CONTENT_PROVOKED');
        // Two uploads at once: one answered 500, one that crashes it.
        await scanner.server.restart();
        before = logs.length;
        const [answered500, crashing] = await Promise.all([
          send(app.url, '/raw', {
            body: EICAR,
            headers: { 'content-type': 'application/octet-stream', 'x-500': '1' },
            timeoutMs: 10_000,
          }),
          send(app.url, '/raw', {
            body: Buffer.alloc(200_000, 'c'),
            headers: { 'content-type': 'application/octet-stream', 'x-crash': '1' },
            timeoutMs: 10_000,
          }),
        ]);
        expect([answered500.status, crashing.status]).toEqual([503, 503]);
        expect(app.seen).toEqual([]);
        const deadline = Date.now() + 5_000;
        while (logs.length < before + 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
        for (log of logs.slice(before)) expect(log.significance).toContain('CONTENT_PROVOKED');
        // A crash, the daemon back at once, and an upload answered 500 right after: the check
        // that failed before it (nothing listening) is not reused for it.
        await scanner.server.restart();
        before = logs.length;
        expect(
          (
            await send(app.url, '/raw', {
              body: Buffer.from('clean'),
              headers: { 'content-type': 'application/octet-stream', 'x-crash': '1' },
              timeoutMs: 10_000,
            })
          ).status,
        ).toBe(503);
        await scanner.server.restart();
        const after = await send(app.url, '/raw', {
          body: EICAR,
          headers: { 'content-type': 'application/octet-stream', 'x-500': '1' },
          timeoutMs: 10_000,
        });
        expect(after.status).toBe(503);
        log = await logAfter(logs, before + 1);
        expect(log.error_message).toContain('answered its health check afterwards');
        expect(app.seen).toEqual([]);
      } finally {
        await app.close();
        await scanner.server.restart();
      }
    }, 30_000);
  }
});

describe('campaign-w: the keep-alive retry that ends waiting for a connection', () => {
  for (const framework of FRAMEWORKS) {
    it(`${framework}: a body sent on a kept-alive connection the server closed, then no free connection: the server is checked (503), not the failure action`, async () => {
      // Server A: two connections; slow on `x-slow` uploads (answers after 1.5 s); it closes a
      // kept-alive connection 150 ms after an `x-race` upload arrived on it, unanswered (the
      // keep-alive race). Server B (the backup pool): nothing listening.
      const used = new WeakMap<Socket, number>();
      const arrived: string[] = [];
      const sockets = new Set<Socket>();
      const NO_CONTENT = 'ICAP/1.0 204 No Content\r\nISTag: "w11"\r\nEncapsulated: null-body=0\r\n\r\n';
      const a = createServer((sock) => {
        sockets.add(sock);
        sock.on('close', () => sockets.delete(sock));
        sock.on('error', () => {});
        let buf = '';
        sock.on('data', (d: Buffer) => {
          buf += d.toString('latin1');
          if (buf.startsWith('OPTIONS')) {
            const i = buf.indexOf('\r\n\r\n');
            if (i < 0) return;
            buf = buf.slice(i + 4);
            sock.write(
              'ICAP/1.0 200 OK\r\nISTag: "w11"\r\nMethods: REQMOD\r\nAllow: 204\r\nEncapsulated: null-body=0\r\n\r\n',
            );
            return;
          }
          if (!/\r\n0(; ieof)?\r\n\r\n$/.test(buf)) return;
          const req = buf;
          buf = '';
          const n = (used.get(sock) ?? 0) + 1;
          used.set(sock, n);
          if (/x-race/i.test(req) && n > 1) {
            arrived.push('race');
            setTimeout(() => sock.destroy(), 150);
          } else if (/x-slow/i.test(req)) {
            arrived.push('slow');
            setTimeout(() => sock.write(NO_CONTENT), 1_500);
          } else sock.write(NO_CONTENT);
        });
      });
      await new Promise<void>((r) => a.listen(0, '127.0.0.1', r));
      const logs: IcapLog[] = [];
      const app = await startApp(framework, {
        name: `content-provoked-w11-${framework}`,
        poolGroup: {
          pools: [
            {
              name: 'main',
              priority: 20,
              servers: [`icap://127.0.0.1:${(a.address() as AddressInfo).port}`],
            },
            { name: 'backup', priority: 10, servers: [`icap://127.0.0.1:${await refusingPort()}`] },
          ],
        },
        serviceUri: '/avscan',
        failAction: 'fail-open',
        responseTimeout: 5_000,
        enablePreview: false,
        connection: { maxConnections: 2, queueTimeout: 300, stallTimeout: 4_500 },
        health: { failureLimit: 1000 },
        onLog: (l) => logs.push(l),
      });
      const until = async (cond: () => boolean) => {
        const deadline = Date.now() + 5_000;
        while (!cond() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
        expect(cond()).toBe(true);
      };
      const ct = { 'content-type': 'application/octet-stream' };
      try {
        // Two idle kept-alive connections to A.
        for (let i = 0; i < 2; i++)
          await Promise.all([
            send(app.url, '/raw', { body: 'warm', headers: ct }),
            send(app.url, '/raw', { body: 'warm', headers: ct }),
          ]);
        expect(app.engine.status()[0]!.connections.idle).toBe(2);
        const s1 = send(app.url, '/raw', { body: 'slow one', headers: { ...ct, 'x-slow': '1' } });
        await until(() => arrived.includes('slow'));
        const before = logs.length;
        const x = send(app.url, '/raw', {
          body: EICAR,
          headers: { ...ct, 'x-race': '1' },
          timeoutMs: 10_000,
        });
        await until(() => arrived.includes('race'));
        // Queued for the next free connection before X's retry asks for one.
        const s2 = send(app.url, '/raw', { body: 'slow two', headers: { ...ct, 'x-slow': '1' } });
        await until(() => app.engine.status()[0]!.connections.pending > 0);
        const reply = await x;
        expect(reply.status).toBe(503);
        expect(app.seen.some((s) => s.raw?.equals(EICAR))).toBe(false);
        const log = logs.slice(before).find((l) => l.request_logs.length === 2)!;
        expect(log.request_logs.map((e) => e.error_code)).toEqual(['ICAP_ERR_SATURATED', 'ICAP_ERR_CONNECT']);
        expect(log.significance).toContain('CONTENT_PROVOKED');
        expect(log.significance).not.toContain('FAIL_OPEN');
        expect((await s1).status).toBe(200);
        expect((await s2).status).toBe(200);
      } finally {
        await app.close();
        for (const s of sockets) s.destroy();
        await new Promise<void>((r) => a.close(() => r()));
      }
    }, 30_000);
  }
});

describe('campaign-x: a check dropped by a scanning process that crashed, its parent still listening', () => {
  /** How many of the next health checks the scanner crashes on (its connections reset, still listening). */
  let crashChecks = 0;
  let checks = 0;
  const scanner = describeScanner((r) => {
    if (r.httpRequest?.target === '/icapkit-health-check') {
      checks++;
      if (crashChecks === 0) return undefined;
      crashChecks--;
      return { kind: 'crash', keepListening: true };
    }
    return r.httpRequest?.headers.get('x-500') !== undefined ? { kind: 'status', status: 500 } : undefined;
  });

  /**
   * An upload answered 500 under fail-open, the first `crashes` checks crashed: the check runs
   * twice, and the reply is `status`. An engine of its own each time: no check result to reuse.
   * Nothing here waits for a timeout (the crash resets at once): a wider responseTimeout keeps
   * both checks and the upload within it on a loaded machine (the check's client is bounded by
   * it too; 600 ms ran out once beside a CPU burner and two test runs).
   */
  async function answered500(framework: Framework, crashes: number, status: number, connection = {}) {
    const logs: IcapLog[] = [];
    const app = await failOpenApp(framework, scanner.server, logs, {
      name: `content-provoked-x5-${framework}`,
      responseTimeout: 5_000,
      connection,
    });
    try {
      crashChecks = crashes;
      checks = 0;
      const reply = await send(app.url, '/raw', {
        body: EICAR,
        headers: { 'content-type': 'application/octet-stream', 'x-500': '1' },
        timeoutMs: 10_000,
      });
      const log = await logAfter(logs, 0);
      expect(checks).toBe(2);
      expect(reply.status).toBe(status);
      if (status === 503) {
        expect(log.significance).toContain('CONTENT_PROVOKED');
        expect(app.seen).toEqual([]);
      } else expect(log.significance).toContain('FAIL_OPEN');
    } finally {
      crashChecks = 0;
      await app.close();
    }
  }

  for (const framework of FRAMEWORKS) {
    it(`${framework}: the check is tried once more; answered, the upload answered 500 gets 503 — dropped twice, the failure action`, async () => {
      await answered500(framework, 1, 503);
      await answered500(framework, 2, 200);
    }, 30_000);
  }

  it('express5: the process stalled past connectTimeout while the probe connects: the probe counts as accepted (503)', async () => {
    // The first socket opened after the crashed check is the probe (#accepts): the process
    // stalls 400 ms right after its connect(), as on a busy machine.
    let probeStalled = false;
    const onSocket = () => {
      if (checks !== 1 || probeStalled) return;
      probeStalled = true;
      const spin = () => {
        const until = performance.now() + 400;
        while (performance.now() < until) {
          // stalled
        }
      };
      process.nextTick(() => process.nextTick(spin));
    };
    subscribe('net.client.socket', onSocket);
    try {
      await answered500('express5', 1, 503, { connectTimeout: 100 });
      expect(probeStalled).toBe(true);
    } finally {
      unsubscribe('net.client.socket', onSocket);
    }
  }, 30_000);
});
