/**
 * Differential fuzz of multipart uploads: "scanned equals delivered" whichever parser the
 * application uses.
 *
 * Each input is a multipart body from the structure-aware generator of ./multipart-gen.ts
 * (Content-Type parameters, delimiters, part headers, charsets, transfer encodings, preamble,
 * epilogue, close delimiter placement, truncation, chunking on the wire; clean text or EICAR,
 * plain or encoded). It is sent to POST /raw of Express 5, Fastify and Koa 3 (also Express 4
 * and Koa 2 in the larger run) with icapkit in front, scanning with the embedded ICAP server
 * (EICAR detection, bodies recorded), in a profile drawn per input: `multipart` per-file or
 * whole, `failAction` fail-closed or fail-open (a client must never be able to choose the
 * latter). For every approved request, multer, @fastify/busboy (@fastify/multipart),
 * formidable (koa-body), busboy and @koa/bodyparser are run on the bytes the handler received;
 * each file and field they extract must be content the ICAP server scanned, and none may hold
 * EICAR. Any other answer than 200/400/403/413/415 is a failure too, and so is an uncaught
 * exception or unhandled rejection while a request is handled. After the run each app still
 * answers.
 *
 * Size: `ICAPKIT_MULTIPART_FUZZ_RUNS` inputs (default 100, each sent to every framework);
 * under `scripts/fuzz.sh` (ICAPKIT_FUZZ_RUNS set) it defaults to ICAPKIT_FUZZ_RUNS / 50.
 * ICAPKIT_FUZZ_SEED / ICAPKIT_FUZZ_PATH replay a failure. A counterexample is printed as the
 * request (Content-Type and body bytes), the profile, and per framework the status, the scanned
 * bodies, the delivered bytes and what each parser extracted.
 */
import type { IcapProfile } from '@icapkit/core';
import { type IcapTestServer, startIcapServer } from '@icapkit/testing';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { App, Framework } from '../conformance/apps.js';
import { startCaptureApp } from './multipart-apps.js';
import { exchange, phase, showOutcome } from './multipart-check.js';
import { bodyModelArb, render, showBody } from './multipart-gen.js';
import { checkAsyncProperty, FUZZ_RUNS, runsFromEnv } from './support.js';

const LARGE = process.env.ICAPKIT_FUZZ_RUNS !== undefined;
const RUNS = runsFromEnv(
  'ICAPKIT_MULTIPART_FUZZ_RUNS',
  LARGE ? Math.max(1, Math.round(FUZZ_RUNS / 50)) : 100,
);
const FRAMEWORKS: Framework[] = LARGE
  ? ['express5', 'express4', 'fastify', 'koa3', 'koa2']
  : ['express5', 'fastify', 'koa3'];

interface Variant {
  multipart: 'per-file' | 'whole';
  failAction: 'fail-closed' | 'fail-open';
}
const variantArb = fc.record({
  multipart: fc.constantFrom<Variant['multipart']>('per-file', 'per-file', 'whole'),
  failAction: fc.constantFrom<Variant['failAction']>('fail-closed', 'fail-open'),
});

let icap: IcapTestServer;
const apps = new Map<string, App>();
/** Uncaught exceptions and unhandled rejections, with what was running. */
const crashes: string[] = [];
/** Outcomes per framework and status, printed after the run (how much of the input space passed). */
const tally = new Map<string, number>();
const onUncaught = (err: unknown) => crashes.push(`uncaughtException while ${phase.now}: ${String(err)}`);
const onRejection = (err: unknown) => crashes.push(`unhandledRejection while ${phase.now}: ${String(err)}`);

async function appFor(framework: Framework, v: Variant): Promise<App> {
  const key = `${framework}/${v.multipart}/${v.failAction}`;
  let app = apps.get(key);
  if (app === undefined) {
    const profile: IcapProfile = {
      name: 'differential',
      poolGroup: icap.url(),
      serviceUri: '/avscan',
      multipart: v.multipart,
      failAction: v.failAction,
      onLog: () => {},
    };
    app = await startCaptureApp(framework, profile);
    apps.set(key, app);
  }
  return app;
}

beforeAll(async () => {
  process.on('uncaughtException', onUncaught);
  process.on('unhandledRejection', onRejection);
  icap = await startIcapServer({ recordBodies: true });
});

afterAll(async () => {
  await Promise.all([...apps.values()].map((a) => a.close()));
  apps.clear();
  await icap?.close();
  process.off('uncaughtException', onUncaught);
  process.off('unhandledRejection', onRejection);
});

describe('multipart differential fuzz', () => {
  it(
    `every part any of five parsers extracts from an approved upload was scanned (${RUNS} inputs × ${FRAMEWORKS.join(', ')})`,
    async () => {
      await checkAsyncProperty(
        'multipart: scanned equals delivered, 5 parsers',
        fc.asyncProperty(bodyModelArb, variantArb, async (model, variant) => {
          const rendered = render(model);
          const reports: string[] = [];
          let failed = false;
          for (const framework of FRAMEWORKS) {
            const app = await appFor(framework, variant);
            const before = crashes.length;
            const outcome = await exchange(app, icap, {
              ...rendered,
              pieces: model.pieces,
              pauses: model.pauses,
            });
            const crashed = crashes.slice(before);
            const key = `${framework} ${outcome.status ?? 'closed'}`;
            tally.set(key, (tally.get(key) ?? 0) + 1);
            if (outcome.violations.length > 0 || crashed.length > 0) failed = true;
            reports.push(
              `--- ${framework}\n${showOutcome(outcome)}${crashed.length ? `\n${crashed.join('\n')}` : ''}`,
            );
          }
          if (failed)
            throw new Error(
              `scanned ≠ delivered\nprofile: multipart=${variant.multipart} failAction=${variant.failAction}\n` +
                `${showBody(rendered)}\n${reports.join('\n')}`,
            );
        }),
        RUNS,
      );
      console.log(
        `multipart differential: ${[...tally]
          .sort()
          .map(([k, n]) => `${k}: ${n}`)
          .join(', ')}`,
      );
      expect(crashes).toEqual([]);
    },
    60_000 + RUNS * FRAMEWORKS.length * 1_500,
  );

  it('every app still answers after the run', async () => {
    for (const app of apps.values()) {
      const r = await fetch(`${app.url}/health`, { signal: AbortSignal.timeout(5_000) });
      expect(r.status, `${app.framework} /health`).toBe(200);
    }
    expect(crashes).toEqual([]);
  });
});
