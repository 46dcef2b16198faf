/**
 * The load runs the benchmark measures in (load.ts): a window after the load's first seconds
 * (run.ts's --settle), and a paced load (paced.ts). Against a local server that notes when
 * each request arrived: the snapshot is taken inside the load, after its settling time, with
 * the load still going; a paced load sends fewer requests than the same load unpaced.
 *
 * The paced load needs wrk; under CI=true a missing wrk is a failure (.ci/run installs it).
 */
import { writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Body } from '../src/bodies.js';
import { runLoad } from '../src/load.js';
import { correctedDelay, delayFor, spread } from '../src/paced.js';
import { findOnPath, median } from '../src/util.js';

const wrk = findOnPath('wrk') !== null;
if (!wrk && process.env.CI === 'true')
  throw new Error('CI=true but wrk is not installed (apt-get install wrk)');

let server: Server;
let url: string;
/** performance.now() of each request's arrival. */
let arrivals: number[] = [];
let body: Body;

beforeAll(async () => {
  server = createServer((req, res) => {
    arrivals.push(performance.now());
    req.resume();
    req.once('end', () => res.end('ok'));
  });
  server.keepAliveTimeout = 30_000;
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/upload`;
  const file = join(tmpdir(), `icapkit-load-test-${process.pid}.bin`);
  await writeFile(file, Buffer.alloc(1024, 0x61));
  body = { id: '10k', label: '1 KiB', file, size: 1024, contentType: 'application/octet-stream', sha1: '' };
});

afterAll(async () => {
  server.closeAllConnections();
  await new Promise<void>((r) => server.close(() => r()));
});

describe('runLoad', () => {
  it('takes the snapshot after the settling time, with the load still going, and runs that much longer', async () => {
    arrivals = [];
    const start = performance.now();
    const snapshots: number[] = [];
    // Settling for 2 s: on a loaded machine the load's first request may come a second late.
    const r = await runLoad('autocannon', url, body, 2, 1, {
      settle: {
        seconds: 2,
        snapshot: async () => {
          snapshots.push(performance.now());
        },
      },
    });
    expect(snapshots).toHaveLength(1);
    const at = snapshots[0]!;
    // Not before its time (a timer fires late, never early; a busy machine makes it later).
    expect(at - start).toBeGreaterThanOrEqual(1999);
    expect(arrivals.some((t) => t < at)).toBe(true);
    expect(arrivals.some((t) => t > at)).toBe(true);
    expect(r.ok).toBeGreaterThan(0);
    expect(r.durationS).toBeGreaterThanOrEqual(2.9);
  }, 60_000);

  it('refuses a paced load without wrk, and takes no snapshot', async () => {
    const snapshots: number[] = [];
    await expect(
      runLoad('autocannon', url, body, 1, 1, {
        settle: { seconds: 1, snapshot: async () => void snapshots.push(1) },
        delayMs: 1,
      }),
    ).rejects.toThrow(/paced load needs wrk/);
    expect(snapshots).toHaveLength(0);
  });

  it.runIf(wrk)(
    'paces wrk: with a wait after each answer, fewer requests arrive',
    async () => {
      arrivals = [];
      const unpaced = await runLoad('wrk', url, body, 2, 1);
      arrivals = [];
      // 2 connections, 10 ms after each answer: at most 200 requests a second.
      const paced = await runLoad('wrk', url, body, 2, 1, { delayMs: 10 });
      expect(paced.ok).toBeGreaterThan(20);
      expect(paced.ok / paced.durationS).toBeLessThanOrEqual(205);
      expect(unpaced.ok / unpaced.durationS).toBeGreaterThan(2 * (paced.ok / paced.durationS));
    },
    60_000,
  );
});

describe('paced.ts', () => {
  it('waits the period per connection less the answer time, never less than nothing', () => {
    expect(delayFor(4000, 8, 0.1)).toBeCloseTo(1.9, 9);
    expect(delayFor(100_000, 8, 0.5)).toBe(0);
  });

  it('corrects the wait by the difference of the periods at the two rates', () => {
    // Wanted 4,000/s (2 ms per connection), got 5,000/s (1.6 ms): wait 0.4 ms longer.
    expect(correctedDelay(1.9, 4000, 5000, 8)).toBeCloseTo(2.3, 9);
    expect(correctedDelay(0.1, 4000, 2000, 8)).toBe(0);
  });

  it('gives the rounds as their median and range, the median of an even count the mean of the middle two', () => {
    expect(median([130, 90, 110])).toBe(110);
    expect(median([4, 1, 3, 2])).toBe(2.5);
    expect(median([])).toBeNaN();
    expect(spread([130.4, 89.6, 110.2, 95, 140])).toBe('110 (90-140)');
    expect(spread([87.4])).toBe('87');
  });
});
