import { type AnalyticsEngine, createLogAnalytics, type LogAnalyticsOptions } from '@icapkit/core';
import type { FastifyPluginAsync, FastifyReply, FastifyRequest, HTTPMethods } from 'fastify';

export type { AnalyticsGuard, AnalyticsGuardResult, LogAnalytics } from '@icapkit/core';
export { loopbackOnly, tokenGuard } from '@icapkit/core';
/**
 * The log analytics page of @icapkit/core as a Fastify plugin, registered with a prefix:
 *
 *   await fastify.register(icap, profile);
 *   await fastify.register(icapAnalytics, { prefix: '/icap-analytics', guard: loopbackOnly });
 *
 * It shows the records of `fastify.icapEngine` (the icap plugin's engine; `engine` names
 * another). Its routes opt out of scanning (`config: { icap: false }`), so the page's own
 * requests are not logged. The plugin is encapsulated (the prefix applies to it). A guard is
 * required (`loopbackOnly`, `tokenGuard(token)`, your own, or `() => true` for a public page).
 */

export interface IcapAnalyticsPluginOptions extends Omit<LogAnalyticsOptions, 'engine'> {
  /** Default: the icap plugin's engine (`fastify.icapEngine`). */
  engine?: AnalyticsEngine | readonly AnalyticsEngine[] | undefined;
}

const METHODS: HTTPMethods[] = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'];

export const icapAnalytics: FastifyPluginAsync<IcapAnalyticsPluginOptions> = async (fastify, options) => {
  const engine =
    options.engine ?? (fastify.hasDecorator('icapEngine') ? fastify.icapEngine : undefined) ?? [];
  const analytics = createLogAnalytics({
    engine,
    guard: options.guard,
    capacity: options.capacity,
    maxStringLength: options.maxStringLength,
    maxListLength: options.maxListLength,
    maxRecordLength: options.maxRecordLength,
  });
  const prefix = fastify.prefix;
  // Answered in onRequest, before any body parsing: other methods get the handler's 405.
  const onRequest = async (request: FastifyRequest, reply: FastifyReply): Promise<void> => {
    const url = request.raw.url ?? '/';
    const target = url.startsWith(prefix) ? url.slice(prefix.length) : url;
    if (!analytics.owns(target)) {
      // Not the page's: the application's not-found handler answers (below), but never with a
      // body, which these routes (opted out of scanning) would parse unscanned for it.
      if (hasBody(request)) await reply.code(404).send();
      return;
    }
    reply.hijack();
    try {
      await analytics.handle(request.raw, reply.raw, target);
    } catch {
      // The reply is ours now (hijacked): Fastify would not answer it.
      if (!reply.raw.headersSent)
        reply.raw.writeHead(500, { 'content-type': 'text/plain' }).end('Internal Server Error\n');
      else reply.raw.destroy();
    }
  };
  const notFound = async (_request: FastifyRequest, reply: FastifyReply): Promise<void> => {
    reply.callNotFound();
  };
  for (const url of ['/', '/*']) {
    fastify.route({ method: METHODS, url, config: { icap: false }, onRequest, handler: notFound });
  }
  fastify.addHook('onClose', async () => analytics.close());
};

/** The request announces a body (a length above 0, or a transfer coding). */
function hasBody(request: FastifyRequest): boolean {
  const h = request.headers;
  return (
    h['transfer-encoding'] !== undefined || (h['content-length'] !== undefined && h['content-length'] !== '0')
  );
}
