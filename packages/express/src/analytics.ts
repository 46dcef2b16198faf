import type { IncomingMessage, ServerResponse } from 'node:http';
import {
  type AnalyticsEngine,
  createLogAnalytics,
  type LogAnalytics,
  type LogAnalyticsOptions,
} from '@icapkit/core';

export type { AnalyticsGuard, AnalyticsGuardResult, LogAnalytics } from '@icapkit/core';
export { loopbackOnly, tokenGuard } from '@icapkit/core';
/**
 * The log analytics page of @icapkit/core as Express middleware, mounted under a path:
 *
 *   const scan = icap(profile);
 *   app.use('/icap-analytics', icapAnalytics(scan, { guard: loopbackOnly }));
 *   app.use(scan);
 *
 * Mount it before the scanning middleware, so the page's own requests are not logged. Requests
 * below the mount path that are not the page's go to the next handler. A guard is required
 * (`loopbackOnly`, `tokenGuard(token)`, your own, or `() => true` for a public page).
 */

export type IcapAnalyticsOptions = Omit<LogAnalyticsOptions, 'engine'>;

export interface IcapAnalyticsMiddleware {
  (req: IncomingMessage, res: ServerResponse, next: (err?: unknown) => void): void;
  /** The ring of records and the handler. */
  readonly analytics: LogAnalytics;
  /** Stops recording. */
  close(): void;
}

/** `source`: the `icap()` middleware (or its engine, or several). */
export function icapAnalytics(
  source: AnalyticsEngine | readonly AnalyticsEngine[],
  options: IcapAnalyticsOptions,
): IcapAnalyticsMiddleware {
  const analytics = createLogAnalytics({ ...options, engine: source });
  const middleware = (req: IncomingMessage, res: ServerResponse, next: (err?: unknown) => void): void => {
    // Express strips the mount path from req.url.
    const target = req.url ?? '/';
    if (!analytics.owns(target)) {
      next();
      return;
    }
    analytics.handle(req, res, target).catch(next);
  };
  return Object.assign(middleware, { analytics, close: () => analytics.close() });
}
