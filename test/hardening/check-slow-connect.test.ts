/**
 * The health check of a working icaps server whose TLS handshake takes most of stallTimeout
 * (campaign-bk BK2): its watch started before the connection; it fired with the connection up
 * (not busy any more) and the OPTIONS answer on its way, and the check failed: under fail-open
 * an upload the server answered 500 was delivered, the server taken as broken. A connection made
 * is progress for the check's watch: the server answered its check, the upload's failure is its
 * own (503).
 */
import { type AddressInfo, connect, createServer, type Server, type Socket } from 'node:net';
import { createServer as createTls } from 'node:tls';
import type { IcapLog, IcapProfile } from '@icapkit/core';
import { generateTestCertificate, type TestCertificate } from '@icapkit/testing';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startApp } from '../conformance/apps.js';
import { send } from '../support/http-client.js';
import { scripted } from '../support/scripted-icap.js';

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});
let cert: TestCertificate;
beforeAll(async () => {
  cert = await generateTestCertificate();
});
afterAll(async () => cert?.cleanup());

const SERVER_500 = 'ICAP/1.0 500 Server Error\r\nISTag: "x1"\r\nEncapsulated: null-body=0\r\n\r\n';
const CLEAN_204 = 'ICAP/1.0 204 No Content\r\nISTag: "x1"\r\nEncapsulated: null-body=0\r\n\r\n';

async function listen(s: Server): Promise<number> {
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  return (s.address() as AddressInfo).port;
}

/**
 * An icaps server (TLS in front of a scripted one: the upload answered 500, the check 204) behind
 * a proxy that holds the server's first bytes (its TLS handshake) until `first` ms after accept,
 * and each later piece 60 ms.
 */
async function slowIcaps(first: number): Promise<string> {
  const icap = await scripted((q) =>
    q.sock.write(q.encap.includes('icapkit.invalid') ? CLEAN_204 : SERVER_500),
  );
  const icapPort = Number(new URL(icap.url).port);
  const sockets = new Set<Socket>();
  const tls = createTls({ cert: cert.cert, key: cert.key }, (s) => {
    const up = connect(icapPort, '127.0.0.1');
    sockets.add(s).add(up);
    s.on('error', () => {});
    up.on('error', () => {});
    s.pipe(up).pipe(s);
  });
  const proxy = createServer((c) => {
    const accepted = performance.now();
    const up = connect(tlsPort, '127.0.0.1');
    sockets.add(c).add(up);
    c.on('error', () => {});
    up.on('error', () => {});
    c.pipe(up);
    let later = false;
    up.on('data', (d) => {
      const wait = later ? 60 : Math.max(0, accepted + first - performance.now());
      later = true;
      setTimeout(() => c.destroyed || c.write(d), wait);
    });
    up.on('close', () => setTimeout(() => c.destroy(), 200));
    c.on('close', () => up.destroy());
  });
  const tlsPort = await listen(tls as unknown as Server);
  const port = await listen(proxy);
  cleanups.push(icap.close, async () => {
    for (const s of sockets) s.destroy();
    await new Promise<void>((r) => proxy.close(() => r()));
    await new Promise<void>((r) => tls.close(() => r()));
  });
  return `icaps://127.0.0.1:${port}`;
}

describe('fail-open: a working icaps server whose TLS handshake takes most of stallTimeout', () => {
  for (const first of [280, 0])
    it(`handshake after ${first} ms: the server answers its check, the upload it answered 500 gets 503`, async () => {
      const url = await slowIcaps(first);
      const logs: IcapLog[] = [];
      const app = await startApp('express5', {
        name: 't',
        poolGroup: url,
        tls: { ca: cert.ca },
        serviceUri: '/avscan',
        failAction: 'fail-open',
        responseTimeout: 5000,
        connection: { stallTimeout: 300 },
        onLog: (l: IcapLog) => logs.push(l),
      } as IcapProfile);
      cleanups.push(app.close);
      const res = await send(app.url, '/raw', {
        headers: { 'content-type': 'application/octet-stream' },
        body: Buffer.from('an upload'),
      });
      expect(res.status).toBe(503);
      expect(app.seen).toHaveLength(0);
      expect(logs[0]?.error_message).toContain('answered its health check afterwards');
    }, 20_000);
});
