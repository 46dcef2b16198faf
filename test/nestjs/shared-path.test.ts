/**
 * Routes that share a path on the Express platform, found by campaign-y. Nest tells such routes
 * apart only when it runs them (a version filter for versioning by header, media type or a
 * custom extractor; a host filter for `@Controller({ host })`): each passes a request that is
 * not its own on to the next route. The scan is chosen before that, from the path, and it used
 * to take the first matching route's setting. When that route was `@SkipIcap()`, a request meant
 * for the scanned route on the same path was never scanned: Nest's body parser (`rawBody`), Nest
 * middleware and the guards before the module's read the EICAR body, then the module's guard
 * answered 403 (and a clean request for that route always got 403). Now:
 * - a `@SkipIcap()` route and a scanned one on one path: every request on it is scanned with the
 *   scanned route's setting; nothing before the handler reads an unscanned body, the scanned
 *   route works, the skipped one accepts scanned requests;
 * - scanned routes on one path with different settings (one that fails open): the application
 *   fails to start, naming them, instead of letting a client's header pick the setting.
 * On Fastify, routing comes first: the same application scans each version with its own setting.
 *
 * And two more of campaign-y's findings on Express: the start-up check (`startupCheck`, 'fail'
 * by default) ran on Fastify but never on Express, where an app against a dead scanner started
 * and passed EICAR under fail-open; and with a prebuilt Express application
 * (`new ExpressAdapter(server)`) whatever it held (a route, a JSON parser) ran before the scan.
 */
import 'reflect-metadata';
import type { IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { connect } from 'node:net';
import { type IcapLog, type IcapProfile, IcapRefusalError } from '@icapkit/core';
import { IcapModule, type IcapModuleOptions, IcapOptions, SkipIcap } from '@icapkit/nestjs';
import { eicar, type IcapTestServer, startIcapServer } from '@icapkit/testing';
import {
  type ArgumentsHost,
  type CanActivate,
  Catch,
  Controller,
  type ExceptionFilter,
  type ExecutionContext,
  Get,
  HttpCode,
  Injectable,
  type MiddlewareConsumer,
  Module,
  type NestModule,
  Post,
  Req,
  RequestMethod,
  VERSION_NEUTRAL,
  Version,
  VersioningType,
} from '@nestjs/common';
import { APP_FILTER, APP_GUARD, NestFactory } from '@nestjs/core';
import { ExpressAdapter, type NestExpressApplication } from '@nestjs/platform-express';
import { FastifyAdapter, type NestFastifyApplication } from '@nestjs/platform-fastify';
import express from 'express';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isNestMiddleware, recordNestMiddleware } from '../../packages/nestjs/src/middleware-layers.js';
import { expressRouteSetting } from '../../packages/nestjs/src/routes.js';
import { refusingPort } from '../support/c-icap.js';
import { send } from '../support/http-client.js';

let icap: IcapTestServer;
beforeAll(async () => {
  icap = await startIcapServer({ recordBodies: true });
});
afterAll(() => icap?.close());

const EICAR = eicar().toString('latin1');
/** The module's profile as a route setting (constants.ts DEFAULT_ROUTE). */
const DEFAULT_SETTING = 'default';
const json = { 'content-type': 'application/json' };
const reqmods = () => icap.requests.filter((r) => r.method === 'REQMOD').length;

/** What each consumer of a request got: `name:EICAR` or `name:clean`. */
const seen: string[] = [];
function saw(name: string, req: { body?: unknown; rawBody?: Buffer }): void {
  const got = `${JSON.stringify(req.body ?? null)}${req.rawBody?.toString('latin1') ?? ''}`;
  seen.push(`${name}:${got.includes('EICAR') ? 'EICAR' : 'clean'}`);
}

@Controller('hook')
class HookController {
  @SkipIcap()
  @Version('1')
  @Post()
  @HttpCode(200)
  legacy(@Req() req: { body?: unknown }) {
    saw('v1', req);
    return { version: 1 };
  }

  @Version('2')
  @Post()
  @HttpCode(200)
  current(@Req() req: { body?: unknown }) {
    saw('v2', req);
    return { version: 2 };
  }
}

@SkipIcap()
@Controller({ path: 'doc', host: 'public.example' })
class PublicDocController {
  @Post()
  @HttpCode(200)
  up(@Req() req: { body?: unknown }) {
    saw('public', req);
    return { host: 'public' };
  }
}

@Controller('doc')
class DocController {
  @Post()
  @HttpCode(200)
  up(@Req() req: { body?: unknown }) {
    saw('doc', req);
    return { host: 'any' };
  }
}

@Injectable()
class UserGuard implements CanActivate {
  canActivate(context: ExecutionContext): boolean {
    saw('guard', context.switchToHttp().getRequest());
    return true;
  }
}

@Module({})
class EveryPathMiddleware implements NestModule {
  configure(consumer: MiddlewareConsumer): void {
    consumer
      .apply((req: { body?: unknown }, _res: unknown, next: () => void) => {
        saw('middleware', req);
        next();
      })
      .forRoutes('*');
  }
}

function moduleWith(profile: Partial<IcapProfile>, controllers: Array<new () => unknown>) {
  @Module({
    imports: [
      IcapModule.forRoot({ name: 'shared', poolGroup: icap.url(), serviceUri: '/avscan', ...profile }),
      EveryPathMiddleware,
    ],
    controllers,
    providers: [{ provide: APP_GUARD, useClass: UserGuard }],
  })
  class AppModule {}
  return AppModule;
}

async function start(platform: 'express' | 'fastify', module: unknown) {
  const options = { logger: false as const, rawBody: true };
  const app =
    platform === 'express'
      ? await NestFactory.create<NestExpressApplication>(module, options)
      : await NestFactory.create<NestFastifyApplication>(module, new FastifyAdapter(), options);
  app.enableVersioning({ type: VersioningType.HEADER, header: 'x-api-version' });
  await app.listen(0, '127.0.0.1');
  return app;
}

/** The first bytes the server answers a request head with (up to the end of that answer's head). */
function firstAnswer(port: number, head: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1', () => socket.write(head));
    let got = '';
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no answer within 10 s: ${JSON.stringify(got)}`));
    }, 10_000);
    socket.on('data', (d: Buffer) => {
      got += d.toString('latin1');
      if (got.includes('\r\n\r\n')) {
        clearTimeout(timer);
        socket.destroy();
        resolve(got);
      }
    });
    socket.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

/** POSTs `body` as JSON; the status, the parsed answer (or null), the REQMODs it cost, who saw what. */
async function post(app: { getUrl(): Promise<string> }, path: string, body: string, headers = {}) {
  seen.length = 0;
  const before = reqmods();
  const res = await send(await app.getUrl(), path, {
    body: JSON.stringify({ attachment: body }),
    headers: { ...json, ...headers },
  });
  let answer: unknown = null;
  try {
    answer = JSON.parse(res.text);
  } catch {}
  return { status: res.status, answer, scans: reqmods() - before, seen: [...seen] };
}

describe('nest-express: a @SkipIcap() route and a scanned one on one path', () => {
  it('every request on the path is scanned: nothing before the handler reads an unscanned body, both routes work', async () => {
    const logs: IcapLog[] = [];
    const app = await start(
      'express',
      moduleWith({ onLog: (l) => logs.push(l) }, [HookController, PublicDocController, DocController]),
    );
    try {
      for (const [path, headers] of [
        ['/hook', { 'x-api-version': '2' }],
        ['/hook', { 'x-api-version': '1' }],
        ['/doc', { host: 'evil.example' }],
        ['/doc', { host: 'public.example' }],
      ] as const) {
        const blocked = await post(app, path, EICAR, headers);
        expect(blocked.status, `${path} ${JSON.stringify(headers)}`).toBe(403);
        expect(blocked.scans).toBeGreaterThan(0);
        // The body parser (rawBody), the middleware, the user's guard and the handler: none ran.
        expect(blocked.seen).toEqual([]);
        expect(logs.at(-1)?.action).toBe('ICAP_BLOCKED');
      }
      const v2 = await post(app, '/hook', 'clean', { 'x-api-version': '2' });
      expect([v2.status, v2.answer, v2.seen]).toEqual([
        200,
        { version: 2 },
        ['middleware:clean', 'guard:clean', 'v2:clean'],
      ]);
      expect(v2.scans).toBeGreaterThan(0);
      const v1 = await post(app, '/hook', 'clean', { 'x-api-version': '1' });
      expect([v1.status, v1.answer]).toEqual([200, { version: 1 }]);
      const doc = await post(app, '/doc', 'clean', { host: 'evil.example' });
      expect([doc.status, doc.answer]).toEqual([200, { host: 'any' }]);
      const pub = await post(app, '/doc', 'clean', { host: 'public.example' });
      expect([pub.status, pub.answer]).toEqual([200, { host: 'public' }]);
    } finally {
      await app.close();
    }
  });

  it('a @SkipIcap() route alone on its path stays unscanned', async () => {
    @Controller('alone')
    class AloneController {
      @SkipIcap()
      @Post()
      @HttpCode(200)
      up() {
        return { skipped: true };
      }
    }
    const app = await start('express', moduleWith({}, [AloneController, HookController]));
    try {
      const r = await post(app, '/alone', EICAR);
      expect([r.status, r.answer, r.scans]).toEqual([200, { skipped: true }, 0]);
    } finally {
      await app.close();
    }
  });
});

describe('nest-fastify: the same application (routing before the scan)', () => {
  it('each version is scanned with its own setting', async () => {
    const app = await start('fastify', moduleWith({}, [HookController]));
    try {
      const v2 = await post(app, '/hook', EICAR, { 'x-api-version': '2' });
      // Nest middleware runs in @fastify/middie's onRequest hook, before the scan and before
      // any body is read (README): it sees none. Nothing else runs.
      expect([v2.status, v2.seen]).toEqual([403, ['middleware:clean']]);
      // The skipped version is its own route here: not scanned, as its decorator says.
      const v1 = await post(app, '/hook', 'clean', { 'x-api-version': '1' });
      expect([v1.status, v1.answer, v1.scans]).toEqual([200, { version: 1 }, 0]);
    } finally {
      await app.close();
    }
  });
});

describe('nest-express: scanned routes on one path with different settings', () => {
  it('fail start-up, naming both handlers', async () => {
    const LENIENT = { failAction: 'fail-open' } as const;
    @Controller('events')
    class EventsController {
      @IcapOptions(LENIENT)
      @Version('1')
      @Post()
      telemetry() {}

      @Version('2')
      @Post()
      strict() {}
    }
    const app = await NestFactory.create<NestExpressApplication>(moduleWith({}, [EventsController]), {
      logger: false,
    });
    app.enableVersioning({ type: VersioningType.HEADER, header: 'x-api-version' });
    try {
      await expect(app.listen(0, '127.0.0.1')).rejects.toThrow(
        /EventsController\.telemetry \(\/events\) and EventsController\.strict \(\/events\) may take the same requests with different scan settings/,
      );
    } finally {
      await app.close();
    }
  });
});

describe('nest-express: the start-up check runs as on Fastify', () => {
  it.each([
    ['express', 'the module profile'],
    ['express', 'an @IcapOptions() route'],
    ['fastify', 'the module profile'],
  ] as const)(
    '%s, %s on a server that is down: app.listen() rejects naming it (startupCheck "fail", the default)',
    async (platform, which) => {
      const dead = `icap://127.0.0.1:${await refusingPort()}`;
      const DOWN = { poolGroup: dead };
      @Controller('checked')
      class CheckedController {
        @Post()
        up() {}

        @IcapOptions(DOWN)
        @Post('other')
        other() {}
      }
      const module = moduleWith(
        which === 'the module profile'
          ? { failAction: 'fail-open', poolGroup: dead }
          : { failAction: 'fail-open' },
        [CheckedController],
      );
      const app =
        platform === 'express'
          ? await NestFactory.create<NestExpressApplication>(module, { logger: false })
          : await NestFactory.create<NestFastifyApplication>(module, new FastifyAdapter(), { logger: false });
      try {
        await expect(app.listen(0, '127.0.0.1')).rejects.toThrow(dead);
      } finally {
        await app.close();
      }
    },
  );

  it("starts with startupCheck: 'warn' against a server that is down", async () => {
    const dead = `icap://127.0.0.1:${await refusingPort()}`;
    const app = await NestFactory.create<NestExpressApplication>(
      moduleWith({ poolGroup: dead, startupCheck: 'warn', failAction: 'fail-closed', onLog: () => {} }, [
        HookController,
      ]),
      { logger: false },
    );
    app.enableVersioning({ type: VersioningType.HEADER, header: 'x-api-version' });
    try {
      await app.listen(0, '127.0.0.1');
      const r = await post(app, '/hook', 'clean', { 'x-api-version': '2' });
      expect(r.status).toBe(503);
    } finally {
      await app.close();
    }
  });
});

describe('nest-express: a prebuilt Express application (new ExpressAdapter(server))', () => {
  it('its own routes and body parser run after the scan', async () => {
    const server = express();
    server.use(express.json());
    // Nest's request-hook layer comes here (the adapter's constructor); one more route after it.
    const adapter = new ExpressAdapter(server);
    const legacy: string[] = [];
    server.post('/legacy', express.raw({ type: () => true }), (req, res) => {
      legacy.push((req.body as Buffer).toString('latin1'));
      res.json({ legacy: true });
    });
    const app = await NestFactory.create<NestExpressApplication>(moduleWith({}, [HookController]), adapter, {
      logger: false,
    });
    // The scan first, Nest's hook layer just before it.
    const stack = (server as unknown as { router: { stack: Array<{ handle: { name?: string } }> } }).router
      .stack;
    expect(stack[1]?.handle.name).toBe('icapkitScan');
    expect(String(stack[0]?.handle)).toContain('onRequestHook');
    app.enableVersioning({ type: VersioningType.HEADER, header: 'x-api-version' });
    await app.listen(0, '127.0.0.1');
    try {
      const url = `http://127.0.0.1:${(app.getHttpServer().address() as AddressInfo).port}`;
      const octet = { 'content-type': 'application/octet-stream' };
      const blocked = await send(url, '/legacy', { body: eicar(), headers: octet });
      expect(blocked.status).toBe(403);
      expect(legacy).toEqual([]);
      const clean = await send(url, '/legacy', { body: 'clean bytes', headers: octet });
      expect([clean.status, legacy]).toEqual([200, ['clean bytes']]);
      // The prebuilt JSON parser reads approved bodies (it used to read them first: 500 for all).
      const v2 = await post(app, '/hook', 'clean', { 'x-api-version': '2' });
      expect([v2.status, v2.answer, v2.seen]).toEqual([
        200,
        { version: 2 },
        ['middleware:clean', 'guard:clean', 'v2:clean'],
      ]);
      expect((await post(app, '/hook', EICAR, { 'x-api-version': '2' })).status).toBe(403);
    } finally {
      await app.close();
    }
  });
});

describe('nest-express: routes whose paths overlap, told apart by version (campaign-aa)', () => {
  const ALSO_AVSCAN = { serviceUri: '/avscan' } as const;

  it('a skipped `:id` version and a scanned static one: the static route is scanned (AA3)', async () => {
    @Controller('files')
    class FilesController {
      @SkipIcap()
      @Version('1')
      @Post(':id')
      @HttpCode(200)
      old(@Req() req: { body?: unknown }) {
        saw('v1', req);
        return { version: 1 };
      }

      @Version('2')
      @Post('upload')
      @HttpCode(200)
      current(@Req() req: { body?: unknown }) {
        saw('v2', req);
        return { version: 2 };
      }
    }
    const app = await start('express', moduleWith({}, [FilesController]));
    try {
      const blocked = await post(app, '/files/upload', EICAR, { 'x-api-version': '2' });
      expect([blocked.status, blocked.seen]).toEqual([403, []]);
      const clean = await post(app, '/files/upload', 'clean', { 'x-api-version': '2' });
      expect([clean.status, clean.answer]).toEqual([200, { version: 2 }]);
      // A path only the skipped route matches keeps its skip.
      const skipped = await post(app, '/files/42', EICAR, { 'x-api-version': '1' });
      expect([skipped.status, skipped.answer, skipped.scans]).toEqual([200, { version: 1 }, 0]);
    } finally {
      await app.close();
    }
  });

  it('a fail-open `:id` version and a fail-closed static one: start-up fails (AA4)', async () => {
    const LENIENT = { failAction: 'fail-open' } as const;
    @Controller('files')
    class FilesController {
      @IcapOptions(LENIENT)
      @Version('1')
      @Post(':id')
      old() {}

      @Version('2')
      @Post('upload')
      current() {}
    }
    const app = await NestFactory.create<NestExpressApplication>(moduleWith({}, [FilesController]), {
      logger: false,
    });
    app.enableVersioning({ type: VersioningType.HEADER, header: 'x-api-version' });
    try {
      await expect(app.listen(0, '127.0.0.1')).rejects.toThrow(
        /FilesController\.old \(\/files\/:id\) and FilesController\.current \(\/files\/upload\) may take the same requests/,
      );
    } finally {
      await app.close();
    }
  });

  it('settings written twice alike, or equal to the profile, are one setting (AA5, AA6)', async () => {
    @Controller('same')
    class SameController {
      @IcapOptions({ failAction: 'fail-closed', bufferSize: '2mb' })
      @Version('1')
      @Post()
      @HttpCode(200)
      one() {
        return { version: 1 };
      }

      @IcapOptions({ failAction: 'fail-closed', bufferSize: '2mb' })
      @Version('2')
      @Post()
      @HttpCode(200)
      two() {
        return { version: 2 };
      }

      @IcapOptions(ALSO_AVSCAN)
      @Version('1')
      @Post('plain')
      @HttpCode(200)
      plainOne() {
        return { version: 1 };
      }

      @Version('2')
      @Post('plain')
      @HttpCode(200)
      plainTwo() {
        return { version: 2 };
      }
    }
    const app = await start('express', moduleWith({}, [SameController]));
    try {
      for (const path of ['/same', '/same/plain']) {
        const two = await post(app, path, 'clean', { 'x-api-version': '2' });
        expect([path, two.status, two.answer]).toEqual([path, 200, { version: 2 }]);
        expect((await post(app, path, EICAR, { 'x-api-version': '2' })).status).toBe(403);
      }
    } finally {
      await app.close();
    }
  });

  it('routes versioned by the default version only: the same (defaultVersion)', async () => {
    @SkipIcap()
    @Controller('hooks')
    class LegacyHooks {
      @Post()
      @HttpCode(200)
      up() {
        return { version: 1 };
      }
    }
    @Controller({ path: 'hooks', version: '2' })
    class Hooks {
      @Post()
      @HttpCode(200)
      up(@Req() req: { body?: unknown }) {
        saw('v2', req);
        return { version: 2 };
      }
    }
    const app = await NestFactory.create<NestExpressApplication>(moduleWith({}, [LegacyHooks, Hooks]), {
      logger: false,
    });
    app.enableVersioning({ type: VersioningType.HEADER, header: 'x-api-version', defaultVersion: '1' });
    await app.listen(0, '127.0.0.1');
    try {
      const blocked = await post(app, '/hooks', EICAR, { 'x-api-version': '2' });
      expect([blocked.status, blocked.seen]).toEqual([403, []]);
      const clean = await post(app, '/hooks', 'clean', { 'x-api-version': '2' });
      expect([clean.status, clean.answer]).toEqual([200, { version: 2 }]);
    } finally {
      await app.close();
    }
  });
});

describe("nest-express: a prebuilt app's own layer that mentions onRequestHook (campaign-aa AA8b)", () => {
  it('stays behind the scan', async () => {
    const server = express();
    const read: string[] = [];
    server.use(function audit(req, _res, next) {
      const onRequestHook = 'audit';
      read.push(`${onRequestHook}:${String(req.headers['content-length'] ?? 0)}`);
      next();
    });
    const app = await NestFactory.create<NestExpressApplication>(
      moduleWith({}, [HookController]),
      new ExpressAdapter(server),
      { logger: false },
    );
    try {
      await app.init();
      const stack = (server as unknown as { router: { stack: Array<{ handle: { name?: string } }> } }).router
        .stack;
      expect(stack.map((l) => l.handle.name).indexOf('audit')).toBeGreaterThan(
        stack.map((l) => l.handle.name).indexOf('icapkitScan'),
      );
    } finally {
      await app.close();
    }
  });
});

/**
 * POST /hooks in two header versions: v1 `@SkipIcap()`, v2 with a setting of its own (fail-closed).
 * Nest middleware bound to v1 may answer a request for either: such requests are ambiguous.
 */
function hookVersions(): [new () => unknown, new () => unknown] {
  @SkipIcap()
  @Controller({ path: 'hooks', version: '1' })
  class V1 {
    @Post()
    @HttpCode(200)
    up() {
      return { version: 1 };
    }
  }
  @Controller({ path: 'hooks', version: '2' })
  class V2 {
    @IcapOptions({ failAction: 'fail-closed' })
    @Post()
    @HttpCode(200)
    up(@Req() req: { body?: unknown }) {
      saw('v2', req);
      return { version: 2 };
    }
  }
  return [V1, V2];
}

describe('nest-express: what campaign-ab found around the same rule', () => {
  it('middleware bound to a skipped version, a scanned version with a setting of its own: refused before the body (AB5, campaign-ae)', async () => {
    const [V1, V2] = hookVersions();
    @Module({ imports: [moduleWith({ failAction: 'fail-open' }, [V1, V2])] })
    class WithSignatureCheck implements NestModule {
      configure(consumer: MiddlewareConsumer): void {
        consumer.apply((_req: unknown, _res: unknown, next: () => void) => next()).forRoutes(V1);
      }
    }
    const app = await start('express', WithSignatureCheck);
    try {
      // Nest middleware bound to the skipped route's path may answer the request itself (owed
      // the module's profile) or pass it on to v2 (its own setting): ambiguous.
      for (const body of ['clean', EICAR]) {
        const r = await post(app, '/hooks', body, { 'x-api-version': '2', accept: 'application/json' });
        expect([r.status, (r.answer as { type?: string })?.type, r.seen, r.scans]).toEqual([
          403,
          'urn:icapkit:problem:unscanned-route',
          [],
          0,
        ]);
      }
    } finally {
      await app.close();
    }
  });

  it("the refusal of such a request is the module's own: onRefusal, refusals: 'error', the log record, before 100 Continue", async () => {
    const [V1, V2] = hookVersions();
    const caught: unknown[] = [];
    @Catch(IcapRefusalError)
    class RefusalFilter implements ExceptionFilter {
      catch(err: IcapRefusalError, host: ArgumentsHost) {
        caught.push(err);
        host.switchToHttp().getResponse<express.Response>().status(409).json({ mine: err.code });
      }
    }
    const logs: IcapLog[] = [];
    const appWith = async (options: IcapModuleOptions) => {
      @Module({
        imports: [
          IcapModule.forRoot(
            {
              name: 'shared',
              poolGroup: icap.url(),
              serviceUri: '/avscan',
              failAction: 'fail-open',
              onLog: (log) => logs.push(log),
            },
            options,
          ),
        ],
        controllers: [V1, V2],
        providers: [{ provide: APP_FILTER, useClass: RefusalFilter }],
      })
      class M implements NestModule {
        configure(consumer: MiddlewareConsumer): void {
          consumer.apply((_req: unknown, _res: unknown, next: () => void) => next()).forRoutes(V1);
        }
      }
      return start('express', M);
    };
    const v2 = { 'x-api-version': '2' };
    // onRefusal renders it.
    let app = await appWith({ onRefusal: (refusal) => ({ status: 451, body: { was: refusal.reason } }) });
    try {
      logs.length = 0;
      const r = await post(app, '/hooks', EICAR, v2);
      expect([r.status, r.answer, r.seen, r.scans]).toEqual([451, { was: 'unscanned-route' }, [], 0]);
      expect(logs.map((l) => [l.action, l.error_code, l.http_response_code])).toEqual([
        ['ICAP_BLOCKED', 'ICAP_ERR_UNSCANNED_ROUTE', 403],
      ]);
    } finally {
      await app.close();
    }
    // refusals: 'error' reaches the application's global filter.
    app = await appWith({ refusals: 'error' });
    try {
      const r = await post(app, '/hooks', 'clean', v2);
      expect([r.status, r.answer, r.seen, r.scans]).toEqual([
        409,
        { mine: 'ICAP_ERR_UNSCANNED_ROUTE' },
        [],
        0,
      ]);
      expect(caught).toHaveLength(1);
      expect(caught[0]).toMatchObject({ status: 403, reason: 'unscanned-route' });
    } finally {
      await app.close();
    }
    // Left to the module: with Expect: 100-continue, 403 comes instead of 100 Continue.
    app = await appWith({});
    try {
      logs.length = 0;
      const url = new URL(await app.getUrl());
      const first = await firstAnswer(
        Number(url.port),
        'POST /hooks HTTP/1.1\r\nHost: x\r\nX-API-Version: 2\r\nContent-Type: application/json\r\n' +
          'Content-Length: 20\r\nExpect: 100-continue\r\n\r\n',
      );
      expect(first.split('\r\n')[0]).toBe('HTTP/1.1 403 Forbidden');
      expect(logs.map((l) => l.error_code)).toEqual(['ICAP_ERR_UNSCANNED_ROUTE']);
    } finally {
      await app.close();
    }
  });

  it('a request without a body on such a path has nothing to scan: any of the routes may take it (campaign-af AF2)', async () => {
    @SkipIcap()
    @Controller({ path: 'hooks', version: '1' })
    class V1 {
      @Get()
      list() {
        return { version: 1 };
      }
      @Post()
      @HttpCode(200)
      up() {
        return { version: 1 };
      }
    }
    @IcapOptions({ failAction: 'fail-closed' })
    @Controller({ path: 'hooks', version: '2' })
    class V2 {
      @Get()
      list() {
        return { version: 2 };
      }
      @Post()
      @HttpCode(200)
      up() {
        return { version: 2 };
      }
    }
    @Module({ imports: [moduleWith({ failAction: 'fail-open' }, [V1, V2])] })
    class WithMiddleware implements NestModule {
      configure(consumer: MiddlewareConsumer): void {
        consumer.apply((_req: unknown, _res: unknown, next: () => void) => next()).forRoutes(V1);
      }
    }
    const app = await start('express', WithMiddleware);
    try {
      const url = await app.getUrl();
      for (const version of ['1', '2']) {
        const got = await send(url, '/hooks', { method: 'GET', headers: { 'x-api-version': version } });
        expect([version, got.status, JSON.parse(got.text)]).toEqual([
          version,
          200,
          { version: Number(version) },
        ]);
        const empty = await send(url, '/hooks', {
          method: 'POST',
          body: '',
          headers: { 'x-api-version': version },
        });
        expect([version, empty.status]).toEqual([version, 200]);
        // With a body, still refused before it is read.
        const posted = await post(app, '/hooks', EICAR, { 'x-api-version': version });
        expect([version, posted.status, posted.seen, posted.scans]).toEqual([version, 403, [], 0]);
      }
    } finally {
      await app.close();
    }
  });

  it("a route of main.ts before a Nest route scanned otherwise: the module's profile, then the guard (AB6, AC1)", async () => {
    const STRICT = { failAction: 'fail-closed', bufferSize: '2mb' } as const;
    @Controller('api')
    class Api {
      @IcapOptions(STRICT)
      @Post('upload')
      @HttpCode(200)
      up() {
        return { ok: true };
      }
    }
    const app = await NestFactory.create<NestExpressApplication>(moduleWith({}, [Api]), { logger: false });
    const audited: string[] = [];
    (app.getHttpAdapter().getInstance() as express.Express).all('/api/*splat', (req, _res, next) => {
      audited.push(req.url);
      next();
    });
    await app.listen(0, '127.0.0.1');
    try {
      // It may answer the request itself (a legacy handler, owed the module's profile, no guard
      // of Nest's) or pass it on: scanned with the module's profile; the Nest route, reached with
      // it, is refused by the guard.
      const clean = await post(app, '/api/upload', 'clean');
      expect([clean.status, (clean.answer as { code?: string })?.code, audited]).toEqual([
        403,
        'ICAP_ERR_UNSCANNED_ROUTE',
        ['/api/upload'],
      ]);
      expect(clean.scans).toBeGreaterThan(0);
      expect((await post(app, '/api/upload', EICAR)).status).toBe(403);
      expect(audited).toEqual(['/api/upload']);
    } finally {
      await app.close();
    }
  });

  it('a skipped VERSION_NEUTRAL route keeps its skip: Nest never passes requests on from it (AB7)', async () => {
    @SkipIcap()
    @Controller({ path: 'neutral', version: VERSION_NEUTRAL })
    class Neutral {
      @Post()
      @HttpCode(200)
      up() {
        return { neutral: true };
      }
    }
    @Controller({ path: 'neutral', version: '2' })
    class Two {
      @Post()
      @HttpCode(200)
      up() {
        return { version: 2 };
      }
    }
    const app = await start('express', moduleWith({}, [Neutral, Two]));
    try {
      const r = await post(app, '/neutral', EICAR, { 'x-api-version': '2' });
      expect([r.status, r.answer, r.scans]).toEqual([200, { neutral: true }, 0]);
    } finally {
      await app.close();
    }
  });

  it('patterns that meet only on a path with both literals: start-up fails (AB1)', async () => {
    const LENIENT = { failAction: 'fail-open' } as const;
    @Controller('files')
    class Files {
      @IcapOptions(LENIENT)
      @Version('1')
      @Post(':name.json')
      old() {}

      @Version('2')
      @Post('upload.:format')
      current() {}
    }
    const app = await NestFactory.create<NestExpressApplication>(moduleWith({}, [Files]), { logger: false });
    app.enableVersioning({ type: VersioningType.HEADER, header: 'x-api-version' });
    try {
      await expect(app.listen(0, '127.0.0.1')).rejects.toThrow(/may take the same requests/);
    } finally {
      await app.close();
    }
  });

  it('routes registered through setOnRouteTriggered(): start-up fails, the settings cannot be read (AB2)', async () => {
    const app = await NestFactory.create<NestExpressApplication>(moduleWith({}, [HookController]), {
      logger: false,
    });
    (app.getHttpAdapter() as unknown as { setOnRouteTriggered(f: () => void): void }).setOnRouteTriggered(
      () => {},
    );
    try {
      await expect(app.listen(0, '127.0.0.1')).rejects.toThrow(/setOnRouteTriggered\(\) hook/);
    } finally {
      await app.close();
    }
  });

  it('routes the start-up check cannot compare, scanned differently: the request is refused before its body is read', () => {
    const server = express();
    const route = (setting: unknown, version: string) => {
      const handle = () => {};
      Reflect.defineMetadata('icapkit:route', setting, handle);
      Reflect.defineMetadata('icapkit:filters', { version, host: undefined }, handle);
      return handle;
    };
    server.post(/^\/odd$/, route({ failAction: 'fail-open' }, '1'));
    server.post('/odd', route(DEFAULT_SETTING, '2'));
    const req = { url: '/odd', method: 'POST' } as IncomingMessage;
    expect(expressRouteSetting(server, req, undefined, { type: VersioningType.HEADER }, {})).toBe(
      'ambiguous',
    );
    // Without versioning the first route takes every request: its setting.
    expect(expressRouteSetting(server, req, undefined, undefined, {})).toEqual({ failAction: 'fail-open' });
  });
});

/**
 * A Nest route at POST /files/import that fails open, in a module that fails closed, with the
 * scanner down: a handler of main.ts on that path must get the module's 503, never the route's pass.
 */
async function filesFailingOpen(): Promise<NestExpressApplication> {
  @Controller('files')
  class Files {
    @IcapOptions({ failAction: 'fail-open' })
    @Post('import')
    @HttpCode(200)
    importing() {
      return { nest: true };
    }
  }
  const dead = `icap://127.0.0.1:${await refusingPort()}`;
  return NestFactory.create<NestExpressApplication>(
    moduleWith({ poolGroup: dead, failAction: 'fail-closed', startupCheck: 'off', onLog: () => {} }, [Files]),
    { logger: false },
  );
}

describe('nest-express: a legacy handler of main.ts that answers, on a Nest route path with its own setting (campaign-ac AC1)', () => {
  it('never gets the Nest route’s fail-open: the module’s profile (fail-closed: 503 with the scanner down)', async () => {
    const app = await filesFailingOpen();
    const legacy: string[] = [];
    (app.getHttpAdapter().getInstance() as express.Express).post(
      '/files/import',
      express.raw({ type: () => true }),
      (req, res) => {
        legacy.push((req.body as Buffer).toString('latin1'));
        res.json({ legacy: true });
      },
    );
    await app.listen(0, '127.0.0.1');
    try {
      const r = await post(app, '/files/import', EICAR);
      expect(r.status).toBe(503);
      expect(legacy).toEqual([]);
    } finally {
      await app.close();
    }
  });
});

describe('nest-express: common shapes that must keep working (campaign-ad)', () => {
  it('middleware bound to a controller with an @IcapOptions() route; routes of one version told apart by Express alone', async () => {
    const LARGE = { bufferSize: '5mb' } as const;
    @Controller('files')
    class Files {
      @IcapOptions(LARGE)
      @Post('import')
      @HttpCode(200)
      importing() {
        return { route: 'import' };
      }

      @Post(':id')
      @HttpCode(200)
      update() {
        return { route: 'update' };
      }
    }
    @Module({ imports: [moduleWith({}, [Files])] })
    class WithLogger implements NestModule {
      configure(consumer: MiddlewareConsumer): void {
        consumer.apply((_req: unknown, _res: unknown, next: () => void) => next()).forRoutes(Files);
      }
    }
    // Every route has the default version: Nest never tells them apart, Express's order does.
    const app = await NestFactory.create<NestExpressApplication>(WithLogger, { logger: false });
    app.enableVersioning({ type: VersioningType.HEADER, header: 'x-api-version', defaultVersion: '1' });
    await app.listen(0, '127.0.0.1');
    try {
      const imported = await post(app, '/files/import', 'clean', { 'x-api-version': '1' });
      expect([imported.status, imported.answer]).toEqual([200, { route: 'import' }]);
      const updated = await post(app, '/files/7', 'clean', { 'x-api-version': '1' });
      expect([updated.status, updated.answer]).toEqual([200, { route: 'update' }]);
      expect((await post(app, '/files/import', EICAR, { 'x-api-version': '1' })).status).toBe(403);
    } finally {
      await app.close();
    }
  });
});

describe('nest-express: what campaign-ae found', () => {
  it('hosts as RegExps are told apart by their pattern (AE1)', async () => {
    @SkipIcap()
    @Controller({ path: 'doc', host: /^admin\./ })
    class Admin {
      @Post()
      @HttpCode(200)
      up() {
        return { host: 'admin' };
      }
    }
    @Controller({ path: 'doc', host: /^api\./ })
    class Api {
      @Post()
      @HttpCode(200)
      up(@Req() req: { body?: unknown }) {
        saw('api', req);
        return { host: 'api' };
      }
    }
    const app = await start('express', moduleWith({}, [Admin, Api]));
    try {
      const r = await post(app, '/doc', EICAR, { host: 'api.example.com' });
      expect([r.status, r.seen]).toEqual([403, []]);
      expect(r.scans).toBeGreaterThan(0);
    } finally {
      await app.close();
    }
  });

  it('Nest middleware that answers on a skipped route’s path is scanned with the module’s profile (AE2)', async () => {
    const legacy: string[] = [];
    @Injectable()
    class LegacyImport {
      use(req: IncomingMessage, res: { statusCode: number; end(b: string): void }, _next: () => void) {
        const chunks: Buffer[] = [];
        req.on('data', (c: Buffer) => chunks.push(c));
        req.on('end', () => {
          legacy.push(Buffer.concat(chunks).toString('latin1'));
          res.statusCode = 202;
          res.end('{"stored":true}');
        });
      }
    }
    @Controller('webhooks')
    class Webhooks {
      @SkipIcap()
      @Post(':provider')
      @HttpCode(204)
      hook() {}
    }
    @Module({ imports: [moduleWith({}, [Webhooks])], providers: [LegacyImport] })
    class WithLegacy implements NestModule {
      configure(consumer: MiddlewareConsumer): void {
        consumer.apply(LegacyImport).forRoutes({ path: 'webhooks/legacy', method: RequestMethod.POST });
      }
    }
    const app = await start('express', WithLegacy);
    try {
      const r = await post(app, '/webhooks/legacy', EICAR);
      expect(r.status).toBe(403);
      expect(legacy).toEqual([]);
      // The skipped route keeps its skip on its other paths.
      const skipped = await post(app, '/webhooks/github', EICAR);
      expect([skipped.status, skipped.scans]).toEqual([204, 0]);
    } finally {
      await app.close();
    }
  });

  it('a main.ts handler written like Nest’s wrapper is not taken for Nest’s middleware (AE3): never the Nest route’s fail-open', async () => {
    const legacy: string[] = [];
    // A "once per request" helper, the same idea (and words) as the wrapper Nest puts around its
    // middleware (made from source text, which the test's compiler would otherwise rewrite).
    type Handler = (req: IncomingMessage, res: express.Response, next: () => void) => void;
    const once = new Function(
      'middlewareFunction',
      `const handledRequests = new WeakSet();
      return (req, res, next) => {
        if (handledRequests.has(req)) return next();
        handledRequests.add(req);
        return middlewareFunction(req, res, next);
      };`,
    ) as (fn: Handler) => Handler;
    const app = await filesFailingOpen();
    // A route of main.ts: taken for Nest's middleware, it would be passed over for the Nest
    // route's fail-open.
    (app.getHttpAdapter().getInstance() as express.Express).post(
      '/files/import',
      once((req, res) => {
        const chunks: Buffer[] = [];
        req.on('data', (c: Buffer) => chunks.push(c));
        req.on('end', () => {
          legacy.push(Buffer.concat(chunks).toString('latin1'));
          res.status(202).json({ stored: true });
        });
      }),
    );
    await app.listen(0, '127.0.0.1');
    try {
      const r = await post(app, '/files/import', EICAR);
      expect([r.status, legacy]).toEqual([503, []]);
    } finally {
      await app.close();
    }
  });

  it('Nest’s middleware is known by identity, whatever its source reads like (AE4: Nest bundled and minified)', () => {
    const registered: Array<[string, unknown]> = [];
    const adapter = {
      createMiddlewareFactory: (_method: unknown) => (path: string, fn: unknown) =>
        registered.push([path, fn]),
    };
    expect(recordNestMiddleware(adapter)).toBe(true);
    // What MiddlewareModule registers, as a minifier leaves it.
    const r = new WeakSet<object>();
    const minified = (e: object, _t: unknown, n: () => void) => {
      if (!r.has(e)) r.add(e);
      n();
    };
    (adapter.createMiddlewareFactory('POST') as (p: string, f: unknown) => void)('/files', minified);
    expect(registered).toEqual([['/files', minified]]);
    expect(isNestMiddleware(minified)).toBe(true);
    // Registered elsewhere (main.ts), it is a handler of its own, even with Nest's words in it.
    const handledRequests = new WeakSet<object>();
    const middlewareFunction = (_req: object, _res: unknown, next: () => void) => next();
    const lookalike = (req: object, res: unknown, next: () => void) => {
      if (handledRequests.has(req)) return next();
      return middlewareFunction(req, res, next);
    };
    expect(isNestMiddleware(lookalike)).toBe(false);
  });
});
