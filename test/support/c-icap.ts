/**
 * Real c-icap for the interop suites: the launcher of @icapkit/testing, plus `describeWithCIcap`
 * (skip without c-icap, fail under CI=true) and a free-port helper.
 */
import { createServer } from 'node:net';
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
