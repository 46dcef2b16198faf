import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { IcapLog } from '../../src/engine/log.js';
import { pass } from '../../src/engine/scan/outcome.js';
import { handoffBody, rearmRequest } from '../../src/node/handoff.js';
import { consumedRequest, endLater, held, readBody } from './held-body.js';

function pattern(n: number, seed = 7): Buffer {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed + (i >> 8)) & 0xff;
  return b;
}

function log(): IcapLog {
  return {
    action: 'ICAP_PASSED',
    request_logs: [],
    profile_name: 't',
    policy_reason: 'no-rules',
    significant: false,
    significance: [],
    http_method: 'HTTP_METHOD_POST',
    uri_path: '/upload',
    start_time: 0,
    duration: 0,
  };
}

/** A request whose body was read to its end, sent chunked. */
const chunkedRequest = (parts: Buffer[]) => consumedRequest(parts, ['Transfer-Encoding', 'chunked']);

/** Polls `check` until it is true or the deadline passes. */
async function until(check: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** The two ways an adapter hands the outcome's body over: the held replay, or the stream. */
const WAYS = ['handoffBody', 'outcome.body'] as const;

describe("a pass outcome's held body handed over without its stream", () => {
  it('complete in memory: the same bytes, headers and store state either way; no stream made', async () => {
    for (const pieces of [[1], [10 * 1024], [1, 2, 3, 4, 5], [17 * 1024, 17 * 1024, 1]]) {
      const total = pieces.reduce((a, b) => a + b, 0);
      const body = pattern(total, total);
      const results = [];
      for (const way of WAYS) {
        const store = held(body, pieces);
        store.end();
        const outcome = pass('ICAP_PASSED', log(), store, []);
        expect(outcome.contentLength).toBe(total);
        const req = await chunkedRequest([body]);
        const given = way === 'handoffBody' ? handoffBody(outcome) : outcome.body;
        expect(given).not.toBeNull();
        rearmRequest(req, { body: given!, contentLength: outcome.contentLength ?? 0 });
        const bytes = (await readBody(req)).bytes;
        await until(() => store.held === 0);
        outcome.dispose();
        results.push({ bytes: bytes.toString('hex'), headers: req.headers, raw: req.rawHeaders });
      }
      expect(results[0]).toEqual(results[1]);
      expect(results[0]!.bytes).toBe(body.toString('hex'));
      expect(results[0]!.headers['transfer-encoding']).toBeUndefined();
    }
  });

  it('the stream asked for after the held bytes were taken ends with nothing more, as before', async () => {
    const body = pattern(4096);
    const store = held(body, [4096]);
    store.end();
    const outcome = pass('ICAP_PASSED', log(), store, []);
    const req = await chunkedRequest([body]);
    rearmRequest(req, { body: handoffBody(outcome)!, contentLength: 4096 });
    expect((await readBody(req)).bytes.equals(body)).toBe(true);
    // Read later anyway (an application holding the outcome): empty, ended, not an error.
    expect((await readBody(outcome.body!)).bytes.length).toBe(0);
    outcome.dispose();
  });

  it('not complete at the hand-off, or failing after it: followed through the stream, as before', async () => {
    for (const way of WAYS) {
      const body = pattern(50 * 1024);
      const store = held(body, [30 * 1024]);
      const outcome = pass('ICAP_PASSED', log(), store, []);
      const req = await chunkedRequest([body.subarray(0, 30 * 1024)]);
      const given = way === 'handoffBody' ? handoffBody(outcome) : outcome.body;
      rearmRequest(req, { body: given!, contentLength: body.length });
      const reading = readBody(req);
      endLater(store, body.subarray(30 * 1024));
      expect((await reading).bytes.equals(body)).toBe(true);
      outcome.dispose();
    }
    for (const way of WAYS) {
      const body = pattern(30 * 1024);
      const store = held(body, [20 * 1024]);
      const outcome = pass('ICAP_PASSED', log(), store, []);
      const req = await chunkedRequest([body.subarray(0, 20 * 1024)]);
      const given = way === 'handoffBody' ? handoffBody(outcome) : outcome.body;
      rearmRequest(req, { body: given!, contentLength: body.length });
      const reading = readBody(req);
      setTimeout(() => store.fail(new Error('client went away')), 10);
      await expect(reading).rejects.toThrow('client went away');
      outcome.dispose();
    }
  });

  it('spooled to a temp file: read back through the stream either way', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'icapkit-heldpass-'));
    try {
      for (const way of WAYS) {
        const body = pattern(300 * 1024);
        const store = held(body, [100 * 1024, 100 * 1024, 100 * 1024], {
          memoryThreshold: 64 * 1024,
          spoolDir: dir,
        });
        store.end();
        const outcome = pass('ICAP_PASSED', log(), store, []);
        const req = await chunkedRequest([body]);
        const given = way === 'handoffBody' ? handoffBody(outcome) : outcome.body;
        rearmRequest(req, { body: given!, contentLength: body.length });
        expect((await readBody(req)).bytes.equals(body)).toBe(true);
        await until(() => !store.spooled);
        outcome.dispose();
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('disposed before the application read it: no bytes and no end either way; the stream asked for later is destroyed', async () => {
    const seen = [];
    for (const way of WAYS) {
      const body = pattern(8 * 1024);
      const store = held(body, [8 * 1024]);
      store.end();
      const outcome = pass('ICAP_PASSED', log(), store, []);
      const req = await chunkedRequest([body]);
      const given = way === 'handoffBody' ? handoffBody(outcome) : outcome.body;
      rearmRequest(req, { body: given!, contentLength: body.length });
      outcome.dispose();
      let bytes = 0;
      let ended = false;
      req.on('data', (c: Buffer) => {
        bytes += c.length;
      });
      req.on('end', () => {
        ended = true;
      });
      // Several turns of the event loop for anything that would come.
      for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
      expect(outcome.body!.destroyed).toBe(true);
      seen.push({ bytes, ended });
    }
    expect(seen[0]).toEqual(seen[1]);
    expect(seen[0]).toEqual({ bytes: 0, ended: false });
  });

  it('disposed after the stream was made: the stream is destroyed, as before', async () => {
    const body = pattern(1024);
    const store = held(body, [1024, 0]);
    const outcome = pass('ICAP_PASSED', log(), store, []);
    const stream = outcome.body!;
    expect(outcome.body).toBe(stream);
    outcome.dispose();
    expect(stream.destroyed).toBe(true);
    outcome.dispose();
  });
});
