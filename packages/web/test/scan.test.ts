/**
 * @icapkit/web driven directly with Web Requests (no HTTP server): what the approved request
 * carries, what is refused, the lazy and bounded reading of the body, aborts, and that what the
 * scan holds is freed. The same scenarios over real sockets: test/conformance (targets hono, web).
 */
import * as dc from 'node:diagnostics_channel';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { IcapLog, IcapProfile } from '@icapkit/core';
import { EICAR_NAME, eicar, type IcapTestServer, startIcapServer } from '@icapkit/testing';
import { createScanner, scan, type WebScanner, withIcap } from '@icapkit/web';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { type App, startApp } from '../../../test/conformance/apps.js';
import { leftoverSpoolFiles } from '../../../test/support/leaks.js';

let server: IcapTestServer;
const logs: IcapLog[] = [];
const scanners: WebScanner[] = [];

beforeAll(async () => {
  server = await startIcapServer({ rewrite: { from: 'EVIL', to: 'GOOD-LONGER' } });
});
afterAll(async () => {
  await server?.close();
});
afterEach(async () => {
  await Promise.all(scanners.splice(0).map((s) => s.close()));
  logs.length = 0;
});

function profile(extra: Partial<IcapProfile> = {}): IcapProfile {
  return {
    name: 'web',
    poolGroup: server.url(),
    serviceUri: '/avscan',
    onLog: (l) => logs.push(l),
    ...extra,
  };
}

function scanner(extra: Partial<IcapProfile> = {}): WebScanner {
  const s = createScanner(profile(extra));
  scanners.push(s);
  return s;
}

function post(body: BodyInit | null, headers: Record<string, string> = {}, url = 'http://localhost/upload') {
  return new Request(url, { method: 'POST', body, headers, duplex: 'half' } as RequestInit);
}

function text(n: number, seed = 0): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = 0x61 + ((i + seed) % 26);
  return b;
}

/** A body stream that yields `chunk` up to `total` bytes, counting what was pulled. */
function counted(total: number, chunk = 16 * 1024) {
  const state = { pulled: 0, cancelled: false };
  const stream = new ReadableStream<Uint8Array>({
    pull(controller) {
      if (state.pulled >= total) {
        controller.close();
        return;
      }
      const n = Math.min(chunk, total - state.pulled);
      state.pulled += n;
      controller.enqueue(new Uint8Array(n).fill(0x61));
    },
    cancel() {
      state.cancelled = true;
    },
  });
  return { stream, state };
}

async function until(cond: () => boolean, ms = 5000): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (!cond() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  return cond();
}

describe('scan(request, …)', () => {
  it('a clean body: a new Request with exactly the bytes sent, its Content-Length, ICAP_PASSED', async () => {
    const body = text(300_000, 3);
    const r = await scanner().scan(post(body, { 'content-type': 'application/octet-stream' }));
    expect(r.response).toBeUndefined();
    const req = r.request!;
    expect(req.method).toBe('POST');
    expect(req.url).toBe('http://localhost/upload');
    expect(req.headers.get('content-length')).toBe(String(body.length));
    expect(req.headers.get('transfer-encoding')).toBeNull();
    expect(Buffer.from(await req.arrayBuffer()).equals(Buffer.from(body))).toBe(true);
    expect(r.icap.action).toBe('ICAP_PASSED');
    expect(logs.map((l) => l.action)).toEqual(['ICAP_PASSED']);
    // The ICAP server got the same bytes, framed as a chunked upload (a stream has no length).
    const reqmod = server.requests.filter((x) => x.method === 'REQMOD').at(-1)!;
    expect(reqmod.body?.equals(Buffer.from(body))).toBe(true);
  });

  it('EICAR: a 403 Response (HTML, or problem+json by Accept) naming the threat; blocked in the log', async () => {
    const s = scanner();
    const html = await s.scan(post(eicar()));
    expect(html.request).toBeUndefined();
    expect(html.response!.status).toBe(403);
    expect(html.response!.headers.get('content-type')).toMatch(/^text\/html/);
    expect(await html.response!.text()).toContain(EICAR_NAME);
    const json = await s.scan(post(eicar(), { accept: 'application/json' }));
    expect(json.response!.status).toBe(403);
    expect(await json.response!.json()).toMatchObject({ status: 403, threat: EICAR_NAME });
    expect(logs.map((l) => [l.action, l.request_logs.at(-1)?.threat_id])).toEqual([
      ['ICAP_BLOCKED', EICAR_NAME],
      ['ICAP_BLOCKED', EICAR_NAME],
    ]);
  });

  it("a Content-Length that is not the body stream's length: the stream is scanned and delivered (campaign-ap AP5)", async () => {
    const s = scanner({ failAction: 'fail-closed' });
    // A Request can say 0 (or any length) over a stream of other bytes; the application reads the stream.
    for (const length of ['0', '5', '100']) {
      const blocked = await s.scan(post(eicar(), { 'content-length': length }));
      expect(blocked.response?.status, length).toBe(403);
      const clean = Buffer.from('x'.repeat(68));
      const r = await s.scan(post(clean, { 'content-length': length }));
      expect(Buffer.from(await r.request!.arrayBuffer()).equals(clean), length).toBe(true);
      const reqmod = server.requests.filter((x) => x.method === 'REQMOD').at(-1)!;
      expect(reqmod.body?.equals(clean), length).toBe(true);
      // The ICAP server reads the request it is sent as framed by its body, not by the stale length.
      // (A body held whole before the exchange is sent with its own length.)
      const framing = reqmod.httpRequest?.headers;
      expect(framing?.get('content-length') ?? framing?.get('transfer-encoding'), length).toMatch(
        /^(68|chunked)$/,
      );
    }
    expect(logs.map((l) => l.action)).toEqual(Array(3).fill(['ICAP_BLOCKED', 'ICAP_PASSED']).flat());
  });

  it('a request the ICAP server modified: its new body and Content-Length, ICAP_MODIFIED', async () => {
    const r = await scanner({ serviceUri: '/modify' }).scan(
      post(JSON.stringify({ note: 'an EVIL word' }), { 'content-type': 'application/json' }),
    );
    const req = r.request!;
    const expected = JSON.stringify({ note: 'an GOOD-LONGER word' });
    expect(req.headers.get('content-length')).toBe(String(Buffer.byteLength(expected)));
    expect(await req.text()).toBe(expected);
    expect(r.icap.action).toBe('ICAP_MODIFIED');
  });

  it('a request the rules do not select is handed back as it is: same object, body never opened', async () => {
    const s = scanner({
      rules: [{ name: 'only-api', match: { path: { prefix: ['/api/'] } }, action: 'enable-icap' }],
    });
    const original = post(text(1000), { 'content-type': 'application/octet-stream' });
    const r = await s.scan(original);
    expect(r.request).toBe(original);
    expect(original.bodyUsed).toBe(false);
    expect((await original.arrayBuffer()).byteLength).toBe(1000);
    expect(r.icap.action).toBe('ICAP_DISABLED');
    const get = new Request('http://localhost/api/x');
    expect((await s.scan(get)).request).toBe(get);
  });

  it('a Host header naming another host than the URL is refused with 400 before any ICAP attempt', async () => {
    const r = await scanner().scan(post(text(10), { host: 'evil.example' }, 'http://localhost:8080/upload'));
    expect(r.response!.status).toBe(400);
    expect(logs[0]).toMatchObject({ error_code: 'ICAP_ERR_BAD_REQUEST' });
    expect(
      server.requests.filter(
        (x) => x.method === 'REQMOD' && x.httpRequest?.headers.get('host') === 'evil.example',
      ),
    ).toEqual([]);
    // The same host in other letters, or with its default port written out, is the same host.
    expect(
      (await scanner().scan(post(text(10), { host: 'LOCALHOST:8080' }, 'http://localhost:8080/upload')))
        .response,
    ).toBeUndefined();
    expect(
      (await scanner().scan(post(text(10), { host: 'localhost:80' }, 'http://localhost/upload'))).response,
    ).toBeUndefined();
  });

  it('a Request whose body cannot be made (the Fetch API refuses its target) is refused with 400, never a throw', async () => {
    // As @hono/node-server's lazy Request for `POST http://u:p@host/x`: method, URL and headers
    // read, the body's first read throws the Fetch API's TypeError.
    const unreadable = (url: string) => {
      const r = post(text(10), { 'content-type': 'application/octet-stream', 'content-length': '10' }, url);
      for (const key of ['body', 'bodyUsed'])
        Object.defineProperty(r, key, {
          get() {
            throw new TypeError(`Request cannot be constructed from a URL that includes credentials: ${url}`);
          },
        });
      return r;
    };
    const sent = server.requests.length;
    const r = await scanner().scan(unreadable('http://localhost/upload'));
    expect(r.response!.status).toBe(400);
    expect(r.request).toBeUndefined();
    expect(logs.at(-1)).toMatchObject({ error_code: 'ICAP_ERR_BAD_REQUEST', action: 'ICAP_BLOCKED' });
    // The reason is fixed text: the target (which may carry a password) is not echoed anywhere.
    expect(JSON.stringify(logs.at(-1))).not.toContain('credentials');
    expect(await r.response!.text()).not.toContain('credentials');
    expect(server.requests.slice(sent).filter((x) => x.method === 'REQMOD')).toEqual([]);
    // Whatever the rules: they would judge a request without what could not be read (its
    // fields, its body), while the Node request under it may still frame a body (campaign-ai AI1).
    const s = scanner({
      rules: [{ name: 'only-api', match: { path: { prefix: ['/api/'] } }, action: 'enable-icap' }],
    });
    expect((await s.scan(unreadable('http://localhost/upload'))).response!.status).toBe(400);
    expect((await s.scan(unreadable('http://localhost/api/x'))).response!.status).toBe(400);
  });

  it('the body is read with backpressure: a body over bufferSize stops being pulled near the limit (413)', async () => {
    const { stream, state } = counted(1024 * 1024 * 1024);
    const r = await scanner({ bufferSize: 1024 * 1024, drainAfterAnswer: { bytes: 0 } }).scan(post(stream));
    expect(r.response!.status).toBe(413);
    // Cancelled once the answer is decided (nothing left to drain), after about bufferSize.
    expect(await until(() => state.cancelled)).toBe(true);
    expect(state.pulled).toBeLessThan(1024 * 1024 + 512 * 1024);
  });

  it('a refused body is drained (bounded), so a client still sending reads the answer', async () => {
    const { stream, state } = counted(3 * 1024 * 1024);
    const r = await scanner({ bufferSize: 1024 * 1024 }).scan(post(stream));
    expect(r.response!.status).toBe(413);
    expect(await until(() => state.pulled === 3 * 1024 * 1024)).toBe(true);
    expect(state.cancelled).toBe(false);
  });

  it("an abort of the request's signal mid-body: no approved request, CLIENT_ABORTED in the log", async () => {
    const ac = new AbortController();
    let sent = 0;
    const stream = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (sent >= 200_000) return new Promise(() => {}); // the client stalls
        sent += 50_000;
        controller.enqueue(new Uint8Array(50_000).fill(0x62));
        return undefined;
      },
    });
    const request = new Request('http://localhost/upload', {
      method: 'POST',
      body: stream,
      signal: ac.signal,
      duplex: 'half',
    } as RequestInit);
    const pending = scanner().scan(request);
    expect(await until(() => sent >= 200_000)).toBe(true);
    ac.abort();
    const r = await pending;
    expect(r.request).toBeUndefined();
    expect(r.response).toBeDefined();
    expect(logs).toHaveLength(1);
    expect(logs[0]!.action).toBe('ICAP_FAILED');
  });

  it('multipart: the approved body is the canonical form the Node adapters deliver, byte for byte', async () => {
    // A file part without a Content-Type: the canonical form gives it one (so every parser agrees).
    const B = 'xYz0';
    const form = {
      contentType: `multipart/form-data; boundary="${B}"`,
      body: Buffer.concat([
        Buffer.from(`--${B}\r\nContent-Disposition: form-data; name="title"\r\n\r\n`),
        Buffer.from('Quarterly report'),
        Buffer.from(
          `\r\n--${B}\r\nContent-Disposition: form-data; name="doc"; filename="report.pdf"\r\n\r\n`,
        ),
        Buffer.from(text(50_000, 9)),
        Buffer.from(`\r\n--${B}--\r\n`),
      ]),
    };
    // The Express target delivers the raw bytes at /raw (express.raw with any type).
    const app: App = await startApp('express5', profile());
    let node: Buffer;
    try {
      const res = await fetch(`${app.url}/raw`, {
        method: 'POST',
        body: form.body,
        headers: { 'content-type': form.contentType },
      });
      expect(res.status).toBe(200);
      node = app.seen[0]!.raw!;
    } finally {
      await app.close();
    }
    const r = await scanner().scan(post(form.body, { 'content-type': form.contentType }));
    const req = r.request!;
    const web = Buffer.from(await req.arrayBuffer());
    const boundaryOf = (ct: string) => /boundary=(.*)$/.exec(ct)![1]!;
    const webBoundary = boundaryOf(req.headers.get('content-type')!);
    const nodeBoundary = boundaryOf(String(app.seen[0]!.headers['content-type']));
    // A fresh boundary each time (no client can predict it); everything else identical.
    expect(web.toString('latin1').replaceAll(webBoundary, 'B')).toBe(
      node.toString('latin1').replaceAll(nodeBoundary, 'B'),
    );
    expect(req.headers.get('content-length')).toBe(String(web.length));
    expect(form.body.toString('latin1')).not.toContain('application/octet-stream');
    expect(web.toString('latin1')).toContain('Content-Type: application/octet-stream');
    // And undici's form parser reads it.
    const again = await scanner().scan(post(form.body, { 'content-type': form.contentType }));
    const parsed = await again.request!.formData();
    expect(parsed.get('title')).toBe('Quarterly report');
    expect((parsed.get('doc') as File).size).toBe(50_000);
  });

  it('what the scan holds is freed: its temp file goes once the approved body was read, or on dispose()', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'icapkit-web-'));
    try {
      const s = scanner({ memoryThreshold: 16 * 1024, spoolDir: dir });
      const read = await s.scan(post(text(200_000)));
      expect((await read.request!.arrayBuffer()).byteLength).toBe(200_000);
      expect(await leftoverSpoolFiles(dir)).toEqual([]);
      const unread = await s.scan(post(text(200_000)));
      expect(unread.request).toBeDefined();
      unread.dispose();
      expect(await leftoverSpoolFiles(dir)).toEqual([]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('a request whose body was already read is a programming error: rejected, never passed unscanned', async () => {
    const used = post(eicar());
    await used.arrayBuffer();
    await expect(scanner().scan(used)).rejects.toMatchObject({ code: 'ICAP_ERR_INVALID_ARGUMENT' });
    const locked = post(eicar());
    locked.body!.getReader();
    await expect(scanner().scan(locked)).rejects.toMatchObject({ code: 'ICAP_ERR_INVALID_ARGUMENT' });
  });

  it("the engine's telemetry: a web scan publishes scan:start and scan:end like a Node one", async () => {
    const events: Array<[string, Record<string, unknown>]> = [];
    const subs = ['icapkit:scan:start', 'icapkit:scan:end'].map((name) => {
      const fn = (m: unknown) => events.push([name, m as Record<string, unknown>]);
      dc.subscribe(name, fn);
      return () => dc.unsubscribe(name, fn);
    });
    try {
      await scanner().scan(post(text(100), {}, 'http://localhost/api/up?x=1'));
    } finally {
      for (const unsubscribe of subs) unsubscribe();
    }
    expect(events.map(([n, m]) => [n, m.method ?? m.action, m.path])).toEqual([
      ['icapkit:scan:start', 'POST', '/api/up'],
      ['icapkit:scan:end', 'ICAP_PASSED', undefined],
    ]);
  });

  it('scan(request, profile) keeps one engine per profile object', async () => {
    const p = profile();
    const a = await scan(post(text(10)), p);
    const accepted = server.connections.accepted;
    const b = await scan(post(text(10)), p);
    expect([a.icap.action, b.icap.action]).toEqual(['ICAP_PASSED', 'ICAP_PASSED']);
    // The second scan went over the first one's pooled connection: the same engine.
    expect(server.connections.accepted).toBe(accepted);
  });
});

describe('withIcap(profile, handler)', () => {
  /** What a framework's Request subclass adds (Next's NextRequest has nextUrl, cookies). */
  class FrameworkRequest extends Request {
    get nextUrl(): URL {
      return new URL(this.url);
    }
  }

  it("the handler gets the approved request, of the original's class, the context and the scan", async () => {
    let got: { isSub: boolean; path: string; body: string; ctx: unknown; action: string } | undefined;
    const route = withIcap(
      profile(),
      async (req: FrameworkRequest, ctx: { params: Promise<object> }, icap) => {
        got = {
          isSub: req instanceof FrameworkRequest,
          path: req.nextUrl.pathname,
          body: await req.text(),
          ctx: await ctx.params,
          action: icap.action,
        };
        return new Response('done', { status: 201 });
      },
    );
    try {
      const res = await route(
        new FrameworkRequest('http://localhost/api/upload', { method: 'POST', body: 'hello' }),
        { params: Promise.resolve({ id: '7' }) },
      );
      expect(res.status).toBe(201);
      expect(got).toEqual({
        isSub: true,
        path: '/api/upload',
        body: 'hello',
        ctx: { id: '7' },
        action: 'ICAP_PASSED',
      });
    } finally {
      await route.close();
    }
  });

  it('a refused request never calls the handler', async () => {
    let calls = 0;
    const route = withIcap(profile(), async () => {
      calls++;
      return new Response('ok');
    });
    try {
      const res = await route(post(eicar()), {});
      expect(res.status).toBe(403);
      expect(calls).toBe(0);
    } finally {
      await route.close();
    }
  });
});

describe('refusals shaped by the caller (onRefusal)', () => {
  it("createScanner(profile, { onRefusal }): the callback's Response, result.refusal describes it", async () => {
    const got: unknown[] = [];
    const s = createScanner(profile(), {
      onRefusal: (refusal, request) => {
        got.push(request);
        return Response.json({ mine: refusal.reason, threat: refusal.threat }, { status: 451 });
      },
    });
    scanners.push(s);
    const request = post(eicar(), { 'content-type': 'application/octet-stream' });
    const result = await s.scan(request);
    expect(result.request).toBeUndefined();
    expect(result.response?.status).toBe(451);
    expect(await result.response?.json()).toEqual({ mine: 'blocked', threat: EICAR_NAME });
    expect(got).toEqual([request]);
    expect(result.response === undefined ? undefined : result.refusal).toMatchObject({
      reason: 'blocked',
      status: 403,
      code: 'ICAP_ERR_BLOCKED',
      threat: EICAR_NAME,
      expose: true,
    });
    expect(logs.at(-1)?.action).toBe('ICAP_BLOCKED');
    // Per scan: its own onRefusal wins; one returning a 2xx falls back to the default page.
    const own = await s.scan(post(eicar(), { 'content-type': 'application/octet-stream' }), {
      onRefusal: () => ({ status: 204 }),
    });
    expect(own.response?.status).toBe(403);
    expect(own.response?.headers.get('content-type')).toMatch(/^(text\/html|application\/problem\+json)/);
  });

  it('scan(request, engine, { onRefusal }) with a reply object; no callback: the default page and refusal', async () => {
    const p = scanner().engine;
    const shaped = await scan(post(eicar()), p, {
      onRefusal: (refusal) => ({ status: 422, headers: { 'x-why': refusal.reason }, body: 'no' }),
    });
    expect(shaped.response?.status).toBe(422);
    expect(shaped.response?.headers.get('x-why')).toBe('blocked');
    expect(await shaped.response?.text()).toBe('no');
    const plain = await scan(post(eicar()), p);
    expect(plain.response?.status).toBe(403);
    expect(plain.response === undefined ? undefined : plain.refusal?.reason).toBe('blocked');
    const clean = await scan(post('clean'), p, { onRefusal: () => new Response('x', { status: 400 }) });
    expect(clean.response).toBeUndefined();
    await clean.request?.arrayBuffer();
  });
});
