/**
 * campaign-bt BT2: an origin-form target `//user@host/raw#x`. parseurl (Express 4/5 routing and
 * req.path, Koa's ctx.path) falls back to Node's legacy url.parse() for a target holding `#`
 * (or a tab, space, U+00A0, U+FEFF), and url.parse() reads `//user@host` as an authority
 * (its hostPattern), so the path routed is `/raw`. The policy read only `//a@b/raw` and
 * `/a@b/raw` (the url.parse reading was made for absolute-form targets only), so an
 * enable-icap rule on `/raw` did not match and a negated skip ("skip all but /raw") skipped:
 * EICAR reached the /raw handler unscanned. Now paths.ts protocolRelativePath reads it too.
 */
import type { IcapLog, IcapProfile, PolicyRule } from '@icapkit/core';
import { eicar, type IcapTestServer, startIcapServer } from '@icapkit/testing';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { type App, type Framework, startApp } from '../conformance/apps.js';
import { rawExchange } from '../support/raw-http.js';

const FRAMEWORKS: Framework[] = [
  'express5',
  'express4',
  'koa3',
  'fastify',
  'hono',
  'web',
  'nest-express',
  'nest-fastify',
];
const E = eicar().toString('latin1');

let icap: IcapTestServer;
beforeAll(async () => {
  icap = await startIcapServer();
});
afterAll(() => icap?.close());

async function rawPost(app: App, target: string, body: Buffer) {
  const r = await rawExchange(
    app.url,
    [
      Buffer.concat([
        Buffer.from(
          `POST ${target} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n`,
        ),
        body,
      ]),
    ],
    { responses: 1, waitMs: 5000 },
  );
  return r.responses[0]?.status;
}

const RULES: Array<[string, PolicyRule[]]> = [
  [
    'enable-icap on /raw (the rest not scanned)',
    [{ name: 'scan-raw', match: { path: '/raw' }, action: 'enable-icap' }],
  ],
  [
    'skip all but /raw',
    [
      { name: 'skip-not-raw', match: { path: { prefix: ['/raw'], negate: true } }, action: 'skip' },
      { name: 'scan-rest', action: 'enable-icap' },
    ],
  ],
];

describe.each(FRAMEWORKS)('BT2 %s', (framework) => {
  let app: App | undefined;
  let logs: IcapLog[] = [];
  afterEach(async () => {
    await app?.close();
    app = undefined;
    logs = [];
    icap.reset();
  });
  async function start(rules: PolicyRule[]) {
    const profile: IcapProfile = {
      name: 'bt2',
      poolGroup: icap.url(),
      serviceUri: '/avscan',
      startupCheck: 'off',
      onLog: (l) => logs.push(l),
      rules,
    };
    app = await startApp(framework, profile);
    return app;
  }
  const delivered = (a: App) => a.seen.some((s) => s.raw?.toString('latin1') === E);

  describe.each(RULES)('%s', (_n, rules) => {
    it('control: POST /raw with EICAR is blocked', async () => {
      const a = await start(rules);
      expect(await rawPost(a, '/raw', eicar())).toBe(403);
      expect(delivered(a)).toBe(false);
    });
    it.each(['//a@b/raw#x', '//a@b/raw?#', '/\\a@b/raw#x'])(
      'POST %s (routed to /raw) with EICAR is not delivered unscanned',
      async (target) => {
        const a = await start(rules);
        const status = await rawPost(a, target, eicar());
        console.log(
          'BT2',
          framework,
          target,
          status,
          logs[0]?.action,
          logs[0]?.policy_reason,
          logs[0]?.rule_name,
        );
        expect({ status, delivered: delivered(a), action: logs[0]?.action }).toMatchObject({
          delivered: false,
        });
        expect(status).not.toBe(200);
      },
    );
  });

  it('a contains skip without slashes: POST //static@b/raw# with EICAR is not delivered unscanned', async () => {
    const a = await start([
      { name: 'skip-static', match: { path: { contains: ['static'] } }, action: 'skip' },
      { name: 'scan-rest', action: 'enable-icap' },
    ]);
    expect(await rawPost(a, '/raw', eicar())).toBe(403); // control
    const status = await rawPost(a, '//static@b/raw#', eicar());
    expect({ status, delivered: delivered(a) }).toMatchObject({ delivered: false });
  });
});
