import { Readable } from 'node:stream';
import { NEXT_NOW } from '../../client/source.js';

/** What a Cursor reads through: the BodyStore's side of a reader (see store.ts). */
export interface CursorStore {
  readonly ended: boolean;
  readonly error: unknown;
  readonly receivedSoFar: number;
  /** The next bytes at the cursor if they are in memory now, else undefined. */
  memoryAt(cursor: Cursor): Buffer | undefined;
  /** Reads from the temp file at the cursor, once those bytes are written. */
  spoolRead(cursor: Cursor): Promise<Buffer | undefined> | undefined;
  /** The body has ended and every byte not yet released is in memory (no temp file, no error). */
  readonly endedInMemory: boolean;
  readerDone(cursor: Cursor): void;
  advanced(): void;
}

/**
 * Key of a replay's method that hands over every byte at once, when the body is complete in
 * memory and nothing was read from the replay yet (see {@link StoreReplay}). A registered symbol:
 * node/handoff.ts, which may not import the engine, looks for the same one.
 */
export const TAKE_HELD: unique symbol = Symbol.for('icapkit.body.takeHeld') as never;

/** One reader's position in a BodyStore. */
export class Cursor implements AsyncIterator<Buffer> {
  readonly #store: CursorStore;
  /** Absolute byte offset of the next byte. */
  offset = 0;
  /** Index hint of the next memory chunk. */
  hint = 0;
  #waiter: { resolve: (r: IteratorResult<Buffer>) => void; reject: (e: unknown) => void } | undefined;
  #done = false;
  #reading = false;

  constructor(store: CursorStore) {
    this.#store = store;
  }

  next(): Promise<IteratorResult<Buffer>> {
    if (this.#done) return Promise.resolve({ done: true, value: undefined });
    const r = this.#take();
    if (r !== undefined) return Promise.resolve(r);
    return new Promise((resolve, reject) => {
      this.#waiter = { resolve, reject };
      this.wake();
    });
  }

  /** What next() would settle with, when that is known now (see NEXT_NOW); undefined otherwise. */
  [NEXT_NOW](): IteratorResult<Buffer> | undefined {
    if (this.#done) return { done: true, value: undefined };
    if (this.#waiter !== undefined || this.#reading) return undefined;
    return this.#take();
  }

  return(): Promise<IteratorResult<Buffer>> {
    this.abandon();
    return Promise.resolve({ done: true, value: undefined });
  }

  /** The store dropped its bytes: a pending read fails, and so does every further one. */
  discard(err: unknown): void {
    if (this.#done) return;
    this.#done = true;
    const w = this.#waiter;
    this.#waiter = undefined;
    w?.reject(err);
  }

  /**
   * Ends this reader with `err` (the reader's owner gave up: an abort): a pending read fails with
   * it, the store forgets the reader; further reads answer done.
   */
  fail(err: unknown): void {
    if (this.#done) return;
    this.discard(err);
    this.#store.readerDone(this);
  }

  abandon(): void {
    if (this.#done) return;
    this.#done = true;
    const w = this.#waiter;
    this.#waiter = undefined;
    w?.resolve({ done: true, value: undefined });
    this.#store.readerDone(this);
  }

  /**
   * Every remaining byte at once, when the body has ended and they are all in memory (the
   * stored Buffers themselves, no copy); the reader is then done. Undefined (nothing read) otherwise.
   */
  takeAll(): Buffer[] | undefined {
    const store = this.#store;
    if (this.#done || this.#waiter !== undefined || this.#reading || !store.endedInMemory) return undefined;
    const out: Buffer[] = [];
    const end = store.receivedSoFar;
    const { offset, hint } = this;
    while (this.offset < end) {
      const chunk = store.memoryAt(this);
      if (chunk === undefined) {
        // Not expected (ended in memory means held in memory): then nothing is taken after all.
        this.offset = offset;
        this.hint = hint;
        return undefined;
      }
      out.push(chunk);
      this.offset += chunk.length;
    }
    this.#done = true;
    this.#store.readerDone(this);
    return out;
  }

  wake(): void {
    const w = this.#waiter;
    if (w === undefined || this.#reading) return;
    const r = this.#take();
    if (r !== undefined) {
      this.#waiter = undefined;
      w.resolve(r);
      return;
    }
    const pending = this.#store.spoolRead(this);
    if (pending !== undefined) {
      this.#reading = true;
      pending.then(
        (buf) => {
          this.#reading = false;
          if (this.#done) return;
          if (buf === undefined || buf.length === 0) {
            this.wake();
            return;
          }
          this.offset += buf.length;
          this.#waiter = undefined;
          this.#store.advanced();
          w.resolve({ done: false, value: buf });
        },
        (err: unknown) => {
          this.#reading = false;
          this.#waiter = undefined;
          w.reject(err);
        },
      );
      return;
    }
    const err = this.#store.error;
    if (err !== undefined) {
      this.#waiter = undefined;
      w.reject(err);
    }
  }

  /** What can be answered without waiting: bytes in memory, or the end. */
  #take(): IteratorResult<Buffer> | undefined {
    const chunk = this.#store.memoryAt(this);
    if (chunk !== undefined) {
      this.offset += chunk.length;
      this.#store.advanced();
      return { done: false, value: chunk };
    }
    if (this.#store.ended && this.offset >= this.#store.receivedSoFar) {
      this.#done = true;
      this.#store.readerDone(this);
      return { done: true, value: undefined };
    }
    return undefined;
  }
}

/**
 * A readable stream of what an async iterator yields, read on demand: the replay of a BodyStore
 * (its cursor), or any other source of Buffers (the canonical multipart form). When the source
 * is a cursor over a body complete in memory and nothing was read yet, {@link TAKE_HELD} hands
 * its Buffers over at once instead (the request hand-off pushes them straight into the request,
 * without this stream in between).
 */
export class StoreReplay extends Readable {
  readonly #cursor: AsyncIterator<Buffer> & { takeAll?(): Buffer[] | undefined };
  #reading = false;
  #started = false;

  constructor(cursor: AsyncIterator<Buffer> & { takeAll?(): Buffer[] | undefined }) {
    super({ highWaterMark: 64 * 1024 });
    this.#cursor = cursor;
  }

  override _read(): void {
    if (this.#reading) return;
    this.#reading = true;
    this.#started = true;
    this.#pump();
  }

  #pump(): void {
    this.#cursor.next().then(
      (r) => {
        if (r.done) {
          this.#reading = false;
          this.push(null);
          return;
        }
        if (this.push(r.value)) this.#pump();
        else this.#reading = false;
      },
      (err: unknown) => {
        this.#reading = false;
        this.destroy(err instanceof Error ? err : new Error(String(err)));
      },
    );
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    void this.#cursor.return?.();
    cb(err);
  }

  /**
   * Every byte of the body, when it is complete in memory and this stream was not read yet
   * (its reader is then done: the stream itself yields nothing more); undefined otherwise.
   */
  [TAKE_HELD](): Buffer[] | undefined {
    if (this.#started || this.destroyed) return undefined;
    const held = this.#cursor.takeAll?.();
    if (held !== undefined) this.#started = true;
    return held;
  }
}

/**
 * Key of a pass outcome's {@link LazyReplay}: the adapters' hand-off (node/handoff.ts, which may
 * not import the engine, looks for the same registered symbol) takes the held body through it
 * without the outcome's `body` stream ever being made.
 */
export const HELD_REPLAY: unique symbol = Symbol.for('icapkit.outcome.heldReplay') as never;

/** What a LazyReplay replays: a store's cursor, or a canonical form's reader. */
export type HeldSource = AsyncIterator<Buffer> & {
  return(): Promise<IteratorResult<Buffer>>;
  takeAll(): Buffer[] | undefined;
};

/**
 * The replay of a held body as a pass outcome gives it out: its {@link StoreReplay} made only
 * when `stream` is read. The adapters' hand-off takes a body complete in memory through
 * {@link TAKE_HELD} with no stream at all (no Readable made and destroyed per request); anything
 * else reads `stream`, the same replay as before. Destroyed before the stream was made, the
 * stream is a destroyed one when it is asked for, as it would have been.
 */
export class LazyReplay {
  readonly #cursor: HeldSource;
  #stream: StoreReplay | null = null;
  #destroyed = false;

  constructor(cursor: HeldSource) {
    this.#cursor = cursor;
  }

  /** The replay as a stream (made at the first read of this property). */
  get stream(): StoreReplay {
    let stream = this.#stream;
    if (stream === null) {
      stream = new StoreReplay(this.#cursor);
      this.#stream = stream;
      if (this.#destroyed) stream.destroy();
    }
    return stream;
  }

  /** The stream's `destroyed`, or whether this replay was destroyed before it was made. */
  get destroyed(): boolean {
    return this.#stream === null ? this.#destroyed : this.#stream.destroyed;
  }

  /** What the outcome's dispose did to its stream: destroyed unless read to its end. */
  destroy(): void {
    const stream = this.#stream;
    if (stream === null) {
      if (this.#destroyed) return;
      this.#destroyed = true;
      void this.#cursor.return();
    } else if (!stream.readableEnded) stream.destroy();
  }

  /** StoreReplay's TAKE_HELD, without the stream when it was not made. */
  [TAKE_HELD](): Buffer[] | undefined {
    if (this.#stream !== null) return this.#stream[TAKE_HELD]();
    if (this.#destroyed) return undefined;
    return this.#cursor.takeAll();
  }
}
