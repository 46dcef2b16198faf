/** Small helpers shared by the benchmark's processes: ports, /proc readings, child processes. */
import { type ChildProcess, type SpawnOptions, spawn } from 'node:child_process';
import { accessSync, constants as fsConstants, readFileSync, statSync, writeFileSync } from 'node:fs';
import { createServer, Socket } from 'node:net';
import { delimiter, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { BodyId } from './bodies.js';
import type { StageSnapshot } from './stages.js';

export const LOOPBACK = '127.0.0.1';

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export function findOnPath(name: string): string | null {
  for (const dir of (process.env.PATH ?? '').split(delimiter).concat(['/usr/sbin', '/sbin'])) {
    if (!dir) continue;
    const candidate = join(dir, name);
    try {
      accessSync(candidate, fsConstants.X_OK);
      if (statSync(candidate).isFile()) return candidate;
    } catch {
      // not there
    }
  }
  return null;
}

/** A loopback port that was free a moment ago. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen(0, LOOPBACK, () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => (port > 0 ? resolve(port) : reject(new Error('freePort: no port'))));
    });
  });
}

export function canConnect(port: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = new Socket();
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once('error', () => done(false));
    socket.connect(port, LOOPBACK, () => done(true));
  });
}

export function killGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    // gone
  }
}

/** Resolves true when the child exited within `ms`. */
export function waitExit(child: ChildProcess, ms: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true);
  return new Promise((resolve) => {
    const t = setTimeout(() => resolve(false), ms);
    child.once('exit', () => {
      clearTimeout(t);
      resolve(true);
    });
  });
}

/** VmRSS and VmHWM (peak RSS) of a process, in bytes (0 when unreadable). */
export function memOf(pid: number): { rss: number; hwm: number } {
  try {
    const s = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(s)?.[1] ?? 0) * 1024;
    return { rss: kb('VmRSS'), hwm: kb('VmHWM') };
  } catch {
    return { rss: 0, hwm: 0 };
  }
}

/** Resets a process's peak RSS (VmHWM) to its current RSS (Linux >= 4.0, own or root). */
export function resetPeakRss(pid: number): boolean {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, '5');
    return true;
  } catch {
    return false;
  }
}

const CLK_TCK = 100;
/**
 * CPU seconds the whole machine has been busy (every core: user, nice, system, irq, softirq;
 * /proc/stat's first line; not steal, the hypervisor's), 0 when unreadable. Over a window it counts what no process
 * figure does: the load generator, the kernel's softirq work, anything else running.
 */
export function machineBusy(): number {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!;
    const f = line.trim().split(/\s+/).slice(1).map(Number);
    // user nice system idle iowait irq softirq steal
    return ((f[0] ?? 0) + (f[1] ?? 0) + (f[2] ?? 0) + (f[5] ?? 0) + (f[6] ?? 0)) / CLK_TCK;
  } catch {
    return 0;
  }
}

/** CPU seconds (user + system) used so far by a process (0 when unreadable). */
export function cpuOf(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / CLK_TCK;
  } catch {
    return 0;
  }
}

/* ------------------------------------------------------------------ child processes */

const children = new Set<ChildProcess>();
let hooksInstalled = false;

/** Kills every child started through {@link startChild} (SIGKILL to its group). */
export function killAllChildren(): void {
  for (const c of children) if (c.pid !== undefined) killGroup(c.pid, 'SIGKILL');
  children.clear();
}

function installHooks(): void {
  if (hooksInstalled) return;
  hooksInstalled = true;
  process.once('exit', killAllChildren);
}

export interface Child {
  process: ChildProcess;
  pid: number;
  /** The JSON object the child printed on its `READY ` line. */
  ready: Record<string, unknown>;
  /** Last output lines, for error messages. */
  output(): string;
  /** Resolves with the child's final `RESULT ` JSON line (or rejects when it exits without one). */
  result(): Promise<Record<string, unknown>>;
  stop(): Promise<void>;
}

/**
 * Spawns a process in its own process group and waits for a line `READY {json}` on stdout.
 * A later `RESULT {json}` line is available through result().
 */
export function startChild(
  cmd: string,
  args: string[],
  opts: { env?: NodeJS.ProcessEnv; cwd?: string; timeoutMs?: number; waitReady?: boolean } = {},
): Promise<Child> {
  installHooks();
  const spawnOpts: SpawnOptions = {
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...opts.env },
  };
  if (opts.cwd !== undefined) spawnOpts.cwd = opts.cwd;
  const child = spawn(cmd, args, spawnOpts);
  children.add(child);
  let out = '';
  let buf = '';
  let readyResolve: ((v: Record<string, unknown>) => void) | undefined;
  let resultValue: Record<string, unknown> | undefined;
  const keep = (s: string) => {
    out = (out + s).slice(-16_000);
  };
  child.stdout?.setEncoding('utf8');
  child.stderr?.setEncoding('utf8');
  child.stdout?.on('data', (s: string) => {
    keep(s);
    buf += s;
    let i = buf.indexOf('\n');
    while (i !== -1) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      if (line.startsWith('READY ')) readyResolve?.(JSON.parse(line.slice(6)) as Record<string, unknown>);
      if (line.startsWith('RESULT ')) resultValue = JSON.parse(line.slice(7)) as Record<string, unknown>;
      i = buf.indexOf('\n');
    }
  });
  child.stderr?.on('data', keep);
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  child.once('exit', () => children.delete(child));
  const stop = async () => {
    if (child.pid === undefined) return;
    killGroup(child.pid, 'SIGTERM');
    if (!(await waitExit(child, 3000))) killGroup(child.pid, 'SIGKILL');
    await waitExit(child, 3000);
  };
  const make = (ready: Record<string, unknown>): Child => ({
    process: child,
    pid: child.pid!,
    ready,
    output: () => out,
    result: async () => {
      await exited;
      if (resultValue === undefined) {
        throw new Error(`${cmd} ${args.join(' ')} ended without a result (exit ${child.exitCode})\n${out}`);
      }
      return resultValue;
    },
    stop,
  });
  if (opts.waitReady === false) return Promise.resolve(make({}));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      void stop();
      reject(new Error(`${cmd} ${args.join(' ')} not ready within ${opts.timeoutMs ?? 15_000} ms\n${out}`));
    }, opts.timeoutMs ?? 15_000);
    readyResolve = (v) => {
      clearTimeout(timer);
      resolve(make(v));
    };
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`${cmd} ${args.join(' ')} exited (${code ?? signal}) before it was ready\n${out}`));
    });
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

/**
 * Runs `main` when `moduleUrl` (the caller's import.meta.url) is the script node was started
 * with; a failure is printed, every child killed, and the process exits 1.
 */
export function runAsScript(moduleUrl: string, main: () => Promise<void>): void {
  if (!process.argv[1] || fileURLToPath(moduleUrl) !== process.argv[1]) return;
  main().catch((err: unknown) => {
    console.error(err);
    killAllChildren();
    process.exit(1);
  });
}

/**
 * Options every Node process of a bench run starts with (run.js and perfsplit.js; --node-flags=...
 * to change them). Both give V8's heap room; bench/GC.md has the mechanism and the measurements:
 * - --heap-growing-percent=300: a process taking ~1 MiB bodies otherwise falls, by chance, into a
 *   mark-compact every 100-250 ms once it has done one (a quarter of its CPU), the framework alone
 *   as well as with icapkit.
 * - --max-semi-space-size=64: with the default 16 MiB cap, what a request holds across an await
 *   that spans a scavenge is promoted (98.6% of the survivors, 4-5 ms scavenges): 40-50 µs per
 *   scanned 10 KiB request go to the GC; with 64 MiB, 3-4 µs.
 */
export const DEFAULT_NODE_FLAGS: readonly string[] = [
  '--heap-growing-percent=300',
  '--max-semi-space-size=64',
];

/** `--name=value` arguments as a map (any other form is an error). */
export function parseOptions(argv: string[]): Map<string, string> {
  const opts = new Map<string, string>();
  for (const a of argv) {
    const m = /^--([^=]+)=(.*)$/.exec(a);
    if (!m) throw new Error(`unknown argument ${a}`);
    opts.set(m[1]!, m[2]!);
  }
  return opts;
}

/** The median (the mean of the middle two for an even count; NaN for none). */
export function median(xs: readonly number[]): number {
  if (xs.length === 0) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/** The options every interleaved measurement takes (steady.js, floors.js), with its defaults. */
export function interleavedOptions(
  opts: Map<string, string>,
  defaults: { cells: string; warmSeconds: number; rounds: number; seconds: number },
): {
  frameworks: string[];
  bodyId: BodyId;
  clients: number;
  warmSeconds: number;
  rounds: number;
  seconds: number;
  nodeFlags: string[];
} {
  const [bodyId, clientsText] = (opts.get('cells') ?? defaults.cells).split('/') as [BodyId, string];
  return {
    frameworks: (opts.get('frameworks') ?? 'fastify,koa,express').split(',').filter(Boolean),
    bodyId,
    clients: Number(clientsText),
    warmSeconds: Number(opts.get('warm-seconds') ?? defaults.warmSeconds),
    rounds: Number(opts.get('rounds') ?? defaults.rounds),
    seconds: Number(opts.get('seconds') ?? defaults.seconds),
    nodeFlags: (opts.get('node-flags') ?? DEFAULT_NODE_FLAGS.join(' ')).split(' ').filter(Boolean),
  };
}

/** The order of round `round` of an interleaved measurement: `items` rotated by `round` (no one always first). */
export function rotate<T>(round: number, items: readonly T[]): T[] {
  return items.map((_, i) => items[(i + round) % items.length]!);
}

/**
 * f(a's value, b's value) for every round in which both `a` and `b` were measured, in round
 * order: a comparison taken within a round (seconds apart, one phase of the machine).
 */
export function withinRounds<W extends { round: number; subject: string }>(
  windows: readonly W[],
  a: string,
  b: string,
  f: (x: W, y: W) => number | undefined,
): number[] {
  const out: number[] = [];
  for (const r of [...new Set(windows.map((w) => w.round))].sort((p, q) => p - q)) {
    const x = windows.find((w) => w.round === r && w.subject === a);
    const y = windows.find((w) => w.round === r && w.subject === b);
    const v = x && y ? f(x, y) : undefined;
    if (v !== undefined) out.push(v);
  }
  return out;
}

/** What an application (app.js) reports at GET /__stats, read over its measured windows. */
export interface AppStats {
  created: number | undefined;
  /** process.cpuUsage() of the application, user + system µs. */
  cpuUs: number | undefined;
  stages: StageSnapshot | undefined;
  /** Mark-compacts the app's V8 has done since it started (a `gc` performance observer). */
  majorGcs: number | undefined;
  /** Uploads the app's handler digested since it started (app.ts). */
  digested: number | undefined;
}

/** An application's /__stats (all undefined when it does not answer). */
export async function statsOf(port: number): Promise<AppStats> {
  try {
    const res = await fetch(`http://127.0.0.1:${port}/__stats`, { signal: AbortSignal.timeout(5000) });
    const j = (await res.json()) as {
      cpu?: { user: number; system: number };
      stages?: StageSnapshot | null;
      icap: Array<{ connections: { created: number } }> | null;
      majorGcs?: number;
      digested?: number;
    };
    return {
      created: j.icap?.reduce((n, s) => n + s.connections.created, 0),
      cpuUs: j.cpu === undefined ? undefined : j.cpu.user + j.cpu.system,
      stages: j.stages ?? undefined,
      majorGcs: j.majorGcs,
      digested: j.digested,
    };
  } catch {
    return {
      created: undefined,
      cpuUs: undefined,
      stages: undefined,
      majorGcs: undefined,
      digested: undefined,
    };
  }
}
