/**
 * The framework's own CPU per request at the rate icapkit reached. The CPU goal compares an
 * icapkit cell (10 KiB, 8 clients, a few thousand requests a second) with the framework's
 * ceiling (the framework alone, as fast as it goes). If a request cost the framework more at a
 * lower rate (fewer answers per wake-up of the event loop, per system call), that difference
 * would be counted as icapkit's. This measures it: the framework alone again, its load paced
 * (wrk waiting between an answer and the next request: lua/post.lua's BENCH_DELAY_MS) to the
 * rate each scanned application reached.
 *
 *   node bench/dist/paced.js [--frameworks=fastify,koa,express] [--seconds=3] [--settle=2]
 *                            [--warm-requests=30000] [--warm-max-seconds=10]
 *
 * Each application is a fresh process (app.js) against the embedded 204 server: icapkit, the
 * hold floor (holdfloor.ts), then the framework alone, unpaced and paced to each of their
 * rates. Each figure is the last `seconds` of one load run (after `settle`), from the requests
 * the application answered there (/__stats `digested`). Needs wrk.
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

async function main(): Promise<void> {
  const opts = parseOptions(process.argv.slice(2));
  if (findOnPath('wrk') === null) throw new Error('paced.js needs wrk (apt-get install wrk)');
  const frameworks = (opts.get('frameworks') ?? 'fastify,koa,express').split(',');
  const seconds = Number(opts.get('seconds') ?? 3);
  const settleS = Number(opts.get('settle') ?? 2);
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
  try {
    for (const framework of frameworks) {
      const scanned = new Map<string, Window>();
      for (const [subject, args] of [
        ['icapkit', [icapUrl, '/avscan']],
        ['hold floor', [icapUrl, '/avscan', '--hold-floor']],
      ] as const) {
        const app = await start(framework, [...args]);
        try {
          scanned.set(subject, await measure(app, body, seconds, settleS));
        } finally {
          await app.stop();
        }
      }
      const alone = await start(framework, []);
      try {
        const ceiling = await measure(alone, body, seconds, settleS);
        rows.push(
          `| ${framework} | alone, unpaced (ceiling) | ${ceiling.rps.toFixed(0)} | ${ceiling.cpuUsPerReq.toFixed(0)} | — | — | — |`,
        );
        for (const [subject, w] of scanned) {
          // Calibrated in up to three windows: the answers' own time is not known beforehand.
          let delay = delayFor(w.rps, CLIENTS, 0.1);
          let paced = await measure(alone, body, seconds, settleS, delay);
          for (let i = 0; i < 2 && Math.abs(paced.rps - w.rps) / w.rps > 0.05; i++) {
            delay = correctedDelay(delay, w.rps, paced.rps, CLIENTS);
            paced = await measure(alone, body, seconds, settleS, delay);
          }
          rows.push(
            `| ${framework} | ${subject} → embedded 204 | ${w.rps.toFixed(0)} | ${w.cpuUsPerReq.toFixed(0)} | ` +
              `${paced.rps.toFixed(0)} req/s: ${paced.cpuUsPerReq.toFixed(0)} | ` +
              `${(w.cpuUsPerReq - paced.cpuUsPerReq).toFixed(0)} | ${(w.cpuUsPerReq - ceiling.cpuUsPerReq).toFixed(0)} |`,
          );
        }
      } finally {
        await alone.stop();
      }
    }
  } finally {
    await embedded.stop();
    killAllChildren();
  }
  console.log(
    `10 KiB, ${CLIENTS} clients; each figure the last ${seconds} s of a load run, after ${settleS} s\n\n` +
      '| framework | application | req/s | app CPU µs / req | the framework alone paced to that rate | µs above it | µs above the ceiling |\n' +
      '|---|---|--:|--:|--:|--:|--:|\n' +
      rows.join('\n'),
  );
}

runAsScript(import.meta.url, main);
