/**
 * Raw ICAP load generator: N concurrent keep-alive loops of REQMOD straight at an ICAP
 * service with IcapClient, the same bodies and the same preview/204 settings as the
 * middleware, no HTTP in front. It measures what the ICAP server can take from one client
 * process (the limit any client can reach on this machine).
 *
 *   node dist/rawload.js <icap-url> <service> <body-file> <content-type> <concurrency> <warmup-ms> <duration-ms> [--parts]
 *
 * With `--parts` the body is a multipart form and each loop sends it as icapkit's per-file mode
 * does: every part its own REQMOD (the part's bytes, Content-Type and Content-Disposition as
 * icapkit names them), at most 4 at once per form (the default `multipartConcurrency`); a
 * "request" is the whole form. It is the raw capacity the multipart cells are read against.
 *
 * Prints `READY {}` at start and `RESULT {json}` at the end.
 */
import { readFileSync } from 'node:fs';
import { IcapClient, isSkipped } from '@icapkit/core';
import { formParts, type Subject } from './bodies.js';
import { generatorState, runGenerator } from './generator.js';

const [url, service, bodyFile, contentType, concArg, warmArg, durArg, mode] = process.argv.slice(2);
const body = readFileSync(bodyFile!);
const concurrency = Number(concArg);
const warmupMs = Number(warmArg);
const durationMs = Number(durArg);
const PART_CONCURRENCY = 4;

const subjects: Subject[] =
  mode === '--parts'
    ? formParts(body, contentType!)
    : [
        {
          headers: [
            ['Host', 'app'],
            ['Content-Type', contentType!],
            ['Content-Length', String(body.length)],
          ],
          body,
        },
      ];
const perRequest = mode === '--parts' ? PART_CONCURRENCY : 1;
const client = new IcapClient({ url: url!, maxConnections: Math.max(concurrency * perRequest, 1) });

const state = generatorState();
const statuses: Record<string, number> = {};

/** One REQMOD; its status. */
async function send(subject: Subject): Promise<number> {
  const res = await client.request({
    method: 'REQMOD',
    service: service!,
    httpRequest: { method: 'POST', target: 'http://app/upload', headers: subject.headers },
    body: subject.body,
    bodyLength: subject.body.length,
    // As icapkit's default profile: small bodies whole, larger ones previewed.
    preview: subject.body.length <= 64 * 1024 ? false : 5000,
    allow204: true,
  });
  if (isSkipped(res)) throw new Error('transfer-ignore');
  res.body?.resume();
  await res.done;
  return res.status;
}

/** Every subject, at most `perRequest` at once; the statuses, in order. */
async function sendAll(): Promise<number[]> {
  if (subjects.length === 1) return [await send(subjects[0]!)];
  const out: number[] = [];
  let next = 0;
  const lane = async () => {
    while (next < subjects.length) {
      const i = next++;
      out[i] = await send(subjects[i]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(perRequest, subjects.length) }, lane));
  return out;
}

async function one(): Promise<void> {
  const t0 = performance.now();
  try {
    const got = await sendAll();
    if (state.measuring) {
      state.latencies.push(performance.now() - t0);
      for (const status of got) statuses[status] = (statuses[status] ?? 0) + 1;
    }
  } catch (err) {
    if (state.measuring) state.errors++;
    state.firstError ??= err instanceof Error ? err.message : String(err);
  }
}

async function loop(): Promise<void> {
  while (performance.now() < state.stopAt) await one();
}

await runGenerator(state, concurrency, warmupMs, durationMs, loop, () => ({
  statuses,
  connectionsCreated: client.stats.created,
}));
client.destroy();
process.exit(0);
