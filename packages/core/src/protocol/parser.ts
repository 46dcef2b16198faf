import { IcapError, IcapErrorCodes, type IcapReceivedHead } from '../errors.js';
import { type EncapsulatedEntry, type EncapsulatedName, parseEncapsulated } from './encapsulated.js';
import { readEncapsulatedHeads } from './encapsulated-heads.js';
import { chunkSizeLine, findHeadEnd, plainHexSize } from './framing.js';
import { bodylessError, isInterim, parseIcapHead } from './icap-head.js';
import { FieldSieve } from './over-size.js';
import type {
  BodyKind,
  EncapsulatedHttpHead,
  EncapsulatedHttpRequestHead,
  EncapsulatedHttpResponseHead,
  IcapHead,
  IcapRequestHead,
  IcapResponseHead,
  ParserHandler,
  ParserOptions,
} from './parser-types.js';
import { salvageEncapsulated, salvageLines, salvageResponseHead, withReceivedHead } from './salvage.js';

export { isInterim, parseEncapsulated };

/**
 * Incremental ICAP message parser: a state machine over bytes that never needs the end of
 * the connection to find the end of a message. It frames a message by its start line and
 * headers, its `Encapsulated` header (which sizes the encapsulated HTTP header sections and
 * says whether a chunked body follows), and the chunked body itself.
 *
 * The same parser reads ICAP responses (for the client) and ICAP requests (for a server).
 * Body data is handed out as slices of the buffers given to {@link IcapParser.execute}, without
 * copying. A `100 Continue` response (any 1xx but 101: isInterim) is an interim message: it is
 * reported through `onHead` and the parser goes straight on to the next message.
 */

export type {
  BodyKind,
  EncapsulatedEntry,
  EncapsulatedHttpHead,
  EncapsulatedHttpRequestHead,
  EncapsulatedHttpResponseHead,
  EncapsulatedName,
  IcapHead,
  IcapRequestHead,
  IcapResponseHead,
  ParserHandler,
  ParserOptions,
};

enum State {
  Head = 0,
  Encapsulated = 1,
  ChunkSize = 2,
  ChunkData = 3,
  ChunkDataEnd = 4,
  Trailer = 5,
  Done = 6,
  /** Encapsulated heads over maxHeaderSize: what fits is read for a threat, then the error. */
  EncapsulatedTooLarge = 7,
  /** A response's head, or a trailer, past its bound: read on for a threat (#over), then the error. */
  HeadTooLarge = 8,
  TrailerTooLarge = 9,
}

const EMPTY = Buffer.alloc(0);
const CRLF_BYTES = Buffer.from('\r\n');
const LF = 0x0a;
const CR = 0x0d;

export class IcapParser<H extends IcapHead = IcapHead> {
  readonly #kind: H['kind'];
  readonly #handler: ParserHandler<H>;
  readonly #maxHeaderSize: number;
  readonly #maxChunkLine: number;
  readonly #maxTrailer: number;
  /** `ICAP response` or `ICAP request`, for the head's errors. */
  readonly #what: string;

  #state = State.Head;
  #pending: Buffer | null = null;
  #scanFrom = 0;
  #head: H | null = null;
  #encapLength = 0;
  /** A 100 or 204 head announcing a body: its error, thrown once its encapsulated heads are read (a block page there blocks). */
  #bodyless: IcapError | null = null;
  #chunkRemaining = 0;
  /** The last two slices of body data handed out (see receivedData). */
  #prevData: Buffer | null = null;
  #lastData: Buffer | null = null;
  #ieof = false;
  #trailerBytes = 0;
  /** While onEnd runs: the bytes of the chunk being read that came after the message. */
  #after: Buffer | null = null;
  /** The bytes the last head read (its encapsulated heads included) ended in, and where; null while one is read. */
  #headEndIn: Buffer | null = null;
  #headEndAt = 0;
  /** The current message's trailer fields (response side), as received; null: none. */
  #trailer: string[] | null = null;
  /** The final head announced an ICAP trailer (`Trailer`) not read yet: one more field section follows the message. */
  #icapTrailer = false;
  /** A final head without a body, not reported yet: its ICAP trailer is read first (#afterHeaders). */
  #held = false;
  /** A section read past its bound (over-size.ts), and what fits of a head read so (a copy). */
  #over: FieldSieve | null = null;
  #overPrefix: Buffer | null = null;
  #executing = false;
  #closed = false;
  /** The last error a run threw, and the bytes from where it broke off (see bytesAfterFailure). */
  #failed: unknown = undefined;
  #failedIn: Buffer | null = null;
  /** Bytes consumed since construction, for diagnostics. */
  bytesRead = 0;

  constructor(kind: H['kind'], handler: ParserHandler<H>, options: ParserOptions = {}) {
    this.#kind = kind;
    this.#what = `ICAP ${kind}`;
    this.#handler = handler;
    this.#maxHeaderSize = options.maxHeaderSize ?? 64 * 1024;
    this.#maxChunkLine = options.maxChunkLineSize ?? 4096;
    this.#maxTrailer = options.maxTrailerSize ?? this.#maxHeaderSize;
  }

  /** True between messages: nothing of a next message has been read yet. */
  get idle(): boolean {
    return (this.#state === State.Head || this.#state === State.Done) && (this.#pending?.length ?? 0) === 0;
  }

  /**
   * The last body data handed out (the last two slices, at most the last two reads' worth), or
   * null: only read for a threat, when the message broke off in its chunked body (a server's
   * answer may be what was read as a chunk's data: a chunk longer than what was sent).
   */
  receivedData(): Buffer | null {
    const last = this.#lastData;
    if (last === null || this.#prevData === null) return last;
    return Buffer.concat([this.#prevData, last]);
  }

  /** True while a chunked body is read (broken off there, its last data may be an answer). */
  get inChunks(): boolean {
    return (
      this.#state === State.ChunkData || this.#state === State.ChunkDataEnd || this.#state === State.ChunkSize
    );
  }

  /** True when the current message has been read completely. */
  get done(): boolean {
    return this.#state === State.Done;
  }

  /** Bytes received after the end of the current message (not yet parsed). */
  get leftover(): number {
    return this.#state === State.Done ? (this.#pending?.length ?? 0) : 0;
  }

  /**
   * The bytes received after the end of the current message (another answer on the same
   * connection, or junk), or null. Only ever read for a threat, never to pass anything.
   */
  leftoverBytes(): Buffer | null {
    if (this.#state !== State.Done) return null;
    const rest = this.#after ?? this.#pending;
    return rest !== null && rest.length > 0 ? rest : null;
  }

  /**
   * The trailer section of the current message's chunked body (the field lines after the last
   * chunk, RFC 3507 §4.5 and ICAP's trailer extension), or null when it had none. A response
   * only; only ever read for a threat (a threat named there is still a threat).
   */
  trailer(): string | null {
    return this.#trailer === null ? null : `${this.#trailer.join('\r\n')}\r\n`;
  }

  /**
   * What was received of a response not reported whole, read leniently: of a head not yet
   * reported through `onHead` (the connection closed in it, or in its encapsulated HTTP heads),
   * or of the trailer of one that was (its fields so far, under the answer's status line), the
   * line cut short too. Only ever read for a threat (a threat verdict is never lost).
   */
  receivedHead(): IcapReceivedHead | undefined {
    if (this.#kind !== 'response') return undefined;
    const head = this.#head as unknown as IcapResponseHead | null;
    const cut = this.#pending;
    if (this.#state === State.HeadTooLarge) return this.#overHead();
    if (this.#state === State.Head) return cut === null ? undefined : salvageLines(cut);
    if (this.#state === State.Encapsulated || this.#state === State.EncapsulatedTooLarge)
      return cut === null || cut.length === 0 || !head!.encapsulated
        ? head!
        : salvageEncapsulated(head!, head!.encapsulated, cut);
    const held = this.#held;
    const over = this.#state === State.TrailerTooLarge;
    // Past the bound, the lines kept (over-size.ts); else the line cut short.
    const rest = over ? this.#over!.kept() : cut === null ? '' : cut.toString('latin1');
    if ((this.#state !== State.Trailer && !over) || (!held && this.#trailer === null && rest === ''))
      return undefined;
    // A head held for its ICAP trailer was never reported: its own fields (and heads) go first.
    const own = held ? head!.rawHeaders : '';
    const lines = this.#trailer === null ? '' : `${this.#trailer.join('\r\n')}\r\n`;
    const received = salvageResponseHead(
      Buffer.from(`ICAP/1.0 ${head!.status} ${head!.reason}\r\n${own}${lines}${rest}`, 'latin1'),
    );
    if (held) {
      received.httpResponse = head!.httpResponse;
      received.httpRequest = head!.httpRequest;
    }
    return received;
  }

  /** What came right after the last head read (encapsulated heads included) in the same bytes; only read for a threat. */
  bytesAfterHead(): Buffer | null {
    return this.#headEndIn?.subarray(this.#headEndAt) ?? null;
  }

  /**
   * The bytes from where the message broke off with `err` (the line or byte that broke it, then
   * the rest of that read, the bytes pending from earlier reads included; in a chunked body,
   * the last data read before it too, see receivedData), or null when `err` is not the parser's last error. Only
   * ever read for a threat (an answer after a broken one).
   */
  bytesAfterFailure(err: unknown): Buffer | null {
    return this.#failed === err ? this.#failedIn : null;
  }

  /** Feeds bytes. Throws an IcapError on a framing or syntax error. */
  execute(chunk: Buffer): void {
    if (this.#closed) return;
    this.bytesRead += chunk.length;
    let data = chunk;
    if (this.#pending !== null) {
      data = chunk.length === 0 ? this.#pending : Buffer.concat([this.#pending, chunk]);
      this.#pending = null;
    }
    this.#executing = true;
    try {
      this.#run(data);
    } finally {
      this.#executing = false;
    }
  }

  /** Starts on the next message (after the current one is done). */
  reset(): void {
    this.#state = State.Head;
    this.#head = null;
    this.#trailer = null;
    this.#icapTrailer = false;
    this.#held = false;
    this.#over = null;
    this.#overPrefix = null;
    this.#scanFrom = 0;
    this.#ieof = false;
    this.#resumePending();
  }

  /**
   * Server side of a preview: after answering `100 Continue`, the client sends the rest of
   * the body as more chunks. Reading continues with them.
   */
  continueBody(): void {
    if (this.#state !== State.Done || this.#head === null || this.#head.body === null) {
      throw new Error('continueBody() is only valid after a previewed body ended');
    }
    this.#state = State.ChunkSize;
    this.#ieof = false;
    this.#resumePending();
  }

  /** Stops all further callbacks. */
  close(): void {
    this.#closed = true;
    this.#pending = null;
  }

  #resumePending(): void {
    if (!this.#executing && this.#pending !== null && !this.#closed) this.execute(EMPTY);
  }

  #run(data: Buffer): void {
    let i = 0;
    try {
      while (i < data.length && !this.#closed) {
        switch (this.#state) {
          case State.Head: {
            const next = this.#readHead(data, i);
            if (next < 0) return;
            i = next;
            break;
          }
          case State.Encapsulated: {
            if (data.length - i < this.#encapLength) {
              this.#pending = data.subarray(i);
              return;
            }
            const area = data.subarray(i, i + this.#encapLength);
            this.#headEndIn = data;
            this.#headEndAt = i + this.#encapLength;
            try {
              readEncapsulatedHeads(this.#head!, area);
              if (this.#bodyless !== null) throw this.#bodyless;
            } catch (err) {
              // The encapsulated heads broke a rule, yet a threat named in them is still a threat:
              // their lines, read leniently, go with the ICAP head.
              throw this.#withHead(err, () =>
                salvageEncapsulated(
                  this.#head as unknown as IcapResponseHead,
                  this.#head!.encapsulated!,
                  area,
                ),
              );
            }
            i += this.#encapLength;
            this.#afterHeaders(data, i);
            break;
          }
          case State.EncapsulatedTooLarge: {
            if (data.length - i < this.#maxHeaderSize) {
              this.#pending = data.subarray(i);
              return;
            }
            throw this.#encapTooLarge(data.subarray(i, i + this.#maxHeaderSize));
          }
          case State.ChunkSize: {
            const nl = data.indexOf(LF, i);
            if (nl === -1) {
              if (data.length - i > this.#maxChunkLine) throw protocol('chunk-size line too long');
              this.#pending = data.subarray(i);
              return;
            }
            if (nl - i > this.#maxChunkLine) throw protocol('chunk-size line too long');
            const lineEnd = data[nl - 1] === CR ? nl - 1 : nl;
            const size = plainHexSize(data, i, lineEnd);
            if (size > 0) {
              this.#chunkRemaining = size;
              this.#state = State.ChunkData;
            } else this.#readChunkSize(data.toString('latin1', i, lineEnd));
            i = nl + 1;
            break;
          }
          case State.ChunkData: {
            const n = Math.min(this.#chunkRemaining, data.length - i);
            const slice = data.subarray(i, i + n);
            this.#chunkRemaining -= n;
            i += n;
            if (this.#chunkRemaining === 0) this.#state = State.ChunkDataEnd;
            this.#prevData = this.#lastData;
            this.#lastData = slice;
            this.#handler.onBody(slice);
            break;
          }
          case State.ChunkDataEnd: {
            if (data[i] === LF) {
              i += 1;
            } else if (data[i] === CR) {
              if (i + 1 >= data.length) {
                this.#pending = data.subarray(i);
                return;
              }
              if (data[i + 1] !== LF) throw protocol('chunk data not followed by CRLF');
              i += 2;
            } else {
              throw protocol('chunk data not followed by CRLF (chunk longer than its size?)');
            }
            this.#state = State.ChunkSize;
            break;
          }
          case State.Trailer: {
            const nl = data.indexOf(LF, i);
            const room = this.#maxTrailer - this.#trailerBytes;
            if (nl === -1 ? data.length - i > room : nl + 1 - i > room) {
              // Over the bound, from the line that crosses it on, a response's is read on for a
              // threat (over-size.ts: a threat named there is still one); a request's fails.
              if (this.#kind === 'request') throw protocol('trailer section too large');
              this.#over = new FieldSieve(this.#maxTrailer, false);
              this.#state = State.TrailerTooLarge;
              break;
            }
            if (nl === -1) {
              this.#pending = data.subarray(i);
              return;
            }
            const lineLength = nl - i - (data[nl - 1] === CR ? 1 : 0);
            this.#trailerBytes += nl + 1 - i;
            // Kept (bounded by maxTrailerSize) for what they may name: a verdict is never lost.
            if (lineLength > 0 && this.#kind === 'response') {
              this.#trailer ??= [];
              this.#trailer.push(data.toString('latin1', i, i + lineLength));
            }
            i = nl + 1;
            if (lineLength > 0) break;
            // The chunked body's trailer ended: an ICAP trailer announced follows (see #afterHeaders).
            if (this.#icapTrailer) this.#readIcapTrailer();
            else if (this.#held) this.#endHeld(data, i);
            else this.#finish(this.#ieof, data, i);
            break;
          }
          case State.HeadTooLarge:
          case State.TrailerTooLarge: {
            const over = this.#over!;
            const end = over.read(data, i);
            if (end === -1 && !over.full) return;
            // The section ended (what follows it goes with the error), or OVER_SIZE_CAP was read.
            if (end !== -1) i = end;
            if (this.#state === State.TrailerTooLarge) throw protocol('trailer section too large');
            this.#headEndIn = data;
            this.#headEndAt = i;
            throw this.#withHead(this.#headTooLarge(), () => this.#overHead());
          }
          case State.Done: {
            this.#pending = data.subarray(i);
            return;
          }
        }
      }
    } catch (err) {
      // Where the bytes that broke the message start, in the bytes read (pending ones included):
      // the innermost run keeps it (bytesAfterFailure).
      if (this.#failed !== err) {
        // In a chunked body, the last data read go first: a server's answer may start there.
        const rest = data.subarray(i);
        const before = this.inChunks ? this.receivedData() : null;
        const eol = this.#state === State.ChunkSize ? CRLF_BYTES : EMPTY;
        this.#failed = err;
        this.#failedIn = before === null ? rest : Buffer.concat([before, eol, rest]);
      }
      throw err;
    }
  }

  /** Returns the index after the head, or -1 when more data is needed. */
  #readHead(data: Buffer, start: number): number {
    // Skip empty lines before a start line (RFC 9112 §2.2 robustness).
    let i = start;
    this.#headEndIn = null;
    if (this.#scanFrom === 0) {
      while (i < data.length && (data[i] === CR || data[i] === LF)) i++;
      if (i === data.length) return -1;
    }
    const end = findHeadEnd(data, i + Math.max(0, this.#scanFrom - 3));
    if (end === -1) {
      if (data.length - i > this.#maxHeaderSize) return this.#tooLarge(data, i);
      this.#pending = data.subarray(i);
      this.#scanFrom = data.length - i;
      return -1;
    }
    if (end - i > this.#maxHeaderSize) return this.#tooLarge(data, i);
    this.#scanFrom = 0;
    this.#headEndIn = data;
    this.#headEndAt = end;
    try {
      this.#head = parseIcapHead(this.#kind, data.subarray(i, end), this.#what) as H;
      this.#bodyless = this.#head.kind === 'response' ? bodylessError(this.#head) : null;
    } catch (err) {
      // A head that breaks a rule may still name a threat: its fields, read leniently, go along.
      throw this.#withHead(err, () => salvageResponseHead(data.subarray(i, end)));
    }
    const encap = this.#head.encapsulated;
    const bodyEntry = encap?.[encap.length - 1];
    this.#encapLength = bodyEntry?.offset ?? 0;
    if (this.#bodyless !== null && this.#encapLength === 0)
      throw this.#withHead(this.#bodyless, () => this.#head as unknown as IcapResponseHead);
    if (this.#encapLength > this.#maxHeaderSize) {
      // A response's first maxHeaderSize bytes of them are still read, for a threat named there
      // (a block page's status line, a field of a head the server made too big); then the error.
      if (this.#kind === 'response' && encap !== null) {
        this.#state = State.EncapsulatedTooLarge;
        return end;
      }
      throw this.#encapTooLarge(undefined);
    }
    if (this.#encapLength > 0) {
      this.#state = State.Encapsulated;
    } else {
      this.#afterHeaders(data, end);
    }
    return end;
  }

  /** Encapsulated heads over maxHeaderSize, with what was read of them (`area`), leniently. */
  #encapTooLarge(area: Buffer | undefined): unknown {
    const err = new IcapError(
      IcapErrorCodes.HEADERS_TOO_LARGE,
      `encapsulated HTTP headers exceed maxHeaderSize (${this.#maxHeaderSize} bytes)`,
    );
    const head = this.#head as unknown as IcapResponseHead;
    const entries = this.#head!.encapsulated;
    return this.#withHead(err, () =>
      area === undefined || entries === null ? head : salvageEncapsulated(head, entries, area),
    );
  }

  /**
   * A head over maxHeaderSize at `at`: a request's fails; a response's is read on for a threat
   * (over-size.ts: a threat named past its first maxHeaderSize bytes, after a long list of
   * infected entries say, is still one), then fails (#run). Returns where the reading goes on.
   */
  #tooLarge(data: Buffer, at: number): number {
    if (this.#kind === 'request') throw this.#headTooLarge();
    const bound = at + this.#maxHeaderSize;
    const lf = data.lastIndexOf(LF, bound - 1);
    const from = lf >= at ? lf + 1 : bound;
    // What fits, up to its last line end (a copy: reading goes on), then the lines kept after it.
    this.#overPrefix = Buffer.from(data.subarray(at, from));
    this.#over = new FieldSieve(this.#maxHeaderSize, lf < at);
    this.#scanFrom = 0;
    this.#state = State.HeadTooLarge;
    return from;
  }

  #headTooLarge(): IcapError {
    const what = `ICAP ${this.#kind} headers exceed maxHeaderSize (${this.#maxHeaderSize} bytes)`;
    return new IcapError(IcapErrorCodes.HEADERS_TOO_LARGE, what);
  }

  /** What was read of a head over maxHeaderSize: what fits, then the lines kept past it, leniently. */
  #overHead(): IcapReceivedHead {
    const prefix = this.#overPrefix!;
    const eol = prefix[prefix.length - 1] === LF ? '' : '\r\n';
    return salvageResponseHead(Buffer.concat([prefix, Buffer.from(`${eol}${this.#over!.kept()}`, 'latin1')]));
  }

  /** A response parser's error with what was received of the head (see receivedHead). */
  #withHead(err: unknown, head: () => IcapReceivedHead): unknown {
    return this.#kind === 'response' ? withReceivedHead(err, head()) : err;
  }

  /** After a head; `data` from `at` on is what follows it. */
  #afterHeaders(data: Buffer, at: number): void {
    const head = this.#head!;
    const interim = head.kind === 'response' && isInterim(head.status);
    // An ICAP trailer (draft-rousskov-icap-trailers, as Squid reads it): a final head with a
    // `Trailer` field is followed by one more field section, right after the head when it has no
    // body, else after the chunked body's end. Part of the message, read for a threat as the
    // trailer is; a head without a body is reported with it (#endHeld): no answer before it.
    this.#icapTrailer = !interim && head.kind === 'response' && head.headers.has('trailer');
    if (this.#icapTrailer && head.body === null) {
      this.#held = true;
      this.#readIcapTrailer();
      return;
    }
    this.#handler.onHead(head);
    if (this.#closed) return;
    if (interim) {
      // 100 Continue, 102, 103 (any 1xx but 101): the final response follows on the same connection.
      this.#state = State.Head;
      this.#head = null;
      return;
    }
    if (head.body === null) {
      this.#finish(false, data, at);
    } else {
      this.#state = State.ChunkSize;
    }
  }

  /** The ICAP trailer of a head held for it ended (`data` from `at` on follows): the head, then the end. */
  #endHeld(data: Buffer, at: number): void {
    this.#held = false;
    this.#headEndIn = data;
    this.#headEndAt = at;
    this.#handler.onHead(this.#head!);
    if (!this.#closed) this.#finish(false, data, at);
  }

  /** The ICAP trailer's field section is read next (as a trailer, bounded by maxTrailerSize). */
  #readIcapTrailer(): void {
    this.#icapTrailer = false;
    this.#trailerBytes = 0;
    this.#state = State.Trailer;
  }

  #readChunkSize(line: string): void {
    const { size, ieof } = chunkSizeLine(line);
    if (size === 0) {
      this.#ieof = ieof;
      this.#trailerBytes = 0;
      this.#state = State.Trailer;
      return;
    }
    this.#chunkRemaining = size;
    this.#state = State.ChunkData;
  }

  /** The message ended; `data` from `at` on came after it (`leftoverBytes` during onEnd). */
  #finish(ieof: boolean, data: Buffer, at: number): void {
    this.#state = State.Done;
    // Only for onEnd to see: #run goes on with these bytes (kept, or read after a reset).
    this.#after = at < data.length ? data.subarray(at) : null;
    try {
      this.#handler.onEnd(ieof);
    } finally {
      this.#after = null;
    }
  }
}

function protocol(message: string): IcapError {
  return new IcapError(IcapErrorCodes.PROTOCOL, message);
}
