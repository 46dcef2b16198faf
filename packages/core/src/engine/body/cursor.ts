import { Readable } from 'node:stream';

/** What a Cursor reads through: the BodyStore's side of a reader (see store.ts). */
export interface CursorStore {
  readonly ended: boolean;
  readonly error: unknown;
  readonly receivedSoFar: number;
  /** The next bytes at the cursor if they are in memory now, else undefined. */
  memoryAt(cursor: Cursor): Buffer | undefined;
  /** Reads from the temp file at the cursor, once those bytes are written. */
  spoolRead(cursor: Cursor): Promise<Buffer | undefined> | undefined;
  readerDone(cursor: Cursor): void;
  advanced(): void;
}

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

  return(): Promise<IteratorResult<Buffer>> {
    this.abandon();
    return Promise.resolve({ done: true, value: undefined });
  }

  /** The store dropped its bytes: a pending read fails, and so does every further one. */
  discard(err: Error): void {
    if (this.#done) return;
    this.#done = true;
    const w = this.#waiter;
    this.#waiter = undefined;
    w?.reject(err);
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

/** A readable stream of what `it` yields, read on demand (the replay of a BodyStore). */
export function readableOf(it: AsyncIterator<Buffer>): Readable {
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
