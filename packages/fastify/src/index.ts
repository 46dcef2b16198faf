import {
  checkRefusalOptions,
  createEngine,
  drainAfterAnswer,
  drainLimits,
  guardExpectContinue,
  handoffBody,
  type IcapEngine,
  IcapError,
  IcapErrorCodes,
  type IcapProfile,
  IcapRefusalError,
  type IcapRefusalOptions,
  type IcapRequestInfo,
  type RefusalResponse,
  type RespondOutcome,
  rearmRequest,
  refusalOf,
  refusalReporter,
  refusalResponse,
  requestInfo,
  watchResponse,
} from '@icapkit/core';
import type {
  FastifyInstance,
  FastifyPluginAsync,
  FastifyReply,
  FastifyRequest,
  preParsingAsyncHookHandler,
  preParsingHookHandler,
} from 'fastify';
import fp from 'fastify-plugin';

export * from './analytics.js';

/**
 * A route's `config.icap`: `false` (not scanned), `true` or absent (the plugin's profile), or
 * profile fields that override the plugin's for this route. The type rejects strings, numbers,
 * arrays, functions and wrong values of known fields (`failAction: 'fail-opne'`). Fastify
 * infers a route's config type from the literal, so an unknown key (`bufferSzie`) is only
 * caught at start-up (naming the route), or at compile time with `satisfies IcapRouteOptions`.
 */
export type IcapRouteOptions = boolean | IcapRouteProfile;

/** Profile fields a route overrides (the guard members reject strings, numbers and arrays). */
export type IcapRouteProfile = Partial<IcapProfile> & {
  length?: never;
  toFixed?: never;
  call?: never;
};

declare module 'fastify' {
  interface FastifyRequest {
    /**
     * What @icapkit/fastify decided for this request: `{ action, threat, rule, removed, log }`.
     * Set by the plugin's preParsing hook, before any parser or handler of the contexts it
     * covers runs (and before the error handler with `refusals: 'error'`). On a route opted
     * out with `config: { icap: false }` it is null at run time: read it with
     * `icapInfo(request)` there.
     */
    icap: IcapRequestInfo;
  }
  interface FastifyContextConfig {
    /**
     * This route's scanning: `false` (not scanned), or profile fields overriding the plugin's
     * (`{ serviceUri: '/cdr' }`). Checked at start-up; errors name the route.
     */
    icap?: IcapRouteOptions;
  }
  interface FastifyInstance {
    /** The default engine of @icapkit/fastify. */
    icapEngine: IcapEngine;
  }
}

/** The plugin's options: an ICAP profile, plus the plugin's own fields. */
export interface IcapPluginOptions
  extends IcapProfile,
    IcapRefusalOptions<[request: FastifyRequest, reply: FastifyReply], FastifyReply> {
  /**
   * A route that can receive a body but is not scanned (declared before the plugin, or out of
   * its encapsulation context): 'error' (default) makes start-up fail, 'warn' logs a warning
   * naming each such route and starts anyway.
   */
  unscannedRoutes?: 'error' | 'warn' | undefined;
}

/**
 * `request.icap` where it may be missing: undefined on a route opted out with
 * `config: { icap: false }` (or out of the plugin's contexts), the scan's description otherwise.
 */
export function icapInfo(request: FastifyRequest): IcapRequestInfo | undefined {
  return (request as { icap?: IcapRequestInfo | null }).icap ?? undefined;
}

export type {
  IcapRefusal,
  IcapRefusalMode,
  IcapRefusalReply,
  IcapRefusalResult,
  IcapRequestInfo,
} from '@icapkit/core';
export { IcapRefusalError, isIcapRefusalError } from '@icapkit/core';

/** Code of the start-up error (and warning) about routes that are not scanned. */
export const UNSCANNED_ROUTE = 'ICAP_ERR_UNSCANNED_ROUTE';

/** Start-up refused: some routes that can receive a body are not scanned. */
export class UnscannedRouteError extends Error {
  readonly code = UNSCANNED_ROUTE;
  constructor(
    message: string,
    /** Each as 'METHOD[,METHOD] /path'. */
    readonly routes: string[],
  ) {
    super(message);
    this.name = 'UnscannedRouteError';
  }
}

const plugin: FastifyPluginAsync<IcapPluginOptions> = async (fastify, profile) => {
  checkRefusalOptions(profile as never, '@icapkit/fastify');
  const engine = createEngine(profileOf(profile));
  const refusals: Refusals = {
    mode: profile.refusals ?? 'respond',
    onRefusal: profile.onRefusal,
    report: refusalReporter('@icapkit/fastify'),
  };
  const routeEngines: IcapEngine[] = [];
  fastify.decorate('icapEngine', engine);
  fastify.decorateRequest('icap', null as never);
  // The engines (false: opted out) of the routes of each method, for Expect: 100-continue
  // answers: fastify.findRoute() does not say which route it found (its handler is Fastify's
  // routeHandler, one function for every route: campaign-br BR5), so a request is answered
  // early only when every route of its method is scanned with the same engine.
  const byMethod = new Map<string, Set<IcapEngine | false>>();
  const record = (methods: string | readonly string[], routeEngine: IcapEngine | false): void => {
    for (const m of [methods].flat()) {
      const method = m.toUpperCase();
      const engines = byMethod.get(method) ?? new Set();
      byMethod.set(method, engines.add(routeEngine));
    }
  };
  // The engine of each route profile (`config: { icap: {...} }`), by the profile object.
  const byProfile = new WeakMap<object, IcapEngine>();
  fastify.addHook('onRoute', (route) => {
    const config = (route.config as { icap?: IcapRouteOptions } | undefined)?.icap;
    if (config === false) {
      record(route.method, false);
      // Marks the route as opted out for the coverage check (a no-op).
      route.preParsing = appendHook(route.preParsing, icapNotScanned);
      return;
    }
    let routeEngine = engine;
    if (config !== undefined && config !== true) {
      const where = `config.icap of route ${[route.method].flat().join(',')} ${route.url}`;
      if (typeof config !== 'object' || config === null || Array.isArray(config))
        throw new IcapError(
          IcapErrorCodes.INVALID_PROFILE,
          `@icapkit/fastify: ${where} must be false, true or an object of profile fields, not ${JSON.stringify(config) ?? typeof config}`,
          { field: 'icap' },
        );
      routeEngine = byProfile.get(config) ?? routeEngineOf(profile, config, where);
      if (!byProfile.has(config)) {
        byProfile.set(config, routeEngine);
        routeEngines.push(routeEngine);
      }
    }
    record(route.method, routeEngine);
  });
  // One context hook scans every request of this context and below: routes (also those
  // declared in this context before the plugin loaded: Fastify gives a route its context's
  // hooks when the application gets ready) and not-found handlers, which get no onRoute. Added
  // when the plugin loads, it runs before the preParsing hooks added after it, and before every
  // route's own: nothing reads the body before it was approved (the coverage check below names
  // routes where another hook comes first).
  fastify.addHook('preParsing', function icapScan(request, reply, payload, done) {
    const config = (request.routeOptions.config as { icap?: IcapRouteOptions } | undefined)?.icap;
    if (config === false) {
      done(null, payload);
      return;
    }
    const routeEngine =
      config !== undefined && config !== null && typeof config === 'object'
        ? (byProfile.get(config) ?? engine)
        : engine;
    scanRequest(routeEngine, refusals, request, reply, payload).then(
      (p) => done(null, p as typeof payload),
      (err: Error) => done(err, payload),
    );
  });
  fastify.addHook('onReady', async function icapCoverage() {
    const unscanned = findUnscannedRoutes(fastify);
    if (unscanned.length === 0) return;
    const message =
      `@icapkit/fastify: ${unscanned.length === 1 ? 'a route that can receive a body is' : `${unscanned.length} routes that can receive a body are`} ` +
      `not scanned first: ${unscanned.join('; ')}. Register @icapkit/fastify on the root instance (or on a context ` +
      'holding these routes) before adding other preParsing hooks, or opt a route out with config: { icap: false }.';
    if (profile.unscannedRoutes === 'warn') {
      fastify.log.warn({ code: UNSCANNED_ROUTE, routes: unscanned }, message);
      process.emitWarning(message, { code: UNSCANNED_ROUTE });
      return;
    }
    throw new UnscannedRouteError(message, unscanned);
  });
  // The start-up check (the profile's startupCheck): OPTIONS to the servers of every engine;
  // with 'fail' (default) a server that does not answer makes ready() / listen() reject.
  fastify.addHook('onReady', async function icapStartupCheck() {
    await Promise.all([engine, ...routeEngines].map((e) => e.ready()));
  });
  // Requests with Expect: 100-continue that are refused anyway (413, 415) are answered before
  // they send their body.
  const unguard = guardExpectContinue(fastify.server as never, async (req) => {
    // Refusals the application shapes go through the hook (after 100 Continue).
    if (refusals.mode === 'error' || refusals.onRefusal !== undefined) return null;
    const method = (req.method ?? 'GET').toUpperCase();
    const route = fastify.findRoute({ method: method as 'GET', url: (req.url ?? '/').split('?')[0] ?? '/' });
    return preflightOf(route === null ? new Set([engine]) : (byMethod.get(method) ?? new Set([engine])), req);
  });
  fastify.addHook('onClose', async () => {
    unguard();
    await Promise.all([engine.close(), ...routeEngines.map((e) => e.close())]);
  });
};

/**
 * The answer before its body for a request any of `engines` may scan (a route opted out: false):
 * the engine's preflight when they are one engine, else null (100 Continue: the route's own
 * engine decides in preParsing; asking each would log refusals that are not made).
 */
function preflightOf(
  engines: ReadonlySet<IcapEngine | false>,
  req: Parameters<IcapEngine['preflight']>[0],
): Promise<RespondOutcome | null> | null {
  if (engines.size !== 1) return null;
  const [only] = engines;
  return only === false || only === undefined ? null : only.preflight(req);
}

/** A route's engine: the plugin's profile with the route's fields; errors name the route. */
function routeEngineOf(profile: IcapPluginOptions, config: object, where: string): IcapEngine {
  try {
    return createEngine({ ...profileOf(profile), ...config });
  } catch (err) {
    if (!(err instanceof IcapError)) throw err;
    throw new IcapError(err.code, `@icapkit/fastify: ${where}: ${err.message}`, {
      cause: err,
      ...(err.field === undefined ? {} : { field: err.field }),
    });
  }
}

/** The profile without Fastify's own plugin options. */
function profileOf(options: IcapPluginOptions): IcapProfile {
  const {
    prefix: _p,
    logLevel: _l,
    logSerializers: _s,
    unscannedRoutes: _u,
    refusals: _r,
    onRefusal: _o,
    ...rest
  } = options as IcapPluginOptions & Record<string, unknown>;
  return rest as unknown as IcapProfile;
}

/** The route's preParsing hooks with `hook` added last. */
function appendHook<T>(existing: T | T[] | undefined, hook: T): T[] {
  if (existing === undefined) return [hook];
  return [...(Array.isArray(existing) ? existing : [existing]), hook];
}

/** Placed on routes opted out with `config: { icap: false }`, so the coverage check sees them. */
const icapNotScanned: preParsingHookHandler = function icapNotScanned(_request, _reply, payload, done) {
  done(null, payload);
};

const BODYLESS = new Set(['GET', 'HEAD', 'TRACE']);

/** Names of the hooks in a printRoutes hook list (`["a()","b()"]`). */
function hookNames(list: string): string[] {
  try {
    const parsed: unknown = JSON.parse(list);
    if (Array.isArray(parsed)) return parsed.map((n) => String(n).replace(/\(\)$/, ''));
  } catch {
    // not JSON: fall through
  }
  return [...list.matchAll(/"([^"]*)"/g)].map((m) => m[1]!.replace(/\(\)$/, ''));
}

/**
 * Routes of the whole application (Fastify's router is shared by all contexts) that accept a
 * method with a body and are not scanned first, as 'METHOD[,METHOD] /path': without this
 * plugin's scanning hook (and not opted out), or with another preParsing hook before it
 * (named: 'POST /x (preParsing hook "h" runs before the scan)'). Read from `printRoutes` with
 * hooks, the one public view of all routes and of each route's hooks in order: a tree whose
 * node labels, joined from the root, are the paths; a node line may end with its methods, and
 * the lines under it (same indentation, no branch) list more methods of the same path and
 * each route's hooks.
 */
export function findUnscannedRoutes(fastify: FastifyInstance): string[] {
  const text = fastify.printRoutes({ includeHooks: true });
  const out: string[] = [];
  const labels: string[] = [];
  let current: { path: string; methods: string[]; preParsing: string[] } | null = null;
  const flush = () => {
    const route = current;
    current = null;
    if (route === null) return;
    const withBody = route.methods.filter((m) => !BODYLESS.has(m));
    if (withBody.length === 0 || route.preParsing.includes('icapNotScanned')) return;
    const at = route.preParsing.indexOf('icapScan');
    const name = `${withBody.join(',')} ${route.path}`;
    if (at === -1) out.push(name);
    else if (at > 0)
      out.push(
        `${name} (preParsing ${at === 1 ? 'hook' : 'hooks'} ${route.preParsing
          .slice(0, at)
          .map((h) => JSON.stringify(h))
          .join(', ')} ${at === 1 ? 'runs' : 'run'} before the scan)`,
      );
  };
  for (const line of text.split('\n')) {
    const m = /^((?:[│ ] {3})*)([├└]── )?(.*)$/u.exec(line);
    if (m === null || m[3] === '') continue;
    const depth = m[1]!.length / 4;
    const rest = m[3]!;
    const hook = /^• \((\w+)\) (.*)$/u.exec(rest);
    if (hook !== null) {
      if (current !== null && hook[1] === 'preParsing') current.preParsing = hookNames(hook[2]!);
      continue;
    }
    const route = /^(.*) \(([A-Z][A-Z0-9_-]*(?:, [A-Z][A-Z0-9_-]*)*)\)$/u.exec(rest);
    const label = route === null ? rest : route[1]!;
    // A new node (branch drawn) at `depth`; otherwise another route of the node above.
    const nodeDepth = m[2] === undefined ? depth - 1 : depth;
    if (m[2] !== undefined) {
      labels.length = depth;
      labels[depth] = label;
    }
    flush();
    if (route !== null) {
      current = {
        path: labels.slice(0, nodeDepth + 1).join(''),
        methods: route[2]!.split(', '),
        preParsing: [],
      };
    }
  }
  flush();
  return out;
}

interface Refusals {
  mode: 'respond' | 'error';
  onRefusal: IcapPluginOptions['onRefusal'];
  report: ReturnType<typeof refusalReporter>;
}

/**
 * Answers a refusal from the preParsing hook: the default page or `onRefusal`'s (sent here),
 * or, with `refusals: 'error'`, an IcapRefusalError thrown to Fastify, which sends it to the
 * error handler (the body is not parsed).
 */
async function refuse(
  engine: IcapEngine,
  outcome: RespondOutcome,
  request: FastifyRequest,
  reply: FastifyReply,
  refusals: Refusals,
): Promise<void> {
  const raw = request.raw;
  // The rest of an unread body is still read (bounded), so the client gets the answer.
  if (outcome.closeConnection) drainAfterAnswer(raw, drainLimits(engine), reply.raw);
  const refusal = refusalOf(outcome);
  const http2 = raw.httpVersionMajor === 2;
  if (refusals.mode === 'error') throw new IcapRefusalError(refusal, { http2 });
  let response: RefusalResponse | null = refusal.response;
  const onRefusal = refusals.onRefusal;
  if (onRefusal !== undefined) {
    reply.code(refusal.status);
    response = await refusalResponse(
      refusal,
      () => onRefusal(refusal, request, reply),
      (result) => result === reply || reply.sent || reply.raw.headersSent,
      (err) => refusals.report(err, request.log),
      http2,
      () => reply.raw.destroy(),
    );
  }
  if (response === null || reply.sent) return;
  const headers: Record<string, string> = {};
  for (const [n, v] of response.headers) {
    const name = n.toLowerCase();
    headers[name] = headers[name] === undefined ? v : `${headers[name]}, ${v}`;
  }
  try {
    await reply.code(response.status).headers(headers).send(response.body);
  } catch (err) {
    refusals.report(err, request.log);
    if (reply.sent || reply.raw.headersSent) return;
    const page: Record<string, string> = {};
    for (const [n, v] of refusal.response.headers) page[n] = v;
    await reply.code(refusal.status).headers(page).send(refusal.response.body);
  }
}

/**
 * The scan of one request and what follows from it. The response's 'close' and 'finish' fire
 * once each: their listeners are added with `on` (no once-wrappers, nothing to remove).
 */
async function scanRequest(
  engine: IcapEngine,
  refusals: Refusals,
  request: FastifyRequest,
  reply: FastifyReply,
  payload: Parameters<preParsingAsyncHookHandler>[2],
): Promise<Parameters<preParsingAsyncHookHandler>[2]> {
  const raw = request.raw;
  const res = reply.raw;
  const watch = watchResponse(res);
  const scanned = await engine.scan(raw, {
    signal: watch.scanSignal,
    logger: request.log,
    requestId: String(request.id),
    parsedBody: request.body,
  });
  watch.hold(scanned);
  request.icap = requestInfo(scanned);
  // The application's status, for the record (the analytics page shows it), once it has
  // finished, from the watch's one listener; a no-op when the middleware answered itself (the
  // record has its status already).
  watch.respondedOnFinish(engine, scanned.log);
  switch (scanned.kind) {
    case 'aborted':
      // Nothing to answer: close the connection itself (destroying a request whose body was
      // read to its end would leave the socket open).
      reply.hijack();
      if (!res.destroyed) res.destroy();
      raw.destroy();
      return payload;
    case 'respond':
      await refuse(engine, scanned, request, reply, refusals);
      return payload;
    case 'rewrite':
      rearmRequest(raw, {
        body: scanned.body,
        contentLength: scanned.contentLength,
        headers: scanned.headers,
        method: scanned.method,
        url: scanned.url,
      });
      break;
    case 'pass': {
      // The held body without a stream made for it when it is all in memory (see handoffBody).
      const body = handoffBody(scanned);
      if (body === null) {
        for (const [n, v] of scanned.responseHeaders) reply.header(n, v);
        return payload;
      }
      // A re-serialised multipart form comes with its own content-type (a fresh boundary).
      rearmRequest(raw, {
        body,
        contentLength: scanned.contentLength ?? 0,
        headers: scanned.headers,
      });
      break;
    }
  }
  for (const [n, v] of scanned.responseHeaders) reply.header(n, v);
  // The re-armed request carries the approved body's own content-length, which is what
  // Fastify checks the bytes its parser reads against (so no receivedEncodedLength here).
  return raw;
}

/**
 * Fastify plugin: requests the profile's rules select are scanned by the ICAP server in a
 * `preParsing` hook placed before any other, so the content-type parsers (JSON, and
 * @fastify/multipart, which reads `request.raw` itself) see only an approved body: the
 * original one replayed, or the ICAP server's rewritten one, with a matching length.
 *
 *   await fastify.register(icap, { name: 'uploads', poolGroup: 'icap://127.0.0.1:1344', serviceUri: '/avscan' });
 *   fastify.post('/avatar', { config: { icap: false } }, handler);             // opt out
 *   fastify.post('/docs', { config: { icap: { serviceUri: '/cdr' } } }, handler); // per-route profile
 *
 * One `preParsing` hook on the plugin's context scans every request of that context and below
 * (routes, also those declared there before the plugin loaded, and not-found handlers), and
 * runs before the preParsing hooks added after it and every route's own. Coverage is explicit:
 * once the application is ready, every route that can receive a body (any method but GET,
 * HEAD and TRACE) must be scanned first, or opted out with `config: { icap: false }`. A route
 * the plugin cannot reach (in a parent or sibling context, or in a child context loaded before
 * it) or where another preParsing hook runs before the scan makes `ready()` / `listen()` fail
 * with ICAP_ERR_UNSCANNED_ROUTE naming it, or only warns (log and process warning) with
 * `unscannedRoutes: 'warn'`.
 *
 * Refusals: `onRefusal(refusal, request, reply)` renders them yourself; `refusals: 'error'`
 * hands an IcapRefusalError (`statusCode`, `expose`, `code`, `log`) to your `setErrorHandler`.
 */
export const icap = fp(plugin, { fastify: '5.x', name: '@icapkit/fastify' });
export default icap;
