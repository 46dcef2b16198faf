/**
 * The embedded ICAP server of @icapkit/testing in its own process. Prints `READY {"port":N,"pid":N}`.
 *
 *   node dist/icap204.js            answers 204 to every clean REQMOD (after reading the whole
 *                                   body, as c-icap's avscan does): the ICAP side costs almost
 *                                   nothing, so what is left is the client's own overhead;
 *   node dist/icap204.js --echo     answers every REQMOD 200 with the encapsulated request and its
 *                                   body unchanged (chunked), as c-icap's `echo` service does: the
 *                                   client reads, compares and hands over a returned body;
 *   node dist/icap204.js --faults   also misbehaves for a request whose encapsulated HTTP request
 *                                   carries `X-Soak-Fault: <kind>` (the soak test's ICAP server);
 *   node dist/icap204.js --slow-read=<KiB/s>
 *                                   reads what clients send at that rate at most (a proxy in front
 *                                   that pauses after each read), like a scanner slower than its
 *                                   client (c-icap with ClamAV): the client's socket writes then
 *                                   meet a full socket buffer and wait for `drain`.
 */
import { createServer, type Socket, connect as tcpConnect } from 'node:net';
import { type Fault, type RecordedRequest, startIcapServer } from '@icapkit/testing';

/** What `X-Soak-Fault` can ask for. */
export const SOAK_FAULTS: Record<string, Fault> = {
  reset: { kind: 'reset', when: 'mid-body' },
  'reset-early': { kind: 'reset', when: 'on-head' },
  'status-500': { kind: 'status', status: 500 },
  garbage: { kind: 'garbage' },
  hang: { kind: 'hang' },
  'endless-chunk': { kind: 'endless-chunk', in: 'request' },
  'oversized-headers': { kind: 'oversized-headers', bytes: 200_000 },
};

function soakFault(r: RecordedRequest): Fault | undefined {
  if (r.method === 'OPTIONS') return undefined;
  const kind = r.httpRequest?.headers.get('x-soak-fault');
  return kind === undefined ? undefined : SOAK_FAULTS[kind];
}

/**
 * A loopback proxy to `port` that reads from each client at `kibPerSecond` at most: after a read
 * of n bytes the client socket is paused for as long as n bytes take at that rate. Answers go
 * back unthrottled.
 */
export function slowReader(port: number, kibPerSecond: number): Promise<{ port: number; close(): void }> {
  const sockets = new Set<Socket>();
  const server = createServer((client) => {
    const upstream = tcpConnect(port, '127.0.0.1');
    sockets.add(client);
    sockets.add(upstream);
    const gone = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('error', gone).on('close', gone);
    upstream.on('error', gone).on('close', gone);
    upstream.pipe(client);
    client.on('data', (data: Buffer) => {
      upstream.write(data);
      client.pause();
      setTimeout(() => client.resume(), (data.length / 1024 / kibPerSecond) * 1000);
    });
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      resolve({
        port: (server.address() as { port: number }).port,
        close: () => {
          server.close();
          for (const s of sockets) s.destroy();
        },
      });
    });
  });
}

if (process.argv[1]?.endsWith('icap204.js') === true) {
  const server = await startIcapServer({
    host: '127.0.0.1',
    port: 0,
    recordBodies: false,
    keepAliveTimeout: 600_000,
    // Never 204: the clean answer is the 200 that returns the request as it came.
    allow204: !process.argv.includes('--echo'),
    script: process.argv.includes('--faults') ? soakFault : undefined,
  });
  const slowArg = process.argv.find((a) => a.startsWith('--slow-read='));
  const slow = slowArg === undefined ? undefined : await slowReader(server.port, Number(slowArg.slice(12)));
  const stop = () => {
    slow?.close();
    server.close().finally(() => process.exit(0));
    setTimeout(() => process.exit(0), 2000).unref();
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  // recordBodies:false keeps bodies out; the per-request records still pile up: forget them.
  setInterval(() => server.reset(), 1000).unref();
  process.stdout.write(`READY ${JSON.stringify({ port: slow?.port ?? server.port, pid: process.pid })}\n`);
}
