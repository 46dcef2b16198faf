import { IncomingMessage } from 'node:http';
import { Duplex, Readable } from 'node:stream';

/**
 * Handing a body to the application after the middleware has read the request stream.
 *
 * Body parsers (body-parser, multer, co-body, formidable, Fastify's parsers, busboy) read the
 * request stream itself and skip silently, or fail, when it was already consumed. So after a
 * scan the request must be readable again, with the approved body, the right
 * `content-length` and no `transfer-encoding`:
 *
 * - {@link rearmRequest} makes the same request object readable again (Express, Fastify,
 *   HTTP/2 compatibility requests: their frameworks close over that object);
 * - {@link requestWithBody} builds a fresh `IncomingMessage` carrying the body (Koa, whose
 *   context lets the request be swapped, and where no live stream is re-initialised).
 *
 * Both only make sense once the original body was read to its end (the engine's pass and
 * rewrite outcomes guarantee it).
 */

export interface BodyHandoff {
  /** The body: a stream, or a pass outcome's held replay ({@link handoffBody}). */
  body: Readable | HeldBody;
  /** Length of `body`; written to `content-length` (and `transfer-encoding` removed). */
  contentLength: number;
  /** Replacement request headers (a modified request); otherwise the request's own are kept. */
  headers?: ReadonlyArray<readonly [string, string]> | undefined;
  method?: string | undefined;
  url?: string | undefined;
}

type Requestish = Readable & {
  headers: Record<string, string | string[] | undefined>;
  rawHeaders?: string[];
  method?: string | undefined;
  url?: string | undefined;
};

/**
 * Key of the method of a held body's replay (the engine's BodyStore replay) that hands over all
 * its Buffers at once when the body is complete in memory and was not read yet (engine/body/cursor.ts
 * defines the same registered symbol).
 */
const TAKE_HELD = Symbol.for('icapkit.body.takeHeld');
type HeldReplay = Readable & { [TAKE_HELD]?: () => Buffer[] | undefined };

/**
 * Key of a pass outcome's held replay (engine/body/cursor.ts's HELD_REPLAY, the same registered
 * symbol): the body taken without the outcome's `body` stream being made.
 */
const HELD_REPLAY = Symbol.for('icapkit.outcome.heldReplay');

/**
 * A pass outcome's held body as the hand-off takes it: its Buffers at once when it is complete
 * in memory (`TAKE_HELD`), else `stream`, the outcome's `body`; `destroyed` once the outcome was
 * disposed.
 */
export interface HeldBody {
  readonly stream: Readable;
  readonly destroyed: boolean;
  [TAKE_HELD](): Buffer[] | undefined;
}

/**
 * What an adapter hands to {@link rearmRequest} or {@link requestWithBody} as the body of a
 * pass or rewrite outcome: the held replay of a scanned body (read without a stream made for it
 * when it is complete in memory), else the outcome's `body` (null: the request is left as it is).
 */
export function handoffBody(outcome: { readonly body: Readable | null }): Readable | HeldBody | null {
  return (outcome as { [HELD_REPLAY]?: HeldBody })[HELD_REPLAY] ?? outcome.body;
}

/**
 * Node's stream state class (`Readable.ReadableState`, present since the streams rewrite): a
 * fresh state is all a re-armed request needs from the Readable constructor.
 */
type StateClass = new (options: object, stream: Readable, isDuplex: boolean) => object;
const ReadableState = (Readable as unknown as { ReadableState?: StateClass }).ReadableState;

/** Makes `req` readable again, from `handoff.body`, in place. */
export function rearmRequest(req: Requestish, handoff: BodyHandoff): void {
  type State = { highWaterMark?: number; readingMore: boolean };
  const r = req as unknown as { _readableState?: State };
  // Everything read from the request is read before anything is written to it: an Express
  // request has a V8 map of its own, replaced by each property added (`_read` below), and
  // each property read after that is looked up anew (an inline-cache miss).
  const highWaterMark = r._readableState?.highWaterMark ?? 64 * 1024;
  const headers = req.headers;
  const rawHeaders = req.rawHeaders;
  const read = readerOf(req, handoff.body);
  let state: State;
  if (ReadableState !== undefined) {
    // What re-running the Readable constructor on the object does for a stream without
    // destroy/construct/signal options: a fresh state (not ended, not destroyed) and its
    // _read; the listeners stay. Without the constructor's emitter re-initialisation, which
    // keeps the listeners and limits as they are anyway.
    state = new ReadableState({ highWaterMark }, req, req instanceof Duplex) as State;
    r._readableState = state;
    (req as unknown as { _read: () => void })._read = read;
  } else {
    Readable.call(req as unknown as Readable, { highWaterMark, read } as never);
    state = r._readableState!;
  }
  // IncomingMessage sets this in its constructor so that Readable never reads ahead by itself.
  state.readingMore = true;
  if ((req as { httpVersionMajor?: number }).httpVersionMajor === 2) ownPushesOnly(req);
  applyHead(req, handoff, headers, rawHeaders);
}

/** Readable's own `push`: the re-armed body's readers push with it, past {@link ownPushesOnly}. */
const push = Readable.prototype.push;

/**
 * An HTTP/2 compatibility request is pushed to by its stream: `push(null)` when the stream
 * closes (the client reset it, or it closed after the response). After a re-arm that would end
 * the approved body early and cleanly, a prefix read as the whole upload where Node without
 * the middleware reports a premature close. The re-armed body is the request's only source
 * now (the original had ended before the scan's outcome), so pushes from anything else are
 * dropped, and the stream's end before the re-armed body has pushed its own destroys the request
 * (without an error, which nobody may be listening for): a reader that is not done gets the
 * premature close it would get without the middleware, at once, whenever it reads. (An HTTP/1
 * request is pushed to only by its parser, which is done once the body has ended.)
 */
function ownPushesOnly(req: Readable): void {
  Object.defineProperty(req, 'push', { value: foreignPush, configurable: true, writable: true });
}

function foreignPush(this: Readable, chunk: unknown): boolean {
  // Once the re-armed body has pushed its end, all of it is in the request's buffer: kept.
  const ended = (this as unknown as { _readableState?: { ended?: boolean } })._readableState?.ended;
  if (chunk === null && ended !== true && !this.destroyed) this.destroy();
  return false;
}

/** A new request with the original's metadata and socket, reading from `handoff.body`. */
export function requestWithBody(req: IncomingMessage, handoff: BodyHandoff): IncomingMessage {
  const fresh = new IncomingMessage(req.socket);
  fresh.method = req.method;
  fresh.url = req.url;
  fresh.httpVersion = req.httpVersion;
  fresh.httpVersionMajor = req.httpVersionMajor;
  fresh.httpVersionMinor = req.httpVersionMinor;
  fresh.headers = { ...req.headers };
  // applyHead gives the fresh request an array of its own (built from this one, not changing it).
  fresh.rawHeaders = req.rawHeaders;
  fresh.trailers = req.trailers;
  fresh.rawTrailers = req.rawTrailers;
  fresh.complete = true;
  fresh._read = readerOf(fresh, handoff.body);
  applyHead(fresh, handoff, fresh.headers, fresh.rawHeaders);
  // The application may listen for the client going away on either object ('close' fires once).
  req.on('close', () => {
    if (!fresh.readableEnded) fresh.destroy();
  });
  return fresh;
}

/**
 * The `_read` of a request handed `body`: a body complete in memory is pushed into the request
 * at the first read, its Buffers as they are (no stream in between, no copy); any other is pulled
 * from as it is read.
 */
function readerOf(target: Readable, body: Readable | HeldBody): () => void {
  const held = (body as HeldReplay | HeldBody)[TAKE_HELD]?.();
  if (held !== undefined) return pushHeld(target, held, body);
  // A stream has `on`; a held replay does not (its stream is made now, to be pulled from).
  return pull(
    target,
    typeof (body as Readable).on === 'function' ? (body as Readable) : (body as HeldBody).stream,
  );
}

function pushHeld(target: Readable, held: Buffer[], body: { readonly destroyed: boolean }): () => void {
  // Dropped once pushed: the request (and this function with it) may outlive its body by far.
  let rest: Buffer[] | null = held;
  return () => {
    const chunks = rest;
    if (chunks === null) return;
    rest = null;
    // Discarded before the application read it (the response closed): no bytes, and no end
    // either, as from a replay stream destroyed before it was read.
    if (body.destroyed) return;
    for (let i = 0; i < chunks.length; i++) push.call(target, chunks[i]);
    push.call(target, null);
  };
}

function pull(target: Readable, body: Readable): () => void {
  let started = false;
  return () => {
    if (!started) {
      started = true;
      body.on('data', (chunk: Buffer) => {
        if (!push.call(target, chunk)) body.pause();
      });
      body.once('end', () => push.call(target, null));
      body.once('error', (err) => target.destroy(err));
      return;
    }
    body.resume();
  };
}

/** `headers` and `rawHeaders`: the request's, read before anything was written to it. */
function applyHead(
  req: Requestish,
  handoff: BodyHandoff,
  headers: Requestish['headers'],
  rawHeaders: string[] | undefined,
): void {
  if (handoff.method !== undefined) req.method = handoff.method;
  if (handoff.url !== undefined) req.url = handoff.url;
  if (handoff.headers !== undefined) {
    for (const key of Object.keys(headers)) if (!key.startsWith(':')) delete headers[key];
    for (const [name, value] of handoff.headers) {
      const key = name.toLowerCase();
      const prev = headers[key];
      if (prev === undefined) headers[key] = value;
      else if (key === 'set-cookie') headers[key] = [...(Array.isArray(prev) ? prev : [prev]), value];
      else headers[key] = `${Array.isArray(prev) ? prev.join(', ') : prev}, ${value}`;
    }
  }
  const length = String(handoff.contentLength);
  headers['content-length'] = length;
  if ('transfer-encoding' in headers) delete headers['transfer-encoding'];
  if (Array.isArray(rawHeaders)) {
    const raw: string[] = [];
    if (handoff.headers !== undefined) {
      for (const [n, v] of handoff.headers) if (!isLengthOrCoding(n)) raw.push(n, v);
    } else {
      for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
        const n = rawHeaders[i]!;
        if (!isLengthOrCoding(n)) raw.push(n, rawHeaders[i + 1]!);
      }
    }
    raw.push('Content-Length', length);
    // HTTP/2 compatibility requests derive rawHeaders from headers (a getter only).
    if (hasSetter(req, 'rawHeaders')) req.rawHeaders = raw;
  }
}

/** `content-length` or `transfer-encoding`, in any case (only names of their lengths are lower-cased). */
function isLengthOrCoding(name: string): boolean {
  if (name.length === 14) return name.toLowerCase() === 'content-length';
  if (name.length === 17) return name.toLowerCase() === 'transfer-encoding';
  return false;
}

function hasSetter(obj: object, key: string): boolean {
  for (let o: object | null = obj; o !== null; o = Object.getPrototypeOf(o)) {
    const d = Object.getOwnPropertyDescriptor(o, key);
    if (d !== undefined) return d.set !== undefined || d.writable === true;
  }
  return true;
}

/** A server that emits `checkContinue` (node:http and node:https servers). */
export interface ContinueServer {
  on(
    event: 'checkContinue',
    listener: (req: IncomingMessage, res: import('node:http').ServerResponse) => void,
  ): unknown;
  off(
    event: 'checkContinue',
    listener: (req: IncomingMessage, res: import('node:http').ServerResponse) => void,
  ): unknown;
  emit(event: 'request', req: IncomingMessage, res: import('node:http').ServerResponse): boolean;
}

/** An answer decided before the body is sent. */
export interface EarlyAnswer {
  status: number;
  headers: ReadonlyArray<readonly [string, string]>;
  body: Buffer;
}

/**
 * Requests with `Expect: 100-continue` get their answer before they send the body when it can
 * be decided from the head (413 for a declared length over the limit, 415 for a refused
 * content type); others get `100 Continue` and go on to the application as usual. Node sends
 * `100 Continue` by itself unless a `checkContinue` listener exists: this installs one.
 * Returns a function that removes it.
 */
export function guardExpectContinue(
  server: ContinueServer,
  decide: (req: IncomingMessage) => Promise<EarlyAnswer | null>,
): () => void {
  const listener = (req: IncomingMessage, res: import('node:http').ServerResponse) => {
    decide(req).then(
      (answer) => {
        if (answer === null) {
          res.writeContinue();
          server.emit('request', req, res);
          return;
        }
        res.shouldKeepAlive = false;
        res.writeHead(
          answer.status,
          [
            ...answer.headers.filter(([n]) => n.toLowerCase() !== 'connection'),
            ['Connection', 'close'],
          ].flat(),
        );
        res.end(answer.body);
      },
      () => {
        // Deciding failed: let the request through; the middleware decides with the body.
        res.writeContinue();
        server.emit('request', req, res);
      },
    );
  };
  server.on('checkContinue', listener);
  return () => server.off('checkContinue', listener);
}
