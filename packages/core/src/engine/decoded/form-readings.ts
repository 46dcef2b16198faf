/**
 * The readings of urlencoded fields (FormStrings in readings.ts gathers the fields): what each
 * parser makes of a field's bytes, as formReadings lists them. A batch of fields is read whole;
 * one field longer than a batch is read piece by piece (fieldReadings), so that the readings do
 * not each hold a copy of it at once.
 */
import { isUtf8 } from 'node:buffer';
import { createHash, type Hash } from 'node:crypto';
import { StringDecoder } from 'node:string_decoder';

export const PERCENT = 0x25;
export const PLUS = 0x2b;
/** A character in U+0080-U+00FF (a string with one has a Latin-1 reading). */
export const LATIN1_HIGH = /[\x80-\xff]/;
/** How many bytes of one long field fieldReadings reads at a time. */
export const FIELD_PIECE_BYTES = 64 * 1024;
const EMPTY = Buffer.alloc(0);

/** The distinct readings of urlencoded fields that differ from their raw bytes (see FormStrings). */
export function formReadings(raw: Buffer, latin1Charset = false): Buffer[] {
  const readings: Buffer[] = [];
  const add = (b: Buffer) => {
    if (b.equals(raw)) return;
    for (const r of readings) if (r.equals(b)) return;
    readings.push(b);
  };
  const addString = (s: string) => {
    add(Buffer.from(s, 'utf8'));
    // Latin-1 (how binary travels in a string) for each field within U+0000-U+00FF with a
    // character above U+007F: the batch's characters one byte each, whatever else it holds.
    // (latin1Of's test, the whole string within U+00FF, would let one field with a wider
    // character take the Latin-1 reading of every other field of its batch away.)
    if (LATIN1_HIGH.test(s)) add(Buffer.from(s, 'latin1'));
  };
  const plus = plusAsSpace(raw);
  const bytes = percentDecode(plus);
  // `+` as a space and nothing else: what qs hands over when decodeURIComponent throws (a
  // malformed `%`, escapes that are not UTF-8); otherwise no parser delivers it.
  const rawHigh = hasHighByte(raw);
  if (!isUtf8(bytes) || hasMalformedPercent(plus)) add(plus);
  // The same as a parser that read the body as UTF-8 text hands it over (U+FFFD for a raw byte
  // that is not UTF-8): qs does when decodeURIComponent throws on that text, which a raw byte
  // between escapes can make it do however the bytes decode (`%E9\xAC%80`).
  if (rawHigh) addString(plus.toString('utf8'));
  add(bytes);
  const str = bytes.toString('utf8');
  addString(str);
  // qs's Latin-1 decoder, whatever the Content-Type says: body-parser's `defaultCharset` and
  // qs's `charsetSentinel` (a `utf8=` field) choose it too. The body read as Latin-1 (the app's
  // default charset), or as UTF-8 (the sentinel beside a UTF-8 body), then `%XX` as U+00XX.
  const latin1 = hasHighByte(bytes) ? latin1Unescape(plus, false) : undefined;
  if (latin1 !== undefined) addString(latin1);
  const utf8Latin1 =
    latin1 !== undefined && rawHigh && bytes !== plus ? percentAsLatin1(plus.toString('utf8')) : undefined;
  if (utf8Latin1 !== undefined) addString(utf8Latin1);
  // `unescape` (`%uXXXX` too), only for a body that says it is Latin-1.
  if (latin1Charset && raw.includes('%u')) addString(latin1Unescape(plus, true));
  if (rawHigh && bytes !== plus) {
    addString(unescapeChars(plus.toString('utf8')));
    // A body read as Latin-1 (defaultCharset, or @koa/bodyparser's `encoding`) that qs decodes
    // as UTF-8 (a `utf8=✓` sentinel): escapes as UTF-8, raw bytes as Latin-1; and the field as
    // that text when decodeURIComponent throws.
    const uri = new Latin1Uri();
    addString(uri.write(plus) + uri.end());
    addString(plus.toString('latin1'));
  }
  if (rawHigh) addString(percentDecode(plusAsSpace(maskHighBits(raw))).toString('utf8'));
  // qs's `interpretNumericEntities` (`&#NNN;` as that character, in a Latin-1 body), by qs 6.17's
  // rule and by the rule before it (no surrogate pairs: Express 4's qs), over each decoding.
  if (mayHoldEntity(raw)) {
    for (const pairs of [true, false]) {
      addString(numericEntities(str, pairs));
      if (latin1 !== undefined) addString(numericEntities(latin1, pairs));
      if (utf8Latin1 !== undefined) addString(numericEntities(utf8Latin1, pairs));
    }
  }
  return readings;
}

/**
 * Whether a field's decoded value may hold `&#` (a numeric entity): its `&` can only be `%26`
 * (a raw `&` ends the field), its `#` raw or `%23`. Checked on the raw bytes, so that a field
 * without both costs nothing more.
 */
function mayHoldEntity(raw: Buffer): boolean {
  return raw.includes('%26') && (raw.includes(0x23) || raw.includes('%23'));
}

const ENTITY = /&#(\d+);/g;

/**
 * qs's interpretNumericEntities: each `&#` + decimal digits + `;` as the UTF-16 unit of that
 * number (`pairs`: a code point above U+FFFF as its surrogate pair, qs 6.17; without, the
 * number's low 16 bits, as String.fromCharCode takes it: qs up to 6.16).
 */
export function numericEntities(s: string, pairs: boolean): string {
  if (!s.includes('&#')) return s;
  return s.replace(ENTITY, (_m, digits: string) => {
    let c = Number.parseInt(digits, 10);
    if (pairs && c > 0xffff && c <= 0x10ffff) {
      c -= 0x10000;
      return String.fromCharCode(0xd800 | (c >> 10), 0xdc00 | (c & 0x3ff));
    }
    return String.fromCharCode(c);
  });
}

/**
 * Bytes read as Latin-1 text, then decodeURIComponent: each run of `%XX` escapes as UTF-8
 * (U+FFFD for what is not: decodeURIComponent would throw), every other byte as U+00XX. Fed in
 * pieces that end before a `%`, so a run of escapes may go on in the next piece.
 */
class Latin1Uri {
  readonly #run = new StringDecoder('utf8');
  /** The last piece ended in a run of escapes (the decoder may hold a character's start). */
  #inRun = false;

  write(raw: Buffer): string {
    let s = '';
    const escapes: number[] = [];
    for (let i = 0; i < raw.length; i++) {
      const c = raw[i]!;
      if (c === PERCENT && i + 2 < raw.length) {
        const h = hexValue(raw[i + 1]!);
        const l = hexValue(raw[i + 2]!);
        if (h >= 0 && l >= 0) {
          escapes.push((h << 4) | l);
          i += 2;
          continue;
        }
      }
      if (escapes.length > 0 || this.#inRun) {
        s += this.#run.write(Buffer.from(escapes)) + this.#run.end();
        escapes.length = 0;
        this.#inRun = false;
      }
      s += String.fromCharCode(c);
    }
    if (escapes.length > 0) {
      s += this.#run.write(Buffer.from(escapes));
      this.#inRun = true;
    }
    return s;
  }

  end(): string {
    return this.#run.end();
  }
}

/** `%XX` (two hex digits) in a string as U+00XX (qs's Latin-1 decoder over a decoded body). */
function percentAsLatin1(s: string): string {
  if (!s.includes('%')) return s;
  return s.replace(/%[0-9a-f]{2}/gi, (m) => String.fromCharCode(Number.parseInt(m.slice(1), 16)));
}

/** Whether a `%XX` escape decodes to a byte above 0x7F. */
function hasHighEscape(raw: Buffer): boolean {
  for (let i = raw.indexOf(PERCENT); i !== -1; i = raw.indexOf(PERCENT, i + 1)) {
    if (i + 2 < raw.length && hexValue(raw[i + 1]!) >= 8 && hexValue(raw[i + 2]!) >= 0) return true;
  }
  return false;
}

/** A `%` not followed by two hex digits (decodeURIComponent throws on it). */
function hasMalformedPercent(raw: Buffer): boolean {
  for (let i = raw.indexOf(PERCENT); i !== -1; i = raw.indexOf(PERCENT, i + 1)) {
    if (i + 2 >= raw.length || hexValue(raw[i + 1]!) < 0 || hexValue(raw[i + 2]!) < 0) return true;
  }
  return false;
}

function plusAsSpace(raw: Buffer): Buffer {
  if (!raw.includes(PLUS)) return raw;
  const out = Buffer.from(raw);
  for (let i = 0; i < out.length; i++) if (out[i] === PLUS) out[i] = 0x20;
  return out;
}

export function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  const l = c | 0x20;
  if (l >= 0x61 && l <= 0x66) return l - 0x61 + 10;
  return -1;
}

/** `%XX` (two hex digits) as that byte; any other `%` stays as it is (WHATWG percent-decode). */
function percentDecode(raw: Buffer): Buffer {
  if (!raw.includes(PERCENT)) return raw;
  const out = Buffer.allocUnsafe(raw.length);
  let o = 0;
  for (let i = 0; i < raw.length; i++) {
    const c = raw[i]!;
    if (c === PERCENT && i + 2 < raw.length) {
      const h = hexValue(raw[i + 1]!);
      const l = hexValue(raw[i + 2]!);
      if (h >= 0 && l >= 0) {
        out[o++] = (h << 4) | l;
        i += 2;
        continue;
      }
    }
    out[o++] = c;
  }
  return out.subarray(0, o);
}

/**
 * The field read as Latin-1 with `%XX` as U+00XX (qs with `charset: 'iso-8859-1'`), and with
 * `%uXXXX` as that UTF-16 unit too (`unescape`, which older decoders call on the whole field).
 */
function latin1Unescape(raw: Buffer, percentU: boolean): string {
  let s = '';
  for (let i = 0; i < raw.length; i++) {
    const c = raw[i]!;
    if (c === PERCENT) {
      if (percentU && raw[i + 1] === 0x75 && i + 5 < raw.length) {
        const d = [raw[i + 2]!, raw[i + 3]!, raw[i + 4]!, raw[i + 5]!].map(hexValue);
        if (d.every((x) => x >= 0)) {
          s += String.fromCharCode((d[0]! << 12) | (d[1]! << 8) | (d[2]! << 4) | d[3]!);
          i += 5;
          continue;
        }
      }
      if (i + 2 < raw.length) {
        const h = hexValue(raw[i + 1]!);
        const l = hexValue(raw[i + 2]!);
        if (h >= 0 && l >= 0) {
          s += String.fromCharCode((h << 4) | l);
          i += 2;
          continue;
        }
      }
    }
    s += String.fromCharCode(c);
  }
  return s;
}

/**
 * Node's own percent-decoding of a string (querystring's `unescapeBuffer`, which Node's
 * URLSearchParams and querystring.unescape's fallback use): `%XX` a byte, any other character
 * its UTF-16 unit's low byte (a character above U+007F is not written as UTF-8 again), the bytes
 * then read as UTF-8. For a field with raw UTF-8 and an escape, `ÿ` next to `%61` reads U+FFFD.
 */
function unescapeChars(s: string): string {
  return unescapeBytes(s).toString('utf8');
}

/** unescapeChars' bytes, before they are read as UTF-8. */
function unescapeBytes(s: string): Buffer {
  const out = Buffer.allocUnsafe(s.length);
  let o = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === PERCENT && i + 2 < s.length) {
      const h = hexValue(s.charCodeAt(i + 1));
      const l = hexValue(s.charCodeAt(i + 2));
      if (h >= 0 && l >= 0) {
        out[o++] = (h << 4) | l;
        i += 2;
        continue;
      }
    }
    out[o++] = c & 0xff;
  }
  return out.subarray(0, o);
}

function hasHighByte(b: Buffer): boolean {
  for (let i = 0; i < b.length; i++) if (b[i]! > 0x7f) return true;
  return false;
}

function maskHighBits(raw: Buffer): Buffer {
  const out = Buffer.from(raw);
  for (let i = 0; i < out.length; i++) out[i]! &= 0x7f;
  return out;
}

/**
 * What formReadings gives for `raw` (one field), emitted piece by piece: each reading in parts
 * (`emit(part, true)`) and its end (`emit(last, false)`), in the same order, with the same bytes.
 * Memory is a piece per reading, not every reading whole at once (a field of `\xff%41` repeated
 * held seven times its size so). A first pass reads each reading formReadings considers into a
 * SHA-256 and a length: that says which ones it keeps (not the raw bytes, not one kept before).
 * A pass per kept reading then emits it.
 *
 * The pieces end where no escape crosses: before a `%` (or a byte that is one once its high bit
 * is cleared, for formidable's reading), or after five bytes without one (`%uXXXX` is six long).
 * UTF-8 is decoded across pieces by a StringDecoder (the characters of one decode of the whole),
 * and a high surrogate at a piece's end waits for the next piece before it is written as UTF-8.
 */
export function fieldReadings(
  raw: Buffer,
  latin1Charset: boolean,
  emit: (reading: Buffer, more?: boolean) => void,
  pieceBytes = FIELD_PIECE_BYTES,
): void {
  const ends = pieceEnds(raw, Math.max(8, pieceBytes));
  const rawHigh = hasHighByte(raw);
  const rawPercent = raw.includes(PERCENT);
  // (The percent-decoded bytes have one above 0x7F: formReadings' test, made on the raw bytes.)
  const bytesHigh = rawHigh || hasHighEscape(raw);
  const kinds: ChainKind[] = ['plus', 'bytes', 'str'];
  if (rawHigh) kinds.push('text');
  if (bytesHigh) kinds.push('l1a');
  if (bytesHigh && rawHigh && rawPercent) kinds.push('l1u');
  if (latin1Charset && raw.includes('%u')) kinds.push('l1b');
  if (rawHigh && rawPercent) kinds.push('unesc', 'l1d', 'l1t');
  if (rawHigh) kinds.push('masked');
  const entities: ChainKind[] = [];
  if (mayHoldEntity(raw)) {
    entities.push('es');
    if (kinds.includes('l1a')) entities.push('ea');
    if (kinds.includes('l1u')) entities.push('eu');
    entities.push(...entities.map((k) => k.replace('e', 'o') as ChainKind));
  }
  kinds.push(...entities);

  // The first pass: a digest of every reading, and what decides which ones are candidates.
  const sums = new Map<string, Sum>();
  const sum = (key: string) => {
    let s = sums.get(key);
    if (s === undefined) {
      s = { hash: createHash('sha256'), length: 0, high: false, key: '' };
      sums.set(key, s);
    }
    return s;
  };
  const chains = kinds.map((kind) => ({ kind, chain: new Chain(kind), encoder: new Utf8Encoder() }));
  let malformed = false;
  const add = (key: string, part: Buffer) => {
    const s = sum(key);
    s.hash.update(part);
    s.length += part.length;
  };
  const take = (kind: ChainKind, encoder: Utf8Encoder, out: Buffer | string, last: boolean) => {
    if (typeof out !== 'string') {
      add(kind, out);
      return;
    }
    add(`${kind}.utf8`, encoder.write(out));
    if (last) add(`${kind}.utf8`, encoder.end());
    const l = sum(`${kind}.latin1`);
    l.hash.update(out, 'latin1');
    l.length += out.length;
    if (!l.high && LATIN1_HIGH.test(out)) l.high = true;
  };
  let from = 0;
  for (const end of ends) {
    const piece = raw.subarray(from, end);
    from = end;
    if (!malformed && hasMalformedPercent(piece)) malformed = true;
    for (const { kind, chain, encoder } of chains) take(kind, encoder, chain.write(piece), false);
  }
  for (const { kind, chain, encoder } of chains) take(kind, encoder, chain.end(), true);
  const rawSum = createHash('sha256').update(raw).digest('hex');
  for (const s of sums.values()) s.key = `${s.length}:${s.hash.digest('hex')}`;

  // The readings formReadings would add, in its order; each kept unless it is the raw bytes or
  // one kept before.
  const bytes = sums.get('bytes')!;
  const candidates: string[] = [];
  const addString = (kind: ChainKind) => {
    candidates.push(`${kind}.utf8`);
    if (sums.get(`${kind}.latin1`)!.high) candidates.push(`${kind}.latin1`);
  };
  if (sums.get('str.utf8')!.key !== bytes.key || malformed) {
    candidates.push('plus');
  }
  if (rawHigh) addString('text');
  candidates.push('bytes');
  addString('str');
  for (const kind of ['l1a', 'l1u', 'l1b', 'unesc', 'l1d', 'l1t', 'masked'] as const)
    if (kinds.includes(kind)) addString(kind);
  for (const kind of entities) addString(kind);
  const kept: string[] = [];
  const seen = new Set([`${raw.length}:${rawSum}`]);
  for (const c of candidates) {
    const key = sums.get(c)!.key;
    if (seen.has(key)) continue;
    seen.add(key);
    kept.push(c);
  }

  // A pass per kept reading, emitting it.
  for (const c of kept) {
    const [kind, encoding] = c.split('.') as [ChainKind, 'utf8' | 'latin1' | undefined];
    const chain = new Chain(kind);
    const encoder = new Utf8Encoder();
    const bytesOf = (out: Buffer | string): Buffer =>
      typeof out !== 'string' ? out : encoding === 'latin1' ? Buffer.from(out, 'latin1') : encoder.write(out);
    let at = 0;
    for (const end of ends) {
      const part = bytesOf(chain.write(raw.subarray(at, end)));
      at = end;
      if (part.length > 0) emit(part, true);
    }
    const last = bytesOf(chain.end());
    const rest = encoding === 'utf8' ? encoder.end() : EMPTY;
    emit(rest.length === 0 ? last : Buffer.concat([last, rest]), false);
  }
}

interface Sum {
  hash: Hash;
  length: number;
  /** A character in U+0080-U+00FF (a string's Latin-1). */
  high: boolean;
  key: string;
}

/**
 * The readings of formReadings, each a chain of steps over a piece: `+` as a space (plus; read
 * as UTF-8: text), then
 * percent-decoded (bytes), read as UTF-8 (str); qs's Latin-1 decoders (l1a; l1u over the field
 * read as UTF-8; l1b: `%uXXXX` too); Node's unescapeBuffer over the field as UTF-8 (unesc); the
 * field read as Latin-1 with its escapes as UTF-8 (l1d), or as it is (l1t); the
 * high bits cleared, then as str (masked); numeric entities over str, l1a and l1u, by qs 6.17's
 * rule (es, ea, eu) and the one before (os, oa, ou). The string ones are written as UTF-8 and as
 * Latin-1.
 */
type ChainKind =
  | 'plus'
  | 'text'
  | 'bytes'
  | 'str'
  | 'l1a'
  | 'l1u'
  | 'l1b'
  | 'unesc'
  | 'l1d'
  | 'l1t'
  | 'masked'
  | 'es'
  | 'ea'
  | 'eu'
  | 'os'
  | 'oa'
  | 'ou';

/** An entity reading's decoding, by the kind's second letter (es, os: str; ea, oa: l1a...). */
const ENTITY_BASE = { s: 'str', a: 'l1a', u: 'l1u' } as const;

class Chain {
  readonly #kind: ChainKind;
  readonly #decoder = new StringDecoder('utf8');
  /** unesc: the field read as UTF-8, before unescapeBytes. */
  readonly #first = new StringDecoder('utf8');
  readonly #latin1Uri = new Latin1Uri();
  /** The entity readings: the chain of their decoding, and the entities over its output. */
  readonly #base: Chain | null = null;
  readonly #entities: EntityStream | null = null;

  constructor(kind: ChainKind) {
    this.#kind = kind;
    const base = kind.length === 2 ? ENTITY_BASE[kind[1] as 's' | 'a' | 'u'] : undefined;
    if (base !== undefined) {
      this.#base = new Chain(base);
      this.#entities = new EntityStream(kind[0] === 'e');
    }
  }

  write(piece: Buffer): Buffer | string {
    if (this.#base !== null) return this.#entities!.write(this.#base.write(piece) as string);
    switch (this.#kind) {
      case 'plus':
        return plusAsSpace(piece);
      case 'text':
        return this.#decoder.write(plusAsSpace(piece));
      case 'bytes':
        return percentDecode(plusAsSpace(piece));
      case 'str':
        return this.#decoder.write(percentDecode(plusAsSpace(piece)));
      case 'l1a':
        return latin1Unescape(plusAsSpace(piece), false);
      case 'l1u':
        return percentAsLatin1(this.#decoder.write(plusAsSpace(piece)));
      case 'l1b':
        return latin1Unescape(plusAsSpace(piece), true);
      case 'unesc':
        return this.#decoder.write(unescapeBytes(this.#first.write(plusAsSpace(piece))));
      case 'l1d':
        return this.#latin1Uri.write(plusAsSpace(piece));
      case 'l1t':
        return plusAsSpace(piece).toString('latin1');
      default:
        // masked (the entity readings were written above)
        return this.#decoder.write(percentDecode(plusAsSpace(maskHighBits(piece))));
    }
  }

  end(): Buffer | string {
    if (this.#base !== null) return this.#entities!.end(this.#base.end() as string);
    switch (this.#kind) {
      case 'plus':
      case 'bytes':
        return EMPTY;
      case 'l1a':
      case 'l1b':
      case 'l1t':
        return '';
      case 'l1d':
        return this.#latin1Uri.end();
      case 'unesc':
        return this.#decoder.write(unescapeBytes(this.#first.end())) + this.#decoder.end();
      case 'l1u':
        return percentAsLatin1(this.#decoder.end());
      default:
        return this.#decoder.end();
    }
  }
}

/**
 * numericEntities over a string given in pieces: what could still become an entity at a piece's
 * end (`&`, `&#`, `&#` and digits) waits for the next piece. A run of digits is held whole
 * (leading zeros and all: parseInt reads `&#00…088;` as `X`), a copy of that much of the field.
 */
class EntityStream {
  readonly #pairs: boolean;
  #held = '';

  constructor(pairs: boolean) {
    this.#pairs = pairs;
  }

  write(s: string): string {
    let text = this.#held + s;
    this.#held = '';
    const amp = text.lastIndexOf('&');
    if (amp !== -1 && ENTITY_PREFIX.test(text.slice(amp))) {
      this.#held = text.slice(amp);
      text = text.slice(0, amp);
    }
    return numericEntities(text, this.#pairs);
  }

  end(s: string): string {
    const text = this.#held + s;
    this.#held = '';
    return numericEntities(text, this.#pairs);
  }
}

/** The start of a numeric entity, up to its `;`: the whole of what follows the `&`. */
const ENTITY_PREFIX = /^&(?:#\d*)?$/;

/** UTF-8 of a string given in pieces: a high surrogate at a piece's end waits for the next. */
class Utf8Encoder {
  #held = '';

  write(s: string): Buffer {
    let text = this.#held + s;
    this.#held = '';
    const last = text.charCodeAt(text.length - 1);
    if (last >= 0xd800 && last <= 0xdbff) {
      this.#held = text.slice(-1);
      text = text.slice(0, -1);
    }
    return Buffer.from(text, 'utf8');
  }

  end(): Buffer {
    const rest = this.#held;
    this.#held = '';
    return Buffer.from(rest, 'utf8');
  }
}

/**
 * Where fieldReadings' pieces of `raw` end: about every `size` bytes, moved back to a place no
 * escape crosses (before a byte that is `%` with or without its high bit, else after five bytes
 * without one). The last end is raw.length.
 */
function pieceEnds(raw: Buffer, size: number): number[] {
  const ends: number[] = [];
  let at = 0;
  while (raw.length - at > size) {
    let cut = at + size;
    if ((raw[cut]! & 0x7f) !== PERCENT) {
      for (let k = 1; k <= 5; k++) {
        if ((raw[cut - k]! & 0x7f) === PERCENT) {
          cut -= k;
          break;
        }
      }
    }
    ends.push(cut);
    at = cut;
  }
  ends.push(raw.length);
  return ends;
}
