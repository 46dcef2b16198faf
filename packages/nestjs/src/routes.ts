import type { IncomingMessage } from 'node:http';
import { parse as parseUrl } from 'node:url';
import type { IcapProfile } from '@icapkit/core';
import { VERSION_NEUTRAL } from '@nestjs/common';
import {
  DEFAULT_ROUTE,
  FASTIFY_ROUTE_CONFIG_METADATA,
  ICAP_FILTERS_METADATA,
  ICAP_LABEL_METADATA,
  ICAP_OPTIONS_METADATA,
  ICAP_ROUTE_METADATA,
  ICAP_SKIP_METADATA,
  type RouteSetting,
} from './constants.js';
import { isNestMiddleware } from './middleware-layers.js';

/**
 * The routes that may take a request are scanned differently, and which one takes it is decided
 * after the scan (by Nest's version or host filters): the request is refused before its body is read.
 */
export const AMBIGUOUS_ROUTE = 'ambiguous' as const;

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

/** @nestjs/common's metadata keys (`@Version()`, `@Controller({ version, host })`). */
const NEST_VERSION_METADATA = '__version__';
const NEST_HOST_METADATA = 'host';

/**
 * A handler's version and host (its own or its controller's; undefined: none), as Nest filters
 * requests by them. Routes with the same filters take the same requests: one Nest passes a
 * request on from, the next passes on too.
 */
interface RouteFilters {
  version: unknown;
  host: unknown;
}

/** Filters of a function several controllers share, which differ: like no other route's. */
const MIXED = Symbol('icapkit.mixed-filters');

function filtersOf(route: ExpressRoute): RouteFilters | undefined {
  for (const l of route.stack ?? []) {
    if (typeof l.handle !== 'function') continue;
    const f = meta.getMetadata(ICAP_FILTERS_METADATA, l.handle) as RouteFilters | undefined;
    if (f !== undefined) return f;
  }
  return undefined;
}

/** Two routes Nest filters alike: the later never takes what the earlier passes on. */
function sameFilters(a: ExpressRoute, b: ExpressRoute): boolean {
  const fa = filtersOf(a);
  const fb = filtersOf(b);
  return (
    fa !== undefined &&
    fb !== undefined &&
    fa.version !== MIXED &&
    versionKey(fa.version) === versionKey(fb.version) &&
    sameValue(fa.host, fb.host)
  );
}

/** A version as Nest matches it: one or several (in any order), VERSION_NEUTRAL among them. */
function versionKey(v: unknown): string | undefined {
  if (v === undefined) return undefined;
  return (Array.isArray(v) ? v : [v])
    .map((x) => (typeof x === 'symbol' ? x.toString() : String(x)))
    .sort()
    .join('\u0000');
}

/**
 * The application's versioning, as far as it filters routes: its type (0 is URI versioning,
 * which gives each version a path of its own and no filter) and whether it has a default
 * version (then every route without one of its own is versioned too).
 */
export interface Versioning {
  type: number;
  defaultVersion?: unknown;
}

/**
 * Whether Nest may pass a request on from this route to the next one matching its path: a host
 * filter (`@Controller({ host })`), or a version filter (versioning by header, media type or a
 * custom extractor, for a route with a version: its own, its controller's or the default).
 */
function mayPassOn(route: ExpressRoute, versioning: Versioning | undefined): boolean {
  const f = filtersOf(route);
  if (f === undefined) return false;
  if (f.host !== undefined) return true;
  if (versioning === undefined || versioning.type === 0) return false;
  // VERSION_NEUTRAL alone: Nest registers the route without a version filter.
  if (f.version === VERSION_NEUTRAL) return false;
  return f.version !== undefined || versioning.defaultVersion !== undefined;
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
 *
 * A handler is a function, and several controllers can share one: a method inherited from a
 * base class (the "CRUD base controller") is the same function on every controller that does
 * not override it. Nest copies that one function's metadata onto every route it registers for
 * it, so the routes of all those controllers get one setting. When the controllers' decorators
 * resolve to different settings for it (`@SkipIcap()` on one, not on another), the last one
 * written would have decided for all: a scanned controller's route left unscanned. Such an
 * application fails to start, naming the controllers and the fix, instead.
 */
export function annotateHandlers(
  controllers: Iterable<{ controller: object; handler: object }>,
  fastify: boolean,
): void {
  const resolved = new Map<object, { controller: object; setting: RouteSetting; filters: RouteFilters }>();
  for (const { controller, handler } of controllers) {
    const setting = routeSetting(controller, handler);
    const version =
      meta.getMetadata(NEST_VERSION_METADATA, handler) ?? meta.getMetadata(NEST_VERSION_METADATA, controller);
    const filters: RouteFilters = { version, host: meta.getMetadata(NEST_HOST_METADATA, controller) };
    const first = resolved.get(handler);
    if (first === undefined) resolved.set(handler, { controller, setting, filters });
    else if (!sameSetting(first.setting, setting))
      throw new Error(sharedHandlerMessage(handler, first.controller, first.setting, controller, setting));
    // One function for several controllers: if their filters differ, it is like no other route.
    else if (!sameValue(first.filters, filters)) first.filters = { version: MIXED, host: true };
  }
  for (const [handler, { controller, setting, filters }] of resolved) {
    meta.defineMetadata(ICAP_ROUTE_METADATA, setting, handler);
    meta.defineMetadata(ICAP_LABEL_METADATA, `${nameOf(controller)}.${nameOf(handler)}`, handler);
    meta.defineMetadata(ICAP_FILTERS_METADATA, filters, handler);
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

/** Two settings that scan alike: the same, or overrides with the same fields and values. */
function sameSetting(a: RouteSetting, b: RouteSetting): boolean {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object') return false;
  return sameValue(a, b);
}

/** Deep equality of plain data; past `depth` 16 (or a cycle) two objects count as different. */
function sameValue(a: unknown, b: unknown, depth = 0): boolean {
  if (Object.is(a, b)) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null || depth > 16) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  const proto = Object.getPrototypeOf(a);
  if (proto !== Object.getPrototypeOf(b)) return false;
  // A RegExp by its source and flags (a host pattern); other objects that are not plain data
  // (no own keys to compare: Date, Map...) only when they are the same object.
  if (a instanceof RegExp) return String(a) === String(b);
  if (!Array.isArray(a) && proto !== Object.prototype && proto !== null) return false;
  const keys = Object.keys(a);
  if (keys.length !== Object.keys(b).length) return false;
  return keys.every(
    (k) =>
      Object.hasOwn(b, k) &&
      sameValue((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k], depth + 1),
  );
}

function describeSetting(setting: RouteSetting): string {
  if (setting === false) return 'not scanned (@SkipIcap())';
  if (setting === DEFAULT_ROUTE) return "scanned with the module's profile";
  return `scanned with @IcapOptions({ ${Object.keys(setting).join(', ')} })`;
}

function nameOf(f: object): string {
  return String((f as { name?: unknown }).name || '(anonymous)');
}

function sharedHandlerMessage(
  handler: object,
  a: object,
  aSetting: RouteSetting,
  b: object,
  bSetting: RouteSetting,
): string {
  const method = nameOf(handler);
  return (
    `@icapkit/nestjs: ${nameOf(a)}.${method} and ${nameOf(b)}.${method} are one function ` +
    `(a method both inherit), and their decorators give it different scan settings: ${describeSetting(aSetting)} ` +
    `for ${nameOf(a)}, ${describeSetting(bSetting)} for ${nameOf(b)}. Nest registers every route of ` +
    `one function with the same metadata, so the module cannot scan them differently. Override ` +
    `${method} in the controllers that need their own setting (\`${method}(...args) { return ` +
    `super.${method}(...args); }\`, with its route decorators), or give them the same setting.`
  );
}

interface ExpressRoute {
  path?: unknown;
  methods?: Record<string, boolean | undefined>;
  stack?: Array<{ handle?: unknown }>;
  _handlesMethod?(m: string): boolean;
  _handles_method?(m: string): boolean;
}

interface ExpressLayer {
  route?: ExpressRoute;
  handle?: unknown;
  match?(path: string): unknown;
  /** Mounted at '/' by `use()`: Express 5's router (`slash`), Express 4's (`regexp.fast_slash`). */
  slash?: boolean;
  regexp?: { fast_slash?: boolean };
}

/**
 * The path Express's router matches a request on: parseurl's pathname, which is the target up to
 * its `?` for a plain origin-form target, and else what Node's `url.parse` reads (parseurl's
 * fallback: a `#` fragment dropped, an absolute-form target's path, whitespace trimmed or
 * escaped), so that `/files/upload#x` and `http://a/files/upload` find the route Express
 * dispatches them to (campaign-br BR2). Null when Express routes it nowhere (no path, or
 * `url.parse` throws: its router answers 404 then).
 */
function routerPath(url: string | undefined): string | null {
  if (url === undefined) return null;
  if (url[0] === '/' && !/[\t\n\f\r #\u00a0\ufeff]/u.test(url)) {
    const q = url.indexOf('?');
    return q === -1 ? url : url.slice(0, q);
  }
  try {
    return parseUrl(url).pathname ?? null;
  } catch {
    return null;
  }
}

/** The layer matches the path; true when Express cannot tell (it answers 400 itself then). */
function layerMatches(layer: ExpressLayer, path: string): boolean {
  if (typeof layer.match !== 'function') return false;
  try {
    return Boolean(layer.match(path));
  } catch {
    return true;
  }
}

function routeHandles(route: ExpressRoute, method: string): boolean {
  if (typeof route._handlesMethod === 'function') return route._handlesMethod(method);
  if (typeof route._handles_method === 'function') return route._handles_method(method);
  return true;
}

/** No application serves this path: a `use()` layer that matches it is mounted on every path. */
const EVERY_PATH_PROBE = '/.icapkit-every-path-probe/x';

/** Routers nested deeper than this are not read: such a request is scanned. */
const MAX_ROUTER_DEPTH = 8;

/**
 * A `use()` layer that matches the path may answer the request itself instead of passing it on
 * to a route after it: a handler mounted on a path or a pattern (`app.use('/legacy/upload',
 * handler)`, Nest middleware bound to routes), a mounted sub-application, a Router with a route
 * or such a layer for the path. Middleware mounted on every path (`app.use(cors())`, Nest's
 * body parsers, `forRoutes('*')`) passes requests on: one that ended them would end every route's.
 */
function mayAnswer(layer: ExpressLayer, path: string, method: string, depth: number): boolean {
  if (!layerMatches(layer, path)) return false;
  const handle = (typeof layer.handle === 'function' ? layer.handle : undefined) as
    | { name?: unknown; stack?: unknown }
    | undefined;
  // Express wraps a sub-application in `mounted_app`; its routes cannot be read from here.
  if (handle?.name === 'mounted_app') return true;
  const atRoot = layer.slash === true || layer.regexp?.fast_slash === true;
  if (handle !== undefined && Array.isArray(handle.stack)) {
    // A Router at '/' sees the same path: read its own layers. Elsewhere it sees a cut path.
    if (!atRoot || depth >= MAX_ROUTER_DEPTH) return true;
    return (handle.stack as ExpressLayer[]).some((l) =>
      l.route !== undefined
        ? layerMatches(l, path) && routeHandles(l.route, method)
        : mayAnswer(l, path, method, depth + 1),
    );
  }
  return !atRoot && !layerMatches(layer, EVERY_PATH_PROBE);
}

/**
 * The setting a request is scanned with on Express, from the routes of the Express
 * application's router that match it (path and method), in the order Express dispatches: the
 * first route's, unless Nest may pass the request on from it (below); the module's profile when
 * no Nest route matches. Read before Nest's body parsers, which run before routing. The guard
 * checks at the handler that the setting used scans as the handler's own (URL rewrites).
 *
 * Routes whose paths overlap may be told apart only once Nest runs them: a version filter
 * (versioning by header, media type or a custom extractor, `versioning`) or a host filter
 * (`@Controller({ host })`) passes a request on to the next matching route when it is not its
 * own (see {@link mayPassOn}). So when the first matching route is `@SkipIcap()` and may pass
 * the request on, a later matching route that is scanned may be the one it reaches: it is
 * scanned with that route's setting (the skipped route, when reached, accepts a scanned
 * request), never read unscanned by the body parsers, middleware and guards that run before
 * the handler. (Scanned routes that overlap so with different settings make start-up fail:
 * {@link sharedPathConflict}.)
 *
 * A route's `@SkipIcap()` holds only when the request reaches that route: when a `use()` layer
 * after the scan (`self`) and before the route may answer it itself (see {@link mayAnswer}: a
 * legacy handler main.ts mounted on a path the skipped route's pattern also matches), the
 * request is scanned with the module's profile, since no guard runs for a handler that is not
 * Nest's. The skipped route, when reached, accepts a scanned request too.
 */
export function expressRouteSetting(
  app: unknown,
  req: IncomingMessage,
  self?: unknown,
  versioning?: Versioning,
  profile: Partial<IcapProfile> = {},
): RouteSetting | typeof AMBIGUOUS_ROUTE {
  const stack = routerStack(app);
  const path = routerPath(req.url);
  if (stack === undefined || path === null) return DEFAULT_ROUTE;
  const method = req.method ?? 'GET';
  // Layers before the scan have passed the request on already.
  const at = self === undefined ? -1 : stack.findIndex((l) => l.handle === self);
  let answeredBefore = false;
  // Nest middleware bound to the path before the first route: it passes requests on to a route
  // scanned for them, but bound to a skipped route's path it could answer one itself.
  let middlewareBefore = false;
  // The routes that may take the request, in order: up to the first Nest route that cannot pass
  // it on. Nest's own middleware passes it on; a route main.ts added may answer it itself.
  let scanned: RouteSetting | undefined;
  let skippedFirst = false;
  let foreign = false;
  const seen: ExpressRoute[] = [];
  for (let i = at + 1; i < stack.length; i++) {
    const layer = stack[i]!;
    const route = layer.route;
    if (route === undefined) {
      if (seen.length === 0 && !answeredBefore && mayAnswer(layer, path, method, 0)) {
        if (isNestMiddleware(layer.handle)) middlewareBefore = true;
        else answeredBefore = true;
      }
      continue;
    }
    if ((route.stack ?? []).some((l) => isNestMiddleware(l.handle))) {
      if (seen.length === 0 && routeMatches(layer, path, method) !== false) middlewareBefore = true;
      continue;
    }
    const matched = routeMatches(layer, path, method);
    // A path Express cannot decode: it answers 400 itself.
    if (matched === undefined) return scanned ?? DEFAULT_ROUTE;
    if (!matched) continue;
    const setting = nestSettingOf(route);
    if (setting === undefined) {
      // A handler main.ts added (no guard checks it): owed the module's profile.
      if (seen.length === 0) return DEFAULT_ROUTE;
      foreign = true;
      continue;
    }
    // Filtered as an earlier route is: it never takes what that one passes on.
    if (seen.some((r) => sameFilters(r, route))) continue;
    if (seen.length === 0) {
      if (setting !== false && !mayPassOn(route, versioning)) return setting;
      skippedFirst = setting === false;
    }
    seen.push(route);
    if (setting !== false) {
      // Two routes that may take it, scanned differently: the client could choose (sharedPathConflict).
      if (scanned !== undefined && !sameScan(scanned, setting, profile)) return AMBIGUOUS_ROUTE;
      scanned ??= setting;
    }
    if (!mayPassOn(route, versioning)) break;
  }
  // A handler that may answer before the routes (main.ts) is owed the module's profile.
  if (foreign || (skippedFirst && (answeredBefore || middlewareBefore))) {
    if (scanned === undefined || sameScan(scanned, DEFAULT_ROUTE, profile)) return DEFAULT_ROUTE;
    return AMBIGUOUS_ROUTE;
  }
  return scanned ?? (skippedFirst ? false : DEFAULT_ROUTE);
}

/** The Express application's router layers (Express 5: app.router; Express 4: app._router). */
function routerStack(app: unknown): ExpressLayer[] | undefined {
  const a = app as { router?: { stack?: ExpressLayer[] }; _router?: { stack?: ExpressLayer[] } };
  try {
    return (a._router ?? a.router)?.stack;
  } catch {
    return undefined;
  }
}

/** Whether a route layer takes the request (path and method); undefined when Express cannot tell. */
function routeMatches(layer: ExpressLayer, path: string, method: string): boolean | undefined {
  if (typeof layer.match !== 'function') return false;
  try {
    if (!layer.match(path)) return false;
  } catch {
    return undefined;
  }
  return routeHandles(layer.route!, method);
}

/** The setting the module wrote on a route's callback; the module's profile for a route not Nest's. */
function routeSettingOf(route: ExpressRoute): RouteSetting {
  return nestSettingOf(route) ?? DEFAULT_ROUTE;
}

/** The setting the module wrote on a route's callback, or undefined for a route not Nest's. */
function nestSettingOf(route: ExpressRoute): RouteSetting | undefined {
  for (const l of route.stack ?? []) {
    const setting = settingOf(l.handle);
    if (setting !== undefined) return setting;
  }
  return undefined;
}

function samePattern(a: unknown, b: unknown): boolean {
  return a === b || (a instanceof RegExp && b instanceof RegExp && String(a) === String(b));
}

/** Whether two routes share a method (`_all`: `@All()`). */
function shareMethod(a: ExpressRoute, b: ExpressRoute): boolean {
  const am = a.methods ?? {};
  const bm = b.methods ?? {};
  if (am._all === true || bm._all === true) return true;
  // A GET route takes HEAD requests too.
  const has = (ms: typeof am, m: string) => ms[m] === true || (m === 'head' && ms.get === true);
  return ['get', 'head', ...Object.keys(am)].some((m) => has(am, m) && has(bm, m));
}

/**
 * Start-up check of the Express application's routes: Nest routes that may take the same
 * request (the same path, or patterns that overlap: `/files/:id` and `/files/upload`; a shared
 * method), that Nest tells apart only when it runs them (the earlier one may pass requests on,
 * see {@link mayPassOn}), and that are scanned with different settings (another service,
 * failure action, limit). The scan is chosen before the body is read, from the path: it could
 * not know which of them a request will reach, and a client could choose among them (one
 * header, `X-API-Version: 1`, for the route that fails open). A message naming them, or
 * undefined. (Routes that differ only by `@SkipIcap()` are fine: see
 * {@link expressRouteSetting}. Settings compare by what they change in `profile`.)
 */
export function sharedPathConflict(
  app: unknown,
  profile: Partial<IcapProfile>,
  versioning: Versioning | undefined,
): string | undefined {
  const layers = (routerStack(app) ?? []).filter((l) => l.route !== undefined);
  for (let i = 0; i < layers.length; i++) {
    const a = layers[i]!.route!;
    const aSetting = routeSettingOf(a);
    // (Routes that are not Nest's, Nest middleware bound to routes among them, are left to the
    // request-time check: expressRouteSetting refuses what they make ambiguous.)
    if (aSetting === false || nestSettingOf(a) === undefined || !mayPassOn(a, versioning)) continue;
    for (let j = i + 1; j < layers.length; j++) {
      const b = layers[j]!.route!;
      if (!shareMethod(a, b) || sameFilters(a, b) || !overlap(layers[i]!, layers[j]!)) continue;
      const bSetting = nestSettingOf(b);
      if (bSetting === undefined || bSetting === false || sameScan(aSetting, bSetting, profile)) continue;
      const label = (r: ExpressRoute) =>
        (r.stack ?? [])
          .map((l) =>
            typeof l.handle === 'function' ? meta.getMetadata(ICAP_LABEL_METADATA, l.handle) : undefined,
          )
          .find((x) => typeof x === 'string') ?? 'a route';
      return (
        `@icapkit/nestjs: ${String(label(a))} (${String(a.path)}) and ${String(label(b))} (${String(b.path)}) may ` +
        `take the same requests with different scan settings: ${describeSetting(aSetting)}, and ${describeSetting(bSetting)}. On ` +
        'Express the scan is chosen from the path before Nest tells such routes apart (versioning by header, ' +
        'media type or a custom extractor; @Controller({ host })), so it cannot know which one a request ' +
        'will reach, and a client could pick the other setting. Give such routes the same settings ' +
        "(@SkipIcap() on some of them is fine: their requests are then scanned with the others' " +
        'setting), or paths that do not overlap (URI versioning).'
      );
    }
  }
  return undefined;
}

/**
 * Whether two route layers may match one path: the same pattern, or one matching a path made
 * of the other's pattern (its parameters and wildcards filled in, optional parts left out).
 */
function overlap(a: ExpressLayer, b: ExpressLayer): boolean {
  if (samePattern(a.route!.path, b.route!.path) || segmentsMayMeet(a.route!.path, b.route!.path)) return true;
  const sample = (p: unknown) =>
    typeof p === 'string'
      ? p
          .replace(/\{[^}]*\}/g, '')
          .replace(/[:*][A-Za-z0-9_$]+/g, 'x')
          .replace(/\*/g, 'x')
      : undefined;
  const as = sample(a.route!.path);
  const bs = sample(b.route!.path);
  return (bs !== undefined && layerMatches(a, bs)) || (as !== undefined && layerMatches(b, as));
}

/**
 * Whether two path patterns may match one path, segment by segment: the same number of segments,
 * each pair the same or one of them with a parameter in it (`:name.json` and `upload.:format`
 * both take `upload.json`); a pattern with an optional part or a wildcard may meet any other.
 * Errs on "may": it only decides which routes the start-up check compares.
 */
function segmentsMayMeet(a: unknown, b: unknown): boolean {
  if (typeof a !== 'string' || typeof b !== 'string') return true;
  if (/[{*(]/.test(a) || /[{*(]/.test(b)) return true;
  const as = a.split('/');
  const bs = b.split('/');
  return (
    as.length === bs.length && as.every((x, i) => x === bs[i] || x.includes(':') || bs[i]!.includes(':'))
  );
}

/**
 * Whether two settings scan alike: the same, or overriding the same fields of `profile` with
 * the same values (an override equal to the profile's own value changes nothing).
 */
export function sameScan(a: RouteSetting, b: RouteSetting, profile: Partial<IcapProfile>): boolean {
  if (a === b) return true;
  if (a === false || b === false) return false;
  const changes = (s: Exclude<RouteSetting, false>) =>
    s === DEFAULT_ROUTE
      ? {}
      : Object.fromEntries(
          Object.entries(s).filter(
            ([k, v]) => v !== undefined && !sameValue(v, (profile as Record<string, unknown>)[k]),
          ),
        );
  return sameValue(changes(a), changes(b));
}

/**
 * Start-up check: Nest routes whose callbacks do not carry the module's settings. With the HTTP
 * adapter's `setOnRouteTriggered()` (per-route metrics, tracing), Nest registers each route
 * through a wrapper of its own, and the metadata it copies onto the route's callback is not on
 * it: the module could not tell a `@SkipIcap()` or `@IcapOptions()` route from any other (every
 * request would get the module's profile, and the guard would refuse the others). A message,
 * or undefined.
 */
export function unreadableRoutes(app: unknown): string | undefined {
  for (const layer of routerStack(app) ?? []) {
    const route = layer.route;
    if (route === undefined || nestSettingOf(route) !== undefined) continue;
    const wrapped = (route.stack ?? []).some(
      (l) => typeof l.handle === 'function' && String(l.handle).includes('onRouteTriggered('),
    );
    if (wrapped)
      return (
        `@icapkit/nestjs: the route ${String(route.path)} is registered through the HTTP adapter's ` +
        "setOnRouteTriggered() hook, whose wrapper does not carry the route's metadata: the module " +
        'cannot read which routes are skipped or have their own settings. Remove the hook (time routes ' +
        'with an interceptor instead), or use the Fastify platform.'
      );
  }
  return undefined;
}
