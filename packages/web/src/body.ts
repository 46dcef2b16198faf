import { Readable } from 'node:stream';

/**
 * The two stream bridges between a Web `Request` and the engine, which reads Node streams.
 *
 * - {@link WebBodyReadable}: the request's `ReadableStream` as a Node `Readable`, read one
 *   chunk per `_read` (the engine's own backpressure), and opened lazily: a request the
 *   policy does not scan is never locked, so it is handed back untouched. It reads the Node
 *   request under the Web one instead when it is given that (node-server.ts).
 * - {@link toWebStream}: a Node `Readable` (the approved body the engine replays) as a
 *   `ReadableStream`, pulled chunk by chunk as the application reads it.
 */

/** A Web body stream (or the Node request under it) as a Node Readable, opened on the first read. */
export class WebBodyReadable extends Readable {
  readonly #body: ReadableStream<Uint8Array> | Readable;
  #reader: ReadableStreamDefaultReader<Uint8Array> | undefined;
  /** The Node request, once reading it started. */
  #node: Readable | undefined;
  #done = false;

  constructor(body: ReadableStream<Uint8Array> | Readable) {
    super({ highWaterMark: 64 * 1024 });
    this.#body = body;
    // The engine stops listening once it is done with the body; a late failure of the
    // request's stream (the client going away) must not reach the process.
    this.on('error', () => {});
  }

  /** Whether reading started (the Web stream is locked to this object, or the Node request read). */
  get opened(): boolean {
    return this.#reader !== undefined || this.#node !== undefined;
  }

  override _read(): void {
    const body = this.#body;
    if (body instanceof Readable) {
      if (this.#node === undefined) {
        this.#node = body;
        body.on('data', this.#onData);
        body.on('end', this.#onEnd);
        body.on('error', this.#onError);
        body.on('close', this.#onClose);
      }
      body.resume();
      return;
    }
    if (this.#reader === undefined) {
      try {
        this.#reader = body.getReader();
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

  // The Node request's events. Every listener is removed once it ended, failed or closed: the
  // request is made readable again for the application afterwards, keeping its listeners.
  readonly #onData = (chunk: unknown): void => {
    if (!Buffer.isBuffer(chunk)) {
      this.#fail(new TypeError('the request body stream yielded a chunk that is not a Buffer'));
      return;
    }
    if (!this.push(chunk)) this.#node?.pause();
  };

  readonly #onEnd = (): void => {
    this.#detach();
    this.push(null);
  };

  readonly #onError = (err: Error): void => {
    this.#fail(err);
  };

  readonly #onClose = (): void => {
    if (!this.#done) this.#fail(new Error('the request was closed before its body ended'));
  };

  #fail(err: Error): void {
    this.#detach();
    if (!this.destroyed) this.destroy(err);
  }

  #detach(): void {
    this.#done = true;
    const node = this.#node;
    if (node === undefined) return;
    node.removeListener('data', this.#onData);
    node.removeListener('end', this.#onEnd);
    node.removeListener('error', this.#onError);
    node.removeListener('close', this.#onClose);
    node.pause();
  }

  override _destroy(err: Error | null, callback: (error?: Error | null) => void): void {
    if (!this.#done) {
      const node = this.#node;
      if (node !== undefined) {
        // What cancelling the Web stream over it does (Readable.toWeb): the request is destroyed
        // (without the error, which is this stream's: the request may have no 'error' listener).
        this.#detach();
        node.destroy();
      }
      const reader = this.#reader;
      if (reader !== undefined) {
        this.#done = true;
        reader.cancel(err ?? undefined).catch(() => {});
      }
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
