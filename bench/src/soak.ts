/**
 * Soak test: mixed clean, infected and faulty uploads against one application with icapkit
 * (fail-closed), as fast as the machine goes, for a long time. Every answer is checked against
 * what that request must get (a clean body must reach the application byte for byte, an
 * infected one must get 403, a request whose ICAP transaction fails must get 503), and the
 * application's memory is sampled throughout.
 *
 *   node bench/dist/soak.js [--duration=600] [--connections=32] [--framework=express] [--out=FILE]
 *
 * Processes: the application (bench/dist/app.js) and the ICAP server (bench/dist/icap204.js --faults)
 * run on their own, so the RSS measured is the application's alone. Prints a markdown report
 * and a `RESULT {json}` line; exits 1 on any wrong verdict.
 */
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { Agent, request as httpRequest } from 'node:http';
import { cpus } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { bodyDigest, multipart } from './bodies.js';
import { eicarBytes } from './cicap.js';
import { killAllChildren, memOf, sleep, startChild } from './util.js';

const HERE = dirname(fileURLToPath(import.meta.url));

interface Scenario {
  name: string;
  weight: number;
  /** The status the answer must have; null: the client goes away, no answer is read. */
  status: number | null;
  /** The application must have received exactly these bytes (its answer is their SHA-1). */
  digestOf?: Buffer;
  body: Buffer;
  headers: Record<string, string>;
  chunked?: boolean;
  /** Bytes to send before going away. */
  abortAfter?: number;
  /** Declare this Content-Length, send `body` (less), and wait for the early answer. */
  declared?: number;
}

const KiB = 1024;

function scenarios(): Array<() => Scenario> {
  const octet = { 'content-type': 'application/octet-stream' };
  const eicar = eicarBytes();
  const withEicar = (n: number) => {
    const b = randomBytes(n);
    eicar.copy(b, Math.floor(n / 2));
    return b;
  };
  const fault = (name: string, weight: number): (() => Scenario) => {
    return () => ({
      name: `icap-${name}`,
      weight,
      status: 503,
      body: randomBytes(12 * KiB),
      headers: { ...octet, 'x-soak-fault': name },
    });
  };
  const boundary = 'soakboundary0123456789';
  return [
    () => {
      const body = randomBytes(10 * KiB);
      return { name: 'clean-10k', weight: 30, status: 200, digestOf: body, body, headers: octet };
    },
    () => {
      const body = randomBytes(256 * KiB);
      return {
        name: 'clean-256k-chunked',
        weight: 8,
        status: 200,
        digestOf: body,
        body,
        headers: octet,
        chunked: true,
      };
    },
    () => {
      const body = randomBytes(1024 * KiB);
      return { name: 'clean-1m', weight: 6, status: 200, digestOf: body, body, headers: octet };
    },
    () => {
      const body = multipart([randomBytes(20 * KiB), randomBytes(20 * KiB), randomBytes(20 * KiB)], boundary);
      return {
        name: 'clean-multipart-3',
        weight: 6,
        status: 200,
        digestOf: body,
        body,
        headers: { 'content-type': `multipart/form-data; boundary=${boundary}` },
      };
    },
    () => ({ name: 'eicar-10k', weight: 14, status: 403, body: withEicar(10 * KiB), headers: octet }),
    () => ({ name: 'eicar-1m', weight: 3, status: 403, body: withEicar(1024 * KiB), headers: octet }),
    () => ({
      name: 'eicar-multipart',
      weight: 4,
      status: 403,
      body: multipart([randomBytes(20 * KiB), withEicar(5 * KiB), randomBytes(20 * KiB)], boundary),
      headers: { 'content-type': `multipart/form-data; boundary=${boundary}` },
    }),
    // Declared above bufferSize: refused from the head, before the body (a client that kept
    // writing 5 MiB into a closed connection would get EPIPE rather than read the 413).
    () => ({
      name: 'too-large',
      weight: 2,
      status: 413,
      body: randomBytes(16 * KiB),
      headers: octet,
      declared: 5 * 1024 * KiB,
    }),
    fault('reset', 4),
    fault('reset-early', 3),
    fault('status-500', 4),
    fault('garbage', 3),
    fault('hang', 1),
    fault('endless-chunk', 2),
    fault('oversized-headers', 2),
    () => {
      const body = randomBytes(200 * KiB);
      return {
        name: 'client-abort',
        weight: 3,
        status: null,
        body,
        headers: octet,
        chunked: true,
        abortAfter: 64 * KiB,
      };
    },
  ];
}

interface Tally {
  count: number;
  wrong: number;
  latencies: number[];
}

function send(agent: Agent, port: number, s: Scenario): Promise<{ status: number | null; text: string }> {
  return new Promise((resolve) => {
    const headers: Record<string, string> = { ...s.headers };
    if (!s.chunked) headers['content-length'] = String(s.declared ?? s.body.length);
    const req = httpRequest({ host: '127.0.0.1', port, path: '/upload', method: 'POST', headers, agent });
    const timer = setTimeout(() => req.destroy(new Error('no answer within 30 s')), 30_000);
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        clearTimeout(timer);
        resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString() });
        // The request body was cut short on purpose: this connection cannot be reused.
        if (s.declared !== undefined) req.destroy();
      });
      res.on('error', () => {
        clearTimeout(timer);
        resolve({ status: -1, text: 'response error' });
      });
    });
    let answered = false;
    req.on('response', () => {
      answered = true;
    });
    req.on('error', (err) => {
      clearTimeout(timer);
      if (!answered) resolve({ status: s.abortAfter !== undefined ? null : -1, text: err.message });
    });
    if (s.abortAfter !== undefined) {
      req.write(s.body.subarray(0, s.abortAfter), () => setTimeout(() => req.destroy(), 20));
      return;
    }
    if (s.declared !== undefined) {
      req.write(s.body);
      return;
    }
    if (s.chunked) {
      for (let i = 0; i < s.body.length; i += 64 * KiB) req.write(s.body.subarray(i, i + 64 * KiB));
      req.end();
    } else {
      req.end(s.body);
    }
  });
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

async function main(): Promise<void> {
  const args = Object.fromEntries(
    process.argv.slice(2).map((a) => {
      const [k, v] = a.replace(/^--/, '').split('=');
      return [k, v ?? 'true'];
    }),
  );
  const duration = Number(args.duration ?? 600) * 1000;
  const connections = Number(args.connections ?? 32);
  const framework = args.framework ?? 'express';

  const icap = await startChild(process.execPath, [join(HERE, 'icap204.js'), '--faults']);
  const profile = {
    responseTimeout: 2000,
    bodyTimeout: 5000,
    bufferSize: '4mb',
    memoryThreshold: '512kb',
    connection: { ioTimeout: 1000, maxConnections: connections },
    // Faults are a fifth of the load here: do not let them suspend the only server.
    health: { failureLimit: 1000 },
  };
  const app = await startChild(
    process.execPath,
    [join(HERE, 'app.js'), framework, `icap://127.0.0.1:${icap.ready.port}`, '/avscan'],
    { env: { BENCH_PROFILE: JSON.stringify(profile) } },
  );
  const appPort = Number(app.ready.port);
  const makers = scenarios();
  // Pre-build a pool of bodies per scenario so the driver spends its time sending, not hashing.
  const pool = makers.map((make) => Array.from({ length: 8 }, make));
  const expected = pool.map((list) =>
    list.map((s) => (s.digestOf ? bodyDigest(s.digestOf, s.headers['content-type']) : undefined)),
  );
  const weights = pool.map((list) => list[0]!.weight);
  const totalWeight = weights.reduce((a, b) => a + b, 0);
  const pick = () => {
    let r = Math.random() * totalWeight;
    for (let i = 0; i < weights.length; i++) {
      r -= weights[i]!;
      if (r < 0) return i;
    }
    return weights.length - 1;
  };

  const tallies = new Map<string, Tally>();
  const wrongSamples: string[] = [];
  const memory: Array<{ t: number; rss: number }> = [];
  const agent = new Agent({ keepAlive: true, maxSockets: connections });
  const t0 = Date.now();
  const deadline = t0 + duration;
  const sampler = setInterval(
    () => memory.push({ t: (Date.now() - t0) / 1000, rss: memOf(app.pid).rss }),
    1000,
  );

  const worker = async () => {
    while (Date.now() < deadline) {
      const i = pick();
      const j = Math.floor(Math.random() * pool[i]!.length);
      const s = pool[i]![j]!;
      const start = performance.now();
      const r = await send(agent, appPort, s);
      const ms = performance.now() - start;
      const t = tallies.get(s.name) ?? { count: 0, wrong: 0, latencies: [] };
      tallies.set(s.name, t);
      t.count++;
      if (t.latencies.length < 200_000) t.latencies.push(ms);
      const want = expected[i]![j];
      const ok =
        s.status === null
          ? r.status === null || r.status === -1
          : r.status === s.status && (want === undefined || r.text === want);
      if (!ok) {
        t.wrong++;
        if (wrongSamples.length < 20) wrongSamples.push(`${s.name}: got ${r.status} ${r.text.slice(0, 120)}`);
      }
    }
  };
  await Promise.all(Array.from({ length: connections }, worker));
  clearInterval(sampler);
  agent.destroy();
  const elapsed = (Date.now() - t0) / 1000;
  await sleep(500);
  const stats = await fetchStats(appPort);
  await app.stop();
  await icap.stop();

  const total = [...tallies.values()].reduce((a, t) => a + t.count, 0);
  const wrong = [...tallies.values()].reduce((a, t) => a + t.wrong, 0);
  const MiB = 1024 * 1024;
  const minuteAvg = (from: number, to: number) => {
    const xs = memory.filter((m) => m.t >= from && m.t < to).map((m) => m.rss);
    return xs.length === 0 ? 0 : xs.reduce((a, b) => a + b, 0) / xs.length;
  };
  const span = elapsed;
  const warm = Math.min(60, span / 5);
  const early = minuteAvg(warm, warm + Math.min(60, span / 5));
  const late = minuteAvg(span - Math.min(60, span / 5), span + 1);
  const peak = Math.max(...memory.map((m) => m.rss));
  const rows = [...tallies.entries()]
    .sort((a, b) => b[1].count - a[1].count)
    .map(([name, t]) => {
      const sorted = [...t.latencies].sort((a, b) => a - b);
      return `| ${name} | ${t.count} | ${t.wrong} | ${percentile(sorted, 50).toFixed(1)} | ${percentile(sorted, 99).toFixed(1)} |`;
    });
  const report = [
    `Soak: ${framework} + icapkit (fail-closed) -> embedded ICAP server (EICAR detection, scripted faults), ${connections} connections, ${Math.round(elapsed)} s, ${cpus().length} cores (${cpus()[0]?.model ?? '?'}), Node ${process.version}.`,
    '',
    `**${total} requests, ${(total / elapsed).toFixed(0)} req/s, ${wrong} wrong verdicts.** Application RSS: ${(early / MiB).toFixed(1)} MiB after warm-up, ${(late / MiB).toFixed(1)} MiB at the end, peak ${(peak / MiB).toFixed(1)} MiB; ICAP connections open at the end: ${stats?.open ?? '?'} (created ${stats?.created ?? '?'}).`,
    '',
    '| scenario | requests | wrong | p50 ms | p99 ms |',
    '| --- | ---: | ---: | ---: | ---: |',
    ...rows,
    ...(wrongSamples.length > 0
      ? ['', 'Wrong answers (first ones):', ...wrongSamples.map((w) => `- ${w}`)]
      : []),
  ].join('\n');
  process.stdout.write(`${report}\n`);
  if (args.out !== undefined) await writeFile(args.out, `${report}\n`);
  process.stdout.write(
    `RESULT ${JSON.stringify({ total, wrong, seconds: elapsed, rssEarly: early, rssLate: late, rssPeak: peak, scenarios: Object.fromEntries([...tallies].map(([k, v]) => [k, { count: v.count, wrong: v.wrong }])) })}\n`,
  );
  process.exitCode = wrong > 0 ? 1 : 0;
}

async function fetchStats(port: number): Promise<{ open: number; created: number } | undefined> {
  return new Promise((resolve) => {
    const req = httpRequest({ host: '127.0.0.1', port, path: '/__stats', agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        try {
          const s = JSON.parse(Buffer.concat(chunks).toString()) as {
            icap: Array<{ connections: { open: number; created: number } }> | null;
          };
          const c = s.icap?.[0]?.connections;
          resolve(c === undefined ? undefined : { open: c.open, created: c.created });
        } catch {
          resolve(undefined);
        }
      });
    });
    req.on('error', () => resolve(undefined));
    req.end();
  });
}

main().catch((err: unknown) => {
  console.error(err);
  killAllChildren();
  process.exit(2);
});
