import {
  createEngine,
  drainAfterAnswer,
  drainLimits,
  guardExpectContinue,
  type IcapEngine,
  type IcapProfile,
  type IcapRequestInfo,
  rearmRequest,
  requestInfo,
  type ScanOutcome,
} from '@icapkit/core';
import type { FastifyPluginAsync, FastifyReply, FastifyRequest, preParsingAsyncHookHandler } from 'fastify';
import fp from 'fastify-plugin';

export * from './analytics.js';

/**
 * Fastify plugin: requests the profile's rules select are scanned by the ICAP server in a
 * `preParsing` hook placed before any other, so the content-type parsers (JSON, and
 * @fastify/multipart, which reads `request.raw` itself) see only an approved body: the
 * original one replayed, or the ICAP server's rewritten one, with a matching length.
 *
 *   await fastify.register(icap, { name: 'uploads', poolGroup: 'icap://127.0.0.1:1344', serviceUri: '/avscan' });
 *   fastify.post('/avatar', { config: { icap: false } }, handler);             // opt out
 *   fastify.post('/docs', { config: { icap: { serviceUri: '/cdr' } } }, handler); // per-route profile
 */

export type IcapRouteOptions = Partial<IcapProfile> | false;

declare module 'fastify' {
  interface FastifyRequest {
    /** Set by @icapkit/fastify once the request was scanned (or not). */
    icap: IcapRequestInfo | null;
  }
  interface FastifyContextConfig {
    /** false: not scanned; an object: this route's profile overrides. */
    icap?: IcapRouteOptions;
  }
  interface FastifyInstance {
    /** The default engine of @icapkit/fastify. */
    icapEngine: IcapEngine;
  }
}

export type IcapPluginOptions = IcapProfile;

const plugin: FastifyPluginAsync<IcapPluginOptions> = async (fastify, profile) => {
  const engine = createEngine(profileOf(profile));
  const routeEngines: IcapEngine[] = [];
  fastify.decorate('icapEngine', engine);
  fastify.decorateRequest('icap', null);
  // Which engine (or none) each route handler has, for Expect: 100-continue answers.
  const byHandler = new Map<unknown, IcapEngine | false>();
  fastify.addHook('onRoute', (route) => {
    const config = (route.config as { icap?: IcapRouteOptions } | undefined)?.icap;
    if (config === false) {
      if (!byHandler.has(route.handler)) byHandler.set(route.handler, false);
      return;
    }
    let routeEngine = engine;
    if (config !== undefined) {
      routeEngine = createEngine({ ...profileOf(profile), ...config });
      routeEngines.push(routeEngine);
    }
    byHandler.set(route.handler, routeEngine);
    const hook = scanHook(routeEngine);
    const existing = route.preParsing;
    // First of all preParsing hooks: nothing may read the body before it was approved.
    route.preParsing =
      existing === undefined ? [hook] : [hook, ...(Array.isArray(existing) ? existing : [existing])];
  });
  // Requests with Expect: 100-continue that are refused anyway (413, 415) are answered before
  // they send their body.
  const unguard = guardExpectContinue(fastify.server as never, async (req) => {
    const route = fastify.findRoute({
      method: (req.method ?? 'GET') as 'GET',
      url: (req.url ?? '/').split('?')[0] ?? '/',
    });
    const routeEngine = route === null ? engine : (byHandler.get(route.handler) ?? engine);
    if (routeEngine === false) return null;
    return routeEngine.preflight(req);
  });
  fastify.addHook('onClose', async () => {
    unguard();
    await Promise.all([engine.close(), ...routeEngines.map((e) => e.close())]);
  });
};

/** The profile without Fastify's own plugin options. */
function profileOf(options: IcapPluginOptions): IcapProfile {
  const {
    prefix: _p,
    logLevel: _l,
    logSerializers: _s,
    ...rest
  } = options as IcapPluginOptions & Record<string, unknown>;
  return rest as unknown as IcapProfile;
}

function scanHook(engine: IcapEngine): preParsingAsyncHookHandler {
  return async function icapPreParsing(request: FastifyRequest, reply: FastifyReply, payload) {
    const raw = request.raw;
    const ac = new AbortController();
    const onClose = () => {
      if (!reply.raw.writableFinished) ac.abort();
    };
    reply.raw.once('close', onClose);
    let outcome: ScanOutcome;
    try {
      outcome = await engine.scan(raw, {
        signal: ac.signal,
        logger: request.log,
        requestId: String(request.id),
      });
    } finally {
      reply.raw.removeListener('close', onClose);
    }
    reply.raw.once('close', () => outcome.dispose());
    request.icap = requestInfo(outcome);
    switch (outcome.kind) {
      case 'aborted':
        // Nothing to answer: close the connection itself (destroying a request whose body was
        // read to its end would leave the socket open).
        reply.hijack();
        if (!reply.raw.destroyed) reply.raw.destroy();
        raw.destroy();
        return payload;
      case 'respond': {
        // The rest of an unread body is still read (bounded), so the client gets the answer.
        if (outcome.closeConnection) drainAfterAnswer(raw, drainLimits(engine));
        const headers: Record<string, string> = {};
        for (const [n, v] of outcome.headers) headers[n] = v;
        await reply.code(outcome.status).headers(headers).send(outcome.body);
        return payload;
      }
      case 'rewrite':
        rearmRequest(raw, {
          body: outcome.body,
          contentLength: outcome.contentLength,
          headers: outcome.headers,
          method: outcome.method,
          url: outcome.url,
        });
        break;
      case 'pass':
        if (outcome.body === null) {
          for (const [n, v] of outcome.responseHeaders) reply.header(n, v);
          return payload;
        }
        rearmRequest(raw, { body: outcome.body, contentLength: outcome.contentLength ?? 0 });
        break;
    }
    for (const [n, v] of outcome.responseHeaders) reply.header(n, v);
    // The re-armed request carries the approved body's own content-length, which is what
    // Fastify checks the bytes its parser reads against (so no receivedEncodedLength here).
    return raw;
  };
}

export const icap = fp(plugin, { fastify: '5.x', name: '@icapkit/fastify' });
export default icap;
