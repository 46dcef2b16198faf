/**
 * Where the application process's CPU goes, every thread included: `perf record` of the app
 * (started with --perf-basic-prof so JIT code has names) under load, its samples sorted into
 * V8's garbage collector (main thread and helpers), V8's compilers, the kernel (socket reads
 * and writes, loopback TCP), the bench handler's SHA-1, JavaScript (JIT code), V8 builtins and
 * runtime (inline caches, calls, allocation), Node/libuv C++ and libc. `--cpu-prof` sees only
 * the main thread's JavaScript; this is the split that explains CPU µs per request the
 * JavaScript profile does not (a concurrent GC's threads, the kernel).
 *
 *   node bench/dist/perfsplit.js [--framework=fastify] [--service=204|avscan|echo|none]
 *                                [--cells=10k/8] [--seconds=6] [--warm-requests=1000]
 *                                [--node-flags='...']  (default as run.js: DEFAULT_NODE_FLAGS, bench/GC.md)
 *                                [--top=N]  (also the N heaviest symbols, with their category)
 *                                [--hold=1] (holdfloor.ts instead of icapkit: app.js --hold-floor)
 *                                [--warm-seconds=N] (then N more seconds of the load tool: steady state, see steady.ts)
 *                                [--ic-misses=1] (call stacks too: the inline-cache misses and map changes
 *                                                 of V8's runtime under icapkit's frames and elsewhere, and
 *                                                 the samples under icapkit's frames by part of the scan)
 *                                [--keep-data=FILE] (a copy of perf.data, to read with `perf script` after)
 *
 * Also prints, per request, the app's read-like and write-like system calls and their bytes
 * (/proc/PID/io, sockets included) and its threads' context switches: counters the kernel keeps
 * anyway, so no tracer slows the app down while they are read.
 *                                [--profile='{"holdBodySize":"2mb"}'] (icapkit with those profile fields)
 *
 * Needs `perf` (Debian's linux-perf) and perf_event_paranoid ≤ 2 for a process of the same user.
 */
import { spawn } from 'node:child_process';
import { copyFile, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type BodyId, makeBodies } from './bodies.js';
import { holdFloorEnv } from './holdfloor.js';
import { pickTool, runLoad, warmUp } from './load.js';
import { startScanner } from './profile.js';
import {
  cpuOf,
  DEFAULT_NODE_FLAGS,
  findOnPath,
  killAllChildren,
  parseOptions,
  runAsScript,
  startChild,
} from './util.js';

const HERE = fileURLToPath(new URL('.', import.meta.url));

/** The categories, in the order they are tested: the first match wins. */
export const CATEGORIES: ReadonlyArray<readonly [string, (dso: string, sym: string) => boolean]> = [
  ['kernel', (dso) => dso.includes('kernel')],
  ['SHA-1 of the bench handler', (_d, sym) => /sha1_|SHA1_/.test(sym)],
  [
    'V8 garbage collector',
    (_d, sym) =>
      /v8::internal::(?:\w+::)*(?:\w*(?:Mark|Sweep|Scaveng|Evacuat|Compact|Marking|Remembered|SlotSet|ArrayBufferSweeper|Heap::|MemoryChunk|MemoryAllocator|PagedSpace|NewSpace|SemiSpace|GCTracer|IncrementalMarking|ConcurrentMarking|PointersUpdating|Visitor|Minor|Young)|HeapObject::SizeFromMap|BodyDescriptorBase)/.test(
        sym,
      ),
  ],
  [
    'V8 compilers (JIT)',
    (_d, sym) =>
      /v8::internal::(?:compiler|maglev|baseline|interpreter|wasm|Parser|Scanner|AstNode|Compiler|BytecodeGenerator|Zone)|Builtins_CompileLazy|Turbofan|Maglev/.test(
        sym,
      ),
  ],
  [
    'JavaScript (JIT code)',
    (dso, sym) => dso.startsWith('[JIT]') || dso.startsWith('perf-') || sym.startsWith('JS:'),
  ],
  ['V8 builtins (ICs, calls, allocation)', (_d, sym) => sym.startsWith('Builtins_')],
  ['V8 runtime', (_d, sym) => sym.startsWith('v8::')],
  ['Node.js and libuv (C++)', (_d, sym) => /^(?:node::|uv_|uv__|llhttp|ada::|simdutf)/.test(sym)],
  ['libc (memcpy, malloc)', (dso) => dso.startsWith('libc')],
];

/** A `perf report --sort dso,sym` line ("  12.34%  dso  [.] symbol"), with its category. */
interface Sample {
  sym: string;
  cat: string;
  pct: number;
}

/** The report's symbol lines, in perf's order (heaviest first). */
function* samples(report: string): Generator<Sample> {
  for (const line of report.split('\n')) {
    const m = /^\s*([\d.]+)%\s+(\S+(?: tid \d+)?)\s+\[[.k]\]\s+(.*)$/.exec(line);
    if (!m) continue;
    const dso = m[2]!;
    const sym = m[3]!.trim();
    const cat = CATEGORIES.find(([, test]) => test(dso, sym))?.[0] ?? 'other';
    yield { sym, cat, pct: Number(m[1]) };
  }
}

/** Sums the report's samples into CATEGORIES. */
export function split(report: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const { cat, pct } of samples(report)) out.set(cat, (out.get(cat) ?? 0) + pct);
  return out;
}

/** The report's heaviest symbols, each with its category. */
export function topSymbols(report: string, n: number): Sample[] {
  const out: Sample[] = [];
  for (const s of samples(report)) {
    if (out.length >= n) break;
    out.push(s);
  }
  return out;
}

/** An icapkit frame in a stack of `perf script -F ip,sym` (its packages' built code). */
const ICAPKIT_FRAME = /packages\/(?:core|express|fastify|koa|hono)\/dist\//;
/**
 * V8's runtime handling an inline-cache miss or changing an object's map: what a property access
 * costs when the object's map is one the access site has not seen (Express gives each request
 * and response a map of its own: a property added after `Object.setPrototypeOf` makes a new map,
 * not a transition other objects share).
 */
const IC_MISS_FRAME =
  /Runtime_(?:LoadIC_Miss|StoreIC_Miss|KeyedLoadIC_Miss|KeyedStoreIC_Miss|LoadGlobalIC_Miss|DefineNamedOwnIC_Miss|DefineKeyedOwnIC_Miss)|MigrateDeprecated|MigrateToMap|v8::internal::Map::|TransitionsAccessor|LookupIterator/;

/**
 * The part of the scan an icapkit frame belongs to, by its file (the goal's stages: admission,
 * intake, exchange, outcome; plus the adapter, the scan's driver and the body store, whose
 * replays also feed the exchange and the hand-off).
 */
export const STAGE_OF_FILE: ReadonlyArray<readonly [string, RegExp]> = [
  ['adapter (framework glue)', /packages\/(?:express|fastify|koa|hono)\/dist\//],
  ['admission', /core\/dist\/engine\/(?:scan\/admission|request|policy|refusal|profile)/],
  ['intake (the body store; its replays)', /core\/dist\/engine\/(?:scan\/intake|body\/|multipart\/)/],
  [
    'exchange: engine (attempts, retries, watch)',
    /core\/dist\/engine\/(?:scan\/(?:exchange|attempt-watch|retry)|pool-group)/,
  ],
  ['exchange: ICAP client and protocol', /core\/dist\/(?:client|protocol)\//],
  [
    'outcome (verdict, log record, hand-off, response watch)',
    /core\/dist\/(?:engine\/(?:scan\/(?:outcome|consumed)|verdict\/|log|telemetry|alerts|respond|suggest)|node\/|analytics\/)/,
  ],
  ["the scan's driver (scan.ts, engine.ts)", /core\/dist\/engine\/(?:scan\/(?:scan|stage-clock)|engine)\.js/],
];

/** The part of the scan of an icapkit frame ({@link STAGE_OF_FILE}), else 'other icapkit code'. */
export function stageOfFrame(frame: string): string {
  return STAGE_OF_FILE.find(([, re]) => re.test(frame))?.[0] ?? 'other icapkit code';
}

export interface IcMissSplit {
  samples: number;
  /** Samples with an icapkit frame on the stack (its own work and what it called). */
  underIcapkit: number;
  /** Of those, samples in IC-miss / map-change runtime below the innermost icapkit frame. */
  missUnderIcapkit: number;
  /** Samples in IC-miss / map-change runtime with no icapkit frame on the stack. */
  missElsewhere: number;
  /** missUnderIcapkit by the innermost icapkit frame. */
  byFrame: Map<string, number>;
  /** underIcapkit by the part of the scan of the innermost icapkit frame ({@link stageOfFrame}). */
  byStage: Map<string, number>;
}

/** Splits `perf script -F ip,sym` stacks (leaf first, blank line between samples) as IcMissSplit says. */
export function icMissSplit(script: string): IcMissSplit {
  const out: IcMissSplit = {
    samples: 0,
    underIcapkit: 0,
    missUnderIcapkit: 0,
    missElsewhere: 0,
    byFrame: new Map(),
    byStage: new Map(),
  };
  for (const block of script.split(/\n\s*\n/)) {
    const frames = block
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => /^[0-9a-f]+ /.test(l))
      .map((l) => l.replace(/^[0-9a-f]+ /, '').replace(/\+0x[0-9a-f]+.*$/, ''));
    if (frames.length === 0) continue;
    out.samples++;
    const k = frames.findIndex((f) => ICAPKIT_FRAME.test(f));
    const miss = frames.findIndex((f) => IC_MISS_FRAME.test(f));
    if (k === -1) {
      if (miss !== -1) out.missElsewhere++;
      continue;
    }
    out.underIcapkit++;
    const stage = stageOfFrame(frames[k]!);
    out.byStage.set(stage, (out.byStage.get(stage) ?? 0) + 1);
    if (miss !== -1 && miss < k) {
      out.missUnderIcapkit++;
      const name = frames[k]!.replace(/file:\/\/\S*?packages\//, '');
      out.byFrame.set(name, (out.byFrame.get(name) ?? 0) + 1);
    }
  }
  return out;
}

function run(cmd: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout.on('data', (d: Buffer) => {
      out += d.toString();
    });
    p.stderr.on('data', (d: Buffer) => {
      err += d.toString();
    });
    p.on('error', reject);
    p.on('close', (code) =>
      code === 0 ? resolve(out) : reject(new Error(`${cmd}: ${code} ${err.slice(-400)}`)),
    );
  });
}

/** The app's counters that explain kernel time without a tracer slowing it down. */
interface KernelCounters {
  /** /proc/PID/io: read-like and write-like system calls, and their bytes (sockets included). */
  syscr: number;
  syscw: number;
  rchar: number;
  wchar: number;
  /** Every thread's context switches (/proc/PID/task/TID/status): sleeps, and preemptions. */
  voluntary: number;
  involuntary: number;
}

async function kernelCounters(pid: number): Promise<KernelCounters> {
  const io = await readFile(`/proc/${pid}/io`, 'utf8');
  const field = (text: string, name: string) =>
    Number(new RegExp(`^${name}:\\s*(\\d+)`, 'm').exec(text)?.[1] ?? 0);
  let voluntary = 0;
  let involuntary = 0;
  for (const tid of await readdir(`/proc/${pid}/task`)) {
    const status = await readFile(`/proc/${pid}/task/${tid}/status`, 'utf8').catch(() => '');
    voluntary += field(status, 'voluntary_ctxt_switches');
    involuntary += field(status, 'nonvoluntary_ctxt_switches');
  }
  return {
    syscr: field(io, 'syscr'),
    syscw: field(io, 'syscw'),
    rchar: field(io, 'rchar'),
    wchar: field(io, 'wchar'),
    voluntary,
    involuntary,
  };
}

async function main(): Promise<void> {
  const opts = parseOptions(process.argv.slice(2));
  if (findOnPath('perf') === null) throw new Error('perf is not installed (apt-get install linux-perf)');
  const framework = opts.get('framework') ?? 'fastify';
  const service = opts.get('service') ?? '204';
  const [bodyId, clientsText] = (opts.get('cells') ?? '10k/8').split('/') as [BodyId, string];
  const clients = Number(clientsText);
  const seconds = Number(opts.get('seconds') ?? 6);
  const warmRequests = Number(opts.get('warm-requests') ?? 1000);
  const nodeFlags = (opts.get('node-flags') ?? DEFAULT_NODE_FLAGS.join(' ')).split(' ').filter(Boolean);
  const none = service === 'none';
  const hold = opts.get('hold') === '1' && !none;
  const work = await mkdtemp(join(tmpdir(), 'icapkit-perfsplit-'));
  const { dir, bodies } = await makeBodies([bodyId]);
  const body = bodies.get(bodyId)!;
  const scanner = await startScanner(service);
  try {
    const app = await startChild(
      process.execPath,
      [
        ...nodeFlags,
        '--perf-basic-prof',
        join(HERE, 'app.js'),
        framework,
        ...(none ? [] : [`icap://127.0.0.1:${scanner.port}`, service === 'echo' ? '/echo' : '/avscan']),
        ...(hold ? ['--hold-floor'] : []),
      ],
      // --perf-basic-prof makes V8 write isolate-*.log files where the process runs: in the scratch folder.
      {
        timeoutMs: 20_000,
        cwd: work,
        env: hold
          ? holdFloorEnv(service)
          : opts.get('profile') !== undefined
            ? { BENCH_PROFILE: JSON.stringify(JSON.parse(opts.get('profile')!)) }
            : {},
      },
    );
    const url = `http://127.0.0.1:${app.ready.port as number}/upload`;
    await warmUp(url, body, clients, 1, { requests: warmRequests, maxSeconds: 10 });
    const warmSeconds = Number(opts.get('warm-seconds') ?? 0);
    if (warmSeconds > 0) await runLoad(pickTool(), url, body, clients, warmSeconds);
    const callers = opts.get('ic-misses') === '1';
    const data = join(work, 'perf.data');
    const perf = run('perf', [
      'record',
      '-q',
      ...(callers ? ['-g'] : []),
      '-F',
      '1999',
      '-p',
      String(app.pid),
      '-o',
      data,
      '--',
      'sleep',
      String(seconds),
    ]);
    const cpu0 = cpuOf(app.pid);
    const k0 = await kernelCounters(app.pid);
    const r = await runLoad(pickTool(), url, body, clients, seconds);
    const k1 = await kernelCounters(app.pid);
    const cpu1 = cpuOf(app.pid);
    await perf;
    const report = await run('perf', ['report', '-i', data, '--no-children', '--sort', 'dso,sym', '--stdio']);
    const threads = await run('perf', ['report', '-i', data, '--no-children', '--sort', 'pid', '--stdio']);
    const script = callers ? await run('perf', ['script', '-i', data, '-F', 'ip,sym']) : '';
    const keep = opts.get('keep-data');
    if (keep !== undefined) await copyFile(data, keep);
    await app.stop();
    const usPerReq = r.ok > 0 ? ((cpu1 - cpu0) * 1e6) / r.ok : 0;
    const parts = split(report);
    console.log(
      `${framework}${none ? ' alone (no scanning)' : ` + ${hold ? 'the hold floor' : 'icapkit'} -> ${service}`}, ${body.label}, ${clients} clients: ` +
        `${r.rps.toFixed(0)} req/s, app CPU ${usPerReq.toFixed(0)} µs per request (all threads)\n`,
    );
    const per = (key: keyof KernelCounters) => (r.ok > 0 ? (k1[key] - k0[key]) / r.ok : 0);
    console.log(
      `per request: ${per('syscr').toFixed(1)} read and ${per('syscw').toFixed(1)} write system calls ` +
        `(${(per('rchar') / 1024).toFixed(0)} and ${(per('wchar') / 1024).toFixed(0)} KiB), ` +
        `${per('voluntary').toFixed(1)} voluntary and ${per('involuntary').toFixed(1)} involuntary context switches (all threads)\n`,
    );
    console.log('| where the app process CPU goes | % of its samples | µs per request |');
    console.log('|---|--:|--:|');
    for (const [cat, pct] of [...parts].sort((a, b) => b[1] - a[1]))
      console.log(`| ${cat} | ${pct.toFixed(1)} | ${((pct / 100) * usPerReq).toFixed(0)} |`);
    // perf's "pid" of a sample taken with -p is the thread's id: the main thread's is the process's.
    let mainPct = 0;
    for (const m of threads.matchAll(/^\s*([\d.]+)%\s+(\d+):/gm))
      if (Number(m[2]) === app.pid) mainPct = Number(m[1]);
    const top = Number(opts.get('top') ?? 0);
    if (top > 0) {
      console.log(`\n| symbol (the ${top} heaviest) | category | % | µs per request |\n|---|---|--:|--:|`);
      for (const s of topSymbols(report, top))
        console.log(
          `| ${s.sym.slice(0, 90)} | ${s.cat} | ${s.pct.toFixed(2)} | ${((s.pct / 100) * usPerReq).toFixed(1)} |`,
        );
    }
    if (callers) {
      const m = icMissSplit(script);
      const us = (n: number) => ((n / m.samples) * usPerReq).toFixed(1);
      console.log(
        `\nicapkit frames on the stack: ${us(m.underIcapkit)} µs per request; V8 inline-cache misses and map changes ` +
          `below an icapkit frame: ${us(m.missUnderIcapkit)} µs, with no icapkit frame: ${us(m.missElsewhere)} µs`,
      );
      console.log(
        "\n| the innermost icapkit frame's part of the scan (its own work and what it called: Node, V8, the kernel) | µs per request |\n|---|--:|",
      );
      for (const [stage, n] of [...m.byStage].sort((a, b) => b[1] - a[1]))
        console.log(`| ${stage} | ${us(n)} |`);
      console.log('\n| innermost icapkit frame of the misses | µs per request |\n|---|--:|');
      for (const [f, n] of [...m.byFrame].sort((a, b) => b[1] - a[1]).slice(0, 10))
        console.log(`| ${f.slice(0, 90)} | ${us(n)} |`);
    }
    console.log(
      `\nmain thread ${mainPct.toFixed(1)}% of the samples, the other threads (V8's GC and compiler helpers, libuv's pool) ${(100 - mainPct).toFixed(1)}%`,
    );
  } finally {
    await scanner.stop();
    await rm(dir, { recursive: true, force: true });
    await rm(work, { recursive: true, force: true });
    killAllChildren();
  }
}

runAsScript(import.meta.url, main);
