/**
 * The apps of the skip-rule differential test (policy-skip.differential.test.ts): one per
 * framework, icapkit in front, three routes as an application writes them with the framework's
 * own router, every handler reading the body and recording what the framework made of the
 * request (its route, path parameter, `type` query parameter, `X-Source` header, host, method):
 *
 *   ANY <hook>/:x        'webhook'  (hook: '/webhooks', or the spelling a case variant names)
 *   ANY /:tenant/upload  'upload'
 *   ANY anything else    'other'    (a catch-all)
 *
 * Koa and the Web handler have no router here: they match `ctx.path` / `URL.pathname` the way
 * @koa/router (case-insensitive, an optional trailing slash) and a Next.js-style handler do.
 */
import { createServer as createHttpServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { getRequestListener } from '@hono/node-server';
import type { IcapProfile } from '@icapkit/core';
import { icap as expressIcap } from '@icapkit/express';
import { icap as fastifyIcap } from '@icapkit/fastify';
import { icap as honoIcap } from '@icapkit/hono';
import { icap as koaIcap } from '@icapkit/koa';
import { withIcap } from '@icapkit/web';
import express5 from 'express';
import express4 from 'express4';
import Fastify from 'fastify';
import { Hono } from 'hono';
import Koa from 'koa';

export type SkipFramework = 'express5' | 'express4' | 'fastify' | 'fastify-options' | 'koa3' | 'hono' | 'web';
/** `fastify-options`: Fastify with the router options applications turn on (see startFastify). */
export const SKIP_FRAMEWORKS: SkipFramework[] = [
  'express5',
  'express4',
  'fastify',
  'fastify-options',
  'koa3',
  'hono',
  'web',
];

/** What one handler got: the framework's readings of the request, and the body. */
export interface Delivery {
  route: 'webhook' | 'upload' | 'other';
  method: string;
  /** The path as the framework hands it to the application. */
  path: string;
  /** The `:x` (webhook) or `:tenant` (upload) parameter, decoded by the router. */
  param: string | undefined;
  /** The framework's parsed `type` query parameter, every value it holds (a string, an array, an object). */
  type: unknown;
  /** The framework's `X-Source` header reading(s). */
  source: unknown;
  hostname: string | undefined;
  body: Buffer;
}

export interface SkipApp {
  url: string;
  seen: Delivery[];
  close(): Promise<void>;
}

const LIMIT = 1024 * 1024;

export function startSkipApp(framework: SkipFramework, profile: IcapProfile, hook: string): Promise<SkipApp> {
  switch (framework) {
    case 'express5':
    case 'express4':
      return startExpress(framework, profile, hook);
    case 'fastify':
    case 'fastify-options':
      return startFastify(profile, hook, framework === 'fastify-options');
    case 'koa3':
      return startKoa(profile, hook);
    default:
      return startWeb(framework, profile, hook);
  }
}

async function listening(server: Server): Promise<string> {
  if (!server.listening) await new Promise<void>((resolve) => server.once('listening', () => resolve()));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

async function closeServer(server: Server): Promise<void> {
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
}

async function startExpress(
  framework: 'express5' | 'express4',
  profile: IcapProfile,
  hook: string,
): Promise<SkipApp> {
  const express = (framework === 'express5' ? express5 : express4) as unknown as typeof express5;
  const seen: Delivery[] = [];
  const mw = expressIcap(profile);
  const app = express();
  app.use(mw);
  const raw = express.raw({ type: () => true, limit: LIMIT });
  const record =
    (route: Delivery['route'], param: (req: express5.Request) => string | undefined) =>
    (req: express5.Request, res: express5.Response) => {
      seen.push({
        route,
        method: req.method,
        path: req.path,
        param: param(req),
        type: (req.query as Record<string, unknown>).type,
        source: req.headers['x-source'],
        hostname: req.hostname,
        body: Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0),
      });
      res.json({ ok: true, route });
    };
  app.all(
    `${hook}/:x`,
    raw,
    record('webhook', (req) => req.params.x as string),
  );
  app.all(
    '/:tenant/upload',
    raw,
    record('upload', (req) => req.params.tenant as string),
  );
  app.use(
    raw,
    record('other', () => undefined),
  );
  const server = app.listen(0, '127.0.0.1');
  const url = await listening(server);
  return {
    url,
    seen,
    close: async () => {
      await closeServer(server);
      await mw.close();
    },
  };
}

async function startFastify(profile: IcapProfile, hook: string, options: boolean): Promise<SkipApp> {
  const seen: Delivery[] = [];
  // The find-my-way options an application may turn on: `;` ends the path and starts the query
  // (Fastify 4's default), a trailing slash, repeated slashes and case ignored.
  const routerOptions = options
    ? {
        useSemicolonDelimiter: true,
        ignoreTrailingSlash: true,
        ignoreDuplicateSlashes: true,
        caseSensitive: false,
      }
    : {};
  const app = Fastify({ bodyLimit: LIMIT, routerOptions } as never) as unknown as ReturnType<typeof Fastify>;
  await app.register(fastifyIcap, { startupCheck: 'off', ...profile });
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'buffer' }, (_req, body, done) => done(null, body));
  type Req = Parameters<Parameters<typeof app.all>[1]>[0];
  const record = (route: Delivery['route'], param: (req: Req) => string | undefined) => async (req: Req) => {
    seen.push({
      route,
      method: req.method,
      // find-my-way routes an http(s) absolute-form target on its path (the authority ends at
      // / or ?), any other as it is.
      path: req.url.replace(/^https?:\/\/[^/?]*/i, '').replace(options ? /[?#;].*$/s : /[?#].*$/s, '') || '/',
      param: param(req),
      type: (req.query as Record<string, unknown>).type,
      source: req.headers['x-source'],
      hostname: req.hostname,
      body: Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0),
    });
    return { ok: true, route };
  };
  app.all(
    `${hook}/:x`,
    record('webhook', (req) => (req.params as { x: string }).x),
  );
  app.all(
    '/:tenant/upload',
    record('upload', (req) => (req.params as { tenant: string }).tenant),
  );
  app.all(
    '*',
    record('other', () => undefined),
  );
  await app.listen({ port: 0, host: '127.0.0.1' });
  return {
    url: `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`,
    seen,
    close: () => app.close(),
  };
}

function decodeParam(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** `<hook>/:x` and `/:tenant/upload` as @koa/router compiles them by default: any case, an optional trailing slash. */
function routeOf(path: string, hook: string, sensitive: boolean): [Delivery['route'], string | undefined] {
  const flags = sensitive ? '' : 'i';
  const w = new RegExp(`^${escapeRegExp(hook)}/([^/]+?)/?$`, flags).exec(path);
  if (w !== null) return ['webhook', decodeParam(w[1]!)];
  const u = new RegExp('^/([^/]+?)/upload/?$', flags).exec(path);
  if (u !== null) return ['upload', decodeParam(u[1]!)];
  return ['other', undefined];
}

async function startKoa(profile: IcapProfile, hook: string): Promise<SkipApp> {
  const seen: Delivery[] = [];
  const app = new Koa();
  app.silent = true;
  const mw = koaIcap(profile);
  app.use(mw as unknown as Koa.Middleware);
  app.use(async (ctx) => {
    const chunks: Buffer[] = [];
    for await (const c of ctx.req) chunks.push(c as Buffer);
    const [route, param] = routeOf(ctx.path, hook, false);
    seen.push({
      route,
      method: ctx.method,
      path: ctx.path,
      param,
      type: ctx.query.type,
      source: ctx.req.headers['x-source'],
      hostname: ctx.hostname,
      body: Buffer.concat(chunks),
    });
    ctx.body = { ok: true, route };
  });
  const server = app.listen(0, '127.0.0.1');
  const url = await listening(server);
  return {
    url,
    seen,
    close: async () => {
      await closeServer(server);
      await mw.close();
    },
  };
}

async function startWeb(framework: 'hono' | 'web', profile: IcapProfile, hook: string): Promise<SkipApp> {
  const seen: Delivery[] = [];
  const record = async (
    request: Request,
    route: Delivery['route'],
    param: string | undefined,
    path: string,
    type: unknown,
  ) => {
    const body = Buffer.from(await request.arrayBuffer());
    seen.push({
      route,
      method: request.method,
      path,
      param,
      type,
      source: request.headers.get('x-source') ?? undefined,
      hostname: new URL(request.url).hostname,
      body,
    });
    return Response.json({ ok: true, route });
  };
  let fetch: (request: Request, env: unknown) => Promise<Response> | Response;
  let closeScanner: () => Promise<void>;
  if (framework === 'hono') {
    const mw = honoIcap(profile);
    const app = new Hono();
    app.use(mw);
    // Hono's c.req.queries(): every value of the name; c.req.query(), the first, has a parser
    // of its own (a scan of the URL for one name): both must agree.
    const types = (c: {
      req: { queries(n: string): string[] | undefined; query(n: string): string | undefined };
    }) => {
      const all = c.req.queries('type');
      const first = c.req.query('type');
      if (all === undefined && first === undefined) return undefined;
      return all?.length === 1 && first === all[0] ? first : { first, all };
    };
    app.all(`${hook}/:x`, (c) => record(c.req.raw, 'webhook', c.req.param('x'), c.req.path, types(c)));
    app.all('/:tenant/upload', (c) =>
      record(c.req.raw, 'upload', c.req.param('tenant'), c.req.path, types(c)),
    );
    app.all('*', (c) => record(c.req.raw, 'other', undefined, c.req.path, types(c)));
    fetch = app.fetch;
    closeScanner = () => mw.close();
  } else {
    const handler = withIcap(profile, (request: Request) => {
      const url = new URL(request.url);
      const all = url.searchParams.getAll('type');
      const type = all.length === 0 ? undefined : all.length === 1 ? all[0] : all;
      // A file-system router's dynamic segment: case-sensitive, the segment decoded.
      const [route, param] = routeOf(url.pathname, hook, true);
      return record(request, route, param, url.pathname, type);
    });
    fetch = handler;
    closeScanner = () => handler.close();
  }
  const listener = getRequestListener(fetch as never, {
    errorHandler: () => new Response('Bad Request', { status: 400, headers: { 'content-length': '11' } }),
  });
  const server = createHttpServer(listener);
  server.listen(0, '127.0.0.1');
  const url = await listening(server);
  return {
    url,
    seen,
    close: async () => {
      await closeServer(server);
      await closeScanner();
    },
  };
}
