/**
 * Real c-icap for the interop suites: the launcher of @icapkit/testing, plus `describeWithCIcap`
 * (skip without c-icap, fail under CI=true) and a free-port helper.
 */
import { readFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { cIcapMissing } from '@icapkit/testing';
import { describe } from 'vitest';

export type { CIcapServer, StartCIcapOptions } from '@icapkit/testing';
export { cIcapMissing, startCIcap } from '@icapkit/testing';

/**
 * `describe` for suites that need a real c-icap: skipped when c-icap is not installed,
 * except under CI=true, where a missing c-icap is an error (so CI cannot go green by
 * silently skipping the interop suite).
 */
export function describeWithCIcap(name: string, fn: () => void): void {
  const missing = cIcapMissing();
  if (missing.length > 0 && process.env.CI === 'true') {
    throw new Error(
      `CI=true but c-icap interop prerequisites are missing: ${missing.join('; ')}. ` +
        'Install: apt-get install -y c-icap libc-icap-mod-virus-scan openssl',
    );
  }
  describe.skipIf(missing.length > 0)(name, fn);
}

/** A loopback port that was free a moment ago (bind to port 0, read it, close). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => (port > 0 ? resolve(port) : reject(new Error('freePort: no port assigned'))));
    });
  });
}

const handedOut = new Set<number>();

/** The lowest port the kernel hands to `listen(0)`; ports below it are never chosen for us. */
function ephemeralLow(): number {
  try {
    const low = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);
    return Number.isInteger(low) && low > 2048 ? low : 32768;
  } catch {
    return 32768;
  }
}

function refused(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    const timer = setTimeout(() => done(false), 2000);
    const done = (value: boolean) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(value);
    };
    socket.once('connect', () => done(false));
    socket.once('error', (err: NodeJS.ErrnoException) => done(err.code === 'ECONNREFUSED'));
  });
}

/**
 * A loopback port that refuses connections and stays that way for the test: one below the
 * kernel's ephemeral range (no `listen(0)` in this or another test can be given it, unlike a
 * port from {@link freePort}, which the next server started may receive), checked to refuse now,
 * and different from every port this process was handed before.
 */
export async function refusingPort(): Promise<number> {
  const high = ephemeralLow();
  for (let attempt = 0; attempt < 200; attempt++) {
    const port = 10_000 + Math.floor(Math.random() * (high - 10_000));
    if (handedOut.has(port)) continue;
    if (await refused(port)) {
      handedOut.add(port);
      return port;
    }
  }
  throw new Error('refusingPort: no refusing loopback port below the ephemeral range');
}
