/**
 * What a server sends after an answer that broke off or broke a rule, or after a whole answer:
 * ICAP has one exchange at a time on a connection, so those bytes are about this exchange (a
 * block after a 204, the real answer after a broken one), and a threat they name must not be
 * lost. They are only ever read for a threat, never to pass anything.
 */
import type { IcapReceivedHead } from '../errors.js';
import type { IcapParser, IcapResponseHead } from '../protocol/parser.js';
import { salvageHeads, salvageReading, withStray } from '../protocol/salvage.js';
import type { Connection, SocketOwner } from './connection.js';
import { addHeard, type Heard } from './deadline.js';
import { mayName } from './reuse.js';

/** The bounds of a wait: the transaction's. */
interface WaitOptions {
  maxHeaderSize: number;
  ioTimeout: number;
  /** Where the bytes read are counted (IcapRequestOptions.heard). */
  heard?: Heard | undefined;
  /** Bytes came while waiting (the caller's watch of the exchange's progress). */
  onStray?: ((bytes: number) => void) | undefined;
  /** The caller's reading of a head that followed (IcapRequestOptions.strayBlocks). */
  strayBlocks?: ((head: IcapReceivedHead) => boolean) | undefined;
}

/**
 * An exchange failed with `err`: what the server sent after the failure (`after`, the rest of
 * that read, and what the next reads bring within StrayWait's wait) goes with the error as
 * `stray`, read for a threat only: a server's real answer after a broken or interim head, or
 * after a body that broke its framing, names its verdict, in the same read or a later one, and
 * the bytes before it may be the upload's own (HeadSieve). The wait delays failing exchanges
 * alone. `fail` gets the error, at once (`after` null: nothing can follow) or after the wait.
 */
export function failAfterHead(
  err: unknown,
  after: Buffer | null,
  conn: Connection,
  opts: WaitOptions,
  fail: (err: unknown) => void,
): void {
  if (after === null) fail(err);
  else StrayWait.sieve(after, conn, opts, (all) => fail(withStray(err, salvageHeads(all))), true);
}

/**
 * What may follow a failure (`err`) in the bytes it came in: after a head that broke a rule,
 * the rest of the read (the parser knows where the head ended), or the head itself when it was
 * too large; after a body that broke its framing (a chunk-size line that is not one, a chunk
 * longer than its size), the bytes from where it broke, those the parser held from earlier
 * reads and the end of the chunk just read included (the answer's first bytes may have been
 * taken for the rest of a short chunk: campaign-as AS1).
 */
export function afterFailure(
  resolved: boolean,
  err: unknown,
  read: Buffer,
  parser: IcapParser<IcapResponseHead>,
): Buffer | null {
  if (!resolved) return parser.bytesAfterHead() ?? parser.bytesAfterFailure(err);
  return parser.bytesAfterFailure(err) ?? read;
}

/**
 * After a whole answer, what followed it on the connection (`stray`, or null: nothing), then
 * `settle` with all that was read of it. Bytes after an answer are never the usual exchange:
 * they may be the server's real verdict (a block after a 204) or the upload's own bytes (an echo
 * the server miscounted, or the upload written back after a bodyless answer, whose bytes may hold
 * a whole clean head: campaign-ax AX5), so no head ends the wait, with or without a body
 * (campaign-as AS7, AS10): the sieve keeps what may name a threat until the connection is quiet,
 * ends, or the caller's reading finds a block.
 */
export function afterAnswer(
  stray: Buffer | null,
  conn: Connection,
  opts: WaitOptions,
  settle: (stray: Buffer | null) => void,
): void {
  if (stray === null) settle(null);
  else StrayWait.sieve(stray, conn, opts, settle, false);
}

const NOTHING = Buffer.alloc(0);

/**
 * What to wait on after a whole answer after which nothing came (afterAnswer's `stray`): after a
 * 5xx, when the caller asked (IcapRequestOptions.waitAfterServerError: it would pass the message
 * on it), nothing yet, so that the wait reads what follows (the server's real verdict after an
 * error: campaign-bs BS5), as after a broken answer; else null (no wait).
 */
export function quietWait(
  status: number,
  req: { waitAfterServerError?: boolean | undefined },
): Buffer | null {
  return status >= 500 && req.waitAfterServerError === true ? NOTHING : null;
}

/**
 * `err` with the heads in the last body data read when the answer broke off in its chunked body
 * (the connection closed, went idle, the exchange was aborted): the server's answer may be what
 * was read as a chunk's data (a chunk longer than what was sent; campaign-as AS3, campaign-at AT2).
 */
export function strayInChunk<E>(err: E, parser: IcapParser<IcapResponseHead>): E {
  const data = parser.inChunks ? parser.receivedData() : null;
  return data === null ? err : withStray(err, salvageHeads(data));
}

/** Longest wait for the rest of what followed an answer (capped by the transaction's ioTimeout). */
const STRAY_WAIT_MS = 250;
/** A failure's wait goes on while bytes come, up to this many times its idle bound in all. */
const SIEVE_WAITS = 120;

/**
 * The wait for what follows an answer or a failure on its connection. TCP may split it anywhere,
 * even inside the line naming the threat, and the salvage reads complete lines only: so the
 * exchange waits (HeadSieve keeping what may name a threat) until the connection has been quiet
 * for a few hundred ms, or a head the caller blocks by came; or the connection's end (or error, or
 * ioTimeout), or the transaction's abort (`settleNow`), whichever comes first, then hands
 * `settle` what it kept. It owns the connection's events meanwhile; the connection is never
 * reused after bytes followed an answer.
 */
export class StrayWait implements SocketOwner {
  readonly #conn: Connection;
  /** What the wait keeps of the bytes it reads. */
  readonly #gather: HeadSieve;
  #timer: NodeJS.Timeout | null;
  /** After a failure: the time after which bytes no longer extend the wait (0: they never do). */
  readonly #until: number;
  readonly #onStray: ((bytes: number) => void) | undefined;
  readonly #heard: Heard | undefined;
  /** Reads so far (see the timer). */
  #reads = 0;
  readonly #settle: (stray: Buffer) => void;

  /**
   * Waits after a failure, or after an answer (`rest`: the bytes from where it broke off or
   * ended): what follows may be the rest of the upload echoed, then the
   * server's answer, so no head ends the wait; the heads that may name a threat are kept
   * (HeadSieve) until the connection is quiet, ends, or the transaction is aborted.
   */
  static sieve(
    rest: Buffer,
    conn: Connection,
    opts: WaitOptions,
    settle: (stray: Buffer) => void,
    extend: boolean,
  ): void {
    const sieve = new HeadSieve(opts.maxHeaderSize, opts.strayBlocks);
    // A head the caller reads as a block ends the wait (nothing after it can undo a block).
    if (sieve.add(rest)) settle(sieve.all());
    else new StrayWait(conn, sieve, opts, settle, extend);
  }

  private constructor(
    conn: Connection,
    gather: HeadSieve,
    opts: WaitOptions,
    settle: (stray: Buffer) => void,
    extend: boolean,
  ) {
    this.#conn = conn;
    this.#gather = gather;
    this.#settle = settle;
    const ms = Math.min(STRAY_WAIT_MS, opts.ioTimeout);
    this.#until = extend ? performance.now() + ms * (SIEVE_WAITS - 1) : 0;
    this.#onStray = opts.onStray;
    this.#heard = opts.heard;
    // When the wait is up, the socket is read once more before settling (setImmediate runs
    // after the event loop's poll phase): a process stalled past the wait (a busy machine)
    // finds there what arrived meanwhile, instead of settling before reading it.
    this.#timer = setTimeout(() => {
      const reads = this.#reads;
      // Bytes read meanwhile extend a wait after a failure (a stalled process reads them only
      // now, and its timer then runs again; a busy machine): else it is over.
      setImmediate(() => (this.#reads === reads || performance.now() >= this.#until) && this.#end());
    }, ms);
    conn.setOwner(this);
    // It reads on, whoever paused the socket for the body's reader (the body has all it gets).
    conn.socket.resume();
  }

  socketData(data: Buffer): void {
    if (this.#timer === null) return;
    this.#reads++;
    addHeard(this.#heard, data.length);
    // Progress for the caller's stall watch: the answer may come after an echo's long rest.
    this.#onStray?.(data.length);
    if (this.#gather.add(data)) this.#end();
    // After a failure, bytes that come extend the wait (an echo's rest may be long): bounded in all.
    else if (performance.now() < this.#until) this.#timer.refresh();
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

  /** Settles now with what was kept (the transaction is aborted: what came still counts). */
  settleNow(): void {
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
 * Where a head may start: an ICAP status line's start anywhere, in any case (a line start is not
 * required), not a mere `ICAP/` (c-icap's `Server: C-ICAP/0.5.10` field: campaign-at AT1).
 */
const HEAD_START = /icap\/\d{1,3}(?:\.\d{1,3})?[ \t]{1,8}\d{3}/gi;
/** Longer than any match of HEAD_START: the bytes held back at the end of a read. */
const HOLD = 24;
/**
 * The start line the segment from the failure gets: its first line is a field line as often as
 * not (a threat line read as a chunk-size line: campaign-at AT11), never to be skipped as one.
 */
const FIRST = '-\r\n';
/** A blank line as salvageReading reads one (lenientText: an empty line, or a lone CR). */
const BLANK = /\n\r?\n/g;
/**
 * How often an open segment is read before its end (HeadSieve#readOpen): an ICAP head, the
 * request head and the page it may carry, one more.
 */
const OPEN_READS = 4;
/**
 * The blank lines and status lines inside lines an open segment may hold and still be read
 * before its end: an answer has a few (its head, the request head it returns, its page, the
 * body's last chunk); a segment with more is read at its end only (campaign-ba BA1: each early
 * reading judges every head in the segment again).
 */
const OPEN_HEADS = 8;
const SEPARATOR = '\r\n\r\n';

/**
 * The heads that may name a threat in what follows a failure (a body that broke its framing, a
 * head that broke a rule) or an answer with a body. Those bytes may be the rest of the upload
 * echoed (bytes an attacker chose, heads shaped like a clean answer, megabytes of them) before
 * the server's answer or after it, and the answer may start anywhere (its first bytes read as
 * the rest of a short chunk; glued to a line): so the bytes are cut into segments, one from the
 * first byte handed over and one from every ICAP status line's start (any case, anywhere) to the
 * next (its first `maxHeaderSize` bytes; one that starts a line goes on through those inside a
 * line, which may be a field's value: campaign-av AV1, and so does one from a status line inside
 * a line whose head awaits its page: campaign-ax AX1), and a segment is kept only when a head in it may name a
 * threat or carry a status some vendor blocks by (reuse.ts, `mayName`: a reading wider than any
 * vendor's verdict); of those, the first and the last `maxHeaderSize` bytes' worth. With the
 * caller's own reading (`blocks`: the engine's verdict), only the first segment holding a head it
 * blocks by is kept, and the wait ends there, as soon as that head (and the page it names) has come
 * whole, not when the connection falls quiet: heads that `mayName` keeps but the verdict reads as
 * clean cannot push the answer out (campaign-at AT6). Linear in the bytes, memory bounded
 * whatever they hold (campaign-ar AR1, AR4; campaign-as AS1, AS2, AS5, AS6; campaign-at AT1).
 */
export class HeadSieve {
  readonly #max: number;
  readonly #first: string[] = [];
  #firstChars = 0;
  #firstFull = false;
  #last: string[] = [];
  #lastFrom = 0;
  #lastChars = 0;
  /** The segment being read (its first `max` bytes), null between segments: the first byte starts one. */
  #seg: string | null = FIRST;
  /** The segment from a status line glued to a line (read besides #seg, which goes on), or null. */
  #glued: string | null = null;
  /**
   * A segment cut at a status line inside a line whose reading ends with a head awaiting its page
   * (an answer glued to an echo, then the request head it returns holding a client's header with
   * a status line): it goes on through such status lines until a line starts with one, a newer
   * such segment comes, or it holds `max` bytes, and is read whole then (campaign-ax AX1).
   */
  #pending: string | null = null;
  /** The last bytes read (latin1), not yet in a segment: a head may start in them. */
  #tail = '';
  /** The character before #tail (a line end: a head starting there starts a line). */
  #prev = 0x0a;
  /** The caller's reading (see the class comment), and the segment it blocked by. */
  readonly #blocks: ((head: IcapReceivedHead) => boolean) | undefined;
  #hit: string | null = null;
  /** How often #seg was read before its end (#readOpen): at most OPEN_READS times. */
  #openReads = 0;
  /** How much of #seg that reading read. */
  #openRead = 0;
  /** The blank lines and the status lines inside a line in #seg so far (OPEN_HEADS). */
  #openHeads = 0;

  constructor(max: number, blocks?: ((head: IcapReceivedHead) => boolean) | undefined) {
    this.#max = max;
    this.#blocks = blocks;
  }

  /** True when a segment was found that the caller's reading blocks by: the wait is over. */
  add(data: Buffer): boolean {
    if (this.#hit !== null) return true;
    // latin1: one character per byte. The last HOLD of a read wait for the next (a head may
    // start there): they go to the open segment only when no head starts in them.
    const held = this.#tail.length;
    const text = this.#tail + data.toString('latin1');
    let from = 0;
    // Where #seg's bytes in `text` start, and its length before them (for #readOpen).
    let segFrom = 0;
    let segBefore = this.#seg === null ? 0 : this.#seg.length;
    for (let search = 0; ; search = from + 1) {
      HEAD_START.lastIndex = search;
      const m = HEAD_START.exec(text);
      const end = m === null ? Math.max(from, text.length - HOLD) : m.index;
      this.#append(text, from, end);
      if (m === null) {
        if (end > 0) this.#prev = text.charCodeAt(end - 1);
        this.#tail = text.slice(end);
        return this.#readOpen(text, Math.max(segFrom, held - 2), held, segBefore - segFrom);
      }
      const before = m.index > 0 ? text.charCodeAt(m.index - 1) : this.#prev;
      const glued = this.#glued;
      this.#glued = null;
      if (before === 0x0a || before === 0x0d) {
        this.#cut(this.#pending);
        this.#pending = null;
        this.#cut(glued);
        this.#cut(this.#seg);
        this.#seg = '';
        this.#openReads = 0;
        this.#openRead = 0;
        this.#openHeads = 0;
        segFrom = m.index;
        segBefore = 0;
      } else {
        // A status line inside a line (a field's value: a client's header a server echoed) does
        // not end the segment it is in, whose head's page may come after it (campaign-av AV1),
        // nor a glued one awaiting its page (AX1).
        this.#cut(glued, true);
        this.#glued = '';
        this.#openHeads++;
      }
      if (this.#hit !== null) return true;
      from = m.index;
    }
  }

  /**
   * When a blank line ends in the bytes just read (`text` from `search`; `shift` maps a position
   * there to one in #seg, the tail held back included), the open segment up to it is read as
   * #cut reads a segment, and a head there the caller blocks by ends the wait at once, unless
   * the reading ends with a head awaiting its page (what follows may attach to that head). What
   * comes after a blank line cannot change the heads before it (salvageReading splits at blank
   * lines; a page attaches only to an awaiting head), so the segment's whole reading would hold
   * that head too: only sooner. Linear: the new bytes are searched, and the segment is read at
   * most OPEN_READS times, each time up to a blank line past the last reading's (campaign-az AZ1:
   * a whole segment searched on every read was O(reads x maxHeaderSize)), and only while it holds
   * at most OPEN_HEADS heads' worth of blank lines and glued status lines (campaign-ba BA1).
   */
  #readOpen(text: string, search: number, held: number, shift: number): boolean {
    const blocks = this.#blocks;
    if (blocks === undefined || this.#seg === null || this.#openReads >= OPEN_READS) return false;
    let end = -1;
    BLANK.lastIndex = Math.max(0, search);
    while (BLANK.exec(text) !== null) {
      end = BLANK.lastIndex;
      // (One ending in the bytes held back from the last read was counted then.)
      if (end > held) this.#openHeads++;
    }
    if (this.#openHeads > OPEN_HEADS) this.#openReads = OPEN_READS;
    const upTo = Math.min(end + shift, this.#max);
    if (end === -1 || upTo <= this.#openRead || this.#openHeads > OPEN_HEADS) return false;
    this.#openReads++;
    this.#openRead = upTo;
    const seg = `${this.#seg}${this.#tail}`.slice(0, upTo);
    const { heads, awaiting } = salvageReading(Buffer.from(seg, 'latin1'));
    if (awaiting || !heads.some(blocks)) return false;
    this.#hit = seg;
    return true;
  }

  /** `text` from `from` to `end` to the open segments, each up to `max` bytes. */
  #append(text: string, from: number, end: number): void {
    if (end <= from) return;
    const room = this.#seg === null ? 0 : this.#max - this.#seg.length;
    if (room > 0) this.#seg += text.slice(from, Math.min(end, from + room));
    const gluedRoom = this.#glued === null ? 0 : this.#max - this.#glued.length;
    if (gluedRoom > 0) this.#glued += text.slice(from, Math.min(end, from + gluedRoom));
    const pendingRoom = this.#pending === null ? 0 : this.#max - this.#pending.length;
    if (pendingRoom > 0) this.#pending += text.slice(from, Math.min(end, from + pendingRoom));
  }

  /**
   * A segment ends: kept when a head in it may name a threat; `mayPend`: one whose reading ends
   * awaiting a page goes on instead (#pending), ending the one that did.
   */
  #cut(seg: string | null, mayPend = false): void {
    // (Every segment, with fields or not: some vendors block by a status line alone, ESET's
    // `405 Forbidden`, Symantec's `539`: campaign-az AZ2.)
    if (seg === null || seg === '' || this.#hit !== null) return;
    const { heads, awaiting } = salvageReading(Buffer.from(seg, 'latin1'));
    const blocks = this.#blocks;
    // Only a head the caller blocks by is kept, the first: no crafted head can push it out.
    if (blocks !== undefined && heads.some(blocks)) {
      this.#hit = seg;
      return;
    }
    if (mayPend && awaiting && seg.length < this.#max) {
      const before = this.#pending;
      this.#pending = seg;
      this.#cut(before);
      return;
    }
    if (blocks !== undefined || !heads.some(mayName)) return;
    if (!this.#firstFull && this.#firstChars + seg.length <= this.#max) {
      this.#first.push(seg);
      this.#firstChars += seg.length;
      return;
    }
    this.#firstFull = true;
    this.#last.push(seg);
    this.#lastChars += seg.length;
    while (this.#lastChars > this.#max && this.#lastFrom < this.#last.length - 1)
      this.#lastChars -= this.#last[this.#lastFrom++]!.length;
    if (this.#lastFrom > 1024 && this.#lastFrom * 2 > this.#last.length) {
      this.#last = this.#last.slice(this.#lastFrom);
      this.#lastFrom = 0;
    }
  }

  /** The segments kept, each ended by a blank line (read as heads of their own), the open one last. */
  all(): Buffer {
    if (this.#hit !== null) return Buffer.from(`${this.#hit}${SEPARATOR}`, 'latin1');
    const kept = [...this.#first, ...this.#last.slice(this.#lastFrom)];
    this.#append(this.#tail, 0, this.#tail.length);
    this.#tail = '';
    for (const open of [this.#seg, this.#glued, this.#pending])
      if (open !== null && open !== '') kept.push(open);
    return Buffer.from(kept.map((seg) => `${seg}${SEPARATOR}`).join(''), 'latin1');
  }
}
