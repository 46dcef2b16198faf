import { Readable } from 'node:stream';
import { bodyConsumedReason } from '@icapkit/core';

/**
 * @hono/node-server's lightweight `Request`, read without making it a real one.
 *
 * @hono/node-server hands the application an object that only looks like a `Request`: it
 * builds the real one (undici's, with a Web stream over the Node request) the first time
 * something asks for its `body`, and its `text()`, `json()` and `arrayBuffer()` read the Node
 * request (`env.incoming`) directly. Scanning through `request.body` made that real Request, a
 * Web stream over the Node one, and then a second real Request for the approved body: about
 * as much CPU per request as Hono itself spends.
 *
 * When nothing has asked for the body yet, the scan reads the Node request instead, and a body
 * passed as it came is handed back in that same Node request, made readable again
 * (`rearmRequest`, as the Express adapter does). The application keeps the lightweight
 * `Request`, whose every way of reading the body reads the Node request: what it gets are the
 * scanned bytes.
 *
 * The object is recognised by its own fields, which are private symbols of @hono/node-server
 * (named, not registered): an object of another shape, or one whose body something already
 * asked for, is scanned through `request.body` as before. A Node request something already
 * read is refused (incomingReadFirst).
 */

/** Own fields of the lightweight Request that are set once something asked for its body. */
const BODY_TAKEN = new Set([
  'requestCache',
  'bodyConsumedDirectly',
  'bodyBuffer',
  'bodyReadPromise',
  'bodyLockReader',
]);

/**
 * The Node request under `request` when `request` is @hono/node-server's lightweight Request over
 * it and nothing has asked for or read its body; otherwise undefined.
 */
export function untouchedIncoming(request: Request, incoming: unknown): Readable | undefined {
  if (!(incoming instanceof Readable)) return undefined;
  let over = false;
  let url = false;
  for (const key of Object.getOwnPropertySymbols(request)) {
    const name = key.description;
    const value = (request as unknown as Record<symbol, unknown>)[key];
    if (name === 'incomingKey') over = value === incoming;
    else if (name === 'urlKey') url = typeof value === 'string';
    else if (name !== undefined && BODY_TAKEN.has(name) && value !== undefined && value !== false)
      return undefined;
  }
  if (!over || !url) return undefined;
  const r = incoming as Readable & { rawBody?: unknown };
  // A `rawBody` (Cloud Functions) is what @hono/node-server reads instead of the stream.
  if ('rawBody' in r || r.readableEncoding !== null) return undefined;
  // A Node request something already read is refused before this is asked (incomingReadFirst).
  return incoming;
}

/**
 * The Node request under @hono/node-server's lightweight `Request` (its own `incomingKey`
 * field), for a scan that was not given it (`env.incoming`): an application that serves Hono
 * through a fetch wrapper that drops the env (`serve({ fetch: (req) => app.fetch(req) })`,
 * campaign-br BR7). Without it a TRACE request's body, which the Web Request does not carry but
 * the lightweight Request's `text()` and `arrayBuffer()` read from the Node request, went unseen;
 * and the client's address, the hand-back and the check for a body read first were lost.
 * Undefined for any other object.
 */
export function incomingUnder(request: Request): IncomingMessageLike | undefined {
  for (const key of Object.getOwnPropertySymbols(request)) {
    if (key.description !== 'incomingKey') continue;
    const value = (request as unknown as Record<symbol, unknown>)[key];
    return value instanceof Readable && typeof (value as IncomingMessageLike).httpVersionMajor === 'number'
      ? (value as IncomingMessageLike)
      : undefined;
  }
  return undefined;
}

/** What {@link incomingUnder} finds: a Node request (`IncomingMessage` or `Http2ServerRequest`). */
export type IncomingMessageLike = Readable & { httpVersionMajor: number };

/** The methods a Web `Request` carries no body for (@hono/node-server makes TRACE a GET). */
export const BODYLESS = /^(?:GET|HEAD|TRACE)$/i;

/**
 * The Node request under `request` when something before the scan already read it (a 'data'
 * listener, a pipe, async iteration, @hono/node-server's own `text()`: what `bodyConsumedReason`
 * of @icapkit/core sees on the Node adapters' requests); otherwise undefined.
 *
 * The Web `Request` reads its body from that Node request, whether the lightweight one reads it
 * directly or a Web stream over it does: what the reader before the scan took was never scanned,
 * and the scan would get what is left, as little as nothing (a REQMOD of an empty body, passed).
 * The engine refuses such a request as the Node adapters refuse theirs (500,
 * ICAP_ERR_BODY_CONSUMED, the fix said once). A GET, HEAD or TRACE request has no body in a Web
 * Request (one announced under it is refused as a bad request instead), and a `rawBody` (Cloud
 * Functions, which read the stream themselves) is what @hono/node-server reads instead of the
 * stream. One call of the engine's own check on the Node request: cheap on every request.
 */
export function incomingReadFirst(request: Request, incoming: unknown): Readable | undefined {
  if (!(incoming instanceof Readable) || BODYLESS.test(request.method) || 'rawBody' in incoming)
    return undefined;
  if (bodyConsumedReason(incoming) === undefined) return undefined;
  // A Request other than the lightweight one over `incoming`, once all of `incoming` was read
  // (campaign-br BR4): nothing of the Node request is left for it to stream, so its body is
  // its own, and what the handlers read of `c.req` is what the scan reads of it. icapkit's own
  // approved Request (a second scan stacked on a first: a route's after a global one), or
  // hono/body-limit's `new Request(c.req.raw, { body: buffer })` for an upload without a
  // Content-Length. Refusing those (500) made the client's framing choose between a scan and
  // a 500.
  if (incoming.readableEnded && !carries(request, incoming)) return undefined;
  return incoming;
}

/** Whether `request` is @hono/node-server's lightweight Request over `incoming` (its `incomingKey`). */
function carries(request: Request, incoming: Readable): boolean {
  for (const key of Object.getOwnPropertySymbols(request))
    if (key.description === 'incomingKey')
      return (request as unknown as Record<symbol, unknown>)[key] === incoming;
  return false;
}
