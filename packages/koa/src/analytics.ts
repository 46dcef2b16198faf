import type { IncomingMessage, ServerResponse } from 'node:http';
import {
  type AnalyticsEngine,
  createLogAnalytics,
  IcapError,
  IcapErrorCodes,
  type LogAnalytics,
  type LogAnalyticsOptions,
} from '@icapkit/core';

export type { AnalyticsGuard, AnalyticsGuardResult, LogAnalytics } from '@icapkit/core';
export { loopbackOnly, tokenGuard } from '@icapkit/core';
/**
 * The log analytics page of @icapkit/core as Koa middleware, answering below a path prefix:
 *
 *   const scan = icap(profile);
 *   app.use(icapAnalytics(scan, { prefix: '/icap-analytics', guard: loopbackOnly }));
 *   app.use(scan);
 *
 * Put it before the scanning middleware, so the page's own requests are not logged. Other
 * requests go downstream untouched. A guard is required (`loopbackOnly`, `tokenGuard(token)`,
 * your own, or `() => true` for a public page).
 */

export interface IcapKoaAnalyticsOptions extends Omit<LogAnalyticsOptions, 'engine'> {
  /** Where the page is: '/icap-analytics' (default) answers /icap-analytics and below. */
  prefix?: string | undefined;
}

/** The parts of Koa's context this middleware uses. */
export interface KoaAnalyticsContext {
  req: IncomingMessage;
  res: ServerResponse;
  respond?: boolean;
}

export interface IcapKoaAnalyticsMiddleware {
  (ctx: KoaAnalyticsContext, next: () => Promise<unknown>): Promise<void>;
  readonly analytics: LogAnalytics;
  /** Stops recording. */
  close(): void;
}

/** `source`: the `icap()` middleware (or its engine, or several). */
export function icapAnalytics(
  source: AnalyticsEngine | readonly AnalyticsEngine[],
  options: IcapKoaAnalyticsOptions,
): IcapKoaAnalyticsMiddleware {
  const { prefix: given, ...rest } = options;
  const prefix = (given ?? '/icap-analytics').replace(/\/+$/, '');
  if (prefix !== '' && !/^\/[^?#\s]*$/.test(prefix)) {
    throw new IcapError(IcapErrorCodes.INVALID_ARGUMENT, `prefix must be a path such as /icap-analytics`, {
      field: 'prefix',
    });
  }
  const analytics = createLogAnalytics({ ...rest, engine: source });
  const middleware = async (ctx: KoaAnalyticsContext, next: () => Promise<unknown>): Promise<void> => {
    const url = ctx.req.url ?? '/';
    const rest = url.slice(prefix.length);
    const below = url.startsWith(prefix) && (rest === '' || rest[0] === '/' || rest[0] === '?');
    if (!below || !analytics.owns(rest)) {
      await next();
      return;
    }
    ctx.respond = false; // the core handler writes the response itself
    await analytics.handle(ctx.req, ctx.res, rest);
  };
  return Object.assign(middleware, { analytics, close: () => analytics.close() });
}
