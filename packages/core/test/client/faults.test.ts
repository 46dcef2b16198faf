/**
 * The client against every way an ICAP server misbehaves (the embedded server's scripted
 * faults): each ends with the right error code, and no socket or timer is left behind.
 */
import { eicar, type Fault, type IcapTestServer, startIcapServer } from '@icapkit/testing';
import { afterEach, describe, expect, it } from 'vitest';
import { refusingPort } from '../../../../test/support/c-icap.js';
import { IcapClient, isSkipped } from '../../src/client/client.js';
import type { IcapResponse } from '../../src/client/transaction.js';

let server: IcapTestServer | undefined;
const clients: IcapClient[] = [];

afterEach(async () => {
  for (const c of clients.splice(0)) c.destroy();
  await server?.close();
  server = undefined;
});

function tcpHandles(): number {
  return process.getActiveResourcesInfo().filter((r) => r === 'TCPSocketWrap' || r === 'Timeout').length;
}

async function settle(): Promise<void> {
  await new Promise((r) => setTimeout(r, 30));
}

function newClient(url: string, opts: Partial<ConstructorParameters<typeof IcapClient>[0]> = {}) {
  const c = new IcapClient({ url, timeout: 2000, ioTimeout: 2000, ...opts });
  clients.push(c);
  return c;
}

async function scan(
  c: IcapClient,
  body: Buffer | AsyncIterable<Uint8Array> | null,
  extra: { preview?: number | false; allow204?: boolean } = {},
) {
  const r = await c.request({
    method: 'REQMOD',
    service: '/avscan',
    httpRequest: { method: 'POST', target: '/upload', headers: { host: 'app' } },
    body,
    preview: extra.preview,
    allow204: extra.allow204,
  });
  if (isSkipped(r)) throw new Error('skipped');
  const chunks: Buffer[] = [];
  if (r.body !== null) for await (const x of r.body as AsyncIterable<Buffer>) chunks.push(x);
  await r.done;
  return { r: r as IcapResponse, body: Buffer.concat(chunks) };
}

async function withFault(fault: Fault | ((n: number) => Fault | undefined)) {
  let n = 0;
  server = await startIcapServer({
    script: (req) =>
      req.method === 'OPTIONS' ? undefined : typeof fault === 'function' ? fault(n++) : fault,
  });
  return server;
}

const body = (n: number) => Buffer.alloc(n, 0x62);

/** Runs a scan that must fail with `code`, and checks that nothing is left open afterwards. */
async function expectFailure(c: IcapClient, code: string, payload: Buffer = body(5000), extra = {}) {
  await c.options('/avscan');
  await settle();
  const before = tcpHandles();
  await expect(scan(c, payload, extra)).rejects.toMatchObject({ code });
  await settle();
  // The failed connection is gone; only the idle keep-alive connection (if any) stays.
  expect(tcpHandles()).toBeLessThanOrEqual(before);
  expect(c.stats.busy).toBe(0);
}

describe('client under server faults', () => {
  it('connection refused -> ICAP_ERR_CONNECT (RFC 1000)', async () => {
    const c = newClient(`icap://127.0.0.1:${await refusingPort()}`);
    await expect(scan(c, body(10))).rejects.toMatchObject({ code: 'ICAP_ERR_CONNECT', rfcCode: 1000 });
  });

  it('reset before any answer -> ICAP_ERR_RESET (RFC 1002)', async () => {
    const s = await withFault({ kind: 'reset', when: 'on-head' });
    await expectFailure(newClient(s.url()), 'ICAP_ERR_RESET');
  });

  it('reset mid-body -> ICAP_ERR_RESET', async () => {
    const s = await withFault({ kind: 'reset', when: 'mid-body' });
    await expectFailure(newClient(s.url()), 'ICAP_ERR_RESET', body(2_000_000), { preview: false });
  });

  it('close before answering -> ICAP_ERR_CLOSED', async () => {
    const s = await withFault({ kind: 'close', when: 'after-preview' });
    await expectFailure(newClient(s.url()), 'ICAP_ERR_CLOSED');
  });

  it('close in the middle of the response -> ICAP_ERR_CLOSED (RFC 1001)', async () => {
    const s = await withFault({ kind: 'close', when: 'mid-response' });
    await expect(scan(newClient(s.url()), body(100))).rejects.toMatchObject({
      code: 'ICAP_ERR_CLOSED',
      rfcCode: 1001,
    });
  });

  it('hang -> ICAP_ERR_TIMEOUT, the socket destroyed', async () => {
    const s = await withFault({ kind: 'hang' });
    const c = newClient(s.url(), { timeout: 300 });
    await expectFailure(c, 'ICAP_ERR_TIMEOUT');
    await settle();
    expect(s.connections.open).toBeLessThanOrEqual(1);
  });

  it('stall after 100 Continue -> ICAP_ERR_IO_TIMEOUT when nothing moves', async () => {
    const s = await withFault({ kind: 'stall-after-continue' });
    const c = newClient(s.url(), { ioTimeout: 300, timeout: 5000 });
    await expectFailure(c, 'ICAP_ERR_IO_TIMEOUT', body(4 * 1024 * 1024));
  });

  it('garbage instead of a response -> ICAP_ERR_PROTOCOL', async () => {
    const s = await withFault({ kind: 'garbage' });
    await expectFailure(newClient(s.url()), 'ICAP_ERR_PROTOCOL');
  });

  it('an unknown status code -> ICAP_ERR_PROTOCOL (RFC 1003)', async () => {
    const s = await withFault({ kind: 'raw', response: 'ICAP/1.0 999 What\r\nISTag: "x"\r\n\r\n' });
    await expect(scan(newClient(s.url()), body(10))).rejects.toMatchObject({ code: 'ICAP_ERR_PROTOCOL' });
  });

  it('oversized headers -> ICAP_ERR_HEADERS_TOO_LARGE', async () => {
    const s = await withFault({ kind: 'oversized-headers', bytes: 200_000 });
    await expectFailure(newClient(s.url()), 'ICAP_ERR_HEADERS_TOO_LARGE');
  });

  it('an endless chunk: the consumer stops it; ICAP_ERR_ABORTED, nothing buffered without bound', async () => {
    const s = await withFault({ kind: 'endless-chunk' });
    const c = newClient(s.url(), { timeout: 10_000 });
    const r = await c.request({
      method: 'REQMOD',
      service: '/avscan',
      httpRequest: { method: 'POST', target: '/' },
      body: body(10),
    });
    if (isSkipped(r)) throw new Error('skipped');
    let n = 0;
    const rss = process.memoryUsage().rss;
    for await (const chunk of r.body as AsyncIterable<Buffer>) {
      n += chunk.length;
      if (n > 32 * 1024 * 1024) break;
    }
    await expect(r.done).rejects.toMatchObject({ code: 'ICAP_ERR_ABORTED' });
    expect(process.memoryUsage().rss - rss).toBeLessThan(64 * 1024 * 1024);
    expect(c.stats.open).toBe(0);
  });

  it('100 Continue after ieof is read past: the answer after it stands (campaign-al AL1)', async () => {
    const s = await withFault({ kind: 'continue-after-ieof' });
    const { r } = await scan(newClient(s.url()), body(10));
    expect(r.status).toBe(204);
    // A bare 100 (no fields) names nothing: read past, not kept.
    expect(r.continueHead ?? null).toBeNull();
  });

  it('a 204 outside the preview without Allow: 204 -> ICAP_ERR_PROTOCOL (RFC 1004)', async () => {
    const s = await withFault({ kind: 'raw', response: 'ICAP/1.0 204 No Content\r\nISTag: "x"\r\n\r\n' });
    await expect(
      scan(newClient(s.url()), body(5000), { allow204: false, preview: false }),
    ).rejects.toMatchObject({
      code: 'ICAP_ERR_PROTOCOL',
      rfcCode: 1004,
    });
  });

  it('ICAP 500 and 503 are answers, not transport errors', async () => {
    const s = await withFault({ kind: 'status', status: 503, reason: 'Service Overloaded' });
    const { r } = await scan(newClient(s.url()), body(10));
    expect(r.status).toBe(503);
  });

  it('an early answer while the body is still being sent: the verdict stands, no write error is reported', async () => {
    const s = await withFault({ kind: 'early-response' });
    const c = newClient(s.url());
    const { r } = await scan(c, body(8 * 1024 * 1024), { preview: false });
    expect(r.status).toBe(200);
    expect(r.httpResponse?.status).toBe(403);
    expect(r.completeBodySent).toBe(false);
    // The request was cut short, so that connection is not reused.
    await settle();
    expect(c.stats.idle).toBe(0);
  });

  it('the server closing a keep-alive connection between requests (the stale-socket race) is retried on a fresh one', async () => {
    const s = await withFault((n) => (n === 1 ? { kind: 'close', when: 'on-head' } : undefined));
    const c = newClient(s.url());
    expect((await scan(c, body(10))).r.status).toBe(204);
    expect((await scan(c, body(10))).r.status).toBe(204);
    expect(c.stats.created).toBe(2);
  });

  it('a request is not retried when its body cannot be replayed', async () => {
    const s = await withFault((n) => (n === 1 ? { kind: 'close', when: 'on-head' } : undefined));
    const c = newClient(s.url());
    await scan(c, body(10));
    async function* once() {
      yield body(10);
    }
    await expect(scan(c, once())).rejects.toMatchObject({ code: 'ICAP_ERR_CLOSED' });
  });

  it('Connection: close from the server is honoured', async () => {
    const s = await withFault({ kind: 'connection-close' });
    const c = newClient(s.url());
    for (let i = 0; i < 3; i++) expect((await scan(c, body(10))).r.status).toBe(204);
    // OPTIONS kept its connection; each of the three requests closed the one it used.
    expect(s.connections.accepted).toBe(3);
    await settle();
    expect(c.stats.open).toBe(0);
  });

  it('an AbortSignal cancels the transaction and frees its connection', async () => {
    const s = await withFault({ kind: 'hang' });
    const c = newClient(s.url(), { timeout: 10_000 });
    await c.options('/avscan');
    const ac = new AbortController();
    const p = c.request({
      method: 'REQMOD',
      service: '/avscan',
      httpRequest: { method: 'POST', target: '/' },
      body: body(100),
      signal: ac.signal,
    });
    setTimeout(() => ac.abort(), 50);
    await expect(p).rejects.toMatchObject({ code: 'ICAP_ERR_ABORTED' });
    await settle();
    expect(c.stats.busy).toBe(0);
  });

  it('a body source that fails -> ICAP_ERR_BODY_SOURCE, connection dropped', async () => {
    server = await startIcapServer();
    const c = newClient(server.url());
    async function* failing() {
      yield body(3000);
      throw new Error('client went away');
    }
    await expect(scan(c, failing())).rejects.toMatchObject({ code: 'ICAP_ERR_BODY_SOURCE' });
    await settle();
    expect(c.stats.busy).toBe(0);
  });

  it('Max-Connections from OPTIONS caps the pool', async () => {
    server = await startIcapServer({ maxConnections: 2 });
    const c = newClient(server.url(), { maxConnections: 10 });
    await Promise.all(Array.from({ length: 12 }, () => scan(c, body(20_000))));
    expect(server.connections.accepted).toBeLessThanOrEqual(2);
    expect(c.stats.limit).toBe(2);
  });

  it('OPTIONS: cached for Options-TTL, refreshed when the ISTag changes, Transfer-* honoured', async () => {
    server = await startIcapServer({
      optionsTtl: 3600,
      transfer: { ignore: ['jpg'], complete: ['exe'], preview: ['*'] },
    });
    // No rate limit on ISTag-change refreshes here (options.test.ts has the limited case).
    const c = newClient(server.url(), { optionsRefreshInterval: 0 });
    const jpg = await c.request({
      method: 'REQMOD',
      service: '/avscan',
      httpRequest: { method: 'POST', target: '/a/photo.JPG' },
      body: eicar(),
      // Off by default (the client names the file); asked for here.
      honourTransferIgnore: true,
    });
    expect(isSkipped(jpg)).toBe(true);
    const exe = await c.request({
      method: 'REQMOD',
      service: '/avscan',
      httpRequest: { method: 'POST', target: '/setup.exe' },
      body: body(5000),
    });
    if (isSkipped(exe)) throw new Error('skipped');
    await exe.done;
    expect(exe.previewSent).toBe(false);
    const options = server.requests.filter((r) => r.method === 'OPTIONS').length;
    await scan(c, body(10));
    expect(server.requests.filter((r) => r.method === 'OPTIONS').length).toBe(options);
    // A response with another ISTag: the service changed, its options are fetched again.
    server.setScript((req) =>
      req.method === 'REQMOD'
        ? { kind: 'raw', response: 'ICAP/1.0 204 No Content\r\nISTag: "NEW-TAG"\r\n\r\n' }
        : undefined,
    );
    await scan(c, body(10));
    server.setScript(undefined);
    await scan(c, body(10));
    expect(server.requests.filter((r) => r.method === 'OPTIONS').length).toBe(options + 1);
  });

  it('Preview: 0 sends the headers only, then the body after 100 Continue', async () => {
    server = await startIcapServer();
    const c = newClient(server.url(), { useOptions: false });
    const { r } = await scan(c, body(3000), { preview: 0 });
    expect(r.status).toBe(204);
    const rec = server.requests.at(-1)!;
    expect([rec.preview, rec.previewBytes, rec.continued, rec.bodyLength]).toEqual([0, 0, true, 3000]);
  });
});
