import type { IncomingMessage, ServerResponse } from 'node:http';
import {
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
  type ResponseWatch,
  rearmRequest,
  refusalOf,
  refusalReporter,
  refusalResponse,
  requestInfo,
  type ScanOutcome,
  type StartupReport,
  watchResponse,
} from '@icapkit/core';
import { type ExpressRouting, routedThrough } from './mounted.js';
import { shareRequestMap, shareResponseMap } from './shared-maps.js';

export type {
  IcapRefusal,
  IcapRefusalMode,
  IcapRefusalReply,
  IcapRefusalResult,
  IcapRequestInfo,
} from '@icapkit/core';
export { IcapRefusalError, isIcapRefusalError } from '@icapkit/core';
export * from './analytics.js';
export type { ExpressRouting } from './mounted.js';

declare global {
  // Express's own request type lives in this global namespace (@types/express, v4 and v5).
  namespace Express {
    interface Request {
      /**
       * What `icap()` decided for this request: `{ action, threat, rule, removed, log }`. Set
       * by the middleware before `next()` (and before `next(err)` with `refusals: 'error'`),
       * so it is always there in the handlers and error handlers mounted after `icap()`. In a
       * handler mounted before it (or on a path it does not cover) it is undefined at run
       * time: read it with `icapInfo(req)` there.
       */
      icap: IcapRequestInfo;
    }
  }
}

type Next = (err?: unknown) => void;

/** What `icap()` returns: an Express middleware with its engine. */
export interface IcapMiddleware {
  (req: IncomingMessage, res: ServerResponse, next: Next): void;
  /** The engine (servers, health, status). */
  readonly engine: IcapEngine;
  /** Closes the engine's ICAP connections and probes. */
  close(): Promise<void>;
  /**
   * Answers requests with `Expect: 100-continue` that would be refused anyway (413, 415)
   * before they send their body: `mw.guardExpectContinue(app.listen(3000), app)`. Returns the
   * server. With the app, only requests its router may send through this middleware are
   * answered so (others get 100 Continue); without it, every request of the server is judged
   * with the profile: leave it out only when the middleware is mounted on every path.
   * With `onRefusal` or `refusals: 'error'` such requests get `100 Continue` instead, so the
   * refusal goes through the middleware and the application shapes it.
   */
  guardExpectContinue<S extends ContinueServer>(server: S, app?: ExpressRouting): S;
  /**
   * The start-up check: OPTIONS to every ICAP server. Per the profile's `startupCheck`, rejects
   * naming each server that did not answer ('fail', default), warns ('warn') or does nothing
   * ('off'): `await mw.ready()` before `app.listen()`.
   */
  ready(): Promise<StartupReport>;
}

/**
 * Options of the Express middleware besides the profile. `Req` and `Res` are inferred from
 * an annotated `onRefusal` (e.g. Express's `Request` and `Response`).
 */
export interface IcapExpressOptions<
  Req extends IncomingMessage = IncomingMessage,
  Res extends ServerResponse = ServerResponse,
> extends IcapRefusalOptions<[req: Req, res: Res], Res> {
  /** Share an engine between middlewares (the profile is then ignored). */
  engine?: IcapEngine | undefined;
  /**
   * For frameworks built on Express that choose the scan's settings by route before they route
   * (@icapkit/nestjs): why this request may reach routes scanned with different settings, or
   * undefined. Such a request is refused whatever the rules decide, before its body is read
   * (403, ICAP_ERR_UNSCANNED_ROUTE), as any refusal: `onRefusal`, `refusals`, the log record.
   */
  unscannedRoute?: ((req: Req) => string | undefined) | undefined;
}

/**
 * Express middleware: every request the profile's rules select is scanned by the ICAP server
 * before the next handler runs. Blocked uploads get 403, oversized ones 413, scanner failures
 * 503 (or pass, per the profile); approved requests reach the next handler with their body
 * readable again (body parsers and multer work as usual), a rewritten body when the ICAP
 * server modified it, and `req.icap` describing the scan.
 *
 * Refusals: `onRefusal(refusal, req, res)` renders them yourself; `refusals: 'error'` calls
 * `next(err)` with an {@link IcapRefusalError} (`status`, `expose`, `code`, `log`) instead.
 * Mount it before body parsers: a body already read is refused at once (500,
 * ICAP_ERR_BODY_CONSUMED).
 *
 * @example
 * app.use(icap({ name: 'uploads', poolGroup: 'icap://127.0.0.1:1344', serviceUri: '/avscan' }));
 *
 * Works with Express 5 and 4 (typed against node:http, so it has no dependency on express).
 */
export function icap<
  Req extends IncomingMessage = IncomingMessage,
  Res extends ServerResponse = ServerResponse,
>(profile: IcapProfile, options: IcapExpressOptions<Req, Res> = {}): IcapMiddleware {
  checkRefusalOptions(options as unknown as IcapExpressOptions, '@icapkit/express');
  const engine = options.engine ?? createEngine(profile);
  const report = refusalReporter('@icapkit/express');
  const opts = options as unknown as IcapExpressOptions;
  const middleware = (req: IncomingMessage, res: ServerResponse, next: Next): void => {
    // Before anything reads them: one V8 map for all of Express's requests, one for all of its
    // responses (see shared-maps.ts).
    shareRequestMap(req);
    shareResponseMap(res);
    const watch = watchResponse(res);
    const logger = loggerOf(req);
    const unscannedRoute = opts.unscannedRoute?.(req);
    // One promise reaction per request: the outcome is applied synchronously (pass, rewrite,
    // aborted); only a refusal goes on asynchronously. Any failure goes to next(err).
    engine
      .scan(req, {
        signal: watch.scanSignal,
        logger,
        requestId: requestId(req),
        parsedBody: (req as { body?: unknown }).body,
        unscannedRoute,
      })
      .then((scanned) => {
        let refused: Promise<void>;
        try {
          watch.hold(scanned);
          const info = requestInfo(scanned);
          if (scanned.kind !== 'respond') {
            // `req.icap` is added once the body is handed back: adding a property gives an
            // Express request a new V8 map, and the hand-off's reads would all miss after it.
            let go: boolean;
            try {
              go = proceed(engine, scanned, req, res, watch);
            } finally {
              (req as { icap?: IcapRequestInfo }).icap = info;
            }
            if (go) next();
            return;
          }
          (req as { icap?: IcapRequestInfo }).icap = info;
          refused = refuse(engine, scanned, req, res, next, opts, (err) => report(err, logger));
        } catch (err) {
          next(err);
          return;
        }
        refused.then(undefined, next);
      }, next);
  };
  return Object.assign(middleware, {
    engine,
    close: () => engine.close(),
    ready: () => engine.ready(),
    guardExpectContinue<S extends ContinueServer>(server: S, app?: ExpressRouting): S {
      // Refusals the application shapes go through the middleware (after 100 Continue).
      const shaped = options.onRefusal !== undefined || options.refusals === 'error';
      guardExpectContinue(server, async (req) =>
        shaped || (app !== undefined && !routedThrough(app, middleware, req))
          ? null
          : engine.preflight(req, { unscannedRoute: opts.unscannedRoute?.(req) }),
      );
      return server;
    },
  });
}

export default icap;

/**
 * `req.icap` where it may be missing: undefined for a request `icap()` did not see (a handler
 * mounted before it), the scan's description otherwise.
 */
export function icapInfo(req: IncomingMessage): IcapRequestInfo | undefined {
  return (req as { icap?: IcapRequestInfo | null }).icap ?? undefined;
}

/** Applies an outcome other than a refusal. True when the next handler should run. */
function proceed(
  engine: IcapEngine,
  scanned: Exclude<ScanOutcome, RespondOutcome>,
  req: IncomingMessage,
  res: ServerResponse,
  watch: ResponseWatch,
): boolean {
  switch (scanned.kind) {
    case 'aborted':
      if (!res.destroyed) res.destroy();
      return false;
    case 'rewrite':
      rearmRequest(req, {
        body: scanned.body,
        contentLength: scanned.contentLength,
        headers: scanned.headers,
        method: scanned.method,
        url: scanned.url,
      });
      // Express routes on originalUrl too: keep them in step with the rewritten URL.
      if ('originalUrl' in req) (req as { originalUrl: string }).originalUrl = scanned.url;
      break;
    case 'pass': {
      // The held body without a stream made for it when it is all in memory (see handoffBody).
      const body = handoffBody(scanned);
      // A re-serialised multipart form comes with its own content-type (a fresh boundary).
      if (body !== null)
        rearmRequest(req, {
          body,
          contentLength: scanned.contentLength ?? 0,
          headers: scanned.headers,
        });
      break;
    }
  }
  const headers = scanned.responseHeaders;
  for (let i = 0; i < headers.length; i++) res.setHeader(headers[i]![0], headers[i]![1]);
  // The application's status, for the record (the analytics page shows it), once it has finished.
  watch.respondedOnFinish(engine, scanned.log);
  return true;
}

/** Answers a refusal: the default page, `onRefusal`'s, or `next(err)` with `refusals: 'error'`. */
async function refuse(
  engine: IcapEngine,
  outcome: RespondOutcome,
  req: IncomingMessage,
  res: ServerResponse,
  next: Next,
  options: IcapExpressOptions,
  report: (err: unknown) => void,
): Promise<void> {
  // The rest of an unread body is still read (bounded), so the client gets the answer.
  if (outcome.closeConnection) drainAfterAnswer(req, drainLimits(engine), res);
  const refusal = refusalOf(outcome);
  const http2 = req.httpVersionMajor === 2;
  if (options.refusals === 'error') {
    const err = new IcapRefusalError(refusal, { http2 });
    if (!res.headersSent) for (const [n, v] of Object.entries(err.headers)) res.setHeader(n, v);
    next(err);
    return;
  }
  let response: RefusalResponse | null = refusal.response;
  const onRefusal = options.onRefusal;
  if (onRefusal !== undefined) {
    if (!res.headersSent) res.statusCode = refusal.status;
    response = await refusalResponse(
      refusal,
      () => onRefusal(refusal, req, res),
      (result) => res.headersSent || result === res,
      report,
      http2,
      () => res.destroy(),
    );
  }
  if (response === null || res.headersSent) return;
  try {
    res.writeHead(response.status, response.headers.flat());
    res.end(response.body);
  } catch (err) {
    // A header Node refuses (onRefusal's): the default page instead.
    report(err);
    if (res.headersSent) return;
    for (const name of res.getHeaderNames()) res.removeHeader(name);
    res.writeHead(refusal.response.status, refusal.response.headers.flat());
    res.end(refusal.response.body);
  }
}

function loggerOf(req: IncomingMessage): PinoLike | undefined {
  const log = (req as { log?: unknown }).log;
  return isLogger(log) ? log : undefined;
}

function isLogger(v: unknown): v is PinoLike {
  if (typeof v !== 'object' || v === null) return false;
  const l = v as Record<string, unknown>;
  return ['debug', 'info', 'warn', 'error'].every((m) => typeof l[m] === 'function');
}

function requestId(req: IncomingMessage): string | undefined {
  const id = (req as { id?: unknown }).id;
  if (typeof id === 'string' || typeof id === 'number') return String(id);
  const header = req.headers['x-request-id'];
  return typeof header === 'string' && /^[\w.-]{1,128}$/.test(header) ? header : undefined;
}
