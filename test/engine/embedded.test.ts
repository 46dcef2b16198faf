/**
 * The engine against the embedded ICAP server: the seeds' log records reproduced field by
 * field from the same ICAP answers, vendor specifics, and every outcome in both failure actions.
 */
import { readFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { createEngine, type IcapEngine, type IcapLog, type IcapProfile, type PinoLike } from '@icapkit/core';
import {
  eicar,
  type Fault,
  type IcapServerOptions,
  type IcapTestServer,
  startIcapServer,
} from '@icapkit/testing';
import { afterEach, describe, expect, it } from 'vitest';
import { type ScanServer, startScanServer } from '../support/scan-server.js';

let icap: IcapTestServer | undefined;
let engine: IcapEngine | undefined;
let app: ScanServer | undefined;

afterEach(async () => {
  await app?.close();
  await engine?.close();
  await icap?.close();
  app = undefined;
  engine = undefined;
  icap = undefined;
});

async function setup(server: IcapServerOptions, profile: Partial<IcapProfile> = {}) {
  icap = await startIcapServer({ rewrite: { from: 'EVIL', to: 'GOOD-LONGER' }, ...server });
  engine = createEngine({
    name: 'ICAP-APPX',
    poolGroup: { name: 'ICAP-POOL-GROUP', pools: [{ name: 'ICAP-POOL-GROUP', servers: [icap.url()] }] },
    serviceUri: '/avscan',
    ...profile,
  });
  app = await startScanServer(engine);
  return { icap, engine, app };
}

function post(
  url: string,
  body: Buffer | string | null,
  headers: Record<string, string> = {},
  method = 'POST',
) {
  return new Promise<{
    status: number;
    headers: Record<string, string | string[] | undefined>;
    text: string;
  }>((resolve, reject) => {
    const b = body === null ? undefined : Buffer.from(body);
    const req = httpRequest(
      new URL('/upload/report.pdf', url),
      {
        method,
        headers: {
          'content-type': 'application/pdf',
          ...(b ? { 'content-length': String(b.length) } : {}),
          ...headers,
        },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({ status: res.statusCode!, headers: res.headers, text: Buffer.concat(chunks).toString() }),
        );
      },
    );
    req.on('error', reject);
    req.end(b);
  });
}

/** A raw ICAP answer with an encapsulated HTTP response head and page. */
function rawBlock(icapHeaders: string, httpHead: string, page: string): string {
  return (
    `ICAP/1.0 200 OK\r\n${icapHeaders}Encapsulated: res-hdr=0, res-body=${Buffer.byteLength(httpHead)}\r\n\r\n` +
    `${httpHead}${Buffer.byteLength(page).toString(16)}\r\n${page}\r\n0\r\n\r\n`
  );
}

const answer =
  (response: string): ((r: { method: string }) => Fault | undefined) =>
  (r) =>
    r.method === 'OPTIONS' ? undefined : { kind: 'raw', response };

describe("the seeds' icap_log records, reproduced from the same ICAP answers", () => {
  it('OPSWAT MetaDefender: infected upload blocked', async () => {
    const received =
      'Date: Thu, 19 Nov 2020 13:55:00 G11T\r\nServer: Metadefender Core V4\r\nISTag: "001605794100"\r\nX-ICAP-Profile: File process\r\n' +
      'X-Response-Info: Blocked\r\nX-Response-Desc: Infected\r\nX-Blocked-Reason: Infected\r\n' +
      'X-Infection-Found: Type=0; Resolution=2; Threat=EICAR-Test-File (not a virus);\r\nX-Virus-ID: EICAR-Test-File (not a virus)\r\n';
    const { app: a } = await setup(
      {
        script: answer(
          rawBlock(
            received,
            'HTTP/1.1 403 Forbidden\r\nContent-Type: text/html\r\n\r\n',
            '<html>Blocked</html>',
          ),
        ),
      },
      { vendor: 'opswat', previewMinBodySize: 0 },
    );
    const r = await post(a.url, 'x'.repeat(653));
    expect(r.status).toBe(403);
    const log = a.logs[0]!;
    expect(log.action).toBe('ICAP_BLOCKED');
    expect(log.significant).toBe(true);
    const entry = log.request_logs[0]!;
    // Field by field, as in the seed (the sent headers differ by design: keep-alive, a real Host, our preview).
    expect(entry).toMatchObject({
      icap_response_code: 200,
      icap_method: 'ICAP_METHOD_REQMOD',
      http_response_code: 403,
      http_method: 'HTTP_METHOD_POST',
      complete_body_sent: true,
      pool_name: { val: 'ICAP-POOL-GROUP', crc32: 1799851903 },
      action: 'ICAP_BLOCKED',
      reason: 'Infected',
      threat_id: 'EICAR-Test-File (not a virus)',
      vendor: 'ICAP_VENDOR_OPSWAT',
      opswat_log: { reason: 'Infected', threat_id: 'EICAR-Test-File (not a virus)' },
    });
    expect(entry.icap_headers_received_from_server).toContain(
      'Date: Thu, 19 Nov 2020 13:55:00 G11T\r\nServer: Metadefender Core V4\r\nISTag: "001605794100"\r\nX-ICAP-Profile: File process\r\nX-Response-Info: Blocked\r\nX-Response-Desc: Infected\r\nX-Blocked-Reason: Infected\r\nX-Infection-Found: Type=0',
    );
    expect(entry.icap_headers_sent_to_server).toMatch(
      /^Host: 127\.0\.0\.1:\d+\r\n.*Allow: 204\r\nPreview: 653\r\nEncapsulated: req-hdr=0, req-body=\d+\r\n$/s,
    );
    expect(entry.icap_absolute_uri).toBe(`icap://127.0.0.1:${icap!.port}/avscan`);
    expect(Number(entry.latency)).toBeGreaterThanOrEqual(0);
  });

  it('OPSWAT: a clean request passes (204, X-Response-Info: Allowed)', async () => {
    const received =
      'Date: Wed, 18 Nov 2020 12:54:06 G11T\r\nServer: Metadefender Core V4\r\nISTag: "000000000096"\r\nX-Response-Info: Allowed\r\nEncapsulated: null-body=0\r\n';
    const { app: a } = await setup(
      { script: answer(`ICAP/1.0 204 No Content\r\n${received}\r\n`) },
      { vendor: 'opswat' },
    );
    expect((await post(a.url, 'clean')).status).toBe(200);
    expect(a.logs[0]!.action).toBe('ICAP_PASSED');
    expect(a.logs[0]!.request_logs[0]).toMatchObject({
      action: 'ICAP_PASSED',
      icap_response_code: 204,
      icap_method: 'ICAP_METHOD_REQMOD',
      http_method: 'HTTP_METHOD_POST',
      pool_name: { val: 'ICAP-POOL-GROUP', crc32: 1799851903 },
      icap_headers_received_from_server: received,
    });
  });

  it('a misconfigured server ("No security rule matched") is a block with that reason', async () => {
    const received =
      'Date: Thu, 19 Nov 2020 13:25:15 G11T\r\nServer: Metadefender Core V4\r\nISTag: "001605792300"\r\nX-Response-Info: Blocked\r\nX-Response-Desc: No security rule matched\r\n';
    const http =
      'HTTP/1.1 403 Forbidden\r\nContent-Type: text/html\r\nContent-Length: 9\r\nConnection: close\r\n\r\n';
    const { app: a } = await setup({
      script: answer(rawBlock(received, http.padEnd(91 - 2, 'X').slice(0, 0) + http, 'Forbidden')),
    });
    const r = await post(a.url, 'data');
    expect(r.status).toBe(403);
    expect(a.logs[0]!.request_logs[0]).toMatchObject({
      action: 'ICAP_BLOCKED',
      http_response_code: 403,
      reason: 'No security rule matched',
    });
  });

  it('NSX Defender: score, task and status URL in the log; X-Lastline headers forwarded to the client (switchable)', async () => {
    const { app: a } = await setup(
      { vendor: 'nsx-defender' },
      { vendor: 'nsx-defender', serviceUri: '/avscan' },
    );
    const r = await post(a.url, eicar());
    expect(r.status).toBe(403);
    const entry = a.logs[0]!.request_logs[0]!;
    expect(entry.nsx_defender_log?.score).toBe(100);
    expect(entry.nsx_defender_log?.task_uuid).toMatch(/^[0-9a-f]{32}$/);
    expect(entry.nsx_defender_log?.status_url).toBe(
      `https://user.lastline.com/portal#/analyst/task/${entry.nsx_defender_log?.task_uuid}/overview`,
    );
    expect(entry.vendor).toBe('ICAP_VENDOR_LASTLINE');
    expect(r.headers['x-lastline-score']).toBe('100');
    expect(r.headers['x-lastline-task']).toBe(entry.nsx_defender_log?.task_uuid);
    await app!.close();
    await engine!.close();
    engine = createEngine({
      name: 'n',
      poolGroup: icap!.url(),
      serviceUri: '/avscan',
      vendor: 'nsx-defender',
      nsxDefenderConfig: { forwardLastlineHeaders: false, statusUrl: 'https://nsx.example/task/$uuid' },
    });
    app = await startScanServer(engine);
    const r2 = await post(app.url, eicar());
    expect(r2.headers['x-lastline-score']).toBeUndefined();
    expect(app.logs[0]!.request_logs[0]!.nsx_defender_log?.status_url).toMatch(
      /^https:\/\/nsx\.example\/task\/[0-9a-f]{32}$/,
    );
  });

  it('NSX Defender: a clean answer with X-Lastline headers passes them to the client, not to the application', async () => {
    const { app: a } = await setup(
      { vendor: 'nsx-defender', nsxLastlineHeadersOnClean: true },
      { vendor: 'nsx-defender' },
    );
    const r = await post(a.url, 'clean body');
    expect(r.status).toBe(200);
    expect(r.headers['x-lastline-status']).toBe('known');
    expect(a.seen[0]!.headers['x-lastline-status']).toBeUndefined();
    expect(a.seen[0]!.body.toString()).toBe('clean body');
    expect(a.logs[0]!.action).toBe('ICAP_PASSED');
  });

  it('the real c-icap EICAR answer (a captured fixture) gives the c-icap log fields', async () => {
    const fixture = readFileSync(
      new URL(
        '../../packages/core/test/fixtures/c-icap/reqmod-avscan-eicar-preview0.response.bin',
        import.meta.url,
      ),
    );
    const final = fixture.subarray(fixture.indexOf('ICAP/1.0 200'));
    const { app: a } = await setup({
      script: (r) => (r.method === 'OPTIONS' ? undefined : { kind: 'raw', response: final }),
    });
    expect((await post(a.url, 'whatever')).status).toBe(403);
    expect(a.logs[0]!.request_logs[0]).toMatchObject({
      action: 'ICAP_BLOCKED',
      threat_id: 'Eicar-Test-Signature.UNOFFICIAL',
      reason: 'Infected',
      violations: [{ threat_name: 'Eicar-Test-Signature.UNOFFICIAL', resolution: 'ICAP_FILE_NOT_REPAIRED' }],
    });
  });
});

describe('outcomes in both failure actions', () => {
  for (const failAction of ['fail-closed', 'fail-open'] as const) {
    describe(failAction, () => {
      it('blocked stays blocked (403), whatever the failure action', async () => {
        const { app: a } = await setup({}, { failAction });
        expect((await post(a.url, eicar())).status).toBe(403);
        expect(a.seen).toHaveLength(0);
      });

      it('modified: the application gets the rewritten body and headers, ICAP_MODIFIED, significant', async () => {
        const { app: a } = await setup({}, { failAction, serviceUri: '/modify' });
        const r = await post(a.url, 'this is EVIL content', { 'x-custom': 'kept' });
        expect(r.status).toBe(200);
        expect(a.seen[0]!.body.toString()).toBe('this is GOOD-LONGER content');
        expect(a.seen[0]!.headers['content-length']).toBe(String('this is GOOD-LONGER content'.length));
        expect(a.seen[0]!.headers['x-custom']).toBe('kept');
        expect(a.seen[0]!.headers['transfer-encoding']).toBeUndefined();
        expect(a.logs[0]).toMatchObject({ action: 'ICAP_MODIFIED', significant: true });
        expect(a.logs[0]!.request_logs[0]!.modified_content_length).toBe(27);
      });

      for (const [name, fault, code] of [
        ['hangs past responseTimeout', { kind: 'hang' }, 'ICAP_ERR_TIMEOUT'],
        ['resets', { kind: 'reset', when: 'on-head' }, 'ICAP_ERR_RESET'],
        ['answers 500', { kind: 'status', status: 500 }, 'ICAP_ERR_SERVER_STATUS'],
        ['answers garbage', { kind: 'garbage' }, 'ICAP_ERR_PROTOCOL'],
        [
          'answers with oversized headers',
          { kind: 'oversized-headers', bytes: 100_000 },
          'ICAP_ERR_HEADERS_TOO_LARGE',
        ],
      ] as Array<[string, Fault, string]>) {
        it(`ICAP server ${name}: ${failAction === 'fail-closed' ? '503' : 'pass'}, ${code}, significant`, async () => {
          const { app: a } = await setup(
            { script: (r) => (r.method === 'OPTIONS' ? undefined : fault) },
            // Short only where it is what the case waits for: a busy machine must not turn an
            // answer into a timeout.
            {
              failAction,
              responseTimeout: fault.kind === 'hang' ? 300 : 10_000,
              // ioTimeout defaults to responseTimeout, and the socket's idle timer, restarted by the
              // body's last write, can win that tie on a busy machine (ICAP_ERR_IO_TIMEOUT): longer
              // here, so the case shows responseTimeout's own error.
              connection: { ioTimeout: 10_000 },
              health: { failureLimit: 100 },
            },
          );
          const r = await post(a.url, 'some upload');
          expect(r.status).toBe(failAction === 'fail-closed' ? 503 : 200);
          if (failAction === 'fail-open') expect(a.seen[0]!.body.toString()).toBe('some upload');
          else expect(a.seen).toHaveLength(0);
          expect(a.logs[0]).toMatchObject({
            action: 'ICAP_FAILED',
            significant: true,
            error_code: code,
            fail_action: failAction,
          });
        });
      }
    });
  }
});

describe('engine details', () => {
  it('preview: a body of at most previewMinBodySize goes whole (one round trip), a larger one is previewed', async () => {
    const { app: a, icap: s } = await setup({ recordBodies: false });
    const sent = () => s.requests.filter((r) => r.method === 'REQMOD').at(-1)!;
    expect((await post(a.url, Buffer.alloc(60_000, 'a'))).status).toBe(200);
    expect(sent().preview).toBeUndefined();
    expect(sent().allow204).toBe(true);
    expect((await post(a.url, Buffer.alloc(70_000, 'a'))).status).toBe(200);
    expect(sent().preview).toBe(1024);
    expect(a.logs[1]!.request_logs[0]!.preview_size).toBe(1024);
    // 0: every body is previewed (here within the preview, ending with ieof).
    await app?.close();
    await engine?.close();
    await icap?.close();
    const z = await setup({ recordBodies: false }, { previewMinBodySize: 0 });
    expect((await post(z.app.url, 'small')).status).toBe(200);
    expect(z.icap.requests.filter((r) => r.method === 'REQMOD').at(-1)!.preview).toBe(5);
  });

  it('a body held in a temp file: an identical 200 echo passes, a same-length rewrite is a modification', async () => {
    const { app: a, icap: s } = await setup({}, { memoryThreshold: '16kb', serviceUri: '/echo' });
    const body = Buffer.alloc(100_000, 'a');
    body.write('tail EVIL', body.length - 9);
    const echoed = await post(a.url, body);
    expect(echoed.status).toBe(200);
    expect(s.requests.find((r) => r.method === 'REQMOD')?.status).toBe(200);
    expect(a.logs[0]!.action).toBe('ICAP_PASSED');
    expect(a.seen[0]!.body.equals(body)).toBe(true);
    // The same body through /modify: EVIL -> GOOD keeps the length, only the bytes differ.
    await app?.close();
    await engine?.close();
    await icap?.close();
    const m = await setup(
      { rewrite: { from: 'EVIL', to: 'GOOD' } },
      { memoryThreshold: '16kb', serviceUri: '/modify' },
    );
    const modified = await post(m.app.url, body);
    expect(modified.status).toBe(200);
    expect(m.app.logs[0]!.action).toBe('ICAP_MODIFIED');
    expect(m.app.seen[0]!.body.toString('latin1').endsWith('tail GOOD')).toBe(true);
    expect(m.app.seen[0]!.body.length).toBe(body.length);
  });

  it('above slowResponseWarningThreshold the entry is significant but the request is served', async () => {
    const { app: a } = await setup(
      { script: (r) => (r.method === 'OPTIONS' ? undefined : { kind: 'delay', ms: 150 }) },
      { slowResponseWarningThreshold: 50 },
    );
    expect((await post(a.url, 'clean')).status).toBe(200);
    expect(a.logs[0]).toMatchObject({
      action: 'ICAP_PASSED',
      significant: true,
      significance: ['SLOW_RESPONSE'],
    });
  });

  it("relays the ICAP server's own block page when asked, with sanitised headers", async () => {
    const page = '<h1>Blocked by policy</h1>';
    const http = `HTTP/1.1 451 Unavailable For Legal Reasons\r\nContent-Type: text/html\r\nSet-Cookie: a=b\r\nX-Policy: p1\r\nContent-Length: ${page.length}\r\n\r\n`;
    const { app: a } = await setup(
      {
        script: answer(
          rawBlock('ISTag: "x"\r\nX-Infection-Found: Type=1; Resolution=2; Threat=Policy;\r\n', http, page),
        ),
      },
      { blockResponse: 'relay' },
    );
    const r = await post(a.url, 'x');
    expect(r.status).toBe(451);
    expect(r.text).toBe(page);
    expect(r.headers['content-type']).toBe('text/html');
    // Only the fields a block page needs go out (campaign-bl BL1).
    expect(r.headers['x-policy']).toBeUndefined();
    expect(r.headers['set-cookie']).toBeUndefined();
  });

  it('redacts secrets in the logged ICAP headers', async () => {
    const { app: a } = await setup(
      {},
      { icapHeaders: { 'X-MDCLOUD-APIKEY': 'sk-1234567890', 'X-Tenant': 'acme' } },
    );
    await post(a.url, 'x');
    const sent = a.logs[0]!.request_logs[0]!.icap_headers_sent_to_server;
    expect(sent).toContain('X-MDCLOUD-APIKEY: [REDACTED]');
    // Every value of the profile's own icapHeaders is redacted, whatever its name.
    expect(sent).toContain('X-Tenant: [REDACTED]');
    expect(JSON.stringify(a.logs)).not.toContain('sk-1234567890');
    expect(icap!.requests.at(-1)!.headers.get('x-mdcloud-apikey')).toBe('sk-1234567890');
  });

  it('delivers records to a pino-compatible logger at a level that fits the action', async () => {
    const calls: Array<[string, IcapLog]> = [];
    const logger = Object.fromEntries(
      ['debug', 'info', 'warn', 'error'].map((level) => [
        level,
        (obj: { icap_log: IcapLog }) => calls.push([level, obj.icap_log]),
      ]),
    ) as unknown as PinoLike;
    const { app: a } = await setup(
      {},
      { logger, rules: [{ name: 'uploads', match: { path: '/upload' }, action: 'enable-icap' }] },
    );
    await post(a.url, 'clean');
    await post(a.url, eicar());
    expect(calls.map(([level, l]) => [level, l.action, l.rule_name])).toEqual([
      ['debug', 'ICAP_PASSED', 'uploads'],
      ['warn', 'ICAP_BLOCKED', 'uploads'],
    ]);
  });

  it('an enabling rule sends a bodyless request as REQMOD with null-body', async () => {
    const { app: a } = await setup({}, { rules: [{ name: 'all', action: 'enable-icap' }] });
    expect((await post(a.url, null, {}, 'GET')).status).toBe(200);
    expect(a.logs[0]!.action).toBe('ICAP_PASSED');
    expect(icap!.requests.at(-1)!.headers.get('encapsulated')).toMatch(/^req-hdr=0, null-body=\d+$/);
  });

  it('streaming mode (Allow: 204 off): a 204 inside the preview replays the held body; the server echo is compared by hash', async () => {
    const { app: a } = await setup({}, { allow204: false });
    const big = Buffer.alloc(3 * 1024 * 1024, 0x63);
    expect((await post(a.url, big)).status).toBe(200);
    expect(a.seen[0]!.body.equals(big)).toBe(true);
    expect(a.logs[0]!.action).toBe('ICAP_PASSED');
    expect(a.logs[0]!.request_logs[0]!.icap_response_code).toBe(200);
    expect((await post(a.url, Buffer.from('tiny'))).status).toBe(200);
    expect(a.seen[1]!.body.toString()).toBe('tiny');
  });

  it('streaming mode fails open while the body is still held (a failure inside the preview)', async () => {
    // A server that resets every REQMOD (its health check, sent without a preview, too): broken.
    const { app: a } = await setup(
      {
        script: (r) =>
          r.method === 'OPTIONS'
            ? undefined
            : { kind: 'reset', when: typeof r.preview === 'number' ? 'after-preview' : 'after-body' },
      },
      { allow204: false, failAction: 'fail-open' },
    );
    const body = Buffer.alloc(2 * 1024 * 1024, 0x65);
    expect((await post(a.url, body)).status).toBe(200);
    expect(a.seen[0]!.body.equals(body)).toBe(true);
    expect(a.logs[0]!.significance).toContain('FAIL_OPEN');
  });

  it('streaming mode cannot fail open once the body is gone: 503 says why', async () => {
    const { app: a } = await setup(
      { script: (r) => (r.method === 'OPTIONS' ? undefined : { kind: 'reset', when: 'mid-body' }) },
      { allow204: false, failAction: 'fail-open' },
    );
    const r = await post(a.url, Buffer.alloc(8 * 1024 * 1024, 0x64));
    expect(r.status).toBe(503);
    expect(a.seen).toHaveLength(0);
    expect(a.logs[0]!.error_code).toBe('ICAP_ERR_RESET');
    expect(a.logs[0]!.error_message).toContain('cannot pass unscanned');
  });
});
