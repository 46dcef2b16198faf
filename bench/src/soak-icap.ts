/**
 * The soak test's ICAP server: the embedded server of @icapkit/testing in its own process. It
 * detects EICAR like c-icap's avscan, and misbehaves for a request when the encapsulated HTTP
 * request carries `X-Soak-Fault: <kind>`, so the driver knows exactly what each request must get.
 * Prints `READY {"port":N,"pid":N}`.
 */
import { type Fault, type RecordedRequest, startIcapServer } from '@icapkit/testing';

export const SOAK_FAULTS: Record<string, Fault> = {
  reset: { kind: 'reset', when: 'mid-body' },
  'reset-early': { kind: 'reset', when: 'on-head' },
  'status-500': { kind: 'status', status: 500 },
  garbage: { kind: 'garbage' },
  hang: { kind: 'hang' },
  'endless-chunk': { kind: 'endless-chunk', in: 'request' },
  'oversized-headers': { kind: 'oversized-headers', bytes: 200_000 },
};

function script(r: RecordedRequest): Fault | undefined {
  if (r.method === 'OPTIONS') return undefined;
  const kind = r.httpRequest?.headers.get('x-soak-fault');
  return kind === undefined ? undefined : SOAK_FAULTS[kind];
}

const isMain = process.argv[1]?.endsWith('soak-icap.js') === true;
if (isMain) {
  const server = await startIcapServer({
    host: '127.0.0.1',
    port: 0,
    recordBodies: false,
    keepAliveTimeout: 600_000,
    script,
  });
  const stop = () => {
    server.close().finally(() => process.exit(0));
    setTimeout(() => process.exit(0), 2000).unref();
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  // The per-request records pile up even without bodies: forget them.
  setInterval(() => server.reset(), 1000).unref();
  process.stdout.write(`READY ${JSON.stringify({ port: server.port, pid: process.pid })}\n`);
}
