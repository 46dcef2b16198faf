/**
 * @icapkit/nestjs on @nestjs/platform-express and @nestjs/platform-fastify over real sockets,
 * against the embedded ICAP server (recording what it scanned): uploads through multer's
 * FileInterceptor (Express) and @fastify/multipart (Fastify) reach the handler only when clean,
 * `@SkipIcap()` routes and controllers are not scanned, `@IcapOptions()` overrides apply per
 * route, malformed multipart gets 400 whatever the failure action, `@IcapResult()` carries the
 * outcome, the engines close with the application; both with NestFactory.create + forRoot and
 * with @nestjs/testing + forRootAsync. The conformance scenarios, the bypass and multipart shape
 * tables, the fault matrix's client-side cases and the client-cannot-fail-open property run for
 * both platforms too (test/conformance, test/hardening).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { IcapLog, IcapProfile } from '@icapkit/core';
import { EICAR_NAME, eicar, type IcapTestServer, startIcapServer } from '@icapkit/testing';
import 'reflect-metadata';
import { IcapModule, IcapOptions, SkipIcap } from '@icapkit/nestjs';
import { Controller, HttpCode, Module, Post, Req, VersioningType } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { FastifyAdapter, type NestFastifyApplication, RouteConfig } from '@nestjs/platform-fastify';
import type { FastifyRequest } from 'fastify';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { type CIcapServer, describeWithCIcap, startCIcap } from '../support/c-icap.js';
import { EICAR_THREAT } from '../support/eicar.js';
import { multipart, send } from '../support/http-client.js';
import { NEST_FRAMEWORKS, type NestApp, type NestAppOptions, type NestFramework, startNest } from './apps.js';

const NAMELESS =
  '--b\r\nContent-Disposition: form-data; filename="a.txt"\r\nContent-Type: text/plain\r\n\r\nhello\r\n--b--\r\n';

function text(n: number, seed = 0): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = 0x61 + ((i + seed) % 26);
  return b;
}

async function until(cond: () => boolean, ms = 5000): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (!cond() && Date.now() < deadline) await sleep(20);
  return cond();
}

const octet = { 'content-type': 'application/octet-stream' };

const BUILDS: Array<{ label: string; options: NestAppOptions }> = [
  { label: 'NestFactory.create + forRoot', options: {} },
  { label: 'Test.createTestingModule + forRootAsync', options: { testingModule: true, async: true } },
];

let icap: IcapTestServer;
beforeAll(async () => {
  icap = await startIcapServer({ recordBodies: true });
});
afterAll(() => icap?.close());

const reqmods = () => icap.requests.filter((r) => r.method === 'REQMOD');

describe.each(NEST_FRAMEWORKS)('%s', (framework: NestFramework) => {
  describe.each(BUILDS)('$label', ({ options }) => {
    let app: NestApp | undefined;
    let logs: IcapLog[] = [];
    afterEach(async () => {
      await app?.close();
      app = undefined;
      logs = [];
      icap.reset();
    });
    async function start(profile: Partial<IcapProfile> = {}, extra: NestAppOptions = {}) {
      app = await startNest(
        framework,
        {
          name: 'nest',
          poolGroup: icap.url(),
          serviceUri: '/avscan',
          onLog: (l) => logs.push(l),
          ...profile,
        },
        { ...options, ...extra },
      );
      return app;
    }

    it('a clean upload reaches the handler (FileInterceptor / req.file()) with its bytes; @IcapResult() is the outcome', async () => {
      const a = await start();
      const data = text(120_000, 3);
      const form = multipart([
        { name: 'title', data: 'report' },
        { name: 'file', filename: 'report.pdf', type: 'application/pdf', data },
      ]);
      const r = await send(a.url, '/upload', {
        body: form.body,
        headers: { 'content-type': form.contentType },
      });
      expect(r.status).toBe(200);
      expect(JSON.parse(r.text)).toEqual({
        file: 'report.pdf',
        size: data.length,
        scan: { action: 'ICAP_PASSED', threat: null, rule: null },
        sameAsRequest: true,
        logAction: 'ICAP_PASSED',
      });
      expect(a.seen).toHaveLength(1);
      expect(a.seen[0]!.files![0]!.data.equals(data)).toBe(true);
      expect(a.seen[0]!.icap?.log.action).toBe('ICAP_PASSED');
      // The file's bytes were what the ICAP server scanned.
      expect(reqmods().some((q) => q.body?.equals(data))).toBe(true);
      expect(logs.map((l) => l.action)).toEqual(['ICAP_PASSED']);
    });

    it('EICAR: 403 naming the threat, the handler (and multer) never ran', async () => {
      const a = await start();
      const form = multipart([{ name: 'file', filename: 'eicar.com', data: eicar() }]);
      const r = await send(a.url, '/upload', {
        body: form.body,
        headers: { 'content-type': form.contentType, accept: 'application/json' },
      });
      expect(r.status).toBe(403);
      expect(JSON.parse(r.text)).toMatchObject({ status: 403, threat: EICAR_NAME });
      const raw = await send(a.url, '/raw', { body: eicar(), headers: octet });
      expect(raw.status).toBe(403);
      expect(a.seen).toHaveLength(0);
      expect(logs.map((l) => l.action)).toEqual(['ICAP_BLOCKED', 'ICAP_BLOCKED']);
    });

    it('@SkipIcap() on a handler and on a controller: not scanned, @IcapResult() is null', async () => {
      const a = await start();
      const r = await send(a.url, '/skip/raw', { body: eicar(), headers: octet });
      expect(r.status).toBe(200);
      expect(JSON.parse(r.text)).toEqual({ ok: true, length: eicar().length, scan: null });
      const c = await send(a.url, '/public/raw', { body: eicar(), headers: octet });
      expect(c.status).toBe(200);
      expect(a.seen.map((s) => [s.route, s.raw?.equals(eicar()), s.icap])).toEqual([
        ['skip', true, undefined],
        ['public', true, undefined],
      ]);
      expect(reqmods()).toHaveLength(0);
      expect(logs).toHaveLength(0);
      // The other routes are still scanned.
      expect((await send(a.url, '/raw', { body: eicar(), headers: octet })).status).toBe(403);
    });

    it('@IcapOptions() overrides the profile for its route only (handler, and handler under a skipped controller)', async () => {
      const a = await start();
      const body = text(2000);
      // bufferSize 1000 on /small/raw and /public/scanned/raw: 413; the module's profile elsewhere.
      expect((await send(a.url, '/small/raw', { body, headers: octet })).status).toBe(413);
      expect((await send(a.url, '/public/scanned/raw', { body, headers: octet })).status).toBe(413);
      expect((await send(a.url, '/raw', { body, headers: octet })).status).toBe(200);
      // Under the override's limit: scanned, EICAR blocked, clean passes.
      expect((await send(a.url, '/public/scanned/raw', { body: eicar(), headers: octet })).status).toBe(403);
      expect((await send(a.url, '/small/raw', { body: text(500), headers: octet })).status).toBe(200);
      expect(a.seen.map((s) => [s.route, s.raw?.length])).toEqual([
        ['raw', 2000],
        ['small', 500],
      ]);
      expect(logs.map((l) => l.action)).toEqual([
        'ICAP_FAILED',
        'ICAP_FAILED',
        'ICAP_PASSED',
        'ICAP_BLOCKED',
        'ICAP_PASSED',
      ]);
      expect(logs[0]!.significance).toContain('BUFFER_SIZE_EXCEEDED');
      expect(logs[1]!.significance).toContain('BUFFER_SIZE_EXCEEDED');
    });

    for (const failAction of ['fail-closed', 'fail-open'] as const) {
      it(`malformed multipart (the 97-byte nameless part) gets 400 in ${failAction}, the handler never runs`, async () => {
        const a = await start({ failAction });
        expect(Buffer.byteLength(NAMELESS)).toBe(97);
        for (const path of ['/upload', '/multipart']) {
          const r = await send(a.url, path, {
            body: NAMELESS,
            headers: { 'content-type': 'multipart/form-data; boundary=b', accept: 'application/json' },
          });
          expect(r.status).toBe(400);
        }
        // A boundary that never closes, and a missing boundary parameter.
        const open =
          '--b\r\nContent-Disposition: form-data; name="f"; filename="e.com"\r\n\r\n' +
          eicar().toString('latin1');
        const unclosed = await send(a.url, '/upload', {
          body: open,
          headers: { 'content-type': 'multipart/form-data; boundary=b' },
        });
        expect(unclosed.status).toBeGreaterThanOrEqual(400);
        expect(unclosed.status).toBeLessThan(500);
        const noBoundary = await send(a.url, '/upload', {
          body: NAMELESS,
          headers: { 'content-type': 'multipart/form-data' },
        });
        expect(noBoundary.status).toBeGreaterThanOrEqual(400);
        expect(noBoundary.status).toBeLessThan(500);
        expect(a.seen).toHaveLength(0);
        expect(logs.slice(0, 2)).toMatchObject([
          { error_code: 'ICAP_ERR_MULTIPART', http_response_code: 400 },
          { error_code: 'ICAP_ERR_MULTIPART', http_response_code: 400 },
        ]);
        for (const l of logs) expect(l.action).not.toBe('ICAP_PASSED');
        // The application keeps serving.
        expect((await send(a.url, '/health')).status).toBe(200);
      });
    }

    it('the engines close with app.close(): no ICAP connection is left open', async () => {
      const a = await start();
      expect((await send(a.url, '/raw', { body: text(100), headers: octet })).status).toBe(200);
      expect((await send(a.url, '/small/raw', { body: text(100), headers: octet })).status).toBe(200);
      expect(icap.connections.open).toBeGreaterThan(0);
      await a.close();
      app = undefined;
      expect(await until(() => icap.connections.open === 0)).toBe(true);
    });
  });
});

describe.each(NEST_FRAMEWORKS)('%s with a global prefix and URI versioning', (framework) => {
  let app: NestApp | undefined;
  afterEach(async () => {
    await app?.close();
    app = undefined;
    icap.reset();
  });

  it('the routes are found under /api/v1: @SkipIcap and @IcapOptions apply, the rest is scanned', async () => {
    app = await startNest(
      framework,
      { name: 'nest', poolGroup: icap.url(), serviceUri: '/avscan', onLog: () => {} },
      {
        beforeListen: (nest) => {
          nest.setGlobalPrefix('api');
          nest.enableVersioning({ type: VersioningType.URI, defaultVersion: '1' });
        },
      },
    );
    expect((await send(app.url, '/api/v1/raw', { body: eicar(), headers: octet })).status).toBe(403);
    expect((await send(app.url, '/api/v1/skip/raw', { body: eicar(), headers: octet })).status).toBe(200);
    expect((await send(app.url, '/api/v1/public/raw', { body: eicar(), headers: octet })).status).toBe(200);
    expect((await send(app.url, '/api/v1/small/raw', { body: text(2000), headers: octet })).status).toBe(413);
    expect((await send(app.url, '/api/v1/raw', { body: text(2000), headers: octet })).status).toBe(200);
    // Unknown paths are scanned with the module's profile before the 404.
    expect((await send(app.url, '/raw', { body: eicar(), headers: octet })).status).toBe(403);
    expect((await send(app.url, '/nowhere', { body: text(10), headers: octet })).status).toBe(404);
    expect(app.seen.map((s) => s.route)).toEqual(['skip', 'public', 'raw']);
  });
});

describe.each(NEST_FRAMEWORKS)('%s: a bad profile', (framework) => {
  it.each(BUILDS)(
    '$label: start-up fails with the profile error, nothing thrown into the process',
    async ({ options }) => {
      const crashes: unknown[] = [];
      const onCrash = (e: unknown) => crashes.push(e);
      process.on('uncaughtException', onCrash);
      process.on('unhandledRejection', onCrash);
      try {
        await expect(
          startNest(framework, { name: 'bad', poolGroup: icap.url(), serviceUri: 'avscan' }, options),
        ).rejects.toThrow(/serviceUri/);
        await sleep(100);
        expect(crashes).toEqual([]);
      } finally {
        process.off('uncaughtException', onCrash);
        process.off('unhandledRejection', onCrash);
      }
    },
  );
});

describe('nest-express: the scan picks the route before routing; the guard checks it at the handler', () => {
  let app: NestApp | undefined;
  afterEach(async () => {
    await app?.close();
    app = undefined;
    icap.reset();
  });

  it('a URL rewritten after the scan (skip route → scanned route) is refused with 403, the handler never runs', async () => {
    app = await startNest(
      'nest-express',
      { name: 'nest', poolGroup: icap.url(), serviceUri: '/avscan', onLog: () => {} },
      {
        beforeListen: (nest) => {
          // Middleware after the scan that rewrites the URL, as a misplaced rewrite rule would.
          (nest as import('@nestjs/platform-express').NestExpressApplication).use(
            (req: import('node:http').IncomingMessage, _res: unknown, next: () => void) => {
              if (req.headers['x-rewrite'] !== undefined) req.url = String(req.headers['x-rewrite']);
              next();
            },
          );
        },
      },
    );
    const r = await send(app.url, '/skip/raw', {
      body: eicar(),
      headers: { ...octet, 'x-rewrite': '/raw' },
    });
    expect(r.status).toBe(403);
    expect(JSON.parse(r.text)).toMatchObject({ code: 'ICAP_ERR_UNSCANNED_ROUTE' });
    // Rewritten to a route with its own override: scanned with the module's profile is not enough.
    const o = await send(app.url, '/raw', {
      body: text(10),
      headers: { ...octet, 'x-rewrite': '/small/raw' },
    });
    expect(o.status).toBe(403);
    expect(app.seen).toHaveLength(0);
    // Without a rewrite both work.
    expect((await send(app.url, '/skip/raw', { body: eicar(), headers: octet })).status).toBe(200);
    expect((await send(app.url, '/small/raw', { body: text(10), headers: octet })).status).toBe(200);
  });
});

describe("nest-fastify: the decorators join the route's own @RouteConfig()", () => {
  it('@RouteConfig() values stay, and @SkipIcap / @IcapOptions reach @icapkit/fastify as config.icap', async () => {
    @Controller('cfg')
    class ConfigController {
      @SkipIcap()
      @RouteConfig({ tag: 'skip' })
      @Post('skip')
      @HttpCode(200)
      skip(@Req() req: FastifyRequest) {
        return { tag: (req.routeOptions.config as { tag?: string }).tag, body: String(req.body) };
      }

      @RouteConfig({ tag: 'small' })
      @IcapOptions({ bufferSize: 1000, bufferSizeExceedAction: 'fail-closed' })
      @Post('small')
      @HttpCode(200)
      small(@Req() req: FastifyRequest) {
        return {
          tag: (req.routeOptions.config as { tag?: string }).tag,
          length: (req.body as Buffer).length,
        };
      }
    }
    @Module({
      imports: [
        IcapModule.forRoot({ name: 'c', poolGroup: icap.url(), serviceUri: '/avscan', onLog: () => {} }),
      ],
      controllers: [ConfigController],
    })
    class ConfigModule {}
    const nest = await NestFactory.create<NestFastifyApplication>(ConfigModule, new FastifyAdapter(), {
      logger: false,
    });
    nest
      .getHttpAdapter()
      .getInstance()
      .addContentTypeParser('application/octet-stream', { parseAs: 'buffer' }, (_req, body, done) =>
        done(null, body),
      );
    await nest.listen(0, '127.0.0.1');
    try {
      const url = await nest.getUrl();
      const skip = await send(url, '/cfg/skip', { body: eicar(), headers: octet });
      expect([skip.status, JSON.parse(skip.text)]).toEqual([200, { tag: 'skip', body: eicar().toString() }]);
      expect((await send(url, '/cfg/small', { body: text(2000), headers: octet })).status).toBe(413);
      expect((await send(url, '/cfg/small', { body: eicar(), headers: octet })).status).toBe(403);
      const ok = await send(url, '/cfg/small', { body: text(10), headers: octet });
      expect([ok.status, JSON.parse(ok.text)]).toEqual([200, { tag: 'small', length: 10 }]);
    } finally {
      await nest.close();
    }
  });
});

describeWithCIcap('@icapkit/nestjs with real c-icap + ClamAV', () => {
  let server: CIcapServer | undefined;
  beforeAll(async () => {
    server = await startCIcap({ maxKeepAliveRequests: 100_000 });
  }, 60_000);
  afterAll(() => server?.stop());

  describe.each(NEST_FRAMEWORKS)('%s', (framework) => {
    let app: NestApp | undefined;
    afterEach(async () => {
      await app?.close();
      app = undefined;
    });

    it('clean upload passes, EICAR is blocked with the ClamAV name, @SkipIcap is not scanned, @IcapOptions applies', async () => {
      const logs: IcapLog[] = [];
      app = await startNest(framework, {
        name: 'nest-c-icap',
        poolGroup: `icap://127.0.0.1:${server!.port}`,
        serviceUri: '/avscan',
        onLog: (l) => logs.push(l),
      });
      const data = text(50_000, 7);
      const form = multipart([{ name: 'file', filename: 'a.txt', type: 'text/plain', data }]);
      const ok = await send(app.url, '/upload', {
        body: form.body,
        headers: { 'content-type': form.contentType },
      });
      expect(ok.status).toBe(200);
      expect(JSON.parse(ok.text)).toMatchObject({
        file: 'a.txt',
        size: data.length,
        scan: { action: 'ICAP_PASSED' },
      });
      const bad = multipart([{ name: 'file', filename: 'eicar.com', data: eicar() }]);
      const blocked = await send(app.url, '/upload', {
        body: bad.body,
        headers: { 'content-type': bad.contentType, accept: 'application/json' },
      });
      expect(blocked.status).toBe(403);
      expect(JSON.parse(blocked.text)).toMatchObject({ threat: EICAR_THREAT });
      expect((await send(app.url, '/skip/raw', { body: eicar(), headers: octet })).status).toBe(200);
      expect((await send(app.url, '/small/raw', { body: text(2000), headers: octet })).status).toBe(413);
      expect(app.seen.map((s) => s.route)).toEqual(['upload', 'skip']);
      expect(logs.map((l) => l.action)).toEqual(['ICAP_PASSED', 'ICAP_BLOCKED', 'ICAP_FAILED']);
      expect(logs[2]!.significance).toContain('BUFFER_SIZE_EXCEEDED');
    });
  });
});
