import type { IncomingMessage } from 'node:http';

/** What the guard reads of an Express layer (Express 4 and 5). */
interface Layer {
  handle?: unknown;
  route?: { stack?: Layer[]; _handlesMethod?(m: string): boolean; _handles_method?(m: string): boolean };
  method?: string;
  path?: string;
  match?(path: string): unknown;
}

/** What `guardExpectContinue` reads of an Express application: its router's layers. */
export interface ExpressRouting {
  /** Express 5. */
  readonly router?: unknown;
  /** Express 4. */
  readonly _router?: unknown;
}

/** Routers nested deeper than this are not read: the request is judged as if routed through. */
const MAX_DEPTH = 8;

/**
 * Whether Express may send `req` through `middleware` (campaign-br BR6): a layer of the app's
 * router (a `use()`, a route, a Router's, each one that matches the path Express routes on)
 * whose handler is it. True when the router cannot be read: a mounted sub-application (whose
 * layers Express does not expose), a target parseurl does not read as a plain path, a layer
 * that throws, deeper nesting than {@link MAX_DEPTH}.
 */
export function routedThrough(app: ExpressRouting, middleware: unknown, req: IncomingMessage): boolean {
  const url = req.url ?? '/';
  if (url[0] !== '/' || /[\t\n\f\r #\u00a0\ufeff]/u.test(url)) return true;
  const q = url.indexOf('?');
  const path = q === -1 ? url : url.slice(0, q);
  const method = (req.method ?? 'GET').toLowerCase();
  try {
    // (Express 4's `app.router` getter throws: its router is `_router`.)
    const router = (app._router ?? app.router) as { stack?: unknown } | undefined;
    if (!Array.isArray(router?.stack)) return true;
    return walk(router.stack as Layer[], path, method, middleware, 0);
  } catch {
    return true;
  }
}

function walk(stack: Layer[], path: string, method: string, middleware: unknown, depth: number): boolean {
  for (const layer of stack) {
    const match = typeof layer.match === 'function' ? layer.match(path) : false;
    if (!match) continue;
    if (layer.handle === middleware) return true;
    const route = layer.route;
    if (route !== undefined) {
      const handles = route._handlesMethod ?? route._handles_method;
      if (typeof handles === 'function' && !handles.call(route, method)) continue;
      for (const l of route.stack ?? [])
        if (l.handle === middleware && (l.method === undefined || l.method === method)) return true;
      continue;
    }
    const handle = layer.handle as { name?: unknown; stack?: unknown } | undefined;
    // Express wraps a sub-application in `mounted_app`: its layers cannot be read from here.
    if (handle?.name === 'mounted_app') return true;
    if (Array.isArray(handle?.stack)) {
      if (depth >= MAX_DEPTH) return true;
      // A Router sees the path without the part its layer matched (Express's trim_prefix; the
      // router package of Express 5 returns it from match(), Express 4 sets layer.path).
      const part = (match as { path?: unknown }).path ?? layer.path;
      const matched = typeof part === 'string' ? part.length : 0;
      const rest = path.slice(matched);
      const inner = rest === '' ? '/' : rest[0] === '/' ? rest : `/${rest}`;
      if (walk(handle.stack as Layer[], inner, method, middleware, depth + 1)) return true;
    }
  }
  return false;
}
