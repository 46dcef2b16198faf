/**
 * Scanned equals delivered once previews have stopped (`adaptivePreview`): after 32 previews in
 * a row answered `100 Continue`, bodies go whole. Property-based over Express 5, Fastify and
 * Koa 3: random bodies above previewMinBodySize (EICAR at a random place or none; a length or
 * chunked; random pieces), and for each upload:
 * - clean: 200, the handler got exactly the bytes sent, and so did the server;
 * - infected: 403, the handler never ran;
 * - and most go whole (the probes, one in 16, are previewed).
 *
 * `ICAPKIT_ADAPTIVE_PREVIEW_RUNS` sets the number of uploads per framework (default 25).
 */
import type { IcapLog } from '@icapkit/core';
import { eicar, type IcapTestServer, startIcapServer } from '@icapkit/testing';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type App, type Framework, startApp } from '../conformance/apps.js';
import { checkAsyncProperty, runsFromEnv } from '../fuzz/support.js';
import { send } from '../support/http-client.js';

const RUNS = runsFromEnv('ICAPKIT_ADAPTIVE_PREVIEW_RUNS', 25);
const FRAMEWORKS: Framework[] = ['express5', 'fastify', 'koa3'];
const OCTETS = { 'content-type': 'application/octet-stream' };
/** As documented: previews stop after this many answered 100 Continue in a row. */
const LEARN_AFTER = 32;

const uploadArb = fc.record({
  size: fc.integer({ min: 64 * 1024 + 1, max: 300 * 1024 }),
  seed: fc.integer({ min: 0, max: 1 << 20 }),
  /** Where EICAR goes, as a fraction of the body; null: clean. */
  infectedAt: fc.option(fc.double({ min: 0, max: 1, noNaN: true }), { nil: null }),
  /** Pieces of a chunked upload; null: Content-Length. */
  chunked: fc.option(fc.integer({ min: 1, max: 70_000 }), { nil: null }),
});

function bodyOf(u: { size: number; seed: number; infectedAt: number | null }): Buffer {
  const b = Buffer.alloc(u.size);
  for (let i = 0; i < u.size; i++) b[i] = 0x61 + ((i * 13 + u.seed) % 26);
  if (u.infectedAt !== null) {
    const at = Math.floor(u.infectedAt * (u.size - eicar().length));
    eicar().copy(b, at);
  }
  return b;
}

let icap: IcapTestServer;
beforeAll(async () => {
  icap = await startIcapServer({ preview: 1024, recordBodies: true });
});
afterAll(async () => {
  await icap?.close();
});

describe.each(FRAMEWORKS)('adaptive previews, property: %s', (framework) => {
  let app: App;
  const logs: IcapLog[] = [];
  beforeAll(async () => {
    app = await startApp(framework, {
      name: 'adaptive-property',
      poolGroup: icap.url(),
      serviceUri: '/avscan',
      responseTimeout: 5000,
      onLog: (l) => logs.push(l),
    });
    // Learned: 32 previews in a row answered 100 Continue.
    for (let i = 0; i < LEARN_AFTER; i++) {
      const r = await send(app.url, '/raw', {
        method: 'POST',
        headers: OCTETS,
        body: Buffer.alloc(70_000, 0x61 + (i % 26)),
      });
      expect(r.status).toBe(200);
    }
    expect(app.engine.status()[0]!.previewsSkipped).toEqual(['/avscan']);
  });
  afterAll(async () => {
    await app?.close();
  });

  it('an infected body is refused and a clean one delivered as scanned, previews stopped', async () => {
    let whole = 0;
    await checkAsyncProperty(
      `adaptive previews: ${framework}`,
      fc.asyncProperty(uploadArb, async (u) => {
        const body = bodyOf(u);
        const seen = app.seen.length;
        const before = icap.requests.length;
        const r = await send(app.url, '/raw', {
          method: 'POST',
          headers: OCTETS,
          body,
          ...(u.chunked === null ? {} : { chunked: u.chunked }),
        });
        const q = icap.requests.slice(before).find((x) => x.method === 'REQMOD');
        if (q === undefined) throw new Error('no REQMOD reached the server');
        if (u.infectedAt !== null) {
          expect(r.status).toBe(403);
          expect(app.seen.length).toBe(seen);
          expect(logs.at(-1)!.action).toBe('ICAP_BLOCKED');
        } else {
          expect(r.status).toBe(200);
          expect(app.seen.length).toBe(seen + 1);
          expect(app.seen.at(-1)!.raw!.equals(body)).toBe(true);
          // The server asked for every byte it did not see in a preview: it had them all.
          expect(q.body!.equals(body)).toBe(true);
        }
        if (q.preview === undefined) whole++;
      }),
      RUNS,
    );
    // The uploads went whole, but for the probes (one in 16). A probe whose preview holds EICAR
    // is refused from the preview: the server decided, and previews are on again for the next 32.
    expect(whole).toBeGreaterThanOrEqual(Math.min(RUNS, 15) - 1);
  });
});
