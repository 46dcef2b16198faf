/**
 * The Web-standard targets of the conformance scenarios (see apps.ts for the Node ones), on
 * @hono/node-server over real sockets:
 *
 * - `hono`: a Hono app with `app.use(icap(profile))`; handlers read the body with
 *   `c.req.arrayBuffer()`, `c.req.json()` and `c.req.parseBody()` (undici's form parser);
 * - `web`: a plain `Request → Response` handler wrapped in `withIcap(profile, handler)` (what a
 *   Next.js route handler is), reading with `request.arrayBuffer()`, `.json()`, `.formData()`.
 */
import { createServer as createHttpServer } from 'node:http';
import { createServer as createHttp2Server } from 'node:http2';
import type { AddressInfo } from 'node:net';
import { getRequestListener } from '@hono/node-server';
import type { IcapProfile, IcapRequestInfo } from '@icapkit/core';
import { icap as honoIcap } from '@icapkit/hono';
import { withIcap } from '@icapkit/web';
import { Hono } from 'hono';
import type { App, AppOptions, Seen, SeenFile } from './apps.js';

export type WebFramework = 'hono' | 'web';
export const WEB_FRAMEWORKS: WebFramework[] = ['hono', 'web'];

type Reader = {
  arrayBuffer(): Promise<ArrayBuffer>;
  json(): Promise<unknown>;
  formData(): Promise<FormData>;
};

/** Reads a route's body the way a Web handler does, into what the scenarios compare. */
async function read(route: string, body: Reader): Promise<Partial<Seen> | undefined> {
  switch (route) {
    case 'raw':
      return { raw: Buffer.from(await body.arrayBuffer()) };
    case 'json':
      return { parsed: await body.json() };
    case 'form': {
      const form = await body.formData();
      return { parsed: Object.fromEntries([...form].map(([k, v]) => [k, String(v)])) };
    }
    case 'multipart': {
      const form = await body.formData();
      const files: SeenFile[] = [];
      const fields: Record<string, unknown> = {};
      for (const [field, value] of form) {
        if (typeof value === 'string') fields[field] = value;
        else
          files.push({
            field,
            name: value.name,
            type: value.type.replace(/;.*$/, ''),
            data: Buffer.from(await value.arrayBuffer()),
          });
      }
      return { files, fields };
    }
    default:
      return undefined;
  }
}

function routeOf(method: string, path: string): string | undefined {
  if (method === 'GET' && path === '/health') return 'health';
  if (method === 'POST' && ['/raw', '/json', '/form', '/multipart'].includes(path)) return path.slice(1);
  return undefined;
}

export async function startWebApp(
  framework: WebFramework,
  profile: IcapProfile,
  options: AppOptions = {},
): Promise<App> {
  const seen: Seen[] = [];
  const handle = async (request: Request, icap: IcapRequestInfo | undefined): Promise<Response> => {
    const url = new URL(request.url);
    const route = routeOf(request.method, url.pathname);
    if (route === undefined) return new Response('not found', { status: 404 });
    let got: Partial<Seen> | undefined;
    try {
      got = await read(route, request);
    } catch (err) {
      return Response.json({ error: String(err) }, { status: 400 });
    }
    seen.push({
      route,
      method: request.method,
      url: `${url.pathname}${url.search}`,
      headers: Object.fromEntries(request.headers),
      ...got,
      icap,
    });
    return Response.json({ ok: true });
  };

  let fetch: (request: Request, env: unknown) => Promise<Response> | Response;
  let engine: App['engine'];
  let closeScanner: () => Promise<void>;
  if (framework === 'hono') {
    const mw = honoIcap(profile);
    const app = new Hono();
    app.use(mw);
    app.all('*', (c) => handle(c.req.raw, c.var.icap));
    fetch = app.fetch;
    engine = mw.engine;
    closeScanner = () => mw.close();
  } else {
    const route = withIcap(profile, (request: Request, _env: unknown, icap) => handle(request, icap));
    fetch = route;
    engine = route.scanner.engine;
    closeScanner = () => route.close();
  }
  // serve() of @hono/node-server, with an errorHandler (which serve() does not pass on): a
  // request node-server itself refuses (a Host or target it cannot make a URL of) gets a 400
  // with a length, so the raw clients of the hardening tests see where it ends.
  const listener = getRequestListener(fetch as never, {
    errorHandler: () => new Response('Bad Request', { status: 400, headers: { 'content-length': '11' } }),
  });
  const server = options.http2 ? createHttp2Server(listener) : createHttpServer(listener);
  server.listen(0, '127.0.0.1');
  await new Promise<void>((resolve) => {
    if (server.listening) resolve();
    else server.once('listening', () => resolve());
  });
  return {
    framework: framework as App['framework'],
    http2: options.http2 === true,
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    seen,
    engine,
    close: async () => {
      if ('closeAllConnections' in server) server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await closeScanner();
    },
  };
}
