/**
 * The framework's own CPU per request at the rate icapkit reached, and the CPU goal measured in
 * interleaved rounds. The CPU goal compares an icapkit cell (10 KiB, 8 clients, a few thousand
 * requests a second) with the framework's ceiling (the framework alone, as fast as it goes). If
 * a request cost the framework more at a lower rate (fewer answers per wake-up of the event
 * loop, per system call), that difference would be counted as icapkit's. This measures it: the
 * framework alone again, its load paced (wrk waiting between an answer and the next request:
 * lua/post.lua's BENCH_DELAY_MS) to the rate each scanned application reached.
 *
 *   node bench/dist/paced.js [--frameworks=fastify,koa,express] [--rounds=1] [--seconds=3] [--settle=2]
 *                            [--warm-requests=30000] [--warm-max-seconds=10]
 *
 * Per framework, three fresh processes (app.js) against the embedded 204 server, started and
 * warmed up once: icapkit, the hold floor (holdfloor.ts) and the framework alone. Then
 * `rounds` rounds, each of five load runs one after the other: icapkit, the framework alone
 * paced to icapkit's rate, the hold floor, the framework alone paced to the hold floor's rate,
 * the framework alone unpaced (its ceiling). Each figure is the last `seconds` of one load run
 * (after `settle`), from the requests the application answered there (/__stats `digested`).
 * This machine's speed drifts over minutes (bench/README.md, nineteenth and twentieth rounds),
 * so with several rounds each difference is taken within its round, seconds apart, and the
 * table gives the median over the rounds (and their range). The pacing is corrected from round
 * to round: its first round may miss the rate it aims at by more (the rates are in the table).
 * Needs wrk.
 */
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type Body, makeBodies } from './bodies.js';
import { runLoad, warmUp } from './load.js';
import {
  type Child,
  DEFAULT_NODE_FLAGS,
  findOnPath,
  killAllChildren,
  median,
  parseOptions,
  runAsScript,
  startChild,
  statsOf,
} from './util.js';

const HERE = dirname(fileURLToPath(import.meta.url));
const CLIENTS = 8;

export interface Window {
  rps: number;
  cpuUsPerReq: number;
}

/** The mean wait (ms) after each answer that brings `clients` connections to `rate` requests/s. */
export function delayFor(rate: number, clients: number, answerMs: number): number {
  return Math.max(0, (clients / rate) * 1000 - answerMs);
}

/**
 * The next wait after a paced window reached `got` instead of `want` requests/s: the period per
 * connection moved by the difference of the two (the answers' own time stays as it was).
 */
export function correctedDelay(delayMs: number, want: number, got: number, clients: number): number {
  return Math.max(0, delayMs + (clients / want - clients / got) * 1000);
}

async function measure(
  app: Child,
  body: Body,
  seconds: number,
  settleS: number,
  delayMs?: number,
): Promise<Window> {
  const port = app.ready.port as number;
  let first: { cpu: number; n: number; t: number } | undefined;
  const snap = async () => {
    const s = await statsOf(port);
    if (s.cpuUs === undefined || s.digested === undefined)
      throw new Error('no /__stats from the application');
    return { cpu: s.cpuUs, n: s.digested, t: performance.now() };
  };
  await runLoad('wrk', `http://127.0.0.1:${port}/upload`, body, CLIENTS, seconds, {
    settle: {
      seconds: settleS,
      snapshot: async () => {
        first = await snap();
      },
    },
    ...(delayMs === undefined ? {} : { delayMs }),
  });
  const last = await snap();
  if (first === undefined || last.n <= first.n) throw new Error('no request answered in the window');
  return {
    rps: (last.n - first.n) / ((last.t - first.t) / 1000),
    cpuUsPerReq: (last.cpu - first.cpu) / (last.n - first.n),
  };
}

/** `median (min-max)` of some numbers, rounded; the value alone for one. */
export function spread(xs: readonly number[]): string {
  const r = (x: number) => x.toFixed(0);
  if (xs.length === 1) return r(xs[0]!);
  return `${r(median(xs))} (${r(Math.min(...xs))}-${r(Math.max(...xs))})`;
}

/** Each window as it is measured, on stderr (the table, on stdout, is the result). */
function note(line: string): void {
  process.stderr.write(`paced: ${line}\n`);
}

function show(w: Window): string {
  return `${w.rps.toFixed(0)} req/s, ${w.cpuUsPerReq.toFixed(0)} µs/req`;
}

/** One scanned application's windows, and the paced framework's beside each, round by round. */
interface Subject {
  name: string;
  own: Window[];
  paced: Window[];
  /** The wait after each answer that paced the framework alone to this subject's rate. */
  delayMs: number | undefined;
}

async function main(): Promise<void> {
  const opts = parseOptions(process.argv.slice(2));
  if (findOnPath('wrk') === null) throw new Error('paced.js needs wrk (apt-get install wrk)');
  const frameworks = (opts.get('frameworks') ?? 'fastify,koa,express').split(',');
  const rounds = Number(opts.get('rounds') ?? 1);
  const seconds = Number(opts.get('seconds') ?? 3);
  const settleS = Number(opts.get('settle') ?? 2);
  if (!(Number.isInteger(rounds) && rounds >= 1)) throw new Error('--rounds: a whole number, 1 or more');
  const warm = {
    requests: Number(opts.get('warm-requests') ?? 30_000),
    maxSeconds: Number(opts.get('warm-max-seconds') ?? 10),
  };
  const { bodies } = await makeBodies(['10k']);
  const body = bodies.get('10k')!;
  const embedded = await startChild(process.execPath, [join(HERE, 'icap204.js')], { timeoutMs: 20_000 });
  const icapUrl = `icap://127.0.0.1:${embedded.ready.port as number}`;
  const start = async (framework: string, args: string[]) => {
    const app = await startChild(
      process.execPath,
      [...DEFAULT_NODE_FLAGS, join(HERE, 'app.js'), framework, ...args],
      { timeoutMs: 20_000 },
    );
    await warmUp(`http://127.0.0.1:${app.ready.port as number}/upload`, body, CLIENTS, 1, warm);
    return app;
  };
  const rows: string[] = [];
  const started = performance.now();
  try {
    for (const framework of frameworks) {
      const apps: Child[] = [];
      try {
        const scanned = await start(framework, [icapUrl, '/avscan']);
        apps.push(scanned);
        const held = await start(framework, [icapUrl, '/avscan', '--hold-floor']);
        apps.push(held);
        const alone = await start(framework, []);
        apps.push(alone);
        const subjects: Array<[Child, Subject]> = [
          [scanned, { name: 'icapkit', own: [], paced: [], delayMs: undefined }],
          [held, { name: 'hold floor', own: [], paced: [], delayMs: undefined }],
        ];
        const ceiling: Window[] = [];
        for (let round = 0; round < rounds; round++) {
          for (const [app, subject] of subjects) {
            const w = await measure(app, body, seconds, settleS);
            subject.own.push(w);
            // Calibrated in up to three windows in the first round (the answers' own time is not
            // known beforehand), then corrected by one step a round.
            let delay = subject.delayMs ?? delayFor(w.rps, CLIENTS, 0.1);
            let paced = await measure(alone, body, seconds, settleS, delay);
            for (let i = 0; round === 0 && i < 2 && Math.abs(paced.rps - w.rps) / w.rps > 0.05; i++) {
              delay = correctedDelay(delay, w.rps, paced.rps, CLIENTS);
              paced = await measure(alone, body, seconds, settleS, delay);
            }
            subject.paced.push(paced);
            note(`${framework} round ${round + 1}: ${subject.name} ${show(w)}; alone paced ${show(paced)}`);
            subject.delayMs = correctedDelay(delay, w.rps, paced.rps, CLIENTS);
          }
          const top = await measure(alone, body, seconds, settleS);
          ceiling.push(top);
          note(`${framework} round ${round + 1}: alone unpaced ${show(top)}`);
        }
        const cpu = (ws: Window[]) => ws.map((w) => w.cpuUsPerReq);
        const rps = (ws: Window[]) => ws.map((w) => w.rps);
        rows.push(
          `| ${framework} | alone, unpaced (ceiling) | ${spread(rps(ceiling))} | ${spread(cpu(ceiling))} | — | — | — |`,
        );
        for (const [, s] of subjects) {
          const abovePaced = s.own.map((w, i) => w.cpuUsPerReq - s.paced[i]!.cpuUsPerReq);
          const aboveCeiling = s.own.map((w, i) => w.cpuUsPerReq - ceiling[i]!.cpuUsPerReq);
          rows.push(
            `| ${framework} | ${s.name} → embedded 204 | ${spread(rps(s.own))} | ${spread(cpu(s.own))} | ` +
              `${spread(rps(s.paced))} req/s: ${spread(cpu(s.paced))} | ` +
              `${spread(abovePaced)} | ${spread(aboveCeiling)} |`,
          );
        }
      } finally {
        for (const app of apps) await app.stop();
      }
    }
  } finally {
    await embedded.stop();
    killAllChildren();
  }
  const each =
    rounds === 1 ? 'each figure' : `each figure the median over ${rounds} rounds (lowest-highest) of`;
  console.log(
    `10 KiB, ${CLIENTS} clients; ${each} the last ${seconds} s of a load run, after ${settleS} s; ` +
      `${((performance.now() - started) / 1000).toFixed(0)} s in all. "µs above": the difference within each round.\n\n` +
      '| framework | application | req/s | app CPU µs / req | the framework alone paced to that rate | µs above it | µs above the ceiling |\n' +
      '|---|---|--:|--:|--:|--:|--:|\n' +
      rows.join('\n'),
  );
}

runAsScript(import.meta.url, main);
