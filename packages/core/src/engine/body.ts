import { createHash, type Hash } from 'node:crypto';
import { Readable } from 'node:stream';
import type { ReplayableBody } from '../client/source.js';

/**
 * The HTTP request body while it is scanned: received once from the client, read by any
 * number of readers, each from the first byte, while it is still arriving.
 *
 * - `retainAll` (Allow: 204 mode): every byte is kept until the verdict, so a 204 can replay
 *   the original bytes to the application and a failed server can be replaced by another one.
 *   The client is read as fast as it sends (memory is bounded by `limit`).
 * - otherwise (streaming mode): the client is paused while the slowest reader lags more than
 *   `highWaterMark` bytes behind, so a slow ICAP server slows the upload instead of growing
 *   memory. Bytes are held until {@link BodyStore.stopHolding} (called when the server asks for
 *   more than the preview: until then a 204 may still need to replay them), and from then on
 *   released as soon as every reader has passed them.
 *
 * `limit` is the scan limit (the profile's bufferSize): crossing it calls `onExceeded` once.
 * After the verdict, {@link BodyStore.release} turns the store into a pass-through for the
 * replay to the application: no limit, memory released behind the reader.
 */

export interface BodyStoreOptions {
  limit: number;
  retainAll: boolean;
  highWaterMark?: number;
  /** Keep a running SHA-256 of the body (to recognise an identical echo when bytes are not retained). */
  hash?: boolean;
  onExceeded?: () => void;
}

interface Waiter {
  resolve: (r: IteratorResult<Buffer>) => void;
  reject: (e: unknown) => void;
}

export class BodyStore implements ReplayableBody {
  readonly replayable = true as const;
  #chunks: Buffer[] = [];
  /** Absolute offset of #chunks[0]. */
  #base = 0;
  /** Index (absolute, counting released chunks) of #chunks[0]. */
  #baseIndex = 0;
  #received = 0;
  #ended = false;
  #error: unknown = undefined;
  #exceeded = false;
  #limit: number;
  #retainAll: boolean;
  #holding = true;
  readonly #hwm: number;
  #hash: Hash | undefined;
  #digest: string | undefined;
  readonly #onExceeded: (() => void) | undefined;
  readonly #readers = new Set<Cursor>();
  #source: Readable | undefined;
  #paused = false;
  #endWaiters: Array<() => void> = [];

  constructor(options: BodyStoreOptions) {
    this.#limit = options.limit;
    this.#retainAll = options.retainAll;
    this.#hwm = options.highWaterMark ?? 1024 * 1024;
    this.#hash = options.hash ? createHash('sha256') : undefined;
    this.#onExceeded = options.onExceeded;
  }

  /** Bytes received so far. */
  get received(): number {
    return this.#received;
  }
  get ended(): boolean {
    return this.#ended;
  }
  get error(): unknown {
    return this.#error;
  }
  get exceeded(): boolean {
    return this.#exceeded;
  }
  /** Total length, once the body has ended. */
  get length(): number | undefined {
    return this.#ended ? this.#received : undefined;
  }
  /** Retain-all mode: every byte stays held until {@link release}. */
  get retaining(): boolean {
    return this.#retainAll;
  }
  /** True while every byte is still held (a reader from the first byte can be opened). */
  get complete(): boolean {
    return this.#base === 0;
  }
  /** Bytes held in memory now. */
  get held(): number {
    return this.#received - this.#base;
  }
  /** SHA-256 (hex) of the whole body, when hashing was asked for and the body has ended. */
  get sha256(): string | undefined {
    if (this.#digest === undefined && this.#hash !== undefined && this.#ended)
      this.#digest = this.#hash.digest('hex');
    return this.#digest;
  }

  /** Starts reading the body from `source`. */
  attach(source: Readable): void {
    this.#source = source;
    source.on('data', this.#onData);
    source.on('end', this.#onEnd);
    source.on('error', this.#onError);
    source.on('close', this.#onClose);
    if (source.isPaused()) source.resume();
  }

  /** Stops reading from the source (it is left paused, listeners removed). */
  detach(): void {
    const s = this.#source;
    if (s === undefined) return;
    this.#source = undefined;
    s.removeListener('data', this.#onData);
    s.removeListener('end', this.#onEnd);
    s.removeListener('error', this.#onError);
    s.removeListener('close', this.#onClose);
    s.pause();
  }

  /** Feeds bytes directly (for sources that are not streams). */
  push(chunk: Buffer): void {
    this.#onData(chunk);
  }

  /** Ends the body directly. */
  end(): void {
    this.#onEnd();
  }

  /** Resolves when the body has ended, failed, or outgrown the limit (check the flags). */
  whenEnded(): Promise<void> {
    if (this.#ended || this.#error !== undefined || this.#exceeded) return Promise.resolve();
    return new Promise((resolve) => this.#endWaiters.push(resolve));
  }

  /** A reader from the first byte. Fails if bytes were already released. */
  open(): AsyncIterator<Buffer> {
    if (this.#base !== 0) throw new Error('the start of this body was already released');
    const cursor = new Cursor(this, 0);
    this.#readers.add(cursor);
    return cursor;
  }

  /**
   * After the verdict: no limit any more, nothing retained for replay beyond what readers
   * still need; memory is released behind the (last) reader.
   */
  release(): void {
    this.#retainAll = false;
    this.#holding = false;
    this.#limit = Number.POSITIVE_INFINITY;
    this.#trim();
    this.#flow();
  }

  /** Streaming mode: bytes already read by every reader need not be held any more. */
  stopHolding(): void {
    this.#holding = false;
    this.#trim();
  }

  /** A readable replay of the body from the first byte, following it while it arrives. */
  stream(): Readable {
    const it = this.open();
    let reading = false;
    const readable = new Readable({
      highWaterMark: 64 * 1024,
      read: () => {
        if (reading) return;
        reading = true;
        const pump = (): void => {
          it.next().then(
            (r) => {
              if (r.done) {
                reading = false;
                readable.push(null);
                return;
              }
              if (readable.push(r.value)) pump();
              else reading = false;
            },
            (err: unknown) => {
              reading = false;
              readable.destroy(err instanceof Error ? err : new Error(String(err)));
            },
          );
        };
        pump();
      },
      destroy: (err, cb) => {
        void it.return?.();
        cb(err);
      },
    });
    return readable;
  }

  /**
   * Whether the held bytes at `offset` equal `data`. False when they are not (or not all)
   * held or received.
   */
  equalsAt(offset: number, data: Buffer): boolean {
    if (offset < this.#base || offset + data.length > this.#received) return false;
    let idx = 0;
    let pos = this.#base;
    while (idx < this.#chunks.length && pos + this.#chunks[idx]!.length <= offset) {
      pos += this.#chunks[idx]!.length;
      idx++;
    }
    let d = 0;
    let within = offset - pos;
    while (d < data.length) {
      const c = this.#chunks[idx];
      if (c === undefined) return false;
      const n = Math.min(c.length - within, data.length - d);
      if (c.compare(data, d, d + n, within, within + n) !== 0) return false;
      d += n;
      idx++;
      within = 0;
    }
    return true;
  }

  /** The held bytes from offset 0 up to `end` as a list of slices (no copy). */
  slices(end: number): Buffer[] {
    if (this.#base !== 0) throw new Error('the start of this body was already released');
    const out: Buffer[] = [];
    let pos = 0;
    for (const c of this.#chunks) {
      if (pos >= end) break;
      out.push(pos + c.length <= end ? c : c.subarray(0, end - pos));
      pos += c.length;
    }
    return out;
  }

  /**
   * Gives the request back untouched, for a body that passes unscanned before it was read to
   * its end: stops reading, pauses the source and puts every byte read so far back at the head
   * of its buffer (`unshift`), so the application reads the whole body from the source itself.
   * False when that is not possible (the source already ended, or bytes were released).
   */
  restore(): boolean {
    const s = this.#source;
    if (s === undefined || s.readableEnded || this.#base !== 0 || this.#error !== undefined) return false;
    this.detach();
    for (let i = this.#chunks.length - 1; i >= 0; i--) s.unshift(this.#chunks[i]!);
    // detach() paused the stream explicitly; a parser that only adds a 'data' listener (raw-body)
    // would then wait forever. Back to the state of a stream nobody has read yet.
    (s as { readableFlowing: boolean | null }).readableFlowing = null;
    this.#chunks = [];
    this.#base = this.#received;
    for (const r of this.#readers) r.abandon();
    this.#readers.clear();
    return true;
  }

  /** Drops everything and stops reading. */
  dispose(): void {
    this.detach();
    this.#chunks = [];
    this.#base = this.#received;
    for (const r of this.#readers) r.abandon();
    this.#readers.clear();
  }

  // ---------------------------------------------------------------- internals, used by Cursor

  /** The chunk with absolute index `index`, or undefined when not (yet) there. */
  chunkAt(index: number): Buffer | undefined {
    return this.#chunks[index - this.#baseIndex];
  }

  get baseIndex(): number {
    return this.#baseIndex;
  }

  readerDone(cursor: Cursor): void {
    this.#readers.delete(cursor);
    this.#trim();
    this.#flow();
  }

  advanced(): void {
    this.#trim();
    this.#flow();
  }

  readonly #onData = (chunk: Buffer): void => {
    if (chunk.length === 0) return;
    this.#chunks.push(chunk);
    this.#received += chunk.length;
    this.#hash?.update(chunk);
    if (!this.#exceeded && this.#received > this.#limit) {
      this.#exceeded = true;
      this.#onExceeded?.();
      this.#settleEnd(false);
    }
    for (const r of this.#readers) r.wake();
    this.#flow();
  };

  readonly #onEnd = (): void => {
    if (this.#ended) return;
    this.#ended = true;
    for (const r of this.#readers) r.wake();
    this.#settleEnd();
  };

  readonly #onError = (err: Error): void => {
    this.#fail(err);
  };

  readonly #onClose = (): void => {
    if (!this.#ended) {
      const err = new Error('the HTTP client closed the connection before the body was complete') as Error & {
        code: string;
      };
      err.code = 'ECONNRESET';
      this.#fail(err);
    }
  };

  #fail(err: unknown): void {
    if (this.#ended || this.#error !== undefined) return;
    this.#error = err;
    for (const r of this.#readers) r.wake();
    this.#settleEnd();
  }

  #settleEnd(detach = true): void {
    const waiters = this.#endWaiters;
    this.#endWaiters = [];
    for (const w of waiters) w();
    if (detach) this.#detachListeners();
  }

  #detachListeners(): void {
    const s = this.#source;
    if (s === undefined) return;
    s.removeListener('data', this.#onData);
    s.removeListener('end', this.#onEnd);
    s.removeListener('close', this.#onClose);
    // keep an error listener: an error after the end must not crash the process
    s.removeListener('error', this.#onError);
    s.on('error', ignore);
    this.#source = undefined;
  }

  /** Releases the chunks every reader has passed (not while retaining or holding). */
  #trim(): void {
    if (this.#retainAll || this.#holding) return;
    let minIndex = this.#baseIndex + this.#chunks.length;
    for (const r of this.#readers) minIndex = Math.min(minIndex, r.index);
    const drop = minIndex - this.#baseIndex;
    if (drop <= 0) return;
    for (let i = 0; i < drop; i++) this.#base += this.#chunks[i]!.length;
    this.#chunks.splice(0, drop);
    this.#baseIndex = minIndex;
  }

  /** Pauses the source while readers lag too far behind (streaming mode only). */
  #flow(): void {
    const s = this.#source;
    if (s === undefined) return;
    let lag = 0;
    if (!this.#retainAll && this.#readers.size > 0) {
      let minOffset = this.#received;
      for (const r of this.#readers) minOffset = Math.min(minOffset, r.offset);
      lag = this.#received - minOffset;
    }
    if (lag > this.#hwm && !this.#paused) {
      this.#paused = true;
      s.pause();
    } else if (lag <= this.#hwm && this.#paused) {
      this.#paused = false;
      s.resume();
    }
  }
}

function ignore(): void {}

/** One reader's position in a BodyStore. */
class Cursor implements AsyncIterator<Buffer> {
  readonly #store: BodyStore;
  /** Absolute index of the next chunk. */
  index: number;
  /** Absolute byte offset of the next chunk. */
  offset = 0;
  #waiter: Waiter | undefined;
  #done = false;

  constructor(store: BodyStore, index: number) {
    this.#store = store;
    this.index = index;
  }

  next(): Promise<IteratorResult<Buffer>> {
    if (this.#done) return Promise.resolve({ done: true, value: undefined });
    const r = this.#take();
    if (r !== undefined) return Promise.resolve(r);
    const err = this.#store.error;
    if (err !== undefined) return Promise.reject(err);
    return new Promise((resolve, reject) => {
      this.#waiter = { resolve, reject };
    });
  }

  return(): Promise<IteratorResult<Buffer>> {
    this.abandon();
    return Promise.resolve({ done: true, value: undefined });
  }

  abandon(): void {
    if (this.#done) return;
    this.#done = true;
    const w = this.#waiter;
    this.#waiter = undefined;
    w?.resolve({ done: true, value: undefined });
    this.#store.readerDone(this);
  }

  wake(): void {
    const w = this.#waiter;
    if (w === undefined) return;
    const r = this.#take();
    if (r !== undefined) {
      this.#waiter = undefined;
      w.resolve(r);
      return;
    }
    const err = this.#store.error;
    if (err !== undefined) {
      this.#waiter = undefined;
      w.reject(err);
    }
  }

  #take(): IteratorResult<Buffer> | undefined {
    const chunk = this.#store.chunkAt(this.index);
    if (chunk !== undefined) {
      this.index++;
      this.offset += chunk.length;
      this.#store.advanced();
      return { done: false, value: chunk };
    }
    if (this.index < this.#store.baseIndex) throw new Error('reader fell behind released data');
    if (this.#store.ended) {
      this.#done = true;
      this.#store.readerDone(this);
      return { done: true, value: undefined };
    }
    return undefined;
  }
}

/**
 * The body an ICAP server sent back (a 200 with a modified or echoed message), read in full
 * before the application sees any of it (fail closed: a server that aborts its answer half-way
 * must not leave half a body with the application), and compared with the original.
 *
 * When the original is still held, the returned bytes are compared as they arrive and nothing
 * is stored while they match, so an echo costs no memory; from the first difference on, the
 * returned bytes are kept and the result is the original's matching prefix plus those bytes.
 * When the original was not held (streaming mode), the returned body is kept and compared by
 * length and SHA-256.
 */
export class AdaptedBody {
  readonly #original: BodyStore | null;
  readonly #limit: number;
  readonly #compare: boolean;
  #offset = 0;
  #divergedAt = -1;
  #chunks: Buffer[] = [];
  #stored = 0;
  readonly #hash: Hash | undefined;

  /** `limit`: largest body accepted; above it `write` throws. */
  constructor(original: BodyStore | null, limit: number) {
    this.#original = original;
    this.#limit = limit;
    this.#compare = original?.retaining === true;
    this.#hash = this.#compare ? undefined : createHash('sha256');
  }

  get length(): number {
    return this.#offset;
  }

  /** Returns false when the limit is exceeded (the caller fails the scan). */
  write(chunk: Buffer): boolean {
    if (this.#offset + chunk.length > this.#limit) return false;
    if (this.#compare && this.#divergedAt === -1) {
      if (this.#original!.equalsAt(this.#offset, chunk)) {
        this.#offset += chunk.length;
        return true;
      }
      this.#divergedAt = this.#offset;
    }
    this.#chunks.push(chunk);
    this.#stored += chunk.length;
    this.#hash?.update(chunk);
    this.#offset += chunk.length;
    return true;
  }

  /** True when the returned body is byte for byte the original one. */
  identical(): boolean {
    const original = this.#original;
    if (original === null) return this.#offset === 0;
    if (this.#compare) return this.#divergedAt === -1 && original.ended && this.#offset === original.received;
    return (
      original.ended && this.#offset === original.received && this.#hash!.digest('hex') === original.sha256
    );
  }

  /** The returned body as a stream (matching prefix from the original, then the stored bytes). */
  stream(): Readable {
    const prefix = this.#compare
      ? this.#original!.slices(this.#divergedAt === -1 ? this.#offset : this.#divergedAt)
      : [];
    const parts = [...prefix, ...this.#chunks];
    this.#chunks = [];
    let i = 0;
    return new Readable({
      highWaterMark: 64 * 1024,
      read() {
        for (;;) {
          const part = parts[i];
          if (part === undefined) {
            this.push(null);
            return;
          }
          parts[i++] = EMPTY;
          if (!this.push(part)) return;
        }
      },
    });
  }
}

const EMPTY = Buffer.alloc(0);
