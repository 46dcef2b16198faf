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
 * `ICAPKIT_CONTENT_PROVOKED_RUNS` sets the uploads per framework (default 12).
 */
import type { IcapLog, IcapProfile } from '@icapkit/core';
import { eicar, type Fault, type IcapTestServer, startIcapServer } from '@icapkit/testing';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type App, type Framework, startApp } from '../conformance/apps.js';
import { checkAsyncProperty, runsFromEnv } from '../fuzz/support.js';
import { send } from '../support/http-client.js';

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
  | { kind: 'endless' };

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
  }
}

interface Upload {
  failure: Failure;
  /** EICAR inside the body, or a clean body: neither may pass. */
  infected: boolean;
  padBefore: Uint8Array;
  padAfter: Uint8Array;
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
