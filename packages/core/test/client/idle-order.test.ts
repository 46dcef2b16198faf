/**
 * The pool reuses the connection idle longest first. ICAP answers carry no request id: an
 * answer a server sends late (a second one after a clean 204) is only told apart while its
 * connection is idle, where any byte closes it; the connection idle longest has had the most
 * time to show one. (It used to reuse the one released last, which a late answer reaches first.)
 */
import { type IcapTestServer, startIcapServer } from '@icapkit/testing';
import { afterEach, describe, expect, it } from 'vitest';
import { IcapClient, isSkipped } from '../../src/client/client.js';

let server: IcapTestServer | undefined;
let client: IcapClient | undefined;
afterEach(async () => {
  client?.destroy();
  await server?.close();
});

async function scan(c: IcapClient, body: string): Promise<void> {
  const r = await c.request({
    method: 'REQMOD',
    service: '/avscan',
    httpRequest: { method: 'POST', target: '/u', headers: [['Host', 'x']] },
    body: Buffer.from(body),
  });
  if (isSkipped(r)) throw new Error('skipped');
  r.body?.resume();
  await r.done;
}

describe('IcapClient: idle connections', () => {
  it('the connection idle longest is reused first', async () => {
    server = await startIcapServer();
    client = new IcapClient({ url: server.url(), useOptions: false });
    // Two connections at once, released in order: a (first), then b.
    await Promise.all([scan(client, 'a'), scan(client, 'b')]);
    const first = server.requests.filter((r) => r.method === 'REQMOD').map((r) => r.connectionId);
    expect(new Set(first).size).toBe(2);
    // Three more, one after another: each takes the connection idle longest.
    for (const body of ['c', 'd', 'e']) await scan(client, body);
    const all = server.requests.filter((r) => r.method === 'REQMOD').map((r) => r.connectionId);
    const [c, d, e] = all.slice(2);
    expect(c).not.toBe(d);
    expect(e).toBe(c);
    expect(new Set(all).size).toBe(2);
  });
});
