/**
 * The throughput goals that a full run misses, read against the least an in-process middleware
 * can do on this machine: Squid, the raw ICAP client, the hold floor (holdfloor.ts) and icapkit,
 * all against one c-icap, measured in interleaved rounds.
 *
 * Why: a full run measures each path once, minutes apart, and this machine has phases in which
 * the same path runs 1.5× slower. A ratio of two cells measured minutes apart (icapkit ÷ Squid,
 * icapkit ÷ raw c-icap) moves by ±20-30% between runs. Here every round measures every path
 * for --seconds, the order rotating, and a ratio is taken within a round, so both sides of it
 * share the machine's phase; the table shows the medians of the per-round ratios.
 *
 * The hold floor holds the body, sends one bare REQMOD on a pooled kept-alive socket, accepts a
 * bare 204 and hands the held chunks over: no parsing, no policy, no log record. Against avscan
 * it sends bodies whole (no preview round trip). Against echo it previews larger bodies as
 * icapkit does (c-icap's echo answers every other previewed request with a 204), reads a 200 to
 * its end and hands its de-chunked body over. A multipart form goes to it as one object, as
 * Squid sends it (icapkit scans each part); `holdparts` is the hold floor scanning it part by
 * part, as icapkit does (holdfloor.ts). Where the hold floor misses a goal, no in-process
 * middleware built on this framework reaches it on this machine, whatever it does about its own
 * CPU; the gap between icapkit and the hold floor is what is left to take.
 *
 *   node bench/dist/floors.js [--frameworks=fastify,koa,express] [--cells=1m/8]
 *                             [--service=avscan|echo] [--no-preview-too=1]
 *                             [--variant-too='{"holdBodySize":"2mb"}'] (icapkit with that profile too)
 *                             [--hold-stream-too=1] (the hold floor handing the body on as a stream too)
 *                             [--icap-delay-ms=1] (every path reaches c-icap through delayproxy.ts)
 *                             [--warm-seconds=8] [--rounds=5] [--seconds=3] [--json=FILE]
 *
 * Against c-icap's echo service a multipart form has no part-by-part floor (it would have to
 * put the form together again from the returned parts). The raw client is run.js's rawload.js
 * (IcapClient, preview as icapkit, one process of its own), for a multipart form part by part
 * (`--parts`), as icapkit scans it.
 */
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { makeBodies } from './bodies.js';
import { type DelayProxy, startDelayProxy } from './delayproxy.js';
import { holdFloorEnv } from './holdfloor.js';
import { pickTool, runLoad, warmUp } from './load.js';
import { startScanner } from './profile.js';
import { startSquid } from './squid.js';
import {
  type Child,
  interleavedOptions,
  median,
  parseOptions,
  rotate,
  runAsScript,
  startChild,
  withinRounds,
} from './util.js';

const HERE = fileURLToPath(new URL('.', import.meta.url));

/**
 * A path measured in every round: `squid`, `raw`, `hold:<framework>`, `icapkit:<framework>`, for
 * a multipart form `holdparts:<framework>` (the hold floor part by part), and with
 * `--no-preview-too=1` `nopreview:<framework>` (icapkit with `enablePreview: false`), and with
 * `--variant-too=<profile JSON>` `variant:<framework>` (icapkit with those profile fields), and with
 * `--hold-stream-too=1` `holdstream:<framework>`: the hold floor handing the body on as a stream
 * that the handler reads, as icapkit does (the request made readable again; app.js's
 * BENCH_HOLD_STREAM), not as the held chunks themselves.
 */
export type FloorSubject = string;

export interface FloorWindow {
  round: number;
  subject: FloorSubject;
  /** Answers other than an error, per second. */
  rps: number;
  /** Failed requests in the window (non-2xx answers, socket errors, timeouts). */
  errors?: number;
}

/** One framework's ratios: medians of the per-round ratios, and their range. */
export interface FloorRow {
  framework: string;
  rps: { icapkit: number; hold: number; squid: number; raw: number };
  icapkitSquid: Ratio;
  holdSquid: Ratio;
  icapkitRaw: Ratio;
  holdRaw: Ratio;
  icapkitHold: Ratio;
  /** A multipart form only: the hold floor part by part, its req/s and ratios. */
  holdParts?: { rps: number; squid: Ratio; raw: Ratio; icapkit: Ratio };
  /**
   * `--no-preview-too=1`: icapkit without previews, its req/s, ÷ Squid, and icapkit (previews on,
   * the default) ÷ it: what the previews cost or bring, within each round.
   */
  noPreview?: { rps: number; squid: Ratio; icapkit: Ratio };
  /** `--variant-too`: icapkit with other profile fields, as noPreview (icapkit ÷ the variant). */
  variant?: { rps: number; squid: Ratio; icapkit: Ratio };
  /** `--hold-stream-too=1`: the hold floor handing on a stream, as noPreview (icapkit ÷ it). */
  holdStream?: { rps: number; squid: Ratio; icapkit: Ratio };
}

export interface Ratio {
  median: number;
  min: number;
  max: number;
  rounds: number;
}

/** The subjects of a run, in their base order (rotate() turns it every round). */
export function floorSubjects(
  frameworks: readonly string[],
  opts: { parts?: boolean; noPreview?: boolean; variant?: boolean; holdStream?: boolean } = {},
): FloorSubject[] {
  return [
    'squid',
    'raw',
    ...frameworks.flatMap((f) => [
      `hold:${f}`,
      ...(opts.holdStream === true ? [`holdstream:${f}`] : []),
      ...(opts.parts === true ? [`holdparts:${f}`] : []),
      `icapkit:${f}`,
      ...(opts.noPreview === true ? [`nopreview:${f}`] : []),
      ...(opts.variant === true ? [`variant:${f}`] : []),
    ]),
  ];
}

/** a ÷ b within each round both were measured in (a round missing either is left out). */
export function ratioOf(windows: readonly FloorWindow[], a: FloorSubject, b: FloorSubject): Ratio {
  const out = withinRounds(windows, a, b, (x, y) => (y.rps > 0 ? x.rps / y.rps : undefined));
  return out.length === 0
    ? { median: Number.NaN, min: Number.NaN, max: Number.NaN, rounds: 0 }
    : { median: median(out), min: Math.min(...out), max: Math.max(...out), rounds: out.length };
}

export function floorRows(frameworks: readonly string[], windows: readonly FloorWindow[]): FloorRow[] {
  const rpsOf = (s: FloorSubject) => median(windows.filter((w) => w.subject === s).map((w) => w.rps));
  /** icapkit in another setting (`<kind>:<framework>`): its req/s, ÷ Squid, and icapkit ÷ it. */
  const against = (kind: string, f: string) => ({
    rps: rpsOf(`${kind}:${f}`),
    squid: ratioOf(windows, `${kind}:${f}`, 'squid'),
    icapkit: ratioOf(windows, `icapkit:${f}`, `${kind}:${f}`),
  });
  return frameworks.map((f) => ({
    framework: f,
    rps: {
      icapkit: rpsOf(`icapkit:${f}`),
      hold: rpsOf(`hold:${f}`),
      squid: rpsOf('squid'),
      raw: rpsOf('raw'),
    },
    icapkitSquid: ratioOf(windows, `icapkit:${f}`, 'squid'),
    holdSquid: ratioOf(windows, `hold:${f}`, 'squid'),
    icapkitRaw: ratioOf(windows, `icapkit:${f}`, 'raw'),
    holdRaw: ratioOf(windows, `hold:${f}`, 'raw'),
    icapkitHold: ratioOf(windows, `icapkit:${f}`, `hold:${f}`),
    ...(windows.some((w) => w.subject === `holdparts:${f}`)
      ? {
          holdParts: {
            rps: rpsOf(`holdparts:${f}`),
            squid: ratioOf(windows, `holdparts:${f}`, 'squid'),
            raw: ratioOf(windows, `holdparts:${f}`, 'raw'),
            icapkit: ratioOf(windows, `icapkit:${f}`, `holdparts:${f}`),
          },
        }
      : {}),
    ...(windows.some((w) => w.subject === `nopreview:${f}`) ? { noPreview: against('nopreview', f) } : {}),
    ...(windows.some((w) => w.subject === `variant:${f}`) ? { variant: against('variant', f) } : {}),
    ...(windows.some((w) => w.subject === `holdstream:${f}`) ? { holdStream: against('holdstream', f) } : {}),
  }));
}

/** One line per path that had failed requests: how many, over how many rounds. */
export function errorNotes(windows: readonly FloorWindow[]): string[] {
  const bySubject = new Map<FloorSubject, { errors: number; rounds: number }>();
  for (const w of windows) {
    if (!w.errors) continue;
    const e = bySubject.get(w.subject) ?? { errors: 0, rounds: 0 };
    e.errors += w.errors;
    e.rounds += 1;
    bySubject.set(w.subject, e);
  }
  return [...bySubject].map(
    ([s, e]) => `${s}: ${e.errors} failed requests in ${e.rounds} of its windows (req/s counts answers only)`,
  );
}

export function renderFloors(rows: readonly FloorRow[], heading: string): string[] {
  const n = (x: number) => (Number.isFinite(x) ? (x >= 100 ? x.toFixed(0) : x.toFixed(1)) : '—');
  const q = (r: Ratio) =>
    Number.isFinite(r.median) ? `${r.median.toFixed(2)}× (${r.min.toFixed(2)}–${r.max.toFixed(2)})` : '—';
  const parts = rows.some((r) => r.holdParts !== undefined);
  const noPreview = rows.some((r) => r.noPreview !== undefined);
  const variant = rows.some((r) => r.variant !== undefined);
  const holdStream = rows.some((r) => r.holdStream !== undefined);
  const otherCells = (o: FloorRow['variant'], on: boolean) =>
    on ? (o === undefined ? ' — | — | — |' : ` ${n(o.rps)} | ${q(o.squid)} | ${q(o.icapkit)} |`) : '';
  const lines = [
    heading,
    '',
    '| framework | req/s: icapkit / hold floor / Squid / raw client | icapkit ÷ Squid | hold floor ÷ Squid | icapkit ÷ raw | hold floor ÷ raw | icapkit ÷ hold floor |' +
      (parts
        ? ' req/s: hold floor part by part | part by part ÷ Squid | part by part ÷ raw | icapkit ÷ part by part |'
        : '') +
      (noPreview
        ? ' req/s: icapkit without preview | without preview ÷ Squid | icapkit ÷ without preview |'
        : '') +
      (variant ? ' req/s: icapkit variant | variant ÷ Squid | icapkit ÷ variant |' : '') +
      (holdStream ? ' req/s: hold floor, a stream | stream floor ÷ Squid | icapkit ÷ stream floor |' : ''),
    `| --- | --: | --: | --: | --: | --: | --: |${parts ? ' --: | --: | --: | --: |' : ''}${noPreview ? ' --: | --: | --: |' : ''}${variant ? ' --: | --: | --: |' : ''}${holdStream ? ' --: | --: | --: |' : ''}`,
  ];
  for (const r of rows) {
    const p = r.holdParts;
    lines.push(
      `| ${r.framework} | ${n(r.rps.icapkit)} / ${n(r.rps.hold)} / ${n(r.rps.squid)} / ${n(r.rps.raw)} | ` +
        `${q(r.icapkitSquid)} | ${q(r.holdSquid)} | ${q(r.icapkitRaw)} | ${q(r.holdRaw)} | ${q(r.icapkitHold)} |` +
        (parts
          ? p === undefined
            ? ' — | — | — | — |'
            : ` ${n(p.rps)} | ${q(p.squid)} | ${q(p.raw)} | ${q(p.icapkit)} |`
          : '') +
        otherCells(r.noPreview, noPreview) +
        otherCells(r.variant, variant) +
        otherCells(r.holdStream, holdStream),
    );
  }
  return lines;
}

async function main(): Promise<void> {
  const opts = parseOptions(process.argv.slice(2));
  const { frameworks, bodyId, clients, warmSeconds, rounds, seconds, nodeFlags } = interleavedOptions(opts, {
    cells: '1m/8',
    warmSeconds: 8,
    rounds: 5,
    seconds: 3,
  });
  const tool = pickTool();
  const { dir, bodies } = await makeBodies([bodyId]);
  const body = bodies.get(bodyId)!;
  const parts = bodyId === 'mp5';
  const service = opts.get('service') ?? 'avscan';
  if (service !== 'avscan' && service !== 'echo') throw new Error(`--service=${service}: avscan or echo`);
  const path = `/${service}`;
  // The variant's profile fields, read (and so checked) before anything starts.
  const variantText = opts.get('variant-too');
  const variantProfile = variantText === undefined ? undefined : JSON.stringify(JSON.parse(variantText));
  const scanner = await startScanner(service);
  // A scanner farther away than loopback: every path (Squid, the raw client, the apps) goes through the proxy.
  const delayMs = Number(opts.get('icap-delay-ms') ?? 0);
  let proxy: DelayProxy | undefined;
  if (delayMs > 0) proxy = await startDelayProxy({ host: '127.0.0.1', port: scanner.port }, delayMs);
  const icapUrl = `icap://127.0.0.1:${proxy?.port ?? scanner.port}`;
  const subjects = floorSubjects(frameworks, {
    parts: parts && service === 'avscan',
    noPreview: opts.get('no-preview-too') === '1',
    variant: variantProfile !== undefined,
    holdStream: opts.get('hold-stream-too') === '1',
  });
  const stops: Array<() => Promise<void>> = [];
  const urls = new Map<FloorSubject, string>();
  /** The application behind each subject (Squid's: its origin), to say which one stopped answering. */
  const children = new Map<FloorSubject, Child>();
  const windows: FloorWindow[] = [];
  try {
    const app = async (args: string[], env: NodeJS.ProcessEnv = {}): Promise<Child> => {
      const c = await startChild(process.execPath, [...nodeFlags, join(HERE, 'app.js'), ...args], {
        timeoutMs: 20_000,
        env,
      });
      stops.push(() => c.stop());
      return c;
    };
    const urlOf = (port: number) => `http://127.0.0.1:${port}/upload`;
    const origin = await app(['express']);
    const squid = await startSquid({ originPort: origin.ready.port as number, icapUrl: `${icapUrl}${path}` });
    stops.unshift(() => squid.stop());
    urls.set('squid', urlOf(squid.port));
    children.set('squid', origin);
    // One application per framework path, in the subjects' order (`<kind>:<framework>`).
    for (const s of subjects) {
      const [kind, framework] = s.split(':') as [string, string | undefined];
      if (framework === undefined) continue; // squid, raw
      const mode =
        kind === 'hold' || kind === 'holdstream'
          ? ['--hold-floor']
          : kind === 'holdparts'
            ? ['--hold-floor-parts']
            : [];
      const env =
        kind === 'nopreview'
          ? { BENCH_PROFILE: JSON.stringify({ enablePreview: false }) }
          : kind === 'variant'
            ? { BENCH_PROFILE: variantProfile! }
            : kind === 'hold'
              ? holdFloorEnv(service)
              : kind === 'holdstream'
                ? { ...holdFloorEnv(service), BENCH_HOLD_STREAM: '1' }
                : {};
      const child = await app([framework, icapUrl, path, ...mode], env);
      children.set(s, child);
      urls.set(s, urlOf(child.ready.port as number));
    }
    for (const [s, url] of urls) {
      await warmUp(url, body, clients, 1, { requests: 0, maxSeconds: 2 });
      await runLoad(tool, url, body, clients, warmSeconds);
      console.error(`warmed ${s}`);
    }
    /** The raw client: rawload.js in a process of its own, half a second of warm-up each window. */
    const rawWindow = async (): Promise<{ rps: number; errors: number }> => {
      const gen = await startChild(
        process.execPath,
        [
          ...nodeFlags,
          join(HERE, 'rawload.js'),
          icapUrl,
          path,
          body.file,
          body.contentType,
          String(clients),
          '500',
          String(seconds * 1000),
          ...(parts ? ['--parts'] : []),
        ],
        { timeoutMs: 20_000 },
      );
      try {
        return (await gen.result()) as { rps: number; errors: number };
      } finally {
        await gen.stop();
      }
    };
    for (let round = 0; round < rounds; round++) {
      for (const s of rotate(round, subjects)) {
        // Squid in front of c-icap's echo service fails some requests (run.js's table notes
        // them too): a window counts its successful answers and reports its errors.
        const r =
          s === 'raw'
            ? await rawWindow()
            : await runLoad(tool, urls.get(s)!, body, clients, seconds).catch((err: unknown) => {
                const child = children.get(s);
                const state =
                  child === undefined
                    ? ''
                    : ` (its process: exit code ${child.process.exitCode}, signal ${child.process.signalCode})\n${child.output().slice(-2000)}`;
                throw new Error(`${s}: the load failed${state}`, { cause: err });
              });
        if (!(r.rps > 0)) throw new Error(`${s}: no request answered (${r.errors} errors)`);
        windows.push({ round, subject: s, rps: r.rps, errors: r.errors });
      }
      console.error(
        `round ${round + 1}/${rounds}: ${windows
          .filter((w) => w.round === round)
          .map((w) => `${w.subject} ${w.rps.toFixed(1)}`)
          .join(', ')}`,
      );
    }
  } finally {
    for (const stop of stops) await stop();
    await proxy?.close();
    await scanner.stop();
    await rm(dir, { recursive: true, force: true });
  }
  const heading =
    `req/s side by side against c-icap ${service}, ${body.label}, ${clients} clients; ${warmSeconds} s warm-up each, ` +
    `${rounds} rounds of ${seconds} s, ratios within a round (median, range over the rounds), ` +
    (variantProfile !== undefined ? `the variant with ${variantProfile}, ` : '') +
    (delayMs > 0 ? `c-icap reached through a proxy delaying each direction by ${delayMs} ms, ` : '') +
    `${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC:`;
  const rows = floorRows(frameworks, windows);
  console.log([...renderFloors(rows, heading), ...errorNotes(windows)].join('\n'));
  const json = opts.get('json');
  if (json !== undefined) await writeFile(json, JSON.stringify({ heading, rows, windows }, null, 2));
}

runAsScript(import.meta.url, main);
