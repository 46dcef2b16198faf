/**
 * Over HTTP/2 a request's end is its stream's, not its header fields' (campaign-ak):
 *
 * - AK1 (invariant 1): HEADERS with `content-length: 0` and without END_STREAM, no DATA, then a
 *   trailers HEADERS frame. The Content-Length said "no body", so nothing was read, the trailer
 *   check never ran, and the handler could read the trailer fields unscanned (Fastify, Koa,
 *   Hono). Such an open stream is now read as a body (empty): its trailers get the 400 every
 *   request with trailers gets.
 * - AK2 (resources): a client that resets its stream (RST_STREAM) while the scan runs. Node's
 *   HTTP/2 compatibility layer says the response finished, so the scan went on for a client
 *   that had gone (its body held, its place in the ICAP queue, until the scanner answered or
 *   responseTimeout). It is now aborted, as a closed HTTP/1 connection's is.
 */
import { type ClientHttp2Stream, connect, type OutgoingHttpHeaders } from 'node:http2';
import type { IcapLog } from '@icapkit/core';
import { type IcapTestServer, startIcapServer } from '@icapkit/testing';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { type App, type Framework, startApp } from '../conformance/apps.js';

const FRAMEWORKS: Framework[] = ['fastify', 'koa3', 'hono'];
const MODES = ['fail-open', 'fail-closed'] as const;
const EICAR = 'X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*';

let icap: IcapTestServer;
/** REQMODs the ICAP server holds without answering (AK2), and whether it does. */
let hang = false;
beforeAll(async () => {
  icap = await startIcapServer({
    script: (r) => (hang && r.method === 'REQMOD' ? { kind: 'hang' } : undefined),
  });
});
afterAll(() => icap?.close());

const apps: App[] = [];
afterEach(async () => {
  hang = false;
  for (const a of apps.splice(0)) await a.close();
});

async function appFor(
  framework: Framework,
  failAction: (typeof MODES)[number],
  logs: IcapLog[],
): Promise<App> {
  const app = await startApp(
    framework,
    { name: 'h2', poolGroup: icap.url(), serviceUri: '/avscan', failAction, onLog: (l) => logs.push(l) },
    { http2: true },
  );
  apps.push(app);
  return app;
}

/** One stream: `headers`, its body, then `trailers` (or none). Its status, or 'reset'. */
function request(
  url: string,
  headers: OutgoingHttpHeaders,
  opts: { trailers?: OutgoingHttpHeaders; body?: string; reset?: () => Promise<unknown> },
): Promise<number | 'reset'> {
  return new Promise((resolve, reject) => {
    const session = connect(url);
    session.on('error', () => {});
    const timer = setTimeout(() => {
      session.destroy();
      reject(new Error('no answer in 10 s'));
    }, 10_000);
    const stream: ClientHttp2Stream = session.request(headers, {
      waitForTrailers: opts.trailers !== undefined,
    });
    stream.on('wantTrailers', () => stream.sendTrailers(opts.trailers!));
    stream.on('error', () => {});
    let status = 0;
    stream.on('response', (h) => {
      status = Number(h[':status']);
    });
    stream.resume();
    stream.on('close', () => {
      clearTimeout(timer);
      session.close();
      resolve(status === 0 ? 'reset' : status);
    });
    stream.end(opts.body);
    // RST_STREAM (CANCEL) once `reset` says so.
    opts.reset?.().then(() => stream.close(8), reject);
  });
}

const POST = { ':method': 'POST', ':path': '/raw', 'content-type': 'application/octet-stream' };

describe.each(FRAMEWORKS)('%s over HTTP/2', (framework) => {
  describe.each(MODES)('%s', (failAction) => {
    it('content-length: 0 on an open stream, then trailer fields: 400 before the handler (AK1)', async () => {
      const logs: IcapLog[] = [];
      const app = await appFor(framework, failAction, logs);
      const status = await request(
        app.url,
        { ...POST, 'content-length': '0' },
        { trailers: { 'x-payload': EICAR } },
      );
      expect(status).toBe(400);
      expect(app.seen).toHaveLength(0);
      expect(logs.at(-1)).toMatchObject({ action: 'ICAP_BLOCKED', error_code: 'ICAP_ERR_BAD_REQUEST' });
    });

    it('control: content-length: 0 on an open stream without trailers passes, with no ICAP exchange (campaign-am AM2)', async () => {
      const logs: IcapLog[] = [];
      const app = await appFor(framework, failAction, logs);
      const before = icap.requests.filter((r) => r.method === 'REQMOD').length;
      expect(await request(app.url, { ...POST, 'content-length': '0' }, {})).toBe(200);
      expect(app.seen).toHaveLength(1);
      expect(app.seen[0]?.raw?.length ?? 0).toBe(0);
      // As a request without a body: nothing to scan (a scanner down would not make it 503).
      expect(logs.at(-1)?.action).toBe('ICAP_DISABLED');
      expect(icap.requests.filter((r) => r.method === 'REQMOD').length).toBe(before);
    });

    it('a stream the client resets while the scan runs aborts the scan (AK2)', async () => {
      const logs: IcapLog[] = [];
      const app = await appFor(framework, failAction, logs);
      hang = true;
      const before = icap.requests.length;
      // Reset once the ICAP server holds the REQMOD: the scan is running (and would until
      // responseTimeout, 60 s by default).
      const held = () =>
        vi.waitFor(() => expect(icap.requests.length).toBeGreaterThan(before), {
          timeout: 5_000,
          interval: 10,
        });
      expect(await request(app.url, POST, { body: 'an upload', reset: held })).toBe('reset');
      await vi.waitFor(() => expect(logs).toHaveLength(1), { timeout: 5_000, interval: 20 });
      expect(logs[0]).toMatchObject({ action: 'ICAP_FAILED', error_code: 'ICAP_ERR_ABORTED' });
      expect(app.seen).toHaveLength(0);
    });
  });
});
