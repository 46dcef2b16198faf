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
 * Against c-icap's echo service the hold floor previews as icapkit does and hands over the
 * body of the 200 (holdfloor.ts); against avscan (a clean body is a bare 204) and the 204
 * server it hands the held body over.
 *
 * `--stages=1` also starts a fourth application, icapkit with the scan's stage clock on
 * (BENCH_STAGES=1: a few µs per request, so it is not one of the compared three), warmed up like
 * them, and after the rounds measures it with one client (the stage clock's CPU is the
 * process's: one request's only when one is in flight): the goal's "per stage of the scan"
 * at steady state.
 *
 *   node bench/dist/steady.js [--frameworks=fastify,koa,express] [--cells=10k/8]
 *                             [--service=204|echo|avscan] [--stages=1]
 *                             [--warm-seconds=20] [--rounds=9]
 *                             [--seconds=2] [--node-flags='...'] [--json=FILE]
 */
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { makeBodies } from './bodies.js';
import { holdFloorEnv } from './holdfloor.js';
import { pickTool, runLoad } from './load.js';
import { startScanner } from './profile.js';
import { STAGES, type Stage, type StageSnapshot, stageDelta } from './stages.js';
import {
  type Child,
  cpuOf,
  interleavedOptions,
  median,
  parseOptions,
  rotate,
  runAsScript,
  startChild,
  statsOf,
  withinRounds,
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
export function roundOrder(round: number, subjects: readonly Subject[] = SUBJECTS): Subject[] {
  return rotate(round, subjects);
}

/** Medians per application and of the per-round differences; rounds missing a subject are left out of the differences. */
export function summarise(framework: string, windows: readonly Window[]): SteadySummary {
  const of = (s: Subject) => windows.filter((w) => w.subject === s).map((w) => w.usPerRequest);
  const rounds = new Set(windows.map((w) => w.round));
  const diffs = (a: Subject, b: Subject) =>
    withinRounds(windows, a, b, (x, y) => x.usPerRequest - y.usPerRequest);
  const above = diffs('icapkit', 'alone');
  return {
    framework,
    median: { alone: median(of('alone')), hold: median(of('hold')), icapkit: median(of('icapkit')) },
    holdAbove: median(diffs('hold', 'alone')),
    icapkitAbove: median(above),
    icapkitAboveHold: median(diffs('icapkit', 'hold')),
    icapkitAboveRange: [Math.min(...above), Math.max(...above)],
    rounds: rounds.size,
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

/** Per stage of the scan at steady state, one client (`--stages=1`). */
export interface StageRow {
  framework: string;
  /** CPU µs per request in each stage (the process's CPU while one request is in flight). */
  stages: Record<Stage, number>;
  /** The staged application's CPU µs per request over the window, and the framework alone's beside it. */
  app: number;
  alone: number;
}

/** µs per request in each stage, from the stage totals' difference over a window of `requests`. */
export function stageRow(
  framework: string,
  delta: StageSnapshot,
  requests: number,
  app: number,
  alone: number,
): StageRow {
  const stages = Object.fromEntries(STAGES.map((s) => [s, delta[s].cpuUs / requests])) as Record<
    Stage,
    number
  >;
  return { framework, stages, app, alone };
}

export function renderStageRows(rows: readonly StageRow[], heading: string): string[] {
  const r = (x: number) => Math.round(x).toString();
  const lines = [
    heading,
    '',
    `| framework | ${STAGES.join(' | ')} | the scan's stages | rest of the app | app | framework alone | app above the framework |`,
    `| --- |${STAGES.map(() => ' --: |').join('')} --: | --: | --: | --: | --: |`,
  ];
  for (const row of rows) {
    const engine = STAGES.reduce((a, s) => a + row.stages[s], 0);
    lines.push(
      `| ${row.framework} | ${STAGES.map((s) => r(row.stages[s])).join(' | ')} | ${r(engine)} | ${r(row.app - engine)} | ${r(row.app)} | ${r(row.alone)} | ${r(row.app - row.alone)} |`,
    );
  }
  return lines;
}

/** The staged application's stage totals (its /__stats, util.ts's statsOf). */
async function stagesOf(port: number): Promise<StageSnapshot> {
  const { stages } = await statsOf(port);
  if (stages === undefined)
    throw new Error('the staged application publishes no stage totals (BENCH_STAGES=1?)');
  return stages;
}

async function main(): Promise<void> {
  const opts = parseOptions(process.argv.slice(2));
  const { frameworks, bodyId, clients, warmSeconds, rounds, seconds, nodeFlags } = interleavedOptions(opts, {
    cells: '10k/8',
    warmSeconds: 20,
    rounds: 9,
    seconds: 2,
  });
  const service = opts.get('service') ?? '204';
  if (!['204', 'echo', 'avscan'].includes(service))
    throw new Error(`--service=${service}: 204, echo or avscan`);
  const withStages = opts.get('stages') === '1';
  const tool = pickTool();
  const { dir, bodies } = await makeBodies([bodyId]);
  const body = bodies.get(bodyId)!;
  const scanner = await startScanner(service);
  const servicePath = service === 'echo' ? '/echo' : '/avscan';
  const summaries: SteadySummary[] = [];
  const stageRows: StageRow[] = [];
  const allWindows: Array<Window & { framework: string }> = [];
  try {
    for (const framework of frameworks) {
      const apps = new Map<Subject | 'staged', Child>();
      try {
        const start = (subject: Subject | 'staged') =>
          startChild(
            process.execPath,
            [
              ...nodeFlags,
              join(HERE, 'app.js'),
              framework,
              ...(subject === 'alone' ? [] : [`icap://127.0.0.1:${scanner.port}`, servicePath]),
              ...(subject === 'hold' ? ['--hold-floor'] : []),
            ],
            {
              timeoutMs: 20_000,
              env:
                subject === 'staged'
                  ? { BENCH_STAGES: '1' }
                  : subject === 'hold'
                    ? holdFloorEnv(service)
                    : {},
            },
          );
        for (const subject of SUBJECTS) apps.set(subject, await start(subject));
        if (withStages) apps.set('staged', await start('staged'));
        const url = (s: Subject | 'staged') => `http://127.0.0.1:${apps.get(s)!.ready.port as number}/upload`;
        for (const subject of apps.keys()) await runLoad(tool, url(subject), body, clients, warmSeconds);
        const windows: Window[] = [];
        /** CPU µs per request of one application over a window of `n` clients. */
        const measure = async (subject: Subject | 'staged', n: number) => {
          const pid = apps.get(subject)!.pid;
          const c0 = cpuOf(pid);
          const res = await runLoad(tool, url(subject), body, n, seconds);
          const c1 = cpuOf(pid);
          if (res.ok === 0 || res.errors > 0)
            throw new Error(`${framework} ${subject}: ${res.ok} answered, ${res.errors} errors`);
          return { usPerRequest: ((c1 - c0) * 1e6) / res.ok, requests: res.ok };
        };
        for (let round = 0; round < rounds; round++)
          for (const subject of roundOrder(round))
            windows.push({ round, subject, ...(await measure(subject, clients)) });
        const s = summarise(framework, windows);
        summaries.push(s);
        allWindows.push(...windows.map((w) => ({ ...w, framework })));
        console.error(
          `${framework}: alone ${s.median.alone.toFixed(0)}, hold ${s.median.hold.toFixed(0)}, icapkit ${s.median.icapkit.toFixed(0)} µs; ` +
            `icapkit above ${s.icapkitAbove.toFixed(0)} (${s.icapkitAboveRange.map((x) => x.toFixed(0)).join(' to ')})`,
        );
        if (withStages) {
          // One client: the stage clock's CPU is the process's. The framework alone is read
          // beside it, with one client too.
          const port = apps.get('staged')!.ready.port as number;
          const alone = await measure('alone', 1);
          const before = await stagesOf(port);
          const staged = await measure('staged', 1);
          const after = await stagesOf(port);
          const row = stageRow(
            framework,
            stageDelta(before, after),
            staged.requests,
            staged.usPerRequest,
            alone.usPerRequest,
          );
          stageRows.push(row);
          console.error(
            `${framework} stages: ${STAGES.map((st) => `${st} ${row.stages[st].toFixed(0)}`).join(', ')}; app ${row.app.toFixed(0)}, alone ${row.alone.toFixed(0)}`,
          );
        }
      } finally {
        for (const app of apps.values()) await app.stop();
      }
    }
  } finally {
    await scanner.stop();
    await rm(dir, { recursive: true, force: true });
  }
  const scannerName = service === '204' ? 'embedded 204' : `c-icap ${service}`;
  const heading =
    `App CPU µs per request at steady state, ${body.label}, ${clients} clients, scanner: ${scannerName}; ` +
    `${warmSeconds} s warm-up each, ${rounds} rounds of ${seconds} s, node ${nodeFlags.join(' ') || '(no flags)'}:`;
  console.log(renderSteady(summaries, heading).join('\n'));
  const stageHeading =
    `Per stage of the scan at steady state, CPU µs per request, ${body.label}, one client, scanner: ${scannerName} ` +
    `(the application with the stage clock on, after the same warm-up; one window of ${seconds} s):`;
  if (withStages) console.log(`\n${renderStageRows(stageRows, stageHeading).join('\n')}`);
  const json = opts.get('json');
  if (json !== undefined)
    await writeFile(
      json,
      JSON.stringify({ heading, summaries, windows: allWindows, stageHeading, stageRows }, null, 2),
    );
}

runAsScript(import.meta.url, main);
