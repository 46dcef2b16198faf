import { PROGRESS_STEP } from '../../client/deadline.js';
import { NEXT_NOW, type NextNow, type ReplayableBody, takeNow } from '../../client/source.js';
import { IcapError, IcapErrorCodes } from '../../errors.js';

/** ms of waiting for the HTTP client's next bytes after which a failure may be the client's pace (see slowClient). */
const SLOW_CLIENT_WAIT = 1_000;

/**
 * What the watch asks of its attempt (methods called on the object itself, so one object, such as
 * the exchange, can answer for every attempt without closures of its own). Missing: never busy,
 * can always retry; `stallPossible` false: a stall can never end the attempt (see below).
 */
export interface WatchHooks {
  /** The server has requests waiting for a connection, or connecting. */
  busy?(): boolean;
  /** The request could go to another server now (its body held, one available). */
  canRetry?(): boolean;
  readonly stallPossible?: boolean;
  /** The body is still arriving from the HTTP client (asked when the exchange gets its connection). */
  bodyArriving?(): boolean;
  /**
   * The exchange holds its connection while the HTTP client still sends the body (`true`, when
   * it gets the connection), until it reads the body's end or the attempt ends (`false`).
   */
  clientFed?(on: boolean): void;
  /** What was read from the server for the attempt's body so far (bytes, a dropped connection: a count). */
  readonly heard?: number;
  /** Bytes of OPTIONS answers read from the server so far (IcapClient.optionsRead). */
  readonly optionsRead?: number;
  /**
   * Connections made so far for this attempt alone (a client of its own: the health check's). One
   * made since the last look is progress before the attempt is sent (a slow TLS handshake).
   */
  readonly connected?: number;
}

const NO_HOOKS: WatchHooks = {};

/**
 * One ICAP attempt's own cancellation, and its no-progress watchdog.
 *
 * The attempt gets a signal of its own (a child of the request's), so one server can be given
 * up on while the request goes on with the next. The watchdog fails the attempt with
 * ICAP_ERR_STALLED when, for `stallTimeout`, it is the server's turn and nothing moves
 * forward. Progress is:
 *
 * - the exchange taking the next chunk of the body (the server took the previous ones);
 * - the server's 100 Continue, its answer head, each 16 KiB of its answer body.
 *
 * It runs from the start of the attempt (OPTIONS not answered count too) and pauses while the
 * exchange waits for the HTTP client's next bytes: a slow upload is never the server's fault.
 *
 * A stall is worth acting on only when the request can go elsewhere (`canRetry`: its body is
 * still held and another server is available): otherwise the attempt goes on, bounded by the
 * request's responseTimeout (a slow scan with nowhere else to go is better waited for).
 *
 * Until the exchange has a connection, it does not fire while the server has requests waiting
 * for a connection or connecting (`busy`): queueTimeout and connectTimeout bound those, with
 * errors of their own. A server that answers one byte at a time, or takes nothing more of the
 * body, or never answers, is caught within `stallTimeout`, whatever `ioTimeout` says.
 *
 * When the request can never go elsewhere (`stallPossible` false: the profile has one server),
 * a stall is never acted on, so the watch needs no signal of its own (the attempt uses the
 * request's) and no timer: it only tracks whose turn it is (`waitingForServer`).
 */
export class AttemptWatch {
  /** The attempt's own controller; null when a stall can never end the attempt (the request's signal then). */
  readonly #controller: AbortController | null;
  readonly #parent: AbortSignal;
  readonly #stallTimeout: number;
  readonly #label: string;
  /** Asked (as its methods, with itself as `this`) whether the server is busy and the request can go elsewhere. */
  readonly #hooks: WatchHooks;
  /** The exchange opened the body: it has its connection. */
  #opened = false;
  #timer: NodeJS.Timeout | undefined;
  #started = false;
  /** The exchange waits for the HTTP client's body. */
  #paused = false;
  #done = false;
  /** performance.now() when the exchange got its connection, and began its current wait for the client. */
  #openedAt = 0;
  #pausedAt = 0;
  /** The longest wait for the HTTP client's next bytes so far (ms), and whether the exchange read the body's end. */
  #longestWait = 0;
  #endRead = false;
  /** Body bytes the exchange took since it got its connection. */
  #taken = 0;
  /** clientFed(true) was said and not yet taken back. */
  #fed = false;
  /** The body was still arriving when the exchange got its connection (see fedByClient). */
  #fedByClient = false;
  #responseBytes = 0;
  /** The hooks' count of what was read from the server when the watchdog fired. */
  #heardAtFire = 0;
  /** The hooks' count of OPTIONS bytes when the watchdog fired; whether they gave their one re-arm. */
  #optionsAtFire = 0;
  #optionsRearmed = false;
  /** The hooks' count of connections made, at the last look. */
  #connectedSeen = 0;
  /** The watchdog fired. */
  stalled = false;

  constructor(parent: AbortSignal, stallTimeout: number, label: string, hooks: WatchHooks = NO_HOOKS) {
    this.#parent = parent;
    this.#stallTimeout = stallTimeout;
    this.#label = label;
    this.#hooks = hooks;
    if (hooks.stallPossible === false) this.#controller = null;
    else {
      const controller = new AbortController();
      this.#controller = controller;
      if (parent.aborted) controller.abort(parent.reason);
      else parent.addEventListener('abort', this.#onParentAbort, { once: true });
    }
  }

  /** The attempt's signal: aborted with the request's, or by the watchdog. */
  get signal(): AbortSignal {
    return this.#controller === null ? this.#parent : this.#controller.signal;
  }

  /** Whether the server was being waited for (the watchdog running, not paused for the client). */
  get waitingForServer(): boolean {
    return this.#started && !this.#paused && !this.#done && (this.#opened || !this.#busy());
  }

  /**
   * Whether the request went out on a connection (the exchange opened its body): what went
   * wrong from then on may be the content's doing; before, it was connecting or OPTIONS.
   */
  get bodyOpened(): boolean {
    return this.#opened;
  }

  /**
   * Whether the HTTP client's pace may explain the attempt's failure: it came before the
   * exchange had read the body's end, SLOW_CLIENT_WAIT or more after the exchange got its
   * connection, and by then the body had come slower than `minRate` bytes/s since then, or the
   * exchange had waited SLOW_CLIENT_WAIT or longer for the client's next bytes. (A failure is
   * often heard only once the client sends again: the wait that held it is counted when it
   * ends.) A server with an idle or transaction time limit of its own gives up on such an
   * upload.
   */
  slowClient(minRate: number): boolean {
    // Before the connection, or after the whole body was sent: the server's turn.
    if (!this.#opened || this.#endRead) return false;
    const now = performance.now();
    // A failure in the exchange's first SLOW_CLIENT_WAIT is no time limit on a slow upload
    // (and the rate of a few ms says nothing: a reset right after the head took no bytes yet).
    if (now - this.#openedAt < SLOW_CLIENT_WAIT) return false;
    const longest = this.#paused ? Math.max(this.#longestWait, now - this.#pausedAt) : this.#longestWait;
    if (longest >= SLOW_CLIENT_WAIT) return true;
    return this.#taken / ((now - this.#openedAt) / 1000) < minRate;
  }

  /**
   * Whether the HTTP client fed this attempt: its body was still arriving when the exchange
   * got its connection, so the client's pace was the attempt's pace (whatever it was).
   */
  get fedByClient(): boolean {
    return this.#fedByClient;
  }

  #busy(): boolean {
    return this.#hooks.busy?.() ?? false;
  }

  /** Whether the request could go to another server now (its body held, one available). */
  canRetry(): boolean {
    return this.#hooks.canRetry?.() ?? true;
  }

  /** Starts watching (at the start of the attempt). */
  start(): void {
    if (this.#started || this.#done) return;
    this.#started = true;
    this.#arm();
  }

  /** The body as the exchange reads it: every chunk it takes is progress, every wait for the client a pause. */
  wrap(body: ReplayableBody): ReplayableBody {
    return new WatchedBody(this, body);
  }

  /** WatchedBody: the exchange opened the body (it has its connection). */
  opened(): void {
    this.#opened = true;
    // (Again when the client replays the body on a fresh connection: counted from there.)
    this.#openedAt = performance.now();
    this.#taken = 0;
    this.#longestWait = 0;
    this.#endRead = false;
    this.#paused = false;
    if (this.#hooks.bodyArriving?.() === true) {
      this.#fed = true;
      this.#fedByClient = true;
      this.#hooks.clientFed?.(true);
    }
    this.start();
    this.progress();
  }

  /** WatchedBody: the exchange read the body's end (the HTTP client has sent it all). */
  bodyEnded(): void {
    this.#endRead = true;
    this.#unfeed();
  }

  #unfeed(): void {
    if (!this.#fed) return;
    this.#fed = false;
    this.#hooks.clientFed?.(false);
  }

  /** WatchedBody: the exchange waits for the body's next chunk (the client's turn). */
  pause(): void {
    this.#paused = true;
    this.#pausedAt = performance.now();
  }

  /** WatchedReader: the exchange took `bytes` of the body. */
  took(bytes: number): void {
    this.#taken += bytes;
  }

  /** WatchedBody: the body's next chunk came (or the wait ended); `took`: it is progress. */
  resume(took: boolean): void {
    if (this.#paused) {
      const wait = performance.now() - this.#pausedAt;
      if (wait > this.#longestWait) this.#longestWait = wait;
    }
    this.#paused = false;
    if (took) this.progress();
  }

  /** Something moved forward (100 Continue, the answer head). */
  progress(): void {
    if (!this.#started || this.#done || this.#paused) return;
    this.#responseBytes = 0;
    this.#arm();
  }

  /** Bytes of the answer's body were read; every 16 KiB is progress. */
  received(bytes: number): void {
    this.#responseBytes += bytes;
    if (this.#responseBytes >= PROGRESS_STEP) this.progress();
  }

  /** The server's part is over (or its verdict is known): nothing more to watch. */
  stop(): void {
    this.#done = true;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  /** Ends the attempt's signal bookkeeping. */
  dispose(): void {
    this.stop();
    this.#unfeed();
    if (this.#controller !== null) this.#parent.removeEventListener('abort', this.#onParentAbort);
  }

  #arm(): void {
    // No stall can end the attempt: the watchdog would only ever look again (see #fire).
    if (this.#controller === null) return;
    if (this.#timer !== undefined) this.#timer.refresh();
    else {
      this.#timer = setTimeout(this.#fire, this.#stallTimeout);
      this.#timer.unref();
    }
  }

  readonly #fire = (): void => {
    this.#timer = undefined;
    const controller = this.#controller;
    if (controller === null || this.#done || controller.signal.aborted) return;
    // Paused: the wait is the client's. Watching resumes with its next chunk.
    if (this.#paused) return;
    // Perhaps still waiting for a connection: bounded elsewhere; look again later. One made
    // since the last look starts the wait for the server anew (campaign-bk BK2).
    const connected = this.#hooks.connected ?? 0;
    if (!this.#opened && (this.#busy() || connected !== this.#connectedSeen)) {
      this.#connectedSeen = connected;
      this.#arm();
      return;
    }
    // Nowhere else to go: waiting on is the better choice (look again later: a server may come back).
    if (!this.canRetry()) {
      this.#arm();
      return;
    }
    // What came while the process stalled past it (a busy machine) is read first: progress
    // meanwhile re-arms the watch, a verdict stops it (campaign-bc BC2).
    this.#heardAtFire = this.#hooks.heard ?? 0;
    this.#optionsAtFire = this.#hooks.optionsRead ?? 0;
    setImmediate(this.#stall);
  };

  readonly #stall = (): void => {
    const controller = this.#controller;
    if (controller === null || this.#done || controller.signal.aborted || this.#paused) return;
    if (this.#timer !== undefined) return;
    // What was read meanwhile for this attempt counts as progress (a step of its bytes; a kept-alive
    // connection the server closed that the client now replaces: campaign-bf BF4), and an attempt
    // still waiting for its connection waits on, as at the timer's own look (campaign-bh BH1), as
    // does one not yet sent while a step of the server's OPTIONS answer came (BF4's OPTIONS form),
    // once: enough to read an answer that came in time, not an endless one (campaign-bk BK1; a
    // step: nor one trickled a byte at a time, campaign-bi).
    const read = (this.#hooks.heard ?? 0) - this.#heardAtFire >= PROGRESS_STEP;
    const options =
      !this.#optionsRearmed && (this.#hooks.optionsRead ?? 0) - this.#optionsAtFire >= PROGRESS_STEP;
    if (read || (!this.#opened && (options || this.#busy()))) {
      if (options && !read) this.#optionsRearmed = true;
      this.#arm();
      return;
    }
    this.stalled = true;
    this.#done = true;
    controller.abort(
      new IcapError(
        IcapErrorCodes.STALLED,
        `ICAP server ${this.#label} made no progress for stallTimeout (${this.#stallTimeout} ms)`,
      ),
    );
  };

  readonly #onParentAbort = (): void => {
    this.#controller?.abort(this.#parent.reason);
  };
}

/**
 * AttemptWatch.wrap's body (a class, not an object literal with a getter: such a literal is
 * built on V8's slow path, about 0.8 µs each): `length` read through to the body when asked.
 */
class WatchedBody implements ReplayableBody {
  readonly replayable = true as const;
  readonly #watch: AttemptWatch;
  readonly #body: ReplayableBody;

  constructor(watch: AttemptWatch, body: ReplayableBody) {
    this.#watch = watch;
    this.#body = body;
  }

  get length(): number | undefined {
    return this.#body.length;
  }

  open(): AsyncIterator<Uint8Array> & NextNow {
    const inner = this.#body.open();
    this.#watch.opened();
    return new WatchedReader(this.#watch, inner);
  }
}

/**
 * WatchedBody's reader (a class: one shape, its methods shared, where an object literal with a
 * computed key and three closures was made per attempt): every chunk taken is progress, every
 * wait for the HTTP client a pause of the watch.
 */
class WatchedReader implements AsyncIterator<Uint8Array>, NextNow {
  readonly #watch: AttemptWatch;
  readonly #inner: AsyncIterator<Uint8Array>;
  /** The watch's side of a read's promise (made at the first read that waits). */
  #onTook: ((r: IteratorResult<Uint8Array>) => void) | undefined;
  #onFailed: (() => void) | undefined;
  /** The exchange closed the reader (return()). */
  #returned = false;

  constructor(watch: AttemptWatch, inner: AsyncIterator<Uint8Array>) {
    this.#watch = watch;
    this.#inner = inner;
  }

  next(): Promise<IteratorResult<Uint8Array>> {
    const watch = this.#watch;
    watch.pause();
    const p = this.#inner.next();
    // Watched on the side: the exchange gets the reader's own promise, so a chunk
    // already there is taken in the same turn (no extra tick, no extra flush).
    this.#onTook ??= (r: IteratorResult<Uint8Array>) => {
      watch.resume(true);
      // (A read the exchange cut short with return() ends `done` too: not the body's end.)
      if (r.done !== true) watch.took(r.value.byteLength);
      else if (!this.#returned) watch.bodyEnded();
    };
    this.#onFailed ??= () => watch.resume(false);
    p.then(this.#onTook, this.#onFailed);
    return p;
  }

  /** The reader's chunk when it has one now (see NEXT_NOW): taken, so progress. */
  [NEXT_NOW](): IteratorResult<Uint8Array> | undefined {
    const r = takeNow(this.#inner);
    if (r !== undefined) {
      this.#watch.resume(true);
      if (r.done === true) {
        if (!this.#returned) this.#watch.bodyEnded();
      } else this.#watch.took(r.value.byteLength);
    }
    return r;
  }

  return(value?: unknown): Promise<IteratorResult<Uint8Array>> {
    this.#returned = true;
    this.#watch.resume(false);
    const inner = this.#inner;
    return inner.return !== undefined
      ? inner.return(value)
      : Promise.resolve({ done: true as const, value: undefined });
  }
}
