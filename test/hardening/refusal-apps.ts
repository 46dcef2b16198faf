/**
 * Apps for the refusal and wrong-order tests: each framework with its own error handling
 * (Express error middleware, Fastify setErrorHandler, Koa try/catch upstream or
 * app.on('error')), adapter options passed through, and what the handler and the error
 * handler saw. `before` mounts something ahead of icapkit (a body parser in the wrong place).
 */
import type { AddressInfo } from 'node:net';
import type { IcapLog, IcapProfile } from '@icapkit/core';
import { icap as expressIcap } from '@icapkit/express';
import { icap as fastifyIcap } from '@icapkit/fastify';
import { icap as koaIcap } from '@icapkit/koa';
import express5 from 'express';
import express4 from 'express4';
import Fastify, { type FastifyInstance } from 'fastify';
import Koa3 from 'koa';
import Koa2 from 'koa2';

/**
 * The Node adapters that take onRefusal / refusals (@icapkit/express, fastify, koa). The Web-standard
 * adapters hand the refusal to the caller as a Response ({ response } from scan(), or withIcap's),
 * and @icapkit/nestjs has not got these options yet.
 */
export const REFUSAL_FRAMEWORKS = ['express5', 'express4', 'fastify', 'koa3', 'koa2'] as const;
export type Framework = (typeof REFUSAL_FRAMEWORKS)[number];

export interface RefusalApp {
  url: string;
  /** Requests that reached the route handler. */
  handled: string[];
  /** Errors the framework's error handling saw. */
  errors: Array<Record<string, unknown>>;
  logs: IcapLog[];
  close(): Promise<void>;
}

export interface RefusalAppOptions {
  /** Passed to the adapter (Fastify: merged into the plugin options). */
  adapter?: Record<string, unknown>;
  /** Koa: 'try-catch' (default) an upstream middleware; 'app-error' only app.on('error'). */
  koaErrors?: 'try-catch' | 'app-error';
  /** Mounted before icapkit (Express/Koa middleware, Fastify: an onRequest hook). */
  before?: unknown;
  /** Mounted after icapkit, before the handler (a body parser in the right place). */
  after?: unknown;
  /** Express: no error middleware (Express's own finalhandler answers). */
  noErrorHandler?: boolean;
  /** Express/Koa: install the middleware's Expect: 100-continue guard on the server. */
  guardExpectContinue?: boolean;
}

/** What an error handler answers: enough of the error to assert on. */
function describe(err: unknown): Record<string, unknown> {
  const e = err as Record<string, unknown>;
  return {
    name: e.name,
    code: e.code,
    status: e.status,
    statusCode: e.statusCode,
    expose: e.expose,
    reason: e.reason,
    threat: e.threat,
    message: e.message,
    headers: e.headers,
    logAction: (e.log as IcapLog | undefined)?.action,
    err,
  };
}

export async function startRefusalApp(
  framework: Framework,
  profile: IcapProfile,
  options: RefusalAppOptions = {},
): Promise<RefusalApp> {
  const logs: IcapLog[] = [];
  const p: IcapProfile = { ...profile, onLog: (l) => logs.push(l) };
  if (framework === 'fastify') return startFastify(p, logs, options);
  if (framework === 'express5' || framework === 'express4') return startExpress(framework, p, logs, options);
  return startKoa(framework, p, logs, options);
}

async function startExpress(
  framework: 'express5' | 'express4',
  profile: IcapProfile,
  logs: IcapLog[],
  options: RefusalAppOptions,
): Promise<RefusalApp> {
  const express = (framework === 'express5' ? express5 : express4) as unknown as typeof express5;
  const handled: string[] = [];
  const errors: Array<Record<string, unknown>> = [];
  const mw = expressIcap(profile, options.adapter as never);
  const app = express();
  if (options.before !== undefined) app.use(options.before as express5.RequestHandler);
  app.use(mw);
  const after = (options.after ??
    express.raw({ type: () => true, limit: '10mb' })) as express5.RequestHandler;
  app.post('/upload', after, (req, res) => {
    handled.push(req.url);
    res.json({ ok: true, action: req.icap.action });
  });
  if (!options.noErrorHandler)
    app.use((err: unknown, req: express5.Request, res: express5.Response, _next: express5.NextFunction) => {
      const d = describe(err);
      errors.push({ ...d, icapAction: req.icap?.action });
      res.status(typeof d.status === 'number' ? d.status : 500).json({
        handler: 'express',
        code: d.code,
        message: d.expose ? d.message : 'hidden',
        threat: d.threat,
      });
    });
  const server = app.listen(0, '127.0.0.1');
  if (options.guardExpectContinue) mw.guardExpectContinue(server);
  await new Promise<void>((resolve) => server.once('listening', () => resolve()));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    handled,
    errors,
    logs,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await mw.close();
    },
  };
}

async function startFastify(
  profile: IcapProfile,
  logs: IcapLog[],
  options: RefusalAppOptions,
): Promise<RefusalApp> {
  const handled: string[] = [];
  const errors: Array<Record<string, unknown>> = [];
  const app: FastifyInstance = Fastify();
  if (options.before !== undefined) app.addHook('onRequest', options.before as never);
  // startupCheck off: some cases start against a scanner that is down on purpose.
  await app.register(fastifyIcap, { startupCheck: 'off', ...profile, ...(options.adapter ?? {}) } as never);
  app.addContentTypeParser('*', { parseAs: 'buffer' }, (_req, body, done) => done(null, body));
  app.setErrorHandler((err, request, reply) => {
    const d = describe(err);
    errors.push({ ...d, icapAction: request.icap?.action });
    reply
      .code(typeof d.statusCode === 'number' ? d.statusCode : 500)
      .send({ handler: 'fastify', code: d.code, message: d.expose ? d.message : 'hidden', threat: d.threat });
  });
  app.post('/upload', async (request) => {
    handled.push(request.url);
    return { ok: true, action: request.icap.action };
  });
  await app.listen({ port: 0, host: '127.0.0.1' });
  return {
    url: `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`,
    handled,
    errors,
    logs,
    close: () => app.close(),
  };
}

async function startKoa(
  framework: 'koa3' | 'koa2',
  profile: IcapProfile,
  logs: IcapLog[],
  options: RefusalAppOptions,
): Promise<RefusalApp> {
  const Koa = (framework === 'koa3' ? Koa3 : Koa2) as unknown as typeof Koa3;
  const handled: string[] = [];
  const errors: Array<Record<string, unknown>> = [];
  const app = new Koa();
  app.silent = true;
  if (options.koaErrors === 'app-error') {
    app.on('error', (err: unknown, ctx: Koa3.Context) => {
      errors.push({ ...describe(err), icapAction: ctx.state.icap?.action, via: 'app-error' });
    });
  } else {
    app.use(async (ctx, next) => {
      try {
        await next();
      } catch (err) {
        const d = describe(err);
        errors.push({ ...d, icapAction: ctx.state.icap?.action });
        ctx.status = typeof d.status === 'number' ? d.status : 500;
        ctx.body = {
          handler: 'koa',
          code: d.code,
          message: d.expose ? d.message : 'hidden',
          threat: d.threat,
        };
      }
    });
  }
  if (options.before !== undefined) app.use(options.before as Koa3.Middleware);
  const mw = koaIcap(profile, options.adapter as never);
  app.use(mw as unknown as Koa3.Middleware);
  if (options.after !== undefined) app.use(options.after as Koa3.Middleware);
  app.use(async (ctx) => {
    if (ctx.path !== '/upload') return;
    if (options.after === undefined) for await (const _ of ctx.req);
    handled.push(ctx.url);
    ctx.body = { ok: true, action: ctx.state.icap.action };
  });
  const server = app.listen(0, '127.0.0.1');
  if (options.guardExpectContinue) mw.guardExpectContinue(server);
  await new Promise<void>((resolve) => server.once('listening', () => resolve()));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    handled,
    errors,
    logs,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await mw.close();
    },
  };
}
