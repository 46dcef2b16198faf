/**
 * @icapkit/web against real c-icap + ClamAV, driven directly with Web Requests (the Hono and
 * withIcap targets run the whole conformance list against c-icap in test/conformance/c-icap.test.ts):
 * a clean upload streams back byte for byte, EICAR is blocked with ClamAV's name (also inside a
 * multipart form and behind gzip), and a server that is not there takes the failure action.
 */
import { gzipSync } from 'node:zlib';
import type { IcapLog, IcapProfile } from '@icapkit/core';
import { createScanner, type WebScanner } from '@icapkit/web';
import { afterAll, afterEach, beforeAll, expect, it } from 'vitest';
import { type CIcapServer, describeWithCIcap, refusingPort, startCIcap } from '../support/c-icap.js';
import { EICAR_THREAT, eicarBytes } from '../support/eicar.js';

function text(n: number, seed = 0): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = 0x61 + ((i + seed) % 26);
  return b;
}

const post = (body: BodyInit, headers: Record<string, string> = {}) =>
  new Request('http://localhost/upload', { method: 'POST', body, headers });

describeWithCIcap('@icapkit/web with real c-icap', () => {
  let server: CIcapServer;
  const logs: IcapLog[] = [];
  const scanners: WebScanner[] = [];
  const scanner = (extra: Partial<IcapProfile> = {}) => {
    const s = createScanner({
      name: 'web-interop',
      poolGroup: `icap://127.0.0.1:${server.port}`,
      serviceUri: '/avscan',
      onLog: (l) => logs.push(l),
      ...extra,
    });
    scanners.push(s);
    return s;
  };

  beforeAll(async () => {
    server = await startCIcap();
  }, 60_000);
  afterAll(() => server?.stop());
  afterEach(async () => {
    await Promise.all(scanners.splice(0).map((s) => s.close()));
    logs.length = 0;
  });

  it('a clean 2 MB upload: the approved request streams exactly the bytes sent', async () => {
    const body = text(2_000_000, 4);
    const r = await scanner().scan(post(body, { 'content-type': 'application/octet-stream' }));
    expect(r.icap.action).toBe('ICAP_PASSED');
    expect(Buffer.from(await r.request!.arrayBuffer()).equals(body)).toBe(true);
    expect(r.request!.headers.get('content-length')).toBe(String(body.length));
  });

  it('EICAR, raw, in a multipart form and gzip-compressed: 403 naming ClamAV’s threat', async () => {
    const s = scanner();
    const raw = await s.scan(post(eicarBytes(), { accept: 'application/json' }));
    expect(raw.response!.status).toBe(403);
    expect(await raw.response!.json()).toMatchObject({ threat: EICAR_THREAT });
    const form = new FormData();
    form.append('title', 'report');
    form.append('file', new File([eicarBytes()], 'eicar.com'));
    expect((await s.scan(post(form))).response!.status).toBe(403);
    const gz = await s.scan(post(gzipSync(eicarBytes()), { 'content-encoding': 'gzip' }));
    expect(gz.response!.status).toBe(403);
    expect(logs.map((l) => l.action)).toEqual(['ICAP_BLOCKED', 'ICAP_BLOCKED', 'ICAP_BLOCKED']);
  });

  it('a clean multipart form reaches formData() with its files and fields', async () => {
    const form = new FormData();
    form.append('title', 'Quarterly report');
    form.append('doc', new File([text(300_000, 7)], 'report.pdf', { type: 'application/pdf' }));
    const r = await scanner().scan(post(form));
    const parsed = await r.request!.formData();
    expect(parsed.get('title')).toBe('Quarterly report');
    const doc = parsed.get('doc') as File;
    expect([doc.name, doc.type, doc.size]).toEqual(['report.pdf', 'application/pdf', 300_000]);
    expect(Buffer.from(await doc.arrayBuffer()).equals(text(300_000, 7))).toBe(true);
  });

  it('the ICAP server is not there: 503 fail-closed, the untouched body with fail-open', async () => {
    const poolGroup = `icap://127.0.0.1:${await refusingPort()}`;
    const closed = await scanner({ poolGroup }).scan(post(text(5000)));
    expect(closed.response!.status).toBe(503);
    const open = await scanner({ poolGroup, failAction: 'fail-open' }).scan(post(text(5000)));
    expect(Buffer.from(await open.request!.arrayBuffer()).equals(text(5000))).toBe(true);
    expect(logs.map((l) => [l.action, l.error_code])).toEqual([
      ['ICAP_FAILED', 'ICAP_ERR_CONNECT'],
      ['ICAP_FAILED', 'ICAP_ERR_CONNECT'],
    ]);
  });
});
