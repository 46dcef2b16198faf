/**
 * An OPTIONS fetch that waits for a connection behind busy ones (campaign-bk BK4): the server's
 * OPTIONS expire (`Options-TTL`, 60 s without one, 30 s after an ISTag change), and the next
 * upload's request fetches them again, on one of the server's connections, which a scan the
 * server is slow on, or an HTTP client still sending its upload, holds. The fetch's own bound
 * (the client's timeout) ran out as ICAP_ERR_TIMEOUT, the server's silence, and the upload took
 * the failure action: under fail-open EICAR reached the handler. It is a wait for a connection
 * (ICAP_ERR_SATURATED): held by HTTP clients, a 503 that never takes the failure action;
 * behind a scan, a 503 while the server answers its health check.
 */
import { connect, type Socket } from 'node:net';
import type { IcapLog, IcapProfile } from '@icapkit/core';
import { eicar } from '@icapkit/testing';
import { afterEach, describe, expect, it } from 'vitest';
import { type Framework, startApp } from '../conformance/apps.js';
import { send } from '../support/http-client.js';
import { type Req, scripted } from '../support/scripted-icap.js';

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const THREAT_ANSWER =
  'ICAP/1.0 200 OK\r\nISTag: "x1"\r\nX-Infection-Found: Type=0; Resolution=2; Threat=EICAR;\r\nEncapsulated: null-body=0\r\n\r\n';
const CLEAN_204 = 'ICAP/1.0 204 No Content\r\nISTag: "x1"\r\nEncapsulated: null-body=0\r\n\r\n';
/** One connection; the OPTIONS' own bound min(responseTimeout, 500 + 500 + 1000) = 2 s. */
const PROFILE = {
  serviceUri: '/avscan',
  failAction: 'fail-open',
  responseTimeout: 6000,
  connection: { maxConnections: 1, stallTimeout: 1000, connectTimeout: 500, queueTimeout: 500 },
} as const;

/** Polls `check` until it holds or `ms` pass (no fixed sleep). */
async function until(check: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`not within ${ms} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** A server whose OPTIONS last 1 s (answered in 40 ms): a body holding `SLOW` is answered after 4 s, EICAR is blocked. */
async function server() {
  const timers: NodeJS.Timeout[] = [];
  const s = await scripted(
    (q: Req) => {
      if (q.body.includes('SLOW'))
        timers.push(setTimeout(() => q.sock.destroyed || q.sock.write(CLEAN_204), 4000));
      else q.sock.write(q.body.includes('EICAR') ? THREAT_ANSWER : CLEAN_204);
    },
    {
      optionsHeaders: 'Options-TTL: 1\r\n',
      // A server's usual OPTIONS latency (a fetch that gets its connection just before its bound
      // has its answer after it).
      options: (q, answer) => timers.push(setTimeout(() => q.sock.destroyed || q.sock.write(answer), 40)),
    },
  );
  cleanups.push(s.close, () => timers.forEach(clearTimeout));
  return s;
}

/** The server, and `framework` scanning with it (PROFILE, `extra` added). */
async function started(framework: Framework, extra: Partial<IcapProfile> = {}) {
  const a = await server();
  const logs: IcapLog[] = [];
  const app = await startApp(framework, {
    name: 't',
    poolGroup: a.url,
    ...PROFILE,
    ...extra,
    onLog: (l: IcapLog) => logs.push(l),
  } as IcapProfile);
  cleanups.push(app.close);
  return { a, app, logs };
}

const reqmods = (s: Awaited<ReturnType<typeof server>>) => s.requests.filter((q) => q.method === 'REQMOD');

describe.each(['express5', 'fastify', 'koa3'] as Framework[])(
  '%s, fail-open: the OPTIONS fetched again behind the only connection',
  (framework) => {
    it('held by a scan the server is slow on: 503 (the server answers its check), never the handler', async () => {
      const { a, app, logs } = await started(framework);
      const post = (body: Buffer) =>
        send(app.url, '/raw', {
          headers: { 'content-type': 'application/octet-stream' },
          body,
          timeoutMs: 10_000,
        });
      const slow = post(Buffer.from('SLOW file'));
      await until(() => reqmods(a).length === 1, 5_000, 'the slow upload at the server');
      // Past Options-TTL: the next upload fetches them again, and waits for the only connection.
      await new Promise((r) => setTimeout(r, 1_100));
      const res = await post(eicar());
      expect(res.status).toBe(503);
      expect(app.seen.filter((s) => s.raw?.includes('EICAR'))).toHaveLength(0);
      const log = logs.find((l) => l.request_logs.some((e) => e.error_code === 'ICAP_ERR_SATURATED'));
      expect(log?.significance).toContain('CONTENT_PROVOKED');
      expect(log?.significance).not.toContain('FAIL_OPEN');
      expect((await slow).status).toBe(200);
    }, 20_000);

    for (const letGo of [false, true])
      it(`held by HTTP clients still sending their uploads${letGo ? ', one let go just before the OPTIONS bound (campaign-bm BM1)' : ''}: never the failure action, never the handler`, async () => {
        // Two connections, both of which uploads still arriving may hold (maxStreamingUploads).
        const { app, logs } = await started(framework, {
          connection: { ...PROFILE.connection, maxConnections: 2 },
          maxStreamingUploads: 2,
        });
        const u = new URL(app.url);
        const holders: Socket[] = [];
        for (let i = 0; i < 2; i++) {
          const held: Socket = connect(Number(u.port), u.hostname);
          held.on('error', () => {});
          holders.push(held);
          // Past holdBodySize at once (it streams, holding a connection), then 2000 bytes every 100 ms.
          held.write(
            `POST /raw HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: 400000\r\n\r\n${'a'.repeat(100_000)}`,
          );
          let n = 0;
          const feed = setInterval(
            () => (++n > 70 || held.destroyed ? clearInterval(feed) : held.write('a'.repeat(2000))),
            100,
          );
          cleanups.push(() => {
            clearInterval(feed);
            held.destroy();
          });
        }
        await until(
          () => app.engine.status()[0]?.connections.busy === 2,
          5_000,
          'the held uploads on both connections',
        );
        await new Promise((r) => setTimeout(r, 1_100));
        const res = send(app.url, '/raw', {
          headers: { 'content-type': 'application/octet-stream' },
          body: eicar(),
          timeoutMs: 10_000,
        });
        if (letGo) {
          // The OPTIONS queued; 20 ms before its 2 s bound a holder goes: the fetch gets a
          // connection, its answer comes after the bound.
          await until(
            () => (app.engine.status()[0]?.connections.pending ?? 0) >= 1,
            3_000,
            'the OPTIONS queued',
          );
          await new Promise((r) => setTimeout(r, 2_000 - 20));
          holders[0]!.destroy();
        }
        // Let go: blocked, or 503 when the OPTIONS came too late (never the failure action).
        expect(letGo ? [403, 503] : [503]).toContain((await res).status);
        expect(app.seen.filter((s) => s.raw?.includes('EICAR'))).toHaveLength(0);
        for (const l of logs) expect(l.significance).not.toContain('FAIL_OPEN');
      }, 20_000);
  },
);
