import type { IncomingMessage } from 'node:http';
import {
  type ContinueServer,
  checkRefusalOptions,
  guardExpectContinue,
  type IcapEngine,
  type IcapProfile,
  type IcapRequestInfo,
  type PinoLike,
  requestInfo,
} from '@icapkit/core';
import {
  createScanner,
  disposeWhenSent,
  incomingOf,
  refusalError,
  type WebRefusalOptions,
  type WebScanner,
  withHeaders,
} from '@icapkit/web';
import type { Context, MiddlewareHandler } from 'hono';

/**
 * Hono middleware: requests the profile's rules select are scanned by the ICAP server before
 * the handlers run. Approved requests continue with `c.req.raw` replaced by the approved
 * request, or on @hono/node-server, for a body passed as it came, the same Request reading it
 * from the Node request it was handed back in (so `c.req.parseBody()`, `c.req.json()`,
 * `c.req.arrayBuffer()` and validators read the scanned bytes); `c.var.icap` describes the scan. Blocked: 403, oversized: 413, scanner
 * failure: 503 (or pass, per the profile); the same pages and problem+json as the Node adapters.
 *
 *   import { serve } from '@hono/node-server';
 *   const app = new Hono();
 *   app.use('/upload/*', icap({ name: 'uploads', poolGroup: 'icap://127.0.0.1:1344', serviceUri: '/avscan' }));
 *   app.post('/upload/file', async (c) => c.json({ scan: c.var.icap.action, body: await c.req.parseBody() }));
 *   serve({ fetch: app.fetch, port: 3000 });
 *
 * Refusals: `onRefusal(refusal, c)` returns your own `Response` (or `{ status, headers, body }`);
 * `refusals: 'error'` throws an `IcapRefusalError` to `app.onError` (with `status`, `expose`,
 * `code`, `log`, and `getResponse()`: without an `onError`, Hono's default handler answers with
 * icapkit's page, not a 500). Either way the handlers never run.
 */

declare module 'hono' {
  interface ContextVariableMap {
    /** The scan of this request (set by @icapkit/hono's middleware). */
    icap: IcapRequestInfo;
  }
}

export {
  type IcapRefusal,
  IcapRefusalError,
  type IcapRefusalReply,
  isIcapRefusalError,
  type WebRefusalResult,
} from '@icapkit/web';
export type { IcapRequestInfo };

/** Hono's Env for apps that prefer explicit Variables: `new Hono<IcapEnv>()`. */
export interface IcapEnv {
  Variables: { icap: IcapRequestInfo };
}

export interface IcapHonoOptions extends WebRefusalOptions<[c: Context<IcapEnv>]> {
  /** An engine (or scanner) to use instead of making one for the profile. */
  engine?: IcapEngine | undefined;
  scanner?: WebScanner | undefined;
  /** Shown on block pages: by default `c.var.requestId` (Hono's requestId middleware). */
  requestId?: ((c: HonoContextLike) => string | undefined) | undefined;
  /** A request logger (pino-compatible) to use instead of the profile's. */
  logger?: PinoLike | undefined;
}

/** What the middleware reads of Hono's context besides the request. */
export interface HonoContextLike {
  env: unknown;
  get(key: string): unknown;
}

export type IcapHonoMiddleware = MiddlewareHandler<IcapEnv> & {
  readonly engine: IcapEngine;
  readonly scanner: WebScanner;
  /** Stops probes and closes every ICAP connection (of an engine this middleware made). */
  close(): Promise<void>;
  /**
   * Node servers (`serve()` of @hono/node-server): answers requests with
   * `Expect: 100-continue` that would be refused anyway (413, 415) before they send their
   * body: `mw.guardExpectContinue(serve({ fetch: app.fetch, port: 3000 }), app)`. Returns the
   * server. With the app, only requests its router sends through this middleware are answered
   * so (others get 100 Continue); without it, every request of the server is judged with the
   * profile: leave it out only when the middleware is mounted on every path (`app.use(mw)`).
   */
  guardExpectContinue<S>(server: S, app?: HonoRouting): S;
};

/** What `guardExpectContinue` reads of a Hono app: its router and its reading of the path. */
export interface HonoRouting {
  readonly router: { match(method: string, path: string): unknown };
  getPath(request: Request, options?: { env?: unknown }): string;
}

export function icap(profile: IcapProfile, options: IcapHonoOptions = {}): IcapHonoMiddleware {
  const scanner = options.scanner ?? createScanner(options.engine ?? profile);
  const owned = options.scanner === undefined && options.engine === undefined;
  checkRefusalOptions(options as never, '@icapkit/hono');
  const onRefusal = options.onRefusal;
  const middleware: MiddlewareHandler<IcapEnv> = async (c, next) => {
    const requestId = options.requestId ? options.requestId(c) : c.get('requestId' as never);
    const incoming = incomingOf(c.env);
    const result = await scanner.scan(c.req.raw, {
      incoming,
      logger: options.logger,
      requestId: typeof requestId === 'string' ? requestId : undefined,
      // c.var.icap is set before onRefusal runs (below, for the handlers).
      onRefusal:
        onRefusal === undefined
          ? undefined
          : (refusal) => {
              c.set('icap', requestInfo(refusal));
              return onRefusal(refusal, c);
            },
    });
    c.set('icap', result.icap);
    if (result.response !== undefined) {
      // Hono's onError receives it (its default handler answers with getResponse(): the page).
      if (options.refusals === 'error' && result.refusal !== undefined)
        throw refusalError(result.refusal, incoming?.httpVersionMajor === 1);
      return result.response;
    }
    const approved = result.request;
    if (approved !== c.req.raw) {
      c.req.raw = approved;
      // Hono matched the route already; a URL the ICAP server rewrote is what c.req.path reads.
      const path = new URL(approved.url).pathname;
      if (path !== c.req.path) (c.req as { path: string }).path = path;
    }
    try {
      await next();
    } catch (err) {
      if (!approved.bodyUsed) result.dispose();
      throw err;
    }
    // A body the handlers have not opened may still be read while the response streams
    // (hono/streaming): freed once the response is done (@icapkit/web's disposeWhenSent).
    if (!approved.bodyUsed) {
      const res = c.res;
      const watched = disposeWhenSent(res, result.dispose, c.env);
      if (watched !== res) c.res = watched;
    }
    if (result.responseHeaders.length > 0) c.res = withHeaders(c.res, result.responseHeaders);
  };
  return Object.assign(middleware, {
    engine: scanner.engine,
    scanner,
    close: async () => {
      if (owned) await scanner.close();
    },
    guardExpectContinue<S>(server: S, app?: HonoRouting): S {
      // Refusals the application shapes go through the middleware (after 100 Continue).
      const shaped = onRefusal !== undefined || options.refusals === 'error';
      guardExpectContinue(server as unknown as ContinueServer, async (req: IncomingMessage) =>
        shaped || (app !== undefined && !routedThrough(app, middleware, req))
          ? null
          : scanner.engine.preflight(req),
      );
      return server;
    },
  });
}

export default icap;

/** Hono's mark on a handler wrapping a sub-app's (`app.route()` of an app with an onError). */
const COMPOSED_HANDLER = '__COMPOSED_HANDLER';

/**
 * Whether `app`'s router sends `req` through `middleware` (campaign-br BR6): a request to a
 * route it is not mounted on is not answered before its body. True when the router cannot be
 * read (the guard then judges the request as before).
 */
function routedThrough(app: HonoRouting, middleware: unknown, req: IncomingMessage): boolean {
  try {
    const target = req.url ?? '/';
    const url = target.startsWith('/') ? `http://localhost${target}` : target;
    const path = app.getPath({ url } as Request);
    const method = req.method === 'HEAD' ? 'GET' : (req.method ?? 'GET');
    const [handlers] = app.router.match(method, path) as [Array<[[unknown, ...unknown[]], ...unknown[]]>];
    return handlers.some(([[handler]]) => {
      let h = handler as Record<string, unknown> | undefined;
      for (let depth = 0; h !== undefined && depth < 16; depth++) {
        if (h === middleware) return true;
        h = h[COMPOSED_HANDLER] as Record<string, unknown> | undefined;
      }
      return false;
    });
  } catch {
    return true;
  }
}
