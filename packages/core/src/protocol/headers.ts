import { isUtf8 } from 'node:buffer';
import { IcapError, IcapErrorCodes } from '../errors.js';

/**
 * A case-insensitive, order-preserving multimap of header fields. Names keep the case they
 * were given in (for faithful re-encoding and logging); lookups ignore case. A value that was
 * folded over several lines (obs-fold, as in `X-Violations-Found`) reads as one value with each
 * fold replaced by a single space, and its lines stay available through {@link lines}.
 */
export class Headers implements Iterable<[name: string, value: string]> {
  readonly #fields: Field[] = [];

  constructor(
    init?: Iterable<readonly [string, string]> | Record<string, string | readonly string[] | undefined>,
  ) {
    if (init === undefined) return;
    if (Symbol.iterator in init) {
      for (const [name, value] of init as Iterable<readonly [string, string]>) this.append(name, value);
    } else {
      for (const [name, value] of Object.entries(init)) {
        if (value === undefined) continue;
        if (typeof value === 'string') this.append(name, value);
        else for (const v of value) this.append(name, v);
      }
    }
  }

  /** The first value of the field, or undefined. */
  get(name: string): string | undefined {
    const key = lowerName(name);
    for (const f of this.#fields) if (f.key === key) return f.value;
    return undefined;
  }

  /** Every value of the field, in order. */
  getAll(name: string): string[] {
    const key = lowerName(name);
    const out: string[] = [];
    for (const f of this.#fields) if (f.key === key) out.push(f.value);
    return out;
  }

  /** The lines of the first value as received: the first line, then each folded continuation line. */
  lines(name: string): string[] | undefined {
    const key = lowerName(name);
    for (const f of this.#fields) if (f.key === key) return f.lines ?? [f.value];
    return undefined;
  }

  /** The lines of every value of the field, in order (each as {@link lines} gives the first's). */
  linesAll(name: string): string[][] {
    const key = lowerName(name);
    const out: string[][] = [];
    for (const f of this.#fields) if (f.key === key) out.push(f.lines ?? [f.value]);
    return out;
  }

  has(name: string): boolean {
    const key = lowerName(name);
    for (const f of this.#fields) if (f.key === key) return true;
    return false;
  }

  /** Whether `test` holds for some field (its lower-case name, its value): one pass over them. */
  some(test: (key: string, value: string) => boolean): boolean {
    for (const f of this.#fields) if (test(f.key, f.value)) return true;
    return false;
  }

  append(name: string, value: string, lines?: string[]): this {
    // One shape for every field (no property added later).
    this.#fields.push({
      name,
      key: name.toLowerCase(),
      value,
      lines: lines !== undefined && lines.length > 1 ? lines : undefined,
    });
    return this;
  }

  /** Replaces every value of the field with one value, keeping the position of the first. */
  set(name: string, value: string): this {
    const key = name.toLowerCase();
    const at = this.#fields.findIndex((f) => f.key === key);
    if (at === -1) return this.append(name, value);
    this.#fields[at] = { name, key, value, lines: undefined };
    for (let i = this.#fields.length - 1; i > at; i--)
      if (this.#fields[i]!.key === key) this.#fields.splice(i, 1);
    return this;
  }

  delete(name: string): boolean {
    const key = name.toLowerCase();
    const before = this.#fields.length;
    for (let i = this.#fields.length - 1; i >= 0; i--)
      if (this.#fields[i]!.key === key) this.#fields.splice(i, 1);
    return this.#fields.length !== before;
  }

  get size(): number {
    return this.#fields.length;
  }

  /** The lower-cased name of the field at `index` (0 to size - 1), in order: a read without the iterator's pairs. */
  keyAt(index: number): string {
    return this.#fields[index]!.key;
  }

  /** The value of the field at `index` (0 to size - 1), as the iterator gives it. */
  valueAt(index: number): string {
    return this.#fields[index]!.value;
  }

  *[Symbol.iterator](): IterableIterator<[string, string]> {
    for (const f of this.#fields) yield [f.name, f.value];
  }

  /**
   * An object without a prototype, lower-case names; repeated fields become arrays (a field named
   * `constructor` or `__proto__` is a field like any other: campaign-bl BL8).
   */
  toObject(): Record<string, string | string[]> {
    const out: Record<string, string | string[]> = Object.create(null);
    for (const f of this.#fields) {
      const prev = Object.hasOwn(out, f.key) ? out[f.key] : undefined;
      if (prev === undefined) out[f.key] = f.value;
      else if (Array.isArray(prev)) prev.push(f.value);
      else out[f.key] = [prev, f.value];
    }
    return out;
  }

  /** `Name: value\r\n` lines (folded values are written unfolded). */
  toString(): string {
    let s = '';
    for (const f of this.#fields) s += `${f.name}: ${f.value}\r\n`;
    return s;
  }
}

interface Field {
  name: string;
  key: string;
  value: string;
  /** The lines of a folded value, else undefined. */
  lines: string[] | undefined;
}

/** RFC 9110 token characters, the only ones allowed in a field name. */
/** RFC 9110 token characters (tchar), one flag per ASCII code. */
const TCHAR = new Uint8Array(128);
for (const c of "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
  TCHAR[c.charCodeAt(0)] = 1;

/** Whether `s` is an RFC 9110 token: one or more tchar. */
export function isToken(s: string): boolean {
  return isTokenFrom(s, 0);
}

/** Whether `s` from `from` on is a token (isToken(s.slice(from)) without the slice). */
export function isTokenFrom(s: string, from: number): boolean {
  if (s.length <= from) return false;
  for (let i = from; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c > 0x7f || TCHAR[c] === 0) return false;
  }
  return true;
}

/**
 * Hop-by-hop fields (RFC 9110 §7.6.1, plus HTTP/2's `HTTP2-Settings`): they describe one
 * connection, so they are never encapsulated (RFC 3507 §4.4.2) nor passed on from an ICAP answer.
 */
export const HOP_BY_HOP_FIELDS: ReadonlySet<string> = new Set([
  'connection',
  'keep-alive',
  'proxy-authenticate',
  'proxy-authorization',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'http2-settings',
]);

/** Field names listed in `Connection` fields (hop-by-hop by declaration), lower-cased. */
export function connectionNamed(headers: Iterable<readonly [string, string]>): Set<string> {
  const named = new Set<string>();
  for (const [name, value] of headers) {
    if (name.toLowerCase() !== 'connection') continue;
    for (const token of value.split(',')) {
      const t = token.trim().toLowerCase();
      if (t !== '') named.add(t);
    }
  }
  return named;
}

/** The end-to-end fields of a list: no hop-by-hop field, none that `Connection` names, no pseudo-header. */
export function endToEndHeaders<T extends readonly [string, string]>(headers: Iterable<T>): T[] {
  const list = [...headers];
  const named = connectionNamed(list);
  return list.filter(([n]) => {
    const k = n.toLowerCase();
    return !k.startsWith(':') && !HOP_BY_HOP_FIELDS.has(k) && !named.has(k);
  });
}

/** True when the value can be written on the wire without splitting or ending the header line. */
export function isSafeFieldValue(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 0x0d || c === 0x0a || c === 0x00) return false;
  }
  return true;
}

export type HeaderCharset = 'utf8-or-latin1' | 'latin1';

export interface ParsedHeaderBlock {
  /** The start line (status or request line), without its line ending. */
  startLine: string;
  headers: Headers;
  /** The header lines exactly as received (start line excluded), for logs. */
  rawHeaders: string;
}

/**
 * Parses a complete header block: a start line, header lines, and the empty line that ends it.
 * `block` must contain exactly that (the terminating empty line included or not).
 *
 * Tolerates what servers send in the wild: bare LF line ends, no space after the colon, folded
 * continuation lines (joined with one space, as Squid does), and non-ASCII values (decoded as
 * UTF-8 when the block is valid UTF-8, else as Latin-1). Rejects a line without a colon and a
 * field name that is not a token, because a lenient guess there can change a verdict.
 */
export function parseHeaderBlock(
  block: Buffer,
  what: string,
  charset: HeaderCharset = 'utf8-or-latin1',
  maxFields = 1000,
): ParsedHeaderBlock {
  const text = charset === 'latin1' || !isUtf8(block) ? block.toString('latin1') : block.toString('utf8');
  // The lines are the text split at each LF, one CR at the end of each taken off, the empty
  // lines at the end dropped; read in place (index ranges), not split into an array of strings.
  const end = linesEnd(text);
  let at = 0;
  let lineEnd = nextLineEnd(text, at, end);
  const startLine = text.slice(at, lineEnd);
  at = lineEnd === end ? end : skipLine(text, lineEnd);
  const headers = new Headers();
  let pendingName: string | undefined;
  // The field being read: its first line's value, and its lines once a continuation came.
  let pendingValue = '';
  let pendingLines: string[] | undefined;
  let count = 0;
  while (at < end) {
    lineEnd = nextLineEnd(text, at, end);
    const from = at;
    at = lineEnd === end ? end : skipLine(text, lineEnd);
    if (lineEnd === from) throw protocolError(`${what}: empty line inside the header section`);
    const first = text.charCodeAt(from);
    if (first === 0x20 || first === 0x09) {
      if (pendingName === undefined) throw protocolError(`${what}: continuation line before any header`);
      pendingLines ??= [pendingValue];
      pendingLines.push(owsTrimmed(text, from, lineEnd));
      continue;
    }
    if (pendingName !== undefined) appendField(headers, pendingName, pendingValue, pendingLines);
    pendingName = undefined;
    pendingLines = undefined;
    const colon = text.indexOf(':', from);
    if (colon === from || colon === -1 || colon >= lineEnd) {
      const line = text.slice(from, lineEnd);
      throw protocolError(`${what}: malformed header line ${JSON.stringify(truncate(line))}`);
    }
    const name = text.slice(from, colon);
    if (!isToken(name)) throw protocolError(`${what}: invalid header name ${JSON.stringify(truncate(name))}`);
    if (++count > maxFields) {
      throw new IcapError(IcapErrorCodes.HEADERS_TOO_LARGE, `${what}: more than ${maxFields} header fields`);
    }
    pendingName = name;
    pendingValue = owsTrimmed(text, colon + 1, lineEnd);
  }
  if (pendingName !== undefined) appendField(headers, pendingName, pendingValue, pendingLines);
  const firstLineEnd = text.indexOf('\n');
  return {
    startLine,
    headers,
    rawHeaders: firstLineEnd === -1 ? '' : rawHeaderLines(text, firstLineEnd + 1),
  };
}

/**
 * Where the lines of a header block end: before the empty lines (nothing, or one CR) at its
 * end. The lines are text.split('\n') with one trailing CR off each, up to here.
 */
function linesEnd(text: string): number {
  let end = text.length;
  for (;;) {
    // The last line before `end`: from after the LF before it (or the start) to `end`.
    const lf = end === 0 ? -1 : text.lastIndexOf('\n', end - 1);
    const n = end - (lf + 1);
    if (n > 1 || (n === 1 && text.charCodeAt(lf + 1) !== 0x0d)) return end;
    if (lf === -1) return 0;
    end = lf;
  }
}

/** The end of the line starting at `at` (before `limit`), its final CR excluded. */
function nextLineEnd(text: string, at: number, limit: number): number {
  let lf = text.indexOf('\n', at);
  if (lf === -1 || lf > limit) lf = limit;
  return lf > at && text.charCodeAt(lf - 1) === 0x0d ? lf - 1 : lf;
}

/** Where the next line starts after the line that ends (its CR excluded) at `lineEnd`. */
function skipLine(text: string, lineEnd: number): number {
  return text.charCodeAt(lineEnd) === 0x0d ? lineEnd + 2 : lineEnd + 1;
}

/** trimOws(text.slice(from, to)), without the untrimmed slice. */
function owsTrimmed(text: string, from: number, to: number): string {
  let a = from;
  let b = to;
  while (a < b && (text.charCodeAt(a) === 0x20 || text.charCodeAt(a) === 0x09)) a++;
  while (b > a && (text.charCodeAt(b - 1) === 0x20 || text.charCodeAt(b - 1) === 0x09)) b--;
  return text.slice(a, b);
}

/**
 * text.slice(from).replace(/\r?\n\r?\n?$/, '\r\n'): the header lines as received, the empty
 * line that ends them (CRLF, LF or a cut one) written as the last line's CRLF.
 */
function rawHeaderLines(text: string, from: number): string {
  const n = text.length;
  // The match is at most 4 characters long and ends at the end: the leftmost start that fits.
  for (let s = Math.max(from, n - 4); s < n; s++) {
    let i = s;
    if (text.charCodeAt(i) === 0x0d) i++;
    if (text.charCodeAt(i) !== 0x0a) continue;
    i++;
    if (text.charCodeAt(i) === 0x0d) i++;
    if (text.charCodeAt(i) === 0x0a) i++;
    if (i === n) return `${text.slice(from, s)}\r\n`;
  }
  return text.slice(from);
}

/** A parsed field: a folded one reads as its lines joined with one space. */
function appendField(headers: Headers, name: string, value: string, lines: string[] | undefined): void {
  if (lines === undefined) headers.append(name, value);
  else headers.append(name, lines.join(' '), lines);
}

/**
 * Strips optional whitespace (SP and HTAB, RFC 9110 §5.6.3) from both ends. Not String#trim:
 * it also strips U+00A0, which is how the byte 0xA0 reads in Latin-1 (the last byte of a UTF-8
 * `à`), and other Unicode spaces that belong to the value.
 */
export function trimOws(s: string): string {
  let start = 0;
  let end = s.length;
  while (start < end && (s.charCodeAt(start) === 0x20 || s.charCodeAt(start) === 0x09)) start++;
  while (end > start && (s.charCodeAt(end - 1) === 0x20 || s.charCodeAt(end - 1) === 0x09)) end--;
  return start === 0 && end === s.length ? s : s.slice(start, end);
}

function truncate(s: string): string {
  return s.length > 80 ? `${s.slice(0, 80)}…` : s;
}

function protocolError(message: string): IcapError {
  return new IcapError(IcapErrorCodes.PROTOCOL, message);
}

/** Splits a comma-separated header value into trimmed, non-empty items. */
export function splitList(value: string | undefined): string[] {
  if (value === undefined) return [];
  return value
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
}

/**
 * `name.toLowerCase()`, without the call for a name with no upper-case or non-ASCII letter
 * (the names looked up are mostly literal lower-case ones: the same string comes back).
 */
function lowerName(name: string): string {
  for (let i = 0; i < name.length; i++) {
    const c = name.charCodeAt(i);
    if ((c >= 0x41 && c <= 0x5a) || c > 0x7f) return name.toLowerCase();
  }
  return name;
}

/**
 * Whether a field value starts a word with "blocked" or "infected" (`Blocked (virus found)`,
 * `BLOCKED_BY_POLICY`, `BlockedByPolicy`, `Infected`; not `unblocked`): X-Response-Info, read
 * alike by the verdict and by the connection's reuse (campaign-ap: `BlockedByPolicy` and
 * `Infected` passed).
 */
export function namesBlocked(value: string): boolean {
  return /(?:^|[^a-z0-9])(?:blocked|infected)/i.test(value);
}

const REDIRECTS: ReadonlySet<number> = new Set([301, 302, 303, 307, 308]);

/**
 * Whether an encapsulated HTTP response reads as a block page where it may also be the adapted
 * message (a RESPMOD 200, an error's page): a 403, a redirect, or a reason phrase naming a virus
 * or a block (McAfee's `403 VirusFound`). Read alike by the verdict and by the connection's reuse.
 */
export function pageBlocks(res: { status: number; reason: string }): boolean {
  return res.status === 403 || REDIRECTS.has(res.status) || /virus|infect|block/i.test(res.reason);
}
