/**
 * The @icapkit/core client against a real c-icap 0.5 + ClamAV (started by the test): verdicts
 * for every preview/body-size combination, EICAR, echo, ICAPS, keep-alive counted on the
 * server side, a 64 MiB body streamed with bounded memory, and parity with c-icap-client.
 */
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type IcapClient as Client, IcapClient, type IcapResponse, isSkipped } from '@icapkit/core';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { type CIcapServer, describeWithCIcap, startCIcap } from '../support/c-icap.js';
import { runCIcapClient } from '../support/c-icap-client.js';
import { EICAR_THREAT, eicarBytes } from '../support/eicar.js';
import { startTcpCounter } from '../support/tcp-counter.js';

/** clean: 204, or a 200 whose returned body is the one sent (c-icap echoes an empty body instead of a 204). */
type Verdict = 'clean' | 'blocked' | 'modified';

interface Scan {
  verdict: Verdict;
  status: number;
  threat: string | undefined;
  body: Buffer | undefined;
  response: IcapResponse;
}

async function readAll(res: IcapResponse): Promise<Buffer | undefined> {
  if (res.body === null) return undefined;
  const chunks: Buffer[] = [];
  for await (const c of res.body as AsyncIterable<Buffer>) chunks.push(c);
  return Buffer.concat(chunks);
}

async function scan(
  client: Client,
  service: string,
  body: Buffer | AsyncIterable<Uint8Array> | null,
  opts: { preview?: number | false; allow204?: boolean; bodyLength?: number; original?: Buffer } = {},
): Promise<Scan> {
  const original = opts.original ?? (Buffer.isBuffer(body) ? body : undefined);
  const r = await client.request({
    method: 'REQMOD',
    service,
    httpRequest: {
      method: 'POST',
      target: 'http://app.test/upload',
      headers: { host: 'app.test', 'content-type': 'application/octet-stream' },
    },
    body,
    bodyLength: opts.bodyLength,
    preview: opts.preview,
    allow204: opts.allow204,
  });
  if (isSkipped(r)) throw new Error('unexpected Transfer-Ignore');
  const data = await readAll(r);
  await r.done;
  const threat = /Threat=([^;]+);/.exec(r.headers.get('x-infection-found') ?? '')?.[1];
  const echo =
    r.status === 200 &&
    r.httpRequest !== null &&
    original !== undefined &&
    (data ?? Buffer.alloc(0)).equals(original);
  const verdict: Verdict =
    r.status === 204 || echo ? 'clean' : r.httpResponse !== null ? 'blocked' : 'modified';
  return { verdict, status: r.status, threat, body: data, response: r };
}

function text(n: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = 0x61 + (i % 26);
  return b;
}

describeWithCIcap('IcapClient against real c-icap', () => {
  let server: CIcapServer;
  let client: IcapClient;

  beforeAll(async () => {
    server = await startCIcap({ maxKeepAliveRequests: 100_000 });
    client = new IcapClient({ url: `icap://127.0.0.1:${server.port}`, maxConnections: 4 });
  });

  afterAll(async () => {
    client?.destroy();
    await server?.stop();
  });

  it('reads the service OPTIONS', async () => {
    const o = await client.options('/avscan');
    expect(o.methods).toEqual(['RESPMOD', 'REQMOD']);
    expect(o.preview).toBe(1024);
    expect(o.allow204).toBe(true);
    expect(o.optionsTtl).toBe(3600);
    expect(o.istag).toMatch(/^CI0001-/);
  });

  it('clean body -> 204, EICAR -> blocked with the ClamAV threat, echo -> a modified request with the same body', async () => {
    const clean = await scan(client, '/avscan', text(5000));
    expect(clean.verdict).toBe('clean');
    expect(clean.status).toBe(204);

    const infected = await scan(client, '/avscan', eicarBytes());
    expect(infected.verdict).toBe('blocked');
    expect(infected.threat).toBe(EICAR_THREAT);
    expect(infected.response.httpResponse?.status).toBe(403);
    expect(infected.body?.toString()).toContain('VIRUS FOUND');

    // c-icap's echo service answers every other request with a 204 when Allow: 204 is offered.
    const body = text(3000);
    const echo = await scan(client, '/echo', body, { allow204: false });
    expect(echo.status).toBe(200);
    expect(echo.verdict).toBe('clean');
    expect(echo.response.httpRequest?.headers.get('via')).toContain('C-ICAP');
    expect(echo.response.httpRequest?.method).toBe('POST');
    expect(echo.response.httpRequest?.headers.get('content-type')).toBe('application/octet-stream');
    expect(echo.body?.equals(body)).toBe(true);
  });

  const previews = [0, 1, 1024, 4096];
  for (const preview of previews) {
    const sizes = [...new Set([0, 1, Math.max(0, preview - 1), preview, preview + 1, 1024 * 1024])];
    it(`preview ${preview}: bodies of ${sizes.join(', ')} bytes and EICAR get the right verdict`, async () => {
      // Without OPTIONS, the preview is exactly what is asked for (c-icap advertises 1024).
      const raw = new IcapClient({ url: `icap://127.0.0.1:${server.port}`, useOptions: false });
      try {
        for (const size of sizes) {
          const withLength = await scan(raw, '/avscan', text(size), { preview });
          expect(withLength.verdict, `size ${size}`).toBe('clean');
          const previewSent = /Preview: (\d+)/.exec(withLength.response.requestHeaders)?.[1];
          expect(Number(previewSent)).toBe(Math.min(preview, size));
          expect(withLength.response.completeBodySent).toBe(true);
          // Length unknown in advance (a chunked upload): the preview size is sent as asked.
          const streamed = await scan(raw, '/avscan', oneShot(text(size)), { preview, original: text(size) });
          expect(streamed.verdict, `streamed size ${size}`).toBe('clean');
          expect(/Preview: (\d+)/.exec(streamed.response.requestHeaders)?.[1]).toBe(String(preview));
        }
        const infected = await scan(raw, '/avscan', eicarBytes(), { preview });
        expect(infected.verdict).toBe('blocked');
        expect(infected.threat).toBe(EICAR_THREAT);
        const infectedNo204 = await scan(raw, '/avscan', oneShot(eicarBytes()), {
          preview,
          allow204: false,
          original: eicarBytes(),
        });
        expect(infectedNo204.verdict).toBe('blocked');
      } finally {
        raw.destroy();
      }
    });
  }

  it('a 64 MiB body: clean with Allow: 204, and echoed back streamed with Allow: 204 off, memory bounded', async () => {
    const size = 64 * 1024 * 1024;
    const clean = await scan(client, '/avscan', generate(size), { bodyLength: size });
    expect(clean.verdict).toBe('clean');

    // Live memory, not garbage: without a collection, dead 64 KiB socket buffers pile up for a
    // while and say nothing about what the client holds (measured: 35 MiB without, 11 with).
    const gc = (globalThis as { gc?: () => void }).gc;
    expect(gc, 'tests run with --expose-gc').toBeTypeOf('function');
    gc!();
    const before = process.memoryUsage().rss;
    let peak = before;
    const sampler = setInterval(() => {
      gc!();
      peak = Math.max(peak, process.memoryUsage().rss);
    }, 20);
    try {
      const sent = createHash('sha256');
      const received = createHash('sha256');
      let receivedBytes = 0;
      const r = await client.request({
        method: 'REQMOD',
        service: '/avscan_no204',
        httpRequest: { method: 'POST', target: 'http://app.test/big', headers: { host: 'app.test' } },
        body: generate(size, sent),
        bodyLength: size,
        allow204: false,
      });
      if (isSkipped(r)) throw new Error('skipped');
      expect(r.status).toBe(200);
      for await (const c of r.body as AsyncIterable<Buffer>) {
        received.update(c);
        receivedBytes += c.length;
      }
      await r.done;
      expect(receivedBytes).toBe(size);
      expect(received.digest('hex')).toBe(sent.digest('hex'));
    } finally {
      clearInterval(sampler);
    }
    const growthMiB = (peak - before) / 1024 / 1024;
    expect(growthMiB).toBeLessThan(24);
  }, 120_000);

  it('ICAPS with a CA file works; a client that does not trust the CA fails with ICAP_ERR_TLS', async () => {
    const secure = new IcapClient({
      url: `icaps://127.0.0.1:${server.tlsPort}`,
      tls: { ca: readFileSync(server.caFile) },
    });
    const untrusting = new IcapClient({ url: `icaps://127.0.0.1:${server.tlsPort}` });
    try {
      expect((await scan(secure, '/avscan', text(100))).verdict).toBe('clean');
      const infected = await scan(secure, '/avscan', eicarBytes());
      expect(infected.threat).toBe(EICAR_THREAT);
      await expect(scan(untrusting, '/avscan', text(10))).rejects.toMatchObject({ code: 'ICAP_ERR_TLS' });
    } finally {
      secure.destroy();
      untrusting.destroy();
    }
  });

  it('1,000 sequential scans reuse keep-alive connections (counted on the server side)', async () => {
    const counter = await startTcpCounter('127.0.0.1', server.port);
    const pooled = new IcapClient({ url: `icap://127.0.0.1:${counter.port}`, maxConnections: 2 });
    try {
      const body = text(2048);
      for (let i = 0; i < 1000; i++) {
        const r = await scan(pooled, '/avscan', body);
        expect(r.verdict).toBe('clean');
      }
      expect(counter.accepted()).toBeLessThanOrEqual(2);
      expect(pooled.stats.created).toBe(counter.accepted());
    } finally {
      pooled.destroy();
      await counter.close();
    }
  }, 120_000);

  it('64 concurrent scans never open more connections than maxConnections', async () => {
    const counter = await startTcpCounter('127.0.0.1', server.port);
    const pooled = new IcapClient({ url: `icap://127.0.0.1:${counter.port}`, maxConnections: 8 });
    try {
      const results = await Promise.all(
        Array.from({ length: 64 }, (_, i) =>
          scan(pooled, '/avscan', i % 8 === 0 ? eicarBytes() : text(10_000)),
        ),
      );
      expect(results.filter((r) => r.verdict === 'blocked')).toHaveLength(8);
      expect(results.filter((r) => r.verdict === 'clean')).toHaveLength(56);
      // 8 at most at once; a connection a block came on is not kept (client/answer.ts
      // keepsConnection), so each of the 8 blocks may have its connection opened again.
      expect(counter.accepted()).toBeLessThanOrEqual(8 + 8);
      expect(pooled.stats.created).toBe(counter.accepted());
    } finally {
      pooled.destroy();
      await counter.close();
    }
  }, 60_000);

  it('the same verdicts as c-icap-client for the same files', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'icapkit-parity-'));
    try {
      const files: Record<string, Buffer> = {
        'clean.txt': text(4000),
        'eicar.com': eicarBytes(),
        'random.bin': randomBytes(200_000),
        'empty.txt': Buffer.alloc(0),
        'tiny.txt': Buffer.from('x'),
      };
      for (const [name, data] of Object.entries(files)) {
        const file = join(dir, name);
        await writeFile(file, data);
        for (const service of ['/avscan', '/echo']) {
          const reference = await runCIcapClient({
            host: '127.0.0.1',
            port: server.port,
            service: service.slice(1),
            file,
            reqmod: true,
            method: 'POST',
          });
          const ours = await scan(client, service, data);
          // echo answers 204 or an identical 200 (it alternates): compare blocked / not blocked,
          // and that c-icap-client saw its body come back unchanged where we saw an echo.
          expect(ours.verdict === 'blocked', `${service} ${name}`).toBe(reference.verdict === 'blocked');
          expect(ours.verdict, `${service} ${name}`).not.toBe('modified');
          if (reference.verdict === 'modified')
            expect(reference.bodyEqualsInput, `${service} ${name}`).toBe(true);
          expect(ours.threat ?? null, `${service} ${name}`).toBe(reference.threat);
        }
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }, 60_000);

  it('survives the server closing keep-alive connections (MaxKeepAliveRequests) without a failed request', async () => {
    const strict = await startCIcap({ maxKeepAliveRequests: 3 });
    const c = new IcapClient({ url: `icap://127.0.0.1:${strict.port}`, maxConnections: 1 });
    try {
      for (let i = 0; i < 30; i++) {
        expect((await scan(c, '/avscan', i % 5 === 0 ? eicarBytes() : text(300))).verdict).toBe(
          i % 5 === 0 ? 'blocked' : 'clean',
        );
      }
      expect(c.stats.created).toBeGreaterThan(5);
    } finally {
      c.destroy();
      await strict.stop();
    }
  }, 60_000);
});

/** A one-shot body (not replayable, length unknown) from a buffer. */
async function* oneShot(buf: Buffer): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < buf.length; i += 700) yield buf.subarray(i, i + 700);
}

/** `size` bytes made on the fly, 1 MiB at a time (never held), hashed into `hash` if given. */
async function* generate(size: number, hash?: ReturnType<typeof createHash>): AsyncGenerator<Uint8Array> {
  const block = text(1024 * 1024);
  for (let sent = 0; sent < size; sent += block.length) {
    const b = block.subarray(0, Math.min(block.length, size - sent));
    hash?.update(b);
    yield b;
  }
}
