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
