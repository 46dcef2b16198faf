/**
 * Raw ICAP load generator: N concurrent keep-alive loops of REQMOD straight at an ICAP
 * service with IcapClient, the same bodies and the same preview/204 settings as the
 * middleware, no HTTP in front. It measures what the ICAP server can take from one client
 * process (the limit any client can reach on this machine).
 *
 *   node dist/rawload.js <icap-url> <service> <body-file> <content-type> <concurrency> <warmup-ms> <duration-ms>
 *
 * Prints `READY {}` at start and `RESULT {json}` at the end.
 */
import { readFileSync } from 'node:fs';
import { IcapClient, isSkipped } from '@icapkit/core';
import { generatorState, runGenerator } from './generator.js';

const [url, service, bodyFile, contentType, concArg, warmArg, durArg] = process.argv.slice(2);
const body = readFileSync(bodyFile!);
const concurrency = Number(concArg);
const warmupMs = Number(warmArg);
const durationMs = Number(durArg);

const client = new IcapClient({ url: url!, maxConnections: Math.max(concurrency, 1) });
const headers: Array<[string, string]> = [
  ['Host', 'app'],
  ['Content-Type', contentType!],
  ['Content-Length', String(body.length)],
];

const state = generatorState();
const statuses: Record<string, number> = {};

async function one(): Promise<void> {
  const t0 = performance.now();
  try {
    const res = await client.request({
      method: 'REQMOD',
      service: service!,
      httpRequest: { method: 'POST', target: 'http://app/upload', headers },
      body,
      bodyLength: body.length,
      // As icapkit's default profile: small bodies whole, larger ones previewed.
      preview: body.length <= 64 * 1024 ? false : 5000,
      allow204: true,
    });
    if (isSkipped(res)) throw new Error('transfer-ignore');
    res.body?.resume();
    await res.done;
    if (state.measuring) {
      state.latencies.push(performance.now() - t0);
      statuses[res.status] = (statuses[res.status] ?? 0) + 1;
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
