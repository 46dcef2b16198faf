/**
 * The framework-free analytics handler over a real socket: it refuses to exist without a guard,
 * answers 401/403 when the guard says no, sends its security headers on every answer, serves a
 * page whose inline script and style are exactly what its CSP allows, and JSON in which
 * attacker-influenced values (file names, threat names) are data, never markup.
 */
import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  type AnalyticsGuard,
  createLogAnalytics,
  IcapError,
  isLoopbackAddress,
  isLoopbackHost,
  type LogAnalytics,
  loopbackOnly,
  MAX_TARGET_LENGTH,
  tokenGuard,
} from '@icapkit/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { send } from '../support/http-client.js';
import { entry, FakeEngine, record, serverStatus } from './records.js';

const HOSTILE_FILE = '<img src=x onerror=alert(1)>';
const HOSTILE_THREAT = `Trojan "double" 'single' </script><script>alert(2)</script>`;

interface Served {
  url: string;
  analytics: LogAnalytics;
  engine: FakeEngine;
  close(): Promise<void>;
}

const opened: Served[] = [];

async function serve(guard: AnalyticsGuard, options: { mount?: string } = {}): Promise<Served> {
  const engine = new FakeEngine();
  engine.health = [serverStatus({ server: 'icap://10.0.0.5:1344' })];
  const analytics = createLogAnalytics({ engine, guard, capacity: 50 });
  const mount = options.mount;
  const server: Server = createServer((req, res) => {
    if (mount === undefined) {
      void analytics.handle(req, res);
      return;
    }
    const url = req.url ?? '/';
    if (!url.startsWith(mount)) {
      res.writeHead(418).end();
      return;
    }
    void analytics.handle(req, res, url.slice(mount.length));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const served: Served = {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    analytics,
    engine,
    async close() {
      analytics.close();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  opened.push(served);
  return served;
}

afterAll(async () => {
  await Promise.all(opened.map((s) => s.close()));
});

function expectSecurityHeaders(headers: Record<string, string | string[] | undefined>): void {
  expect(headers['x-content-type-options']).toBe('nosniff');
  expect(headers['cache-control']).toBe('no-store');
  expect(headers['referrer-policy']).toBe('no-referrer');
  expect(headers['x-frame-options']).toBe('DENY');
  expect(headers['content-security-policy']).toMatch(/default-src 'none'/);
  expect(headers['content-security-policy']).toMatch(/frame-ancestors 'none'/);
}

describe('building the handler', () => {
  it('refuses to exist without a guard or an engine', () => {
    const engine = new FakeEngine();
    expect(() => createLogAnalytics({ engine } as never)).toThrow(/needs a guard/);
    expect(() => createLogAnalytics({ engine, guard: true } as never)).toThrow(IcapError);
    expect(() => createLogAnalytics({ guard: () => true } as never)).toThrow(/engine/);
    expect(() => createLogAnalytics({ engine: [], guard: () => true })).toThrow(/engine/);
    const ok = createLogAnalytics({ engine, guard: () => true });
    expect(engine.listeners.size).toBe(1);
    ok.close();
    ok.close();
    expect(engine.listeners.size).toBe(0);
  });

  it('takes an engine, a middleware that has one, or several', () => {
    const a = new FakeEngine('a');
    const b = new FakeEngine('b');
    const analytics = createLogAnalytics({ engine: [a, { engine: b }], guard: () => true });
    a.emit(record('ICAP_PASSED', { profile_name: 'a' }));
    b.emit(record('ICAP_BLOCKED', { profile_name: 'b' }));
    expect(analytics.ring.records().map((s) => s.log.profile_name)).toEqual(['b', 'a']);
    b.health = [serverStatus({ server: 'icap://b:1344' })];
    expect(analytics.overview().servers.find((s) => s.server === 'icap://b:1344')?.health).toMatchObject([
      { profile: 'b', state: 'up' },
    ]);
    analytics.close();
  });
});

describe('the guard', () => {
  it('403 when it says no, throws, or answers anything but true; the data stays out', async () => {
    const guards: AnalyticsGuard[] = [
      () => false,
      async () => false,
      () => {
        throw new Error('guard failed');
      },
      async () => {
        throw new Error('guard failed');
      },
      () => 'yes' as never,
      () => undefined as never,
      () => ({ status: 403 }),
    ];
    for (const guard of guards) {
      const s = await serve(guard);
      s.engine.emit(record('ICAP_BLOCKED', { file_names: ['secret-plan.pdf'] }));
      for (const path of ['/', '/api/overview', '/api/records/1']) {
        const res = await send(s.url, path);
        expect(res.status).toBe(403);
        expect(res.text).toBe('Forbidden\n');
        expectSecurityHeaders(res.headers);
      }
      await s.close();
    }
  });

  it('401 with the challenge the guard gives', async () => {
    const s = await serve(() => ({ status: 401, wwwAuthenticate: 'Basic realm="ops"' }));
    const res = await send(s.url, '/api/overview');
    expect(res.status).toBe(401);
    expect(res.headers['www-authenticate']).toBe('Basic realm="ops"');
    expectSecurityHeaders(res.headers);
    // A challenge that would break the header is left out.
    const bad = await serve(() => ({ status: 401, wwwAuthenticate: 'Basic\r\nSet-Cookie: x=1' }));
    const res2 = await send(bad.url, '/');
    expect(res2.status).toBe(401);
    expect(res2.headers['www-authenticate']).toBeUndefined();
    expect(res2.headers['set-cookie']).toBeUndefined();
  });

  it('sees the request (an async guard reading a header)', async () => {
    const seen: string[] = [];
    const s = await serve(async (req: IncomingMessage) => {
      seen.push(req.url ?? '');
      return req.headers['x-ops'] === 'yes';
    });
    expect((await send(s.url, '/api/overview')).status).toBe(403);
    expect((await send(s.url, '/api/overview', { headers: { 'x-ops': 'yes' } })).status).toBe(200);
    expect(seen).toEqual(['/api/overview', '/api/overview']);
  });

  it('loopbackOnly lets local connections through and nothing else', async () => {
    const s = await serve(loopbackOnly);
    expect((await send(s.url, '/')).status).toBe(200);
    const fake = (remoteAddress: string | undefined) =>
      ({ socket: { remoteAddress }, headers: { host: 'localhost:8080' } }) as unknown as IncomingMessage;
    for (const a of ['127.0.0.1', '127.8.9.10', '::1', '::ffff:127.0.0.1']) {
      expect(loopbackOnly(fake(a))).toBe(true);
      expect(isLoopbackAddress(a)).toBe(true);
    }
    for (const a of ['10.0.0.1', '192.0.2.7', '::ffff:10.0.0.1', 'fe80::1', '1.127.0.0', undefined]) {
      expect(loopbackOnly(fake(a))).toBe(false);
    }
  });

  it('loopbackOnly wants the request sent to a local name too (no DNS rebinding)', async () => {
    const s = await serve(loopbackOnly);
    const port = new URL(s.url).port;
    // A browser on this host after an attacker's name was pointed at 127.0.0.1.
    for (const host of [
      `rebind.attacker.example:${port}`,
      'rebind.attacker.example',
      `localhost.attacker.example:${port}`,
    ]) {
      const r = await send(s.url, '/api/overview', { headers: { host } });
      expect({ host, status: r.status }).toEqual({ host, status: 403 });
    }
    for (const host of [`localhost:${port}`, `127.0.0.1:${port}`, 'LOCALHOST', `127.1.2.3:${port}`]) {
      const r = await send(s.url, '/api/overview', { headers: { host } });
      expect({ host, status: r.status }).toEqual({ host, status: 200 });
    }
    for (const h of [
      'localhost',
      'localhost:1',
      '127.0.0.1',
      '127.0.0.1:65535',
      '[::1]',
      '[::1]:8080',
      ' Localhost ',
    ]) {
      expect({ h, ok: isLoopbackHost(h) }).toEqual({ h, ok: true });
    }
    for (const h of [
      undefined,
      '',
      'example.com',
      'localhost.example.com',
      'evil.localhost.example',
      '127.0.0.1.nip.io',
      '127.0.0.1:80:80',
      'localhost:x',
      '[::1].evil',
      '[::2]',
      '10.0.0.1',
      '0.0.0.0',
      'localhost@evil',
    ]) {
      expect({ h, ok: isLoopbackHost(h) }).toEqual({ h, ok: false });
    }
    // The peer must be local as well.
    const remote = {
      socket: { remoteAddress: '10.0.0.1' },
      headers: { host: 'localhost' },
    } as unknown as IncomingMessage;
    expect(loopbackOnly(remote)).toBe(false);
  });

  it('tokenGuard: Bearer or Basic with the token as password; otherwise 401 with a Basic challenge', async () => {
    const token = 'c0rrect-horse-battery-staple';
    const s = await serve(tokenGuard(token));
    const none = await send(s.url, '/');
    expect(none.status).toBe(401);
    expect(none.headers['www-authenticate']).toBe('Basic realm="icapkit log analytics", charset="UTF-8"');
    const basic = (user: string, password: string) =>
      `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;
    const tries: Array<[string, number]> = [
      [`Bearer ${token}`, 200],
      [`bearer ${token}`, 200],
      [basic('anyone', token), 200],
      [basic('', token), 200],
      [`Bearer ${token}x`, 401],
      [`Bearer ${token.slice(1)}`, 401],
      [basic(token, 'wrong'), 401],
      [`Bearer`, 401],
      [`Digest ${token}`, 401],
      [Buffer.from(token).toString('base64'), 401],
    ];
    for (const [authorization, status] of tries) {
      const res = await send(s.url, '/api/overview', { headers: { authorization } });
      expect([authorization, res.status]).toEqual([authorization, status]);
    }
    expect(() => tokenGuard('short')).toThrow(/at least 16/);
    expect(() => tokenGuard(token, { realm: 'a"b' })).toThrow(/realm/);
  });
});

describe('answers', () => {
  let s: Served;
  beforeAll(async () => {
    s = await serve(() => true);
    s.engine.emit(record('ICAP_PASSED', { file_names: ['notes.txt'] }));
    s.engine.emit(
      record('ICAP_BLOCKED', {
        file_names: [HOSTILE_FILE],
        request_logs: [
          entry({
            action: 'ICAP_BLOCKED',
            icap_response_code: 200,
            threat_id: HOSTILE_THREAT,
            file_name: HOSTILE_FILE,
            violations: [
              { file_name: HOSTILE_FILE, threat_name: HOSTILE_THREAT, resolution: 'ICAP_FILE_NOT_REPAIRED' },
            ],
            icap_headers_received_from_server: `X-Infection-Found: Type=0; Resolution=2; Threat=${HOSTILE_THREAT};\r\n`,
          }),
        ],
      }),
    );
  });

  it('the page: HTML whose inline script and style are exactly the ones its CSP allows', async () => {
    const res = await send(s.url, '/');
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toBe('text/html; charset=utf-8');
    expect(Number(res.headers['content-length'])).toBe(res.body.length);
    expectSecurityHeaders(res.headers);
    const csp = String(res.headers['content-security-policy']);
    expect(csp).not.toMatch(/unsafe-inline|unsafe-eval|\*/);
    expect(csp).toMatch(/connect-src 'self'/);
    expect(csp).toMatch(/require-trusted-types-for 'script'/);
    const scripts = [...res.text.matchAll(/<script>([\s\S]*?)<\/script>/g)].map((m) => m[1]!);
    const styles = [...res.text.matchAll(/<style>([\s\S]*?)<\/style>/g)].map((m) => m[1]!);
    expect(scripts).toHaveLength(1);
    expect(styles).toHaveLength(1);
    const hash = (t: string) => `'sha256-${createHash('sha256').update(t).digest('base64')}'`;
    expect(csp).toContain(`script-src ${hash(scripts[0]!)}`);
    expect(csp).toContain(`style-src ${hash(styles[0]!)}`);
    // Self-contained: nothing is loaded from anywhere.
    expect(res.text).not.toMatch(/<(link|img|iframe|object|embed)\b|\bsrc=/i);
    expect(res.text).not.toMatch(/@import|url\(/); // CSS (the script's `new URL(` is not)
    // The page holds no data: the records arrive as JSON.
    expect(res.text).not.toContain('notes.txt');
    expect(res.text).not.toContain('onerror=alert');
    expect(res.text).not.toMatch(/innerHTML|outerHTML|insertAdjacentHTML|document\.write/);
  });

  it('is served below a mount point (with or without the slash) and nowhere else', async () => {
    const m = await serve(() => true, { mount: '/ops/icap' });
    expect((await send(m.url, '/ops/icap')).status).toBe(200);
    expect((await send(m.url, '/ops/icap/')).status).toBe(200);
    expect((await send(m.url, '/ops/icap/?threat=x')).status).toBe(200);
    expect((await send(m.url, '/ops/icap/api/overview')).status).toBe(200);
    expect((await send(m.url, '/ops/icap/index.html')).status).toBe(404);
    expect((await send(m.url, '/ops/icap/api/records/abc')).status).toBe(404);
    expect(m.analytics.owns('/')).toBe(true);
    expect(m.analytics.owns('?x=1')).toBe(true);
    expect(m.analytics.owns('/api/records/12')).toBe(true);
    expect(m.analytics.owns('/api/records/')).toBe(false);
    expect(m.analytics.owns('/other')).toBe(false);
  });

  it('the overview: JSON of the counts, facets, servers, pools, latency and records', async () => {
    const res = await send(s.url, '/api/overview');
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toBe('application/json; charset=utf-8');
    expectSecurityHeaders(res.headers);
    expect(res.headers['content-security-policy']).toBe("default-src 'none'; frame-ancestors 'none'");
    const o = JSON.parse(res.text);
    expect(Object.keys(o).sort()).toEqual(
      [
        'actions',
        'capacity',
        'facets',
        'filters',
        'generatedAt',
        'latency',
        'matched',
        'pageViews',
        'pools',
        'records',
        'servers',
        'significant',
        'significantRecords',
        'stored',
      ].sort(),
    );
    expect(o).toMatchObject({
      capacity: 50,
      stored: 2,
      matched: 2,
      filters: [],
      significant: 1,
      actions: { ICAP_PASSED: 1, ICAP_BLOCKED: 1, ICAP_MODIFIED: 0, ICAP_FAILED: 0, ICAP_DISABLED: 0 },
    });
    expect(o.facets.threat.top).toEqual([{ value: HOSTILE_THREAT, count: 1 }]);
    expect(o.servers).toMatchObject([
      { server: 'icap://10.0.0.5:1344', transactions: 2, health: [{ profile: 'uploads', state: 'up' }] },
    ]);
    expect(o.pools).toMatchObject([{ pool: 'primary', up: 1, transactions: 2 }]);
    expect(o.latency.buckets).toHaveLength(12);
    expect(o.records).toHaveLength(2);
    expect(o.records[0]).toMatchObject({
      id: 2,
      action: 'ICAP_BLOCKED',
      files: [HOSTILE_FILE],
      threats: [HOSTILE_THREAT],
      status: 403,
    });
  });

  it('hostile values travel as JSON strings, escaped so they are inert even as HTML', async () => {
    const res = await send(s.url, `/api/overview?file=${encodeURIComponent(HOSTILE_FILE)}`);
    expect(res.status).toBe(200);
    expect(res.text).not.toMatch(/[<>]/);
    expect(res.text).toContain('\\u003cimg src=x onerror=alert(1)\\u003e');
    const o = JSON.parse(res.text);
    expect(o.matched).toBe(1);
    expect(o.filters).toEqual([{ key: 'file', value: HOSTILE_FILE }]);
    expect(o.records[0].threats).toEqual([HOSTILE_THREAT]);
    const one = await send(s.url, '/api/records/2');
    expect(one.text).not.toMatch(/[<>]/);
    const rec = JSON.parse(one.text);
    expect(rec.log.request_logs[0].violations[0]).toEqual({
      file_name: HOSTILE_FILE,
      threat_name: HOSTILE_THREAT,
      resolution: 'ICAP_FILE_NOT_REPAIRED',
    });
  });

  it('filters narrow the list; values of one dimension widen it', async () => {
    const q = async (query: string) => JSON.parse((await send(s.url, `/api/overview?${query}`)).text);
    expect((await q('action=ICAP_BLOCKED')).matched).toBe(1);
    expect((await q('action=ICAP_BLOCKED&action=ICAP_PASSED')).matched).toBe(2);
    expect((await q('action=ICAP_PASSED&file=notes.txt')).matched).toBe(1);
    expect((await q('action=ICAP_BLOCKED&file=notes.txt')).matched).toBe(0);
    expect((await q('limit=1')).records).toHaveLength(1);
  });

  it('one whole record by id; 404 once it is not held', async () => {
    const res = await send(s.url, '/api/records/1');
    expect(res.status).toBe(200);
    const rec = JSON.parse(res.text);
    expect(rec).toMatchObject({
      id: 1,
      truncated: false,
      log: { action: 'ICAP_PASSED', file_names: ['notes.txt'] },
    });
    expect(rec.log.request_logs[0].icap_headers_sent_to_server).toContain('Encapsulated: req-hdr=0');
    const missing = await send(s.url, '/api/records/999');
    expect(missing.status).toBe(404);
    expect(JSON.parse(missing.text)).toEqual({ error: 'no such record (it may have left the ring)' });
  });

  it('only GET and HEAD; bounded queries and targets', async () => {
    for (const method of ['POST', 'PUT', 'DELETE', 'OPTIONS', 'PATCH']) {
      const res = await send(s.url, '/api/overview', { method, body: method === 'POST' ? 'x' : undefined });
      expect(res.status).toBe(405);
      expect(res.headers.allow).toBe('GET, HEAD');
      expectSecurityHeaders(res.headers);
    }
    const head = await send(s.url, '/api/overview', { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(head.body).toHaveLength(0);
    expect(Number(head.headers['content-length'])).toBeGreaterThan(100);
    const bad = await send(s.url, '/api/overview?sort=desc');
    expect(bad.status).toBe(400);
    expect(JSON.parse(bad.text)).toEqual({ error: 'unknown filter "sort"' });
    expect((await send(s.url, `/api/overview?${'path=/x&'.repeat(40)}`)).status).toBe(400);
    expect((await send(s.url, `/api/overview?limit=100000`)).status).toBe(400);
    const long = await send(s.url, `/api/overview?path=${'a'.repeat(MAX_TARGET_LENGTH)}`);
    expect(long.status).toBe(414);
    expectSecurityHeaders(long.headers);
  });
});
