/**
 * A connection's socket timer across its life: the transaction's ioTimeout while it is lent, the
 * pool's keepAliveTimeout while it is idle. Each replaces the other (no `setTimeout(0)` in
 * between): an idle connection still closes after keepAliveTimeout, never after the shorter
 * ioTimeout of the transaction before; a reused connection still fails a silent server after
 * ioTimeout, never after the longer keepAliveTimeout.
 */
import type { Socket } from 'node:net';
import { type IcapTestServer, startIcapServer } from '@icapkit/testing';
import { afterEach, describe, expect, it } from 'vitest';
import { IcapClient, isSkipped } from '../../src/client/client.js';

let server: IcapTestServer | undefined;
const clients: IcapClient[] = [];

afterEach(async () => {
  for (const c of clients.splice(0)) c.destroy();
  await server?.close();
  server = undefined;
});

async function until(cond: () => boolean, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 5));
  }
}

function scan(c: IcapClient, body: Buffer) {
  return c.request({
    method: 'REQMOD',
    service: '/avscan',
    httpRequest: { method: 'POST', target: '/upload', headers: { host: 'app' } },
    body,
    preview: false,
  });
}

async function clean(c: IcapClient, body: Buffer): Promise<boolean> {
  const r = await scan(c, body);
  if (isSkipped(r)) throw new Error('skipped');
  expect(r.status).toBe(204);
  await r.done;
  return r.connection.reused;
}

describe('socket timeouts per transaction', () => {
  it('an idle connection closes after keepAliveTimeout, whatever the ioTimeout before', async () => {
    server = await startIcapServer();
    const c = new IcapClient({ url: server.url(), ioTimeout: 60, keepAliveTimeout: 400 });
    clients.push(c);
    const sockets: Socket[] = [];
    c.pool.onConnect = (conn) => sockets.push(conn.socket);
    await clean(c, Buffer.from('a'));
    const s = sockets.at(-1)!;
    expect(s.timeout).toBe(400);
    // Longer than ioTimeout: the idle connection is still there, and reused.
    const idleFrom = Date.now();
    await new Promise((r) => setTimeout(r, 200));
    expect(c.stats.open).toBe(1);
    expect(await clean(c, Buffer.from('b'))).toBe(true);
    expect(c.stats.created).toBe(1);
    // Idle again: gone once keepAliveTimeout has passed (polled, with a deadline).
    const parkedAt = Date.now();
    await until(() => c.stats.open === 0, 5000);
    expect(Date.now() - parkedAt).toBeGreaterThanOrEqual(350);
    expect(Date.now() - idleFrom).toBeGreaterThanOrEqual(550);
    expect(s.destroyed).toBe(true);
  });

  it('a reused connection fails a silent server after ioTimeout, not keepAliveTimeout', async () => {
    let n = 0;
    server = await startIcapServer({
      script: (req) => (req.method === 'REQMOD' && ++n === 3 ? { kind: 'hang' } : undefined),
    });
    const c = new IcapClient({
      url: server.url(),
      ioTimeout: 150,
      keepAliveTimeout: 20_000,
      timeout: 10_000,
    });
    clients.push(c);
    await clean(c, Buffer.from('a'));
    expect(await clean(c, Buffer.from('b'))).toBe(true);
    const started = Date.now();
    await expect(scan(c, Buffer.from('c'))).rejects.toMatchObject({ code: 'ICAP_ERR_IO_TIMEOUT' });
    expect(Date.now() - started).toBeLessThan(5000);
    await until(() => c.stats.open === 0);
    // The pool goes on with a fresh connection.
    expect(await clean(c, Buffer.from('d'))).toBe(false);
  });

  it('a reused connection dropped with the request, then no new connection: the drop, not the connect error', async () => {
    let n = 0;
    server = await startIcapServer({
      script: (req) => (req.method === 'REQMOD' && ++n === 2 ? { kind: 'crash' } : undefined),
    });
    const c = new IcapClient({ url: server.url(), timeout: 10_000 });
    clients.push(c);
    await clean(c, Buffer.from('a'));
    // The keep-alive retry meets a server that is gone (refused): the request failed by the
    // reset of the connection that had it, the refusal said beside it.
    const err = await scan(c, Buffer.from('b')).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toMatchObject({ code: 'ICAP_ERR_RESET' });
    expect((err as Error).message).toMatch(/reset the connection.*then no new connection: .*ECONNREFUSED/);
    await server.restart();
    // A connection refused with nothing dropped before it is a connect error, as ever.
    expect(await clean(c, Buffer.from('c'))).toBe(false);
    await server.close();
    await until(() => c.stats.open === 0);
    await expect(scan(c, Buffer.from('d'))).rejects.toMatchObject({ code: 'ICAP_ERR_CONNECT' });
  });

  it('a failed transaction leaves no timer on its destroyed socket', async () => {
    server = await startIcapServer({
      script: (req) => (req.method === 'REQMOD' ? { kind: 'garbage' } : undefined),
    });
    const c = new IcapClient({ url: server.url(), ioTimeout: 60_000 });
    clients.push(c);
    const sockets: Socket[] = [];
    c.pool.onConnect = (conn) => sockets.push(conn.socket);
    await expect(scan(c, Buffer.from('x'))).rejects.toMatchObject({ code: 'ICAP_ERR_PROTOCOL' });
    await until(() => sockets.length > 0 && sockets.every((s) => s.destroyed));
    for (const s of sockets) {
      const timer = Object.getOwnPropertySymbols(s).find((k) => String(k) === 'Symbol(timeout)');
      const t =
        timer === undefined
          ? undefined
          : (s as unknown as Record<symbol, { _destroyed?: boolean } | null>)[timer];
      if (t != null) expect(t._destroyed).toBe(true);
    }
  });
});
