/**
 * Bypass attempts that must not slip an unscanned body past the middleware, in each framework:
 * compressed bodies, path spellings against skip rules, method overrides, duplicate
 * Content-Type fields and boundary parameters, framing tricks (Transfer-Encoding with
 * Content-Length, transfer codings other than chunked). And the other direction: what an ICAP
 * server sends back (a modified request, a relayed block page) cannot inject hop-by-hop
 * headers, wrong lengths or cookies into what the application or the client gets.
 */
import { gzipSync } from 'node:zlib';
import type { IcapLog, IcapProfile } from '@icapkit/core';
import { eicar, type IcapTestServer, startIcapServer } from '@icapkit/testing';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { type App, type Framework, startApp } from '../conformance/apps.js';
import { send } from '../support/http-client.js';
import { rawExchange } from '../support/raw-http.js';

const FRAMEWORKS: Framework[] = [
  'express5',
  'fastify',
  'koa3',
  // hono and web: the Web-standard adapters (issue 16), on @hono/node-server
  'hono',
  'web',
  // ---- NestJS (issue 16) ----
  'nest-express',
  'nest-fastify',
  // ---- end NestJS ----
];

let icap: IcapTestServer;
beforeAll(async () => {
  icap = await startIcapServer({ recordBodies: true });
});
afterAll(() => icap?.close());

function rawRequest(app: App, head: string, body: Buffer | string = '') {
  return rawExchange(app.url, [Buffer.concat([Buffer.from(head), Buffer.from(body)])], {
    responses: 1,
    waitMs: 5000,
  });
}

describe.each(FRAMEWORKS)('%s', (framework) => {
  let app: App | undefined;
  let logs: IcapLog[] = [];
  afterEach(async () => {
    await app?.close();
    app = undefined;
    logs = [];
    icap.setScript(undefined);
    icap.reset();
  });

  async function start(profile: Partial<IcapProfile> = {}) {
    app = await startApp(framework, {
      name: 'bypass',
      poolGroup: icap.url(),
      serviceUri: '/avscan',
      onLog: (l) => logs.push(l),
      ...profile,
    });
    return app;
  }

  it('gzip: EICAR inside a compressed body is found; a clean one reaches the handler as its parser reads it', async () => {
    const a = await start();
    const blocked = await send(a.url, '/raw', {
      body: gzipSync(Buffer.concat([Buffer.from('report '), eicar()])),
      headers: { 'content-type': 'application/octet-stream', 'content-encoding': 'gzip' },
    });
    expect(blocked.status).toBe(403);
    expect(a.seen).toHaveLength(0);
    const text = Buffer.from('a clean report');
    const wire = gzipSync(text);
    const clean = await send(a.url, '/raw', {
      body: wire,
      headers: { 'content-type': 'application/octet-stream', 'content-encoding': 'gzip' },
    });
    expect(clean.status).toBe(200);
    // express.raw inflates; Fastify's buffer parser and Koa's raw stream hand over the bytes as sent.
    expect(a.seen[0]!.raw?.equals(framework === 'express5' ? text : wire)).toBe(true);
    // Scanned decoded (the text), then as sent (the gzip bytes, which raw readers get).
    const reqmods = icap.requests.filter((r) => r.method === 'REQMOD');
    expect(reqmods.at(-2)!.body?.equals(text)).toBe(true);
    expect(reqmods.at(-1)!.body?.equals(wire)).toBe(true);
  });

  const skipPublic: Partial<IcapProfile> = {
    rules: [
      { name: 'skip-public', match: { path: { prefix: ['/public/'] } }, action: 'skip' },
      { name: 'scan-everything', action: 'enable-icap' },
    ],
  };

  it.each([
    '/public/../raw',
    '/public/%2e%2e/raw',
    '/public/%2E%2E%2Fraw',
    '/public/%252e%252e/raw',
    '/public/..%5craw',
    '/public\\..\\raw',
    '/public;x=1/../raw',
    '//public/../raw',
  ])('a path spelt %s cannot use the skip rule to reach /raw unscanned', async (path) => {
    const a = await start(skipPublic);
    const body = eicar();
    const r = await rawRequest(
      a,
      `POST ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\nContent-Length: ${body.length}\r\n\r\n`,
      body,
    );
    // Scanned and blocked (whatever the framework would have routed it to), or refused by the
    // framework's own URL parsing, or (Fastify) routed nowhere; never handled, never passed.
    expect([400, 403, 404]).toContain(r.responses[0]?.status);
    expect(a.seen).toHaveLength(0);
    if (r.responses[0]?.status === 403) expect(logs[0]?.rule_name).toBe('scan-everything');
    else expect(logs.filter((l) => l.action !== 'ICAP_BLOCKED')).toEqual([]);
    // @hono/node-server refuses a backslash in the path (400) before any middleware runs.
    const serverRefuses = (framework === 'hono' || framework === 'web') && path.includes('\\');
    if (framework !== 'fastify' && !serverRefuses) expect(r.responses[0]?.status).toBe(403);
  });

  it('the skip rule still works for what it names (the rules are not simply ignored)', async () => {
    const a = await start({
      rules: [
        { name: 'skip-raw', match: { path: { exact: ['/raw'] } }, action: 'skip' },
        { name: 'scan-everything', action: 'enable-icap' },
      ],
    });
    const r = await send(a.url, '/raw', {
      body: 'plain text',
      headers: { 'content-type': 'application/octet-stream' },
    });
    expect(r.status).toBe(200);
    expect(a.seen[0]!.raw?.toString()).toBe('plain text');
    expect(logs[0]).toMatchObject({ action: 'ICAP_DISABLED', rule_name: 'skip-raw' });
  });

  it('a method override header cannot turn an upload into a skipped GET', async () => {
    const a = await start({
      rules: [
        { name: 'skip-reads', match: { method: ['GET', 'HEAD'] }, action: 'skip' },
        { name: 'scan-writes', action: 'enable-icap' },
      ],
    });
    for (const header of ['x-http-method-override', 'x-http-method', 'x-method-override']) {
      const r = await send(a.url, '/raw', {
        body: eicar(),
        headers: { 'content-type': 'application/octet-stream', [header]: 'GET' },
      });
      expect(r.status, header).toBe(403);
    }
    expect(a.seen).toHaveLength(0);
  });

  it('a second Content-Type field cannot steer the request into a skip rule', async () => {
    const a = await start({
      rules: [
        { name: 'skip-text', match: { contentType: ['text/plain'] }, action: 'skip' },
        { name: 'scan-everything', action: 'enable-icap' },
      ],
    });
    const body = eicar();
    const r = await rawRequest(
      a,
      `POST /raw HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\nContent-Type: text/plain\r\nContent-Length: ${body.length}\r\n\r\n`,
      body,
    );
    expect([400, 403]).toContain(r.responses[0]?.status);
    expect(a.seen).toHaveLength(0);
  });

  it('a multipart body with two boundary parameters is refused, not parsed one way and scanned another', async () => {
    const a = await start();
    const body =
      '--A\r\nContent-Disposition: form-data; name="f"; filename="a.txt"\r\n\r\nclean\r\n--A--\r\n' +
      `--B\r\nContent-Disposition: form-data; name="f"; filename="e.com"\r\n\r\n${eicar().toString('latin1')}\r\n--B--\r\n`;
    const r = await send(a.url, '/multipart', {
      body,
      headers: { 'content-type': 'multipart/form-data; boundary=A; boundary=B' },
    });
    expect(r.status).toBe(400);
    expect(a.seen).toHaveLength(0);
  });

  it('Transfer-Encoding together with Content-Length is refused before anything reads the body', async () => {
    const a = await start();
    const chunked = `${eicar().length.toString(16)}\r\n${eicar().toString('latin1')}\r\n0\r\n\r\n`;
    const r = await rawRequest(
      a,
      'POST /raw HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\n' +
        'Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n',
      chunked,
    );
    expect(r.responses[0]?.status).toBe(400);
    expect(a.seen).toHaveLength(0);
  });

  it('a transfer coding other than chunked (gzip, chunked) is refused with 501, never passed as it is', async () => {
    for (const failAction of ['fail-closed', 'fail-open'] as const) {
      const a = await start({ failAction, bufferSizeExceedAction: failAction });
      const payload = gzipSync(eicar());
      const chunked = `${payload.length.toString(16)}\r\n${payload.toString('latin1')}\r\n0\r\n\r\n`;
      const r = await rawRequest(
        a,
        'POST /raw HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\n' +
          'Transfer-Encoding: gzip, chunked\r\n\r\n',
        Buffer.from(chunked, 'latin1'),
      );
      expect(r.responses[0]?.status).toBe(501);
      expect(a.seen).toHaveLength(0);
      expect(logs.at(-1)).toMatchObject({ action: 'ICAP_BLOCKED', error_code: 'ICAP_ERR_CONTENT_ENCODING' });
      await a.close();
      app = undefined;
    }
  });

  it('a modified request cannot smuggle hop-by-hop headers, a wrong length or a Host into the application', async () => {
    const a = await start();
    const body = 'rewritten body';
    const head =
      'POST /raw HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\n' +
      'Content-Length: 3\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive, X-Secret\r\n' +
      'X-Secret: should-not-pass\r\nKeep-Alive: timeout=5\r\nUpgrade: websocket\r\nTE: trailers\r\n' +
      'X-Kept: yes\r\n\r\n';
    icap.setScript((r) =>
      r.method === 'OPTIONS'
        ? undefined
        : {
            kind: 'raw',
            response:
              `ICAP/1.0 200 OK\r\nISTag: "T1"\r\nEncapsulated: req-hdr=0, req-body=${Buffer.byteLength(head)}\r\n\r\n` +
              `${head}${body.length.toString(16)}\r\n${body}\r\n0\r\n\r\n`,
          },
    );
    const r = await send(a.url, '/raw', {
      body: 'original',
      headers: { 'content-type': 'application/octet-stream' },
    });
    expect(r.status).toBe(200);
    const seen = a.seen[0]!;
    expect(seen.raw?.toString()).toBe(body);
    expect(seen.headers['content-length']).toBe(String(body.length));
    expect(seen.headers['x-kept']).toBe('yes');
    for (const h of ['transfer-encoding', 'x-secret', 'keep-alive', 'upgrade', 'te']) {
      expect(seen.headers[h], h).toBeUndefined();
    }
    expect(logs[0]!.action).toBe('ICAP_MODIFIED');
  });

  /** An upload the server blocks with its own page (`http`, its head; `page`, its body). */
  async function blockedWithPage(a: { url: string }, http: string, page: string) {
    icap.setScript((r) =>
      r.method === 'OPTIONS'
        ? undefined
        : {
            kind: 'raw',
            response:
              `ICAP/1.0 200 OK\r\nISTag: "T1"\r\nX-Infection-Found: Type=1; Resolution=2; Threat=Policy;\r\n` +
              `Encapsulated: res-hdr=0, res-body=${Buffer.byteLength(http)}\r\n\r\n` +
              `${http}${page.length.toString(16)}\r\n${page}\r\n0\r\n\r\n`,
          },
    );
    return send(a.url, '/raw', { body: 'x', headers: { 'content-type': 'application/octet-stream' } });
  }

  it('a relayed block page without a Content-Type, or with one that is not text, goes out as text/plain (campaign-bl BL1)', async () => {
    const a = await start({ blockResponse: 'relay' });
    const page = '<script>document.title = "ran"</script>';
    for (const type of ['', 'Content-Type: application/xhtml+xml\r\n', 'Content-Type: image/svg+xml\r\n']) {
      const http = `HTTP/1.1 403 Forbidden\r\n${type}Content-Length: ${page.length}\r\n\r\n`;
      const r = await blockedWithPage(a, http, page);
      expect(r.status, type).toBe(403);
      expect(r.headers['content-type'], type).toBe('text/plain; charset=utf-8');
      expect(r.headers['x-content-type-options'], type).toBe('nosniff');
    }
    expect(a.seen).toHaveLength(0);
  });

  it("relayed block pages: only Content-Type (text), Content-Language and Retry-After of the server's go out, sandboxed and never sniffed; a 2xx page is still a 403 (campaign-bl BL1)", async () => {
    const a = await start({ blockResponse: 'relay' });
    const page = '<p>blocked by policy</p>';
    const http =
      'HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 99999\r\nTransfer-Encoding: chunked\r\n' +
      'Set-Cookie: session=attacker\r\nConnection: close, X-Internal\r\nX-Internal: 10.0.0.5\r\n' +
      'X-Block-Reason: policy\r\nContent-Language: en\r\nRetry-After: 120\r\nLocation: https://attacker.invalid/\r\n' +
      'WWW-Authenticate: Basic realm="re-enter your password"\r\nClear-Site-Data: "cookies"\r\n' +
      'Strict-Transport-Security: max-age=0\r\nNEL: {"report_to":"a","max_age":31536000}\r\n' +
      'Access-Control-Allow-Origin: https://attacker.invalid\r\nContent-Disposition: attachment; filename="a.exe"\r\n' +
      'X-Accel-Redirect: /internal/secret\r\nX-Odd: a\x01b\r\n\r\n';
    const r = await blockedWithPage(a, http, page);
    expect(r.status).toBe(403);
    expect(r.text).toBe(page);
    expect(r.headers['content-length']).toBe(String(page.length));
    expect(r.headers['content-type']).toBe('text/html');
    expect(r.headers['content-language']).toBe('en');
    expect(r.headers['retry-after']).toBe('120');
    expect(r.headers['x-content-type-options']).toBe('nosniff');
    expect(r.headers['content-security-policy']).toMatch(/^sandbox; default-src 'none'/);
    for (const h of [
      'set-cookie',
      'x-internal',
      'transfer-encoding',
      'x-block-reason',
      'location',
      'www-authenticate',
      'clear-site-data',
      'strict-transport-security',
      'nel',
      'access-control-allow-origin',
      'content-disposition',
      'x-accel-redirect',
      'x-odd',
    ])
      expect(r.headers[h], h).toBeUndefined();
    expect(a.seen).toHaveLength(0);
  });
});
