/**
 * The floor of an ICAP exchange in Node: N kept-alive `net` sockets, each writing one REQMOD
 * built once before the run (head, encapsulated HTTP head and the whole body as one chunk, no
 * preview, `Allow: 204`) and reading until the answer's head ends, again and again. No parsing
 * beyond finding the blank line, no pool, no timers, no objects per exchange: what any Node ICAP
 * client must spend per request (a write, a read, the event loop's turn), against which
 * rawload.js (IcapClient) and the middleware are read. Only answers without a body (204) are
 * accepted; anything else counts as an error and closes that loop.
 *
 *   node dist/floorload.js <icap-url> <service> <body-file> <content-type> <concurrency> <warmup-ms> <duration-ms>
 *
 * Prints `READY {}` at start and `RESULT {json}` at the end, as rawload.js does.
 */
import { readFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';

const [url, service, bodyFile, contentType, concArg, warmArg, durArg] = process.argv.slice(2);
const body = readFileSync(bodyFile!);
const concurrency = Number(concArg);
const warmupMs = Number(warmArg);
const durationMs = Number(durArg);
const target = new URL(url!);
const port = Number(target.port);
const authority = `${target.hostname}:${port}`;

const httpHead =
  `POST /upload HTTP/1.1\r\nHost: app\r\nContent-Type: ${contentType!}\r\n` +
  `Content-Length: ${body.length}\r\n\r\n`;
const icapHead =
  `REQMOD icap://${authority}${service!} ICAP/1.0\r\nHost: ${authority}\r\nAllow: 204\r\n` +
  `Encapsulated: req-hdr=0, req-body=${Buffer.byteLength(httpHead)}\r\n\r\n`;
const message = Buffer.concat([
  Buffer.from(`${icapHead}${httpHead}${body.length.toString(16)}\r\n`, 'latin1'),
  body,
  Buffer.from('\r\n0\r\n\r\n', 'latin1'),
]);
const END = Buffer.from('\r\n\r\n');

let measuring = false;
let stopAt = Number.POSITIVE_INFINITY;
const latencies: number[] = [];
let errors = 0;
let firstError: string | undefined;
let created = 0;

function loop(): Promise<void> {
  return new Promise((done) => {
    const socket: Socket = connect(port, target.hostname);
    created++;
    socket.setNoDelay(true);
    let head: Buffer | undefined;
    let t0 = 0;
    const fail = (why: string) => {
      if (measuring) errors++;
      firstError ??= why;
      socket.destroy();
    };
    const send = () => {
      if (performance.now() >= stopAt) {
        socket.end();
        return;
      }
      t0 = performance.now();
      socket.write(message);
    };
    socket.on('connect', send);
    socket.on('data', (chunk: Buffer) => {
      // Look for the blank line across at most two reads (a head of a few hundred bytes).
      const seen = head === undefined ? chunk : Buffer.concat([head, chunk]);
      const end = seen.indexOf(END);
      if (end < 0) {
        if (seen.length > 65_536) fail('answer head over 64 KiB');
        else head = seen;
        return;
      }
      head = undefined;
      if (end + 4 !== seen.length) return fail('bytes after the answer head (a body?)');
      if (seen.toString('latin1', 0, 12) !== 'ICAP/1.0 204') return fail(seen.toString('latin1', 0, 40));
      if (measuring) latencies.push(performance.now() - t0);
      send();
    });
    socket.on('error', (err) => fail(err.message));
    socket.on('close', () => done());
  });
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
process.stdout.write(
  `RESULT ${JSON.stringify({
    requests: latencies.length,
    errors,
    firstError,
    durationS: elapsed,
    rps: latencies.length / elapsed,
    p50: pct(50),
    p99: pct(99),
    connectionsCreated: created,
    /** CPU µs (user + system) of this generator over the measured window. */
    cpuUs: cpu.user + cpu.system,
  })}\n`,
);
process.exit(0);
