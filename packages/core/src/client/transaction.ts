import { fromSocketError, type IcapError, IcapErrorCodes, type IcapReceivedHead } from '../errors.js';
import { CRLF, chunkHeader, LAST_CHUNK, LAST_CHUNK_IEOF } from '../protocol/encoder.js';
import { IcapParser, type IcapResponseHead, isInterim, type ParserHandler } from '../protocol/parser.js';
import { receivedAnswer, salvageHeads, trailerHead } from '../protocol/salvage.js';
import { abortReason } from './abort.js';
import {
  AnswerBody,
  asIcapError,
  checkFinalHead,
  closedError,
  connectionInfo,
  countInterim,
  finalResponse,
  idleError,
  keepInterim,
  withReceivedHead,
} from './answer.js';
import type { Connection, SocketOwner } from './connection.js';
import { actAfterReading, addHeard, holdHeard } from './deadline.js';
import { type Deferred, deferred, noop } from './deferred.js';
import { EchoCheck } from './echo.js';
import { keepsConnection } from './reuse.js';
import { asBuffer, closeIterator, takeNow } from './source.js';
import { afterAnswer, afterFailure, failAfterHead, quietWait, StrayWait, strayInChunk } from './stray.js';
import type {
  IcapResponse,
  TransactionOptions,
  TransactionRequest,
  TransactionSummary,
} from './transaction-types.js';
import { keepReadingAfterWriteError, writeBatch } from './write-error.js';

/**
 * One ICAP exchange on one connection: write the request (preview first when asked), read the
 * response concurrently, and hand the connection back to the pool when both are over.
 *
 * Reading and writing are flow-controlled independently: the writer waits for `drain` and for its body
 * source, the reader pauses the socket when the consumer of the response body is slow. A final response
 * may arrive at any time, even while the body is being written (an early verdict or error): the writer
 * stops and the answer stands. A write that fails before the answer was read (the server answered, then
 * closed without reading the rest) ends only the sending; its error is reported only when no complete
 * answer came. The connection is reused only when request and answer were read to their ends, nothing
 * followed the answer, a body returned is the one sent byte for byte (else it may be an echo the
 * upload's own bytes ended early: echo.ts), and `keepsConnection` allows it.
 */

type WriteState = 'head' | 'preview' | 'awaiting-continue' | 'rest' | 'finished' | 'stopped';

const NOT_READY = Symbol('not-ready');
const STOP = Symbol('stop');
const FAILED = Symbol('failed');
/** Buffered output is flushed to the socket when it grows past this. */
const FLUSH_AT = 256 * 1024;
const NOTHING = Buffer.alloc(0);

/** Where a transaction hands its connection back (the pool). */
export interface ConnectionReturn {
  release(connection: Connection, reusable: boolean): void;
}

/** Owner of its connection's socket events while it runs (SocketOwner), handler of its parser's: no closures. */
export class Transaction implements SocketOwner, ParserHandler<IcapResponseHead> {
  readonly #conn: Connection;
  readonly #reusedConnection: boolean;
  readonly #req: TransactionRequest;
  readonly #opts: TransactionOptions;
  readonly #return: ConnectionReturn;
  readonly #parser: IcapParser<IcapResponseHead>;

  readonly #response = deferred<IcapResponse>();
  readonly #done = deferred<TransactionSummary>();
  /** The server's answer to a preview (true: 100 Continue); only for a request with a preview. */
  readonly #continue: Deferred<boolean> | null;

  #writeState: WriteState = 'head';
  /** The request message on the wire ends with a last-chunk (or had no body). */
  #terminated = false;
  #ieofSent = false;
  #stopped = false;
  /** Ends the writer's current wait (see #waitPulled, #drain). */
  #interrupt: (() => void) | null = null;
  /** Ends the wait for the pending body chunk (see #waitPulled). */
  #wake: (() => void) | null = null;
  #finished = false;
  #responseResolved = false;
  #receivedAny = false;
  #pausedForBody = false;
  /** The writer waits for its body source: the server has all it was sent, the stall is not its own. */
  #awaitingSource = false;
  #body: AnswerBody | null = null;
  #finalHead: IcapResponseHead | null = null;
  /** The server's 100 Continue head(s), kept: a threat named there blocks (IcapResponse.continueHead). */
  #continueHead: IcapReceivedHead | null = null;
  #interims = 0;
  #goAhead = false;
  #iterator: AsyncIterator<Uint8Array> | null = null;
  /** Writing failed (EPIPE, ECONNRESET: the server may have answered; see the class comment). */
  #writeError: Error | undefined;
  /** Undoes the hook that keeps the socket reading after a write error. */
  #unhookWriteError: (() => void) | undefined;
  /** What the body source's pending next() gave, when it gave it (see #pull). */
  #pulled: IteratorResult<Uint8Array> | typeof NOT_READY | typeof FAILED = NOT_READY;
  #pullError: unknown = undefined;
  #out: Buffer[] = [];
  #outBytes = 0;
  #bytesSent = 0;
  #bytesReceived = 0;
  /** Whether a body returned is the one sent (the connection is kept only then: echo.ts). */
  readonly #echo: EchoCheck;
  #startedAt = 0;
  #startedHr = 0;
  #lastByteHr = 0;

  constructor(
    conn: Connection,
    reusedConnection: boolean,
    req: TransactionRequest,
    opts: TransactionOptions,
    connectionReturn: ConnectionReturn,
  ) {
    this.#conn = conn;
    this.#reusedConnection = reusedConnection;
    this.#req = req;
    this.#echo = new EchoCheck(req.echoHold);
    this.#opts = opts;
    this.#return = connectionReturn;
    // (Not #response: run(), called right after construction, hands it to a caller who awaits it.)
    this.#done.promise.catch(noop);
    this.#continue = req.preview === undefined ? null : deferred<boolean>();
    this.#continue?.promise.catch(noop);
    this.#parser = new IcapParser<IcapResponseHead>('response', this, { maxHeaderSize: opts.maxHeaderSize });
  }

  /** The whole HTTP body has been sent (or there was none). */
  get completeBodySent(): boolean {
    return this.#req.body === null || this.#writeState === 'finished';
  }

  /** Any response byte arrived (a failure after that is never retried). */
  get receivedAny(): boolean {
    return this.#receivedAny;
  }

  /** Starts the exchange; resolves with the final response head. */
  run(): Promise<IcapResponse> {
    const s = this.#conn.socket;
    if (this.#opts.signal.aborted) {
      this.#fail(abortReason(this.#opts.signal, this.#opts.abortWhat));
      return this.#response.promise;
    }
    this.#conn.setOwner(this);
    s.setTimeout(this.#opts.ioTimeout);
    s.resume();
    this.#opts.signal.addEventListener('abort', this.#onAbort);
    this.#write().catch((err: unknown) => {
      this.#fail(asIcapError(err, IcapErrorCodes.BODY_SOURCE, 'reading the body to scan failed'));
    });
    return this.#response.promise;
  }

  // ---------------------------------------------------------------- writing

  async #write(): Promise<void> {
    const req = this.#req;
    this.#startedAt = Date.now();
    this.#startedHr = performance.now();
    this.#queue(req.head);
    if (req.body === null) {
      this.#terminated = true;
      this.#writeState = 'finished';
      const f = this.#flush();
      if (f !== true && f !== false) await f;
      return;
    }
    const it = req.body.open();
    this.#iterator = it;
    let carry: Buffer | null = null;
    if (req.preview !== undefined) {
      this.#writeState = 'preview';
      const preview = req.preview;
      let sent = 0;
      let ended = false;
      // Read until the preview is full and one more byte is known to exist, or the body ends.
      while (carry === null) {
        const r = (this.#stopped ? undefined : takeNow(it)) ?? (await this.#pull(it));
        if (r === STOP) return;
        if (r.done) {
          ended = true;
          break;
        }
        let chunk = asBuffer(r.value);
        const room = preview - sent;
        if (chunk.length > room) {
          carry = chunk.subarray(room);
          chunk = chunk.subarray(0, room);
        }
        if (chunk.length > 0) {
          this.#queueChunk(chunk);
          sent += chunk.length;
        }
      }
      this.#terminated = true;
      if (ended) {
        this.#ieofSent = true;
        this.#writeState = 'finished';
        this.#queue(LAST_CHUNK_IEOF);
        const f = this.#flush();
        if (f !== true && f !== false) await f;
        this.#closeIterator();
        return;
      }
      this.#writeState = 'awaiting-continue';
      this.#queue(LAST_CHUNK);
      if (!(await this.#flush())) return;
      const go = await this.#continue!.promise;
      if (!go || this.#stopped) return;
      this.#terminated = false;
      this.#writeState = 'rest';
      if (carry !== null && carry.length > 0) this.#queueChunk(carry);
    } else {
      this.#writeState = 'rest';
    }
    for (;;) {
      const r = (this.#stopped ? undefined : takeNow(it)) ?? (await this.#pull(it));
      if (r === STOP) return;
      if (r.done) break;
      const chunk = asBuffer(r.value);
      if (chunk.length > 0) this.#queueChunk(chunk);
      if (this.#outBytes >= FLUSH_AT) {
        let f = this.#flush();
        if (f !== true && f !== false) f = await f;
        if (!f) return;
      }
    }
    this.#terminated = true;
    this.#writeState = 'finished';
    this.#queue(LAST_CHUNK);
    const f = this.#flush();
    if (f !== true && f !== false) await f;
    this.#closeIterator();
  }

  /**
   * The next body chunk. Output gathered so far stays corked while the source has data ready
   * (so head, chunks and the last-chunk leave in one write); it is flushed before waiting.
   */
  async #pull(it: AsyncIterator<Uint8Array>): Promise<IteratorResult<Uint8Array> | typeof STOP> {
    if (this.#stopped) return STOP;
    const p = it.next();
    // Whether the chunk is there already: a reaction on `p` queued before the await's runs first
    // when `p` is settled (a Promise.race without its array); it also ends the waits (#wake).
    this.#pulled = NOT_READY;
    // The reactions are made at the first wait (a body read through NEXT_NOW never waits).
    this.#onPulled ??= (r: IteratorResult<Uint8Array>): void => {
      this.#pulled = r;
      this.#wake?.();
    };
    this.#onPullFailed ??= (err: unknown): void => {
      this.#pulled = FAILED;
      this.#pullError = err;
      this.#wake?.();
    };
    p.then(this.#onPulled, this.#onPullFailed);
    await undefined;
    // The next bytes are often one turn away (Node hands a request body over on the tick after
    // its head): wait that turn (or less), so head, chunks and last chunk leave in one write.
    if (this.#pulled === NOT_READY && this.#outBytes > 0) await this.#waitPulled(true);
    if (this.#pulled === NOT_READY) {
      let f = this.#flush();
      if (f !== true && f !== false) f = await f;
      if (!f) return STOP;
      if (this.#pulled === NOT_READY) {
        this.#awaitingSource = true;
        // Ends when the chunk comes, or when the writer is stopped (#interrupt).
        await this.#waitPulled(false);
        this.#awaitingSource = false;
      }
    }
    // (A cast: TypeScript keeps the NOT_READY assigned above, not knowing the reaction ran.)
    const r = this.#pulled as IteratorResult<Uint8Array> | typeof NOT_READY | typeof FAILED;
    this.#pulled = NOT_READY;
    if (r === FAILED) {
      const err = this.#pullError;
      this.#pullError = undefined;
      throw err;
    }
    if (this.#stopped || r === NOT_READY) return STOP;
    return r;
  }

  /** The reactions to the pending next() (see #pull). */
  #onPulled: ((r: IteratorResult<Uint8Array>) => void) | null = null;
  #onPullFailed: ((err: unknown) => void) | null = null;

  /**
   * Until the pending chunk comes (#onPulled), the writer is stopped or (`turn`) the loop's turn
   * ends. Not a race with a promise that lives as long as the transaction: each wait would leave
   * a reaction there holding its result (a body chunk) until the transaction ends.
   */
  #waitPulled(turn: boolean): Promise<void> {
    if (this.#stopped) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const wake = () => {
        if (this.#wake === wake) this.#wake = null;
        if (this.#interrupt === wake) this.#interrupt = null;
        resolve();
      };
      this.#wake = wake;
      if (turn) setImmediate(wake);
      else this.#interrupt = wake;
    });
  }

  #queue(b: Buffer): void {
    this.#out.push(b);
    this.#outBytes += b.length;
  }

  #queueChunk(b: Buffer): void {
    this.#echo.sent(b);
    this.#queue(chunkHeader(b.length));
    this.#queue(b);
    this.#queue(CRLF);
  }

  /**
   * Writes the gathered output; when the socket asks, a promise that waits for `drain`.
   * False (or a promise of false) when stopped.
   */
  #flush(): boolean | Promise<boolean> {
    if (this.#stopped) return false;
    const s = this.#conn.socket;
    if (this.#out.length > 0) {
      writeBatch(s, this.#out, this.#outBytes, this.#onWritten);
      this.#bytesSent += this.#outBytes;
      this.#out = [];
      this.#outBytes = 0;
    }
    if (s.writableNeedDrain) return this.#drain();
    return !this.#stopped;
  }

  /** Waits for `drain`, or for the writer to be stopped; true when writing may go on. */
  #drain(): Promise<boolean> {
    if (this.#stopped) return Promise.resolve(false);
    const s = this.#conn.socket;
    return new Promise<boolean>((resolve) => {
      const done = () => {
        s.removeListener('drain', done);
        if (this.#interrupt === done) this.#interrupt = null;
        resolve(!this.#stopped);
      };
      this.#interrupt = done;
      s.on('drain', done);
    });
  }

  /**
   * A write's callback. Node destroys a socket whose write failed, right after this callback,
   * and destroying it drops whatever the server sent that was not read yet: the answer of a
   * server that replied early and closed. So the socket is kept and reads on (see
   * write-error.ts); only the request side is over.
   */
  readonly #onWritten = (err?: Error | null): void => {
    if (err === undefined || err === null || this.#writeError !== undefined || this.#finished) return;
    const s = this.#conn.socket;
    if (s.destroyed) return;
    this.#writeError = err;
    this.#unhookWriteError = keepReadingAfterWriteError(s, err);
    this.#stopWriting();
  };

  #stopWriting(): void {
    if (this.#stopped) return;
    this.#stopped = true;
    if (this.#writeState !== 'finished') this.#writeState = 'stopped';
    this.#interrupt?.();
    this.#continue?.resolve(false);
    this.#closeIterator();
  }

  #closeIterator(): void {
    const it = this.#iterator;
    this.#iterator = null;
    if (it !== null) closeIterator(it);
  }

  // ---------------------------------------------------------------- reading

  /** The parser's events (ParserHandler): a head, body data (onHead, onBody below), the end. */
  onEnd(): void {
    this.#onEnd();
  }

  socketData(buf: Buffer): void {
    this.#bytesReceived += buf.length;
    addHeard(this.#opts.heard, buf.length);
    this.#receivedAny = true;
    this.#lastByteHr = performance.now();
    try {
      this.#parser.execute(buf);
    } catch (err) {
      // What followed a head that broke a rule, or a broken body, goes with the error.
      const after = this.#finished ? null : afterFailure(this.#responseResolved, err, buf, this.#parser);
      if (after !== null) this.#stopWriting();
      failAfterHead(err, after, this.#conn, this.#opts, (e) => this.#fail(e));
    }
  }

  onHead(head: IcapResponseHead): void {
    if (isInterim(head.status)) {
      // Any 1xx but 101 (RFC 9110 §15.2), kept with fields (a threat there is one): 64 bare, 8 fielded.
      const fielded = head.headers.size > 0;
      if (fielded) this.#continueHead = keepInterim(head, this.#continueHead);
      this.#interims = countInterim(this.#interims, fielded);
      // A go-ahead (a 100 only) before the preview's end counts; one nobody waits for is read past.
      const state = this.#writeState;
      const waiting = head.status === 100 && (state === 'awaiting-continue' || state === 'preview');
      if (this.#writeError !== undefined || !waiting || this.#continue === null || this.#goAhead) return;
      this.#goAhead = true;
      this.#req.onContinue?.();
      this.#continue.resolve(true);
      return;
    }
    try {
      this.#onFinalHead(head);
    } catch (err) {
      // The head was read whole: it goes with the error, so a verdict in it is not lost.
      throw withReceivedHead(err, head);
    }
  }

  #onFinalHead(head: IcapResponseHead): void {
    const req = this.#req;
    const previewPhase =
      req.preview !== undefined &&
      (this.#ieofSent ||
        (!this.#goAhead && (this.#writeState === 'preview' || this.#writeState === 'awaiting-continue')));
    const ignoreBody = checkFinalHead(req, head, previewPhase);
    this.#finalHead = head;
    // A 200/201 streaming back the adapted message may come before the server read the whole
    // request (a streaming echo): it needs the rest, so sending goes on; any other answer ends it.
    const adaptedBody = req.method === 'RESPMOD' ? 'res-body' : 'req-body';
    const keepSending = (head.status === 200 || head.status === 201) && head.body === adaptedBody;
    if (!keepSending) this.#stopWriting();
    if (head.body !== null && !ignoreBody) {
      const socket = this.#conn.socket;
      this.#body = new AnswerBody(
        () => {
          if (this.#pausedForBody) {
            this.#pausedForBody = false;
            holdHeard(this.#opts.heard, false);
            if (!this.#finished) socket.resume();
          }
        },
        (err) => {
          // The consumer stopped reading (destroy, a break out of for await, a sink abandoned).
          if (!this.#finished) this.#fail(err);
        },
      );
    }
    this.#responseResolved = true;
    this.#response.resolve(
      finalResponse(
        head,
        req,
        this.#body,
        this,
        previewPhase,
        connectionInfo(this.#conn, this.#reusedConnection),
        this.#done.promise,
        this.#continueHead,
      ),
    );
    if (ignoreBody) this.#onEnd(true);
  }

  onBody(data: Buffer): void {
    const body = this.#body;
    if (body === null || this.#finished) return;
    this.#echo.read(data);
    if (!body.push(data) && !this.#pausedForBody) {
      this.#pausedForBody = true;
      this.#conn.socket.pause();
      holdHeard(this.#opts.heard, true);
    }
  }

  #onEnd(forceClose = false): void {
    const head = this.#finalHead;
    if (head === null || this.#finished) return;
    this.#finished = true;
    // The response is complete: anything of the request not yet sent will not be read.
    this.#stopWriting();
    // A body not read (an error's that does not fit), or a 5xx (quietWait): the real answer may follow.
    const stray = forceClose ? (this.#parser.bytesAfterHead() ?? NOTHING) : this.#parser.leftoverBytes();
    const after = stray ?? quietWait(head.status, this.#req);
    afterAnswer(after, this.#conn, this.#opts, (all) => this.#settle(head, all, forceClose));
  }

  /** The exchange is over: the summary, the connection back to the pool. */
  #settle(head: IcapResponseHead, stray: Buffer | null, forceClose: boolean): void {
    const conn = this.#conn;
    const trailer = this.#parser.trailer();
    const reusable =
      !forceClose &&
      this.#terminated &&
      (this.#writeState === 'finished' || this.#writeState === 'stopped') &&
      stray === null &&
      (this.#body === null || this.#echo.echoed) &&
      keepsConnection(this.#req, head, trailer, this.#continueHead) &&
      conn.usable;
    this.#cleanup();
    this.#body?.end();
    const end = this.#lastByteHr || performance.now();
    this.#done.resolve({
      bytesSent: this.#bytesSent,
      bytesReceived: this.#bytesReceived,
      startedAt: this.#startedAt,
      latencyMs: Math.max(0, end - this.#startedHr),
      reused: reusable,
      trailer: trailer === null ? undefined : trailerHead(head.status, head.reason, trailer),
      stray: stray === null ? undefined : salvageHeads(stray),
    });
    this.#return.release(conn, reusable);
  }

  // ---------------------------------------------------------------- failure

  socketEnd(): void {
    this.#fail(this.#writeFailure() ?? this.#closedError());
  }

  socketClose(): void {
    this.#fail(this.#writeFailure() ?? this.#closedError());
  }

  /** A failed write, as the error for an exchange that then ended without a complete answer. */
  #writeFailure(): IcapError | undefined {
    return this.#writeError && fromSocketError(this.#writeError, 'io', this.#conn.label);
  }

  socketError(err: Error): void {
    // After a failed write, the read error (the reset that made it fail) says less than it.
    this.#fail(this.#writeFailure() ?? fromSocketError(err, 'io', this.#conn.label));
  }

  socketTimeout(): void {
    // Idle because our side is slow (the reader, the body's source): not the server's fault (the
    // engine's bodyTimeout bounds it). What came while the process stalled is read first (deadline.ts).
    if (this.#pausedForBody || this.#awaitingSource) return;
    const seen = this.#bytesReceived;
    const idle = () => this.#fail(idleError(this.#conn.label, this.#opts.ioTimeout));
    actAfterReading(this.#opts.ioTimeout, () => this.#bytesReceived !== seen, idle);
  }

  readonly #onAbort = (): void => {
    // A wait for what followed settles first with what it kept (campaign-as AS4, AS9).
    const owner = this.#conn.owner;
    if (owner instanceof StrayWait) owner.settleNow();
    this.#fail(abortReason(this.#opts.signal, this.#opts.abortWhat));
  };

  #closedError(): IcapError {
    const duringPreview =
      !this.#receivedAny && this.#writeState !== 'finished' && this.#req.preview !== undefined;
    return closedError(this.#conn.label, this.#receivedAny, duringPreview);
  }

  #fail(err: unknown): void {
    if (this.#finished) return;
    this.#finished = true;
    let error = asIcapError(err, IcapErrorCodes.PROTOCOL, 'ICAP transaction failed');
    // What came of an answer not received whole (a head or trailer cut off, the 100 before it,
    // the body it broke off in) goes with the error: a threat named there is not lost.
    const cut = error.head ?? this.#parser.receivedHead();
    const resolved = this.#responseResolved;
    error = withReceivedHead(error, resolved ? cut : receivedAnswer(cut, this.#continueHead), !resolved);
    if (resolved) error = strayInChunk(error, this.#parser);
    this.#stopWriting();
    this.#parser.close();
    this.#cleanup();
    this.#conn.destroy();
    if (this.#responseResolved) this.#body?.fail(error);
    else this.#response.reject(error);
    this.#done.reject(error);
    this.#return.release(this.#conn, false);
  }

  #cleanup(): void {
    if (this.#conn.owner === this) this.#conn.setOwner(null);
    this.#echo.clear();
    // ioTimeout's timer stays (no setTimeout(0)): destroyed next, or replaced by the pool's
    // keepAliveTimeout or the next ioTimeout; a 'timeout' until then reaches no owner.
    this.#unhookWriteError?.();
    this.#unhookWriteError = undefined;
    this.#opts.signal.removeEventListener('abort', this.#onAbort);
    this.#stopWriting();
  }
}
