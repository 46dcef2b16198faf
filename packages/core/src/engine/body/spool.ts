import { randomBytes } from 'node:crypto';
import { unlinkSync } from 'node:fs';
import { type FileHandle, open, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { IcapError, IcapErrorCodes } from '../../errors.js';
import { SPOOL_READ } from './options.js';

// ---------------------------------------------------------------- temp files

const liveSpools = new Set<string>();
let exitHookInstalled = false;

function removeAtExit(path: string): void {
  liveSpools.add(path);
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once('exit', () => {
    for (const p of liveSpools) {
      try {
        unlinkSync(p);
      } catch {
        // already gone
      }
    }
  });
}

/** Temp files currently held by body stores (for leak checks in tests). */
export function openSpoolFiles(): string[] {
  return [...liveSpools];
}

/** An append-only temp file holding a body from absolute offset `base` on. */
export class Spool {
  readonly path: string;
  readonly #base: number;
  readonly ready: Promise<FileHandle>;
  #chain: Promise<unknown>;
  /** Absolute offset up to which bytes are written. */
  flushed: number;
  #appended: number;
  #closed = false;
  #unlinked = false;
  readonly #onProgress: () => void;
  readonly #onError: (err: IcapError) => void;
  #flushWaiters: Array<{ offset: number; resolve: () => void }> = [];
  #failure: IcapError | undefined;

  /**
   * `onProgress`: more bytes are written. `onError`: the file could not be opened or written
   * (a full disk, a missing spoolDir, no descriptors left), once: nothing more is written, and
   * every read past what was written fails with that error (ICAP_ERR_SPOOL), so that no
   * reader waits for bytes that will never come.
   */
  constructor(dir: string, base: number, onProgress: () => void, onError: (err: IcapError) => void) {
    this.path = join(dir, `icapkit-${process.pid}-${randomBytes(8).toString('hex')}.body`);
    this.#base = base;
    this.flushed = base;
    this.#appended = base;
    this.#onProgress = onProgress;
    this.#onError = onError;
    removeAtExit(this.path);
    this.ready = open(this.path, 'wx+', 0o600);
    this.ready.catch((err: unknown) => this.#failed(err));
    this.#chain = this.ready;
  }

  /** Why the file could not be opened or written, once that happened. */
  get failure(): IcapError | undefined {
    return this.#failure;
  }

  /** Bytes appended but not yet written. */
  get pending(): number {
    return this.#appended - this.flushed;
  }

  /**
   * Queues bytes for the file. What is appended while a write is under way goes out in the
   * next write, as one piece: a body arriving in tiny chunks costs a few large writes.
   */
  append(chunk: Buffer): void {
    this.#appended += chunk.length;
    if (this.#failure !== undefined) return;
    this.#queued.push(chunk);
    this.#queuedBytes += chunk.length;
    if (this.#writing) return;
    this.#writing = true;
    this.#chain = this.#chain.then(() => this.#writeQueued());
    this.#chain.catch(() => {});
  }

  #queued: Buffer[] = [];
  #queuedBytes = 0;
  #writing = false;

  async #writeQueued(): Promise<void> {
    try {
      await this.#writeAll();
    } catch (err) {
      this.#failed(err);
    }
  }

  /** A failed open or write: reported once, the waiters woken, nothing more written. */
  #failed(err: unknown): void {
    if (this.#failure !== undefined || this.#closed) return;
    const why = err instanceof Error ? err.message : String(err);
    this.#failure = new IcapError(
      IcapErrorCodes.SPOOL,
      `a temp file for the request body could not be written: ${why}`,
      {
        cause: err,
      },
    );
    this.#queued = [];
    this.#queuedBytes = 0;
    const waiters = this.#flushWaiters;
    this.#flushWaiters = [];
    for (const w of waiters) w.resolve();
    this.#onError(this.#failure);
  }

  async #writeAll(): Promise<void> {
    while (this.#queued.length > 0 && !this.#closed && this.#failure === undefined) {
      const parts = this.#queued;
      const n = this.#queuedBytes;
      this.#queued = [];
      this.#queuedBytes = 0;
      // Writes are sequential: the next one starts where the file ends.
      const position = this.flushed - this.#base;
      const fh = await this.ready;
      const buf = parts.length === 1 ? parts[0]! : Buffer.concat(parts, n);
      let written = 0;
      while (written < n) {
        const r = await fh.write(buf, written, n - written, position + written);
        written += r.bytesWritten;
      }
      this.flushed += n;
      const waiters = this.#flushWaiters.filter((w) => w.offset < this.flushed);
      this.#flushWaiters = this.#flushWaiters.filter((w) => w.offset >= this.flushed);
      for (const w of waiters) w.resolve();
      this.#onProgress();
    }
    this.#writing = false;
  }

  whenFlushed(offset: number): Promise<void> {
    if (offset < this.flushed || this.#closed || this.#failure !== undefined) return Promise.resolve();
    return new Promise((resolve) => this.#flushWaiters.push({ offset, resolve }));
  }

  /**
   * The bytes at `offset` once they are written (`received`: how far the body goes so far):
   * undefined when there are none to wait for, a promise of undefined when the wait is over
   * (ask again), a rejection once the file failed.
   */
  readFrom(offset: number, received: number): Promise<Buffer | undefined> | undefined {
    if (offset < this.flushed) return this.read(offset, SPOOL_READ);
    if (this.#failure !== undefined) return Promise.reject(this.#failure);
    return offset < received ? this.whenFlushed(offset).then(() => undefined) : undefined;
  }

  async read(offset: number, max: number): Promise<Buffer> {
    if (this.#failure !== undefined && offset >= this.flushed) throw this.#failure;
    const fh = await this.ready;
    const n = Math.min(max, this.flushed - offset);
    const buf = Buffer.allocUnsafe(n);
    let got = 0;
    while (got < n) {
      const r = await fh.read(buf, got, n - got, offset - this.#base + got);
      if (r.bytesRead === 0) break;
      got += r.bytesRead;
    }
    return got === n ? buf : buf.subarray(0, got);
  }

  /** Everything, once written (for restore). */
  async readAll(): Promise<Buffer[]> {
    await this.#chain;
    if (this.#failure !== undefined) throw this.#failure;
    const out: Buffer[] = [];
    for (let at = this.#base; at < this.flushed; ) {
      const b = await this.read(at, SPOOL_READ);
      if (b.length === 0) break;
      out.push(b);
      at += b.length;
    }
    return out;
  }

  /**
   * Removes the file and closes it. The name goes first, synchronously if the file exists
   * already (a write still under way goes to the nameless file, which the close then frees), so
   * a disposed body leaves no file behind by the time the response is sent; else as soon as it
   * is created. Where an open file cannot be removed (Windows), after the close.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const w of this.#flushWaiters) w.resolve();
    this.#flushWaiters = [];
    this.#unlinkNow();
    try {
      const fh = await this.ready;
      if (!this.#unlinked) this.#unlinkNow();
      await this.#chain.catch(() => {});
      await fh.close();
    } catch {
      // the file could not be opened: nothing to close
    }
    if (!this.#unlinked) await unlink(this.path).catch(() => {});
    liveSpools.delete(this.path);
  }

  #unlinkNow(): void {
    try {
      unlinkSync(this.path);
      this.#unlinked = true;
      liveSpools.delete(this.path);
    } catch {
      // still open elsewhere (Windows) or gone: removed after the close
    }
  }
}
