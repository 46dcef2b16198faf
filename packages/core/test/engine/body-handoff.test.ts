import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { rearmRequest, requestWithBody } from '../../src/node/handoff.js';
import { consumedRequest, emittedSoon, endLater, held, readBody } from './held-body.js';

function pattern(n: number, seed = 7): Buffer {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed + (i >> 8)) & 0xff;
  return b;
}

/** Polls `check` until it is true or the deadline passes. */
async function until(check: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe('the held body handed to the request', () => {
  it('complete in memory: the stored Buffers themselves, one read, the store freed', async () => {
    const body = pattern(40 * 1024);
    // Large chunks are kept as they came; small ones share an arena.
    const store = held(body, [20 * 1024, 100, 200, 20 * 1024 - 300]);
    store.end();
    const req = await consumedRequest([body]);
    const replay = store.stream();
    store.release();
    rearmRequest(req, { body: replay, contentLength: store.received });
    expect(req.headers['content-length']).toBe(String(body.length));
    const { bytes, chunks } = await readBody(req);
    expect(bytes.equals(body)).toBe(true);
    // No copy: the first chunk is the very Buffer pushed into the store.
    expect(chunks[0]!.buffer).toBe(body.buffer);
    expect(store.complete).toBe(false);
    expect(store.held).toBe(0);
    expect(req.readableEnded).toBe(true);
  });

  it('the same bytes, headers and store state as the replay stream (the general path)', async () => {
    for (const pieces of [[1], [10 * 1024], [1, 2, 3, 4, 5], [17 * 1024, 17 * 1024, 1]]) {
      const total = pieces.reduce((a, b) => a + b, 0);
      const body = pattern(total, total);
      const results = [];
      for (const fast of [true, false]) {
        const store = held(body, pieces);
        store.end();
        const req = await consumedRequest([body], ['Transfer-Encoding', 'chunked']);
        req.headers['transfer-encoding'] = 'chunked';
        const replay = store.stream();
        store.release();
        // The general path: a replay that was already asked to read (nothing yet consumed).
        if (!fast) replay.read(0);
        rearmRequest(req, { body: replay, contentLength: store.received });
        const { bytes } = await readBody(req);
        await until(() => store.held === 0);
        results.push({
          bytes: bytes.toString('hex'),
          headers: req.headers,
          raw: req.rawHeaders,
          complete: store.complete,
        });
      }
      expect(results[0]).toEqual(results[1]);
      expect(results[0]!.bytes).toBe(body.toString('hex'));
      expect(results[0]!.headers['transfer-encoding']).toBeUndefined();
    }
  });

  it('an empty body: the request ends at once with content-length 0', async () => {
    const store = held(Buffer.alloc(0), []);
    store.end();
    const req = await consumedRequest([]);
    rearmRequest(req, { body: store.stream(), contentLength: 0 });
    const { bytes } = await readBody(req);
    expect(bytes.length).toBe(0);
    expect(req.headers['content-length']).toBe('0');
  });

  it('not complete at the hand-off: the rest is followed as it arrives', async () => {
    const body = pattern(50 * 1024);
    const store = held(body, [30 * 1024]);
    const req = await consumedRequest([body.subarray(0, 30 * 1024)]);
    rearmRequest(req, { body: store.stream(), contentLength: body.length });
    const reading = readBody(req);
    endLater(store, body.subarray(30 * 1024));
    expect((await reading).bytes.equals(body)).toBe(true);
  });

  it('a body failing after the hand-off fails the request (never a cut-off body)', async () => {
    const body = pattern(30 * 1024);
    const store = held(body, [20 * 1024]);
    const req = await consumedRequest([body.subarray(0, 20 * 1024)]);
    rearmRequest(req, { body: store.stream(), contentLength: body.length });
    const reading = readBody(req);
    setTimeout(() => store.fail(new Error('client went away')), 10);
    await expect(reading).rejects.toThrow('client went away');
  });

  it('spooled to a temp file: read back from it, the file removed once read', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'icapkit-handoff-'));
    try {
      const body = pattern(300 * 1024);
      const store = held(body, [100 * 1024, 100 * 1024, 100 * 1024], {
        memoryThreshold: 64 * 1024,
        spoolDir: dir,
      });
      store.end();
      expect(store.spooled).toBe(true);
      const req = await consumedRequest([body]);
      const replay = store.stream();
      store.release();
      rearmRequest(req, { body: replay, contentLength: store.received });
      expect((await readBody(req)).bytes.equals(body)).toBe(true);
      await until(() => !store.spooled);
      let left = await readdir(dir);
      for (let i = 0; i < 200 && left.length > 0; i++) {
        await new Promise((r) => setTimeout(r, 10));
        left = await readdir(dir);
      }
      expect(left).toEqual([]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('discarded before the application read it (the response closed): no bytes and no end, as from the replay stream', async () => {
    const seen = [];
    for (const fast of [true, false]) {
      const body = pattern(8 * 1024);
      const store = held(body, [8 * 1024]);
      store.end();
      const req = await consumedRequest([body]);
      const replay = store.stream();
      store.release();
      if (!fast) replay.read(0);
      rearmRequest(req, { body: replay, contentLength: store.received });
      // What a pass outcome's dispose does.
      store.dispose();
      replay.destroy();
      seen.push({ ...(await emittedSoon(req)), errored: req.errored !== null });
    }
    expect(seen[0]).toEqual({ chunks: 0, ended: false, errored: false });
    expect(seen[1]).toEqual(seen[0]);
  });

  it('Koa: a fresh request gets the held body the same way', async () => {
    const body = pattern(20 * 1024);
    const store = held(body, [20 * 1024]);
    store.end();
    const req = await consumedRequest([body]);
    const replay = store.stream();
    store.release();
    const fresh = requestWithBody(req, { body: replay, contentLength: store.received });
    expect(fresh).not.toBe(req);
    const { bytes, chunks } = await readBody(fresh);
    expect(bytes.equals(body)).toBe(true);
    expect(chunks[0]!.buffer).toBe(body.buffer);
    expect(fresh.headers['content-length']).toBe(String(body.length));
  });
});

describe('small chunks: the first kept as it came, the next ones coalesced with it', () => {
  it('a body of one small chunk is held without a copy', async () => {
    const body = pattern(10 * 1024);
    const store = held(body, [body.length]);
    store.end();
    expect(store.slices(body.length)[0]!.buffer).toBe(body.buffer);
    expect(store.pieces).toBe(1);
  });

  it('any split holds and replays the same bytes, in a number of pieces bounded by bytes', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.oneof(fc.integer({ min: 1, max: 300 }), fc.integer({ min: 1, max: 40 * 1024 })), {
          minLength: 1,
          maxLength: 60,
        }),
        async (pieces) => {
          const total = pieces.reduce((a, b) => a + b, 0);
          const body = pattern(total, pieces.length);
          const store = held(body, pieces);
          store.end();
          // Every piece but large ones and a kept small one is shared: bounded by bytes, not by count.
          expect(store.pieces).toBeLessThanOrEqual(2 * Math.ceil(total / (16 * 1024)) + 12);
          expect(Buffer.concat(store.slices(total)).equals(body)).toBe(true);
          const at = Math.floor(total / 3);
          expect(store.equalsAt(at, body.subarray(at, total))).toBe(true);
          const req = await consumedRequest([body]);
          rearmRequest(req, { body: store.stream(), contentLength: total });
          expect((await readBody(req)).bytes.equals(body)).toBe(true);
        },
      ),
      { numRuns: 60 },
    );
  });
});
