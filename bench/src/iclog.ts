/**
 * V8's inline-cache misses per request at steady state, and whose code has them: V8's IC log
 * (`--log-ic`) of one application under load, counted over a window after the warm-up. Each
 * line of the log is one IC miss (a property read or write whose inline cache had no handler
 * for the object's map: a new map, or a megamorphic cache's entry evicted), with the function,
 * the position and the property. Framework code that reads objects of one map per request (an
 * Express request or response: `Object.setPrototypeOf` at every request) misses once per
 * request at every such read; the counts say how many, and whose code they are in: icapkit's
 * (packages/), Node's (node:), a dependency's (node_modules), the bench application's.
 *
 *   node bench/dist/iclog.js [--framework=express] [--subject=icapkit|hold|alone]
 *                            [--warm-seconds=15] [--seconds=3] [--clients=8] [--top=40]
 *
 * The application answers 10 KiB POSTs, scanned against the embedded 204 server (icap204.js):
 * the cell of the "app CPU above the framework" goal. The log costs the application much of its
 * speed (a file write per miss): read the counts, not the req/s.
 */
import { readFileSync, rmSync, statSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { makeBodies } from './bodies.js';
import { runLoad } from './load.js';
import { DEFAULT_NODE_FLAGS, parseOptions, runAsScript, startChild } from './util.js';

const HERE = fileURLToPath(new URL('.', import.meta.url));

const IC_EVENT =
  /^(?:Keyed)?(?:Load|Store|LoadGlobal|StoreGlobal|StoreInArrayLiteral|DefineNamedOwn|DefineKeyedOwn)IC,/;

/** One counted IC miss: where (function, position) and which property. */
export interface IcMiss {
  kind: string;
  fn: string;
  position: string;
  key: string;
}

/** Whose code a function is: icapkit's, Node's, a dependency's, the bench application's. */
export function ownerOf(fn: string): 'icapkit' | 'node' | 'dependency' | 'bench' | 'unknown' {
  if (fn.includes('node_modules')) return 'dependency';
  if (/packages\/[a-z-]+\/(?:dist|src)\//.test(fn)) return 'icapkit';
  if (fn.includes('node:')) return 'node';
  if (fn.includes('bench/dist/')) return 'bench';
  return 'unknown';
}

/**
 * The IC misses of a V8 log (`--log-ic`) between two byte offsets, each with the function its
 * code belongs to (the code objects created, or moved, before the miss).
 */
export function icMisses(log: string, from: number, to: number): IcMiss[] {
  // Code objects by start address; the latest creation (or move) at an address wins.
  const starts: number[] = [];
  const code = new Map<number, { size: number; name: string }>();
  const lines = log.slice(0, to).split('\n');
  let offset = 0;
  const misses: IcMiss[] = [];
  const names = new Map<number, string>();
  const nameAt = (pc: number): string => {
    const known = names.get(pc);
    if (known !== undefined) return known;
    let best: { start: number; size: number; name: string } | undefined;
    for (let i = starts.length - 1; i >= 0; i--) {
      const start = starts[i]!;
      const c = code.get(start);
      if (c !== undefined && pc >= start && pc < start + c.size) {
        best = { start, ...c };
        break;
      }
    }
    const name = best?.name.replace(/^"|"$/g, '') ?? '?';
    names.set(pc, name);
    return name;
  };
  for (const line of lines) {
    const at = offset;
    offset += line.length + 1;
    if (line.startsWith('code-creation,')) {
      // code-creation,<type>,<kind>,<timestamp>,<address>,<size>,<name...>
      const p = line.split(',');
      const start = Number(p[4]);
      code.set(start, { size: Number(p[5]), name: p.slice(6).join(',') });
      starts.push(start);
      names.clear();
    } else if (line.startsWith('code-move,')) {
      const p = line.split(',');
      const c = code.get(Number(p[1]));
      if (c !== undefined) {
        code.set(Number(p[2]), c);
        starts.push(Number(p[2]));
        names.clear();
      }
    } else if (at >= from && IC_EVENT.test(line)) {
      // <Kind>IC,<pc>,<time>,<line>,<column>,<old state>,<new state>,<map>,<key>,<modifier>,<reason>
      const p = line.split(',');
      misses.push({ kind: p[0]!, fn: nameAt(Number(p[1])), position: `${p[3]}:${p[4]}`, key: p[8] ?? '' });
    }
  }
  return misses;
}

/** Per-request counts: by owner, by function, and the heaviest (function, property) pairs. */
export function renderIcMisses(misses: readonly IcMiss[], requests: number, top: number): string[] {
  const per = (n: number) => (n / requests).toFixed(2);
  const count = <K>(key: (m: IcMiss) => K) => {
    const m = new Map<K, number>();
    for (const x of misses) m.set(key(x), (m.get(key(x)) ?? 0) + 1);
    return [...m].sort((a, b) => b[1] - a[1]);
  };
  const short = (fn: string) =>
    fn
      .replace(/file:\/\/\/[^ ]*?\/packages\//, 'packages/')
      .replace(/\/[^ ]*\/node_modules\/\.pnpm\/[^/]+\/node_modules\//, '')
      .replace(/file:\/\/\/[^ ]*?\/bench\/dist\//, 'bench/dist/');
  const out = [
    `IC misses per request: ${per(misses.length)} (${misses.length} over ${requests} requests)`,
    '',
    '| whose code | misses per request |',
    '| --- | --: |',
    ...count((m) => ownerOf(m.fn)).map(([o, n]) => `| ${o} | ${per(n)} |`),
    '',
    `| function (the ${top} with most misses) | misses per request |`,
    '| --- | --: |',
    ...count((m) => short(m.fn))
      .slice(0, top)
      .map(([f, n]) => `| ${f} | ${per(n)} |`),
    '',
    `| function, position, property (the ${top} most missed) | misses per request |`,
    '| --- | --: |',
    ...count((m) => `${short(m.fn)} ${m.position} \`${m.key}\``)
      .slice(0, top)
      .map(([f, n]) => `| ${f} | ${per(n)} |`),
  ];
  return out;
}

async function main(): Promise<void> {
  const opts = parseOptions(process.argv.slice(2));
  const framework = opts.get('framework') ?? 'express';
  const subject = opts.get('subject') ?? 'icapkit';
  if (!['icapkit', 'hold', 'alone'].includes(subject)) throw new Error(`unknown --subject=${subject}`);
  const warmSeconds = Number(opts.get('warm-seconds') ?? 15);
  const seconds = Number(opts.get('seconds') ?? 3);
  const clients = Number(opts.get('clients') ?? 8);
  const top = Number(opts.get('top') ?? 40);
  const dir = await mkdtemp(join(tmpdir(), 'icapkit-iclog-'));
  const log = join(dir, 'v8.log');
  const { dir: bodiesDir, bodies } = await makeBodies(['10k']);
  const icap = await startChild(process.execPath, [join(HERE, 'icap204.js')], { timeoutMs: 20_000 });
  try {
    const args = [
      ...DEFAULT_NODE_FLAGS,
      '--log-ic',
      `--logfile=${log}`,
      '--no-logfile-per-isolate',
      join(HERE, 'app.js'),
      framework,
    ];
    if (subject !== 'alone') args.push(`icap://127.0.0.1:${icap.ready.port as number}`, '/avscan');
    if (subject === 'hold') args.push('--hold-floor');
    const app = await startChild(process.execPath, args, { timeoutMs: 20_000 });
    try {
      const url = `http://127.0.0.1:${app.ready.port as number}/upload`;
      const body = bodies.get('10k')!;
      await runLoad('wrk', url, body, clients, warmSeconds);
      const from = statSync(log).size;
      const load = await runLoad('wrk', url, body, clients, seconds);
      const to = statSync(log).size;
      const misses = icMisses(readFileSync(log, 'latin1'), from, to);
      console.log(
        `${framework}, ${subject === 'alone' ? 'alone' : subject === 'hold' ? 'the hold floor' : 'icapkit'} ` +
          `(embedded 204), 10 KiB, ${clients} clients, after ${warmSeconds} s of load, a window of ${seconds} s:`,
      );
      console.log(renderIcMisses(misses, load.ok + load.errors, top).join('\n'));
    } finally {
      await app.stop();
    }
  } finally {
    await icap.stop();
    rmSync(log, { force: true });
    await rm(dir, { recursive: true, force: true });
    await rm(bodiesDir, { recursive: true, force: true });
  }
}

runAsScript(import.meta.url, main);
