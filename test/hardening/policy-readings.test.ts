/**
 * The rules skip a request only when every reading an application could make of it matches the
 * skip (campaign-e, F1-F3 and F5): a method-override getter reading `_method` from a JSON body,
 * the host as `:authority`, a Host spelt so that frameworks cut it differently, or
 * X-Forwarded-Host, a Content-Type that formidable reads as a form, and an absolute-form
 * target older routers cut at its first '/'. Each bypass is now scanned (403 with EICAR) or
 * refused (400/415), on every framework; each control, a request the rules legitimately skip,
 * still reaches the handler unscanned.
 *
 * Campaign BJ (and BM, BO, BP after it): readings the policy must make as sent, not only normalised.
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
 * Each of those cases sends EICAR and asserts what the application saw: the status, whether
 * the handler got the body, and the log's action.
 */
import type { IcapLog, IcapProfile, PolicyRule } from '@icapkit/core';
import { eicar, type IcapTestServer, startIcapServer } from '@icapkit/testing';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { type App, type AppOptions, type Framework, startApp } from '../conformance/apps.js';
import { send } from '../support/http-client.js';
import { rawExchange } from '../support/raw-http.js';

const FRAMEWORKS: Framework[] = ['express5', 'express4', 'fastify', 'koa3', 'hono', 'web'];
/** The adapters that serve HTTP/2 in the conformance apps. */
const H2: ReadonlySet<Framework> = new Set(['fastify', 'koa3', 'hono', 'web']);
const E = eicar().toString('latin1');
const octet = { 'content-type': 'application/octet-stream' };

const skipStaticHost: PolicyRule[] = [
  { name: 'skip-static-host', match: { host: ['static.example.com'] }, action: 'skip' },
  { name: 'scan-everything', action: 'enable-icap' },
];

let icap: IcapTestServer;
beforeAll(async () => {
  icap = await startIcapServer();
});
afterAll(() => icap?.close());
const reqmods = () => icap.requests.filter((r) => r.method === 'REQMOD');

async function rawPost(app: App, target: string, head: string, body: Buffer, method = 'POST') {
  const r = await rawExchange(
    app.url,
    [
      Buffer.concat([
        Buffer.from(
          `${method} ${target} HTTP/1.1\r\n${head}Content-Length: ${body.length}\r\nConnection: close\r\n\r\n`,
        ),
        body,
      ]),
    ],
    { responses: 1, waitMs: 5000 },
  );
  return r.responses[0]?.status;
}

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
      name: 'readings',
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

  it('F1: a JSON body carrying _method is scanned under "scan PUT, skip the rest"; an octet-stream POST is skipped', async () => {
    const a = await start([
      { name: 'scan-put', match: { method: ['PUT'] }, action: 'enable-icap' },
      { name: 'skip-rest', action: 'skip' },
    ]);
    const json = await send(a.url, '/json', {
      body: JSON.stringify({ _method: 'PUT', file: eicar().toString('latin1') }),
      headers: { 'content-type': 'application/json' },
    });
    expect(json.status).toBe(403);
    expect(a.seen).toHaveLength(0);
    expect(logs[0]).toMatchObject({ action: 'ICAP_BLOCKED', rule_name: 'scan-put' });
    // Control: a body no parser turns into fields carries no _method: still skipped.
    const raw = await send(a.url, '/raw', {
      body: 'plain',
      headers: { 'content-type': 'application/octet-stream' },
    });
    expect(raw.status).toBe(200);
    expect(a.seen[0]?.raw?.toString()).toBe('plain');
    expect(logs[1]).toMatchObject({ action: 'ICAP_DISABLED', rule_name: 'skip-rest' });
  });

  it('BQ5: HEAD, which routers serve by GET routes (Express runs the GET handler, body and all), is scanned by an enable rule on GET', async () => {
    const a = await start([{ name: 'scan-get', match: { method: ['GET'] }, action: 'enable-icap' }]);
    const status = await rawPost(
      a,
      '/health',
      'Host: 127.0.0.1\r\nContent-Type: application/octet-stream\r\n',
      eicar(),
      'HEAD',
    );
    expect(a.seen).toHaveLength(0);
    if (framework === 'hono' || framework === 'web') {
      // @hono/node-server makes no Request of a HEAD with a body: 400 before any handler.
      expect(status).toBe(400);
    } else {
      expect(status).toBe(403);
      expect(logs[0]).toMatchObject({ action: 'ICAP_BLOCKED', rule_name: 'scan-get' });
    }
    logs = [];
    // Control: a POST is no GET: not scanned (no rule matched).
    expect(
      await rawPost(
        a,
        '/raw',
        'Host: 127.0.0.1\r\nContent-Type: application/octet-stream\r\n',
        Buffer.from('plain'),
      ),
    ).toBe(200);
    expect(logs[0]).toMatchObject({ action: 'ICAP_DISABLED', policy_reason: 'no-rule-matched' });
  });

  // Only where the test apps serve HTTP/2 (Express does not): no test at all elsewhere.
  if (H2.has(framework))
    it('F2a: HTTP/2 with :authority naming another host than Host is not skipped by a host rule', async () => {
      const a = await start(skipStaticHost, { http2: true });
      const ct = { 'content-type': 'application/octet-stream' };
      const mixed = await send(a.url, '/raw', {
        http2: true,
        body: eicar(),
        headers: { ':authority': 'api.example.com', host: 'static.example.com', ...ct },
      });
      // Scanned, then refused by admission ("Host and :authority differ"), or blocked.
      expect([400, 403]).toContain(mixed.status);
      expect(a.seen).toHaveLength(0);
      expect(logs[0]?.rule_name).toBe('scan-everything');
      // Control: both name the skipped host.
      const same = await send(a.url, '/raw', {
        http2: true,
        body: 'plain',
        headers: { ':authority': 'static.example.com', host: 'static.example.com', ...ct },
      });
      expect(same.status).toBe(200);
      expect(a.seen[0]?.raw?.toString()).toBe('plain');
      expect(logs[1]).toMatchObject({ action: 'ICAP_DISABLED', rule_name: 'skip-static-host' });
    });

  it.each([
    ['api.example.com:1@static.example.com', [400]],
    ['api.example.com,x@static.example.com', [400]],
    ['api.example.com,static.example.com', [400, 403]],
  ])('F2b: Host %s is never skipped by a host rule', async (host, statuses) => {
    const a = await start(skipStaticHost);
    const status = await rawPost(
      a,
      '/raw',
      `Host: ${host}\r\nContent-Type: application/octet-stream\r\n`,
      eicar(),
    );
    // A Host with '@' is refused (400: by admission, once scanned, or by the server itself);
    // a comma list is scanned (403) unless the server refuses it first.
    expect(statuses).toContain(status);
    expect(a.seen).toHaveLength(0);
    expect(logs.filter((l) => l.action === 'ICAP_DISABLED')).toEqual([]);
    if (logs.length > 0) expect(logs[0]?.rule_name).toBe('scan-everything');
  });

  // (With a port it is scanned since campaign-bj BJ3, below.)
  it('F2b control: Host static.example.com is still skipped', async () => {
    const a = await start(skipStaticHost);
    const status = await rawPost(
      a,
      '/raw',
      'Host: static.example.com\r\nContent-Type: application/octet-stream\r\n',
      Buffer.from('plain'),
    );
    expect(status).toBe(200);
    expect(a.seen[0]?.raw?.toString()).toBe('plain');
    expect(logs[0]).toMatchObject({ action: 'ICAP_DISABLED', rule_name: 'skip-static-host' });
    expect(reqmods()).toEqual([]);
  });

  it('F2c: X-Forwarded-Host (first or last entry) naming another host is scanned; naming the skipped one is skipped', async () => {
    const a = await start(skipStaticHost);
    const head = (xfh: string) =>
      `Host: static.example.com\r\nX-Forwarded-Host: ${xfh}\r\nContent-Type: application/octet-stream\r\n`;
    expect(await rawPost(a, '/raw', head('api.example.com'), eicar())).toBe(403);
    expect(await rawPost(a, '/raw', head('static.example.com, api.example.com'), eicar())).toBe(403);
    expect(a.seen).toHaveLength(0);
    expect(logs.map((l) => [l.action, l.rule_name])).toEqual([
      ['ICAP_BLOCKED', 'scan-everything'],
      ['ICAP_BLOCKED', 'scan-everything'],
    ]);
    // Control: the proxy names the skipped host.
    expect(await rawPost(a, '/raw', head('static.example.com'), Buffer.from('plain'))).toBe(200);
    expect(a.seen[0]?.raw?.toString()).toBe('plain');
    expect(logs[2]).toMatchObject({ action: 'ICAP_DISABLED', rule_name: 'skip-static-host' });
  });

  it.each([
    ['the README rules, text/plain naming multipart', 'readme', 'text/plain; boundary=XyZ123; x=multipart'],
    [
      'the README rules, multipart in a quoted parameter',
      'readme',
      'text/plain; x="multipart/form-data"; boundary=XyZ123',
    ],
    ['skip image/*, image/png naming multipart', 'images', 'image/png; x=multipart; boundary=XyZ123'],
  ])('F3: %s reads as a form: scanned, then refused (415)', async (_name, profile, ct) => {
    const a = await start(
      profile === 'readme'
        ? [
            { name: 'skip-health', match: { path: { exact: ['/health'] } }, action: 'skip' },
            {
              name: 'scan-uploads',
              match: {
                method: ['POST', 'PUT'],
                path: '/multipart',
                contentType: ['multipart/form-data', 'application/*'],
              },
              action: 'enable-icap',
            },
          ]
        : [
            { name: 'skip-media', match: { contentType: ['image/*', 'text/plain'] }, action: 'skip' },
            { name: 'scan-everything', action: 'enable-icap' },
          ],
    );
    const body = Buffer.concat([
      Buffer.from(
        '--XyZ123\r\nContent-Disposition: form-data; name="f"; filename="e.bin"\r\nContent-Type: application/octet-stream\r\n\r\n',
      ),
      eicar(),
      Buffer.from('\r\n--XyZ123--\r\n'),
    ]);
    const r = await send(a.url, '/multipart', { body, headers: { 'content-type': ct } });
    expect(r.status).toBe(415);
    expect(a.seen).toHaveLength(0);
    expect(logs[0]).toMatchObject({
      rule_name: profile === 'readme' ? 'scan-uploads' : 'scan-everything',
      http_response_code: 415,
    });
  });

  // (text/plain: a type every conformance app's /raw reads; Fastify has no parser for image/png.)
  it('F3 control: plain text/plain is still skipped by its rule', async () => {
    const a = await start([
      { name: 'skip-media', match: { contentType: ['image/*', 'text/plain'] }, action: 'skip' },
      { name: 'scan-everything', action: 'enable-icap' },
    ]);
    const r = await send(a.url, '/raw', { body: 'some text', headers: { 'content-type': 'text/plain' } });
    expect(r.status).toBe(200);
    expect(a.seen[0]?.raw?.toString()).toBe('some text');
    expect(logs[0]).toMatchObject({ action: 'ICAP_DISABLED', rule_name: 'skip-media' });
  });

  it('F5: POST http://h?x/raw, /raw to routers that cut the authority at the first /, is scanned', async () => {
    const a = await start([
      { name: 'skip-health', match: { path: { exact: ['/health'] } }, action: 'skip' },
      { name: 'scan-raw', match: { method: ['POST'], path: '/raw' }, action: 'enable-icap' },
    ]);
    const status = await rawPost(
      a,
      'http://h?x/raw',
      'Host: 127.0.0.1\r\nContent-Type: application/octet-stream\r\n',
      eicar(),
    );
    expect(a.seen).toHaveLength(0);
    if (framework === 'hono' || framework === 'web') {
      // @hono/node-server hands the application `new URL(target)`: path '/', the policy's own
      // reading, where nothing is routed (the adapter sees no absolute form to read otherwise).
      expect(status).toBe(404);
    } else if (framework === 'fastify') {
      // Fastify 5.12 (find-my-way 9.10) routes it to '/', which has no route: 404 before any hook.
      expect([403, 404]).toContain(status);
      expect(logs.filter((l) => l.action === 'ICAP_DISABLED')).toEqual([]);
    } else {
      expect(status).toBe(403);
      expect(logs[0]).toMatchObject({ action: 'ICAP_BLOCKED', rule_name: 'scan-raw' });
    }
    // Control: an absolute-form target both readings agree on, outside the rule, is not scanned.
    const other = await rawPost(
      a,
      'http://h/json',
      'Host: 127.0.0.1\r\nContent-Type: application/json\r\n',
      Buffer.from('{"a":1}'),
    );
    expect(other).toBe(200);
    expect(logs.at(-1)).toMatchObject({ action: 'ICAP_DISABLED', policy_reason: 'no-rule-matched' });
  });

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

  /** A POST /raw of an octet-stream body with this Host. */
  const postHost = (a: App, host: string, body: Buffer) =>
    rawPost(a, '/raw', `Host: ${host}\r\nContent-Type: application/octet-stream\r\n`, body);

  it.each(['STATIC.example.com', 'static.example.com.', 'static.example.com:8080'])(
    'BJ3: Host %s, a spelling host routing may tell from the rule, is scanned (403)',
    async (host) => {
      const a = await start(skipStaticHost);
      expect(await postHost(a, host, eicar())).toBe(403);
      expect(a.seen).toHaveLength(0);
      expect(logs[0]).toMatchObject({ action: 'ICAP_BLOCKED', rule_name: 'scan-everything' });
      // Control: Host static.example.com, as the rule names it, is skipped.
      expect(await postHost(a, 'static.example.com', Buffer.from('plain'))).toBe(200);
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
