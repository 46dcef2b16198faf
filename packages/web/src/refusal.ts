import {
  type IcapRefusal,
  IcapRefusalError,
  type IcapRefusalMode,
  type IcapRefusalReply,
  replyResponse,
} from '@icapkit/core';

export {
  type IcapRefusal,
  IcapRefusalError,
  type IcapRefusalMode,
  type IcapRefusalReply,
  isIcapRefusalError,
  type RefusalReason,
} from '@icapkit/core';

/**
 * Refusals in the Web-standard adapters (@icapkit/web, @icapkit/hono), with the same two options
 * as the Node adapters:
 *
 * - `onRefusal(refusal, ...args)`: return a `Response` (status 300-599) or
 *   `{ status?, headers?, body? }`; returning nothing keeps icapkit's page.
 * - `refusals: 'error'`: `withIcap` / the Hono middleware throw an {@link IcapRefusalError}
 *   (with `getResponse()`, the default page, as Hono's HTTPException has).
 *
 * Fail closed: a callback that throws, rejects, returns nothing usable or a status outside
 * 300-599 gets the default page; the handler never runs.
 */

/** What a Web `onRefusal` returns: a Response, a reply, or nothing (the default page). */
// biome-ignore lint/suspicious/noConfusingVoidType: a callback that keeps the default page returns nothing
export type WebRefusalResult = Response | IcapRefusalReply | undefined | void;

/** `onRefusal` of the Web adapters; `Args` are the framework's (withIcap: request, context; Hono: c). */
export type WebOnRefusal<Args extends unknown[]> = (
  refusal: IcapRefusal,
  ...args: Args
) => WebRefusalResult | Promise<WebRefusalResult>;

/** The refusal options of the Web adapters. */
export interface WebRefusalOptions<Args extends unknown[]> {
  /**
   * 'respond' (default): answer with icapkit's page, or `onRefusal`'s. 'error': throw an
   * {@link IcapRefusalError} (withIcap, the Hono middleware) for the application's error handling.
   */
  refusals?: IcapRefusalMode | undefined;
  /**
   * Render a refusal yourself: return a `Response` (300-599) or `{ status, headers, body }`.
   * Throwing, or returning nothing, answers with the default page (a refusal never passes).
   */
  onRefusal?: WebOnRefusal<Args> | undefined;
}

/** The default page of a refusal as a Response (`Connection` only where HTTP/1 is known). */
export function defaultRefusalResponse(refusal: IcapRefusal, http1: boolean): Response {
  return toResponse(refusal.response, http1);
}

function toResponse(
  page: { status: number; headers: ReadonlyArray<readonly [string, string]>; body: Uint8Array },
  http1: boolean,
): Response {
  const headers = new Headers();
  for (const [n, v] of page.headers) {
    const key = n.toLowerCase();
    if (key === 'content-length' || (key === 'connection' && !http1)) continue;
    headers.append(n, v);
  }
  return new Response(new Uint8Array(page.body), { status: page.status, headers });
}

/**
 * The answer to a refusal given `onRefusal`: its Response or reply when it is a refusal
 * (300-599), else the default page (`report` is told why, unless it returned nothing).
 */
export async function shapeRefusal(
  refusal: IcapRefusal,
  run: () => WebRefusalResult | Promise<WebRefusalResult>,
  report: (err: unknown) => void,
  http1: boolean,
): Promise<Response> {
  let result: unknown;
  try {
    result = await run();
  } catch (err) {
    report(err);
    return defaultRefusalResponse(refusal, http1);
  }
  if (result === undefined || result === null) return defaultRefusalResponse(refusal, http1);
  try {
    if (result instanceof Response) {
      if (result.status < 300 || result.status > 599)
        throw new RangeError(
          `onRefusal returned a Response with status ${result.status}: a refusal is answered with 300-599`,
        );
      if (refusal.closeConnection && http1) {
        try {
          result.headers.set('connection', 'close');
        } catch {
          // Immutable headers (Response.redirect, fetch's): answered as they are.
        }
      }
      return result;
    }
    return toResponse(replyResponse(refusal, result as IcapRefusalReply, !http1), http1);
  } catch (err) {
    report(err);
    return defaultRefusalResponse(refusal, http1);
  }
}

/**
 * The error thrown with `refusals: 'error'`: an {@link IcapRefusalError} whose `getResponse()`
 * gives the default page (a fresh Response each call), so that Hono's default error handler,
 * or any code that knows HTTPException, answers with it rather than a 500.
 */
export function refusalError(
  refusal: IcapRefusal,
  http1: boolean,
): IcapRefusalError & { getResponse(): Response } {
  const err = new IcapRefusalError(refusal, { http2: !http1 });
  Object.defineProperty(err, 'getResponse', {
    value: () => defaultRefusalResponse(refusal, http1),
    enumerable: false,
    configurable: true,
    writable: true,
  });
  return err as IcapRefusalError & { getResponse(): Response };
}
