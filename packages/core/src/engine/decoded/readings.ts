import { isAscii, isUtf8 } from 'node:buffer';
import {
  FIELD_PIECE_BYTES,
  fieldReadings,
  formReadings,
  hexValue,
  LATIN1_HIGH,
  PERCENT,
  PLUS,
} from './form-readings.js';

/**
 * The strings a body parser decodes out of a body, in the forms the application can read them
 * in, where those differ from the bytes the ICAP server was sent. A scanner reads bytes: EICAR
 * in a JSON string must be written with `\\` (its backslash), and `"\u0045ICAR…"` or a
 * urlencoded `%45ICAR…` hides any signature from it, while the application reads the string
 * decoded. Each lexer reads the body chunk by chunk (memory bounded by the longest string, CPU
 * linear in the bytes however they are chunked) and `emit`s every decoded reading that is not
 * the raw bytes themselves (those were scanned as they are). A reading may come in parts: each
 * but its last with `more` (an urlencoded field longer than a batch, form-readings.ts).
 */
export type Emit = (reading: Buffer, more?: boolean) => void;

/** A lexer of a body's strings: fed chunk by chunk, then ended. */
export interface StringLexer {
  write(chunk: Buffer): void;
  end(): void;
}

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const EMPTY = Buffer.alloc(0);

/**
 * The string literals of a JSON text (keys and values), decoded as JSON.parse decodes them
 * (body-parser, Fastify's secure-json-parse, co-body and formidable all use it), for the
 * literals whose decoded UTF-8 differs from their bytes: those with an escape (`\uXXXX`, `\\`,
 * `\/`, `\n`...) or with bytes that are not UTF-8 (read as U+FFFD). Outside a literal no `"`
 * can occur in JSON, so the lexer needs no grammar: a body that is not JSON gives the parser a
 * 400, and the readings of its "literals" are only scanned in vain. A literal that JSON.parse
 * refuses (a raw control character) makes the whole text unparseable: it is skipped.
 *
 * The literals to decode are gathered (copied, without a Buffer per literal) into a batch that
 * JSON.parse reads as one array, up to BATCH_BYTES at a time; their decoded strings are emitted
 * together, one per line: CPU per literal is a copy and V8's parse, not a call and allocations.
 */
export class JsonStrings implements StringLexer {
  readonly #emit: Emit;
  #inString = false;
  /** The previous chunk ended with the backslash of an escape. */
  #escapePending = false;
  /** The literal holds an escape. */
  #escaped = false;
  /** The literal's bytes from earlier chunks. */
  readonly #carry = new Carry();
  /** `["lit","lit",…` : the literals to decode, as a JSON array's text. */
  #batch = Buffer.allocUnsafe(4096);
  #batchLength = 0;
  /** Where each literal of the batch starts and ends (its quotes excluded). */
  #bounds: number[] = [];

  constructor(emit: Emit) {
    this.#emit = emit;
  }

  write(chunk: Buffer): void {
    const n = chunk.length;
    let i = 0;
    let start = 0;
    // The next quote and the next backslash at or after i (-1: none in the rest of the chunk),
    // each searched for once per occurrence: CPU stays linear however the escapes and the
    // literals are laid out.
    let nextQuote = -2;
    let nextBackslash = -2;
    // A chunk that is UTF-8 as a whole has only UTF-8 literals (a quote never splits a
    // character): one check per chunk, and no look at a literal without an escape.
    let wholeUtf8: boolean | undefined;
    if (this.#escapePending && n > 0) {
      this.#escapePending = false;
      i = 1;
    }
    while (i < n) {
      if (nextQuote !== -1 && nextQuote < i) nextQuote = chunk.indexOf(QUOTE, i);
      if (!this.#inString) {
        if (nextQuote === -1) return;
        this.#inString = true;
        this.#escaped = false;
        i = nextQuote + 1;
        start = i;
        continue;
      }
      if (nextBackslash !== -1 && nextBackslash < i) nextBackslash = chunk.indexOf(BACKSLASH, i);
      if (nextBackslash !== -1 && (nextQuote === -1 || nextBackslash < nextQuote)) {
        // An escape: its next byte is part of it (`\"` does not end the literal).
        this.#escaped = true;
        i = nextBackslash + 2;
        if (i > n) this.#escapePending = true;
        continue;
      }
      if (nextQuote === -1) break;
      if (this.#escaped || this.#carry.open) this.#literal(chunk, start, nextQuote);
      else {
        wholeUtf8 ??= isAscii(chunk) || isUtf8(chunk);
        if (!wholeUtf8 && !isUtf8(chunk.subarray(start, nextQuote))) this.#literal(chunk, start, nextQuote);
      }
      this.#inString = false;
      i = nextQuote + 1;
    }
    if (this.#inString) this.#carry.add(chunk, start);
  }

  end(): void {
    this.#carry.clear();
    this.#flush();
  }

  /** A literal to decode: what earlier chunks held of it, then `chunk[start, end)`. */
  #literal(chunk: Buffer, start: number, end: number): void {
    const length = this.#carry.length + end - start;
    // `,"` before, `"` after, and `]` at the flush.
    this.#reserve(length + 4);
    const batch = this.#batch;
    let at = this.#batchLength;
    batch[at++] = this.#bounds.length === 0 ? 0x5b : 0x2c;
    batch[at++] = QUOTE;
    const from = at;
    at += this.#carry.copyTo(batch, at);
    at += chunk.copy(batch, at, start, end);
    this.#carry.clear();
    // (Across chunks without an escape: decoded only if it is not UTF-8, as within one chunk.)
    if (!this.#escaped && isUtf8(batch.subarray(from, at))) return;
    this.#bounds.push(from, at);
    batch[at++] = QUOTE;
    this.#batchLength = at;
    if (at >= BATCH_BYTES) this.#flush();
  }

  #reserve(more: number): void {
    const need = this.#batchLength + more;
    if (need <= this.#batch.length) return;
    const grown = Buffer.allocUnsafe(Math.max(need, this.#batch.length * 2));
    this.#batch.copy(grown, 0, 0, this.#batchLength);
    this.#batch = grown;
  }

  /** Decodes the batch (one JSON.parse; literal by literal if one of them is refused) and emits it. */
  #flush(): void {
    const bounds = this.#bounds;
    if (bounds.length === 0) return;
    const batch = this.#batch;
    batch[this.#batchLength] = 0x5d;
    let strings: string[];
    try {
      strings = JSON.parse(batch.toString('utf8', 0, this.#batchLength + 1)) as string[];
    } catch {
      // A literal JSON.parse refuses makes the whole text unparseable, but a parser may read it
      // line by line (NDJSON): every literal JSON.parse accepts on its own is still decoded.
      strings = acceptedLiterals(batch, bounds);
    }
    this.#bounds = [];
    this.#batchLength = 0;
    if (this.#batch.length > 4 * BATCH_BYTES) this.#batch = Buffer.allocUnsafe(4096);
    if (strings.length === 0) return;
    const text = strings.join('\n');
    this.#emit(Buffer.from(text, 'utf8'));
    // Latin-1 too, for the strings that are bytes (within U+0000-U+00FF, one above U+007F).
    if (LATIN1_HIGH.test(text))
      for (const str of strings) {
        const bytes = latin1Of(str);
        if (bytes !== undefined) this.#emit(bytes);
      }
  }
}

/**
 * The literals of a batch (`bounds`: where each starts and ends) that JSON.parse accepts one by
 * one, decoded. Those it refuses are found by a look at their bytes ({@link jsonStringAccepted}),
 * not by a throw each: a body made of refused literals (a binary upload that begins with `"`,
 * or one written for it) would otherwise cost an exception per literal, a few microseconds
 * each, about a second of the event loop per megabyte. The accepted ones are decoded together,
 * in one JSON.parse of a new array.
 */
function acceptedLiterals(batch: Buffer, bounds: readonly number[]): string[] {
  const out = Buffer.allocUnsafe(batch.length + 1);
  let at = 0;
  for (let k = 0; k < bounds.length; k += 2) {
    const from = bounds[k]!;
    const to = bounds[k + 1]!;
    if (!jsonStringAccepted(batch, from, to)) continue;
    out[at] = at === 0 ? 0x5b : 0x2c;
    out[at + 1] = QUOTE;
    at += 2;
    at += batch.copy(out, at, from, to);
    out[at++] = QUOTE;
  }
  if (at === 0) return [];
  out[at++] = 0x5d;
  try {
    return JSON.parse(out.toString('utf8', 0, at)) as string[];
  } catch {
    // Not expected (jsonStringAccepted is JSON.parse's rule): one literal at a time, then.
    const strings: string[] = [];
    for (let k = 0; k < bounds.length; k += 2) {
      try {
        strings.push(JSON.parse(`"${batch.toString('utf8', bounds[k], bounds[k + 1])}"`) as string);
      } catch {
        // Refused: so is any text holding it.
      }
    }
    return strings;
  }
}

/**
 * Whether JSON.parse accepts `"` + `b[from, to)` + `"` as a string, the bytes being a literal
 * the lexer found (no quote in them that an escape does not take). It refuses a control byte
 * (below 0x20) and an escape other than `\"`, `\\`, `\/`, `\b`, `\f`, `\n`, `\r`, `\t` and `\u`
 * with four hex digits; bytes that are not UTF-8 read as U+FFFD, which it accepts (a UTF-8
 * decoder never takes a byte below 0x80 into a sequence, so a look at bytes sees what it sees).
 */
export function jsonStringAccepted(b: Buffer, from: number, to: number): boolean {
  for (let i = from; i < to; i++) {
    const c = b[i]!;
    if (c < 0x20) return false;
    if (c !== BACKSLASH) continue;
    if (++i >= to) return false;
    const e = b[i]!;
    if (e === 0x75) {
      if (i + 4 >= to) return false;
      for (let j = 1; j <= 4; j++) if (hexValue(b[i + j]!) < 0) return false;
      i += 4;
    } else if (!(e === QUOTE || e === BACKSLASH || e === 0x2f || SHORT_ESCAPES.includes(e))) return false;
  }
  return true;
}

/** `b`, `f`, `n`, `r`, `t`: the one-letter escapes besides `\"`, `\\` and `\/`. */
const SHORT_ESCAPES = [0x62, 0x66, 0x6e, 0x72, 0x74];

/**
 * The bytes of a literal or a field that earlier chunks held, copied (a chunk's memory is the
 * store's) into one buffer that doubles as it grows. A Buffer per chunk cost about 140x the
 * bytes in JavaScript objects when a client sent them one at a time (the reader gets each piece
 * as it comes): 2 MiB held 270 MiB of heap.
 */
class Carry {
  #buf: Buffer = EMPTY;
  /** Bytes carried. */
  length = 0;
  /** Something was carried (if only an empty rest): the literal or field began in an earlier chunk. */
  open = false;

  add(chunk: Buffer, start: number): void {
    const need = this.length + chunk.length - start;
    if (need > this.#buf.length) {
      const grown = Buffer.allocUnsafe(Math.max(need, 2 * this.#buf.length, 256));
      this.#buf.copy(grown, 0, 0, this.length);
      this.#buf = grown;
    }
    this.length += chunk.copy(this.#buf, this.length, start);
    this.open = true;
  }

  /** The bytes carried (a view, valid until the next add or clear). */
  bytes(): Buffer {
    return this.#buf.subarray(0, this.length);
  }

  copyTo(target: Buffer, at: number): number {
    return this.#buf.copy(target, at, 0, this.length);
  }

  clear(): void {
    this.length = 0;
    this.open = false;
    if (this.#buf.length > 4 * BATCH_BYTES) this.#buf = EMPTY;
  }
}

/** How many bytes of literals JSON.parse decodes at a time (memory: about twice this). */
const BATCH_BYTES = 64 * 1024;
const ABOVE_LATIN1 = /[^\x00-\xff]/;

/**
 * A decoded string is scanned as the bytes an application writes it as: UTF-8 (Node's default:
 * Buffer.from, fs.writeFile, res.send) and, for a string within U+0000-U+00FF with a character
 * above U+007F, Latin-1 (Node's `binary`: how bytes travel in a string, `\u00XX` per byte in
 * JSON). This is a JSON literal's Latin-1 bytes when they are its bytes.
 */
function latin1Of(s: string): Buffer | undefined {
  return LATIN1_HIGH.test(s) && !ABOVE_LATIN1.test(s) ? Buffer.from(s, 'latin1') : undefined;
}

const AMPERSAND = 0x26;

/**
 * The fields of an application/x-www-form-urlencoded body. Parsers decode a field (split at
 * `&`, then at its first `=`) in different ways. The fields that hold `%`, `+` or a byte above
 * 0x7F are gathered, joined by `&`, up to BATCH_BYTES, and each reading of the batch is emitted
 * where it differs from the raw bytes: every reading is byte by byte (or character by
 * character, `&` and `=` always themselves), so each name and value a parser hands over is a
 * substring of it. The readings:
 *
 * - `+` as a space, nothing else (qs when decodeURIComponent throws: a malformed `%`, escapes
 *   that are not UTF-8);
 * - percent-decoded bytes (qs and decodeURIComponent, fast-querystring: valid UTF-8);
 * - the same read as UTF-8 with U+FFFD for what is not (Node's querystring, URLSearchParams);
 * - `%XX` as U+00XX, other bytes as Latin-1 (qs with `charset: 'iso-8859-1'`: body-parser's
 *   urlencoded for a Latin-1 Content-Type, but also its `defaultCharset: 'iso-8859-1'` and qs's
 *   `charsetSentinel`, where the body's `utf8=` field chooses it whatever the Content-Type says),
 *   for a field with a byte above 0x7F (raw or escaped); the same over the field read as UTF-8
 *   (the sentinel beside a UTF-8 body); and, for a Latin-1 Content-Type, `%uXXXX` as that
 *   UTF-16 unit too (`unescape`);
 * - Node's `unescapeBuffer` over the field read as UTF-8 (URLSearchParams in Node, Hono's
 *   parseBody through undici, querystring.unescape's fallback): raw characters above U+007F
 *   as their low byte;
 * - each byte with its high bit cleared, then URLSearchParams (formidable 3, which decodes the
 *   body as Node's `ascii`: `%C5` stays high, a raw 0xC5 byte reads as `E`);
 * - for a field with `%26` and `#` (or `%23`): `&#NNN;` as that character (qs's
 *   `interpretNumericEntities`) over the UTF-8 and both Latin-1 readings, by qs 6.17's rule
 *   (surrogate pairs above U+FFFF) and by the earlier one (the number's low 16 bits);
 * - each of those strings in UTF-8 and, when it has a character in U+0080-U+00FF, in Latin-1
 *   (one byte per character: a field within U+00FF, written by the application as `binary`, is
 *   a substring of it whatever the other fields of its batch hold).
 *
 * A field without `%`, `+` or a byte above 0x7F reads as it is in every parser: nothing is emitted.
 */
export class FormStrings implements StringLexer {
  readonly #emit: Emit;
  /** The body's Content-Type says Latin-1 (`%uXXXX` is then read as `unescape` reads it too). */
  readonly #latin1: boolean;
  /** The field's bytes from earlier chunks. */
  readonly #carry = new Carry();
  #special = false;
  /**
   * The fields to read, joined by `&`, up to BATCH_BYTES: every reading is byte by byte (or
   * character by character, `&` always itself), so a batch's readings hold each field's.
   */
  #batch = Buffer.allocUnsafe(1024);
  #batchLength = 0;

  /** A field longer than this is read on its own, piece by piece (fieldReadings). */
  readonly #longField: number;
  readonly #pieceBytes: number;

  /** `longField`, `pieceBytes`: smaller ones in tests (default a batch, FIELD_PIECE_BYTES). */
  constructor(emit: Emit, latin1Charset = false, longField = BATCH_BYTES, pieceBytes = FIELD_PIECE_BYTES) {
    this.#emit = emit;
    this.#latin1 = latin1Charset;
    this.#longField = longField;
    this.#pieceBytes = pieceBytes;
  }

  write(chunk: Buffer): void {
    let start = 0;
    let special = this.#special;
    for (let i = 0; i < chunk.length; i++) {
      const c = chunk[i]!;
      if (c === AMPERSAND) {
        if (special) this.#field(chunk, start, i);
        else this.#carry.clear();
        special = false;
        start = i + 1;
      } else if (c === PERCENT || c === PLUS || c > 0x7f) special = true;
    }
    this.#special = special;
    if (start < chunk.length) this.#carry.add(chunk, start);
  }

  end(): void {
    if (this.#special) this.#field(EMPTY, 0, 0);
    this.#carry.clear();
    this.#special = false;
    this.#flush();
  }

  #field(chunk: Buffer, start: number, end: number): void {
    if (this.#carry.length + end - start > this.#longField) {
      // Read on its own, piece by piece: its readings are not each held whole at once. The
      // fields gathered before it are read first.
      this.#flush();
      this.#carry.add(chunk.subarray(0, end), start);
      fieldReadings(this.#carry.bytes(), this.#latin1, this.#emit, this.#pieceBytes);
      this.#carry.clear();
      return;
    }
    const length = this.#carry.length + end - start + 1;
    const need = this.#batchLength + length;
    if (need > this.#batch.length) {
      const grown = Buffer.allocUnsafe(Math.max(need, this.#batch.length * 2));
      this.#batch.copy(grown, 0, 0, this.#batchLength);
      this.#batch = grown;
    }
    let at = this.#batchLength;
    if (at > 0) this.#batch[at++] = AMPERSAND;
    at += this.#carry.copyTo(this.#batch, at);
    at += chunk.copy(this.#batch, at, start, end);
    this.#batchLength = at;
    this.#carry.clear();
    if (at >= BATCH_BYTES) this.#flush();
  }

  #flush(): void {
    if (this.#batchLength === 0) return;
    for (const reading of formReadings(this.#batch.subarray(0, this.#batchLength), this.#latin1))
      this.#emit(reading);
    this.#batchLength = 0;
    if (this.#batch.length > 4 * BATCH_BYTES) this.#batch = Buffer.allocUnsafe(1024);
  }
}
