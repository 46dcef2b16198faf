/**
 * ICAP server answers around OPTIONS, in each framework and failure action: an error status
 * with an odd Encapsulated (`500` + `opt-body=0`, to the REQMOD or to the OPTIONS) is an ICAP
 * server failure whose status stays in the log record (not ICAP_ERR_PROTOCOL); a server whose
 * ISTag changes on every answer costs one OPTIONS, not one per upload; OPTIONS without the
 * required ISTag/Methods are logged as a warning, and so are a Preview or Options-TTL that are
 * not whole numbers (read as absent: the server still scans, nothing fails open).
 */
import type { IcapLog, IcapProfile, PinoLike } from '@icapkit/core';
import {
  eicar,
  type Fault,
  type IcapTestServer,
  type RecordedRequest,
  startIcapServer,
} from '@icapkit/testing';
import { afterEach, describe, expect, it } from 'vitest';
import { type Framework, startApp } from '../conformance/apps.js';
import { send } from '../support/http-client.js';

const FRAMEWORKS: Framework[] = ['express5', 'fastify', 'koa3'];
const BODY = Buffer.alloc(3000, 0x61);

let server: IcapTestServer | undefined;
afterEach(async () => {
  await server?.close();
  server = undefined;
});

async function waitFor(condition: () => boolean, withinMs = 3000): Promise<void> {
  const deadline = Date.now() + withinMs;
  while (!condition() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
}

async function withApp(
  framework: Framework,
  profile: Partial<IcapProfile>,
  fn: (url: string, logs: IcapLog[], seen: () => number) => Promise<void>,
): Promise<void> {
  const logs: IcapLog[] = [];
  const app = await startApp(framework, {
    name: 'opts',
    poolGroup: server!.url(),
    serviceUri: '/avscan',
    responseTimeout: 3000,
    connection: { ioTimeout: 2000 },
    health: { failureLimit: 100 },
    onLog: (l) => logs.push(l),
    ...profile,
  });
  try {
    await fn(app.url, logs, () => app.seen.length);
  } finally {
    await app.close();
  }
}

/** A profile logger that keeps its warnings. */
function warningLogger() {
  const warnings: Array<{ obj: object; msg: string | undefined }> = [];
  const logger: PinoLike = {
    debug: () => {},
    info: () => {},
    warn: (obj, msg) => warnings.push({ obj, msg }),
    error: () => {},
  };
  return { logger, warnings };
}

const upload = (url: string) =>
  send(url, '/raw', {
    body: BODY,
    headers: { 'content-type': 'application/octet-stream' },
    timeoutMs: 10_000,
  });

describe.each(FRAMEWORKS)('ICAP OPTIONS and odd error answers: %s', (framework) => {
  for (const failAction of ['fail-closed', 'fail-open'] as const) {
    for (const to of ['REQMOD', 'OPTIONS'] as const) {
      it(`${failAction}: ${to} answered 500 with Encapsulated: opt-body=0 -> ICAP_ERR_SERVER_STATUS, icap_response_code 500`, async () => {
        const fault: Fault = { kind: 'status', status: 500, encapsulated: 'opt-body=0' };
        server = await startIcapServer({
          script: (q: RecordedRequest) => (q.method === to ? fault : undefined),
        });
        await withApp(framework, { failAction }, async (url, logs, seen) => {
          const r = await upload(url);
          expect(r.status).toBe(failAction === 'fail-closed' ? 503 : 200);
          expect(seen()).toBe(failAction === 'fail-closed' ? 0 : 1);
          await waitFor(() => logs.length > 0);
          const log = logs.at(-1)!;
          expect(log.action).toBe('ICAP_FAILED');
          expect(log.error_code).toBe('ICAP_ERR_SERVER_STATUS');
          expect(log.request_logs.at(-1)?.icap_response_code).toBe(500);
        });
      });
    }
  }

  it('ISTag churn: 6 uploads, one OPTIONS', async () => {
    server = await startIcapServer({ istagChurn: true, recordBodies: false });
    await withApp(framework, {}, async (url) => {
      for (let i = 0; i < 6; i++) expect((await upload(url)).status).toBe(200);
    });
    expect(server.requests.filter((q) => q.method === 'REQMOD')).toHaveLength(6);
    expect(server.requests.filter((q) => q.method === 'OPTIONS')).toHaveLength(1);
  });

  it('OPTIONS without ISTag and Methods: a warning naming them on the profile logger', async () => {
    server = await startIcapServer({ incompleteOptions: true, recordBodies: false });
    const { logger, warnings } = warningLogger();
    await withApp(framework, { logger }, async (url) => {
      expect((await upload(url)).status).toBe(200);
    });
    const w = warnings.find((x) => /lacks the required/.test(x.msg ?? ''));
    expect(w?.msg).toMatch(/OPTIONS icap:\/\/.*\/avscan lacks the required ISTag and Methods headers/);
    expect(w?.obj).toMatchObject({ missingHeaders: ['ISTag', 'Methods'] });
  });

  it('fail-open: OPTIONS with a Preview and Options-TTL that are not whole numbers still scan (EICAR 403, a warning), never fail open', async () => {
    const answer =
      'ICAP/1.0 200 OK\r\nISTag: "n"\r\nMethods: REQMOD\r\nAllow: 204\r\nPreview: 1k\r\n' +
      'Options-TTL: never\r\nEncapsulated: null-body=0\r\n\r\n';
    server = await startIcapServer({
      recordBodies: false,
      script: (q) => (q.method === 'OPTIONS' ? { kind: 'raw', response: answer } : undefined),
    });
    const { logger, warnings } = warningLogger();
    await withApp(framework, { logger, failAction: 'fail-open' }, async (url, logs, seen) => {
      const threat = await send(url, '/raw', {
        body: Buffer.concat([BODY, eicar()]),
        headers: { 'content-type': 'application/octet-stream' },
        timeoutMs: 10_000,
      });
      expect(threat.status).toBe(403);
      expect((await upload(url)).status).toBe(200);
      expect(seen()).toBe(1);
      await waitFor(() => logs.length >= 2);
      expect(logs.map((l) => l.significance.includes('FAIL_OPEN'))).toEqual([false, false]);
    });
    const w = warnings.find((x) => /not a whole number/.test(x.msg ?? ''));
    expect(w?.obj).toMatchObject({ malformedHeaders: ['Preview: "1k"', 'Options-TTL: "never"'] });
  });
});
