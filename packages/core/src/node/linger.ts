import { IncomingMessage } from 'node:http';
import { Socket } from 'node:net';
import { Readable } from 'node:stream';

/** How much of a refused request's body is still read after the answer. */
export interface DrainLimits {
  /** Bytes read and discarded at most; 0: close at once. */
  bytes: number;
  /** ms at most; 0: close at once. */
  timeout: number;
}

type Destroyable = Socket & { destroySoon?: () => void };

/** The response of the refused request: its 'finish' (the whole answer handed to the socket). */
export interface AnsweredResponse {
  once(event: 'finish', listener: () => void): unknown;
}

/**
 * For an answer given before the request body was read (a 503 with every scanner down, a
 * 413, 415, 400, 403, 408, 429): the rest of the body is read and discarded for a bounded
 * amount (`limits`), so the client can send its body and then read the answer. Closing right
 * after the answer (what `Connection: close` makes Node do) resets a client that is still
 * sending: it gets EPIPE or ECONNRESET, and the answer waiting in its receive buffer is lost.
 *
 * Call it before the response is written. After the response, our side of the connection is
 * half-closed (the client reads the answer, then end-of-stream); once the body has arrived the
 * connection closes; beyond the limits it is destroyed (the client was warned by
 * `Connection: close`). HTTP/1 only: an HTTP/2 stream ends on its own without the connection.
 *
 * A limit of 0 closes the connection once the answer is out (`res`'s 'finish'), whatever the
 * answer says: an application's error handler (`refusals: 'error'`) may answer keep-alive,
 * without the refusal's `Connection: close`, and Node would then read and discard the rest of
 * the body, however long, with no bound of ours.
 */
export function drainAfterAnswer(req: unknown, limits: DrainLimits, res?: AnsweredResponse): void {
  // Nothing after the refusal reads the body (an error handler that calls next() without the
  // error, then a body parser): what is left of it is discarded here, below every reader.
  const sealed = sealBody(req);
  if (!(req instanceof IncomingMessage)) return;
  const socket = req.socket as Destroyable | null;
  if (!(socket instanceof Socket) || socket.destroyed) return;
  if (req.complete || req.readableEnded) return;
  if (limits.bytes <= 0 || limits.timeout <= 0) {
    // (A sealed request's connection flows already: its readers' empty body stays theirs to read.)
    if (sealed === null) req.resume();
    res?.once('finish', () => {
      // Net's own: end, then destroy once what was written (the answer) has been flushed.
      if (!req.complete && !socket.destroyed) socket.destroySoon?.() ?? socket.end();
    });
    return;
  }
  const original = socket.destroySoon;
  const own = Object.hasOwn(socket, 'destroySoon');
  let answered = false;
  let over = false;
  let seen = 0;
  const cleanup = () => {
    over = true;
    clearTimeout(timer);
    if (sealed !== null) sealed.onChunk = sealed.onEnd = undefined;
    req.removeListener('data', onData);
    req.removeListener('end', onEnd);
    req.removeListener('error', onEnd);
    socket.removeListener('close', cleanup);
    if (socket.destroySoon === lingering) {
      if (own) socket.destroySoon = original;
      else delete (socket as { destroySoon?: unknown }).destroySoon;
    }
  };
  // Node calls destroySoon() once a `Connection: close` response is written: half-close instead.
  const lingering = () => {
    answered = true;
    if (socket.writable) socket.end();
  };
  const giveUp = () => {
    if (over) return;
    cleanup();
    socket.destroy();
  };
  const onData = (chunk: Buffer) => {
    seen += chunk.length;
    if (seen > limits.bytes) giveUp();
  };
  // The body has arrived (or the request failed): the connection goes as Node would have closed it.
  const onEnd = () => {
    if (over) return;
    cleanup();
    if (answered) original?.call(socket);
  };
  const timer = setTimeout(giveUp, limits.timeout);
  socket.destroySoon = lingering;
  socket.once('close', cleanup);
  if (sealed !== null) {
    // The readers' body ended when it was sealed: the upload's own end comes through the seal.
    sealed.onChunk = onData;
    sealed.onEnd = onEnd;
  } else {
    req.on('data', onData);
    req.once('end', onEnd);
  }
  req.once('error', onEnd);
  if (sealed === null) req.resume();
}

/**
 * A request whose body is discarded as it arrives: `onChunk` sees each chunk (for a count),
 * `onEnd` the upload's end (the request itself ended for its readers when it was sealed).
 */
interface SealedBody {
  onChunk: ((chunk: Buffer) => void) | undefined;
  onEnd: (() => void) | undefined;
}

const READABLE_PUSH = Readable.prototype.push;

/**
 * Makes the rest of a refused request's body unreadable: what is buffered is dropped now, what
 * arrives later is dropped as the connection (HTTP/1's parser, an HTTP/2 stream) hands it over,
 * and the request reads as one without a body: its framing fields say so (body parsers skip
 * it) and a reader gets an empty body that ends at once (a parser waiting for the upload's end
 * would keep the connection reading it, with no answer). Null when `req` is not a Readable
 * request, or its body has already been read to its end.
 */
export function sealBody(req: unknown): SealedBody | null {
  if (!(req instanceof Readable) || req.readableEnded || req.destroyed) return null;
  const sealed: SealedBody = { onChunk: undefined, onEnd: undefined };
  // Node's HTTP/1 parser and HTTP/2's compatibility layer push the body into the request.
  Object.defineProperty(req, 'push', {
    configurable: true,
    writable: true,
    value(chunk: unknown, encoding?: BufferEncoding): boolean {
      if (chunk === null) sealed.onEnd?.();
      else if (Buffer.isBuffer(chunk)) sealed.onChunk?.(chunk);
      else if (typeof chunk === 'string') sealed.onChunk?.(Buffer.from(chunk, encoding));
      return true;
    },
  });
  // What was pushed before the refusal (a small body arrives with its head).
  for (let c = req.read(); c !== null; c = req.read()) sealed.onChunk?.(c as Buffer);
  const state = (req as { _readableState?: { ended?: boolean; flowing?: boolean | null } })._readableState;
  if (state?.ended !== true) READABLE_PUSH.call(req, null);
  // Paused by the scan's intake: a reader's 'data' listener starts the (empty) flow again, as on
  // a request nobody paused (`readableFlowing` back to null, not resumed for nobody).
  if (state !== undefined && state.flowing === false) state.flowing = null;
  const headers = (req as { headers?: Record<string, unknown> }).headers;
  if (headers !== undefined && headers !== null) {
    headers['content-length'] = '0';
    delete headers['transfer-encoding'];
  }
  // The connection may have been paused while the body waited to be read: it flows again, into
  // the seal, as when a request is read (HTTP/1's readStart: not while Node holds it paused for
  // a pipelined response; an HTTP/2 stream's resume).
  const stream = (req as { stream?: { resume?: () => void } }).stream;
  const socket = (req as { socket?: unknown }).socket;
  if (stream !== undefined) stream.resume?.();
  else if (
    socket instanceof Socket &&
    !socket.destroyed &&
    (socket as { _paused?: boolean })._paused !== true
  )
    socket.resume();
  return sealed;
}

/** An engine's drain limits (profile `drainAfterAnswer`). */
export function drainLimits(engine: { profile: { drainBytes: number; drainTimeout: number } }): DrainLimits {
  return { bytes: engine.profile.drainBytes, timeout: engine.profile.drainTimeout };
}
