import { createHash, type Hash, randomBytes } from 'node:crypto';
import { unlinkSync } from 'node:fs';
import { type FileHandle, open, unlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import type { ReplayableBody } from '../client/source.js';

/**
 * The HTTP request body while it is scanned: received once from the client, read by any
 * number of readers, each from the first byte, while it is still arriving.
 *
 * - `retainAll` (Allow: 204 mode): every byte is kept until the verdict, so a 204 can replay
 *   the original bytes to the application and a failed server can be replaced by another one.
 *   The client is read as fast as it sends (what is held is bounded by `limit`).
 * - otherwise (streaming mode): the client is paused while the slowest reader lags more than
 *   `highWaterMark` bytes behind, so a slow ICAP server slows the upload instead of growing
 *   memory. Bytes are held until {@link BodyStore.stopHolding} (called when the server asks for
 *   more than the preview: until then a 204 may still need to replay them), and from then on
 *   released as soon as every reader has passed them.
 *
 * Above `memoryThreshold` held bytes, the body moves to a temp file in `spoolDir` (mode 0600),
 * so a large bufferSize does not mean large memory. The file is removed by {@link dispose}, when
 * the last replay has read it after {@link release}, and at process exit at the latest.
 *
 * `limit` is the scan limit (the profile's bufferSize): crossing it calls `onExceeded` once.
 * After the verdict, {@link BodyStore.release} turns the store into a pass-through for the
 * replay to the application: no limit, memory released behind the reader.
 */

export interface BodyStoreOptions {
  limit: number;
  retainAll: boolean;
  highWaterMark?: number;
  /** Keep a running SHA-256 of the body (to recognise an identical echo when bytes are not held in memory). */
  hash?: boolean;
  onExceeded?: () => void;
  /** Held bytes above which the body moves to a temp file. Default: never. */
  memoryThreshold?: number;
  /** Folder for temp files. Default: the OS temp folder. */
  spoolDir?: string;
  /**
   * ms the source may send nothing while the store is reading it (not while the store holds it
   * back for slow readers): then `onIdle` is called once. Default: no limit.
   */
  idleTimeout?: number;
  onIdle?: () => void;
}

/** Spool writes outstanding above which the client is paused. */
const SPOOL_PENDING_MAX = 4 * 1024 * 1024;
/**
 * Chunks smaller than this are copied into a shared arena instead of being kept as they came:
 * a body sent in 1-byte pieces costs the same memory (and the same number of ICAP chunks
 * downstream) as one sent in large ones. Each small Buffer Node hands over would otherwise be
 * kept with its own object and backing store, and read, hashed and framed one by one.
 */
const COALESCE_BELOW = 16 * 1024;
/** Size of the arenas small chunks are copied into: the first is small (most bodies are), each next one twice as large, up to the largest. */
const FIRST_ARENA = 4 * 1024;
const ARENA_SIZE = 64 * 1024;
/**
 * Bytes received since readers were last woken from which they are woken at once; below, at
 * most once per {@link WAKE_DELAY} ms. A reader waiting at the end of a body that trickles in
 * then reads (and the ICAP client frames) a few hundred pieces a second at most, not one per
 * byte, however the client cut its body.
 */
const WAKE_AT = 16 * 1024;
const WAKE_DELAY = 4;
/** Bytes read from a spool file at a time. */
const SPOOL_READ = 256 * 1024;

export class BodyStore implements ReplayableBody {
  readonly replayable = true as const;
  #chunks: Buffer[] = [];
  /** Absolute offset of #chunks[0]. */
  #base = 0;
  #received = 0;
  #ended = false;
  #error: unknown = undefined;
  #exceeded = false;
  #limit: number;
  #retainAll: boolean;
  #holding = true;
  #released = false;
  readonly #hwm: number;
  readonly #memoryThreshold: number;
  readonly #spoolDir: string;
  #spool: Spool | null = null;
  #hash: Hash | undefined;
  #digest: string | undefined;
  #onExceeded: (() => void) | undefined;
  readonly #readers = new Set<Cursor>();
  #source: Readable | undefined;
  #paused = false;
  #endWaiters: Array<() => void> = [];
  #disposed = false;
  readonly #idleTimeout: number | undefined;
  readonly #onIdle: (() => void) | undefined;
  #idleTimer: NodeJS.Timeout | undefined;
  /** Where small chunks are copied; the last entry of #chunks grows in it while #tailGrows. */
  #arena: Buffer | null = null;
  #arenaUsed = 0;
  #nextArena = FIRST_ARENA;
  #tailGrows = false;
  /** Start in #arena of the last chunk, while it grows there. */
  #tailStart = 0;
  /** Bytes received since readers were last woken, and whether a wake is scheduled. */
  #unwoken = 0;
  #wakeTimer: NodeJS.Timeout | undefined;

  constructor(options: BodyStoreOptions) {
    this.#limit = options.limit;
    this.#retainAll = options.retainAll;
    this.#hwm = options.highWaterMark ?? 1024 * 1024;
    this.#memoryThreshold = options.memoryThreshold ?? Number.POSITIVE_INFINITY;
    this.#spoolDir = options.spoolDir ?? tmpdir();
    this.#hash = options.hash ? createHash('sha256') : undefined;
    this.#onExceeded = options.onExceeded;
    this.#idleTimeout = options.idleTimeout;
    this.#onIdle = options.onIdle;
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
    return this.#base === 0 && !this.#disposed;
  }
  /** The body lives in a temp file. */
  get spooled(): boolean {
    return this.#spool !== null;
  }
  /** Path of the temp file, while there is one. */
  get spoolPath(): string | undefined {
    return this.#spool?.path;
  }
  /** Pieces the bytes held in memory are kept in (small chunks share one): bounded by bytes, not by how they came. */
  get pieces(): number {
    return this.#chunks.length;
  }
  /** Bytes held in memory now. */
  get held(): number {
    return this.#spool === null ? this.#received - this.#base : this.#spool.pending;
  }
  /**
   * Bytes can be compared in memory ({@link equalsAt}, {@link slices}): every byte is held in
   * memory and will stay there.
   */
  get canCompare(): boolean {
    return this.#retainAll && this.#spool === null && (this.#ended || this.#memoryThreshold >= this.#limit);
  }
  /** A running SHA-256 is kept (the bytes themselves are not all kept). */
  get hashing(): boolean {
    return this.#hash !== undefined;
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
    this.#armIdle();
  }

  /** (Re)starts the idle timer while the source is being read. */
  #armIdle(): void {
    if (this.#idleTimeout === undefined || this.#source === undefined || this.#paused) return;
    if (this.#idleTimer === undefined) {
      this.#idleTimer = setTimeout(this.#onIdleTimeout, this.#idleTimeout);
      this.#idleTimer.unref();
    } else this.#idleTimer.refresh();
  }

  #stopIdle(): void {
    if (this.#idleTimer === undefined) return;
    clearTimeout(this.#idleTimer);
    this.#idleTimer = undefined;
  }

  readonly #onIdleTimeout = (): void => {
    this.#idleTimer = undefined;
    if (this.#ended || this.#error !== undefined || this.#exceeded || this.#disposed) return;
    this.#onIdle?.();
  };

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
    this.#stopIdle();
  }

  /** Feeds bytes directly (for sources that are not streams). */
  push(chunk: Buffer): void {
    this.#onData(chunk);
  }

  /** Ends the body directly. */
  end(): void {
    this.#onEnd();
  }

  /** Fails the body directly. */
  fail(err: unknown): void {
    this.#fail(err);
  }

  /** Resolves when the body has ended, failed, or outgrown the limit (check the flags). */
  whenEnded(): Promise<void> {
    if (this.#ended || this.#error !== undefined || this.#exceeded) return Promise.resolve();
    return new Promise((resolve) => this.#endWaiters.push(resolve));
  }

  /** A reader from the first byte. Fails if bytes were already released. */
  open(): AsyncIterator<Buffer> {
    if (this.#base !== 0 || this.#disposed) throw new Error('the start of this body was already released');
    const cursor = new Cursor(this);
    this.#readers.add(cursor);
    return cursor;
  }

  /**
   * After the verdict: no limit any more, nothing retained for replay beyond what readers
   * still need; memory (and the temp file, once read) is released behind the last reader.
   */
  release(): void {
    this.#retainAll = false;
    this.#holding = false;
    this.#released = true;
    this.#limit = Number.POSITIVE_INFINITY;
    this.#trim();
    this.#flow();
  }

  /**
   * After {@link release}, for a body that is read only to be discarded: at most `bytes` more
   * may arrive; past them the store counts as exceeded (whenEnded() resolves, `exceeded` is
   * true, nothing else is called), so what is still stored meanwhile stays bounded.
   */
  limitRest(bytes: number): void {
    this.#onExceeded = undefined;
    this.#limit = this.#received + bytes;
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
   * Whether the held bytes at `offset` equal `data` (memory only, see {@link canCompare}).
   * False when they are not (or not all) held or received.
   */
  equalsAt(offset: number, data: Buffer): boolean {
    if (this.#spool !== null || offset < this.#base || offset + data.length > this.#received) return false;
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

  /** The held bytes from offset 0 up to `end` as a list of slices (memory only, no copy). */
  slices(end: number): Buffer[] {
    if (this.#base !== 0 || this.#spool !== null)
      throw new Error('the start of this body is not held in memory');
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
  async restore(): Promise<boolean> {
    const s = this.#source;
    if (
      s === undefined ||
      s.readableEnded ||
      this.#base !== 0 ||
      this.#error !== undefined ||
      this.#disposed
    ) {
      return false;
    }
    this.detach();
    let chunks = this.#chunks;
    if (this.#spool !== null) {
      try {
        chunks = await this.#spool.readAll();
      } catch {
        return false;
      }
    }
    if (s.readableEnded) return false;
    for (let i = chunks.length - 1; i >= 0; i--) s.unshift(chunks[i]!);
    // detach() paused the stream explicitly; a parser that only adds a 'data' listener (raw-body)
    // would then wait forever. Back to the state of a stream nobody has read yet.
    (s as { readableFlowing: boolean | null }).readableFlowing = null;
    this.#dropStorage();
    return true;
  }

  /** Drops everything, stops reading, removes the temp file. */
  dispose(): void {
    if (this.#disposed) return;
    this.detach();
    this.#dropStorage();
  }

  #dropStorage(): void {
    this.#disposed = true;
    clearTimeout(this.#wakeTimer);
    this.#wakeTimer = undefined;
    if (!this.#ended && this.#error === undefined) {
      this.#error = new Error('the body was discarded before it was complete');
      this.#settleEnd(false);
    }
    this.#chunks = [];
    this.#tailGrows = false;
    this.#arena = null;
    this.#base = this.#received;
    // A reader still inside the body fails (it must never take a cut-off body for a whole one).
    if (this.#readers.size > 0) {
      const discarded = new Error('the body was discarded before it was read to its end');
      for (const r of this.#readers) r.discard(discarded);
      this.#readers.clear();
    }
    this.#closeSpool();
  }

  #closeSpool(): void {
    const spool = this.#spool;
    if (spool === null) return;
    this.#spool = null;
    void spool.close();
  }

  // ---------------------------------------------------------------- internals, used by Cursor

  /** The next bytes at `offset` if they are in memory now, else undefined. */
  memoryAt(cursor: Cursor): Buffer | undefined {
    if (this.#spool !== null || cursor.offset >= this.#received) return undefined;
    // Cursors read whole chunks; the hint keeps the lookup O(1).
    let idx = cursor.hint - this.#chunkIndexBase;
    if (idx < 0 || idx >= this.#chunks.length || this.#chunkStart(idx) !== cursor.offset)
      idx = this.#findChunk(cursor.offset);
    if (idx === -1) return undefined;
    cursor.hint = idx + this.#chunkIndexBase + 1;
    const start = this.#chunkStart(idx);
    const c = this.#chunks[idx]!;
    return start === cursor.offset ? c : c.subarray(cursor.offset - start);
  }

  /** Reads from the temp file at the cursor, once those bytes are written. */
  spoolRead(cursor: Cursor): Promise<Buffer | undefined> | undefined {
    const spool = this.#spool;
    if (spool === null) return undefined;
    if (cursor.offset >= spool.flushed)
      return cursor.offset < this.#received
        ? spool.whenFlushed(cursor.offset).then(() => undefined)
        : undefined;
    return spool.read(cursor.offset, SPOOL_READ);
  }

  get receivedSoFar(): number {
    return this.#received;
  }

  readerDone(cursor: Cursor): void {
    this.#readers.delete(cursor);
    this.#trim();
    this.#flow();
    // After the verdict, once the last replay has read everything, nothing needs the bytes.
    if (this.#released && this.#ended && this.#readers.size === 0) this.#dropStorage();
  }

  advanced(): void {
    this.#trim();
    this.#flow();
  }

  // chunk bookkeeping: #chunkStarts[i] is the absolute offset of #chunks[i]
  #chunkStarts: number[] = [];
  #chunkIndexBase = 0;

  #chunkStart(idx: number): number {
    return this.#chunkStarts[idx]!;
  }

  #findChunk(offset: number): number {
    let lo = 0;
    let hi = this.#chunks.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const start = this.#chunkStarts[mid]!;
      if (offset < start) hi = mid - 1;
      else if (offset >= start + this.#chunks[mid]!.length) lo = mid + 1;
      else return mid;
    }
    return -1;
  }

  readonly #onData = (chunk: Buffer): void => {
    if (chunk.length === 0 || this.#disposed) return;
    const start = this.#received;
    this.#received += chunk.length;
    this.#hash?.update(chunk);
    if (this.#spool !== null) {
      this.#spool.append(chunk);
    } else {
      this.#store(chunk, start);
      if ((this.#retainAll || this.#holding) && this.#received - this.#base > this.#memoryThreshold)
        this.#spill();
    }
    if (!this.#exceeded && this.#received > this.#limit) {
      this.#exceeded = true;
      this.#onExceeded?.();
      this.#settleEnd(false);
    }
    this.#unwoken += chunk.length;
    if (this.#unwoken >= WAKE_AT || this.#exceeded) this.#wakeReaders();
    else if (this.#wakeTimer === undefined && this.#readers.size > 0) {
      // Small pieces: readers get what arrived meanwhile in one read, not piece by piece.
      this.#wakeTimer = setTimeout(this.#wakeReaders, WAKE_DELAY);
    }
    this.#flow();
    if (this.#source !== undefined) this.#armIdle();
  };

  readonly #wakeReaders = (): void => {
    if (this.#wakeTimer !== undefined) {
      clearTimeout(this.#wakeTimer);
      this.#wakeTimer = undefined;
    }
    this.#unwoken = 0;
    for (const r of this.#readers) r.wake();
  };

  /** Keeps a chunk in memory: small ones copied into the arena, extending the last chunk there. */
  #store(chunk: Buffer, start: number): void {
    if (chunk.length >= COALESCE_BELOW) {
      this.#tailGrows = false;
      this.#chunks.push(chunk);
      this.#chunkStarts.push(start);
      return;
    }
    let arena = this.#arena;
    if (this.#tailGrows && arena !== null && this.#arenaUsed + chunk.length <= arena.length) {
      chunk.copy(arena, this.#arenaUsed);
      this.#arenaUsed += chunk.length;
      // Bytes already in the arena never change: readers holding the shorter view keep valid bytes.
      this.#chunks[this.#chunks.length - 1] = arena.subarray(this.#tailStart, this.#arenaUsed);
      return;
    }
    if (arena === null || this.#arenaUsed + chunk.length > arena.length) {
      arena = Buffer.allocUnsafeSlow(Math.max(this.#nextArena, chunk.length));
      this.#nextArena = Math.min(ARENA_SIZE, this.#nextArena * 2);
      this.#arena = arena;
      this.#arenaUsed = 0;
    }
    this.#tailStart = this.#arenaUsed;
    chunk.copy(arena, this.#arenaUsed);
    this.#arenaUsed += chunk.length;
    this.#tailGrows = true;
    this.#chunks.push(arena.subarray(this.#tailStart, this.#arenaUsed));
    this.#chunkStarts.push(start);
  }

  /** Moves what is held to a temp file; from now on the body is written there. */
  #spill(): void {
    const spool = new Spool(this.#spoolDir, this.#base, () => {
      for (const r of this.#readers) r.wake();
      this.#flow();
    });
    this.#spool = spool;
    for (const c of this.#chunks) spool.append(c);
    this.#tailGrows = false;
    this.#arena = null;
    this.#chunks = [];
    this.#chunkStarts = [];
    this.#chunkIndexBase = 0;
    spool.ready.catch((err: unknown) => this.#fail(err));
  }

  readonly #onEnd = (): void => {
    if (this.#ended) return;
    this.#ended = true;
    this.#wakeReaders();
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
    this.#wakeReaders();
    this.#settleEnd();
  }

  #settleEnd(detach = true): void {
    const waiters = this.#endWaiters;
    this.#endWaiters = [];
    for (const w of waiters) w();
    if (detach) this.#detachListeners();
  }

  #detachListeners(): void {
    this.#stopIdle();
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

  /** Releases the memory chunks every reader has passed (not while retaining or holding). */
  #trim(): void {
    if (this.#retainAll || this.#holding || this.#spool !== null) return;
    let min = this.#received;
    for (const r of this.#readers) min = Math.min(min, r.offset);
    let drop = 0;
    while (drop < this.#chunks.length && this.#chunkStarts[drop]! + this.#chunks[drop]!.length <= min) drop++;
    if (drop === 0) return;
    // The growing last chunk goes too: the next small chunk starts a new one.
    if (drop === this.#chunks.length) this.#tailGrows = false;
    this.#base = this.#chunkStarts[drop - 1]! + this.#chunks[drop - 1]!.length;
    this.#chunks.splice(0, drop);
    this.#chunkStarts.splice(0, drop);
    this.#chunkIndexBase += drop;
  }

  /** Pauses the source while readers lag too far behind, or while the temp file cannot keep up. */
  #flow(): void {
    const s = this.#source;
    if (s === undefined) return;
    let lag = 0;
    if (!this.#retainAll && this.#readers.size > 0) {
      let minOffset = this.#received;
      for (const r of this.#readers) minOffset = Math.min(minOffset, r.offset);
      lag = this.#received - minOffset;
    }
    const spoolBehind = this.#spool !== null && this.#spool.pending > SPOOL_PENDING_MAX;
    const pause = lag > this.#hwm || spoolBehind;
    if (pause && !this.#paused) {
      this.#paused = true;
      s.pause();
      // Held back by us, not idle on the client's side.
      this.#stopIdle();
    } else if (!pause && this.#paused) {
      this.#paused = false;
      s.resume();
      this.#armIdle();
    }
  }
}

function ignore(): void {}

/** One reader's position in a BodyStore. */
class Cursor implements AsyncIterator<Buffer> {
  readonly #store: BodyStore;
  /** Absolute byte offset of the next byte. */
  offset = 0;
  /** Index hint of the next memory chunk. */
  hint = 0;
  #waiter: { resolve: (r: IteratorResult<Buffer>) => void; reject: (e: unknown) => void } | undefined;
  #done = false;
  #reading = false;

  constructor(store: BodyStore) {
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
class Spool {
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
  #flushWaiters: Array<{ offset: number; resolve: () => void }> = [];

  constructor(dir: string, base: number, onProgress: () => void) {
    this.path = join(dir, `icapkit-${process.pid}-${randomBytes(8).toString('hex')}.body`);
    this.#base = base;
    this.flushed = base;
    this.#appended = base;
    this.#onProgress = onProgress;
    removeAtExit(this.path);
    this.ready = open(this.path, 'wx+', 0o600);
    this.#chain = this.ready;
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
    while (this.#queued.length > 0 && !this.#closed) {
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
    if (offset < this.flushed || this.#closed) return Promise.resolve();
    return new Promise((resolve) => this.#flushWaiters.push({ offset, resolve }));
  }

  async read(offset: number, max: number): Promise<Buffer> {
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
  #offset = 0;
  #divergedAt = -1;
  readonly #stored: BodyStore;
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
    this.#stored = new BodyStore({ limit, retainAll: true, ...storage });
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
    this.#stored.push(chunk);
    this.#hash?.update(chunk);
    this.#offset += chunk.length;
    return true;
  }

  /** True when the returned body is byte for byte the original one. */
  async identical(): Promise<boolean> {
    const original = this.#original;
    if (original === null) return this.#offset === 0;
    if (!original.ended || this.#offset !== original.received) return false;
    if (this.#compare) return this.#divergedAt === -1;
    if (this.#hash !== undefined) return this.#hash.digest('hex') === original.sha256;
    if (!original.complete) return false;
    this.#stored.end();
    return sameBytes(original.open(), this.#stored.open());
  }

  /** The returned body as a stream (matching prefix from the original, then the stored bytes). */
  stream(): Readable {
    this.#stored.end();
    const prefix = this.#compare
      ? this.#original!.slices(this.#divergedAt === -1 ? this.#offset : this.#divergedAt)
      : [];
    const rest = this.#stored.stream();
    this.#stored.release();
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
    this.#stored.dispose();
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
