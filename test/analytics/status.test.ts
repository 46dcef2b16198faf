/**
 * The HTTP status of a request the middleware let through: the record is delivered when the
 * scan ends, before the application answers, so the adapters report the application's status
 * when its response finishes (`engine.responded`), and the record (and the analytics ring's
 * copy of it) carry it as `http_response_code`. In Express, Fastify and Koa.
 */
import { createLogAnalytics, type IcapLog, type LogAnalytics } from '@icapkit/core';
import { eicar, type IcapTestServer, startIcapServer } from '@icapkit/testing';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { type App, type Framework, startApp } from '../conformance/apps.js';
import { send } from '../support/http-client.js';

async function waitFor(cond: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

let icap: IcapTestServer;
beforeAll(async () => {
  icap = await startIcapServer({ recordBodies: false });
});
afterAll(() => icap?.close());

let app: App | undefined;
let analytics: LogAnalytics | undefined;
afterEach(async () => {
  analytics?.close();
  await app?.close();
  app = analytics = undefined;
});

const FRAMEWORKS: Framework[] = ['express5', 'fastify', 'koa3'];
const OCTETS = { 'content-type': 'application/octet-stream' };

describe.each(FRAMEWORKS)('%s: the HTTP status of a passed request', (framework) => {
  it('is on the record once the response finished, and in the analytics overview', async () => {
    const logs: IcapLog[] = [];
    app = await startApp(framework, {
      name: 'status',
      poolGroup: icap.url(),
      serviceUri: '/avscan',
      onLog: (l) => logs.push(l),
    });
    analytics = createLogAnalytics({ engine: app.engine, guard: () => true });
    expect((await send(app.url, '/raw', { body: Buffer.from('clean'), headers: OCTETS })).status).toBe(200);
    expect((await send(app.url, '/raw', { body: eicar(), headers: OCTETS })).status).toBe(403);
    // A route the app does not have: the middleware passed it, the application answered 404.
    expect((await send(app.url, '/nowhere', { body: Buffer.from('clean'), headers: OCTETS })).status).toBe(
      404,
    );
    await waitFor(
      () => logs.length === 3 && logs.every((l) => l.http_response_code !== undefined),
      5000,
      'the statuses',
    );
    expect(logs.map((l) => [l.action, l.http_response_code])).toEqual([
      ['ICAP_PASSED', 200],
      ['ICAP_BLOCKED', 403],
      ['ICAP_PASSED', 404],
    ]);
    const overview = analytics.overview();
    expect(overview.records.map((r) => [r.path, r.status])).toEqual([
      ['/nowhere', 404],
      ['/raw', 403],
      ['/raw', 200],
    ]);
    expect(overview.facets.status.top.map((v) => v.value).sort()).toEqual(['200', '403', '404']);
  });
});
