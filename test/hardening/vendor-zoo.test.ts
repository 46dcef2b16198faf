/**
 * The vendor zoo: the embedded ICAP server answers like each vendor of the table
 * (shared/reference/vendor-verdicts.md), block styles on 200, 201, 204, 403, 405, 418, 500 and
 * 539 included, and each style runs against Express 5, Fastify and Koa 3 in both failure
 * modes, read with the matching vendor profile and with 'generic' (a forgotten vendor setting
 * must not lose a block), and with `blockResponse: 'relay'`:
 * - an EICAR upload (inside the preview, and with a body past the preview) gets 403 (the
 *   relayed SquidClamav redirect: 307), the handler is never called, and the log says
 *   ICAP_BLOCKED with the threat and the vendor;
 * - an EICAR file in a multipart form (scanned per file) blocks the form the same way;
 * - a clean upload passes unchanged (the handler gets the bytes sent), ICAP_PASSED.
 */
import type { IcapLog, IcapRequestLog, Vendor } from '@icapkit/core';
import { EICAR_NAME, eicar, type IcapTestServer, startIcapServer, type VendorStyle } from '@icapkit/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Framework, startApp } from '../conformance/apps.js';
import { multipart, send } from '../support/http-client.js';

const FRAMEWORKS: Framework[] = ['express5', 'fastify', 'koa3'];
const FAIL_ACTIONS = ['fail-closed', 'fail-open'] as const;

/** Each style, the vendor profile that reads it, and the log's vendor name for that profile. */
const STYLES: Array<{ style: VendorStyle; vendor: Vendor; log: IcapRequestLog['vendor'] }> = [
  { style: 'c-icap', vendor: 'c-icap', log: 'ICAP_VENDOR_CICAP' },
  { style: 'opswat', vendor: 'opswat', log: 'ICAP_VENDOR_OPSWAT' },
  { style: 'nsx-defender', vendor: 'nsx-defender', log: 'ICAP_VENDOR_LASTLINE' },
  { style: 'kaspersky', vendor: 'kaspersky', log: 'ICAP_VENDOR_KASPERSKY' },
  { style: 'eset', vendor: 'eset', log: 'ICAP_VENDOR_ESET' },
  { style: 'symantec', vendor: 'symantec', log: 'ICAP_VENDOR_SYMANTEC' },
  { style: 'mcafee', vendor: 'mcafee', log: 'ICAP_VENDOR_MCAFEE' },
  { style: 'trend-micro', vendor: 'trend-micro', log: 'ICAP_VENDOR_TRENDMICRO' },
  { style: 'sophos', vendor: 'sophos', log: 'ICAP_VENDOR_SOPHOS' },
  { style: 'f-secure', vendor: 'f-secure', log: 'ICAP_VENDOR_FSECURE' },
  { style: 'squidclamav', vendor: 'c-icap', log: 'ICAP_VENDOR_CICAP' },
  { style: 'icap-403', vendor: 'generic', log: 'ICAP_VENDOR_GENERIC' },
  { style: 'icap-405', vendor: 'eset', log: 'ICAP_VENDOR_ESET' },
  { style: 'icap-418', vendor: 'mcafee', log: 'ICAP_VENDOR_MCAFEE' },
  { style: 'icap-539', vendor: 'symantec', log: 'ICAP_VENDOR_SYMANTEC' },
  { style: 'icap-500', vendor: 'generic', log: 'ICAP_VENDOR_GENERIC' },
  { style: 'icap-204', vendor: 'generic', log: 'ICAP_VENDOR_GENERIC' },
];

function text(n: number, seed: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = 0x61 + ((i * 7 + seed) % 26);
  return b;
}

/** Infected: EICAR alone (ends inside the preview), and EICAR then 20 KB (answered in the preview). */
const INFECTED: Array<[string, Buffer]> = [
  ['EICAR', eicar()],
  ['EICAR + 20 KB', Buffer.concat([eicar(), text(20_000, 1)])],
];
/** Clean: small (ieof in the preview) and past the preview (100 Continue, then 204 or an echo). */
const CLEAN: Array<[string, Buffer]> = [
  ['clean 12 B', Buffer.from('hello, world')],
  ['clean 20 KB', text(20_000, 2)],
];

const servers = new Map<VendorStyle, IcapTestServer>();
/** Answers every REQMOD with a block whose page is cut: head, part of a chunk, then FIN. */
let cutting: IcapTestServer;

const CUT_PAGE_HTTP = 'HTTP/1.1 403 Forbidden\r\nContent-Type: text/html\r\nContent-Length: 5000\r\n\r\n';
const CUT_BLOCK =
  'ICAP/1.0 200 OK\r\n' +
  'ISTag: "CUT-1"\r\n' +
  `X-Infection-Found: Type=0; Resolution=2; Threat=${EICAR_NAME};\r\n` +
  `Encapsulated: res-hdr=0, res-body=${Buffer.byteLength(CUT_PAGE_HTTP)}\r\n` +
  '\r\n' +
  CUT_PAGE_HTTP +
  '1388\r\n<html><body>blocked, and then the connection goes away';

beforeAll(async () => {
  for (const { style } of STYLES) {
    servers.set(style, await startIcapServer({ vendor: style, recordBodies: false }));
  }
  cutting = await startIcapServer({
    recordBodies: false,
    script: (r) => (r.method === 'OPTIONS' ? undefined : { kind: 'garbage', bytes: CUT_BLOCK }),
  });
}, 60_000);

afterAll(async () => {
  for (const s of servers.values()) await s.close();
  await cutting?.close();
});

async function waitFor(condition: () => boolean, withinMs = 5000): Promise<void> {
  const deadline = Date.now() + withinMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${withinMs} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe.each(FRAMEWORKS)('vendor zoo: %s', (framework) => {
  describe.each(FAIL_ACTIONS)('%s', (failAction) => {
    it.each(STYLES)('$style', async ({ style, vendor, log: logVendor }) => {
      for (const [profileVendor, expectedLogVendor, blockResponse] of [
        [vendor, logVendor, 'page'],
        ['generic', 'ICAP_VENDOR_GENERIC', 'page'],
        // The server's own block response, relayed: its status (SquidClamav's redirect stays a 307).
        [vendor, logVendor, 'relay'],
      ] as const) {
        const logs: IcapLog[] = [];
        const app = await startApp(framework, {
          name: 'zoo',
          poolGroup: servers.get(style)!.url(),
          serviceUri: '/avscan',
          vendor: profileVendor,
          failAction,
          blockResponse,
          previewSize: 1024,
          responseTimeout: 5000,
          onLog: (l) => logs.push(l),
        });
        try {
          for (const [what, body] of INFECTED) {
            const before = logs.length;
            const r = await send(app.url, '/raw', {
              body,
              headers: { 'content-type': 'application/octet-stream' },
              timeoutMs: 10_000,
            });
            const where = `${style} read as ${profileVendor} (${blockResponse}), ${what}`;
            expect(r.status, where).toBe(blockResponse === 'relay' && style === 'squidclamav' ? 307 : 403);
            expect(app.seen, where).toHaveLength(0);
            await waitFor(() => logs.length > before);
            const log = logs.at(-1)!;
            expect(log.action, where).toBe('ICAP_BLOCKED');
            expect(log.significance, where).toContain('ICAP_BLOCKED');
            expect(log.fail_action, where).toBeUndefined();
            const entry = log.request_logs.at(-1)!;
            expect(entry.action, where).toBe('ICAP_BLOCKED');
            expect(entry.vendor, where).toBe(expectedLogVendor);
            if (style === 'nsx-defender')
              expect(entry.threat_id, where).toMatch(/^LastlineArtifact\(score=100;/);
            else expect(entry.threat_id, where).toBe(EICAR_NAME);
          }
          if (blockResponse === 'page') {
            // Per-file multipart scanning: the infected part blocks the whole form.
            const before = logs.length;
            const form = multipart([
              { name: 'note', data: Buffer.from('a field') },
              { name: 'f', filename: 'eicar.com', data: eicar() },
            ]);
            const r = await send(app.url, '/multipart', {
              body: form.body,
              headers: { 'content-type': form.contentType },
              timeoutMs: 10_000,
            });
            const where = `${style} read as ${profileVendor}, multipart`;
            expect(r.status, where).toBe(403);
            expect(app.seen, where).toHaveLength(0);
            await waitFor(() => logs.length > before);
            expect(logs.at(-1)!.action, where).toBe('ICAP_BLOCKED');
            expect(logs.at(-1)!.fail_action, where).toBeUndefined();
          }
          for (const [what, body] of CLEAN) {
            const before = logs.length;
            const seen = app.seen.length;
            const r = await send(app.url, '/raw', {
              body,
              headers: { 'content-type': 'application/octet-stream' },
              timeoutMs: 10_000,
            });
            const where = `${style} read as ${profileVendor} (${blockResponse}), ${what}`;
            expect(r.status, where).toBe(200);
            expect(app.seen.length, where).toBe(seen + 1);
            expect(app.seen.at(-1)!.raw?.equals(body), where).toBe(true);
            await waitFor(() => logs.length > before);
            expect(logs.at(-1)!.action, where).toBe('ICAP_PASSED');
            expect(logs.at(-1)!.significance, where).not.toContain('FAIL_OPEN');
          }
        } finally {
          await app.close();
        }
      }
    });
  });
});

describe.each(FRAMEWORKS)('a threat named in the head blocks when the block page is cut: %s', (framework) => {
  describe.each(FAIL_ACTIONS)('%s', (failAction) => {
    it.each(['page', 'relay'] as const)('blockResponse %s', async (blockResponse) => {
      const logs: IcapLog[] = [];
      const app = await startApp(framework, {
        name: 'zoo-cut',
        poolGroup: cutting.url(),
        serviceUri: '/avscan',
        failAction,
        blockResponse,
        responseTimeout: 5000,
        onLog: (l) => logs.push(l),
      });
      try {
        const r = await send(app.url, '/raw', {
          body: text(3000, 3),
          headers: { 'content-type': 'application/octet-stream' },
          timeoutMs: 10_000,
        });
        expect(r.status).toBe(403);
        expect(app.seen).toHaveLength(0);
        await waitFor(() => logs.length > 0);
        const log = logs.at(-1)!;
        expect(log.action).toBe('ICAP_BLOCKED');
        expect(log.request_logs.at(-1)!.threat_id).toBe(EICAR_NAME);
        await waitFor(() =>
          app.engine.status().every((s) => s.outstanding === 0 && s.connections.busy === 0),
        );
      } finally {
        await app.close();
      }
    });
  });
});

/** Hand-made answers whose shape the client must hand to the verdict reader, not refuse. */
const PAGE_HTTP = 'HTTP/1.1 403 Forbidden\r\nContent-Type: text/html\r\nContent-Length: 7\r\n\r\n';
const PAGE_BODY = '7\r\nBlocked\r\n0\r\n\r\n';
const SHAPES: Array<{ name: string; response: string; threat: string | undefined }> = [
  {
    name: 'ICAP 403 with an encapsulated 403 page and no vendor header',
    response: `ICAP/1.0 403 Forbidden\r\nISTag: "Z"\r\nEncapsulated: res-hdr=0, res-body=${PAGE_HTTP.length}\r\n\r\n${PAGE_HTTP}${PAGE_BODY}`,
    threat: undefined,
  },
  {
    name: 'ICAP 500 with X-Infection-Found and a page',
    response: `ICAP/1.0 500 Server Error\r\nISTag: "Z"\r\nX-Infection-Found: Type=0; Resolution=2; Threat=${EICAR_NAME};\r\nEncapsulated: res-hdr=0, res-body=${PAGE_HTTP.length}\r\n\r\n${PAGE_HTTP}${PAGE_BODY}`,
    threat: EICAR_NAME,
  },
  {
    name: 'ICAP 204 with X-Infection-Found and an encapsulated 403 head (null-body)',
    response: `ICAP/1.0 204 No Content\r\nISTag: "Z"\r\nX-Infection-Found: Type=0; Resolution=2; Threat=${EICAR_NAME};\r\nEncapsulated: res-hdr=0, null-body=${PAGE_HTTP.length}\r\n\r\n${PAGE_HTTP}`,
    threat: EICAR_NAME,
  },
  {
    name: 'ICAP 200 with X-Virus-ID and no Encapsulated header',
    response: `ICAP/1.0 200 OK\r\nISTag: "Z"\r\nX-Virus-ID: ${EICAR_NAME}\r\n\r\n`,
    threat: EICAR_NAME,
  },
  {
    // The head breaks a framing rule (opt-body in a REQMOD answer): the client refuses the
    // answer, yet the threat its head names still blocks.
    name: 'ICAP 200 with X-Infection-Found and an opt-body (a framing error after a complete head)',
    response: `ICAP/1.0 200 OK\r\nISTag: "Z"\r\nX-Infection-Found: Type=0; Resolution=2; Threat=${EICAR_NAME};\r\nEncapsulated: opt-body=0\r\n\r\n0\r\n\r\n`,
    threat: EICAR_NAME,
  },
  {
    name: 'ICAP 200 with X-Virus-ID and an inconsistent Encapsulated (res-body without res-hdr)',
    response: `ICAP/1.0 200 OK\r\nISTag: "Z"\r\nX-Virus-ID: ${EICAR_NAME}\r\nEncapsulated: res-body=0\r\n\r\n0\r\n\r\n`,
    threat: EICAR_NAME,
  },
  {
    name: 'ICAP 418 with X-Response-Info: Blocked',
    response: 'ICAP/1.0 418 Bad composition\r\nISTag: "Z"\r\nX-Response-Info: Blocked\r\n\r\n',
    threat: undefined,
  },
];

describe.each(FRAMEWORKS)('threat shapes the client passes to the verdict reader: %s', (framework) => {
  describe.each(FAIL_ACTIONS)('%s', (failAction) => {
    it.each(SHAPES)('$name', async ({ response, threat }) => {
      const server = await startIcapServer({
        recordBodies: false,
        script: (r) => (r.method === 'OPTIONS' ? undefined : { kind: 'raw', response }),
      });
      const logs: IcapLog[] = [];
      const app = await startApp(framework, {
        name: 'zoo-shapes',
        poolGroup: server.url(),
        serviceUri: '/avscan',
        failAction,
        responseTimeout: 5000,
        onLog: (l) => logs.push(l),
      });
      try {
        const r = await send(app.url, '/raw', {
          body: text(500, 4),
          headers: { 'content-type': 'application/octet-stream' },
          timeoutMs: 10_000,
        });
        expect(r.status).toBe(403);
        expect(app.seen).toHaveLength(0);
        await waitFor(() => logs.length > 0);
        const log = logs.at(-1)!;
        expect(log.action).toBe('ICAP_BLOCKED');
        expect(log.request_logs.at(-1)!.threat_id).toBe(threat);
      } finally {
        await app.close();
        await server.close();
      }
    });
  });
});
