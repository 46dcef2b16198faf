/**
 * `drainAfterAnswer` with a limit of 0 ("close at once") closes a refused request's connection
 * once the answer is out, whatever the answer says about the connection. Before, it relied on
 * the refusal's `Connection: close`: with `refusals: 'error'`, an error handler that answers
 * without copying `err.headers` (Fastify's setErrorHandler, a Koa try/catch) answered
 * keep-alive, and Node read and discarded the rest of a 1 GB declared body for as long as the
 * client sent it (3 s and 9.5 MB when the test stopped it). Found by an attack campaign
 * (campaign-l). Every Node adapter and refusal mode, both ways of saying 0: the client gets its
 * 413 and the connection closes within a second.
 */
import { connect } from 'node:net';
import type { IcapProfile } from '@icapkit/core';
import { type IcapTestServer, startIcapServer } from '@icapkit/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REFUSAL_FRAMEWORKS, startRefusalApp } from './refusal-apps.js';

let icap: IcapTestServer;
beforeAll(async () => {
  icap = await startIcapServer({});
});
afterAll(() => icap?.close());

/** What the client saw: the status line it read, when the connection ended, what it wrote. */
interface Seen {
  status: number | undefined;
  closedAfterMs: number;
  written: number;
}

/**
 * A head declaring 1 GB (over bufferSize: a 413 from the head), then 64 KiB every 20 ms for at
 * most 3 s, reading whatever comes back.
 */
function upload(url: string): Promise<Seen> {
  const { port } = new URL(url);
  const t0 = Date.now();
  let written = 0;
  let received = '';
  return new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port: Number(port), allowHalfOpen: true });
    s.setEncoding('latin1');
    s.on('data', (d: string) => {
      received += d;
    });
    let iv: NodeJS.Timeout | undefined;
    const done = () => {
      clearInterval(iv);
      s.destroy();
      const m = /^HTTP\/1\.1 (\d{3})/.exec(received);
      resolve({ status: m === null ? undefined : Number(m[1]), closedAfterMs: Date.now() - t0, written });
    };
    s.once('close', done);
    s.once('end', done);
    s.once('error', done);
    s.write(
      'POST /upload HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: 1000000000\r\n\r\n',
    );
    const chunk = Buffer.alloc(65536, 0x61);
    iv = setInterval(() => {
      if (Date.now() - t0 > 3000) return done();
      if (s.writable && !s.writableNeedDrain) {
        s.write(chunk);
        written += chunk.length;
      }
    }, 20);
  });
}

describe.each(REFUSAL_FRAMEWORKS)('%s', (framework) => {
  for (const mode of ['respond', 'error'] as const) {
    for (const drain of [{ bytes: 0 }, { timeout: 0 }]) {
      it(`refusals: ${mode}, drainAfterAnswer ${JSON.stringify(drain)}: the 413, then the connection closes`, async () => {
        const profile: IcapProfile = {
          name: 'drain-zero',
          poolGroup: icap.url(),
          serviceUri: '/avscan',
          bufferSize: 1000,
          drainAfterAnswer: drain,
        };
        const app = await startRefusalApp(
          framework,
          profile,
          mode === 'error' ? { adapter: { refusals: 'error' } } : {},
        );
        try {
          const seen = await upload(app.url);
          expect(app.handled).toEqual([]);
          expect(seen.status).toBe(413);
          expect(seen.closedAfterMs).toBeLessThan(1500);
          expect(seen.written).toBeLessThan(2_000_000);
        } finally {
          await app.close();
        }
      });
    }
  }
});
