/**
 * CPU profile of an icapkit application under load (V8 `--cpu-prof`), and the self/inclusive
 * time of its functions, ours (packages/core) first.
 *
 *   node bench/dist/profile.js [--framework=express] [--service=204|avscan|echo|none]
 *                              [--cells=10k/8] [--seconds=8] [--out=DIR]
 *   node bench/dist/profile.js --analyze=FILE.cpuprofile
 *
 * Defaults: Express + icapkit -> embedded 204 server, 10 KiB POSTs, 8 clients, 8 s.
 */
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type BodyId, makeBodies } from './bodies.js';
import { startCIcap } from './cicap.js';
import { startTcpCounter } from './counter.js';
import { pickTool, runLoad, warmUp } from './load.js';
import { killAllChildren, parseOptions, runAsScript, startChild } from './util.js';

const HERE = fileURLToPath(new URL('.', import.meta.url));
const ROOT = join(HERE, '..', '..');

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number; columnNumber: number };
  hitCount?: number;
  children?: number[];
}
interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

export interface FnTime {
  key: string;
  fn: string;
  where: string;
  selfMs: number;
  totalMs: number;
}

function whereOf(url: string, line: number): string {
  if (url === '') return '(native)';
  let path = url.startsWith('file://') ? fileURLToPath(url) : url;
  if (path.startsWith(ROOT)) path = relative(ROOT, path);
  path = path.replace(/node_modules\/\.pnpm\/[^/]+\/node_modules\//, 'node_modules/');
  return `${path}:${line + 1}`;
}

/** Self and inclusive ms per function (inclusive counts a sample once per function on its stack). */
export function analyze(profile: CpuProfile): { fns: FnTime[]; totalMs: number } {
  const byId = new Map<number, ProfileNode>();
  const parent = new Map<number, number>();
  for (const n of profile.nodes) byId.set(n.id, n);
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const fns = new Map<string, FnTime>();
  const keyOf = (n: ProfileNode) => {
    const cf = n.callFrame;
    const fn = cf.functionName || '(anonymous)';
    const where = whereOf(cf.url, cf.lineNumber);
    const key = `${fn} ${where}`;
    if (!fns.has(key)) fns.set(key, { key, fn, where, selfMs: 0, totalMs: 0 });
    return key;
  };
  let totalMs = 0;
  for (let i = 0; i < profile.samples.length; i++) {
    const dt = (profile.timeDeltas[i + 1] ?? profile.timeDeltas[i] ?? 0) / 1000;
    totalMs += dt;
    let id: number | undefined = profile.samples[i]!;
    const leaf = byId.get(id)!;
    fns.get(keyOf(leaf))!.selfMs += dt;
    const seen = new Set<string>();
    while (id !== undefined) {
      const n = byId.get(id)!;
      const k = keyOf(n);
      if (!seen.has(k)) {
        seen.add(k);
        fns.get(k)!.totalMs += dt;
      }
      id = parent.get(id);
    }
  }
  return { fns: [...fns.values()], totalMs };
}

/**
 * The layer a frame belongs to: icapkit's adapter, engine, client or protocol, the framework
 * (npm), the benchmark application, Node's own JavaScript, or native/V8 (no script).
 */
export function layerOf(where: string): string {
  const m = /^packages\/core\/(?:src|dist)\/([^/]+)\//.exec(where);
  if (m) {
    const dir = m[1]!;
    if (dir === 'engine' || dir === 'node') return 'icapkit engine';
    if (dir === 'client') return 'icapkit client';
    if (dir === 'protocol') return 'icapkit protocol';
    return `icapkit ${dir}`;
  }
  if (/^packages\/(express|fastify|koa)\//.test(where)) return 'icapkit adapter';
  if (where.startsWith('packages/')) return `icapkit ${where.split('/')[1]}`;
  if (where.startsWith('bench/')) return 'bench app';
  if (where.includes('node_modules/')) return 'framework (npm)';
  if (where.startsWith('node:')) return 'Node.js (JS)';
  return 'native';
}

/** Layers that "ask" for work: Node and native frames below them are counted to them. */
const OWNER_LAYERS = new Set([
  'icapkit engine',
  'icapkit client',
  'icapkit protocol',
  'icapkit adapter',
  'framework (npm)',
  'bench app',
]);

/**
 * Busy time per layer, each sample counted to the innermost frame of an owning layer on its
 * stack (so `writev` called by the ICAP client counts to the client, the HTTP parser's callback
 * into Express to the framework); samples with no such frame are Node's own (socket reads,
 * the HTTP parser, timers), GC or V8.
 */
export function byLayer(profile: CpuProfile): {
  self: Map<string, number>;
  owned: Map<string, number>;
  ownedByFn: Map<string, number>;
} {
  const byId = new Map<number, ProfileNode>();
  const parent = new Map<number, number>();
  for (const n of profile.nodes) byId.set(n.id, n);
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const self = new Map<string, number>();
  const owned = new Map<string, number>();
  const ownedByFn = new Map<string, number>();
  const add = (m: Map<string, number>, k: string, v: number) => m.set(k, (m.get(k) ?? 0) + v);
  for (let i = 0; i < profile.samples.length; i++) {
    const dt = (profile.timeDeltas[i + 1] ?? profile.timeDeltas[i] ?? 0) / 1000;
    const leaf = byId.get(profile.samples[i]!)!;
    const fn = leaf.callFrame.functionName;
    if (fn === '(idle)') continue;
    const special =
      fn === '(garbage collector)' ? 'GC' : fn === '(program)' ? 'V8/native (program)' : undefined;
    const leafLayer = special ?? layerOf(whereOf(leaf.callFrame.url, leaf.callFrame.lineNumber));
    add(self, leafLayer, dt);
    if (special) {
      add(owned, special, dt);
      continue;
    }
    let owner = 'Node.js alone (sockets, HTTP parser, timers)';
    let ownerFn = owner;
    let id: number | undefined = leaf.id;
    while (id !== undefined) {
      const n = byId.get(id)!;
      const where = whereOf(n.callFrame.url, n.callFrame.lineNumber);
      const l = layerOf(where);
      if (OWNER_LAYERS.has(l)) {
        owner = l;
        ownerFn = `${n.callFrame.functionName || '(anonymous)'} ${where}`;
        break;
      }
      id = parent.get(id);
    }
    add(owned, owner, dt);
    add(ownedByFn, ownerFn, dt);
  }
  return { self, owned, ownedByFn };
}

/** Inclusive busy ms per icapkit source file (a sample counts once per file on its stack). */
export function byFile(profile: CpuProfile): Map<string, number> {
  const byId = new Map<number, ProfileNode>();
  const parent = new Map<number, number>();
  for (const n of profile.nodes) byId.set(n.id, n);
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const files = new Map<string, number>();
  for (let i = 0; i < profile.samples.length; i++) {
    const dt = (profile.timeDeltas[i + 1] ?? profile.timeDeltas[i] ?? 0) / 1000;
    const seen = new Set<string>();
    let id: number | undefined = profile.samples[i]!;
    while (id !== undefined) {
      const n = byId.get(id)!;
      const w = whereOf(n.callFrame.url, n.callFrame.lineNumber);
      if (w.startsWith('packages/')) {
        const file = w.slice(0, w.lastIndexOf(':')).replace('/dist/', '/src/').replace(/\.js$/, '.ts');
        if (!seen.has(file)) {
          seen.add(file);
          files.set(file, (files.get(file) ?? 0) + dt);
        }
      }
      id = parent.get(id);
    }
  }
  return files;
}

function category(f: FnTime): string {
  const w = f.where;
  if (f.fn === '(idle)') return 'idle';
  if (f.fn === '(garbage collector)') return 'GC';
  if (f.fn === '(program)') return 'V8/native (program)';
  if (w.startsWith('packages/core/')) return 'icapkit core';
  if (w.startsWith('packages/')) return `icapkit ${w.split('/')[1]}`;
  if (w.startsWith('bench/')) return 'bench app';
  if (w.startsWith('node:')) return 'Node.js internals';
  if (w.includes('node_modules/')) return `npm: ${w.split('node_modules/')[1]!.split('/')[0]}`;
  return 'other/native';
}

export function report(profile: CpuProfile, top = 25): string {
  const { fns, totalMs } = analyze(profile);
  const busy = totalMs - fns.filter((f) => f.fn === '(idle)').reduce((n, f) => n + f.selfMs, 0);
  const out: string[] = [];
  out.push(
    `Profile: ${(totalMs / 1000).toFixed(1)} s sampled, ${(busy / 1000).toFixed(1)} s busy (not idle).`,
  );
  out.push('');
  const cats = new Map<string, number>();
  for (const f of fns) cats.set(category(f), (cats.get(category(f)) ?? 0) + f.selfMs);
  out.push('Self time by origin (% of busy time):', '');
  out.push('| origin | self ms | % busy |', '|---|--:|--:|');
  for (const [c, ms] of [...cats].sort((a, b) => b[1] - a[1])) {
    if (c === 'idle') continue;
    out.push(`| ${c} | ${ms.toFixed(0)} | ${((ms / busy) * 100).toFixed(1)} |`);
  }
  const layers = byLayer(profile);
  out.push(
    '',
    'Busy time per layer: "self" where the CPU was, "owned" with Node/native work counted to the',
    'innermost icapkit, framework or bench frame that called it (% of busy time):',
    '',
    '| layer | self ms | self % | owned ms | owned % |',
    '|---|--:|--:|--:|--:|',
  );
  const names = new Set([...layers.self.keys(), ...layers.owned.keys()]);
  for (const l of [...names].sort((a, b) => (layers.owned.get(b) ?? 0) - (layers.owned.get(a) ?? 0))) {
    const sm = layers.self.get(l) ?? 0;
    const om = layers.owned.get(l) ?? 0;
    out.push(
      `| ${l} | ${sm.toFixed(0)} | ${((sm / busy) * 100).toFixed(1)} | ${om.toFixed(0)} | ${((om / busy) * 100).toFixed(1)} |`,
    );
  }
  out.push(
    '',
    'Functions owning the most busy time (their own plus the Node/native work below them, up to the next owning frame):',
    '',
    '| function | owned ms | owned % |',
    '|---|--:|--:|',
  );
  for (const [fn, ms] of [...layers.ownedByFn].sort((a, b) => b[1] - a[1]).slice(0, top + 10)) {
    out.push(`| ${fn.replace(/\|/g, '\\|')} | ${ms.toFixed(0)} | ${((ms / busy) * 100).toFixed(1)} |`);
  }
  out.push(
    '',
    'Inclusive time per icapkit file (% of busy time):',
    '',
    '| file | incl. ms | incl. % |',
    '|---|--:|--:|',
  );
  for (const [file, ms] of [...byFile(profile)].sort((a, b) => b[1] - a[1]).slice(0, top)) {
    out.push(`| ${file} | ${ms.toFixed(0)} | ${((ms / busy) * 100).toFixed(1)} |`);
  }
  const table = (title: string, list: FnTime[], by: 'selfMs' | 'totalMs') => {
    out.push(
      '',
      title,
      '',
      '| function | where | self ms | self % | incl. ms | incl. % |',
      '|---|---|--:|--:|--:|--:|',
    );
    for (const f of [...list].sort((a, b) => b[by] - a[by]).slice(0, top)) {
      out.push(
        `| ${f.fn.replace(/\|/g, '\\|')} | ${f.where} | ${f.selfMs.toFixed(0)} | ${((f.selfMs / busy) * 100).toFixed(1)} | ${f.totalMs.toFixed(0)} | ${((f.totalMs / busy) * 100).toFixed(1)} |`,
      );
    }
  };
  const ours = fns.filter((f) => f.where.startsWith('packages/'));
  table('Top functions of icapkit (packages/*) by self time:', ours, 'selfMs');
  table('Top functions of icapkit (packages/*) by inclusive time:', ours, 'totalMs');
  table(
    'Top functions overall by self time:',
    fns.filter((f) => f.fn !== '(idle)'),
    'selfMs',
  );
  return out.join('\n');
}

interface HeapNode {
  callFrame: ProfileNode['callFrame'];
  selfSize: number;
  children: HeapNode[];
}

/**
 * Bytes allocated per function in a sampling heap profile taken with the collected objects
 * included (app.ts, BENCH_ALLOC_PROFILE): self (the function's own `new`, literals, closures)
 * and owned (with Node's allocations counted to the innermost icapkit or framework caller).
 */
export function reportAllocations(root: HeapNode, requests: number | undefined, top = 30): string {
  const self = new Map<string, number>();
  const owned = new Map<string, number>();
  const layers = new Map<string, number>();
  const add = (m: Map<string, number>, k: string, v: number) => m.set(k, (m.get(k) ?? 0) + v);
  let total = 0;
  const walk = (n: HeapNode, owner: string, ownerLayer: string) => {
    const where = whereOf(n.callFrame.url, n.callFrame.lineNumber);
    const key = `${n.callFrame.functionName || '(anonymous)'} ${where}`;
    const layer = layerOf(where);
    let o = owner;
    let ol = ownerLayer;
    if (OWNER_LAYERS.has(layer)) {
      o = key;
      ol = layer;
    }
    if (n.selfSize > 0) {
      total += n.selfSize;
      add(self, key, n.selfSize);
      add(owned, o, n.selfSize);
      add(layers, ol, n.selfSize);
    }
    for (const c of n.children) walk(c, o, ol);
  };
  walk(root, 'Node.js alone', 'Node.js alone');
  const per = (b: number) => (requests ? `${(b / requests / 1024).toFixed(2)}` : '—');
  const out = [
    `Allocated: ${(total / 2 ** 20).toFixed(0)} MiB sampled${requests ? ` over ${requests} requests, ${per(total)} KiB per request` : ''}.`,
    '',
    '| layer (owner) | MiB | KiB / request | % |',
    '|---|--:|--:|--:|',
  ];
  for (const [l, b] of [...layers].sort((a, b) => b[1] - a[1]))
    out.push(`| ${l} | ${(b / 2 ** 20).toFixed(1)} | ${per(b)} | ${((b / total) * 100).toFixed(1)} |`);
  const table = (title: string, m: Map<string, number>) => {
    out.push('', title, '', '| function | KiB / request | % |', '|---|--:|--:|');
    for (const [k, b] of [...m].sort((a, b) => b[1] - a[1]).slice(0, top))
      out.push(`| ${k.replace(/\|/g, '\\|')} | ${per(b)} | ${((b / total) * 100).toFixed(1)} |`);
  };
  table('Allocating functions (owned: with the Node work they called):', owned);
  table('Allocating functions (self):', self);
  return out.join('\n');
}

async function main(): Promise<void> {
  const opts = parseOptions(process.argv.slice(2));
  const allocFile = opts.get('analyze-alloc');
  if (allocFile !== undefined) {
    const p = JSON.parse(await readFile(allocFile, 'utf8')) as { head: HeapNode };
    const n = opts.get('requests');
    console.log(reportAllocations(p.head, n === undefined ? undefined : Number(n)));
    return;
  }
  const analyzeFile = opts.get('analyze');
  if (analyzeFile !== undefined) {
    console.log(report(JSON.parse(await readFile(analyzeFile, 'utf8')) as CpuProfile));
    return;
  }
  const framework = opts.get('framework') ?? 'express';
  const service = opts.get('service') ?? '204';
  const [bodyId, clientsText] = (opts.get('cells') ?? '10k/8').split('/') as [BodyId, string];
  const clients = Number(clientsText);
  const seconds = Number(opts.get('seconds') ?? 8);
  const outDir = opts.get('out') ?? join(HERE, '..', 'results', 'profile');
  await rm(outDir, { recursive: true, force: true });
  await mkdir(outDir, { recursive: true });

  const { dir, bodies } = await makeBodies([bodyId]);
  const body = bodies.get(bodyId)!;
  const none = service === 'none';
  const scanner = await startScanner(service);
  const counter = await startTcpCounter(scanner.port);
  try {
    const app = await startChild(
      process.execPath,
      [
        '--cpu-prof',
        `--cpu-prof-dir=${outDir}`,
        join(HERE, 'app.js'),
        framework,
        ...(none ? [] : [`icap://127.0.0.1:${counter.port}`, service === 'echo' ? '/echo' : '/avscan']),
      ],
      { timeoutMs: 20_000 },
    );
    const url = `http://127.0.0.1:${app.ready.port as number}/upload`;
    await warmUp(url, body, clients, 2);
    const r = await runLoad(pickTool(), url, body, clients, seconds);
    console.error(
      `profile: ${framework} -> ${service}, ${body.label}, ${clients} clients: ${r.rps.toFixed(0)} req/s, ` +
        `p50 ${r.p50.toFixed(1)} ms, p99 ${r.p99.toFixed(1)} ms, ICAP connections ${counter.accepted()}`,
    );
    await app.stop();
    const file = (await readdir(outDir)).find((f) => f.endsWith('.cpuprofile'));
    if (!file) throw new Error(`no .cpuprofile written in ${outDir}`);
    const text = report(JSON.parse(await readFile(join(outDir, file), 'utf8')) as CpuProfile);
    const header =
      `Profile of ${framework} + icapkit -> ${service === '204' ? 'embedded 204 server' : `c-icap ${service}`}, ` +
      `${body.label} POSTs, ${clients} clients, ${seconds} s: ${r.rps.toFixed(0)} req/s (with the profiler on).\n` +
      `File: ${relative(ROOT, join(outDir, file))}\n\n`;
    await writeFile(join(outDir, 'report.md'), header + text + '\n');
    console.log(header + text);
  } finally {
    await counter.close();
    await scanner.stop();
    await rm(dir, { recursive: true, force: true });
    killAllChildren();
  }
}

/**
 * The ICAP server a profiling run scans against: the embedded 204 server (`204`), c-icap
 * (`avscan`, `echo`), or none (`none`: the port is a closed one, the app runs without icapkit).
 */
export async function startScanner(service: string): Promise<{ port: number; stop(): Promise<void> }> {
  if (service === 'none') return { port: 9, stop: async () => undefined };
  if (service === '204') {
    const embedded = await startChild(process.execPath, [join(HERE, 'icap204.js')]);
    return { port: embedded.ready.port as number, stop: () => embedded.stop() };
  }
  const cicap = await startCIcap();
  return { port: cicap.port, stop: () => cicap.stop() };
}

runAsScript(import.meta.url, main);
