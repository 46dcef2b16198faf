/**
 * The scanning engine end to end against real c-icap + ClamAV: what the application receives,
 * what the client sees, and the icap_log record, for every outcome and both failure actions.
 */
import { request as httpRequest } from 'node:http';
import { createEngine, type IcapEngine, type IcapProfile } from '@icapkit/core';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { type CIcapServer, describeWithCIcap, refusingPort, startCIcap } from '../support/c-icap.js';
import { EICAR_THREAT, eicarBytes } from '../support/eicar.js';
import { type ScanServer, startScanServer } from '../support/scan-server.js';

function text(n: number, seed = 0): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = 0x61 + ((i + seed) % 26);
  return b;
}

interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/** POST with a known length, or chunked when `chunked` (the body sent in pieces). */
function post(
  url: string,
  body: Buffer,
  opts: { chunked?: boolean; headers?: Record<string, string>; path?: string } = {},
) {
  return new Promise<Reply>((resolve, reject) => {
    const u = new URL(opts.path ?? '/upload', url);
    const req = httpRequest(
      u,
      {
        method: 'POST',
        headers: {
          'content-type': 'application/octet-stream',
          ...(opts.chunked ? {} : { 'content-length': String(body.length) }),
          ...opts.headers,
        },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks).toString() }),
        );
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    if (opts.chunked) {
      for (let i = 0; i < body.length; i += 16_384) req.write(body.subarray(i, i + 16_384));
      req.end();
    } else {
      req.end(body);
    }
  });
}

describeWithCIcap('engine against real c-icap', () => {
  let cicap: CIcapServer;
  let engine: IcapEngine | undefined;
  let app: ScanServer | undefined;

  beforeAll(async () => {
    cicap = await startCIcap({ maxKeepAliveRequests: 100_000 });
  });
  afterAll(async () => {
    await cicap?.stop();
  });
  afterEach(async () => {
    await app?.close();
    await engine?.close();
    app = undefined;
    engine = undefined;
  });

  async function start(profile: Partial<IcapProfile> = {}): Promise<ScanServer> {
    engine = createEngine({
      name: 'ICAP-APPX',
      poolGroup: `icap://127.0.0.1:${cicap.port}`,
      serviceUri: '/avscan',
      ...profile,
    });
    app = await startScanServer(engine);
    return app;
  }

  for (const failAction of ['fail-closed', 'fail-open'] as const) {
    describe(`failAction ${failAction}`, () => {
      it('clean upload: the handler receives exactly the bytes sent; ICAP_PASSED', async () => {
        const s = await start({ failAction });
        const body = text(300_000);
        const r = await post(s.url, body);
        expect(r.status).toBe(200);
        expect(s.seen).toHaveLength(1);
        expect(s.seen[0]!.body.equals(body)).toBe(true);
        const log = s.logs[0]!;
        expect(log.action).toBe('ICAP_PASSED');
        expect(log.significant).toBe(false);
        expect(log.request_logs[0]).toMatchObject({
          action: 'ICAP_PASSED',
          icap_response_code: 204,
          icap_method: 'ICAP_METHOD_REQMOD',
        });
      });

      it('chunked clean upload passes too', async () => {
        const s = await start({ failAction });
        const body = text(100_000, 3);
        const r = await post(s.url, body, { chunked: true });
        expect(r.status).toBe(200);
        expect(s.seen[0]!.body.equals(body)).toBe(true);
      });

      it('EICAR: 403 (HTML by default, problem+json by Accept), handler never called, ICAP_BLOCKED with the threat', async () => {
        const s = await start({ failAction });
        const html = await post(s.url, eicarBytes());
        expect(html.status).toBe(403);
        expect(html.headers['content-type']).toMatch(/^text\/html/);
        expect(html.body).toContain(EICAR_THREAT);
        expect(html.body).not.toContain(String(cicap.port));
        const json = await post(s.url, eicarBytes(), { headers: { accept: 'application/json' } });
        expect(json.status).toBe(403);
        expect(JSON.parse(json.body)).toMatchObject({ status: 403, threat: EICAR_THREAT });
        expect(s.seen).toHaveLength(0);
        const log = s.logs[0]!;
        expect(log).toMatchObject({ action: 'ICAP_BLOCKED', significant: true, http_response_code: 403 });
        expect(log.request_logs[0]).toMatchObject({
          action: 'ICAP_BLOCKED',
          icap_response_code: 200,
          http_response_code: 403,
          threat_id: EICAR_THREAT,
          reason: 'Infected',
          complete_body_sent: true,
        });
      });

      it('ICAP server down: 503 (fail-closed) or the untouched body passes (fail-open), significant ICAP_FAILED', async () => {
        const dead = await refusingPort();
        const s = await start({ failAction, poolGroup: `icap://127.0.0.1:${dead}` });
        const body = text(5000);
        const r = await post(s.url, body);
        const log = s.logs[0]!;
        expect(log.action).toBe('ICAP_FAILED');
        expect(log.significant).toBe(true);
        expect(log.error_code).toBe('ICAP_ERR_CONNECT');
        if (failAction === 'fail-closed') {
          expect(r.status).toBe(503);
          expect(s.seen).toHaveLength(0);
        } else {
          expect(r.status).toBe(200);
          expect(s.seen[0]!.body.equals(body)).toBe(true);
          expect(log.significance).toContain('FAIL_OPEN');
        }
      });
    });
  }

  for (const exceed of ['fail-closed', 'fail-open'] as const) {
    it(`body over bufferSize (${exceed}): declared length and chunked`, async () => {
      const s = await start({ bufferSize: 64 * 1024, bufferSizeExceedAction: exceed });
      const body = text(200_000, 7);
      const declared = await post(s.url, body);
      const chunked = await post(s.url, body, { chunked: true });
      for (const [i, r] of [declared, chunked].entries()) {
        const log = s.logs[i]!;
        expect(log.significance).toContain('BUFFER_SIZE_EXCEEDED');
        expect(log.action).toBe('ICAP_FAILED');
        if (exceed === 'fail-closed') {
          expect(r.status).toBe(413);
        } else {
          expect(r.status).toBe(200);
        }
      }
      if (exceed === 'fail-closed') {
        expect(s.seen).toHaveLength(0);
        // A declared length is refused before the body is read: no ICAP transaction at all.
        expect(s.logs[0]!.request_logs).toHaveLength(0);
      } else {
        expect(s.seen).toHaveLength(2);
        for (const seen of s.seen) expect(seen.body.equals(body)).toBe(true);
      }
    });
  }

  it('requests without a body and requests no rule matches pass untouched as ICAP_DISABLED', async () => {
    const s = await start({
      rules: [
        { name: 'skip-health', match: { path: '/health' }, action: 'skip' },
        {
          name: 'scan-uploads',
          match: { path: { prefix: ['/upload'] }, method: ['POST', 'PUT'] },
          action: 'enable-icap',
        },
      ],
    });
    const health = await post(s.url, text(100), { path: '/health' });
    const other = await post(s.url, text(100), { path: '/api/other' });
    const infectedOutsideRules = await post(s.url, eicarBytes(), { path: '/api/other' });
    const upload = await post(s.url, eicarBytes(), { path: '/upload/file' });
    const bypass = await post(s.url, eicarBytes(), { path: '/health/..%2Fupload' });
    expect([health.status, other.status, infectedOutsideRules.status, upload.status, bypass.status]).toEqual([
      200, 200, 200, 403, 403,
    ]);
    expect(s.logs.map((l) => [l.action, l.rule_name ?? null, l.policy_reason])).toEqual([
      ['ICAP_DISABLED', 'skip-health', 'rule'],
      ['ICAP_DISABLED', null, 'no-rule-matched'],
      ['ICAP_DISABLED', null, 'no-rule-matched'],
      ['ICAP_BLOCKED', 'scan-uploads', 'rule'],
      ['ICAP_BLOCKED', 'scan-uploads', 'rule'],
    ]);
  });

  it('Allow: 204 off (streaming mode): a clean body comes back as an identical echo (ICAP_PASSED), EICAR is blocked', async () => {
    const s = await start({ allow204: false, serviceUri: '/avscan_no204' });
    const body = text(2 * 1024 * 1024, 11);
    const r = await post(s.url, body, { chunked: true });
    expect(r.status).toBe(200);
    expect(s.seen[0]!.body.equals(body)).toBe(true);
    expect(s.logs[0]!.action).toBe('ICAP_PASSED');
    expect(s.logs[0]!.request_logs[0]!.icap_response_code).toBe(200);
    expect((await post(s.url, eicarBytes())).status).toBe(403);
  });

  it('c-icap echo (a returned request with an added Via header) counts as passed, not modified', async () => {
    const s = await start({ allow204: false, serviceUri: '/echo' });
    const body = text(40_000, 5);
    expect((await post(s.url, body)).status).toBe(200);
    expect(s.seen[0]!.body.equals(body)).toBe(true);
    expect(s.logs[0]!.action).toBe('ICAP_PASSED');
  });

  it('EICAR a body parser decodes (a JSON string, %XX in a form) is blocked by ClamAV in the decoded strings; clean escapes pass', async () => {
    const eicar = eicarBytes().toString('latin1');
    const cases: Array<[string, string]> = [
      ['application/json', JSON.stringify({ file: eicar })],
      ['text/plain', JSON.stringify([eicar])],
      ['application/x-www-form-urlencoded', `file=${encodeURIComponent(eicar)}`],
    ];
    for (const service of ['/avscan', '/avscan_no204', '/echo']) {
      const s = await start({ serviceUri: service, allow204: service === '/avscan' });
      for (const [type, body] of cases) {
        const r = await post(s.url, Buffer.from(body), { headers: { 'content-type': type } });
        if (service === '/echo') expect(r.status).toBe(200);
        else {
          expect(r.status).toBe(403);
          const log = s.logs.at(-1)!;
          expect(log.significance).toContain('DECODED_STRINGS');
          expect(log.request_logs.at(-1)!.file_name).toBe('(decoded strings)');
          expect(log.request_logs.at(-1)!.icap_response_code).not.toBe(204);
        }
      }
      const clean = '{"caf\\u00e9":"a \\"quoted\\" \\\\ path"}';
      const r = await post(s.url, Buffer.from(clean), { headers: { 'content-type': 'application/json' } });
      expect(r.status).toBe(200);
      expect(s.seen.at(-1)!.body.toString()).toBe(clean);
      expect(s.logs.at(-1)!.action).toBe('ICAP_PASSED');
      expect(s.logs.at(-1)!.request_logs).toHaveLength(2);
      expect(s.seen).toHaveLength(service === '/echo' ? cases.length + 1 : 1);
      await app?.close();
      await engine?.close();
      app = undefined;
      engine = undefined;
    }
  });

  it('without preview (enablePreview false) and with previews of 0 and 1 byte', async () => {
    for (const p of [
      { enablePreview: false },
      { previewSize: 0, previewMinBodySize: 0 },
      { previewSize: 1, previewMinBodySize: 0 },
      // the default: a small body goes whole, a large one with a preview
      {},
    ]) {
      const s = await start(p);
      expect((await post(s.url, text(10_000))).status).toBe(200);
      expect((await post(s.url, eicarBytes())).status).toBe(403);
      expect((await post(s.url, text(200_000))).status).toBe(200);
      const big = Buffer.concat([text(150_000), eicarBytes(), text(50_000)]);
      expect((await post(s.url, big)).status).toBe(403);
      await app?.close();
      await engine?.close();
    }
  });

  it('adaptive previews: virus_scan (100 Continue to every preview) gets bodies whole after 32, EICAR still blocks; echo keeps its previews', async () => {
    const previewed = (s: ScanServer) =>
      /^Preview:/im.test(s.logs.at(-1)!.request_logs.at(-1)!.icap_headers_sent_to_server ?? '');
    const s = await start();
    for (let i = 0; i < 32; i++) {
      expect((await post(s.url, text(100_000, i))).status).toBe(200);
      expect(previewed(s)).toBe(true);
    }
    expect(engine!.status()[0]!.previewsSkipped).toEqual(['/avscan']);
    const clean = text(100_000, 99);
    expect((await post(s.url, clean)).status).toBe(200);
    expect(previewed(s)).toBe(false);
    expect(s.seen.at(-1)!.body.equals(clean)).toBe(true);
    // EICAR past where a preview would end, in a body sent whole: blocked, the handler never called.
    const seen = s.seen.length;
    expect((await post(s.url, Buffer.concat([text(150_000), eicarBytes()]))).status).toBe(403);
    expect(previewed(s)).toBe(false);
    expect(s.logs.at(-1)!.request_logs.at(-1)!.action).toBe('ICAP_BLOCKED');
    expect(s.seen).toHaveLength(seen);
    await app?.close();
    await engine?.close();
    // c-icap's echo answers every other preview with a 204: previews pay, they stay on.
    const e = await start({ serviceUri: '/echo' });
    for (let i = 0; i < 48; i++) {
      const body = text(100_000, i);
      expect((await post(e.url, body)).status).toBe(200);
      expect(previewed(e)).toBe(true);
      expect(e.seen.at(-1)!.body.equals(body)).toBe(true);
    }
    expect(engine!.status()[0]!.previewsSkipped).toEqual([]);
  });

  it('fails over to the next server, then to the next pool by priority; the log says which answered', async () => {
    const dead = await refusingPort();
    const s = await start({
      poolGroup: {
        name: 'ICAP-POOL-GROUP',
        pools: [
          { name: 'backup', priority: 1, servers: [`icap://127.0.0.1:${cicap.port}`] },
          { name: 'primary', priority: 20, servers: [`icap://127.0.0.1:${dead}`] },
        ],
      },
    });
    const r = await post(s.url, eicarBytes());
    expect(r.status).toBe(403);
    const logs = s.logs[0]!.request_logs;
    expect(logs.map((l) => [l.pool_name.val, l.action, l.error_code ?? null])).toEqual([
      ['primary', 'ICAP_FAILED', 'ICAP_ERR_CONNECT'],
      ['backup', 'ICAP_BLOCKED', null],
    ]);
    expect(logs[1]!.icap_server_port).toBe(cicap.port);
  });

  it('a server killed mid-test: requests move to the other server of the pool, the dead one is suspended', async () => {
    const second = await startCIcap();
    try {
      const s = await start({
        poolGroup: {
          pools: [
            { name: 'pool', servers: [`icap://127.0.0.1:${second.port}`, `icap://127.0.0.1:${cicap.port}`] },
          ],
        },
        health: { failureLimit: 2, probeInterval: 60_000 },
      });
      for (let i = 0; i < 6; i++) expect((await post(s.url, text(1000, i))).status).toBe(200);
      const usedBefore = new Set(s.logs.flatMap((l) => l.request_logs.map((r) => r.icap_server_port)));
      expect(usedBefore.size).toBe(2);
      await second.stop();
      for (let i = 0; i < 10; i++) {
        const r = await post(s.url, i % 2 ? eicarBytes() : text(1000, i));
        expect(r.status).toBe(i % 2 ? 403 : 200);
      }
      const after = s.logs.slice(6);
      for (const l of after) expect(l.request_logs.at(-1)!.icap_server_port).toBe(cicap.port);
      const status = engine!.status();
      expect(status.find((x) => x.server.endsWith(`:${second.port}`))?.state).toBe('suspended');
    } finally {
      await second.stop();
    }
  }, 60_000);
});
