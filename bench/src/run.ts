/**
 * icapkit benchmark: starts c-icap (ClamAV `avscan`, `echo`), the embedded 204 server, Squid and
 * the applications on loopback, runs the same HTTP load against every path and prints one
 * markdown table plus ratios. See bench/README.md.
 *
 *   node bench/dist/run.js [--short] [--only=REGEX] [--out=DIR] [--update-readme]
 *
 * --short (or BENCH_SHORT=1): one small cell per path, a few seconds each (CI smoke test).
 * --only=REGEX: only paths whose id matches (e.g. --only='express|squid|raw').
 * --cells=LIST: only these cells, e.g. --cells=10k/8,1m/1 (bodies 10k, 1m, 32m, mp5), every selected path.
 * --out=DIR: where latest.md / latest.json go (default bench/results).
 * --update-readme: also replace the table in bench/README.md.
 * --from=FILE: run nothing; render the results saved in FILE (a latest.json) again.
 * --warm-requests=N: full mode warms each fresh application (and Squid's origin) up for a second
 *   and until it has answered N requests, at most 10 s (10 KiB cells: 10 s less --settle)
 *   (default 1000; 0: one second only).
 * --warm-requests-10k=N: the same for the 10 KiB cells (default 30000: V8 is still compiling a
 *   fresh process's code after 1,000 of them, see steady.ts; 0: one second only).
 * --settle=S: a 10 KiB cell's load run (wrk or autocannon) goes on S seconds longer, and the cell
 *   is measured over its last measure seconds only (default 2 in full mode, 0 in short mode):
 *   req/s and the CPU columns from the requests the application answered in that window.
 *   Latencies and errors are the load tool's, over its whole run.
 * --node-flags='...': the V8/Node options every Node process of the run starts with (applications,
 *   Squid's origin, the ICAP generators); default --heap-growing-percent=300 --max-semi-space-size=64
 *   (see DEFAULT_NODE_FLAGS in util.ts),
 *   --node-flags= for none.
 * --stages: the applications publish the scan's per-stage CPU and wall time (BENCH_STAGES=1, a few
 *   µs per request); the report gets a per-stage table. Per-stage CPU is the process's, so it is
 *   one request's only with one client (e.g. --stages --cells=10k/1 --only='204|ceiling').
 * --tiny-chunks: run only the "1 MiB in 1-byte chunks vs the plain framework" row (tinychunks.ts:
 *   time and CPU ratios, RSS growth; needs no c-icap or Squid).
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import { cpus, totalmem } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type Body, type BodyId, bodyDigest, makeBodies } from './bodies.js';
import { CICAP_TUNING, type CIcap, cIcapMissing, eicarBytes, groupPids, startCIcap } from './cicap.js';
import { startTcpCounter, type TcpCounter } from './counter.js';
import { type LoadResult, type LoadTool, pickTool, runLoad, warmUp } from './load.js';
import { type Squid, squidMissing, squidVersion, startSquid } from './squid.js';
import { type StageSnapshot, stageDelta } from './stages.js';
import { blankResult, renderReport } from './table.js';
import { renderTinyChunks, runTinyChunks } from './tinychunks.js';
import {
  type Child,
  cpuOf,
  DEFAULT_NODE_FLAGS,
  findOnPath,
  killAllChildren,
  machineBusy,
  memOf,
  resetPeakRss,
  sleep,
  startChild,
  statsOf,
} from './util.js';

const HERE = dirname(fileURLToPath(import.meta.url));
const BENCH_DIR = join(HERE, '..');

/* ------------------------------------------------------------------ paths and cells */

export type Framework = 'express' | 'fastify' | 'koa' | 'hono';
export type Service = 'avscan' | 'echo' | '204';

export interface PathDef {
  id: string;
  kind: 'ceiling' | 'icapkit' | 'squid' | 'raw' | 'rawparts' | 'floor' | 'hold';
  framework?: Framework;
  service?: Service;
  /** 1: every cell; 2: the reduced set (see CELLS). */
  tier: 1 | 2;
}

export interface CellDef {
  body: BodyId;
  clients: number;
}

// hono: @icapkit/hono on @hono/node-server (the Web Request path of @icapkit/web).
const FRAMEWORKS: Framework[] = ['express', 'fastify', 'koa', 'hono'];
const SERVICES: Service[] = ['avscan', 'echo', '204'];

export const PATHS: PathDef[] = [
  ...FRAMEWORKS.map(
    (f): PathDef => ({ id: `ceiling-${f}`, kind: 'ceiling', framework: f, tier: f === 'express' ? 1 : 2 }),
  ),
  ...FRAMEWORKS.flatMap((f) =>
    SERVICES.map(
      (s): PathDef => ({
        id: `${f}-${s}`,
        kind: 'icapkit',
        framework: f,
        service: s,
        tier: f === 'express' ? 1 : 2,
      }),
    ),
  ),
  { id: 'squid-avscan', kind: 'squid', framework: 'express', service: 'avscan', tier: 1 },
  { id: 'squid-echo', kind: 'squid', framework: 'express', service: 'echo', tier: 1 },
  ...SERVICES.map((s): PathDef => ({ id: `raw-${s}`, kind: 'raw', service: s, tier: 1 })),
  // A form sent as icapkit's per-file mode sends it (a REQMOD per part, 4 at once): multipart
  // cells only, against the two services Squid is measured with (the targets' zero-cost bound).
  ...(['avscan', 'echo'] as const).map(
    (s): PathDef => ({ id: `rawparts-${s}`, kind: 'rawparts', service: s, tier: 1 }),
  ),
  // One prebuilt REQMOD written per exchange on a kept-alive socket: the least any Node client spends.
  { id: 'floor-204', kind: 'floor', service: '204', tier: 1 },
  // The framework with holdfloor.ts instead of icapkit: the least an in-process ICAP middleware costs.
  ...(['express', 'fastify', 'koa'] as const).map(
    (f): PathDef => ({
      id: `hold-${f}`,
      kind: 'hold',
      framework: f,
      service: '204',
      tier: 2,
    }),
  ),
];

/** Full mode. Order: every path runs a cell before the next cell starts (drift hits all alike). */
export const CELLS: CellDef[] = [
  { body: '10k', clients: 1 },
  { body: '10k', clients: 8 },
  { body: '10k', clients: 64 },
  { body: '1m', clients: 1 },
  { body: '1m', clients: 8 },
  { body: '1m', clients: 64 },
  { body: 'mp5', clients: 8 },
  { body: '32m', clients: 1 },
  { body: '32m', clients: 8 },
];

/** Which (path, cell) pairs run in full mode; the others "add nothing" (README explains). */
export function runs(path: PathDef, cell: CellDef): boolean {
  if (path.kind === 'rawparts') return cell.body === 'mp5';
  // The floor is a reference for the per-request cells, not a capacity.
  if (path.kind === 'floor') return cell.body === '10k' || (cell.body === '1m' && cell.clients === 8);
  // The hold floor is a reference for the "CPU above the framework" goal (10 KiB, 8 clients).
  if (path.kind === 'hold') return cell.body === '10k' && cell.clients === 8;
  if (cell.body === '32m') {
    // 32 MiB: only the comparison that matters (avscan, ours vs Squid vs raw) and the isolation (204).
    return (
      (path.kind === 'ceiling' && path.framework === 'express') ||
      (path.service !== 'echo' && path.tier === 1 && path.kind !== 'ceiling')
    );
  }
  if (path.tier === 2) {
    // Fastify and Koa share the engine with Express: the cells where the framework could differ.
    return (
      (cell.body === '10k' && cell.clients === 8) ||
      (cell.body === '1m' && cell.clients === 8) ||
      cell.body === 'mp5'
    );
  }
  return true;
}

/* ------------------------------------------------------------------ results */

export interface CellResult {
  path: string;
  kind: PathDef['kind'];
  framework: Framework | undefined;
  service: Service | undefined;
  body: BodyId;
  bodyLabel: string;
  clients: number;
  ok: number;
  errors: number;
  rps: number;
  p50: number;
  p99: number;
  /** Peak RSS (bytes) of the process holding the bodies: the app, or Squid; the generator for raw. */
  peakRss: number;
  /** RSS right after start (bytes), before any request. */
  baseRss: number;
  /** ICAP TCP connections accepted by the counting proxy during the cell (warm-up included). */
  icapOpened: number | undefined;
  icapPeakOpen: number | undefined;
  /** Of those, opened during the measured window. */
  icapOpenedMeasured: number | undefined;
  /** What the client itself says it created (icapkit engine / raw IcapClient). */
  clientCreated: number | undefined;
  /** CPU used during the measured window, in % of one core. */
  cpuApp: number | undefined;
  /**
   * CPU µs per answered request over the measured window: the application's own
   * (`process.cpuUsage()`); for Squid, Squid's plus its origin application's; for the raw client,
   * the load generator's (what the ICAP client alone costs).
   */
  cpuUsPerReq?: number | undefined;
  /** CPU µs of the ICAP server (every c-icap process, or the embedded server) per answered request. */
  cpuUsPerReqIcap?: number | undefined;
  /** Mark-compacts of the Node process answering the load (app or Squid's origin) per 1000 requests. */
  majorGcPerK?: number | undefined;
  /** Per-stage totals of the scan over the measured window (only with --stages). */
  stages?: StageSnapshot | undefined;
  cpuIcap: number | undefined;
  cpuOrigin: number | undefined;
  /**
   * CPU µs per answered request of the whole machine over the measured window (all cores,
   * every process and the kernel; /proc/stat): with the per-process figures, where the
   * machine's CPU goes (the rest is the load generator, the kernel's softirq work, anything else).
   */
  cpuUsPerReqMachine?: number | undefined;
  /** The whole machine's busy CPU over the measured window, in % of one core (cores x 100 = all busy). */
  cpuMachine?: number | undefined;
  note: string | undefined;
}

export interface Machine {
  date: string;
  nproc: number;
  cpuModel: string;
  ramGiB: number;
  node: string;
  kernel: string;
  cicap: string;
  squid: string;
  loadTool: string;
  mode: 'full' | 'short';
  warmupS: number;
  /** The warm-up also goes on until this many requests were answered (0: time only)... */
  warmRequests?: number;
  /** The same for the 10 KiB cells (absent: as the others). */
  warmRequests10k?: number;
  /** ...but never past this many seconds. */
  warmMaxS?: number;
  measureS: number;
  measure32mS: number;
  /**
   * Seconds of each 10 KiB cell's load run before its measured window; absent in
   * runs made before it existed, which measured from the load's start.
   */
  settleS?: number;
  totalS: number;
  /** V8/Node options every Node process of the run was started with (apps, origins, generators). */
  nodeFlags?: string[];
}

/* ------------------------------------------------------------------ main */

interface Args {
  short: boolean;
  only: RegExp | undefined;
  out: string;
  updateReadme: boolean;
  cells: CellDef[] | undefined;
  from: string | undefined;
  tinyChunks: boolean;
  stages: boolean;
  warmRequests: number | undefined;
  warmRequests10k: number | undefined;
  settleS: number | undefined;
  nodeFlags: string[] | undefined;
}

function parseArgs(argv: string[]): Args {
  const a: Args = {
    short: process.env.BENCH_SHORT === '1' || process.env.BENCH_SHORT === 'true',
    only: undefined,
    out: join(BENCH_DIR, 'results'),
    updateReadme: false,
    cells: undefined,
    from: undefined,
    tinyChunks: false,
    stages: false,
    warmRequests: undefined,
    warmRequests10k: undefined,
    settleS: undefined,
    nodeFlags: undefined,
  };
  for (const arg of argv) {
    if (arg === '--short') a.short = true;
    else if (arg.startsWith('--only=')) a.only = new RegExp(arg.slice(7));
    else if (arg.startsWith('--out=')) a.out = arg.slice(6);
    else if (arg === '--update-readme') a.updateReadme = true;
    else if (arg.startsWith('--from=')) a.from = arg.slice(7);
    else if (arg === '--tiny-chunks') a.tinyChunks = true;
    else if (arg === '--stages') a.stages = true;
    else if (arg.startsWith('--warm-requests=')) a.warmRequests = Number(arg.slice(16));
    else if (arg.startsWith('--warm-requests-10k=')) a.warmRequests10k = Number(arg.slice(20));
    else if (arg.startsWith('--settle=')) a.settleS = Number(arg.slice(9));
    else if (arg.startsWith('--node-flags=')) a.nodeFlags = arg.slice(13).split(' ').filter(Boolean);
    else if (arg.startsWith('--cells=')) {
      a.cells = arg
        .slice(8)
        .split(',')
        .map((c) => {
          const [body, clients] = c.split('/');
          if (!['10k', '1m', '32m', 'mp5'].includes(body ?? '') || !(Number(clients) > 0)) {
            throw new Error(`--cells: ${c} is not BODY/CLIENTS (BODY: 10k, 1m, 32m, mp5)`);
          }
          return { body: body as BodyId, clients: Number(clients) };
        });
    } else if (arg === '--help' || arg === '-h') {
      console.log(readFileSync(fileURLToPath(import.meta.url), 'utf8').split('*/')[0]);
      process.exit(0);
    } else throw new Error(`unknown argument ${arg}`);
  }
  return a;
}

function dpkgVersion(pkg: string): string {
  try {
    // biome-ignore lint/suspicious/noTemplateCurlyInString: dpkg-query's own format syntax
    return execFileSync('dpkg-query', ['-W', '-f=${Version}', pkg], {
      encoding: 'utf8',
      timeout: 5000,
    }).trim();
  } catch {
    return 'unknown';
  }
}

function wrkVersion(): string {
  try {
    execFileSync('wrk', ['-v'], { encoding: 'utf8', timeout: 5000, stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    const out = String((err as { stdout?: string }).stdout ?? '');
    const m = /wrk (\S+)/.exec(out);
    if (m) return `wrk ${m[1]}`;
  }
  return 'wrk';
}

const appScript = join(HERE, 'app.js');
const rawScript = join(HERE, 'rawload.js');
const floorScript = join(HERE, 'floorload.js');
const icap204Script = join(HERE, 'icap204.js');

interface Env {
  cicap: CIcap;
  embedded: Child;
  embeddedPort: number;
  bodies: Map<BodyId, Body>;
  tool: LoadTool;
  warmupS: number;
  warmRequests: number;
  warmRequests10k: number;
  warmMaxS: number;
  measureS: number;
  measure32mS: number;
  settleS: number;
}

function icapTargetPort(env: Env, service: Service): number {
  return service === '204' ? env.embeddedPort : env.cicap.port;
}

/** The service path on the target server: the embedded server answers 204 on /avscan. */
function servicePath(service: Service): string {
  return service === 'echo' ? '/echo' : '/avscan';
}

/** Set by --stages: the applications publish per-stage timings of the scan (BENCH_STAGES=1). */
let stagesOn = false;

/** Options every Node process of a run starts with (--node-flags=...; default DEFAULT_NODE_FLAGS, util.ts). */
let nodeFlags: string[] = [...DEFAULT_NODE_FLAGS];

async function startApp(
  framework: Framework,
  icapUrl?: string,
  service?: string,
  holdFloor = false,
): Promise<Child> {
  const args = [...nodeFlags, appScript, framework];
  if (icapUrl !== undefined) args.push(icapUrl, service ?? '/avscan');
  if (holdFloor) args.push('--hold-floor');
  return startChild(process.execPath, args, {
    timeoutMs: 20_000,
    env: stagesOn ? { BENCH_STAGES: '1' } : {},
  });
}

/** One POST on its own connection (Squid closes the client connection after an ICAP block). */
function post(url: string, body: Buffer, contentType: string): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const req = httpRequest(
      {
        host: u.hostname,
        port: u.port,
        path: u.pathname,
        method: 'POST',
        agent: false,
        timeout: 60_000,
        headers: { 'content-type': contentType, 'content-length': body.length, connection: 'close' },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        const done = () =>
          resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') });
        res.once('end', done);
        // Squid 5.7 sends c-icap's block page chunked and closes before the last chunk: keep the status.
        res.once('error', done);
      },
    );
    req.once('timeout', () => req.destroy(new Error(`POST ${url} timed out`)));
    req.once('error', (err) => reject(new Error(`POST ${url}: ${err.message}`)));
    req.end(body);
  });
}

function cpuSum(pids: number[]): number {
  return pids.reduce((n, p) => n + cpuOf(p), 0);
}

/** Verifies, before measuring, that icapkit (each framework) and Squid block EICAR via c-icap avscan. */
async function verifyEicar(env: Env): Promise<string[]> {
  const lines: string[] = [];
  const eicar = eicarBytes();
  const url = env.cicap.url('/avscan');
  for (const f of FRAMEWORKS) {
    const app = await startApp(f, `icap://127.0.0.1:${env.cicap.port}`, '/avscan');
    try {
      const port = app.ready.port as number;
      const bad = await post(`http://127.0.0.1:${port}/upload`, eicar, 'application/octet-stream');
      const good = await post(
        `http://127.0.0.1:${port}/upload`,
        Buffer.from('hello'),
        'application/octet-stream',
      );
      if (bad.status !== 403 || good.status !== 200) {
        throw new Error(`${f}+icapkit -> c-icap avscan: EICAR gave ${bad.status}, clean gave ${good.status}`);
      }
      lines.push(`${f} + icapkit -> c-icap avscan: EICAR 403, clean 200`);
    } finally {
      await app.stop();
    }
  }
  const origin = await startApp('express');
  let squid: Squid | undefined;
  try {
    squid = await startSquid({ originPort: origin.ready.port as number, icapUrl: url });
    const bad = await post(`http://127.0.0.1:${squid.port}/upload`, eicar, 'application/octet-stream');
    const good = await post(
      `http://127.0.0.1:${squid.port}/upload`,
      Buffer.from('hello'),
      'application/octet-stream',
    );
    if (bad.status !== 403 || good.status !== 200) {
      throw new Error(
        `Squid -> c-icap avscan: EICAR gave ${bad.status}, clean gave ${good.status}\n${await squid.logs()}`,
      );
    }
    lines.push('Squid -> c-icap avscan: EICAR 403, clean 200');
  } finally {
    await squid?.stop();
    await origin.stop();
  }
  return lines;
}

async function runCell(env: Env, path: PathDef, cell: CellDef): Promise<CellResult> {
  const body = env.bodies.get(cell.body)!;
  const big = cell.body === '32m';
  const warmupS = big ? Math.max(env.warmupS, 2) : env.warmupS;
  const measureS = big ? env.measure32mS : env.measureS;
  const result = blankResult({
    path: path.id,
    kind: path.kind,
    framework: path.framework,
    service: path.service,
    body: cell.body,
    bodyLabel: body.label,
    clients: cell.clients,
  });
  const icapPids = (service: Service | undefined) =>
    service === undefined ? [] : service === '204' ? [env.embedded.pid] : groupPids(env.cicap.pid);

  let counter: TcpCounter | undefined;
  const stops: Array<() => Promise<void>> = [];
  try {
    if (path.service !== undefined) counter = await startTcpCounter(icapTargetPort(env, path.service));
    const icapServer = counter ? `icap://127.0.0.1:${counter.port}` : undefined;

    if (path.kind === 'raw' || path.kind === 'rawparts' || path.kind === 'floor') {
      const gen = await startChild(
        process.execPath,
        [
          ...nodeFlags,
          path.kind === 'floor' ? floorScript : rawScript,
          `icap://127.0.0.1:${counter!.port}`,
          servicePath(path.service!),
          body.file,
          body.contentType,
          String(cell.clients),
          String(warmupS * 1000),
          String(measureS * 1000),
          ...(path.kind === 'rawparts' ? ['--parts'] : []),
        ],
        { timeoutMs: 20_000 },
      );
      stops.push(() => gen.stop());
      const icap0 = cpuSum(icapPids(path.service));
      // The machine over the generator's measured window (it starts measuring after its warm-up).
      await sleep(warmupS * 1000);
      const m0 = machineBusy();
      const w0 = performance.now();
      const r = (await gen.result()) as {
        requests: number;
        errors: number;
        durationS: number;
        rps: number;
        p50: number;
        p99: number;
        connectionsCreated: number;
        cpuUs?: number;
        firstError?: string;
      };
      const m1 = machineBusy();
      const mWall = (performance.now() - w0) / 1000;
      // The generator's own window includes its warm-up; CPU of c-icap over the whole run.
      const icap1 = cpuSum(icapPids(path.service));
      Object.assign(result, {
        ok: r.requests,
        errors: r.errors,
        rps: r.rps,
        p50: r.p50,
        p99: r.p99,
        clientCreated: r.connectionsCreated,
        cpuIcap: ((icap1 - icap0) / (warmupS + measureS)) * 100,
        cpuUsPerReq: r.cpuUs !== undefined && r.requests > 0 ? r.cpuUs / r.requests : undefined,
        // The generator's CPU %, for the machine table (its share of the machine, as the app's).
        cpuApp: r.cpuUs !== undefined && r.durationS > 0 ? (r.cpuUs / 1e6 / r.durationS) * 100 : undefined,
        cpuMachine: m1 > m0 && mWall > 0 ? ((m1 - m0) / mWall) * 100 : undefined,
        cpuUsPerReqMachine:
          m1 > m0 && r.requests > 0 ? (((m1 - m0) / mWall) * r.durationS * 1e6) / r.requests : undefined,
      });
      if (r.errors > 0) result.note = `errors: ${r.firstError ?? '?'}`;
    } else {
      let appChild: Child | undefined;
      let origin: Child | undefined;
      let target: string;
      let measured: number;
      if (path.kind === 'squid') {
        origin = await startApp('express');
        stops.push(() => origin!.stop());
        const squid = await startSquid({
          originPort: origin.ready.port as number,
          icapUrl: `${icapServer!}${servicePath(path.service!)}`,
        });
        stops.unshift(() => squid.stop());
        target = `http://127.0.0.1:${squid.port}/upload`;
        measured = squid.pid;
      } else {
        appChild = await startApp(
          path.framework!,
          icapServer,
          path.service ? servicePath(path.service) : undefined,
          path.kind === 'hold',
        );
        stops.push(() => appChild!.stop());
        target = `http://127.0.0.1:${appChild.ready.port as number}/upload`;
        measured = appChild.pid;
      }
      result.baseRss = memOf(measured).rss;
      resetPeakRss(measured);
      // One request first: the application must get exactly the bytes sent.
      const data = await readFile(body.file);
      const check = await post(target, data, body.contentType);
      const expected = bodyDigest(data, body.contentType);
      if (check.status !== 200 || check.text !== expected) {
        result.note = `check failed: ${check.status} ${check.text.slice(0, 80)}`;
      }
      // The measured window of a 10 KiB cell (the CPU goal's) is the last measureS seconds of
      // one load run: its first settleS seconds (new connections, a client other than the
      // warm-up's) are not counted, and the warm-up's cap is that much shorter. Other cells are
      // measured from the load's start (their warm-up is time-bound, and a full run has to fit
      // in its budget).
      const settleS = cell.body === '10k' ? env.settleS : 0;
      await warmUp(target, body, cell.clients, warmupS, {
        requests: big ? 0 : cell.body === '10k' ? env.warmRequests10k : env.warmRequests,
        maxSeconds: Math.max(warmupS, env.warmMaxS - settleS),
      });
      // The Node process answering the load (the application, or Squid's origin) reports its own CPU.
      const statsPort = (appChild ?? origin)!.ready.port as number;
      const pids = { app: [measured], icap: icapPids(path.service), origin: origin ? [origin.pid] : [] };
      const snap = async () => ({
        s: await statsOf(statsPort),
        opened: counter?.accepted() ?? 0,
        c: { app: cpuSum(pids.app), icap: cpuSum(pids.icap), origin: cpuSum(pids.origin) },
        m: machineBusy(),
        t: performance.now(),
      });
      let first = settleS === 0 ? await snap() : undefined;
      const r: LoadResult = await runLoad(
        env.tool,
        target,
        body,
        cell.clients,
        measureS,
        settleS === 0
          ? {}
          : {
              settle: {
                seconds: settleS,
                snapshot: async () => {
                  first = await snap();
                },
              },
            },
      );
      if (first === undefined) throw new Error(`the load ended before its first ${settleS} s were over`);
      const last = await snap();
      const { s: s0, c: c0, m: m0 } = first;
      const { s: s1, c: c1, m: m1 } = last;
      const wall = (last.t - first.t) / 1000;
      // Requests answered in the window: what the handler digested there (the load tool counts
      // its whole run).
      const digested =
        s0.digested !== undefined && s1.digested !== undefined ? s1.digested - s0.digested : undefined;
      if (settleS > 0 && digested === undefined)
        throw new Error('the application does not count its requests');
      const n = settleS > 0 ? digested! : r.ok;
      if (counter) {
        result.icapOpened = counter.accepted();
        result.icapOpenedMeasured = last.opened - first.opened;
        result.icapPeakOpen = counter.peakOpen();
      }
      if (s0.cpuUs !== undefined && s1.cpuUs !== undefined && n > 0) {
        // Squid: its CPU from /proc (10 ms ticks) plus its origin's from process.cpuUsage().
        const squidUs = path.kind === 'squid' ? (c1.app - c0.app) * 1e6 : 0;
        result.cpuUsPerReq = (s1.cpuUs - s0.cpuUs + squidUs) / n;
      }
      if (s0.majorGcs !== undefined && s1.majorGcs !== undefined && n > 0)
        result.majorGcPerK = ((s1.majorGcs - s0.majorGcs) * 1000) / n;
      if (s0.stages !== undefined && s1.stages !== undefined)
        result.stages = stageDelta(s0.stages, s1.stages);
      if (path.service !== undefined && n > 0) result.cpuUsPerReqIcap = ((c1.icap - c0.icap) * 1e6) / n;
      result.peakRss = memOf(measured).hwm;
      Object.assign(result, {
        ok: r.ok,
        errors: r.errors,
        // The window's rate; the latencies and errors are the load tool's, over its whole run.
        rps: settleS > 0 ? n / wall : r.rps,
        p50: r.p50,
        p99: r.p99,
        cpuApp: ((c1.app - c0.app) / wall) * 100,
        cpuIcap: path.service ? ((c1.icap - c0.icap) / wall) * 100 : undefined,
        cpuOrigin: origin ? ((c1.origin - c0.origin) / wall) * 100 : undefined,
        cpuMachine: m1 > m0 ? ((m1 - m0) / wall) * 100 : undefined,
        cpuUsPerReqMachine: m1 > m0 && n > 0 ? ((m1 - m0) * 1e6) / n : undefined,
      });
      if (appChild && path.kind === 'icapkit') result.clientCreated = s1.created;
      if (r.errors > 0 && result.note === undefined) result.note = `${r.errors} errors`;
    }
    if (counter && result.icapOpened === undefined) {
      result.icapOpened = counter.accepted();
      result.icapPeakOpen = counter.peakOpen();
    }
  } catch (err) {
    result.note = `failed: ${err instanceof Error ? err.message.split('\n')[0] : String(err)}`;
  } finally {
    for (const stop of stops) await stop().catch(() => undefined);
    await counter?.close();
  }
  return result;
}

function fmtCell(r: CellResult): string {
  const conns = r.icapOpened === undefined ? '' : ` icap=${r.icapOpened}/${r.icapPeakOpen}`;
  return (
    `${r.path.padEnd(16)} ${r.bodyLabel.padEnd(18)} c=${String(r.clients).padEnd(3)} ` +
    `${r.rps.toFixed(0).padStart(6)} req/s p50=${r.p50.toFixed(1)}ms p99=${r.p99.toFixed(1)}ms ` +
    `rss=${(r.peakRss / 2 ** 20).toFixed(0)}MiB${conns}` +
    (r.cpuUsPerReq === undefined ? '' : ` cpu=${r.cpuUsPerReq.toFixed(0)}µs/req`) +
    (r.cpuUsPerReqIcap === undefined ? '' : ` icap-cpu=${r.cpuUsPerReqIcap.toFixed(0)}µs/req`) +
    (r.note ? `  [${r.note}]` : '')
  );
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  stagesOn = args.stages;
  if (args.tinyChunks) {
    try {
      console.log(renderTinyChunks(await runTinyChunks()));
    } finally {
      killAllChildren();
    }
    return;
  }
  if (args.from !== undefined) {
    const saved = JSON.parse(await readFile(args.from, 'utf8')) as {
      machine: Machine;
      results: CellResult[];
    };
    await publish(saved.results, saved.machine, args);
    return;
  }
  const t0 = Date.now();
  const missing = [...cIcapMissing(), ...squidMissing()];
  if (missing.length > 0) {
    console.error(`bench: missing prerequisites: ${missing.join('; ')}`);
    console.error('install: apt-get install -y c-icap libc-icap-mod-virus-scan squid wrk');
    process.exit(2);
  }
  const tool = pickTool();
  const short = args.short;
  const warmupS = short ? 1 : 1;
  /**
   * Full mode warms each fresh application up for at least a second and until it has answered
   * this many requests (at most warmMaxS): V8 compiles a fresh process's code over its first few
   * hundred requests, which a second of 1 MiB or multipart requests (100-300) does not cover.
   */
  const warmRequests = short ? 0 : (args.warmRequests ?? 1000);
  /**
   * A 10 KiB cell measures per-request costs (the CPU column, app-bound req/s): after 1,000
   * requests V8 is still compiling there (steady.ts), and what it compiles once is no cost per
   * request. Until 30,000 (at most warmMaxS): the 10 KiB c=8/64 Express cells against c-icap
   * went from 852 to 462 (avscan) and 635 to 350 (echo) app CPU µs per request with it.
   */
  const warmRequests10k = short ? 0 : (args.warmRequests10k ?? 30_000);
  /** A 10 KiB cell's warm-up stops settleS earlier: it warms up as long before its window. */
  const warmMaxS = 10;
  nodeFlags = args.nodeFlags ?? [...DEFAULT_NODE_FLAGS];
  const measureS = short ? 1 : 3;
  const measure32mS = short ? 1 : 6;
  /**
   * The first seconds of a 10 KiB cell's load run are not measured. The load tool's clients are new
   * connections sending other headers than the warm-up's; V8 deoptimizes what met only the
   * warm-up's objects, and its compiles again in the next second cost a fixed CPU time, which
   * counted per request weighs most where the fewest requests are answered (bench/README.md,
   * nineteenth round).
   */
  const settleS = args.settleS ?? (short ? 0 : 2);
  if (!(settleS >= 0)) throw new Error('--settle: seconds, 0 or more');
  /**
   * Full mode stops starting cells past this, so that the whole run stays under 23 minutes. (It
   * was 19 until the 10 KiB cells settled for 2 s: with that, a complete run takes about 21.5.)
   */
  const budgetMs = short ? 5 * 60_000 : 22 * 60_000;

  const paths = PATHS.filter((p) => args.only === undefined || args.only.test(p.id));
  const cells: CellDef[] = args.cells ?? (short ? [{ body: '10k', clients: 8 }] : CELLS);
  /** Explicit --cells run every selected path in every selected cell. */
  const all = short || args.cells !== undefined;
  const bodyIds = [...new Set(cells.map((c) => c.body))];

  let cicap: CIcap | undefined;
  let embedded: Child | undefined;
  let bodiesDir: string | undefined;
  const cleanup = async () => {
    await embedded?.stop().catch(() => undefined);
    await cicap?.stop().catch(() => undefined);
    if (bodiesDir) await rm(bodiesDir, { recursive: true, force: true });
    killAllChildren();
  };
  let interrupted = false;
  const onSignal = (sig: string) => {
    if (interrupted) return;
    interrupted = true;
    console.error(`\nbench: ${sig}, stopping everything`);
    const hard = setTimeout(() => {
      killAllChildren();
      process.exit(130);
    }, 8000);
    cleanup().finally(() => {
      clearTimeout(hard);
      process.exit(130);
    });
  };
  process.on('SIGINT', () => onSignal('SIGINT'));
  process.on('SIGTERM', () => onSignal('SIGTERM'));

  const results: CellResult[] = [];
  try {
    const made = await makeBodies(bodyIds);
    bodiesDir = made.dir;
    cicap = await startCIcap();
    embedded = await startChild(process.execPath, [icap204Script], { timeoutMs: 20_000 });
    const env: Env = {
      cicap,
      embedded,
      embeddedPort: embedded.ready.port as number,
      bodies: made.bodies,
      tool,
      warmupS,
      warmRequests,
      warmRequests10k,
      warmMaxS,
      measureS,
      measure32mS,
      settleS,
    };
    console.error(`bench: ${short ? 'short' : 'full'} mode, load tool ${tool}, c-icap on ${cicap.port}`);
    for (const line of await verifyEicar(env)) console.error(`bench: verified ${line}`);

    for (const cell of cells) {
      for (const path of paths) {
        // A form sent part by part needs a form.
        if ((!all && !runs(path, cell)) || (path.kind === 'rawparts' && cell.body !== 'mp5')) continue;
        if (Date.now() - t0 > budgetMs) {
          console.error(`bench: time budget spent, skipping ${path.id} ${cell.body} c=${cell.clients}`);
          continue;
        }
        const r = await runCell(env, path, cell);
        results.push(r);
        console.error(`bench: ${fmtCell(r)}`);
      }
    }
  } finally {
    await cleanup();
  }

  const machine: Machine = {
    date: new Date().toISOString(),
    nproc: cpus().length,
    cpuModel: cpus()[0]?.model ?? 'unknown',
    ramGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    node: process.version,
    kernel: (() => {
      try {
        return readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim();
      } catch {
        return 'unknown';
      }
    })(),
    cicap: `c-icap ${dpkgVersion('c-icap')}, libc-icap-mod-virus-scan ${dpkgVersion('libc-icap-mod-virus-scan')}, libclamav ${dpkgVersion('libclamav12') === 'unknown' ? dpkgVersion('libclamav11') : dpkgVersion('libclamav12')}`,
    squid: `Squid ${squidVersion()}`,
    loadTool: tool === 'wrk' && findOnPath('wrk') ? wrkVersion() : 'autocannon 9',
    mode: short ? 'short' : 'full',
    warmupS,
    warmRequests,
    warmRequests10k,
    warmMaxS,
    measureS,
    measure32mS,
    settleS,
    totalS: Math.round((Date.now() - t0) / 1000),
    nodeFlags,
  };
  await publish(results, machine, args);
}

/** Prints the report, writes latest.md / latest.json, and with --update-readme the README's table. */
async function publish(results: CellResult[], machine: Machine, args: Args): Promise<void> {
  const report = renderReport(results, machine, { cicapTuning: CICAP_TUNING });
  console.log(report);
  await mkdir(args.out, { recursive: true });
  const base = machine.mode === 'short' ? 'short' : 'latest';
  await writeFile(join(args.out, `${base}.md`), `${report}\n`);
  if (args.from === undefined) {
    await writeFile(join(args.out, `${base}.json`), `${JSON.stringify({ machine, results }, null, 2)}\n`);
  }
  if (args.updateReadme) {
    const readme = join(BENCH_DIR, 'README.md');
    const text = await readFile(readme, 'utf8');
    const startTag = '<!-- bench:results:start -->';
    const endTag = '<!-- bench:results:end -->';
    const a = text.indexOf(startTag);
    const b = text.indexOf(endTag);
    if (a !== -1 && b > a) {
      await writeFile(readme, `${text.slice(0, a + startTag.length)}\n${report}\n${text.slice(b)}`);
      // The tables as the repository's formatter writes them (its CI check fails otherwise).
      const biome = join(BENCH_DIR, '..', 'node_modules', '.bin', 'biome');
      try {
        execFileSync(biome, ['format', '--write', readme], { stdio: 'ignore', timeout: 60_000 });
      } catch (err) {
        console.error(
          `bench: ${readme} written, but not formatted (${err instanceof Error ? err.message.split('\n')[0] : String(err)}): run npx biome check --write bench/README.md`,
        );
      }
    }
  }
  const failed = results.filter((r) => r.note?.startsWith('failed') || r.note?.startsWith('check failed'));
  if (failed.length > 0) {
    console.error(`bench: ${failed.length} cell(s) failed`);
    process.exitCode = 1;
  }
}

main().catch((err: unknown) => {
  console.error(err);
  killAllChildren();
  process.exit(1);
});
