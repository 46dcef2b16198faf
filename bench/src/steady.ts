/**
 * App CPU per request at steady state, the framework alone, the hold floor and icapkit read
 * side by side: the measurement behind the "≤ 100 µs above the framework" goal.
 *
 * Why not the full run's CPU column alone: a cell of run.js measures a fresh application after a
 * warm-up of one second and 1,000 requests. V8 is still compiling then: with --trace-opt, a
 * Fastify + icapkit process answering 10 KiB requests (8 clients, embedded 204 server) still
 * makes 60-300 TurboFan compilations per 4-second window (280-1,400 ms of compiler threads)
 * over its first ~50,000 requests, and none after; the hold floor still made 55 (241 ms) in the
 * window after 20 s of load.
 * What is compiled once is not a per-request cost, and icapkit (more code than the framework
 * alone) pays more of it early. And this machine has phases in which the same process costs
 * 1.5× more per request for minutes: two processes measured minutes apart are not comparable.
 *
 * So, for each framework: the three applications (framework alone, hold floor, icapkit) start
 * together against the same scanner, each is warmed up with the load tool for --warm-seconds,
 * then --rounds rounds measure each for --seconds, the order rotating every round. The process's
 * CPU (/proc, every thread) over each window ÷ the requests answered in it; "above the
 * framework" is the median of the per-round differences (windows seconds apart, in one phase).
 *
 *   node bench/dist/steady.js [--frameworks=fastify,koa,express] [--cells=10k/8]
 *                             [--warm-seconds=20] [--rounds=9]
 *                             [--seconds=2] [--node-flags='...'] [--json=FILE]
 */
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type BodyId, makeBodies } from './bodies.js';
import { pickTool, runLoad } from './load.js';
import { startScanner } from './profile.js';
import {
  type Child,
  cpuOf,
  DEFAULT_NODE_FLAGS,
  median,
  parseOptions,
  runAsScript,
  startChild,
} from './util.js';

const HERE = fileURLToPath(new URL('.', import.meta.url));

export const SUBJECTS = ['alone', 'hold', 'icapkit'] as const;
export type Subject = (typeof SUBJECTS)[number];

/** One measured window: CPU µs per request of one application. */
export interface Window {
  round: number;
  subject: Subject;
  usPerRequest: number;
  requests: number;
}

export interface SteadySummary {
  framework: string;
  /** Median µs per request of each application. */
  median: Record<Subject, number>;
  /** Medians of the per-round differences, and their range over the rounds. */
  holdAbove: number;
  icapkitAbove: number;
  icapkitAboveHold: number;
  icapkitAboveRange: [number, number];
  rounds: number;
}

/** The order the applications are measured in round `round` (rotates: no one always goes first). */
export function roundOrder(round: number): Subject[] {
  return SUBJECTS.map((_, i) => SUBJECTS[(i + round) % SUBJECTS.length]!);
}

/** Medians per application and of the per-round differences; rounds missing a subject are left out of the differences. */
export function summarise(framework: string, windows: readonly Window[]): SteadySummary {
  const of = (s: Subject) => windows.filter((w) => w.subject === s).map((w) => w.usPerRequest);
  const rounds = [...new Set(windows.map((w) => w.round))].sort((a, b) => a - b);
  const diffs = (a: Subject, b: Subject) => {
    const out: number[] = [];
    for (const r of rounds) {
      const x = windows.find((w) => w.round === r && w.subject === a);
      const y = windows.find((w) => w.round === r && w.subject === b);
      if (x && y) out.push(x.usPerRequest - y.usPerRequest);
    }
    return out;
  };
  const above = diffs('icapkit', 'alone');
  return {
    framework,
    median: { alone: median(of('alone')), hold: median(of('hold')), icapkit: median(of('icapkit')) },
    holdAbove: median(diffs('hold', 'alone')),
    icapkitAbove: median(above),
    icapkitAboveHold: median(diffs('icapkit', 'hold')),
    icapkitAboveRange: [Math.min(...above), Math.max(...above)],
    rounds: rounds.length,
  };
}

export function renderSteady(summaries: readonly SteadySummary[], heading: string): string[] {
  const r = (x: number) => (Number.isFinite(x) ? Math.round(x).toString() : '—');
  const lines = [
    heading,
    '',
    '| framework | alone | hold floor | icapkit | hold floor above the framework | icapkit above the framework (range) | icapkit above the hold floor |',
    '| --- | --: | --: | --: | --: | --: | --: |',
  ];
  for (const s of summaries)
    lines.push(
      `| ${s.framework} | ${r(s.median.alone)} | ${r(s.median.hold)} | ${r(s.median.icapkit)} | ${r(s.holdAbove)} | ` +
        `${r(s.icapkitAbove)} (${r(s.icapkitAboveRange[0])} to ${r(s.icapkitAboveRange[1])}) | ${r(s.icapkitAboveHold)} |`,
    );
  return lines;
}

async function main(): Promise<void> {
  const opts = parseOptions(process.argv.slice(2));
  const frameworks = (opts.get('frameworks') ?? 'fastify,koa,express').split(',').filter(Boolean);
  const [bodyId, clientsText] = (opts.get('cells') ?? '10k/8').split('/') as [BodyId, string];
  const clients = Number(clientsText);
  const warmSeconds = Number(opts.get('warm-seconds') ?? 20);
  const rounds = Number(opts.get('rounds') ?? 9);
  const seconds = Number(opts.get('seconds') ?? 2);
  const nodeFlags = (opts.get('node-flags') ?? DEFAULT_NODE_FLAGS.join(' ')).split(' ').filter(Boolean);
  const tool = pickTool();
  const { dir, bodies } = await makeBodies([bodyId]);
  const body = bodies.get(bodyId)!;
  // The embedded server answering 204: the hold floor accepts nothing else, and the app's own
  // cost is read without a scanner sharing its cores.
  const scanner = await startScanner('204');
  const summaries: SteadySummary[] = [];
  const allWindows: Array<Window & { framework: string }> = [];
  try {
    for (const framework of frameworks) {
      const apps = new Map<Subject, Child>();
      try {
        for (const subject of SUBJECTS) {
          const icap = subject === 'alone' ? [] : [`icap://127.0.0.1:${scanner.port}`, '/avscan'];
          const hold = subject === 'hold' ? ['--hold-floor'] : [];
          apps.set(
            subject,
            await startChild(
              process.execPath,
              [...nodeFlags, join(HERE, 'app.js'), framework, ...icap, ...hold],
              {
                timeoutMs: 20_000,
              },
            ),
          );
        }
        const url = (s: Subject) => `http://127.0.0.1:${apps.get(s)!.ready.port as number}/upload`;
        for (const subject of SUBJECTS) await runLoad(tool, url(subject), body, clients, warmSeconds);
        const windows: Window[] = [];
        for (let round = 0; round < rounds; round++) {
          for (const subject of roundOrder(round)) {
            const pid = apps.get(subject)!.pid;
            const c0 = cpuOf(pid);
            const res = await runLoad(tool, url(subject), body, clients, seconds);
            const c1 = cpuOf(pid);
            if (res.ok === 0 || res.errors > 0)
              throw new Error(`${framework} ${subject}: ${res.ok} answered, ${res.errors} errors`);
            windows.push({ round, subject, usPerRequest: ((c1 - c0) * 1e6) / res.ok, requests: res.ok });
          }
        }
        const s = summarise(framework, windows);
        summaries.push(s);
        allWindows.push(...windows.map((w) => ({ ...w, framework })));
        console.error(
          `${framework}: alone ${s.median.alone.toFixed(0)}, hold ${s.median.hold.toFixed(0)}, icapkit ${s.median.icapkit.toFixed(0)} µs; ` +
            `icapkit above ${s.icapkitAbove.toFixed(0)} (${s.icapkitAboveRange.map((x) => x.toFixed(0)).join(' to ')})`,
        );
      } finally {
        for (const app of apps.values()) await app.stop();
      }
    }
  } finally {
    await scanner.stop();
    await rm(dir, { recursive: true, force: true });
  }
  const heading =
    `App CPU µs per request at steady state, ${body.label}, ${clients} clients, scanner: embedded 204; ` +
    `${warmSeconds} s warm-up each, ${rounds} rounds of ${seconds} s, node ${nodeFlags.join(' ') || '(no flags)'}:`;
  console.log(renderSteady(summaries, heading).join('\n'));
  const json = opts.get('json');
  if (json !== undefined)
    await writeFile(json, JSON.stringify({ heading, summaries, windows: allWindows }, null, 2));
}

runAsScript(import.meta.url, main);
