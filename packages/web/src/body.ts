import { Readable } from 'node:stream';

/**
 * The two stream bridges between a Web `Request` and the engine, which reads Node streams.
 *
 * - {@link WebBodyReadable}: the request's `ReadableStream` as a Node `Readable`, read one
 *   chunk per `_read` (the engine's own backpressure), and opened lazily: a request the
 *   policy does not scan is never locked, so it is handed back untouched.
 * - {@link toWebStream}: a Node `Readable` (the approved body the engine replays) as a
 *   `ReadableStream`, pulled chunk by chunk as the application reads it.
 */

/** A Web body stream as a Node Readable, opened on the first read. */
export class WebBodyReadable extends Readable {
  readonly #body: ReadableStream<Uint8Array>;
  #reader: ReadableStreamDefaultReader<Uint8Array> | undefined;
  #done = false;

  constructor(body: ReadableStream<Uint8Array>) {
    super({ highWaterMark: 64 * 1024 });
    this.#body = body;
    // The engine stops listening once it is done with the body; a late failure of the
    // request's stream (the client going away) must not reach the process.
    this.on('error', () => {});
  }

  /** Whether reading started (the Web stream is locked to this object). */
  get opened(): boolean {
    return this.#reader !== undefined;
  }

  override _read(): void {
    if (this.#reader === undefined) {
      try {
        this.#reader = this.#body.getReader();
      } catch (err) {
        // Locked or already read by someone else: the body cannot be scanned as it is.
        this.destroy(err instanceof Error ? err : new Error(String(err)));
        return;
      }
    }
    this.#reader.read().then(
      ({ done, value }) => {
        if (this.destroyed) return;
        if (done) {
          this.#done = true;
          this.push(null);
          return;
        }
        if (!(value instanceof Uint8Array)) {
          this.destroy(new TypeError('the request body stream yielded a chunk that is not a Uint8Array'));
          return;
        }
        this.push(Buffer.from(value.buffer, value.byteOffset, value.byteLength));
      },
      (err: unknown) => {
        this.#done = true;
        if (!this.destroyed) this.destroy(err instanceof Error ? err : new Error(String(err)));
      },
    );
  }

  override _destroy(err: Error | null, callback: (error?: Error | null) => void): void {
    const reader = this.#reader;
    if (reader !== undefined && !this.#done) {
      this.#done = true;
      reader.cancel(err ?? undefined).catch(() => {});
    }
    callback(err);
  }
}

/**
 * A Node Readable as a Web byte stream: each `pull` reads one chunk (so nothing is read ahead
 * of the application beyond the stream's queue of one chunk). `onSettle` runs once, when the
 * stream ended, failed or was cancelled.
 */
export function toWebStream(source: Readable, onSettle: () => void): ReadableStream<Uint8Array> {
  const iterator = source[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  let settled = false;
  const settle = () => {
    if (settled) return;
    settled = true;
    onSettle();
  };
  return new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        try {
          const { done, value } = await iterator.next();
          if (done) {
            controller.close();
            settle();
            return;
          }
          controller.enqueue(new Uint8Array(value.buffer, value.byteOffset, value.byteLength));
        } catch (err) {
          controller.error(err);
          settle();
        }
      },
      async cancel() {
        source.destroy();
        try {
          await iterator.return?.();
        } catch {
          // destroyed on purpose
        }
        settle();
      },
    },
    { highWaterMark: 0 },
  );
}
