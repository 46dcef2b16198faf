/**
 * `adaptivePreview`: bodies go without a preview to a service that asked for the rest of every
 * one of the last 32 previews (one in 16 still previewed), and are previewed again once the
 * server decides from one. What the test server received (preview or not, every byte) and what
 * the application got, through Express 5, Fastify and Koa 3.
 */
import type { IcapLog } from '@icapkit/core';
import { eicar, type IcapTestServer, startIcapServer } from '@icapkit/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type App, type Framework, startApp } from '../conformance/apps.js';
import { send } from '../support/http-client.js';

const FRAMEWORKS: Framework[] = ['express5', 'fastify', 'koa3'];
/** As documented (the profile's `adaptivePreview`, the README). */
const LEARN_AFTER = 32;
const PROBE_EVERY = 16;
const OCTETS = { 'content-type': 'application/octet-stream' };

/** A body above previewMinBodySize (64 KiB), different for each `seed`. */
function body(seed: number, n = 100_000): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = 0x61 + ((i * 7 + seed) % 26);
  return b;
}

let icap: IcapTestServer;
beforeAll(async () => {
  icap = await startIcapServer({ preview: 1024 });
});
afterAll(async () => {
  await icap?.close();
});

describe.each(FRAMEWORKS)('adaptive previews: %s', (framework) => {
  let app: App;
  const logs: IcapLog[] = [];
  beforeAll(async () => {
    icap.setScript(undefined);
    icap.reset();
    app = await startApp(framework, {
      name: 'adaptive',
      poolGroup: icap.url(),
      serviceUri: '/avscan',
      responseTimeout: 5000,
      onLog: (l) => logs.push(l),
    });
  });
  afterAll(async () => {
    await app?.close();
    icap.setScript(undefined);
  });

  /** Posts `b` to /raw: the status, and whether the server got it previewed, whole. */
  async function post(b: Buffer): Promise<{ status: number; previewed: boolean }> {
    const before = icap.requests.length;
    const r = await send(app.url, '/raw', { method: 'POST', headers: OCTETS, body: b });
    const reqmods = icap.requests.slice(before).filter((q) => q.method === 'REQMOD');
    expect(reqmods).toHaveLength(1);
    const q = reqmods[0]!;
    if (r.status === 200) {
      // Scanned equals delivered: the server had every byte it asked for (all of them, unless
      // it decided from the preview), the application got the body as sent.
      if (q.preview === undefined || q.continued) expect(q.body!.equals(b)).toBe(true);
      expect(app.seen.at(-1)!.raw!.equals(b)).toBe(true);
    }
    return { status: r.status, previewed: q.preview !== undefined };
  }

  const previewsSkipped = () => app.engine.status().flatMap((s) => s.previewsSkipped);

  it('learns, probes, keeps blocking, and previews again when the server decides from one', async () => {
    // A server that asks for the rest of every preview: previewed LEARN_AFTER times.
    for (let i = 0; i < LEARN_AFTER; i++)
      expect(await post(body(i))).toEqual({ status: 200, previewed: true });
    expect(previewsSkipped()).toEqual(['/avscan']);
    // Then whole, but for one probe in PROBE_EVERY.
    const seq: boolean[] = [];
    for (let i = 0; i < PROBE_EVERY; i++) seq.push((await post(body(100 + i))).previewed);
    expect(seq).toEqual([...Array(PROBE_EVERY - 1).fill(false), true]);
    // A threat in a body sent whole, at its start and past where a preview would end: blocked.
    for (const infected of [Buffer.concat([eicar(), body(1)]), Buffer.concat([body(2), eicar()])]) {
      const r = await post(infected);
      expect(r).toEqual({ status: 403, previewed: false });
      expect(logs.at(-1)!.request_logs.at(-1)!.action).toBe('ICAP_BLOCKED');
      expect(app.seen.at(-1)!.raw?.equals(infected) ?? false).toBe(false);
    }
    // The server starts deciding from previews (204 once a preview ends): the next probe turns previews back on.
    icap.setScript((q) => (q.method === 'REQMOD' ? { kind: 'preview-204' } : undefined));
    let sent = 0;
    while ((await post(body(200 + sent))).previewed === false) {
      sent++;
      expect(sent).toBeLessThan(PROBE_EVERY);
    }
    expect(previewsSkipped()).toEqual([]);
    expect(await post(body(300))).toEqual({ status: 200, previewed: true });
    expect(await post(body(301))).toEqual({ status: 200, previewed: true });
  });
});

describe('adaptive previews: off, small bodies, another service', () => {
  let app: App | undefined;
  afterAll(async () => {
    await app?.close();
  });

  it('adaptivePreview false previews every body above previewMinBodySize', async () => {
    icap.setScript(undefined);
    icap.reset();
    app = await startApp('express5', {
      name: 'always',
      poolGroup: icap.url(),
      serviceUri: '/avscan',
      adaptivePreview: false,
    });
    for (let i = 0; i < LEARN_AFTER + PROBE_EVERY; i++)
      expect((await send(app.url, '/raw', { method: 'POST', headers: OCTETS, body: body(i) })).status).toBe(
        200,
      );
    const reqmods = icap.requests.filter((q) => q.method === 'REQMOD');
    expect(reqmods).toHaveLength(LEARN_AFTER + PROBE_EVERY);
    expect(reqmods.every((q) => q.preview !== undefined)).toBe(true);
    expect(app.engine.status()[0]!.previewsSkipped).toEqual([]);
    await app.close();
    app = undefined;
  });

  it('bodies sent whole anyway (below previewMinBodySize) do not count', async () => {
    icap.setScript(undefined);
    icap.reset();
    app = await startApp('fastify', { name: 'small', poolGroup: icap.url(), serviceUri: '/avscan' });
    for (let i = 0; i < LEARN_AFTER + 8; i++)
      expect(
        (await send(app.url, '/raw', { method: 'POST', headers: OCTETS, body: body(i, 1000) })).status,
      ).toBe(200);
    expect(app.engine.status()[0]!.previewsSkipped).toEqual([]);
    const before = icap.requests.length;
    expect((await send(app.url, '/raw', { method: 'POST', headers: OCTETS, body: body(7) })).status).toBe(
      200,
    );
    expect(icap.requests.slice(before).find((q) => q.method === 'REQMOD')!.preview).toBeDefined();
  });
});
