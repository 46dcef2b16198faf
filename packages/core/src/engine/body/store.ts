import { createHash, type Hash } from 'node:crypto';
import { tmpdir } from 'node:os';
import type { Readable } from 'node:stream';
import { actAfterReading } from '../../client/deadline.js';
import type { ReplayableBody } from '../../client/source.js';
import { Cursor, StoreReplay } from './cursor.js';
import {
  ARENA_SIZE,
  type BodyStoreOptions,
  COALESCE_BELOW,
  FIRST_ARENA,
  SPOOL_PENDING_MAX,
  WAKE_AT,
  WAKE_DELAY,
} from './options.js';
import { Spool } from './spool.js';

/** BodyStore: the HTTP request body while it is scanned (what it does: see ../body.ts). */
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
  /** The last entry of #chunks is a small chunk kept as it came (the next small one copies it into the arena). */
  #tailRaw = false;
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
  /** Bytes can be compared in memory ({@link equalsAt}, {@link slices}): all held there for good. */
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
    // What came while the process stalled past it is read first: bytes re-arm the timer, a
    // pause or a detach stop the watch, as they stop the timer.
    const watching = () => this.#idleTimer === undefined && this.#source !== undefined && !this.#paused;
    const moot = () =>
      !watching() || this.#ended || this.#error !== undefined || this.#exceeded || this.#disposed;
    actAfterReading(this.#idleTimeout ?? 0, moot, () => this.#onIdle?.());
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

  /** whenEnded() without a promise: `fn` (must not throw) is called at the end; false (not called) once it has come. */
  onEnded(fn: () => void): boolean {
    return !(this.#ended || this.#error !== undefined || this.#exceeded) && this.#endWaiters.push(fn) > 0;
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
    return new StoreReplay(this.open() as Cursor);
  }

  /** Whether the held bytes at `offset` equal `data` (memory only: {@link canCompare}); false if not all held. */
  equalsAt(offset: number, data: Buffer): boolean {
    if (this.#spool !== null || offset < this.#base || offset + data.length > this.#received) return false;
    if (data.length === 0) return true;
    // A binary search, not a walk from the first chunk: an echo is compared piece by piece
    // (c-icap returns 4,064 bytes at a time), and a walk would make comparing a body held in n
    // chunks cost n per piece, quadratic in the body's size.
    let idx = this.#findChunk(offset);
    if (idx < 0) return false;
    let d = 0;
    let within = offset - this.#chunkStart(idx);
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
    const spool = this.#spool;
    this.#spool = null;
    if (spool !== null) void spool.close();
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
    return this.#spool?.readFrom(cursor.offset, this.#received);
  }

  get endedInMemory(): boolean {
    return this.#ended && this.#error === undefined && this.#spool === null && !this.#disposed;
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

  /** Keeps a chunk in memory (small ones after a small one are copied into the arena, with it). */
  #store(chunk: Buffer, start: number): void {
    const small = chunk.length < COALESCE_BELOW;
    let arena = this.#arena;
    if (small && this.#tailGrows && arena !== null && this.#arenaUsed + chunk.length <= arena.length) {
      chunk.copy(arena, this.#arenaUsed);
      this.#arenaUsed += chunk.length;
      // Bytes already in the arena never change: readers holding the shorter view keep valid bytes.
      this.#chunks[this.#chunks.length - 1] = arena.subarray(this.#tailStart, this.#arenaUsed);
      return;
    }
    if (!small || !this.#tailRaw) {
      // As it came: a large chunk, or a small one while it is the last piece (most bodies: no copy).
      this.#tailGrows = false;
      this.#tailRaw = small;
      this.#chunks.push(chunk);
      this.#chunkStarts.push(start);
      return;
    }
    // A small chunk after one kept as it came: both into the arena, as the last piece (same start).
    const last = this.#chunks.length - 1;
    const tail = this.#chunks[last]!;
    const need = tail.length + chunk.length;
    if (arena === null || this.#arenaUsed + need > arena.length) {
      arena = Buffer.allocUnsafeSlow(Math.max(this.#nextArena, need));
      this.#nextArena = Math.min(ARENA_SIZE, this.#nextArena * 2);
      this.#arena = arena;
      this.#arenaUsed = 0;
    }
    this.#tailStart = this.#arenaUsed;
    tail.copy(arena, this.#arenaUsed);
    chunk.copy(arena, this.#arenaUsed + tail.length);
    this.#arenaUsed += need;
    this.#tailGrows = true;
    this.#tailRaw = false;
    this.#chunks[last] = arena.subarray(this.#tailStart, this.#arenaUsed);
  }

  /** Moves what is held to a temp file; from now on the body is written there. */
  #spill(): void {
    const spool = new Spool(
      this.#spoolDir,
      this.#base,
      () => {
        for (const r of this.#readers) r.wake();
        this.#flow();
      },
      (err) => this.#fail(err, true),
    );
    this.#spool = spool;
    for (const c of this.#chunks) spool.append(c);
    this.#tailGrows = false;
    this.#arena = null;
    this.#chunks = [];
    this.#chunkStarts = [];
    this.#chunkIndexBase = 0;
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
      const message = 'the HTTP client closed the connection before the body was complete';
      this.#fail(Object.assign(new Error(message), { code: 'ECONNRESET' }));
    }
  };

  /**
   * The body cannot be had whole: the client went away, or (`storage`) its temp file failed,
   * which counts even after the body has ended, since its readers would wait for bytes that are
   * not there (ICAP_ERR_SPOOL).
   */
  #fail(err: unknown, storage = false): void {
    if ((this.#ended && !storage) || this.#error !== undefined) return;
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
    if (drop === this.#chunks.length) {
      this.#tailGrows = false;
      this.#tailRaw = false;
    }
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
