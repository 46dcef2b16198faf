import type { IncomingMessage, ServerResponse } from 'node:http';
import {
  type BodyHandoff,
  type ContinueServer,
  checkRefusalOptions,
  createEngine,
  drainAfterAnswer,
  drainLimits,
  guardExpectContinue,
  handoffBody,
  type IcapEngine,
  type IcapProfile,
  IcapRefusalError,
  type IcapRefusalOptions,
  type IcapRequestInfo,
  type PinoLike,
  type RefusalResponse,
  type RespondOutcome,
  rearmRequest,
  refusalOf,
  refusalReporter,
  refusalResponse,
  requestInfo,
  type StartupReport,
  watchResponse,
} from '@icapkit/core';

export * from './analytics.js';

/**
 * What the middleware puts in `ctx.state`. Koa's `DefaultState` is augmented with it (so
 * `new Koa()` apps get `ctx.state.icap` typed); an app with its own state type adds it:
 * `new Koa<MyState & IcapState>()`.
 */
export interface IcapState {
  /**
   * What `icap()` decided for this request: `{ action, threat, rule, removed, log }`. Set by
   * the middleware before downstream middleware runs (and before it throws with
   * `refusals: 'error'`). Upstream of `icap()` it is undefined at run time: read it with
   * `icapInfo(ctx)` there.
   */
  icap: IcapRequestInfo;
}

import type {} from 'koa';

declare module 'koa' {
  interface DefaultState extends IcapState {}
}

/** The parts of Koa's context this middleware uses. */
export interface KoaContextLike {
  req: IncomingMessage;
  res: ServerResponse;
  request: { req: IncomingMessage };
  response: { req: IncomingMessage };
  state: Record<string, unknown>;
  status: number;
  body: unknown;
  set(field: string, value: string): void;
  log?: unknown;
  respond?: boolean;
}

/** What `icap()` returns: a Koa middleware with its engine. */
export interface IcapKoaMiddleware {
  (ctx: KoaContextLike, next: () => Promise<unknown>): Promise<void>;
  /** The engine (servers, health, status). */
  readonly engine: IcapEngine;
  /** Closes the engine's ICAP connections and probes. */
  close(): Promise<void>;
  /**
   * Answers requests with `Expect: 100-continue` that would be refused anyway (413, 415)
   * before they send their body: `mw.guardExpectContinue(app.listen(3000))`. Returns the server.
   * Every request of the server is judged with the profile (Koa's middleware chain cannot be
   * read for where the middleware runs): when it runs for some requests only (koa-mount, a
   * router's route), pass `runsFor(req)`, true for the requests it runs for; the others get
   * 100 Continue (campaign-br BR6). With `onRefusal` or `refusals: 'error'` such requests get
   * `100 Continue` instead, so the refusal goes through the middleware and the application
   * shapes it.
   */
  guardExpectContinue<S extends ContinueServer>(server: S, runsFor?: (req: IncomingMessage) => boolean): S;
  /**
   * The start-up check: OPTIONS to every ICAP server. Per the profile's `startupCheck`, rejects
   * naming each server that did not answer ('fail', default), warns ('warn') or does nothing
   * ('off'): `await mw.ready()` before `app.listen()`.
   */
  ready(): Promise<StartupReport>;
}

/**
 * Options of the Koa middleware besides the profile. `Ctx` is inferred from an annotated
 * `onRefusal` (e.g. Koa's `Context`).
 */
export interface IcapKoaOptions<Ctx extends KoaContextLike = KoaContextLike>
  extends IcapRefusalOptions<[ctx: Ctx]> {
  /** Share an engine between middlewares (the profile is then ignored). */
  engine?: IcapEngine | undefined;
}

export type {
  IcapRefusal,
  IcapRefusalMode,
  IcapRefusalReply,
  IcapRefusalResult,
  IcapRequestInfo,
} from '@icapkit/core';
export { IcapRefusalError, isIcapRefusalError } from '@icapkit/core';

/**
 * `ctx.state.icap` where it may be missing: undefined upstream of `icap()` (or for a request
 * it did not see), the scan's description otherwise.
 */
export function icapInfo(ctx: { state: object }): IcapRequestInfo | undefined {
  return (ctx.state as { icap?: IcapRequestInfo | null }).icap ?? undefined;
}

/**
 * Koa middleware: requests the profile's rules select are scanned by the ICAP server before
 * downstream middleware runs. Approved requests continue with `ctx.req` made readable
 * again with the approved body (koa-body, @koa/bodyparser and formidable read it as
 * usual); `ctx.state.icap` describes the scan. Blocked: 403, oversized: 413, scanner failure:
 * 503 (or pass, per the profile).
 *
 * Refusals: `onRefusal(refusal, ctx)` renders them yourself; `refusals: 'error'` throws an
 * {@link IcapRefusalError} (`status`, `expose`, `code`, `log`) for your try/catch or
 * `app.on('error')`. Mount it before body parsers: a body already read is refused at once
 * (500, ICAP_ERR_BODY_CONSUMED).
 *
 * @example
 * app.use(icap({ name: 'uploads', poolGroup: 'icap://127.0.0.1:1344', serviceUri: '/avscan' }));
 *
 * Typed structurally (no dependency on koa's types): works with Koa 3 and 2.
 */
export function icap<Ctx extends KoaContextLike = KoaContextLike>(
  profile: IcapProfile,
  options: IcapKoaOptions<Ctx> = {},
): IcapKoaMiddleware {
  checkRefusalOptions(options as IcapKoaOptions, '@icapkit/koa');
  const engine = options.engine ?? createEngine(profile);
  const report = refusalReporter('@icapkit/koa');
  const middleware = async (ctx: KoaContextLike, next: () => Promise<unknown>): Promise<void> => {
    const res = ctx.res;
    const watch = watchResponse(res);
    const scanned = await engine.scan(ctx.req, {
      signal: watch.scanSignal,
      logger: isLogger(ctx.log) ? ctx.log : undefined,
      requestId: typeof ctx.state.requestId === 'string' ? ctx.state.requestId : undefined,
      parsedBody: (ctx.request as { body?: unknown }).body,
    });
    watch.hold(scanned);
    ctx.state.icap = requestInfo(scanned);
    switch (scanned.kind) {
      case 'aborted':
        ctx.respond = false;
        if (!res.destroyed) res.destroy();
        return;
      case 'respond':
        await refuse(engine, scanned, ctx, options as IcapKoaOptions, (err) =>
          report(err, isLogger(ctx.log) ? ctx.log : undefined),
        );
        return;
      case 'rewrite':
        swap(ctx, {
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
        // A re-serialised multipart form comes with its own content-type (a fresh boundary).
        if (body !== null)
          swap(ctx, {
            body,
            contentLength: scanned.contentLength ?? 0,
            headers: scanned.headers,
          });
        break;
      }
    }
    for (const [n, v] of scanned.responseHeaders) ctx.set(n, v);
    // The application's status, for the record (the analytics page shows it), once it has
    // finished, from the watch's one listener.
    watch.respondedOnFinish(engine, scanned.log);
    await next();
  };
  return Object.assign(middleware, {
    engine,
    close: () => engine.close(),
    ready: () => engine.ready(),
    guardExpectContinue<S extends ContinueServer>(server: S, runsFor?: (req: IncomingMessage) => boolean): S {
      // Refusals the application shapes go through the middleware (after 100 Continue).
      const shaped = options.onRefusal !== undefined || options.refusals === 'error';
      guardExpectContinue(server, async (req) =>
        shaped || (runsFor !== undefined && !runsFor(req)) ? null : engine.preflight(req),
      );
      return server;
    },
  });
}

export default icap;

/**
 * Answers a refusal: the default page or `onRefusal`'s in `ctx`, or, with `refusals: 'error'`,
 * an IcapRefusalError thrown (downstream never runs either way).
 */
async function refuse(
  engine: IcapEngine,
  outcome: RespondOutcome,
  ctx: KoaContextLike,
  options: IcapKoaOptions,
  report: (err: unknown) => void,
): Promise<void> {
  // The rest of an unread body is still read (bounded), so the client gets the answer.
  if (outcome.closeConnection) drainAfterAnswer(ctx.req, drainLimits(engine), ctx.res);
  const refusal = refusalOf(outcome);
  const http2 = ctx.req.httpVersionMajor === 2;
  if (options.refusals === 'error') throw new IcapRefusalError(refusal, { http2 });
  let response: RefusalResponse | null = refusal.response;
  const onRefusal = options.onRefusal;
  if (onRefusal !== undefined) {
    ctx.status = refusal.status;
    const before = ctx.body;
    response = await refusalResponse(
      refusal,
      () => onRefusal(refusal, ctx),
      () => ctx.body !== before && ctx.body !== undefined && ctx.body !== null,
      report,
      http2,
    );
    if (response === null) {
      // Rendered in ctx: still a refusal (never a 2xx), and the connection closes if it must.
      if (!(ctx.status >= 300 && ctx.status <= 599)) ctx.status = refusal.status;
      if (refusal.closeConnection && !http2) ctx.set('Connection', 'close');
      return;
    }
  }
  try {
    apply(ctx, response);
  } catch (err) {
    report(err);
    apply(ctx, refusal.response);
  }
}

function apply(ctx: KoaContextLike, response: RefusalResponse): void {
  ctx.status = response.status;
  for (const [n, v] of response.headers) if (n.toLowerCase() !== 'content-length') ctx.set(n, v);
  ctx.body = response.body;
}

/**
 * Makes ctx.req readable again, in place, from the approved body (as the Express and Fastify
 * adapters do): no second IncomingMessage, header copy or 'close' listener per request, and
 * ctx.req, ctx.request.req and ctx.response.req stay the one request the application knows.
 */
function swap(ctx: KoaContextLike, handoff: BodyHandoff): void {
  rearmRequest(ctx.req, handoff);
}

function isLogger(v: unknown): v is PinoLike {
  if (typeof v !== 'object' || v === null) return false;
  const l = v as Record<string, unknown>;
  return ['debug', 'info', 'warn', 'error'].every((m) => typeof l[m] === 'function');
}
