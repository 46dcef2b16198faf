/**
 * HTTP load: wrk (Debian package, C, cheap on CPU) when installed, else autocannon (npm,
 * a devDependency of this package). Both keep connections alive, one request in flight per
 * connection; the result is the same shape either way.
 */
import { readFile } from 'node:fs/promises';
import { Agent, request } from 'node:http';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import type { Body } from './bodies.js';
import { findOnPath, startChild } from './util.js';

export type LoadTool = 'wrk' | 'autocannon';

export interface LoadResult {
  /** Completed requests with a 2xx/3xx answer. */
  ok: number;
  /** Non-2xx answers, socket errors and timeouts. */
  errors: number;
  durationS: number;
  rps: number;
  /** ms */
  p50: number;
  p99: number;
}

export function pickTool(): LoadTool {
  if (process.env.BENCH_LOAD_TOOL === 'autocannon') return 'autocannon';
  return findOnPath('wrk') ? 'wrk' : 'autocannon';
}

const LUA = fileURLToPath(new URL('../lua/post.lua', import.meta.url));

/** What else a load run does (see {@link runLoad}). */
export interface LoadOptions {
  settle?: { seconds: number; snapshot: () => Promise<void> };
  /**
   * wrk only: each connection waits this many ms (a mean, fractions allowed) after an answer
   * before it sends its next request: a paced load (paced.ts).
   */
  delayMs?: number;
}

/**
 * Runs the load for `seconds` (wrk: whole seconds, at least 1). With `settle`, the load runs
 * `settle.seconds` longer, and `settle.snapshot` is called that long after it started (and awaited
 * before the result is given): the caller reads its counters there, so that what it measures is
 * the last `seconds` of one load run, not the first moments after the clients changed (new
 * connections, a client sending other headers than the warm-up's: V8 deoptimizes code that met
 * only the warm-up's objects, and compiles it again, see bench/README.md, nineteenth round).
 */
export async function runLoad(
  tool: LoadTool,
  url: string,
  body: Body,
  connections: number,
  seconds: number,
  { settle, delayMs }: LoadOptions = {},
): Promise<LoadResult> {
  const total = seconds + (settle?.seconds ?? 0);
  if (delayMs !== undefined && tool !== 'wrk') throw new Error('a paced load needs wrk');
  const load =
    tool === 'wrk'
      ? runWrk(url, body, connections, total, delayMs)
      : runAutocannon(url, body, connections, total);
  if (settle === undefined) return load;
  // The snapshot, once its time came (a load that fails before then ends without one).
  let snapshot: Promise<void> | undefined;
  const timer = setTimeout(() => {
    snapshot = settle.snapshot();
    // Awaited below when the load succeeds; otherwise the load's error is the one thrown.
    snapshot.catch(() => undefined);
  }, settle.seconds * 1000);
  try {
    const result = await load;
    await snapshot;
    return result;
  } finally {
    clearTimeout(timer);
  }
}

async function runWrk(
  url: string,
  body: Body,
  connections: number,
  seconds: number,
  delayMs: number | undefined,
): Promise<LoadResult> {
  const u = new URL(url);
  const threads = Math.min(2, connections);
  const secs = Math.max(1, Math.round(seconds));
  const child = await startChild(
    findOnPath('wrk') ?? 'wrk',
    [
      '-t',
      String(threads),
      '-c',
      String(connections),
      '-d',
      `${secs}s`,
      '--timeout',
      '120s',
      '-s',
      LUA,
      `${u.origin}`,
    ],
    {
      waitReady: false,
      env: {
        BENCH_BODY: body.file,
        BENCH_CT: body.contentType,
        BENCH_PATH: u.pathname,
        ...(delayMs === undefined ? {} : { BENCH_DELAY_MS: String(delayMs) }),
      },
    },
  );
  const r = (await child.result()) as Record<string, number>;
  const durationS = r.durationUs! / 1e6;
  const sockErrors = r.connect! + r.read! + r.write! + r.timeout!;
  const ok = Math.max(0, r.requests! - r.status!);
  return {
    ok,
    errors: r.status! + sockErrors,
    durationS,
    rps: ok / durationS,
    p50: r.p50Us! / 1000,
    p99: r.p99Us! / 1000,
  };
}

async function runAutocannon(
  url: string,
  body: Body,
  connections: number,
  seconds: number,
): Promise<LoadResult> {
  const require = createRequire(import.meta.url);
  const bin = require.resolve('autocannon/autocannon.js');
  const child = await startChild(
    process.execPath,
    [
      bin,
      '-m',
      'POST',
      '-i',
      body.file,
      '-H',
      `content-type=${body.contentType}`,
      '-c',
      String(connections),
      '-d',
      String(Math.max(1, seconds)),
      '-t',
      '120',
      '-j',
      url,
    ],
    { waitReady: false },
  );
  await child.result().catch(() => undefined);
  // autocannon -j prints one JSON object on stdout (no RESULT prefix).
  const text = child.output();
  const start = text.indexOf('{"url"');
  if (start === -1) throw new Error(`autocannon gave no JSON result:\n${text}`);
  const r = JSON.parse(text.slice(start, text.lastIndexOf('}') + 1)) as {
    requests: { total: number };
    latency: { p50: number; p99: number };
    non2xx: number;
    errors: number;
    timeouts: number;
    duration: number;
    '2xx': number;
    '3xx'?: number;
  };
  const ok = r['2xx'] + (r['3xx'] ?? 0);
  return {
    ok,
    errors: r.non2xx + r.errors + r.timeouts,
    durationS: r.duration,
    rps: ok / r.duration,
    p50: r.latency.p50,
    p99: r.latency.p99,
  };
}

/**
 * Warm-up that ends cleanly: `connections` keep-alive loops, each finishing its request in
 * flight before it stops. (A load generator stopping at its deadline aborts the requests in
 * flight; icapkit then has to drop the ICAP connections of those transactions, and their
 * replacements would be counted as "connections opened" by the measured run.)
 */
export async function warmUp(
  url: string,
  body: Body,
  connections: number,
  seconds: number,
  until: { requests: number; maxSeconds: number } = { requests: 0, maxSeconds: seconds },
): Promise<number> {
  const data = await readFile(body.file);
  const u = new URL(url);
  const start = performance.now();
  const deadline = start + seconds * 1000;
  const hardDeadline = start + Math.max(seconds, until.maxSeconds) * 1000;
  let answered = 0;
  let errors = 0;
  // At least `seconds`, and on until `until.requests` were answered (V8 compiles a fresh
  // process's code over its first few hundred requests), never past `until.maxSeconds`.
  const more = () => {
    const now = performance.now();
    return now < deadline || (answered < until.requests && now < hardDeadline);
  };
  const loop = async () => {
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    try {
      while (more()) {
        await new Promise<void>((resolve) => {
          const req = request(
            {
              host: u.hostname,
              port: u.port,
              path: u.pathname,
              method: 'POST',
              agent,
              timeout: 120_000,
              headers: { 'content-type': body.contentType, 'content-length': data.length },
            },
            (res) => {
              if ((res.statusCode ?? 0) >= 400) errors++;
              answered++;
              res.resume();
              res.once('end', resolve);
              res.once('error', () => resolve());
            },
          );
          req.once('timeout', () => req.destroy());
          req.once('error', () => {
            errors++;
            resolve();
          });
          req.end(data);
        });
      }
    } finally {
      agent.destroy();
    }
  };
  await Promise.all(Array.from({ length: connections }, loop));
  return errors;
}
