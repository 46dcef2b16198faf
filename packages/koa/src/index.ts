import { IncomingMessage, type ServerResponse } from 'node:http';
import {
  type BodyHandoff,
  type ContinueServer,
  createEngine,
  drainAfterAnswer,
  drainLimits,
  guardExpectContinue,
  type IcapEngine,
  type IcapProfile,
  type IcapRequestInfo,
  type PinoLike,
  rearmRequest,
  requestInfo,
  requestWithBody,
  type StartupReport,
} from '@icapkit/core';

export * from './analytics.js';

/**
 * Koa middleware: requests the profile's rules select are scanned by the ICAP server before
 * downstream middleware runs. Approved requests continue with `ctx.req` replaced by a fresh
 * request carrying the approved body (koa-body, @koa/bodyparser and formidable read it as
 * usual); `ctx.state.icap` describes the scan. Blocked: 403, oversized: 413, scanner failure:
 * 503 (or pass, per the profile).
 *
 *   app.use(icap({ name: 'uploads', poolGroup: 'icap://127.0.0.1:1344', serviceUri: '/avscan' }));
 *
 * Typed structurally (no dependency on koa's types): works with Koa 3 and 2.
 */

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

export interface IcapKoaMiddleware {
  (ctx: KoaContextLike, next: () => Promise<unknown>): Promise<void>;
  readonly engine: IcapEngine;
  close(): Promise<void>;
  /**
   * Answers requests with `Expect: 100-continue` that would be refused anyway (413, 415)
   * before they send their body: `mw.guardExpectContinue(app.listen(3000))`. Returns the server.
   */
  guardExpectContinue<S extends ContinueServer>(server: S): S;
  /**
   * The start-up check: OPTIONS to every ICAP server. Per the profile's `startupCheck`, rejects
   * naming each server that did not answer ('fail', default), warns ('warn') or does nothing
   * ('off'): `await mw.ready()` before `app.listen()`.
   */
  ready(): Promise<StartupReport>;
}

export interface IcapKoaOptions {
  engine?: IcapEngine | undefined;
}

export type { IcapRequestInfo };

export function icap(profile: IcapProfile, options: IcapKoaOptions = {}): IcapKoaMiddleware {
  const engine = options.engine ?? createEngine(profile);
  const middleware = async (ctx: KoaContextLike, next: () => Promise<unknown>): Promise<void> => {
    const res = ctx.res;
    const ac = new AbortController();
    const onClose = () => {
      if (!res.writableFinished) ac.abort();
    };
    res.once('close', onClose);
    const outcome = await engine
      .scan(ctx.req, {
        signal: ac.signal,
        logger: isLogger(ctx.log) ? ctx.log : undefined,
        requestId: typeof ctx.state.requestId === 'string' ? ctx.state.requestId : undefined,
      })
      .finally(() => res.removeListener('close', onClose));
    res.once('close', () => outcome.dispose());
    ctx.state.icap = requestInfo(outcome);
    switch (outcome.kind) {
      case 'aborted':
        ctx.respond = false;
        if (!res.destroyed) res.destroy();
        return;
      case 'respond':
        // The rest of an unread body is still read (bounded), so the client gets the answer.
        if (outcome.closeConnection) drainAfterAnswer(ctx.req, drainLimits(engine));
        ctx.status = outcome.status;
        for (const [n, v] of outcome.headers) if (n.toLowerCase() !== 'content-length') ctx.set(n, v);
        ctx.body = outcome.body;
        return;
      case 'rewrite':
        swap(ctx, {
          body: outcome.body,
          contentLength: outcome.contentLength,
          headers: outcome.headers,
          method: outcome.method,
          url: outcome.url,
        });
        break;
      case 'pass':
        // A re-serialised multipart form comes with its own content-type (a fresh boundary).
        if (outcome.body !== null)
          swap(ctx, {
            body: outcome.body,
            contentLength: outcome.contentLength ?? 0,
            headers: outcome.headers,
          });
        break;
    }
    for (const [n, v] of outcome.responseHeaders) ctx.set(n, v);
    // The application's status, for the record (the analytics page shows it).
    res.once('finish', () => engine.responded(outcome.log, res.statusCode));
    await next();
  };
  return Object.assign(middleware, {
    engine,
    close: () => engine.close(),
    ready: () => engine.ready(),
    guardExpectContinue<S extends ContinueServer>(server: S): S {
      guardExpectContinue(server, (req) => engine.preflight(req));
      return server;
    },
  });
}

export default icap;

/**
 * HTTP/1: a fresh IncomingMessage replaces ctx.req (Koa reads it through ctx.request.req and
 * ctx.response.req too). HTTP/2 compatibility requests are re-armed in place instead.
 */
function swap(ctx: KoaContextLike, handoff: BodyHandoff): void {
  if (!(ctx.req instanceof IncomingMessage)) {
    rearmRequest(ctx.req, handoff);
    return;
  }
  const fresh = requestWithBody(ctx.req, handoff);
  ctx.req = fresh;
  ctx.request.req = fresh;
  ctx.response.req = fresh;
}

function isLogger(v: unknown): v is PinoLike {
  if (typeof v !== 'object' || v === null) return false;
  const l = v as Record<string, unknown>;
  return ['debug', 'info', 'warn', 'error'].every((m) => typeof l[m] === 'function');
}
