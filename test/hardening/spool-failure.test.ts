/**
 * A body's temp file that cannot be opened or written (a missing spoolDir, a full disk): a
 * local failure. The request gets its 503 at once with ICAP_ERR_SPOOL, in both failure actions
 * (never fail-open: the body cannot be replayed whole), the handler never runs, and the ICAP
 * server's health is not touched. Before, the failure was swallowed: the readers of the body
 * waited for bytes that never came, so the REQMOD stalled until responseTimeout and the
 * request got a 503 blamed on the ICAP server (ICAP_ERR_TIMEOUT, counted against its health),
 * or, when the open failed while the body was arriving, no answer at all (ICAP_ERR_BODY_SOURCE,
 * "the HTTP client went away"). Campaign-r's finding.
 */
import { open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { IcapLog, IcapProfile } from '@icapkit/core';
import { type IcapTestServer, startIcapServer } from '@icapkit/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Framework, startApp } from '../conformance/apps.js';
import { send } from '../support/http-client.js';

const FRAMEWORKS: Framework[] = ['express5', 'fastify', 'koa3', 'hono'];
const RESPONSE_TIMEOUT = 20_000;

let icap: IcapTestServer;
beforeAll(async () => {
  icap = await startIcapServer({ recordBodies: false });
});
afterAll(() => icap?.close());

/** Every FileHandle write fails with ENOSPC while `full` is set (a full disk). */
const disk = { full: false };
let restoreWrite: (() => void) | undefined;
beforeAll(async () => {
  const fh = await open(tmpdir(), 'r');
  const proto = Object.getPrototypeOf(fh) as { write: (...args: unknown[]) => Promise<unknown> };
  await fh.close();
  const write = proto.write;
  proto.write = function (this: unknown, ...args: unknown[]) {
    if (disk.full)
      return Promise.reject(
        Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' }),
      );
    return write.apply(this, args);
  };
  restoreWrite = () => {
    proto.write = write;
  };
});
afterAll(() => restoreWrite?.());

interface Case {
  name: string;
  size: number;
  spoolDir: () => string;
  full: boolean;
}

const missing = () => join(tmpdir(), `icapkit-no-such-dir-${process.pid}`);
const CASES: Case[] = [
  {
    name: 'spoolDir missing, a body that has ended when the open fails',
    size: 5_000,
    spoolDir: missing,
    full: false,
  },
  {
    name: 'spoolDir missing, a body still arriving when the open fails',
    size: 300_000,
    spoolDir: missing,
    full: false,
  },
  { name: 'a full disk (ENOSPC on write)', size: 300_000, spoolDir: () => tmpdir(), full: true },
];

describe('a temp file that fails: 503 ICAP_ERR_SPOOL at once, the ICAP server not blamed', () => {
  for (const framework of FRAMEWORKS) {
    for (const failAction of ['fail-closed', 'fail-open'] as const) {
      for (const c of CASES) {
        it(`${framework}, ${failAction}: ${c.name}`, async () => {
          await rm(missing(), { recursive: true, force: true });
          const logs: IcapLog[] = [];
          const app = await startApp(framework, {
            name: 'spool',
            poolGroup: icap.url(),
            serviceUri: '/avscan',
            failAction,
            memoryThreshold: 1000,
            spoolDir: c.spoolDir(),
            responseTimeout: RESPONSE_TIMEOUT,
            // Every body previewed: the REQMOD starts before the body is all there.
            adaptivePreview: false,
            onLog: (l: IcapLog) => logs.push(l),
          } as IcapProfile);
          disk.full = c.full;
          try {
            const started = performance.now();
            const r = await send(app.url, '/raw', {
              method: 'POST',
              headers: { 'content-type': 'application/octet-stream' },
              body: Buffer.alloc(c.size, 'a'),
              timeoutMs: RESPONSE_TIMEOUT + 10_000,
            });
            const elapsed = performance.now() - started;
            expect({ status: r.status, handlerRuns: app.seen.length }).toEqual({
              status: 503,
              handlerRuns: 0,
            });
            // Not after responseTimeout: nothing waited for bytes that would not come.
            expect(elapsed).toBeLessThan(RESPONSE_TIMEOUT / 2);
            const last = logs[logs.length - 1];
            expect({ code: last?.error_code, action: last?.action }).toEqual({
              code: 'ICAP_ERR_SPOOL',
              action: 'ICAP_FAILED',
            });
            expect(last?.error_message).toMatch(/temp file/);
            // A local failure: the ICAP server's health is not touched.
            expect(app.engine.status().map((s) => s.consecutiveFailures)).toEqual([0]);
          } finally {
            disk.full = false;
            await app.close();
          }
        }, 60_000);
      }
    }
  }

  it('control: the same requests with a spoolDir that works pass (200, the handler gets the body)', async () => {
    for (const framework of FRAMEWORKS) {
      const app = await startApp(framework, {
        name: 'spool',
        poolGroup: icap.url(),
        serviceUri: '/avscan',
        memoryThreshold: 1000,
        spoolDir: tmpdir(),
        adaptivePreview: false,
      } as IcapProfile);
      try {
        const r = await send(app.url, '/raw', {
          method: 'POST',
          headers: { 'content-type': 'application/octet-stream' },
          body: Buffer.alloc(300_000, 'a'),
        });
        expect({ framework, status: r.status, runs: app.seen.length }).toEqual({
          framework,
          status: 200,
          runs: 1,
        });
      } finally {
        await app.close();
      }
    }
  }, 60_000);
});
