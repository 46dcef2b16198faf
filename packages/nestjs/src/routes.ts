import type { IncomingMessage } from 'node:http';
import type { IcapProfile } from '@icapkit/core';
import {
  DEFAULT_ROUTE,
  FASTIFY_ROUTE_CONFIG_METADATA,
  ICAP_OPTIONS_METADATA,
  ICAP_ROUTE_METADATA,
  ICAP_SKIP_METADATA,
  type RouteSetting,
} from './constants.js';

type Overrides = Partial<IcapProfile>;

// Reflect metadata (reflect-metadata, which @nestjs/common loads).
interface ReflectMetadata {
  getMetadata(key: unknown, target: object): unknown;
  getOwnMetadata(key: unknown, target: object): unknown;
  defineMetadata(key: unknown, value: unknown, target: object): void;
}
const meta = Reflect as unknown as ReflectMetadata;

// One merged object per (controller overrides, handler overrides) pair, so that handlers with
// the same settings share one engine.
const merged = new WeakMap<Overrides, WeakMap<Overrides, Overrides>>();
function merge(outer: Overrides, inner: Overrides): Overrides {
  let byInner = merged.get(outer);
  if (byInner === undefined) {
    byInner = new WeakMap();
    merged.set(outer, byInner);
  }
  let m = byInner.get(inner);
  if (m === undefined) {
    m = { ...outer, ...inner };
    byInner.set(inner, m);
  }
  return m;
}

/** A handler's setting from its own decorators and its controller's (the handler's win). */
export function routeSetting(controller: object, handler: object): RouteSetting {
  const skip = meta.getMetadata(ICAP_SKIP_METADATA, handler) === true;
  const own = meta.getMetadata(ICAP_OPTIONS_METADATA, handler) as Overrides | undefined;
  const classSkip = meta.getMetadata(ICAP_SKIP_METADATA, controller) === true;
  const classOwn = meta.getMetadata(ICAP_OPTIONS_METADATA, controller) as Overrides | undefined;
  if (skip) return false;
  if (own !== undefined) return classOwn === undefined ? own : merge(classOwn, own);
  if (classSkip) return false;
  if (classOwn !== undefined) return classOwn;
  return DEFAULT_ROUTE;
}

/** The setting the module wrote on a handler (or on the route callback Nest copied it to). */
export function settingOf(handler: unknown): RouteSetting | undefined {
  if (typeof handler !== 'function') return undefined;
  return meta.getMetadata(ICAP_ROUTE_METADATA, handler) as RouteSetting | undefined;
}

/**
 * Writes each handler's setting on the handler (read back by the Express dispatcher and the
 * guard) and, for Fastify, into the route config @icapkit/fastify reads (`config.icap`).
 * Runs before Nest registers the routes, which copy the handler's metadata.
 */
export function annotateHandlers(
  controllers: Iterable<{ controller: object; handler: object }>,
  fastify: boolean,
): void {
  for (const { controller, handler } of controllers) {
    const setting = routeSetting(controller, handler);
    meta.defineMetadata(ICAP_ROUTE_METADATA, setting, handler);
    if (!fastify) continue;
    const config = meta.getOwnMetadata(FASTIFY_ROUTE_CONFIG_METADATA, handler) as
      | Record<string, unknown>
      | undefined;
    const rest = { ...(config ?? {}) };
    delete rest.icap;
    meta.defineMetadata(
      FASTIFY_ROUTE_CONFIG_METADATA,
      setting === DEFAULT_ROUTE ? rest : { ...rest, icap: setting },
      handler,
    );
  }
}

interface ExpressLayer {
  route?: {
    stack?: Array<{ handle?: unknown }>;
    _handlesMethod?(m: string): boolean;
    _handles_method?(m: string): boolean;
  };
  match?(path: string): boolean;
}

/**
 * The path Express's router matches a request on (parseurl's pathname), or null when it is not
 * a plain origin-form path (absolute-form, spaces, '#'): those are scanned with the module's
 * profile.
 */
function routerPath(url: string | undefined): string | null {
  if (url === undefined || url[0] !== '/') return null;
  const q = url.indexOf('?');
  const path = q === -1 ? url : url.slice(0, q);
  return /[\t\n\f\r #\u00a0\ufeff]/u.test(path) ? null : path;
}

/**
 * The setting of the first route of the Express application's router that matches the request
 * (path and method), as Express will dispatch it; the module's profile when no Nest route
 * matches. Read before Nest's body parsers, which run before routing. The guard checks at the
 * handler that the setting used was the handler's own (URL rewrites, versioned routes sharing a
 * path).
 */
export function expressRouteSetting(app: unknown, req: IncomingMessage): RouteSetting {
  const a = app as { router?: { stack?: ExpressLayer[] }; _router?: { stack?: ExpressLayer[] } };
  let stack: ExpressLayer[] | undefined;
  try {
    // Express 5: app.router; Express 4: app._router.
    stack = (a._router ?? a.router)?.stack;
  } catch {
    stack = undefined;
  }
  const path = routerPath(req.url);
  if (stack === undefined || path === null) return DEFAULT_ROUTE;
  const method = req.method ?? 'GET';
  for (const layer of stack) {
    const route = layer.route;
    if (route === undefined || typeof layer.match !== 'function') continue;
    let matched: boolean;
    try {
      matched = layer.match(path);
    } catch {
      // A path Express cannot decode: it answers 400 itself.
      return DEFAULT_ROUTE;
    }
    if (!matched) continue;
    const handles =
      typeof route._handlesMethod === 'function'
        ? route._handlesMethod(method)
        : typeof route._handles_method === 'function'
          ? route._handles_method(method)
          : true;
    if (!handles) continue;
    for (const l of route.stack ?? []) {
      const setting = settingOf(l.handle);
      if (setting !== undefined) return setting;
    }
    return DEFAULT_ROUTE;
  }
  return DEFAULT_ROUTE;
}
