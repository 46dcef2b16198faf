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
import { generatorState, runGenerator } from './generator.js';

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

const state = generatorState();
let created = 0;

function loop(): Promise<void> {
  return new Promise((done) => {
    const socket: Socket = connect(port, target.hostname);
    created++;
    socket.setNoDelay(true);
    let head: Buffer | undefined;
    let t0 = 0;
    const fail = (why: string) => {
      if (state.measuring) state.errors++;
      state.firstError ??= why;
      socket.destroy();
    };
    const send = () => {
      if (performance.now() >= state.stopAt) {
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
      if (state.measuring) state.latencies.push(performance.now() - t0);
      send();
    });
    socket.on('error', (err) => fail(err.message));
    socket.on('close', () => done());
  });
}

await runGenerator(state, concurrency, warmupMs, durationMs, loop, () => ({ connectionsCreated: created }));
process.exit(0);
