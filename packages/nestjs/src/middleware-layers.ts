/**
 * Nest's own middleware among an Express application's layers: what `MiddlewareConsumer` binds
 * runs and passes a request on, it is no handler of its own (routes.ts reads the layers).
 */

/** Nest's middleware layers' functions, as Nest registered them (see recordNestMiddleware). */
const nestMiddleware = new WeakSet<object>();
/** Whether an adapter's middleware registrations were recorded (else the wrapper's source decides). */
let recording = false;

/**
 * Records the functions Nest's MiddlewareModule registers through the adapter (its
 * `createMiddlewareFactory`, which every `MiddlewareConsumer` binding goes through), so that
 * they are told from handlers `main.ts` adds by identity. Called before `app.init()` registers
 * them; false when the adapter has no such method (then their source decides).
 */
export function recordNestMiddleware(adapter: unknown): boolean {
  const a = adapter as { createMiddlewareFactory?: (method: unknown) => unknown };
  const create = a.createMiddlewareFactory;
  if (typeof create !== 'function') return false;
  const wrap = (router: unknown): unknown =>
    typeof router !== 'function'
      ? router
      : (path: unknown, callback: unknown) => {
          if (typeof callback === 'function') nestMiddleware.add(callback);
          return (router as (p: unknown, c: unknown) => unknown)(path, callback);
        };
  a.createMiddlewareFactory = function (this: unknown, method: unknown) {
    const router = create.call(this, method);
    return router instanceof Promise ? router.then(wrap) : wrap(router);
  };
  recording = true;
  return true;
}

/**
 * Nest's middleware (`MiddlewareConsumer`), registered as Express layers (`use()`, or routes for
 * one method): it runs and passes the request on to the route, it is no handler of its own. Told
 * by identity (recordNestMiddleware); where that could not be recorded, by the wrapper Nest's
 * MiddlewareModule puts around it.
 */
export function isNestMiddleware(handle: unknown): boolean {
  if (typeof handle !== 'function') return false;
  if (recording) return nestMiddleware.has(handle);
  const source = Function.prototype.toString.call(handle);
  return source.includes('handledRequests') && source.includes('middlewareFunction(req, res, next)');
}
