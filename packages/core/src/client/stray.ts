/**
 * What a server sends after an answer that broke off or broke a rule, or after a whole answer:
 * ICAP has one exchange at a time on a connection, so those bytes are about this exchange (a
 * block after a 204, the real answer after a broken one), and a threat they name must not be
 * lost. They are only ever read for a threat, never to pass anything.
 */
import type { IcapParser, IcapResponseHead } from '../protocol/parser.js';
import { lenientText, salvageHeads, withStray } from '../protocol/salvage.js';
import type { Connection, SocketOwner } from './connection.js';

/** The bounds of a wait: the transaction's. */
interface WaitOptions {
  maxHeaderSize: number;
  ioTimeout: number;
}

/**
 * An exchange failed with `err`: what the server sent after the failure (`after`, the rest of
 * that read, and what the next reads bring within StrayWait's wait) goes with the error as
 * `stray`, read for a threat only. A server's real answer after a broken or interim head, or
 * after a body that broke its framing (`afterBody`), names its verdict, in the same read or a
 * later one: the wait is for the answer's first bytes too (a failure only, so the wait delays
 * failing exchanges alone). `fail` gets the error, at once (`after` null: nothing can follow)
 * or after the wait.
 */
export function failAfterHead(
  err: unknown,
  after: Buffer | null,
  conn: Connection,
  opts: WaitOptions,
  fail: (err: unknown) => void,
  afterBody = false,
): void {
  if (after === null) {
    fail(err);
    return;
  }
  const settle = (all: Buffer) => fail(withStray(err, salvageHeads(all)));
  if (afterBody) StrayWait.sieve(after, conn, opts, settle);
  else if (!StrayWait.after(after, conn, opts, settle)) settle(after);
}

/**
 * What may follow a failure (`err`) in the bytes it came in: after a head that broke a rule,
 * the rest of the read (the parser knows where the head ended); after a body that broke its
 * framing (a chunk-size line that is not one, a chunk longer than its size), the bytes from
 * where it broke, those the parser held from earlier reads included. What came before that
 * point is the answer's body, which may be the upload's own bytes echoed: never searched for
 * an answer (campaign-ar AR1, AR3).
 */
export function afterFailure(
  resolved: boolean,
  err: unknown,
  read: Buffer,
  parser: IcapParser<IcapResponseHead>,
): Buffer | null {
  if (!resolved) return parser.bytesAfterHead();
  return parser.bytesAfterFailure(err) ?? read;
}

/** Longest wait for the rest of what followed an answer (capped by the transaction's ioTimeout). */
const STRAY_WAIT_MS = 250;

/** What a wait keeps of the bytes it reads; `add` says whether the wait is over. */
interface Gather {
  add(data: Buffer): boolean;
  all(): Buffer;
}

/**
 * The wait for what follows an answer on its connection. TCP may split it anywhere, even inside
 * the line naming the threat, and the salvage reads complete lines only: so the exchange waits
 * until what it gathers is complete (see WholeHead, HeadSieve), the connection's end (or
 * error, or ioTimeout), or a few hundred ms, whichever comes first, then hands `settle` what
 * it kept. It owns the connection's events meanwhile; the connection is never reused after
 * bytes followed an answer.
 */
export class StrayWait implements SocketOwner {
  readonly #conn: Connection;
  readonly #gather: Gather;
  #timer: NodeJS.Timeout | null;
  readonly #settle: (stray: Buffer) => void;

  /**
   * Starts waiting for the rest of `stray` (what followed the answer, or null; empty: nothing yet,
   * the wait is for a head's first bytes too); false when there is nothing to wait for (then
   * nothing is made: no timer, no object, in the usual exchange): null, or the head is whole
   * already, or too large.
   */
  static after(
    stray: Buffer | null,
    conn: Connection,
    opts: WaitOptions,
    settle: (stray: Buffer) => void,
  ): boolean {
    if (stray === null || stray.length >= opts.maxHeaderSize || strayHeadEnded(stray)) return false;
    new StrayWait(conn, new WholeHead(stray, opts.maxHeaderSize), opts, settle);
    return true;
  }

  /**
   * Waits after a body that broke its framing (`rest`: the bytes from where it broke): what
   * follows may be the rest of the upload echoed, then the server's answer, so no head ends
   * the wait; the ICAP heads in it are kept (HeadSieve) until the bound or the connection's end.
   */
  static sieve(rest: Buffer, conn: Connection, opts: WaitOptions, settle: (stray: Buffer) => void): void {
    const sieve = new HeadSieve(opts.maxHeaderSize);
    sieve.add(rest);
    new StrayWait(conn, sieve, opts, settle);
  }

  private constructor(conn: Connection, gather: Gather, opts: WaitOptions, settle: (stray: Buffer) => void) {
    this.#conn = conn;
    this.#gather = gather;
    this.#settle = settle;
    // When the wait is up, the socket is read once more before settling (setImmediate runs
    // after the event loop's poll phase): a process stalled past the wait (a busy machine)
    // finds there what arrived meanwhile, instead of settling before reading it.
    const ms = Math.min(STRAY_WAIT_MS, opts.ioTimeout);
    this.#timer = setTimeout(() => setImmediate(() => this.#end()), ms);
    conn.setOwner(this);
    // It reads on, whoever paused the socket for the body's reader (the body has all it gets).
    conn.socket.resume();
  }

  socketData(data: Buffer): void {
    if (this.#timer !== null && this.#gather.add(data)) this.#end();
  }

  socketEnd(): void {
    this.#end();
  }
  socketClose(): void {
    this.#end();
  }
  socketError(): void {
    this.#end();
  }
  socketTimeout(): void {
    this.#end();
  }

  /** Settles with what was kept (once). */
  #end(): void {
    if (this.#timer === null) return;
    clearTimeout(this.#timer);
    this.#timer = null;
    if (this.#conn.owner === this) this.#conn.setOwner(null);
    this.#settle(this.#gather.all());
  }
}

/**
 * The bytes after an answer or a head, kept until the head they start is whole (a blank line,
 * see strayHeadEnded) or `maxHeaderSize` bytes.
 */
class WholeHead implements Gather {
  #buf: Buffer;
  readonly #max: number;

  constructor(first: Buffer, max: number) {
    this.#buf = Buffer.from(first);
    this.#max = max;
  }

  add(data: Buffer): boolean {
    this.#buf = Buffer.concat([this.#buf, data]);
    return this.#buf.length >= this.#max || strayHeadEnded(this.#buf);
  }

  all(): Buffer {
    return this.#buf;
  }
}

/**
 * Whether `b` holds a whole final ICAP head: a blank line after an ICAP status line that is not
 * an interim one (any line end: CRLF, LF, bare CRs), the empty lines before it skipped as the
 * parser skips them (a stray CRLF is no answer yet). Other heads before it are waited past: a
 * `1xx` head (a 100 Continue, then the answer), and anything that is no ICAP head, such as the
 * encapsulated HTTP head of a refused answer, which is not the answer that may follow it
 * (campaign-aq AQ3).
 */
function strayHeadEnded(b: Buffer): boolean {
  const text = lenientText(b);
  let at = 0;
  for (;;) {
    while (text.charCodeAt(at) === 0x0a) at++;
    const end = text.indexOf('\n\n', at);
    if (end === -1) return false;
    if (FINAL.test(text.slice(at, end))) return true;
    at = end + 2;
  }
}

/** The start line of a final (not 1xx) ICAP head. */
const FINAL = /^\s*ICAP\/\d+(?:\.\d+)?[ \t]+(?!1\d\d(?![0-9]))\d{3}(?![0-9])/i;

const EMPTY = Buffer.alloc(0);
const SEPARATOR = Buffer.from('\r\n\r\n', 'latin1');
/** `ICAP/`: what a head's first line starts with. */
const START = 'ICAP/';

/**
 * The ICAP heads in what follows a body that broke its framing. Those bytes may be the rest of
 * the upload echoed (any bytes an attacker chose, heads shaped like a clean answer, megabytes of
 * them) before the server's answer, or after it: so nothing ends the wait early, and only heads
 * are kept, each from a line starting `ICAP/` to its blank line, the next such line or
 * `maxHeaderSize` bytes; of them the first and the last `maxHeaderSize` bytes' worth (the
 * answer the server sent after a broken echo comes last; one it sent before echoing on, first).
 * Memory is bounded whatever the bytes; the time by the wait (campaign-ar AR1, AR4).
 */
export class HeadSieve implements Gather {
  readonly #max: number;
  readonly #first: Buffer[] = [];
  #firstBytes = 0;
  #firstFull = false;
  #last: Buffer[] = [];
  #lastBytes = 0;
  /** The head being read (from its `ICAP/`), copied; null: between heads. */
  #head: Buffer | null = null;
  /** Between heads: the last bytes read, for a line start and an `ICAP/` split between reads. */
  #carry: Buffer = EMPTY;
  /** Nothing read yet: the first byte starts a line (where the body broke off). */
  #atStart = true;

  constructor(max: number) {
    this.#max = max;
  }

  add(data: Buffer): false {
    const buf =
      this.#head !== null || this.#carry.length > 0 ? Buffer.concat([this.#head ?? this.#carry, data]) : data;
    let at = -1;
    let from = 0;
    if (this.#head !== null) {
      at = 0;
      from = this.#head.length;
    }
    for (;;) {
      if (at === -1) {
        at = headStart(buf, from, this.#atStart);
        if (at === -1) {
          // What is carried is still the very first bytes while fewer than `ICAP/` came.
          this.#atStart &&= buf.length < START.length;
          this.#head = null;
          this.#carry = Buffer.from(buf.subarray(Math.max(0, buf.length - START.length)));
          return false;
        }
        this.#atStart = false;
        from = at + START.length;
      }
      // The head from `at` ends after its blank line, where the next one starts, or max bytes on.
      const blank = blankLineEnd(buf, Math.max(at, from - 3));
      const next = headStart(buf, Math.max(at + 1, from - START.length), false);
      let end = blank === -1 ? next : next === -1 ? blank : Math.min(blank, next);
      if (end === -1 && buf.length - at < this.#max) {
        this.#head = Buffer.from(buf.subarray(at));
        this.#carry = EMPTY;
        return false;
      }
      if (end === -1 || end - at > this.#max) end = at + this.#max;
      this.#keep(Buffer.from(buf.subarray(at, end)));
      at = -1;
      from = end;
    }
  }

  #keep(head: Buffer): void {
    if (!this.#firstFull && this.#firstBytes + head.length <= this.#max) {
      this.#first.push(head);
      this.#firstBytes += head.length;
      return;
    }
    this.#firstFull = true;
    this.#last.push(head);
    this.#lastBytes += head.length;
    let drop = 0;
    while (this.#lastBytes > this.#max && drop < this.#last.length - 1) {
      this.#lastBytes -= this.#last[drop]!.length;
      drop++;
    }
    if (drop > 0) this.#last = this.#last.slice(drop);
  }

  /** The heads kept, each ended by a blank line (read as heads of their own), the one cut short last. */
  all(): Buffer {
    const parts: Buffer[] = [];
    for (const head of [...this.#first, ...this.#last]) parts.push(head, SEPARATOR);
    if (this.#head !== null) parts.push(this.#head);
    return Buffer.concat(parts);
  }
}

/** Where the first `ICAP/` at a line start is in `buf` from `from` (`atStart`: index 0 starts a line), or -1. */
function headStart(buf: Buffer, from: number, atStart: boolean): number {
  for (let k = buf.indexOf(START, from, 'latin1'); k !== -1; k = buf.indexOf(START, k + 1, 'latin1')) {
    if (k === 0 ? atStart : buf[k - 1] === 0x0a || buf[k - 1] === 0x0d) return k;
  }
  return -1;
}

/** The index after the first blank line (`\n\n` or `\n\r\n`) in `buf` from `from`, or -1. */
function blankLineEnd(buf: Buffer, from: number): number {
  const lf = buf.indexOf('\n\n', from, 'latin1');
  const crlf = buf.indexOf('\n\r\n', from, 'latin1');
  if (lf === -1) return crlf === -1 ? -1 : crlf + 3;
  return crlf === -1 || lf < crlf ? lf + 2 : crlf + 3;
}
