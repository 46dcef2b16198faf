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

let measuring = false;
let stopAt = Number.POSITIVE_INFINITY;
const latencies: number[] = [];
let errors = 0;
let firstError: string | undefined;
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
    if (measuring) {
      latencies.push(performance.now() - t0);
      statuses[res.status] = (statuses[res.status] ?? 0) + 1;
    }
  } catch (err) {
    if (measuring) errors++;
    firstError ??= err instanceof Error ? err.message : String(err);
  }
}

async function loop(): Promise<void> {
  while (performance.now() < stopAt) await one();
}

process.stdout.write('READY {}\n');
const t0 = performance.now();
stopAt = t0 + warmupMs + durationMs;
const loops = Array.from({ length: concurrency }, () => loop());
await new Promise((r) => setTimeout(r, warmupMs));
measuring = true;
const m0 = performance.now();
const cpu0 = process.cpuUsage();
await Promise.all(loops);
const elapsed = (performance.now() - m0) / 1000;
const cpu = process.cpuUsage(cpu0);
latencies.sort((a, b) => a - b);
const pct = (p: number) =>
  latencies.length === 0
    ? 0
    : latencies[Math.min(latencies.length - 1, Math.floor((p / 100) * latencies.length))]!;
const stats = client.stats;
client.destroy();
process.stdout.write(
  `RESULT ${JSON.stringify({
    requests: latencies.length,
    errors,
    firstError,
    durationS: elapsed,
    rps: latencies.length / elapsed,
    p50: pct(50),
    p99: pct(99),
    statuses,
    connectionsCreated: stats.created,
    /** CPU µs (user + system) of this generator over the measured window: the ICAP client's cost. */
    cpuUs: cpu.user + cpu.system,
  })}\n`,
);
process.exit(0);
