/**
 * multipartConcurrency bounds how many parts of one form are scanned at once: the ICAP server
 * holds every answer for D ms, so with at most `n` in flight the k-th REQMOD can only arrive
 * once one of the earlier ones was answered: at least D after the (k-n)-th arrived. Without the
 * bound every part's REQMOD arrives at once. (A lower bound only: a busy machine makes the gaps
 * longer, never shorter.)
 */
import { performance } from 'node:perf_hooks';
import type { IcapProfile } from '@icapkit/core';
import { type IcapTestServer, startIcapServer } from '@icapkit/testing';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { type App, startApp } from '../conformance/apps.js';
import { multipart, send } from '../support/http-client.js';

const D = 60;
let icap: IcapTestServer;
let arrivals: number[] = [];
beforeAll(async () => {
  icap = await startIcapServer({
    recordBodies: false,
    script: (req) => {
      if (req.method !== 'REQMOD') return undefined;
      arrivals.push(performance.now());
      return { kind: 'delay', ms: D };
    },
  });
});
afterAll(async () => {
  await icap.close();
});

let app: App | undefined;
afterEach(async () => {
  await app?.close();
  app = undefined;
  arrivals = [];
});

const profile = (over: Partial<IcapProfile> = {}): IcapProfile => ({
  name: 'multipart-concurrency',
  poolGroup: icap.url(),
  serviceUri: '/avscan',
  ...over,
});

describe('multipartConcurrency', () => {
  for (const n of [1, 2, 4]) {
    it(`${n} at a time: each REQMOD past the first ${n} waits for an answer; the form arrives whole`, async () => {
      app = await startApp('fastify', profile({ multipartConcurrency: n }));
      const files = Array.from({ length: 7 }, (_, i) => ({
        name: `f${i}`,
        filename: `d${i}.bin`,
        type: 'application/octet-stream',
        data: Buffer.alloc(3000 + i * 100, 97 + i),
      }));
      const form = multipart([{ name: 'title', data: 'seven files' }, ...files]);
      const r = await send(app.url, '/multipart', {
        body: form.body,
        headers: { 'content-type': form.contentType },
      });
      expect(r.status).toBe(200);
      expect(arrivals).toHaveLength(8);
      for (let k = n; k < arrivals.length; k++)
        expect(arrivals[k]! - arrivals[k - n]!).toBeGreaterThanOrEqual(D - 2);
      const seen = app.seen[0]!;
      expect(seen.files!.map((f) => [f.name, f.data.length])).toEqual(
        files.map((f) => [f.filename, f.data.length]),
      );
    });
  }
});
