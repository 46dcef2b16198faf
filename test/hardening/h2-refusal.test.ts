/**
 * Early refusals over HTTP/2: an answer given before the body was read closes an HTTP/1.1
 * connection with `Connection: close`, but HTTP/2 has no such field (Node drops it with an
 * UnsupportedWarning). The refusal goes out without it, and the session stays usable.
 */
import type { IcapLog } from '@icapkit/core';
import { eicar, type IcapTestServer, startIcapServer } from '@icapkit/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startApp } from '../conformance/apps.js';
import { send } from '../support/http-client.js';

let icap: IcapTestServer;
beforeAll(async () => {
  icap = await startIcapServer({ recordBodies: false });
});
afterAll(() => icap?.close());

describe.each(['fastify', 'koa3'] as const)('%s over HTTP/2', (framework) => {
  it('a refusal before the body was read (400, 413, 403) carries no Connection field and raises no warning', async () => {
    const warnings: Error[] = [];
    const onWarning = (w: Error) => warnings.push(w);
    process.on('warning', onWarning);
    const logs: IcapLog[] = [];
    const app = await startApp(
      framework,
      {
        name: 'h2',
        poolGroup: icap.url(),
        serviceUri: '/avscan',
        bufferSize: 4096,
        onLog: (l) => logs.push(l),
      },
      { http2: true },
    );
    try {
      const bad = await send(app.url, '/multipart', {
        http2: true,
        body: Buffer.from(
          '--b\r\nContent-Disposition: form-data; filename="a.txt"\r\n\r\nhello\r\n--b--\r\n',
        ),
        headers: { 'content-type': 'multipart/form-data; boundary=b' },
      });
      expect(bad.status).toBe(400);
      const big = await send(app.url, '/raw', {
        http2: true,
        body: Buffer.alloc(64 * 1024, 0x61),
        headers: { 'content-type': 'application/octet-stream' },
      });
      expect(big.status).toBe(413);
      const infected = await send(app.url, '/raw', {
        http2: true,
        body: eicar(),
        headers: { 'content-type': 'application/octet-stream' },
      });
      expect(infected.status).toBe(403);
      for (const r of [bad, big, infected]) expect(r.headers.connection).toBeUndefined();
      expect(app.seen).toHaveLength(0);
      // Warnings are emitted on the next tick: give them a turn to arrive before looking.
      await new Promise((r) => setImmediate(r));
      expect(warnings.filter((w) => /connection header/i.test(w.message))).toEqual([]);
    } finally {
      process.off('warning', onWarning);
      await app.close();
    }
  });
});
