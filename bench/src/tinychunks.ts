/**
 * "1 MiB in 1-byte chunks vs the plain framework": a body sent as 1-byte HTTP chunks (Nagle
 * off, one write per chunk), so the application's HTTP parser hands it over one byte at a time,
 * whatever TCP does. Each framework runs twice in its own process: alone (no scanning) and with
 * icapkit against the embedded ICAP server (204 after reading the whole body). Reported per
 * framework: the time to the answer, the application's CPU seconds and its peak RSS growth,
 * and the ratios icapkit / plain (the goal: time ≤ 2×, RSS growth ≤ 2× the body). Each pair
 * runs `--repeat` times (default 5; fresh processes, plain and scanned alternating) and the
 * medians are reported: a fresh Node process's peak RSS moves by a few MiB from run to run and
 * sometimes jumps by ~17 MiB during such an upload, plain or scanned alike (V8 growing its young
 * generation), which one run per side turned into ratios of -15× to 19× the body.
 *
 * Each process then takes a second body the same way, measured from the RSS before it: the
 * first upload in a fresh process also pays what is paid once (V8 compiling the code the upload
 * runs, icapkit's more than the framework's alone; the young generation growing), the second
 * only what a body costs. Both are reported; the goal is about the memory a body costs.
 *
 * Beside RSS, the peak growth of the process's `arrayBuffers` (`process.memoryUsage()`, sampled
 * every 5 ms by app.js with BENCH_MEM_PEAK=1): Buffers, where icapkit holds a body. RSS also
 * moves with the pages malloc and V8 keep or give back, by up to a few MiB, plain or scanned;
 * the Buffers' growth says what icapkit itself allocated for the body.
 *
 * Every process starts with its young generation at its full default size
 * (TINY_CHUNK_NODE_FLAGS): it otherwise grows once, by 16 MiB of committed heap, at some body of
 * a 1-byte-chunk upload (the first, second or third, plain and scanned alike: V8 grows it after
 * enough objects survived its scavenges), and the body that step lands in reads as 16 MiB
 * heavier than the others.
 *
 *   node bench/dist/tinychunks.js [--size=1048576] [--frameworks=express,fastify,koa] [--repeat=5]
 *                                 [--node-flags='--min-semi-space-size=16']
 *   node bench/dist/run.js --tiny-chunks          (the same, from the main script)
 *
 * Prints a markdown table and a `RESULT {json}` line.
 */
import { connect } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  type Child,
  cpuOf,
  killAllChildren,
  median,
  memOf,
  resetPeakRss,
  sleep,
  startChild,
} from './util.js';

const HERE = dirname(fileURLToPath(import.meta.url));

/** Node 20's young generation at its full default size (16 MiB semi-spaces) from the start. */
export const TINY_CHUNK_NODE_FLAGS: readonly string[] = ['--min-semi-space-size=16'];

export interface TinyChunkRow {
  framework: string;
  scanned: boolean;
  status: number;
  ms: number;
  cpuS: number;
  rssGrowthMiB: number;
  /** Each run's peak RSS growth (MiB), the median of which is rssGrowthMiB. */
  rssRuns: number[];
  /** The median peak growth of `arrayBuffers` (Buffers, where a held body lives), MiB. */
  buffersGrowthMiB: number;
  /** The second body in the same process: the median time and peak RSS growth, and each run's growth. */
  second: { ms: number; rssGrowthMiB: number; rssRuns: number[]; buffersGrowthMiB: number };
}

export interface TinyChunkReport {
  size: number;
  rows: TinyChunkRow[];
  ratios: Array<{
    framework: string;
    time: number;
    cpu: number;
    /** (peak RSS growth with icapkit − without) / body size. */
    extraRssOverBody: number;
    /** The same for the second body of each process. */
    extraRssOverBodySecond: number;
    /** (peak `arrayBuffers` growth with icapkit − without) / body size, second body. */
    extraBuffersOverBodySecond: number;
  }>;
}

/** Sends `size` body bytes as 1-byte chunks; resolves with the status and the ms to the answer. */
export function sendTinyChunks(
  port: number,
  size: number,
  path = '/upload',
  timeoutMs = 120_000,
): Promise<{ status: number; ms: number }> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port });
    socket.setNoDelay(true);
    const t0 = performance.now();
    let got = '';
    let done = false;
    const timer = setTimeout(() => finish(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
    const finish = (err?: Error) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(got)?.[1] ?? 0);
      if (err !== undefined && status === 0) reject(err);
      else resolve({ status, ms: performance.now() - t0 });
    };
    socket.setEncoding('latin1');
    socket.on('data', (d: string) => {
      got += d;
      // One complete response head is enough (the body of the answer is a digest or a short page).
      if (/\r\n\r\n/.test(got)) finish();
    });
    socket.on('error', (err) => finish(err));
    socket.on('close', () => finish(new Error('closed without an answer')));
    socket.once('connect', async () => {
      socket.write(
        `POST ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n`,
      );
      const frame = Buffer.from('1\r\na\r\n');
      for (let i = 0; i < size && !done; i++) {
        if (!socket.write(frame)) await new Promise<void>((r) => socket.once('drain', () => r()));
      }
      if (!done) socket.write('0\r\n\r\n');
    });
  });
}

interface Upload {
  status: number;
  ms: number;
  cpuS: number;
  rssGrowthMiB: number;
  /** Peak growth of the process's `arrayBuffers` (Buffers: where a held body lives), MiB. */
  buffersGrowthMiB: number;
}

/** The app's memory peaks since its last /__stats (app.js, BENCH_MEM_PEAK=1), and its values now. */
async function memPeaks(port: number): Promise<{ peak: number; now: number }> {
  const res = await fetch(`http://127.0.0.1:${port}/__stats`, { signal: AbortSignal.timeout(10_000) });
  const j = (await res.json()) as {
    mem: { peak: { arrayBuffers: number }; now: { arrayBuffers: number } } | null;
  };
  if (j.mem === null) throw new Error('the application does not sample its memory (BENCH_MEM_PEAK=1)');
  return { peak: j.mem.peak.arrayBuffers, now: j.mem.now.arrayBuffers };
}

/** One body in 1-byte chunks: time, CPU and peak RSS growth over the RSS before it. */
async function upload(app: Child, size: number): Promise<Upload> {
  await sleep(200);
  const port = app.ready.port as number;
  const buffers0 = (await memPeaks(port)).now;
  const rss0 = memOf(app.pid).rss;
  resetPeakRss(app.pid);
  const cpu0 = cpuOf(app.pid);
  const r = await sendTinyChunks(port, size);
  const cpuS = cpuOf(app.pid) - cpu0;
  const hwm = memOf(app.pid).hwm;
  const buffers = (await memPeaks(port)).peak;
  return {
    status: r.status,
    ms: r.ms,
    cpuS,
    rssGrowthMiB: Math.max(0, hwm - rss0) / 2 ** 20,
    buffersGrowthMiB: Math.max(0, buffers - buffers0) / 2 ** 20,
  };
}

/** A fresh process's first body, then its second. */
async function measure(app: Child, size: number): Promise<{ first: Upload; second: Upload }> {
  const first = await upload(app, size);
  const second = await upload(app, size);
  return { first, second };
}

export async function runTinyChunks(
  size = 1024 * 1024,
  frameworks: string[] = ['express', 'fastify', 'koa'],
  repeat = 5,
  nodeFlags: readonly string[] = TINY_CHUNK_NODE_FLAGS,
): Promise<TinyChunkReport> {
  const icap = await startChild(process.execPath, [join(HERE, 'icap204.js')], { timeoutMs: 20_000 });
  const rows: TinyChunkRow[] = [];
  try {
    for (const framework of frameworks) {
      const runs = new Map<boolean, Array<{ first: Upload; second: Upload }>>([
        [false, []],
        [true, []],
      ]);
      for (let i = 0; i < repeat; i++) {
        for (const scanned of [false, true]) {
          const args = [...nodeFlags, join(HERE, 'app.js'), framework];
          if (scanned) args.push(`icap://127.0.0.1:${icap.ready.port as number}`, '/avscan');
          const app = await startChild(process.execPath, args, {
            timeoutMs: 20_000,
            env: { BENCH_PROFILE: JSON.stringify({ bufferSize: 4 * size }), BENCH_MEM_PEAK: '1' },
          });
          try {
            runs.get(scanned)!.push(await measure(app, size));
          } finally {
            await app.stop();
          }
        }
      }
      for (const scanned of [false, true]) {
        const both = runs.get(scanned)!;
        const rs = both.map((r) => r.first);
        const seconds = both.map((r) => r.second);
        const uploads = [...rs, ...seconds];
        rows.push({
          framework,
          scanned,
          // A failed upload shows: the worst status, not the median's.
          status: uploads.every((r) => r.status === 200)
            ? 200
            : uploads.find((r) => r.status !== 200)!.status,
          ms: median(rs.map((r) => r.ms)),
          cpuS: median(rs.map((r) => r.cpuS)),
          rssGrowthMiB: median(rs.map((r) => r.rssGrowthMiB)),
          rssRuns: rs.map((r) => r.rssGrowthMiB),
          buffersGrowthMiB: median(rs.map((r) => r.buffersGrowthMiB)),
          second: {
            ms: median(seconds.map((r) => r.ms)),
            rssGrowthMiB: median(seconds.map((r) => r.rssGrowthMiB)),
            rssRuns: seconds.map((r) => r.rssGrowthMiB),
            buffersGrowthMiB: median(seconds.map((r) => r.buffersGrowthMiB)),
          },
        });
      }
    }
  } finally {
    await icap.stop();
  }
  return { size, rows, ratios: tinyRatios(rows, size) };
}

/** Each framework's icapkit ÷ plain: time, CPU, and the extra RSS growth over the body size. */
export function tinyRatios(rows: readonly TinyChunkRow[], size: number): TinyChunkReport['ratios'] {
  const frameworks = [...new Set(rows.map((r) => r.framework))];
  return frameworks.map((framework) => {
    const plain = rows.find((r) => r.framework === framework && !r.scanned)!;
    const scanned = rows.find((r) => r.framework === framework && r.scanned)!;
    return {
      framework,
      time: scanned.ms / plain.ms,
      cpu: scanned.cpuS / Math.max(plain.cpuS, 0.01),
      extraRssOverBody: ((scanned.rssGrowthMiB - plain.rssGrowthMiB) * 2 ** 20) / size,
      extraRssOverBodySecond: ((scanned.second.rssGrowthMiB - plain.second.rssGrowthMiB) * 2 ** 20) / size,
      extraBuffersOverBodySecond:
        ((scanned.second.buffersGrowthMiB - plain.second.buffersGrowthMiB) * 2 ** 20) / size,
    };
  });
}

export function renderTinyChunks(report: TinyChunkReport): string {
  const lines = [
    `1 MiB-class body (${report.size} bytes) in 1-byte chunks, Nagle off (medians of ${report.rows[0]?.rssRuns.length ?? 0} fresh processes each):`,
    '',
    '| Framework | Path | status | time ms | app CPU s | peak RSS growth MiB | each run | second body: time ms | peak RSS growth MiB | each run | Buffers growth MiB: first / second body |',
    '| --------- | ---- | -----: | ------: | --------: | ------------------: | -------- | -------------------: | ------------------: | -------- | --------------------------------------: |',
  ];
  const each = (xs: number[]) => xs.map((x) => x.toFixed(1)).join(', ');
  for (const r of report.rows) {
    lines.push(
      `| ${r.framework} | ${r.scanned ? 'icapkit → embedded 204' : 'plain'} | ${r.status} | ${r.ms.toFixed(0)} | ${r.cpuS.toFixed(2)} | ${r.rssGrowthMiB.toFixed(1)} | ${each(r.rssRuns)} | ` +
        `${r.second.ms.toFixed(0)} | ${r.second.rssGrowthMiB.toFixed(1)} | ${each(r.second.rssRuns)} | ` +
        `${r.buffersGrowthMiB.toFixed(2)} / ${r.second.buffersGrowthMiB.toFixed(2)} |`,
    );
  }
  lines.push(
    '',
    '| Framework | time icapkit/plain | CPU icapkit/plain | extra RSS growth / body | the same, second body | extra Buffers growth / body, second body |',
  );
  lines.push(
    '| --------- | ----------------: | ----------------: | ----------------: | ----------------: | ----------------: |',
  );
  for (const q of report.ratios) {
    lines.push(
      `| ${q.framework} | ${q.time.toFixed(2)}× | ${q.cpu.toFixed(2)}× | ${q.extraRssOverBody.toFixed(2)}× | ${q.extraRssOverBodySecond.toFixed(2)}× | ${q.extraBuffersOverBodySecond.toFixed(2)}× |`,
    );
  }
  return lines.join('\n');
}

if (process.argv[1]?.endsWith('tinychunks.js') === true) {
  let size = 1024 * 1024;
  let frameworks = ['express', 'fastify', 'koa'];
  let repeat = 5;
  let nodeFlags: readonly string[] = TINY_CHUNK_NODE_FLAGS;
  for (const arg of process.argv.slice(2)) {
    if (arg.startsWith('--size=')) size = Number(arg.slice(7));
    else if (arg.startsWith('--node-flags=')) nodeFlags = arg.slice(13).split(' ').filter(Boolean);
    else if (arg.startsWith('--repeat=')) repeat = Number(arg.slice(9));
    else if (arg.startsWith('--frameworks=')) frameworks = arg.slice(13).split(',');
    else throw new Error(`unknown argument ${arg}`);
  }
  runTinyChunks(size, frameworks, repeat, nodeFlags)
    .then((report) => {
      console.log(renderTinyChunks(report));
      console.log(`RESULT ${JSON.stringify(report)}`);
    })
    .catch((err: unknown) => {
      console.error(err);
      killAllChildren();
      process.exit(1);
    });
}
