import type { IncomingMessage, ServerResponse } from 'node:http';
import {
  createEngine,
  guardExpectContinue,
  type IcapEngine,
  type IcapProfile,
  type IcapRefusalOptions,
  requestHasBody,
} from '@icapkit/core';
import { icap as expressIcap, type IcapMiddleware } from '@icapkit/express';
import { icap as fastifyIcap } from '@icapkit/fastify';
import {
  Logger,
  type OnApplicationBootstrap,
  type OnApplicationShutdown,
  type OnModuleInit,
} from '@nestjs/common';
import { DEFAULT_ROUTE, NO_BODY, type RouteSetting, UNSCANNED_REQUEST } from './constants.js';
import { recordNestMiddleware } from './middleware-layers.js';
import {
  AMBIGUOUS_ROUTE,
  annotateHandlers,
  expressRouteSetting,
  settingOf,
  sharedPathConflict,
  unreadableRoutes,
  type Versioning,
} from './routes.js';

/**
 * Refusals, as in @icapkit/express and @icapkit/fastify (the platform's):
 * `onRefusal(refusal, req, res)` (Express `req`/`res`, Fastify `request`/`reply`) renders one
 * yourself, returning `{ status, headers, body }` or sending it; `refusals: 'error'` hands an
 * `IcapRefusalError` (`status`, `statusCode`, `expose`, `code`, `headers`, `log`) to Nest's
 * exception handling: the scan runs before Nest's routing, so it reaches the **global**
 * exception filters (`app.useGlobalFilters()`, `APP_FILTER`), not filters bound to a
 * controller or a handler (`@UseFilters`). Without a filter of yours, Nest's own answers
 * `{ statusCode, message }` with the refusal's status (the message only when `expose`).
 */
// biome-ignore lint/suspicious/noExplicitAny: the platform's request and response (Express or Fastify)
type NestRefusalOptions = IcapRefusalOptions<[req: any, res: any], unknown>;

export interface IcapModuleOptions extends NestRefusalOptions {
  /**
   * Fastify platform: a route that can receive a body but is not scanned first (added by a
   * plugin outside the module's reach): 'error' (default) makes start-up fail, 'warn' logs.
   * See @icapkit/fastify.
   */
  unscannedRoutes?: 'error' | 'warn' | undefined;
  /**
   * Express platform: answer requests with `Expect: 100-continue` that would be refused anyway
   * (413, 415) before they send their body (default true). Fastify: always.
   */
  expectContinue?: boolean | undefined;
}

/** What forRoot takes, and what a forRootAsync factory resolves to. */
export interface IcapModuleConfig {
  profile: IcapProfile;
  options?: IcapModuleOptions | undefined;
}

/** The parts of Nest's HTTP adapter the module uses (Express or Fastify). */
export interface HttpAdapterLike {
  getType?(): string;
  getInstance<T = unknown>(): T;
  getHttpServer?(): unknown;
}

export interface HandlerRef {
  controller: object;
  handler: object;
}

type Next = (err?: unknown) => void;

/** Which setting the Express dispatcher scanned a request with (read by the guard). */
const USED = Symbol('icapkit.nestjs.setting');

interface FastifyLike {
  register(plugin: unknown, options: unknown): PromiseLike<unknown>;
  icapEngine?: IcapEngine;
}

/**
 * The module's engines on the application's platform: on Express a middleware placed before
 * Nest's body parsers (added before `app.init()` registers them) that picks the route's engine;
 * on Fastify @icapkit/fastify registered on the Fastify instance (a `preParsing` hook, before
 * any content-type parser). Injectable: `engine` for health and status.
 */
export class IcapService implements OnModuleInit, OnApplicationBootstrap, OnApplicationShutdown {
  #platform: 'express' | 'fastify' | undefined;
  #adapter: HttpAdapterLike | undefined;
  #defaultMiddleware: IcapMiddleware | undefined;
  #routeMiddlewares = new Map<Partial<IcapProfile>, IcapMiddleware>();
  #fastify: FastifyLike | undefined;
  #unguard: (() => void) | undefined;
  #closed = false;
  #installError: unknown;
  /** The Express middleware the scan runs in (where its router layer is). */
  #dispatcher: unknown;

  /**
   * `versioning`: the application's versioning (Nest's ApplicationConfig), read when a request
   * comes: it decides which routes Nest may pass a request on from (routes.ts).
   */
  constructor(
    readonly config: IcapModuleConfig,
    private readonly handlers: HandlerRef[],
    private readonly versioning: () => Versioning | undefined = () => undefined,
  ) {}

  /** 'express' or 'fastify' once installed on the application's HTTP adapter. */
  get platform(): 'express' | 'fastify' | undefined {
    return this.#platform;
  }

  /** The engine of the module's profile (servers, health, status). */
  get engine(): IcapEngine {
    const engine = this.#defaultMiddleware?.engine ?? this.#fastify?.icapEngine;
    if (engine === undefined)
      throw new Error(
        '@icapkit/nestjs: the engine exists once the module is installed on an HTTP application',
      );
    return engine;
  }

  /**
   * Installs the scan on the adapter. Called while Nest creates the application (before
   * `app.init()` registers body parsers, middleware and routes).
   */
  install(adapter: HttpAdapterLike): PromiseLike<unknown> | undefined {
    if (this.#platform !== undefined) return undefined;
    const type = adapter.getType?.();
    this.#adapter = adapter;
    if (type === 'express') {
      this.#platform = 'express';
      annotateHandlers(this.handlers, false);
      recordNestMiddleware(adapter);
      this.#installExpress(adapter.getInstance());
      return undefined;
    }
    if (type === 'fastify') {
      this.#platform = 'fastify';
      annotateHandlers(this.handlers, true);
      const instance = adapter.getInstance<FastifyLike>();
      this.#fastify = instance;
      const { unscannedRoutes, onRefusal, refusals } = this.config.options ?? {};
      // Loaded before Nest adds the routes (its onRoute hook sees their config.icap): now when
      // the caller awaits it, or else by the register Nest awaits in app.init() (@fastify/middie).
      // (Not wrapped in a promise: calling then() on Fastify's thenable starts loading there and
      // then, which, besides Nest's own register in app.init(), leaves ready() waiting forever.)
      return instance.register(fastifyIcap, {
        ...this.config.profile,
        unscannedRoutes: unscannedRoutes ?? 'error',
        onRefusal,
        refusals,
      });
    }
    throw new Error(
      `@icapkit/nestjs supports the Express and Fastify platforms, not ${JSON.stringify(type ?? 'unknown')}`,
    );
  }

  /**
   * install() for an adapter set after the providers were created (@nestjs/testing): an error
   * (a bad profile, another platform) is kept and thrown by `app.init()` (onModuleInit) rather
   * than from the callback that delivered the adapter.
   */
  installLater(adapter: HttpAdapterLike): void {
    try {
      // Not awaited (see install): Nest's own register in app.init() loads the plugin, and a
      // failure to load makes app.init() fail.
      this.install(adapter);
    } catch (err) {
      this.#installError = err;
    }
  }

  onModuleInit(): void {
    if (this.#installError !== undefined) throw this.#installError;
  }

  #installExpress(app: unknown): void {
    const profile = this.config.profile;
    const engine = createEngine(profile);
    this.#defaultMiddleware = expressIcap(profile, {
      engine,
      ...this.#refusalOptions(),
      unscannedRoute: (req) => (AMBIGUOUS.has(req) ? AMBIGUITY : undefined),
    });
    // One engine per distinct override, created now so that a bad override fails start-up.
    for (const { handler } of this.handlers) {
      const setting = settingOf(handler);
      if (setting !== undefined && setting !== false) this.#middlewareFor(setting);
    }
    const dispatcher = (req: IncomingMessage, res: ServerResponse, next: Next): void => {
      const setting = expressRouteSetting(app, req, dispatcher, this.versioning(), profile);
      const used = req as unknown as Record<symbol, RouteSetting | typeof NO_BODY>;
      if (setting !== AMBIGUOUS_ROUTE) used[USED] = setting;
      if (setting === false) {
        next();
        return;
      }
      if (setting === AMBIGUOUS_ROUTE) {
        if (requestHasBody(req)) {
          // Refused by the module's middleware, as its other refusals: onRefusal, refusals, the log record.
          warnAmbiguous(req);
          AMBIGUOUS.add(req);
        } else {
          // Nothing to scan (a GET): any of the routes may take it, the guard lets it through.
          used[USED] = NO_BODY;
        }
      }
      const mw = this.#middlewareFor(setting === AMBIGUOUS_ROUTE ? DEFAULT_ROUTE : setting);
      if (mw === undefined) {
        next(new Error('@icapkit/nestjs: the module is closed'));
        return;
      }
      mw(req, res, next);
    };
    Object.defineProperty(dispatcher, 'name', { value: 'icapkitScan' });
    this.#dispatcher = dispatcher;
    (app as { use(fn: unknown): void }).use(dispatcher);
    aheadOfUserLayers(app, dispatcher);
  }

  #refusalOptions(): NestRefusalOptions {
    const { onRefusal, refusals } = this.config.options ?? {};
    return { onRefusal, refusals };
  }

  #middlewareFor(setting: Exclude<RouteSetting, false>): IcapMiddleware | undefined {
    if (this.#closed) return undefined;
    if (setting === DEFAULT_ROUTE) return this.#defaultMiddleware;
    let mw = this.#routeMiddlewares.get(setting);
    if (mw === undefined) {
      mw = expressIcap({ ...this.config.profile, ...setting }, this.#refusalOptions());
      this.#routeMiddlewares.set(setting, mw);
    }
    return mw;
  }

  /**
   * The setting a request was scanned with (undefined: not scanned), for the guard's check
   * that it is the one of the handler it reached.
   */
  settingUsed(req: unknown): RouteSetting | typeof NO_BODY | undefined {
    if (this.#platform === 'express') {
      return (req as Record<symbol, RouteSetting | typeof NO_BODY | undefined>)[USED];
    }
    if (this.#platform === 'fastify') {
      const r = req as { icap?: unknown; routeOptions?: { config?: { icap?: RouteSetting } } };
      if (r.icap === null || r.icap === undefined)
        return r.routeOptions?.config?.icap === false ? false : undefined;
      return r.routeOptions?.config?.icap ?? DEFAULT_ROUTE;
    }
    return undefined;
  }

  /**
   * Express: the routes are registered now. Scanned routes on one path with different settings
   * fail start-up (routes.ts, `sharedPathConflict`); then the start-up check of every engine
   * (the profile's `startupCheck`: with 'fail', the default, a server that does not answer
   * OPTIONS makes `app.init()` / `app.listen()` reject, as on Fastify, where @icapkit/fastify
   * runs it); then the `Expect: 100-continue` guard.
   */
  async onApplicationBootstrap(): Promise<void> {
    if (this.#platform !== 'express') return;
    const instance = this.#adapter?.getInstance();
    const conflict =
      unreadableRoutes(instance) ?? sharedPathConflict(instance, this.config.profile, this.versioning());
    if (conflict !== undefined) throw new Error(conflict);
    const mws = [this.#defaultMiddleware, ...this.#routeMiddlewares.values()];
    await Promise.all(mws.map((mw) => mw?.ready()));
    if (this.config.options?.expectContinue === false) return;
    const server = this.#adapter?.getHttpServer?.() as Parameters<typeof guardExpectContinue>[0] | undefined;
    const app = this.#adapter?.getInstance();
    if (server === undefined || server === null || typeof (server as { on?: unknown }).on !== 'function')
      return;
    // Refusals the application shapes go through the middleware (after 100 Continue).
    const { onRefusal, refusals } = this.config.options ?? {};
    const shaped = onRefusal !== undefined || refusals === 'error';
    this.#unguard = guardExpectContinue(server, async (req) => {
      if (shaped) return null;
      const setting = expressRouteSetting(app, req, this.#dispatcher, this.versioning(), this.config.profile);
      if (setting === false || (setting === AMBIGUOUS_ROUTE && !requestHasBody(req))) return null;
      if (setting !== AMBIGUOUS_ROUTE) return this.#middlewareFor(setting)?.engine.preflight(req) ?? null;
      // 403 instead of 100 Continue: the body is never sent.
      warnAmbiguous(req);
      return this.#defaultMiddleware?.engine.preflight(req, { unscannedRoute: AMBIGUITY }) ?? null;
    });
  }

  /**
   * Closes the engines (Express; on Fastify the plugin closes its own with the Fastify
   * instance). After the HTTP server closed (app.close() calls this hook last), so in-flight
   * scans finish first.
   */
  async onApplicationShutdown(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#unguard?.();
    this.#unguard = undefined;
    const mws = [this.#defaultMiddleware, ...this.#routeMiddlewares.values()];
    await Promise.all(mws.map((mw) => mw?.close()));
  }
}

/**
 * An Express application given to Nest already built (`new ExpressAdapter(server)`, the
 * serverless pattern) may hold middleware and routes from before Nest existed: `use()` appends
 * the scan after them, and they would read bodies it never scanned (a route on it got uploads
 * unscanned; a `json` parser on it made Nest skip its own and every scanned JSON upload fail).
 * So the scan's layer is moved ahead of them, behind only Nest's own request-hook layer (moved
 * to the front with it, where it is in an application Nest creates).
 */
function aheadOfUserLayers(app: unknown, dispatcher: unknown): void {
  const a = app as {
    router?: { stack?: Array<{ handle?: unknown }> };
    _router?: { stack?: Array<{ handle?: unknown }> };
  };
  const stack = (a._router ?? a.router)?.stack;
  if (!Array.isArray(stack)) return;
  const at = stack.findIndex((l) => l.handle === dispatcher);
  if (at <= 0) return;
  // Nest's hook layer (ExpressAdapter's constructor adds it: after a prebuilt app's layers).
  const hook = stack.findIndex((l, i) => {
    if (i >= at || typeof l.handle !== 'function') return false;
    const source = String(l.handle);
    return source.includes('this.onRequestHook') && source.includes('this.onResponseHook');
  });
  const [scan] = stack.splice(at, 1);
  const front = hook === -1 ? [] : stack.splice(hook, 1);
  stack.unshift(...front, scan!);
}

const logger = new Logger('IcapModule');

/**
 * A request that routes scanned with different settings may take, Nest deciding which only after
 * the scan (versions, hosts; the start-up check catches the usual shapes): the client could
 * choose the setting. The module's middleware refuses it whatever its rules say (403,
 * ICAP_ERR_UNSCANNED_ROUTE) before its body is read, and before `100 Continue`.
 */
const AMBIGUOUS = new WeakSet<object>();
const AMBIGUITY =
  'this request may reach routes scanned with different settings (Nest tells them apart only after the scan: versions, hosts)';

function warnAmbiguous(req: IncomingMessage): void {
  logger.warn(
    `${UNSCANNED_REQUEST}: ${req.method ?? 'GET'} ${routeOf(req.url)} may reach routes scanned with different settings (Nest tells them apart after the scan: versions, hosts); refused with 403. Give those routes the same settings.`,
  );
}

/** The path of a request target, for a log line (no query: it may carry secrets). */
function routeOf(url: string | undefined): string {
  const path = (url ?? '/').split('?')[0]!;
  return path.length > 200 ? `${path.slice(0, 200)}…` : path;
}
