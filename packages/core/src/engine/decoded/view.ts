import { isAscii } from 'node:buffer';
import { IcapError, IcapErrorCodes } from '../../errors.js';
import { Headers } from '../../protocol/headers.js';
import { BodyStore } from '../body.js';
import { isMultipart } from '../multipart/parse.js';
import type { ResolvedProfile } from '../profile.js';
import { charsetOf, type HttpRequestFacts, mediaTypeOf } from '../request.js';
import { FormStrings, JsonStrings, type StringLexer } from './readings.js';

/**
 * The decoded strings of a body, as a second object for the ICAP server (the body itself is
 * the first). A JSON or urlencoded body reaches the application decoded by its body parser, so
 * what the application reads of it is not the bytes the scanner was sent whenever an escape
 * is involved (see readings.ts). Those readings, one per line, are this object; a body
 * without any (most bodies) has none, and costs no second exchange.
 *
 * Which bodies: a JSON media type (`application/json`, any `+json`, `application/csp-report`)
 * and any other body, multipart aside, whose first byte past a BOM and white space opens a
 * JSON text (`{`, `[` or `"`: an application may parse text/plain or octet-stream as JSON,
 * `navigator.sendBeacon` sends JSON as text/plain, formidable parses any type matching `/json/i`);
 * any Content-Type mentioning `urlencoded`, in its media type or its parameters.
 *
 * The lexers read the body (as scanned: decoded when it was compressed) while it arrives, from
 * a reader of their own; the object is bounded by bufferSize (past it: 413, never fail-open).
 */
export class DecodedView {
  readonly #limit: number;
  readonly #profile: ResolvedProfile;
  #store: BodyStore | null = null;
  #cursor: AsyncIterator<Buffer> | null = null;
  readonly #lexers: StringLexer[] = [];
  /** Not a JSON media type: whether the body is a JSON text is still to be seen. */
  #sniff: JsonSniff | null;
  /**
   * A JSON or urlencoded media type with a charset other than UTF-8: a byte above 0x7F is
   * refused (415). Parsers that honour the charset read such a byte as Latin-1 (co-body, Node's
   * querystring after raw-body) where others read UTF-8, and mix it with decoded escapes in ways
   * the readings would have to multiply to cover; RFC 8259 (8.1) has JSON in UTF-8, and the
   * urlencoded serializer percent-encodes every byte above 0x7F.
   */
  readonly #asciiOnly: string | undefined;
  #refusal: IcapError | undefined;
  #cancelled = false;
  /** Sniffed once it ended: not a JSON text, nothing to read. */
  #nothing = false;
  /** The reading, once started: at once, or (a body sniffed in memory) when the result is asked for. */
  #done: Promise<void> | null = null;
  readonly #body: BodyStore;
  readonly #emitTo: (reading: Buffer) => void;
  /** Ends the scan at once with a refusal (the decoded strings too large, a byte refused). */
  readonly #abort: (err: IcapError) => void;

  private constructor(
    p: ResolvedProfile,
    body: BodyStore,
    json: boolean,
    form: boolean,
    asciiOnly: string | undefined,
    latin1: boolean,
    abort: (err: IcapError) => void,
  ) {
    this.#profile = p;
    this.#abort = abort;
    this.#asciiOnly = asciiOnly;
    this.#limit = p.bufferSize;
    const emit = (reading: Buffer, more?: boolean) => this.#push(reading, more);
    if (json) this.#lexers.push(new JsonStrings(emit));
    if (form) this.#lexers.push(new FormStrings(emit, latin1));
    this.#sniff = json ? null : new JsonSniff();
    this.#body = body;
    this.#emitTo = emit;
    // A body that is only sniffed and that the store holds whole (retainAll: the default, with
    // Allow 204) is looked at once it has passed, without a reader while it arrives: most bodies
    // are not JSON, and a reader costs a few µs per request. Otherwise it is read as it comes.
    if (json || form || !body.retaining) this.#start();
  }

  #start(): Promise<void> {
    this.#cursor = this.#body.open();
    this.#done = this.#read();
    return this.#done;
  }

  /**
   * Starts reading `body` for the decoded strings of the request, or returns null for a body
   * no standard parser decodes (a multipart form: its parts are scanned as they are).
   * `contentType` is the request's first value, the one Node's parsers read (a Web Request
   * combines every value into one, so all of them are looked at there).
   */
  static start(
    p: ResolvedProfile,
    contentType: string | undefined,
    body: BodyStore,
    abort: (err: IcapError) => void,
  ): DecodedView | null {
    if (isMultipart(contentType)) return null;
    const type = mediaTypeOf(contentType);
    const json = type.includes('json') || type === 'application/csp-report';
    // Any mention anywhere, parameters included: formidable reads every Content-Type matching
    // `/urlencoded/i` as a form (`application/urlencoded`, `text/plain; format=urlencoded`), as
    // admission refuses one mentioning multipart. Lexing a body in vain costs little.
    const form = contentType !== undefined && /urlencoded/i.test(contentType);
    const charset = (json || form) && contentType !== undefined ? charsetOf(contentType) : undefined;
    const asciiOnly =
      charset !== undefined && charset !== 'utf-8' && charset !== 'utf8' ? charset : undefined;
    const latin1 = charset === 'iso-8859-1' || charset === 'latin1' || charset === 'windows-1252';
    return new DecodedView(p, body, json, form, asciiOnly, latin1, abort);
  }

  /** The decoded strings outgrew bufferSize (the scan answers 413). */
  get tooLarge(): boolean {
    return this.#refusal?.code === IcapErrorCodes.REQUEST_TOO_LARGE;
  }

  /**
   * Once the body has ended: the object to scan (null: nothing decodes differently), or
   * REQUEST_TOO_LARGE. A body that failed or outgrew its own limit gives null: the scan
   * learns that from the body itself.
   */
  async result(): Promise<BodyStore | null> {
    if (this.#done === null) {
      const body = this.#body;
      await body.whenEnded();
      if (this.#nothing || this.#cancelled || body.error !== undefined || body.exceeded) return null;
      // Held in memory from its first byte: sniffed without a reader, and read only if JSON.
      if (this.#sniffHeld() === 'other') return null;
      await this.#start();
    } else await this.#done;
    if (this.#refusal !== undefined) throw this.#refusal;
    return this.#cancelled ? null : this.#store;
  }

  /**
   * Without a promise: true when there is certainly nothing to scan (a body sniffed once it
   * ended, held in memory, that is not a JSON text), the common case result() would take a
   * few awaits to say.
   */
  nothingToScan(): boolean {
    const body = this.#body;
    if (this.#done !== null || !body.ended || body.error !== undefined || body.exceeded) return false;
    return this.#sniffHeld() === 'other';
  }

  /**
   * Sniffs a body that has ended and is held in memory from its first byte (nothing to read):
   * 'json' (its lexer is then added) or 'other' (white space alone is no JSON text either), or
   * 'more' when it cannot be looked at so (spooled: it is read instead).
   */
  #sniffHeld(): 'json' | 'other' | 'more' {
    const body = this.#body;
    const sniff = this.#sniff;
    if (sniff === null || body.spooled || !body.complete) return 'more';
    let seen: 'json' | 'other' | 'more' = 'more';
    for (const chunk of body.slices(body.received)) {
      seen = sniff.feed(chunk);
      if (seen !== 'more') break;
    }
    this.#sniff = null;
    if (seen === 'more') seen = 'other';
    if (seen === 'json') this.#lexers.push(new JsonStrings(this.#emitTo));
    else this.#nothing = true;
    return seen;
  }

  /** Stops reading and frees the object (idempotent): the scan is over. */
  dispose(): void {
    this.#cancelled = true;
    this.#stopReading();
    this.#store?.dispose();
    this.#store = null;
  }

  async #read(): Promise<void> {
    const cursor = this.#cursor!;
    try {
      for (;;) {
        let step: IteratorResult<Buffer>;
        try {
          step = await cursor.next();
        } catch {
          // The body failed or was disposed: the scan hears of it from the body.
          this.#store?.dispose();
          this.#store = null;
          return;
        }
        if (this.#cancelled || this.#refusal !== undefined) return;
        if (step.done) break;
        const chunk = step.value;
        if (this.#asciiOnly !== undefined && !isAscii(chunk)) {
          this.#refuse(
            new IcapError(
              IcapErrorCodes.CONTENT_TYPE,
              `a byte above 0x7F in a ${this.#asciiOnly} body of a JSON or urlencoded type is not accepted (percent-encode it, or send charset=utf-8)`,
            ),
          );
          return;
        }
        const sniff = this.#sniff;
        if (sniff !== null) {
          const seen = sniff.feed(chunk);
          if (seen === 'more') continue;
          this.#sniff = null;
          // (What came before this chunk was white space or a BOM: nothing for the lexer.)
          if (seen === 'json') this.#lexers.push(new JsonStrings(this.#emitTo));
          // Neither JSON nor urlencoded (which needs its media type): nothing more to read.
          if (this.#lexers.length === 0) return;
        }
        for (const lexer of this.#lexers) lexer.write(chunk);
      }
      for (const lexer of this.#lexers) lexer.end();
      this.#store?.end();
    } catch (err) {
      // A fault of the lexers themselves: the scan fails closed (never a pass without them).
      this.#store?.dispose();
      this.#store = null;
      this.#refuse(
        new IcapError(IcapErrorCodes.INTERNAL, `the decoded strings could not be read: ${String(err)}`, {
          cause: err,
        }),
      );
    } finally {
      this.#stopReading();
    }
  }

  #refuse(err: IcapError): void {
    this.#refusal = err;
    this.#abort(err);
  }

  #stopReading(): void {
    const cursor = this.#cursor;
    this.#cursor = null;
    if (cursor !== null) void cursor.return?.();
  }

  /** A reading, or a part of one (`more`: the rest comes in the next calls). */
  #push(reading: Buffer, more = false): void {
    if (this.#refusal !== undefined || this.#cancelled) return;
    let store = this.#store;
    if (store === null) {
      const p = this.#profile;
      store = new BodyStore({
        limit: this.#limit,
        retainAll: true,
        memoryThreshold: p.memoryThreshold,
        spoolDir: p.spoolDir,
      });
      this.#store = store;
    }
    if (store.received + reading.length + (more ? 0 : 1) > this.#limit) {
      store.dispose();
      this.#store = null;
      this.#stopReading();
      this.#refuse(
        new IcapError(
          IcapErrorCodes.REQUEST_TOO_LARGE,
          `the decoded strings of the request body are larger than bufferSize (${this.#limit} bytes)`,
        ),
      );
      return;
    }
    if (reading.length > 0) store.push(reading);
    if (!more) store.push(NEWLINE);
  }
}

const NEWLINE = Buffer.from('\n');
/** `{`, `[`, `"`: what a JSON text starts with (a bare number or literal decodes nothing). */
const JSON_OPENERS = new Set([0x7b, 0x5b, 0x22]);

/**
 * Whether a body is a JSON text: its first byte past a UTF-8 BOM and JSON white space is `{`,
 * `[` or `"`. Fed chunk by chunk, so the answer does not depend on how the bytes were split
 * (a BOM across two chunks).
 */
class JsonSniff {
  /** Bytes of the BOM matched so far (-1: past the start, no BOM any more). */
  #bom = 0;

  feed(chunk: Buffer): 'json' | 'other' | 'more' {
    for (let i = 0; i < chunk.length; i++) {
      const c = chunk[i]!;
      if (this.#bom >= 0 && this.#bom < 3 && c === BOM[this.#bom]) {
        this.#bom++;
        continue;
      }
      if (this.#bom > 0 && this.#bom < 3) return 'other';
      this.#bom = -1;
      if (c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d) continue;
      return JSON_OPENERS.has(c) ? 'json' : 'other';
    }
    return 'more';
  }
}

const BOM = [0xef, 0xbb, 0xbf];

/**
 * The encapsulated request for the decoded strings: the request's line and Host, the strings
 * as UTF-8 text. No file name: Transfer-Ignore (when honoured) never skips it by extension.
 */
export function viewFacts(facts: HttpRequestFacts, length: number): HttpRequestFacts {
  const pairs: Array<[string, string]> = [];
  if (facts.host !== undefined) pairs.push(['Host', facts.host]);
  pairs.push(['Content-Type', 'text/plain; charset=utf-8'], ['Content-Length', String(length)]);
  return {
    ...facts,
    headerPairs: pairs,
    headers: new Headers(pairs),
    hasBody: true,
    contentLength: length,
    chunked: false,
    contentCoding: 'identity',
    transferCoding: undefined,
    fileName: undefined,
  };
}
