import { Readable } from 'node:stream';
import { observe } from '../log.js';

/**
 * A body parser mounted before the middleware (`express.json()` / `express.raw()` / multer
 * before `icap()`, `koaBody()` / `@koa/bodyparser` first, a Fastify `onRequest` hook or
 * middie middleware reading `request.raw`) has already read the request body: what it parsed
 * was never scanned, and the stream has nothing left for the scan (which would otherwise wait
 * `bodyTimeout` and answer 408, blaming the client). The engine refuses such a request at once
 * (500, `ICAP_ERR_BODY_CONSUMED`) and says once how to fix the order.
 *
 * The signals are about the stream, not about a `body` property alone: body-parser 1 (Express 4)
 * sets `req.body = {}` on every request it skips and @koa/bodyparser sets
 * `ctx.request.body = {}` on content types it does not parse, without touching the stream; a
 * route-level `icap()` after a global `express.json()` is fine for the uploads json skipped.
 */

/** Code of the refusal and of the once-per-middleware warning. */
export const BODY_CONSUMED_CODE = 'ICAP_ERR_BODY_CONSUMED';

/** What the fix is, in every message about it. */
export const BODY_CONSUMED_FIX =
  'mount icap() before body parsers (express.json/raw/urlencoded, multer, koa-body, @koa/bodyparser) and anything else that reads the request body';

type Streamish = Readable & {
  _body?: unknown;
  body?: unknown;
  readableDidRead?: boolean;
  _readableState?: StreamState | null;
  _events?: Record<string, unknown> | undefined;
};

/** The fields of Node's stream state that Readable's `readableEnded`/`DidRead`/`Flowing` getters read. */
interface StreamState {
  readonly endEmitted?: boolean;
  readonly dataEmitted?: boolean;
  readonly flowing?: boolean | null;
}

/** The stream getters and the method the check reads, and what Node's Readable has for them. */
const STREAM_KEYS = ['readableEnded', 'readableDidRead', 'readableFlowing', 'listenerCount'] as const;
const NODE_STREAM = STREAM_KEYS.map((key) => slotOf(Readable.prototype, key));

/** A property's getter (an accessor) or value (a data property) as the chain from `obj` resolves it. */
function slotOf(obj: object, key: string): unknown {
  for (let o: object | null = obj; o !== null; o = Object.getPrototypeOf(o)) {
    const d = Object.getOwnPropertyDescriptor(o, key);
    if (d !== undefined) return d.get ?? d.value;
  }
  return undefined;
}

/** Per prototype: do its stream getters and `listenerCount` resolve to Node's own? */
const nodeStreamProtos = new WeakMap<object, boolean>();

function inheritsNodeStream(proto: object): boolean {
  let yes = nodeStreamProtos.get(proto);
  if (yes === undefined) {
    yes = STREAM_KEYS.every((key, i) => slotOf(proto, key) === NODE_STREAM[i]);
    nodeStreamProtos.set(proto, yes);
  }
  return yes;
}

/**
 * The stream's state when reading it gives what Node's getters (`readableEnded`,
 * `readableDidRead`, `readableFlowing`) and `listenerCount` give: the request inherits them from
 * Node's Readable and has no own property of those names. Reading the state directly costs one
 * property lookup on the request instead of five: an Express request gets a new V8 map per
 * request (its prototype is swapped), so each name looked up on it misses V8's caches.
 */
function nodeStreamState(r: Streamish): StreamState | undefined {
  const state = r._readableState;
  if (typeof state !== 'object' || state === null) return undefined;
  const proto = Object.getPrototypeOf(r) as object | null;
  if (proto === null || !inheritsNodeStream(proto)) return undefined;
  for (let i = 0; i < STREAM_KEYS.length; i++) if (Object.hasOwn(r, STREAM_KEYS[i]!)) return undefined;
  return state;
}

/** EventEmitter's `listenerCount(type)` (without a listener argument) over an `_events` object. */
function countOf(events: Record<string, unknown> | undefined, type: string): number {
  if (events === undefined) return 0;
  const listeners = events[type];
  if (typeof listeners === 'function') return 1;
  return listeners === undefined ? 0 : (listeners as unknown[]).length;
}

/**
 * Why the body of `req` counts as already read, or undefined when it is untouched.
 * `parsed` is a body a framework already holds for the request (Koa `ctx.request.body`,
 * Fastify `request.body`): anything but undefined or an empty plain object counts.
 */
export function bodyConsumedReason(req: unknown, parsed?: unknown): string | undefined {
  if (typeof req !== 'object' || req === null) return undefined;
  const r = req as Streamish;
  if (r._body === true) return 'a body parser already parsed it (req._body is set)';
  const state = nodeStreamState(r);
  if (state !== undefined) {
    // The same checks as below, through the state (see nodeStreamState).
    if (state.endEmitted === true) return 'the request stream was already read to its end';
    if (state.dataEmitted === true) return 'part of the request stream was already read';
    if (state.flowing === true) return 'the request stream is already being read (flowing)';
    const events = r._events;
    const readers = countOf(events, 'data') + countOf(events, 'readable');
    if (readers > 0)
      return `the request stream already has ${readers} reader(s) ('data'/'readable' listeners)`;
  } else {
    if (r.readableEnded === true) return 'the request stream was already read to its end';
    if (r.readableDidRead === true) return 'part of the request stream was already read';
    if (r.readableFlowing === true) return 'the request stream is already being read (flowing)';
    if (typeof r.listenerCount === 'function') {
      const readers = r.listenerCount('data') + r.listenerCount('readable');
      if (readers > 0)
        return `the request stream already has ${readers} reader(s) ('data'/'readable' listeners)`;
    }
  }
  if (holdsBody(r.body)) return 'req.body was already set by a body parser';
  if (holdsBody(parsed)) return 'a parsed body is already set for the request';
  return undefined;
}

/** A parsed body that says something was read: not undefined/null, not an empty plain object. */
function holdsBody(body: unknown): boolean {
  if (body === undefined || body === null) return false;
  if (typeof body !== 'object') return true;
  if (Buffer.isBuffer(body)) return body.length > 0;
  const proto = Object.getPrototypeOf(body);
  if (proto !== Object.prototype && proto !== null) return true;
  return Object.keys(body).length > 0;
}

/** The message for the log and the once-per-middleware warning. */
export function bodyConsumedMessage(profileName: string, reason: string): string {
  return (
    `icapkit (${profileName}): a request body was already read before the scan (${reason}), so it ` +
    `cannot be scanned and the request was refused with 500. Fix: ${BODY_CONSUMED_FIX}.`
  );
}

const reported = new WeakSet<object>();

/**
 * Reports the misconfiguration once per `owner` (an engine: one per middleware) to the logger
 * and as a process warning. Returns the message for the log record.
 */
export function reportBodyConsumed(
  owner: object,
  profileName: string,
  reason: string,
  logger: { error(obj: object, msg: string): void } | undefined,
): string {
  const message = bodyConsumedMessage(profileName, reason);
  if (!reported.has(owner)) {
    reported.add(owner);
    if (logger !== undefined)
      observe(() => logger.error({ code: BODY_CONSUMED_CODE }, message), undefined, '');
    process.emitWarning(message, { code: BODY_CONSUMED_CODE });
  }
  return message;
}
