import {
  checkRefusalOptions,
  IcapEngine,
  type IcapProfile,
  type IcapRequestInfo,
  type PinoLike,
} from '@icapkit/core';
import { disposeWhenSent } from './held.js';
import { refusalError, type WebRefusalOptions } from './refusal.js';
import { createScanner, incomingOf, type WebScanner, type WebScanResult } from './scan.js';

/**
 * A fetch-style handler (`(request, context) => Response`) that gets only approved requests:
 * Next.js App Router route handlers, and any server that calls a function with a `Request`.
 *
 *   // app/api/upload/route.ts
 *   export const POST = withIcap(profile, async (request, context, icap) => {
 *     const form = await request.formData();     // the scanned bytes
 *     return Response.json({ files: form.getAll('file').length, scan: icap.action });
 *   });
 *
 * The handler receives the approved request (of the same class as the one given, so a
 * `NextRequest` stays a `NextRequest`), the context unchanged, and the scan's outcome. Refused
 * requests are answered without calling it (403, 413, 415, 400, 408, 429, 503 ...).
 *
 * Refusals: `onRefusal(refusal, request, context)` returns your own `Response` (or
 * `{ status, headers, body }`); `refusals: 'error'` throws an `IcapRefusalError` (`status`,
 * `expose`, `code`, `log`, and `getResponse()` for the default page) for your try/catch or a
 * Next.js error boundary. Either way the handler never runs.
 */

export type IcapHandler<Req extends Request, Ctx, Res extends Response> = (
  request: Req,
  context: Ctx,
  icap: IcapRequestInfo,
) => Res | Promise<Res>;

export interface WithIcapOptions<Req extends Request = Request, Ctx = unknown>
  extends WebRefusalOptions<[request: Req, context: Ctx]> {
  /** A request logger (pino-compatible) to use instead of the profile's. */
  logger?: PinoLike | undefined;
  /** Shown on block pages so users can quote it. */
  requestId?: ((request: Req) => string | undefined) | undefined;
  /** The client's address (`x-forwarded-for` is not trusted unless you say so here). */
  clientIp?: ((request: Req) => string | undefined) | undefined;
}

export interface IcapRouteHandler<Req extends Request, Ctx> {
  (request: Req, context: Ctx): Promise<Response>;
  /** The scanner (made on the first request when a profile was given). */
  readonly scanner: WebScanner;
  /** Closes the scanner's engine when this wrapper made it. */
  close(): Promise<void>;
}

/**
 * Wraps a route handler. `source`: a profile (one engine is made, on the first request, and
 * shared by every call of this wrapper), a scanner from `createScanner`, or an engine.
 */
export function withIcap<Req extends Request = Request, Ctx = unknown, Res extends Response = Response>(
  source: IcapProfile | IcapEngine | WebScanner,
  handler: IcapHandler<Req, Ctx, Res>,
  options: WithIcapOptions<Req, Ctx> = {},
): IcapRouteHandler<Req, Ctx> {
  checkRefusalOptions(options as never, '@icapkit/web withIcap');
  const onRefusal = options.onRefusal;
  let scanner: WebScanner | undefined;
  const owned = !(source instanceof IcapEngine) && !isScanner(source);
  const get = (): WebScanner => {
    if (scanner === undefined) scanner = isScanner(source) ? source : createScanner(source);
    return scanner;
  };
  const route = async (request: Req, context: Ctx): Promise<Response> => {
    const incoming = incomingOf(context);
    const result = await get().scan(request, {
      logger: options.logger,
      requestId: options.requestId?.(request),
      clientIp: options.clientIp?.(request),
      // Served by @hono/node-server (`serve({ fetch: route })`): the Node request is the context.
      incoming,
      onRefusal: onRefusal === undefined ? undefined : (refusal) => onRefusal(refusal, request, context),
    });
    if (result.response !== undefined) {
      if (options.refusals === 'error' && result.refusal !== undefined)
        throw refusalError(result.refusal, incoming?.httpVersionMajor === 1);
      return result.response;
    }
    const approved = sameClass(request, result.request);
    let response: Response;
    try {
      response = await handler(approved, context, result.icap);
    } catch (err) {
      if (!approved.bodyUsed) result.dispose();
      throw err;
    }
    // A body the handler has not opened may still be read while its response streams: freed
    // once the response is done (held.ts).
    if (!approved.bodyUsed) response = disposeWhenSent(response, result.dispose, context);
    return withHeaders(response, result.responseHeaders);
  };
  return Object.assign(route, {
    get scanner() {
      return get();
    },
    close: async () => {
      if (owned && scanner !== undefined) await scanner.close();
    },
  }) as IcapRouteHandler<Req, Ctx>;
}

function isScanner(v: unknown): v is WebScanner {
  return (
    typeof v === 'object' &&
    v !== null &&
    typeof (v as WebScanner).scan === 'function' &&
    (v as WebScanner).engine instanceof IcapEngine
  );
}

/**
 * The approved request as an instance of the original's class (a framework's subclass of
 * Request, such as Next's NextRequest, adds what its handlers read: `nextUrl`, `cookies`).
 */
export function sameClass<Req extends Request>(original: Req, approved: Request): Req {
  if (approved === original) return original;
  const Ctor = original.constructor as new (input: Request) => Req;
  if (typeof Ctor !== 'function' || Ctor === Request || approved instanceof Ctor) return approved as Req;
  try {
    return new Ctor(approved);
  } catch {
    return approved as Req;
  }
}

/** Adds the scan's response headers (a response with immutable headers is copied first). */
export function withHeaders<Res extends Response>(
  response: Res,
  headers: ReadonlyArray<readonly [string, string]>,
): Res | Response {
  if (headers.length === 0) return response;
  try {
    for (const [n, v] of headers) response.headers.set(n, v);
    return response;
  } catch {
    const copy = new Response(response.body, response);
    for (const [n, v] of headers) copy.headers.set(n, v);
    return copy;
  }
}

export type { WebScanResult };
