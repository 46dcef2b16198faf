/**
 * Compressed request bodies: the ICAP server sees the decoded bytes (so gzip cannot hide a
 * threat), the application the original ones; unknown, stacked or undecodable codings and
 * decoded sizes over bufferSize are refused, never passed unscanned.
 */
import { request as httpRequest } from 'node:http';
import { brotliCompressSync, deflateSync, gzipSync } from 'node:zlib';
import { createEngine, type IcapEngine, type IcapProfile } from '@icapkit/core';
import { eicar, type IcapTestServer, startIcapServer } from '@icapkit/testing';
import { afterEach, describe, expect, it } from 'vitest';
import { type ScanServer, startScanServer } from '../support/scan-server.js';

let icap: IcapTestServer | undefined;
let engine: IcapEngine | undefined;
let app: ScanServer | undefined;

afterEach(async () => {
  await app?.close();
  await engine?.close();
  await icap?.close();
  app = engine = icap = undefined;
});

async function setup(profile: Partial<IcapProfile> = {}) {
  icap = await startIcapServer({ rewrite: { from: 'EVIL', to: 'GOOD-LONGER' } });
  engine = createEngine({ name: 'gz', poolGroup: icap.url(), serviceUri: '/avscan', ...profile });
  app = await startScanServer(engine);
  return { icap, app };
}

function post(url: string, body: Buffer, headers: Record<string, string>) {
  return new Promise<{ status: number; text: string }>((resolve, reject) => {
    const req = httpRequest(
      new URL('/upload', url),
      {
        method: 'POST',
        headers: { 'content-type': 'application/octet-stream', 'content-length': body.length, ...headers },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode!, text: Buffer.concat(chunks).toString() }));
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

const payload = Buffer.from(`report ${'0123456789'.repeat(2000)} end`);
const codings: Array<[string, (b: Buffer) => Buffer]> = [
  ['gzip', gzipSync],
  ['x-gzip', gzipSync],
  ['deflate', deflateSync],
  ['br', brotliCompressSync],
];

describe('Content-Encoding', () => {
  for (const [coding, encode] of codings) {
    it(`${coding}: EICAR inside the compressed body is found (decoded for the scan)`, async () => {
      const { app: a, icap: s } = await setup();
      const r = await post(a.url, encode(Buffer.concat([payload, eicar()])), { 'content-encoding': coding });
      expect(r.status).toBe(403);
      expect(a.seen).toHaveLength(0);
      expect(a.logs[0]!.action).toBe('ICAP_BLOCKED');
      // The encapsulated request carries the decoded body, without Content-Encoding.
      const sent = s.requests.find((q) => q.method === 'REQMOD')!;
      expect(sent.httpRequest?.headers.get('content-encoding')).toBeUndefined();
    });

    it(`${coding}: a clean body reaches the application as sent (still encoded)`, async () => {
      const { app: a, icap: s } = await setup();
      const wire = encode(payload);
      const r = await post(a.url, wire, { 'content-encoding': coding });
      expect(r.status).toBe(200);
      expect(a.seen[0]!.body.equals(wire)).toBe(true);
      expect(a.seen[0]!.headers['content-encoding']).toBe(coding);
      expect(a.logs[0]!.action).toBe('ICAP_PASSED');
      const sent = s.requests.find((q) => q.method === 'REQMOD')!;
      expect(sent.body?.equals(payload)).toBe(true);
    });
  }

  it('a body the server rewrites reaches the application decoded, without Content-Encoding', async () => {
    const { app: a } = await setup({ serviceUri: '/modify' });
    const r = await post(a.url, gzipSync(Buffer.from('an EVIL macro')), { 'content-encoding': 'gzip' });
    expect(r.status).toBe(200);
    expect(a.logs[0]!.action).toBe('ICAP_MODIFIED');
    expect(a.seen[0]!.body.toString()).toBe('an GOOD-LONGER macro');
    expect(a.seen[0]!.headers['content-encoding']).toBeUndefined();
    expect(a.seen[0]!.headers['content-length']).toBe(String('an GOOD-LONGER macro'.length));
  });

  it('contentEncoding: refuse answers 415 before reading, and never calls the ICAP server', async () => {
    const { app: a, icap: s } = await setup({ contentEncoding: 'refuse' });
    const r = await post(a.url, gzipSync(payload), { 'content-encoding': 'gzip' });
    expect(r.status).toBe(415);
    expect(a.seen).toHaveLength(0);
    expect(a.logs[0]).toMatchObject({ error_code: 'ICAP_ERR_CONTENT_ENCODING', http_response_code: 415 });
    expect(s.requests.filter((q) => q.method === 'REQMOD')).toHaveLength(0);
    // identity is not a compression
    const plain = await post(a.url, payload, { 'content-encoding': 'identity' });
    expect(plain.status).toBe(200);
  });

  it('unknown and stacked codings are refused with 415', async () => {
    const { app: a } = await setup();
    expect((await post(a.url, payload, { 'content-encoding': 'compress' })).status).toBe(415);
    expect((await post(a.url, payload, { 'content-encoding': 'zstd' })).status).toBe(415);
    const twice = gzipSync(gzipSync(Buffer.concat([payload, eicar()])));
    expect((await post(a.url, twice, { 'content-encoding': 'gzip, gzip' })).status).toBe(415);
    expect(a.seen).toHaveLength(0);
  });

  it('a body that does not decode is refused with 400 in both failure actions', async () => {
    for (const failAction of ['fail-closed', 'fail-open'] as const) {
      const { app: a } = await setup({ failAction });
      const broken = gzipSync(payload).subarray(0, 40);
      const r = await post(a.url, Buffer.concat([broken, Buffer.from('garbage')]), {
        'content-encoding': 'gzip',
      });
      expect(r.status).toBe(400);
      expect(r.text).toContain('cannot be decoded');
      expect(a.seen).toHaveLength(0);
      // Refused for what it is, like a malformed form: not subject to the failure action.
      expect(a.logs[0]).toMatchObject({
        action: 'ICAP_BLOCKED',
        error_code: 'ICAP_ERR_CONTENT_ENCODING',
        http_response_code: 400,
      });
      expect(a.logs[0]!.significance).toContain('CONTENT_ENCODING_REFUSED');
      await app?.close();
      await engine?.close();
      await icap?.close();
      app = engine = icap = undefined;
    }
  });

  it('a zip bomb stops at bufferSize: the decoded size counts, 413', async () => {
    const { app: a } = await setup({ bufferSize: 64 * 1024 });
    const bomb = gzipSync(Buffer.alloc(8 * 1024 * 1024));
    expect(bomb.length).toBeLessThan(64 * 1024);
    const r = await post(a.url, bomb, { 'content-encoding': 'gzip' });
    expect(r.status).toBe(413);
    expect(a.seen).toHaveLength(0);
  });
});
