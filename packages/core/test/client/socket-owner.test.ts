/**
 * A connection's socket has one set of listeners for its whole life, forwarding to whoever has
 * it now (a transaction, or the pool watching it idle): many transactions, a failed one among
 * them, add none; an idle connection the server closes still leaves the pool.
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

async function until(cond: () => boolean, ms = 3000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 5));
  }
}

const EVENTS = ['data', 'end', 'error', 'close', 'timeout'] as const;
const counts = (s: Socket) => EVENTS.map((e) => s.listenerCount(e));

function scan(c: IcapClient, body: Buffer, signal?: AbortSignal) {
  return c.request({
    method: 'REQMOD',
    service: '/avscan',
    httpRequest: { method: 'POST', target: '/upload', headers: { host: 'app' } },
    body,
    preview: false,
    signal,
  });
}

describe('socket listeners per connection', () => {
  it('stay the same over many transactions; the idle watch still sees a close', async () => {
    server = await startIcapServer();
    const c = new IcapClient({ url: server.url() });
    clients.push(c);
    const sockets: Socket[] = [];
    c.pool.onConnect = (conn) => sockets.push(conn.socket);
    const first = await scan(c, Buffer.from('x'));
    if (isSkipped(first)) throw new Error('skipped');
    await first.done;
    const s = sockets.at(-1)!;
    const after1 = counts(s);
    for (let i = 0; i < 30; i++) {
      const r = await scan(c, Buffer.alloc(1000 + i, 'y'));
      if (isSkipped(r)) throw new Error('skipped');
      expect(r.status).toBe(204);
      expect(r.connection.reused).toBe(true);
      await r.done;
    }
    expect(counts(s)).toEqual(after1);
    expect(c.stats.created).toBe(1); // OPTIONS and every REQMOD on one kept-alive connection
    server.closeConnections();
    await until(() => c.stats.open === 0);
    const r = await scan(c, Buffer.from('z'));
    if (isSkipped(r)) throw new Error('skipped');
    expect(r.status).toBe(204);
    await r.done;
  });
});
