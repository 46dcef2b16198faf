/**
 * What a transaction reads the HTTP body from. A source is *replayable* when it can be read
 * again from the first byte, which lets the client retry on a fresh connection (stale
 * keep-alive socket) and the engine fail over to another server.
 */
import { noop } from './deferred.js';

/**
 * Key of an optional method of a body reader (an iterator that `open()` returns): the result
 * its next() would settle with when that is known now (bytes in memory, or the end), else
 * undefined (then next() is called as usual). The transaction takes chunks through it without a
 * promise each; the engine's body store cursor has one. Calling it counts as that next().
 */
export const NEXT_NOW: unique symbol = Symbol.for('icapkit.body.nextNow') as never;

/** A body reader with {@link NEXT_NOW}. */
export interface NextNow {
  [NEXT_NOW](): IteratorResult<Uint8Array> | undefined;
}

/** The reader's next result when it has one now (see {@link NEXT_NOW}); undefined: call next(). */
export function takeNow(it: AsyncIterator<Uint8Array>): IteratorResult<Uint8Array> | undefined {
  return (it as AsyncIterator<Uint8Array> & Partial<NextNow>)[NEXT_NOW]?.();
}

/** A body that can be opened again from its first byte, any number of times. */
export interface ReplayableBody {
  /** A fresh reader from the first byte. */
  open(): AsyncIterator<Uint8Array>;
  /** Total length in bytes when known in advance. */
  readonly length?: number | undefined;
  readonly replayable: true;
}

export type BodyInput =
  | string
  | Uint8Array
  | ReplayableBody
  | AsyncIterable<Uint8Array>
  | Iterable<Uint8Array>;

export interface BodySource {
  open(): AsyncIterator<Uint8Array>;
  readonly replayable: boolean;
  readonly length: number | undefined;
}

export function isReplayableBody(value: unknown): value is ReplayableBody {
  return (
    typeof value === 'object' &&
    value !== null &&
    (value as ReplayableBody).replayable === true &&
    typeof (value as ReplayableBody).open === 'function'
  );
}

export function toBodySource(input: BodyInput): BodySource {
  if (typeof input === 'string') return bufferSource(Buffer.from(input));
  if (input instanceof Uint8Array) return bufferSource(input);
  if (isReplayableBody(input)) return { open: () => input.open(), replayable: true, length: input.length };
  if (Symbol.asyncIterator in input) {
    let opened = false;
    return {
      replayable: false,
      length: undefined,
      open() {
        if (opened) throw new Error('this body source can be read only once');
        opened = true;
        return (input as AsyncIterable<Uint8Array>)[Symbol.asyncIterator]();
      },
    };
  }
  const items = coalesce(input as Iterable<Uint8Array>);
  let length = 0;
  for (const b of items) length += b.length;
  return { replayable: true, length, open: () => new ListReader(items) };
}

function bufferSource(buf: Uint8Array): BodySource {
  // An empty body is a list of no pieces (its reader ends at once).
  const items = buf.length === 0 ? [] : [buf];
  return { replayable: true, length: buf.length, open: () => new ListReader(items) };
}

/**
 * The reader of a body held in memory as a list of pieces: each in turn, then the end. Its
 * results are known now, so it has {@link NEXT_NOW} (the transaction takes them without a
 * promise each); next() settles with the same results, in the same order.
 */
class ListReader implements AsyncIterator<Uint8Array>, NextNow {
  readonly #items: readonly Uint8Array[];
  #i = 0;

  constructor(items: readonly Uint8Array[]) {
    this.#items = items;
  }

  next(): Promise<IteratorResult<Uint8Array>> {
    return Promise.resolve(this[NEXT_NOW]());
  }

  [NEXT_NOW](): IteratorResult<Uint8Array> {
    const items = this.#items;
    return this.#i < items.length
      ? { done: false, value: items[this.#i++]! }
      : { done: true, value: undefined };
  }
}

/** Pieces below this size are joined (up to it) before they are framed as ICAP chunks. */
const COALESCE_BELOW = 16 * 1024;

/**
 * The items of a list, consecutive small ones joined: a body given as a million 1-byte pieces
 * is framed (and written) as a few dozen chunks, not a million.
 */
function coalesce(input: Iterable<Uint8Array>): Uint8Array[] {
  const out: Uint8Array[] = [];
  let run: Uint8Array[] = [];
  let runBytes = 0;
  const flush = () => {
    if (run.length === 1) out.push(run[0]!);
    else if (run.length > 1) out.push(Buffer.concat(run, runBytes));
    run = [];
    runBytes = 0;
  };
  for (const b of input) {
    if (b.length === 0) continue;
    if (b.length >= COALESCE_BELOW) {
      flush();
      out.push(b);
      continue;
    }
    run.push(b);
    runBytes += b.length;
    if (runBytes >= COALESCE_BELOW) flush();
  }
  flush();
  return out;
}

/** A Uint8Array as a Buffer over the same memory (no copy). */
export function asBuffer(v: Uint8Array): Buffer {
  return Buffer.isBuffer(v) ? v : Buffer.from(v.buffer, v.byteOffset, v.byteLength);
}

/** Resolves with `value` after the event loop's current turn (I/O callbacks included). */
export function nextTurn<T>(value: T): Promise<T> {
  return new Promise((resolve) => setImmediate(resolve, value));
}

/** Ends a body source's iterator early (its `return`); one that cannot be closed is left to its owner. */
export function closeIterator(it: AsyncIterator<Uint8Array>): void {
  try {
    it.return?.().catch(noop);
  } catch {
    // left to its owner
  }
}
