/**
 * Campaign BJ: readings the policy must make as sent, not only normalised.
 * - BJ2: case folding is one more reading of a path, not applied to every reading. A
 *   case-insensitive skip rule naming `/RAW` skipped `/raw` (its lower-cased reading matched)
 *   although case-sensitive routers (Fastify, Koa's `ctx.path ===`, Hono) route `/RAW` and
 *   `/raw` apart; now a skip needs the as-sent spelling to match too, while an `enable-icap`
 *   rule still matches any case.
 * - BJ3: a host skip rule matched the normalised Host (case, port, trailing dot dropped), which
 *   find-my-way's host constraint and Express's `req.hostname` do not drop; now the Host is a
 *   reading as sent too, and a skip applies only to the host written as the rule names it.
 * - BJ4: `application/csp-report`, a default JSON type of koa-body, @koa/bodyparser and
 *   co-body, reads as `application/json` to contentType rules.
 * Each case sends EICAR and asserts what the application saw: the status, whether the handler
 * got the body, and the log's action.
 */
import type { IcapLog, IcapProfile, PolicyRule } from '@icapkit/core';
import { eicar, type IcapTestServer, startIcapServer } from '@icapkit/testing';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { type App, type AppOptions, type Framework, startApp } from '../conformance/apps.js';
import { send } from '../support/http-client.js';
import { rawExchange } from '../support/raw-http.js';

const FRAMEWORKS: Framework[] = ['express5', 'fastify', 'koa3'];
const E = eicar().toString('latin1');

let icap: IcapTestServer;
beforeAll(async () => {
  icap = await startIcapServer();
});
afterAll(() => icap?.close());

const octet = { 'content-type': 'application/octet-stream' };

describe.each(FRAMEWORKS)('%s', (framework) => {
  let app: App | undefined;
  let logs: IcapLog[] = [];
  afterEach(async () => {
    await app?.close();
    app = undefined;
    logs = [];
    icap.reset();
  });

  async function start(rules: PolicyRule[], options: AppOptions = {}) {
    const profile: IcapProfile = {
      name: 'readings-bj',
      poolGroup: icap.url(),
      serviceUri: '/avscan',
      startupCheck: 'off',
      onLog: (l) => logs.push(l),
      rules,
    };
    app = await startApp(framework, profile, options);
    return app;
  }

  /** Whether any handler got EICAR, raw or parsed. */
  const delivered = (a: App) =>
    a.seen.some((s) => s.raw?.toString('latin1') === E || JSON.stringify(s.parsed ?? null).includes('EICAR'));

  const skipThen = (path: NonNullable<PolicyRule['match']>['path']): PolicyRule[] => [
    { name: 'skip-upper', match: { path }, action: 'skip' },
    { name: 'scan-everything', action: 'enable-icap' },
  ];

  it('BM2: a skip prefix is a whole path segment: a skip on /ra does not skip /raw (scanned, 403)', async () => {
    const a = await start(skipThen({ prefix: ['/ra'] }));
    const r = await send(a.url, '/raw', { body: eicar(), headers: octet });
    expect(r.status).toBe(403);
    expect(delivered(a)).toBe(false);
    expect(logs[0]?.action).toBe('ICAP_BLOCKED');
  });

  it('BO1-BO3: a skip on a query value does not skip a query the parsers read apart: type[]=webhook, [type], ??type (scanned, 403; campaign-bp BP1 on Koa)', async () => {
    const a = await start([
      { name: 'skip-webhook', match: { query: [{ name: 'type', value: 'webhook' }] }, action: 'skip' },
      { name: 'scan-everything', action: 'enable-icap' },
    ]);
    for (const q of [
      'type[]=webhook',
      'type[x]=webhook',
      'type=webhook&[type]=upload',
      '?type=upload&type=webhook',
    ]) {
      const r = await send(a.url, `/raw?${q}`, { body: eicar(), headers: octet });
      expect(r.status, q).toBe(403);
    }
    expect(delivered(a)).toBe(false);
    const ok = await send(a.url, '/raw?type=webhook', { body: Buffer.from('hello'), headers: octet });
    expect(ok.status).toBe(200);
    expect(logs.at(-1)?.action).toBe('ICAP_DISABLED');
  });

  it('BM3: a skip on a header value skips it as sent, every value: GitHub, or a list of github and another, is scanned (403)', async () => {
    const a = await start([
      { name: 'skip-github', match: { headers: [{ name: 'X-Source', value: 'github' }] }, action: 'skip' },
      { name: 'scan-everything', action: 'enable-icap' },
    ]);
    for (const source of ['GitHub', 'github, other']) {
      const r = await send(a.url, '/raw', { body: eicar(), headers: { ...octet, 'x-source': source } });
      expect(r.status, source).toBe(403);
    }
    expect(delivered(a)).toBe(false);
    const ok = await send(a.url, '/raw', {
      body: Buffer.from('hello'),
      headers: { ...octet, 'x-source': 'github' },
    });
    expect(ok.status).toBe(200);
    expect(logs.at(-1)?.action).toBe('ICAP_DISABLED');
  });

  it.each([
    ['prefix', { prefix: ['/RAW'] }],
    ['exact', { exact: ['/Raw'] }],
    ['suffix', { suffix: ['/RAW'] }],
    ['contains', { contains: ['RAW'] }],
    ['regex', { regex: ['^/RAW$'] }],
    ['plain string', '/RAW'],
  ] as const)(
    'BJ2: a case-insensitive %s skip naming another case does not skip /raw: scanned (403)',
    async (_n, path) => {
      const a = await start(skipThen(path));
      const r = await send(a.url, '/raw', { body: eicar(), headers: octet });
      expect(r.status).toBe(403);
      expect(delivered(a)).toBe(false);
      expect(a.seen).toHaveLength(0);
      expect(logs[0]).toMatchObject({ action: 'ICAP_BLOCKED', rule_name: 'scan-everything' });
      // The scanning side stays case-insensitive: an enable-icap rule of the same match scans /raw.
      await a.close();
      app = undefined;
      logs = [];
      const b = await start([
        { name: 'scan-upper', match: { path }, action: 'enable-icap' },
        { name: 'skip-rest', action: 'skip' },
      ]);
      expect((await send(b.url, '/raw', { body: eicar(), headers: octet })).status).toBe(403);
      expect(b.seen).toHaveLength(0);
      expect(logs[0]).toMatchObject({ action: 'ICAP_BLOCKED', rule_name: 'scan-upper' });
    },
  );

  it('BJ2: a /RAW spelling of a skipped /raw is never skipped; the spelling as written still is', async () => {
    const a = await start(skipThen({ prefix: ['/raw'] }));
    const upper = await send(a.url, '/RAW', { body: eicar(), headers: octet });
    // Express routes /RAW to /raw (case-insensitive routing), Fastify and the Koa app to no
    // route: scanned before either, by the rule that scans the rest.
    expect(upper.status).toBe(403);
    expect(delivered(a)).toBe(false);
    expect(logs[0]).toMatchObject({ action: 'ICAP_BLOCKED', rule_name: 'scan-everything' });
    // Control: the spelling the rule names is skipped, on every framework.
    logs = [];
    const same = await send(a.url, '/raw', { body: 'plain', headers: octet });
    expect(same.status).toBe(200);
    expect(a.seen.at(-1)?.raw?.toString()).toBe('plain');
    expect(logs[0]).toMatchObject({ action: 'ICAP_DISABLED', rule_name: 'skip-upper' });
  });

  async function rawPost(a: App, host: string, body: Buffer) {
    const r = await rawExchange(
      a.url,
      [
        Buffer.concat([
          Buffer.from(
            `POST /raw HTTP/1.1\r\nHost: ${host}\r\nContent-Type: application/octet-stream\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n`,
          ),
          body,
        ]),
      ],
      { responses: 1, waitMs: 5000 },
    );
    return r.responses[0]?.status;
  }

  const skipStatic: PolicyRule[] = [
    { name: 'skip-static-host', match: { host: ['static.example.com'] }, action: 'skip' },
    { name: 'scan-everything', action: 'enable-icap' },
  ];

  it.each(['STATIC.example.com', 'static.example.com.', 'static.example.com:8080'])(
    'BJ3: Host %s, a spelling host routing may tell from the rule, is scanned (403)',
    async (host) => {
      const a = await start(skipStatic);
      expect(await rawPost(a, host, eicar())).toBe(403);
      expect(a.seen).toHaveLength(0);
      expect(logs[0]).toMatchObject({ action: 'ICAP_BLOCKED', rule_name: 'scan-everything' });
      // Control: Host static.example.com, as the rule names it, is skipped.
      expect(await rawPost(a, 'static.example.com', Buffer.from('plain'))).toBe(200);
      expect(a.seen[0]?.raw?.toString()).toBe('plain');
      expect(logs[1]).toMatchObject({ action: 'ICAP_DISABLED', rule_name: 'skip-static-host' });
    },
  );

  const scanJson: PolicyRule[] = [
    {
      name: 'scan-json',
      match: { method: ['POST'], contentType: ['application/json'] },
      action: 'enable-icap',
    },
  ];
  const parsers: Array<AppOptions['koaParser']> =
    framework === 'koa3' ? ['koa-body', '@koa/bodyparser'] : [undefined];
  it.each(parsers)(
    'BJ4: application/csp-report is scanned by a contentType application/json rule (%s)',
    async (koaParser) => {
      const a = await start(scanJson, { koaParser });
      const r = await send(a.url, '/json', {
        body: JSON.stringify({ doc: E }),
        headers: { 'content-type': 'application/csp-report' },
      });
      // Koa's parsers read it as JSON; Express's express.json() and Fastify have no parser
      // for it: scanned by the JSON rule all the same.
      expect(r.status).toBe(403);
      expect(delivered(a)).toBe(false);
      expect(logs[0]).toMatchObject({ action: 'ICAP_BLOCKED', rule_name: 'scan-json' });
    },
  );
});
