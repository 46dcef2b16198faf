import { createHash, type Hash } from 'node:crypto';
import { finished, Readable } from 'node:stream';
import { type BodySink, takeBody } from '../../client/answer.js';
import type { IcapResponse } from '../../client/transaction-types.js';
import type { IcapError } from '../../errors.js';
import { BodyStore } from './store.js';

/**
 * The body an ICAP server sent back (a 200 with a modified or echoed message), read in full
 * before the application sees any of it (fail closed: a server that aborts its answer half-way
 * must not leave half a body with the application), and compared with the original.
 *
 * When the original is held in memory, the returned bytes are compared as they arrive and
 * nothing is stored while they match, so an echo costs no memory; from the first difference on,
 * the returned bytes are kept and the result is the original's matching prefix plus those bytes.
 * Otherwise the returned body is kept (spooled like any body) and compared by length and SHA-256.
 */
export class AdaptedBody {
  readonly #original: BodyStore | null;
  readonly #limit: number;
  readonly #compare: boolean;
  readonly #storage: { memoryThreshold?: number; spoolDir?: string };
  #offset = 0;
  #divergedAt = -1;
  /**
   * The returned bytes kept: made at the first byte that must be kept, so an echo compared on
   * the fly (nothing kept) costs no store, and disposing of it no discarded-body error.
   */
  #stored: BodyStore | null = null;
  #disposed = false;
  readonly #hash: Hash | undefined;

  /** `limit`: largest body accepted; above it `write` returns false. */
  constructor(
    original: BodyStore | null,
    limit: number,
    storage: { memoryThreshold?: number; spoolDir?: string } = {},
  ) {
    this.#original = original;
    this.#limit = limit;
    this.#compare = original?.canCompare === true;
    // Compared on the fly when the original is in memory; by hash when the original was only
    // hashed (streamed, not kept); otherwise against the kept original (a temp file) at the end.
    this.#hash = !this.#compare && original?.hashing === true ? createHash('sha256') : undefined;
    this.#storage = storage;
  }

  /** The store of the returned bytes, made when first needed (disposed at once if this body already was). */
  #store(): BodyStore {
    let stored = this.#stored;
    if (stored === null) {
      stored = new BodyStore({ limit: this.#limit, retainAll: true, ...this.#storage });
      this.#stored = stored;
      if (this.#disposed) stored.dispose();
    }
    return stored;
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
    this.#store().push(chunk);
    this.#hash?.update(chunk);
    this.#offset += chunk.length;
    return true;
  }

  /**
   * Reads `body` (the ICAP response body) to its end into this one, as `for await` would (each
   * chunk in turn; an error or a premature close of the stream rejects; the stream destroyed
   * at the end), without a promise per chunk: chunks already buffered are taken in one go.
   * `received` is told each chunk's length. Past the limit the rest is still read to the end
   * (and discarded: what follows the body may name a threat, see exchange.ts), then the error
   * `tooLarge` makes rejects.
   */
  readAll(body: Readable, received: (bytes: number) => void, tooLarge: () => Error): Promise<void> {
    return new Promise((resolve, reject) => {
      let settled = false;
      // Past the limit: the error the end rejects with (the rest is read and discarded).
      let over: Error | null = null;
      const settle = (err: unknown) => {
        if (settled) return;
        settled = true;
        body.off('readable', pull);
        stop();
        if (!body.destroyed) body.destroy();
        if (err === null) resolve();
        else reject(err);
      };
      const pull = () => {
        try {
          while (!settled && !body.destroyed) {
            const chunk = body.read() as Buffer | null;
            if (chunk === null) return;
            received(chunk.length);
            if (over === null && !this.write(chunk)) over = tooLarge();
          }
        } catch (err) {
          settle(err);
        }
      };
      // Past the limit, the over-size failure is the one that counts, whatever ended the read.
      const stop = finished(body, { writable: false }, (err) => settle(over ?? err ?? null));
      body.on('readable', pull);
      pull();
    });
  }

  /**
   * Reads `res`'s body (if it has one) to its end into this one, as readAll reads `res.body`,
   * without its Readable: the transaction hands each chunk over as the socket reads it (see
   * takeBody). Undefined when that is over at once (the whole body came with the head), else a
   * promise; an error, as readAll's, rejects (past the limit, once the answer is read to its end).
   * `res.body` is not to be read after this.
   */
  readAnswer(
    res: IcapResponse,
    received: (bytes: number) => void,
    tooLarge: () => Error,
  ): Promise<void> | undefined {
    const reader = new AnswerReader(this, received, tooLarge);
    if (takeBody(res, reader)) return reader.settled();
    // No body, or its Readable was made already: read that.
    const body = res.body;
    return body === null ? undefined : this.readAll(body, received, tooLarge);
  }

  /**
   * True when the returned body is byte for byte the original one: said at once (a boolean)
   * when that needs no read, else a promise (both are read back from a temp file).
   */
  identical(): boolean | Promise<boolean> {
    // Said once (a digest can be taken once): asked again, the same answer.
    this.#identical ??= this.#compareWhole();
    return this.#identical;
  }

  #identical: boolean | Promise<boolean> | undefined;

  #compareWhole(): boolean | Promise<boolean> {
    const original = this.#original;
    if (original === null) return this.#offset === 0;
    if (!original.ended || this.#offset !== original.received) return false;
    if (this.#compare) return this.#divergedAt === -1;
    if (this.#hash !== undefined) return this.#hash.digest('hex') === original.sha256;
    if (!original.complete) return false;
    const stored = this.#store();
    stored.end();
    return sameBytes(original.open(), stored.open());
  }

  /**
   * True when the returned body is shorter than the (ended) original and either a strict prefix
   * of it or cannot be told from one: said at once when the returned bytes were compared as they
   * came, or when the original was not kept whole (streamed: nothing to compare the returned
   * bytes with), else read back from the kept original (a temp file).
   */
  mayBePrefix(): boolean | Promise<boolean> {
    const original = this.#original;
    if (original === null || !original.ended || this.#offset >= original.received) return false;
    if (this.#compare) return this.#divergedAt === -1;
    if (!original.complete) return true;
    const stored = this.#store();
    stored.end();
    return startsWith(original.open(), stored.open());
  }

  /** The returned body as a stream (matching prefix from the original, then the stored bytes). */
  stream(): Readable {
    const stored = this.#store();
    stored.end();
    const prefix = this.#compare
      ? this.#original!.slices(this.#divergedAt === -1 ? this.#offset : this.#divergedAt)
      : [];
    const rest = stored.stream();
    stored.release();
    if (prefix.length === 0) return rest;
    const whole = Readable.from(
      (async function* () {
        yield* prefix;
        yield* rest;
      })(),
      { objectMode: false },
    );
    // Destroyed before it reached `rest` (still in the prefix): `rest` and its temp file go too.
    whole.once('close', () => rest.destroy());
    return whole;
  }

  /** Frees the stored bytes (and their temp file). */
  dispose(): void {
    this.#disposed = true;
    this.#stored?.dispose();
  }
}

const READING = 0;
const READ = 1;
const FAILED = 2;

/** AdaptedBody.readAnswer's sink: what readAll does for each chunk, the end and an error. */
class AnswerReader implements BodySink {
  readonly #adapted: AdaptedBody;
  readonly #received: (bytes: number) => void;
  readonly #tooLarge: () => Error;
  #state = READING;
  /** Past the limit: the error the end settles with. */
  #over: Error | null = null;
  #error: unknown = undefined;
  #resolve: (() => void) | null = null;
  #reject: ((err: unknown) => void) | null = null;

  constructor(adapted: AdaptedBody, received: (bytes: number) => void, tooLarge: () => Error) {
    this.#adapted = adapted;
    this.#received = received;
    this.#tooLarge = tooLarge;
  }

  data(chunk: Buffer): boolean {
    if (this.#state !== READING) return false;
    try {
      this.#received(chunk.length);
      // Past the limit the rest is read to the end and discarded (see readAll).
      if (this.#over === null && !this.#adapted.write(chunk)) this.#over = this.#tooLarge();
      return true;
    } catch (err) {
      this.#settle(err);
    }
    return false;
  }

  end(): void {
    this.#settle(this.#over);
  }

  error(err: IcapError): void {
    // Past the limit, the over-size failure is the one that counts (an answer that never ends
    // after it is read until the attempt's signal ends it).
    this.#settle(this.#over ?? err);
  }

  /** Undefined when read to the end already; else a promise of the end (or the error). */
  settled(): Promise<void> | undefined {
    if (this.#state === READ) return undefined;
    if (this.#state === FAILED) return Promise.reject(this.#error);
    return new Promise<void>((resolve, reject) => {
      this.#resolve = resolve;
      this.#reject = reject;
    });
  }

  #settle(err: unknown): void {
    if (this.#state !== READING) return;
    if (err === null) {
      this.#state = READ;
      this.#resolve?.();
    } else {
      this.#state = FAILED;
      this.#error = err;
      this.#reject?.(err);
    }
    this.#resolve = null;
    this.#reject = null;
  }
}

/** Whether `whole` yields every byte `part` yields, first (chunked differently, maybe). Closes both. */
async function startsWith(whole: AsyncIterator<Buffer>, part: AsyncIterator<Buffer>): Promise<boolean> {
  let x: Buffer = Buffer.alloc(0);
  let y: Buffer = Buffer.alloc(0);
  try {
    for (;;) {
      if (y.length === 0) {
        const r = await part.next();
        if (r.done) return true;
        y = r.value;
      }
      if (x.length === 0) {
        const r = await whole.next();
        if (r.done) return false;
        x = r.value;
      }
      const n = Math.min(x.length, y.length);
      if (!x.subarray(0, n).equals(y.subarray(0, n))) return false;
      x = x.subarray(n);
      y = y.subarray(n);
    }
  } finally {
    void whole.return?.();
    void part.return?.();
  }
}

/** Whether two readers yield the same bytes (chunked differently, maybe). Closes both. */
async function sameBytes(a: AsyncIterator<Buffer>, b: AsyncIterator<Buffer>): Promise<boolean> {
  let x: Buffer = Buffer.alloc(0);
  let y: Buffer = Buffer.alloc(0);
  try {
    for (;;) {
      if (x.length === 0) {
        const r = await a.next();
        if (!r.done) x = r.value;
        else {
          if (y.length > 0) return false;
          return (await b.next()).done === true;
        }
      }
      if (y.length === 0) {
        const r = await b.next();
        if (r.done) return false;
        y = r.value;
      }
      const n = Math.min(x.length, y.length);
      if (!x.subarray(0, n).equals(y.subarray(0, n))) return false;
      x = x.subarray(n);
      y = y.subarray(n);
    }
  } finally {
    void a.return?.();
    void b.return?.();
  }
}
