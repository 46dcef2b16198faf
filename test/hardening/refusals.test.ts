/**
 * Refusals are the application's to shape (issue 15, item 3), in every framework:
 * `refusals: 'error'` hands an IcapRefusalError to the framework's own error handling
 * (Express error middleware, Fastify setErrorHandler, Koa try/catch and app.on('error')),
 * `onRefusal` renders it, and a callback that throws, returns nothing or returns a non-refusal
 * falls back to the default page. The handler never runs, and the log record is the same.
 */
import { createServer } from 'node:net';
import { type IcapProfile, IcapRefusalError } from '@icapkit/core';
import { icap as expressIcap } from '@icapkit/express';
import { icap as honoIcap } from '@icapkit/hono';
import { icap as koaIcap } from '@icapkit/koa';
import { EICAR_NAME, eicar, type IcapTestServer, startIcapServer } from '@icapkit/testing';
import { createScanner, withIcap } from '@icapkit/web';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { send } from '../support/http-client.js';
import {
  type Framework,
  REFUSAL_FRAMEWORKS,
  type RefusalApp,
  type RefusalAppOptions,
  startRefusalApp,
  startWebRefusalApp,
  WEB_REFUSAL_FRAMEWORKS,
  type WebRefusalFramework,
} from './refusal-apps.js';

let icap: IcapTestServer;
/** A loopback port with nothing listening (the scanner is down). */
let deadPort: number;

beforeAll(async () => {
  icap = await startIcapServer({ recordBodies: false });
  const probe = createServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  deadPort = (probe.address() as { port: number }).port;
  await new Promise<void>((resolve) => probe.close(() => resolve()));
});
afterAll(() => icap?.close());

const profile = (over: Partial<IcapProfile> = {}): IcapProfile => ({
  name: 'refusals',
  poolGroup: icap.url(),
  serviceUri: '/avscan',
  ...over,
});

const octets = { 'content-type': 'application/octet-stream', accept: 'application/json' };

async function withApp(
  framework: Framework | WebRefusalFramework,
  p: IcapProfile,
  options: RefusalAppOptions,
  fn: (app: RefusalApp) => Promise<void>,
): Promise<void> {
  const app =
    framework === 'hono' || framework === 'web'
      ? await startWebRefusalApp(framework, p, options)
      : await startRefusalApp(framework, p, options);
  try {
    await fn(app);
  } finally {
    await app.close();
  }
}

describe.each(REFUSAL_FRAMEWORKS)('%s', (framework) => {
  it("refusals: 'error' hands a blocked upload to the framework's error handler", async () => {
    await withApp(framework, profile(), { adapter: { refusals: 'error' } }, async (app) => {
      const r = await send(app.url, '/upload', { body: eicar(), headers: octets });
      expect(r.status).toBe(403);
      const body = JSON.parse(r.text);
      expect(body).toMatchObject({ code: 'ICAP_ERR_BLOCKED', threat: EICAR_NAME });
      expect(body.handler).toBe(framework.replace(/[0-9]$/, ''));
      expect(body.message).toContain(EICAR_NAME);
      expect(app.handled).toEqual([]);
      expect(app.errors).toHaveLength(1);
      const e = app.errors[0]!;
      expect(e.err).toBeInstanceOf(IcapRefusalError);
      expect(e).toMatchObject({
        name: 'IcapRefusalError',
        code: 'ICAP_ERR_BLOCKED',
        status: 403,
        statusCode: 403,
        expose: true,
        reason: 'blocked',
        threat: EICAR_NAME,
        logAction: 'ICAP_BLOCKED',
        icapAction: 'ICAP_BLOCKED',
      });
      expect(app.logs).toHaveLength(1);
      expect(app.logs[0]!.action).toBe('ICAP_BLOCKED');
      expect(app.logs[0]!.http_response_code).toBe(403);
      expect((e.err as IcapRefusalError).log).toBe(app.logs[0]);
    });
  });

  it("refusals: 'error' with the scanner down: 503, not exposed, Retry-After in err.headers", async () => {
    const p = profile({ poolGroup: `icap://127.0.0.1:${deadPort}` });
    await withApp(framework, p, { adapter: { refusals: 'error' } }, async (app) => {
      const r = await send(app.url, '/upload', { body: 'clean bytes', headers: octets });
      expect(r.status).toBe(503);
      expect(JSON.parse(r.text)).toMatchObject({ message: 'hidden' });
      expect(app.handled).toEqual([]);
      expect(app.errors[0]).toMatchObject({
        status: 503,
        statusCode: 503,
        expose: false,
        reason: 'unavailable',
      });
      expect(app.errors[0]!.code).toMatch(/^ICAP_ERR_/);
      expect((app.errors[0]!.headers as Record<string, string>)['retry-after']).toBe('30');
      expect(app.logs[0]!.action).toBe('ICAP_FAILED');
    });
  });

  it("refusals: 'error' before the body was read (413 by declared length) still answers the client", async () => {
    await withApp(
      framework,
      profile({ bufferSize: 1024 }),
      { adapter: { refusals: 'error' } },
      async (app) => {
        const r = await send(app.url, '/upload', { body: Buffer.alloc(256 * 1024, 0x61), headers: octets });
        expect(r.status).toBe(413);
        expect(app.handled).toEqual([]);
        expect(app.errors[0]).toMatchObject({
          code: 'ICAP_ERR_REQUEST_TOO_LARGE',
          status: 413,
          expose: true,
          reason: 'too-large',
        });
        expect(app.logs[0]!.error_code).toBe('ICAP_ERR_REQUEST_TOO_LARGE');
      },
    );
  });

  it('onRefusal returning { status, headers, body } renders the refusal', async () => {
    const seen: unknown[] = [];
    const onRefusal = (refusal: { reason: string; threat: string | undefined; status: number }) => {
      seen.push(refusal);
      return {
        status: 422,
        headers: { 'x-refused': refusal.reason },
        body: { error: 'virus', threat: refusal.threat, was: refusal.status },
      };
    };
    await withApp(framework, profile(), { adapter: { onRefusal } }, async (app) => {
      const r = await send(app.url, '/upload', { body: eicar(), headers: octets });
      expect(r.status).toBe(422);
      expect(r.headers['x-refused']).toBe('blocked');
      expect(r.headers['content-type']).toMatch(/^application\/json/);
      expect(JSON.parse(r.text)).toEqual({ error: 'virus', threat: EICAR_NAME, was: 403 });
      expect(app.handled).toEqual([]);
      expect(app.errors).toEqual([]);
      expect(seen).toHaveLength(1);
      expect(app.logs[0]!.action).toBe('ICAP_BLOCKED');
    });
  });

  it('onRefusal that throws after it started the response: the response is ended, never left hanging', async () => {
    const start = (res: { writeHead(s: number): void; write(b: string): void }) => {
      res.writeHead(403);
      res.write('partial page');
      throw new Error('the template engine failed');
    };
    const onRefusal =
      framework === 'fastify'
        ? (_r: unknown, _req: unknown, reply: { raw: Parameters<typeof start>[0] }) => start(reply.raw)
        : framework.startsWith('koa')
          ? (_r: unknown, ctx: { res: Parameters<typeof start>[0] }) => start(ctx.res)
          : (_r: unknown, _req: unknown, res: Parameters<typeof start>[0]) => start(res);
    const warnings: string[] = [];
    const onWarning = (w: Error) => warnings.push(w.message);
    process.on('warning', onWarning);
    try {
      await withApp(framework, profile(), { adapter: { onRefusal } }, async (app) => {
        const outcome = await send(app.url, '/upload', {
          body: eicar(),
          headers: octets,
          timeoutMs: 10_000,
        }).then(
          (r) => `answered ${r.status}`,
          (err: Error) => err.message,
        );
        // Ended: a (partial) 403, or the connection closed; never the 10 s wait for an answer.
        expect(outcome).not.toMatch(/no answer within/);
        expect(app.handled).toEqual([]);
        expect(app.logs[0]!.action).toBe('ICAP_BLOCKED');
      });
    } finally {
      process.off('warning', onWarning);
    }
    if (framework !== 'koa3' && framework !== 'koa2')
      expect(warnings.filter((w) => w.includes('onRefusal failed')).every((w) => w.includes('aborted'))).toBe(
        true,
      );
  });

  it("onRefusal sending the answer with the framework's own response object", async () => {
    const onRefusal =
      framework === 'fastify'
        ? (_r: unknown, _req: unknown, reply: { send(b: string): unknown }) => reply.send('custom page')
        : framework.startsWith('koa')
          ? (_r: unknown, ctx: { body: unknown }) => {
              ctx.body = 'custom page';
            }
          : (_r: unknown, _req: unknown, res: { end(b: string): void }) => {
              res.end('custom page');
            };
    await withApp(framework, profile(), { adapter: { onRefusal } }, async (app) => {
      const r = await send(app.url, '/upload', { body: eicar(), headers: octets });
      // The status is preset to the refusal's: sending a body without one keeps 403.
      expect(r.status).toBe(403);
      expect(r.text).toBe('custom page');
      expect(app.handled).toEqual([]);
    });
  });

  it.each([
    [
      'throws',
      () => {
        throw new Error('template missing');
      },
    ],
    ['returns nothing', () => undefined],
    ['rejects', async () => Promise.reject(new Error('async failure'))],
    ['returns a 2xx', () => ({ status: 200, body: 'all good' })],
    ['returns a header Node refuses', () => ({ headers: { 'x-bad': 'a\r\nb' }, body: 'x' })],
  ])('onRefusal that %s: the default page, the handler never runs', async (name, onRefusal) => {
    const warnings: Error[] = [];
    const onWarning = (w: Error) => warnings.push(w);
    process.on('warning', onWarning);
    try {
      await withApp(framework, profile(), { adapter: { onRefusal } }, async (app) => {
        const r = await send(app.url, '/upload', { body: eicar(), headers: octets });
        expect(r.status).toBe(403);
        expect(r.headers['content-type']).toBe('application/problem+json');
        expect(JSON.parse(r.text)).toMatchObject({ status: 403, threat: EICAR_NAME });
        expect(app.handled).toEqual([]);
        expect(app.logs[0]!.action).toBe('ICAP_BLOCKED');
        // A callback that failed is reported (once per middleware), one that returned nothing is not.
        await new Promise((r) => setImmediate(r));
        const reported = warnings.filter((w) => (w as { code?: string }).code === 'ICAP_ERR_ON_REFUSAL');
        expect(reported).toHaveLength(name === 'returns nothing' ? 0 : 1);
      });
    } finally {
      process.off('warning', onWarning);
    }
  });

  it('Expect: 100-continue refused from its head (413) still goes through onRefusal and the error handler', async () => {
    const onRefusal = (refusal: { status: number }) => ({ status: 422, body: { was: refusal.status } });
    const p = profile({ bufferSize: 1024 });
    const big = Buffer.alloc(8 * 1024, 0x61);
    const guard = { guardExpectContinue: true };
    await withApp(framework, p, { ...guard, adapter: { onRefusal } }, async (app) => {
      const r = await send(app.url, '/upload', { body: big, headers: octets, expectContinue: true });
      expect(r.status).toBe(422);
      expect(JSON.parse(r.text)).toEqual({ was: 413 });
      expect(app.handled).toEqual([]);
      expect(app.logs).toHaveLength(1);
    });
    await withApp(framework, p, { ...guard, adapter: { refusals: 'error' } }, async (app) => {
      const r = await send(app.url, '/upload', { body: big, headers: octets, expectContinue: true });
      expect(r.status).toBe(413);
      expect(app.errors[0]).toMatchObject({ code: 'ICAP_ERR_REQUEST_TOO_LARGE', status: 413 });
      expect(app.handled).toEqual([]);
    });
    // Without shaping, the guard still answers before the body (the default page).
    await withApp(framework, p, guard, async (app) => {
      const r = await send(app.url, '/upload', { body: big, headers: octets, expectContinue: true });
      expect(r.status).toBe(413);
      expect(r.headers['content-type']).toBe('application/problem+json');
    });
  });

  it('a clean upload still reaches the handler with both options set up', async () => {
    await withApp(framework, profile(), { adapter: { refusals: 'error' } }, async (app) => {
      const r = await send(app.url, '/upload', { body: 'clean bytes', headers: octets });
      expect(r.status).toBe(200);
      expect(JSON.parse(r.text)).toEqual({ ok: true, action: 'ICAP_PASSED' });
      expect(app.errors).toEqual([]);
    });
  });
});

describe.each(['koa3', 'koa2'] as const)('%s without try/catch', (framework) => {
  it("refusals: 'error' reaches app.on('error') and Koa answers with the error's status", async () => {
    await withApp(
      framework,
      profile(),
      { adapter: { refusals: 'error' }, koaErrors: 'app-error' },
      async (app) => {
        const r = await send(app.url, '/upload', { body: eicar(), headers: octets });
        expect(r.status).toBe(403);
        expect(r.text).toContain(EICAR_NAME); // expose: Koa shows the message
        expect(app.handled).toEqual([]);
        expect(app.errors[0]).toMatchObject({ via: 'app-error', code: 'ICAP_ERR_BLOCKED', status: 403 });
      },
    );
  });
});

describe.each(['express5', 'express4'] as const)('%s without an error middleware', (framework) => {
  it("refusals: 'error' is answered by Express's final handler with the error's status", async () => {
    await withApp(
      framework,
      profile(),
      { adapter: { refusals: 'error' }, noErrorHandler: true },
      async (app) => {
        const r = await send(app.url, '/upload', { body: eicar(), headers: octets });
        expect(r.status).toBe(403);
        expect(app.handled).toEqual([]);
      },
    );
  });
});

describe.each(WEB_REFUSAL_FRAMEWORKS)('%s (Web-standard)', (framework) => {
  const where = framework === 'hono' ? 'app.onError' : "the caller's try/catch";
  it(`refusals: 'error' hands a blocked upload to ${where}`, async () => {
    await withApp(framework, profile(), { adapter: { refusals: 'error' } }, async (app) => {
      const r = await send(app.url, '/upload', { body: eicar(), headers: octets });
      expect(r.status).toBe(403);
      expect(JSON.parse(r.text)).toMatchObject({
        handler: framework,
        code: 'ICAP_ERR_BLOCKED',
        threat: EICAR_NAME,
      });
      expect(app.handled).toEqual([]);
      expect(app.errors).toHaveLength(1);
      const e = app.errors[0]!;
      expect(e.err).toBeInstanceOf(IcapRefusalError);
      expect(e).toMatchObject({
        name: 'IcapRefusalError',
        code: 'ICAP_ERR_BLOCKED',
        status: 403,
        statusCode: 403,
        expose: true,
        reason: 'blocked',
        threat: EICAR_NAME,
        logAction: 'ICAP_BLOCKED',
        icapAction: 'ICAP_BLOCKED',
      });
      expect(String(e.message)).toContain(EICAR_NAME);
      expect(app.logs).toHaveLength(1);
      expect(app.logs[0]!.action).toBe('ICAP_BLOCKED');
      expect((e.err as IcapRefusalError).log).toBe(app.logs[0]);
      // getResponse(): the default page, as Hono's HTTPException has.
      const page = (e.err as unknown as { getResponse(): Response }).getResponse();
      expect(page.status).toBe(403);
      expect(page.headers.get('content-type')).toBe('application/problem+json');
      expect(JSON.parse(await page.text())).toMatchObject({ status: 403, threat: EICAR_NAME });
    });
  });

  it("refusals: 'error' with the scanner down: 503, not exposed, Retry-After in err.headers", async () => {
    const p = profile({ poolGroup: `icap://127.0.0.1:${deadPort}` });
    await withApp(framework, p, { adapter: { refusals: 'error' } }, async (app) => {
      const r = await send(app.url, '/upload', { body: 'clean bytes', headers: octets });
      expect(r.status).toBe(503);
      expect(JSON.parse(r.text)).toMatchObject({ handler: framework, message: 'hidden' });
      expect(app.handled).toEqual([]);
      expect(app.errors).toHaveLength(1);
      expect(app.errors[0]).toMatchObject({
        name: 'IcapRefusalError',
        status: 503,
        statusCode: 503,
        expose: false,
        reason: 'unavailable',
        logAction: 'ICAP_FAILED',
      });
      expect(app.errors[0]!.code).toMatch(/^ICAP_ERR_/);
      expect((app.errors[0]!.headers as Record<string, string>)['retry-after']).toBe('30');
      expect(app.logs).toHaveLength(1);
      expect(app.logs[0]!.action).toBe('ICAP_FAILED');
      expect(app.logs[0]!.http_response_code).toBe(503);
    });
  });

  it(`refusals: 'error' without ${where}: still the default page (never a 500 or a pass)`, async () => {
    await withApp(
      framework,
      profile(),
      { adapter: { refusals: 'error' }, noErrorHandler: true },
      async (app) => {
        const r = await send(app.url, '/upload', { body: eicar(), headers: octets });
        if (framework === 'hono') {
          // Hono's default onError answers with the error's getResponse(): icapkit's page.
          expect(r.status).toBe(403);
          expect(r.headers['content-type']).toBe('application/problem+json');
          expect(JSON.parse(r.text)).toMatchObject({ status: 403, threat: EICAR_NAME });
        } else {
          // Nobody catches what withIcap throws: the server's own error answer, not the handler's.
          expect(r.status).toBeGreaterThanOrEqual(500);
        }
        expect(app.handled).toEqual([]);
        expect(app.logs[0]!.action).toBe('ICAP_BLOCKED');
      },
    );
  });

  it('onRefusal returning { status, headers, body } renders the refusal (block and scanner down)', async () => {
    const seen: unknown[] = [];
    const onRefusal = (
      refusal: { reason: string; threat: string | undefined; status: number },
      ...args: unknown[]
    ) => {
      seen.push(args[0]);
      return {
        status: 422,
        headers: { 'x-refused': refusal.reason },
        body: { error: 'refused', threat: refusal.threat, was: refusal.status },
      };
    };
    await withApp(framework, profile(), { adapter: { onRefusal } }, async (app) => {
      const r = await send(app.url, '/upload', { body: eicar(), headers: octets });
      expect(r.status).toBe(422);
      expect(r.headers['x-refused']).toBe('blocked');
      expect(r.headers['content-type']).toMatch(/^application\/json/);
      expect(JSON.parse(r.text)).toEqual({ error: 'refused', threat: EICAR_NAME, was: 403 });
      expect(app.handled).toEqual([]);
      expect(app.errors).toEqual([]);
      expect(seen).toHaveLength(1);
      // The framework's own argument: Hono's context, withIcap's request.
      if (framework === 'hono') expect(typeof (seen[0] as { json?: unknown }).json).toBe('function');
      else expect(seen[0]).toBeInstanceOf(Request);
      expect(app.logs[0]!.action).toBe('ICAP_BLOCKED');
    });
    const down = profile({ poolGroup: `icap://127.0.0.1:${deadPort}` });
    await withApp(framework, down, { adapter: { onRefusal } }, async (app) => {
      const r = await send(app.url, '/upload', { body: 'clean bytes', headers: octets });
      expect(r.status).toBe(422);
      expect(r.headers['x-refused']).toBe('unavailable');
      expect(r.headers['retry-after']).toBe('30');
      expect(JSON.parse(r.text)).toMatchObject({ was: 503 });
      expect(app.handled).toEqual([]);
      expect(app.logs[0]!.action).toBe('ICAP_FAILED');
    });
  });

  it('onRefusal returning a Response sends it', async () => {
    const onRefusal = (refusal: { threat: string | undefined }) =>
      new Response(`custom page: ${refusal.threat}`, { status: 451, headers: { 'x-custom': '1' } });
    await withApp(framework, profile(), { adapter: { onRefusal } }, async (app) => {
      const r = await send(app.url, '/upload', { body: eicar(), headers: octets });
      expect(r.status).toBe(451);
      expect(r.headers['x-custom']).toBe('1');
      expect(r.text).toBe(`custom page: ${EICAR_NAME}`);
      expect(app.handled).toEqual([]);
    });
  });

  it.each([
    [
      'throws',
      () => {
        throw new Error('template missing');
      },
    ],
    ['returns nothing', () => undefined],
    ['rejects', async () => Promise.reject(new Error('async failure'))],
    ['returns a 2xx', () => ({ status: 200, body: 'all good' })],
    ['returns a 2xx Response', () => new Response('all good', { status: 200 })],
    ['returns a header it cannot send', () => ({ headers: { 'x-bad': 'a\r\nb' }, body: 'x' })],
  ])('onRefusal that %s: the default page, the handler never runs', async (name, onRefusal) => {
    const warnings: Error[] = [];
    const onWarning = (w: Error) => warnings.push(w);
    process.on('warning', onWarning);
    try {
      await withApp(framework, profile(), { adapter: { onRefusal } }, async (app) => {
        const r = await send(app.url, '/upload', { body: eicar(), headers: octets });
        expect(r.status).toBe(403);
        expect(r.headers['content-type']).toBe('application/problem+json');
        expect(JSON.parse(r.text)).toMatchObject({ status: 403, threat: EICAR_NAME });
        expect(app.handled).toEqual([]);
        expect(app.errors).toEqual([]);
        expect(app.logs[0]!.action).toBe('ICAP_BLOCKED');
        await new Promise((r) => setImmediate(r));
        const reported = warnings.filter((w) => (w as { code?: string }).code === 'ICAP_ERR_ON_REFUSAL');
        expect(reported).toHaveLength(name === 'returns nothing' ? 0 : 1);
      });
    } finally {
      process.off('warning', onWarning);
    }
  });

  // The Hono middleware has a guard for Node servers (withIcap has none).
  if (framework === 'hono')
    it('Expect: 100-continue refused from its head (413) still goes through onRefusal and app.onError', async () => {
      const onRefusal = (refusal: { status: number }) => ({ status: 422, body: { was: refusal.status } });
      const p = profile({ bufferSize: 1024 });
      const big = Buffer.alloc(8 * 1024, 0x61);
      const guard = { guardExpectContinue: true };
      await withApp(framework, p, { ...guard, adapter: { onRefusal } }, async (app) => {
        const r = await send(app.url, '/upload', { body: big, headers: octets, expectContinue: true });
        expect(r.status).toBe(422);
        expect(JSON.parse(r.text)).toEqual({ was: 413 });
        expect(app.handled).toEqual([]);
        expect(app.logs).toHaveLength(1);
      });
      await withApp(framework, p, { ...guard, adapter: { refusals: 'error' } }, async (app) => {
        const r = await send(app.url, '/upload', { body: big, headers: octets, expectContinue: true });
        expect(r.status).toBe(413);
        expect(app.errors[0]).toMatchObject({ code: 'ICAP_ERR_REQUEST_TOO_LARGE', status: 413 });
        expect(app.handled).toEqual([]);
      });
      // Without shaping, the guard still answers before the body (the default page).
      await withApp(framework, p, guard, async (app) => {
        const r = await send(app.url, '/upload', { body: big, headers: octets, expectContinue: true });
        expect(r.status).toBe(413);
        expect(r.headers['content-type']).toBe('application/problem+json');
        expect(app.handled).toEqual([]);
      });
    });

  it('a clean upload still reaches the handler', async () => {
    await withApp(framework, profile(), { adapter: { refusals: 'error' } }, async (app) => {
      const r = await send(app.url, '/upload', { body: 'clean bytes', headers: octets });
      expect(r.status).toBe(200);
      expect(JSON.parse(r.text)).toEqual({ ok: true, action: 'ICAP_PASSED' });
      expect(app.errors).toEqual([]);
      expect(app.handled).toEqual(['/upload']);
    });
  });
});

describe('options are checked at start-up', () => {
  it.each([
    [
      'onRefusal with refusals: error',
      { refusals: 'error', onRefusal: () => undefined },
      /exclude each other/,
    ],
    ['an unknown refusals mode', { refusals: 'throw' }, /'respond' or 'error'/],
    ['onRefusal that is not a function', { onRefusal: 'page.html' }, /must be a function/],
  ])('%s', (_name, options, message) => {
    const p: IcapProfile = { name: 'x', poolGroup: 'icap://127.0.0.1:1', serviceUri: '/avscan' };
    expect(() => expressIcap(p, options as never)).toThrow(message);
    expect(() => koaIcap(p, options as never)).toThrow(message);
    expect(() => honoIcap(p, options as never)).toThrow(message);
    expect(() => withIcap(p, () => new Response(null), options as never)).toThrow(message);
    expect(() => createScanner(p, options as never)).toThrow(message);
  });
});
