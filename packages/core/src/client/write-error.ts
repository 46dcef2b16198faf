import type { Socket } from 'node:net';

/**
 * Keeps a socket reading after one of its writes failed.
 *
 * A server may answer before it has read the whole request (RFC 3507 §4.5: a verdict from the
 * first bytes of a file) and then close or reset the connection without reading the rest. The
 * answer is then in the kernel's receive buffer while our next write fails with EPIPE or
 * ECONNRESET; Node reacts to a failed write by destroying the socket, in the same tick, and the
 * unread answer is lost with it (the verdict of a scanner that found a threat turned into a
 * connection error). Which comes first, reading the answer or failing the write, depends on
 * the order of events in one loop turn.
 *
 * Node's stream machinery (a documented order: the write's callback runs before the stream
 * reacts to the error) calls `socket.destroy(err)` with the very error the write callback was
 * given; this hook, installed from that callback, turns that one call into "the writable side
 * is over" and leaves the readable side alone, so the socket reads on until the server's FIN
 * or reset. Any other destroy goes through, and the hook removes itself then. Works the same
 * for TCP and TLS sockets.
 *
 * Returns a function that removes the hook (call it before handing the socket on or
 * destroying it on purpose).
 */
export function keepReadingAfterWriteError(socket: Socket, writeError: Error): () => void {
  const own = Object.hasOwn(socket, 'destroy');
  if (own) return noop; // already hooked (or someone else's): leave it
  let active = true;
  const unhook = () => {
    if (!active) return;
    active = false;
    delete (socket as { destroy?: unknown }).destroy;
  };
  const hooked = (err?: Error): Socket => {
    if (err === writeError) {
      // The failed write marked the readable side errored too ("no further data"): it is not,
      // the server's answer may still be on its way.
      clearReadableError(socket);
      unhook();
      return socket;
    }
    unhook();
    return socket.destroy(err);
  };
  Object.defineProperty(socket, 'destroy', { value: hooked, configurable: true, writable: true });
  return unhook;
}

function clearReadableError(socket: Socket): void {
  const state = (socket as unknown as { _readableState?: { errored: unknown } })._readableState;
  if (state !== undefined && state.errored !== null) state.errored = null;
}

function noop(): void {}

/**
 * A batch of several buffers up to this size is copied into one and written once: below 4 KiB
 * Buffer.concat takes a slice of Node's shared pool, not an ArrayBuffer (external memory) of
 * its own.
 */
const COPY_BATCH_UP_TO = 4 * 1024 - 1;
/** In a larger batch, consecutive pieces below this size (heads, chunk framing) are joined. */
const JOIN_BELOW = 1024;

/**
 * Writes a transaction's gathered output (`bytes` in all), `onWritten` the callback of the
 * batch's last write (a failed batch calls every callback in it). A small batch (a head, a
 * small body and its framing) is copied into one buffer: one write, without the corked
 * writev's per-buffer bookkeeping. A larger one (a body and its framing) is written by
 * reference, not copied into a buffer of its own: the framing between the body's pieces
 * joined, the rest corked into one writev.
 */
export function writeBatch(
  s: Socket,
  batch: Buffer[],
  bytes: number,
  onWritten: (err?: Error | null) => void,
): void {
  if (batch.length === 1 || bytes <= COPY_BATCH_UP_TO) {
    s.write(batch.length === 1 ? batch[0]! : Buffer.concat(batch, bytes), onWritten);
    return;
  }
  const out = joinSmall(batch);
  if (out.length === 1) {
    s.write(out[0]!, onWritten);
    return;
  }
  s.cork();
  const last = out.length - 1;
  for (let i = 0; i < last; i++) s.write(out[i]!);
  s.write(out[last]!, onWritten);
  s.uncork();
}

/** The pieces, in order, each run of consecutive pieces below JOIN_BELOW bytes joined into one. */
function joinSmall(pieces: Buffer[]): Buffer[] {
  const out: Buffer[] = [];
  let runFrom = -1;
  let runBytes = 0;
  for (let i = 0; i <= pieces.length; i++) {
    const b = i < pieces.length ? pieces[i]! : null;
    if (b !== null && b.length < JOIN_BELOW) {
      if (runFrom === -1) runFrom = i;
      runBytes += b.length;
      continue;
    }
    if (runFrom !== -1) {
      out.push(i - runFrom === 1 ? pieces[runFrom]! : Buffer.concat(pieces.slice(runFrom, i), runBytes));
      runFrom = -1;
      runBytes = 0;
    }
    if (b !== null) out.push(b);
  }
  return out;
}
