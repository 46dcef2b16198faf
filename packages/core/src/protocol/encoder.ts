import { IcapError, IcapErrorCodes } from '../errors.js';
import { HOP_BY_HOP_FIELDS, isSafeFieldValue, isToken } from './headers.js';
import { maskQuery } from './shown-uri.js';

/**
 * Encoding of ICAP requests (and, for the embedded server, responses): the ICAP head with
 * `Encapsulated` offsets computed on bytes, the encapsulated HTTP header sections, and chunk
 * framing for bodies. Pure functions over buffers; nothing here touches a socket.
 */

export const CRLF = Buffer.from('\r\n');
/** Ends a chunked body (or a preview that the body continues after). */
export const LAST_CHUNK = Buffer.from('0\r\n\r\n');
/** Ends a preview that contains the whole body (RFC 3507 §4.5). */
export const LAST_CHUNK_IEOF = Buffer.from('0; ieof\r\n\r\n');

/** A header list as pairs; several pairs may share a name. */
export type HeaderPairs = ReadonlyArray<readonly [name: string, value: string]>;

/**
 * Header input accepted from callers: pairs, Node's `rawHeaders` (a flat name/value list that
 * keeps case and repetition), or Node's `headers` object.
 */
export type HeaderInput =
  | HeaderPairs
  | readonly string[]
  | Readonly<Record<string, string | readonly string[] | undefined>>;

export function toPairs(input: HeaderInput | undefined): Array<[string, string]> {
  if (input === undefined) return [];
  if (Array.isArray(input)) {
    if (input.length === 0) return [];
    if (typeof input[0] === 'string') {
      const flat = input as readonly string[];
      const out: Array<[string, string]> = [];
      for (let i = 0; i + 1 < flat.length; i += 2) out.push([flat[i]!, flat[i + 1]!]);
      return out;
    }
    return (input as HeaderPairs).map(([n, v]) => [n, v]);
  }
  const out: Array<[string, string]> = [];
  for (const [name, value] of Object.entries(
    input as Record<string, string | readonly string[] | undefined>,
  )) {
    if (value === undefined) continue;
    if (typeof value === 'string') out.push([name, value]);
    else for (const v of value) out.push([name, v]);
  }
  return out;
}

export interface HttpRequestHeadInit {
  method: string;
  /** Request target as sent by the client (origin-form `/path?q`, or absolute-form). */
  target: string;
  /** Defaults to `HTTP/1.1`; HTTP/2 requests are always encapsulated as HTTP/1.1. */
  httpVersion?: string;
  headers?: HeaderInput;
}

export interface HttpResponseHeadInit {
  status: number;
  reason?: string;
  httpVersion?: string;
  headers?: HeaderInput;
}

export interface EncodeHttpOptions {
  /**
   * Length of the body that will follow, when known. A `Content-Length` field is written with
   * it (replacing any given one); when unknown, a given `Content-Length` is dropped, since it
   * cannot be trusted to describe the bytes actually scanned.
   */
  contentLength?: number | undefined;
}

/**
 * Builds an encapsulated HTTP/1.1 request head. HTTP/2 pseudo-headers (`:method`, `:path`,
 * `:authority`, `:scheme`) become the request line and `Host`; hop-by-hop fields and the
 * fields named by `Connection` are left out.
 */
export function encodeHttpRequestHead(init: HttpRequestHeadInit, options: EncodeHttpOptions = {}): Buffer {
  return encodeText(httpRequestHeadText(init, options));
}

/**
 * {@link encodeHttpRequestHead} as text, before its encoding (see {@link headText}): what
 * {@link encodeIcapRequest} takes to build the whole head in one buffer.
 */
export function httpRequestHeadText(init: HttpRequestHeadInit, options: EncodeHttpOptions = {}): string {
  let method = init.method;
  let target = init.target;
  let authority: string | undefined;
  const kept = filterHeaders(pairsOf(init.headers), options, (name, value) => {
    if (name === ':method') method = value;
    else if (name === ':path') target = value;
    else if (name === ':authority') authority = value;
  });
  if (authority !== undefined && !kept.some(([n]) => n.toLowerCase() === 'host'))
    kept.unshift(['Host', authority]);
  if (!isToken(method)) throw invalid(`HTTP method ${JSON.stringify(method)} is not a token`);
  if (target === '' || /[\s\x00-\x1f\x7f]/.test(target))
    throw invalid(`HTTP request target ${JSON.stringify(target)} is not valid`);
  const version =
    init.httpVersion === undefined || init.httpVersion.startsWith('2')
      ? 'HTTP/1.1'
      : httpVersion(init.httpVersion);
  return headText(`${method} ${target} ${version}`, kept);
}

/** Builds an encapsulated HTTP response head (hop-by-hop fields left out). */
export function encodeHttpResponseHead(init: HttpResponseHeadInit, options: EncodeHttpOptions = {}): Buffer {
  return encodeText(httpResponseHeadText(init, options));
}

/** {@link encodeHttpResponseHead} as text, before its encoding (see {@link httpRequestHeadText}). */
export function httpResponseHeadText(init: HttpResponseHeadInit, options: EncodeHttpOptions = {}): string {
  if (!Number.isInteger(init.status) || init.status < 100 || init.status > 999)
    throw invalid(`HTTP status ${init.status}`);
  const reason = init.reason ?? '';
  if (!isSafeFieldValue(reason)) throw invalid('HTTP reason phrase contains CR, LF or NUL');
  const kept = filterHeaders(pairsOf(init.headers), options, () => {});
  const version =
    init.httpVersion === undefined || init.httpVersion.startsWith('2')
      ? 'HTTP/1.1'
      : httpVersion(init.httpVersion);
  // The reason phrase as given (it may end in whitespace); no separator when there is none.
  return headText(reason === '' ? `${version} ${init.status}` : `${version} ${init.status} ${reason}`, kept);
}

/** The pairs of a header input, read only: a list of pairs as it is (no copy), else {@link toPairs}. */
function pairsOf(input: HeaderInput | undefined): HeaderPairs {
  if (input !== undefined && Array.isArray(input) && (input.length === 0 || typeof input[0] !== 'string'))
    return input as HeaderPairs;
  return toPairs(input);
}

function httpVersion(v: string): string {
  const s = v.startsWith('HTTP/') ? v : `HTTP/${v}`;
  if (!/^HTTP\/\d\.\d$/.test(s)) throw invalid(`HTTP version ${JSON.stringify(v)}`);
  return s;
}

function filterHeaders(
  pairs: HeaderPairs,
  options: EncodeHttpOptions,
  onPseudo: (name: string, value: string) => void,
): Array<readonly [string, string]> {
  // Hop-by-hop fields (and those `Connection` names) never go into an encapsulated section.
  // One pass (each name lower-cased once); the fields a `Connection` names, known only at its
  // end, are taken out after it.
  let named: Set<string> | undefined;
  const kept: Array<readonly [string, string]> = [];
  const keys: string[] = [];
  for (const pair of pairs) {
    const name = pair[0];
    const key = name.toLowerCase();
    if (key === 'connection') {
      named = connectionTokens(pair[1], named);
      continue;
    }
    if (name.startsWith(':')) {
      onPseudo(key, pair[1]);
      continue;
    }
    if (HOP_BY_HOP_FIELDS.has(key) || key === 'content-length') continue;
    kept.push(pair);
    keys.push(key);
  }
  let out = kept;
  if (named !== undefined && named.size > 0) {
    const set = named;
    out = kept.filter((_, i) => !set.has(keys[i]!));
  }
  if (options.contentLength !== undefined) out.push(['Content-Length', String(options.contentLength)]);
  return out;
}

/** The field names a `Connection` value lists, lower-cased, added to `into` (as connectionNamed). */
function connectionTokens(value: string, into: Set<string> | undefined): Set<string> {
  const named = into ?? new Set<string>();
  for (const token of value.split(',')) {
    const t = token.trim().toLowerCase();
    if (t !== '') named.add(t);
  }
  return named;
}

/**
 * Start line plus header lines plus the empty line, as bytes. A value made only of code
 * points up to U+00FF is written byte for byte (Latin-1, as Node's HTTP parser hands header
 * values over), anything else as UTF-8. Names must be tokens; values must not contain CR, LF
 * or NUL: a header can never split into two on the wire.
 */
export function headBytes(startLine: string, pairs: Iterable<readonly [string, string]>): Buffer {
  return encodeText(headText(startLine, pairs));
}

/** {@link headBytes} as text, checked, before its encoding ({@link encodeText}). */
export function headText(startLine: string, pairs: Iterable<readonly [string, string]>): string {
  let s = `${startLine}\r\n`;
  for (const [name, value] of pairs) {
    if (!isToken(name)) throw invalid(`header name ${JSON.stringify(name)} is not a token`);
    if (!isSafeFieldValue(value)) throw invalid(`header ${name} has CR, LF or NUL in its value`);
    s += `${name}: ${value}\r\n`;
  }
  s += '\r\n';
  return s;
}

/** A head's bytes: byte for byte when every code point is up to U+00FF, else UTF-8. */
function encodeText(s: string): Buffer {
  return Buffer.from(s, isLatin1(s) ? 'latin1' : 'utf8');
}

function isLatin1(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    if (s.charCodeAt(i) > 0xff) return false;
  }
  return true;
}

/** Bytes of a head in its encoding ({@link encodeText}). */
function headLength(head: Buffer | string): number {
  if (typeof head !== 'string') return head.length;
  return isLatin1(head) ? head.length : Buffer.byteLength(head, 'utf8');
}

export type IcapRequestMethod = 'REQMOD' | 'RESPMOD' | 'OPTIONS';

export interface IcapRequestInit {
  method: IcapRequestMethod;
  /** The full ICAP URI: `icap://host:port/service?args`. */
  uri: string;
  /** Value of the `Host` header (host and port of the ICAP server). */
  host: string;
  /**
   * Encapsulated HTTP request head (from {@link encodeHttpRequestHead}, or its text from
   * {@link httpRequestHeadText}).
   */
  httpRequestHead?: Buffer | string | undefined;
  /** Encapsulated HTTP response head (RESPMOD), as bytes or text. */
  httpResponseHead?: Buffer | string | undefined;
  /** Whether a chunked body follows the head. */
  hasBody: boolean;
  /** `Preview: n` (omit for no preview). */
  preview?: number | undefined;
  /** Offer `Allow: 204`. */
  allow204?: boolean | undefined;
  /** More ICAP headers (for example `X-Client-IP`, `Proxy-Authorization`). */
  headers?: HeaderPairs | undefined;
  userAgent?: string | undefined;
}

export interface EncodedIcapRequest {
  /** ICAP head followed by the encapsulated HTTP sections: everything before the body. */
  head: Buffer;
  /** The ICAP header lines as sent (start line excluded), for logs. */
  icapHeaders: string;
}

/** Encodes an ICAP request up to (not including) its chunked body. */
export function encodeIcapRequest(init: IcapRequestInit): EncodedIcapRequest {
  // The URI goes into the request line: a space or line break there would split it.
  if (init.uri === '' || /[\s\x00-\x1f\x7f]/.test(init.uri))
    throw invalid(`ICAP URI ${JSON.stringify(maskQuery(init.uri))} is not valid`);
  const req = init.httpRequestHead;
  const res = init.httpResponseHead;
  let encapsulated: string;
  let offset = 0;
  if (req !== undefined) {
    encapsulated = 'req-hdr=0, ';
    offset += headLength(req);
  } else {
    encapsulated = '';
  }
  if (res !== undefined) {
    encapsulated += `res-hdr=${offset}, `;
    offset += headLength(res);
  }
  if (init.method === 'OPTIONS') {
    encapsulated += 'null-body=0';
  } else if (init.hasBody) {
    encapsulated += `${init.method === 'RESPMOD' ? 'res-body' : 'req-body'}=${offset}`;
  } else {
    encapsulated += `null-body=${offset}`;
  }
  const lines: Array<readonly [string, string]> = [['Host', init.host]];
  for (const pair of init.headers ?? []) {
    // A second Encapsulated or Preview would frame the message differently for the server
    // (it reads the first): these two are written here and nowhere else.
    if (ENCODER_OWN.test(pair[0])) throw invalid(`ICAP header ${pair[0]} is set by the encoder itself`);
    lines.push(pair);
  }
  if (init.userAgent !== undefined) lines.push(['User-Agent', init.userAgent]);
  if (init.allow204) lines.push(['Allow', '204']);
  if (init.preview !== undefined && init.method !== 'OPTIONS') lines.push(['Preview', String(init.preview)]);
  lines.push(['Encapsulated', encapsulated]);
  const icap = headText(`${init.method} ${init.uri} ICAP/1.0`, lines);
  // Each part is encoded on its own (one with a code point above U+00FF is UTF-8, the others
  // stay byte for byte); when all are byte for byte, the whole head is one string, one buffer.
  if (
    isLatin1(icap) &&
    (req === undefined || (typeof req === 'string' && isLatin1(req))) &&
    (res === undefined || (typeof res === 'string' && isLatin1(res)))
  ) {
    const text =
      req === undefined
        ? res === undefined
          ? icap
          : icap + res
        : res === undefined
          ? icap + req
          : icap + req + res;
    return {
      head: Buffer.from(text, 'latin1'),
      icapHeaders: icap.slice(icap.indexOf('\n') + 1, icap.length - 2),
    };
  }
  const headBuf = encodeText(icap);
  const icapHeaders = headBuf.toString('latin1', headBuf.indexOf(0x0a) + 1, headBuf.length - 2);
  const parts = [headBuf];
  if (req !== undefined) parts.push(typeof req === 'string' ? encodeText(req) : req);
  if (res !== undefined) parts.push(typeof res === 'string' ? encodeText(res) : res);
  return { head: parts.length === 1 ? headBuf : Buffer.concat(parts), icapHeaders };
}

const ENCODER_OWN = /^(?:encapsulated|preview)$/i;

/** `User-Agent` and `Allow` lines, with and without `Allow: 204`; null when the agent is not byte for byte or unsafe. */
function tailLines(ua: string | undefined): readonly [string, string] | null {
  if (ua !== undefined && (!isSafeFieldValue(ua) || !isLatin1(ua))) return null;
  const uaLine = ua === undefined ? '' : `User-Agent: ${ua}\r\n`;
  return [`${uaLine}Allow: 204\r\n`, uaLine];
}

/**
 * {@link encodeIcapRequest} for one client's requests, the same bytes for the same input: the
 * parts of the head that stay the same from one request to the next (the request line, `Host`
 * and the client's own headers; `User-Agent` and `Allow`) are checked and joined once, and
 * kept (up to 64 URIs per method). Anything off the usual road (a part that is not byte
 * for byte, a header the encoder refuses, an encapsulated head given as bytes) goes through
 * {@link encodeIcapRequest} itself, which throws what it throws.
 */
export class IcapHeadEncoder {
  readonly #host: string;
  readonly #headers: HeaderPairs;
  readonly #userAgent: string | undefined;
  /**
   * URI → `[start line CRLF, "Host: h" CRLF and the client's header lines]`, checked, one map
   * per method (keyed by the URI itself: no `METHOD uri` string to build and hash per request).
   */
  readonly #reqmodStarts = new Map<string, readonly [string, string]>();
  readonly #respmodStarts = new Map<string, readonly [string, string]>();
  /** The lines after the request's own headers, with and without `Allow: 204`; null: not byte for byte. */
  readonly #tails: readonly [with204: string, without204: string] | null;

  constructor(host: string, headers: HeaderPairs, userAgent: string | undefined) {
    this.#host = host;
    this.#headers = headers;
    this.#userAgent = userAgent;
    this.#tails = tailLines(userAgent);
  }

  /**
   * Encodes a request whose header pairs are the client's (given to the constructor) followed
   * by `extra`, as {@link encodeIcapRequest} would with `headers` set to both.
   */
  encode(
    method: IcapRequestMethod,
    uri: string,
    httpRequestHead: string | undefined,
    httpResponseHead: string | undefined,
    hasBody: boolean,
    preview: number | undefined,
    allow204: boolean,
    extra: HeaderPairs,
  ): EncodedIcapRequest {
    const fast = this.#fast(
      method,
      uri,
      httpRequestHead,
      httpResponseHead,
      hasBody,
      preview,
      allow204,
      extra,
    );
    if (fast !== undefined) return fast;
    return encodeIcapRequest({
      method,
      uri,
      host: this.#host,
      httpRequestHead,
      httpResponseHead,
      hasBody,
      preview,
      allow204,
      headers: extra.length === 0 ? this.#headers : [...this.#headers, ...extra],
      userAgent: this.#userAgent,
    });
  }

  #fast(
    method: IcapRequestMethod,
    uri: string,
    req: string | undefined,
    res: string | undefined,
    hasBody: boolean,
    preview: number | undefined,
    allow204: boolean,
    extra: HeaderPairs,
  ): EncodedIcapRequest | undefined {
    if (method !== 'REQMOD' && method !== 'RESPMOD') return undefined;
    const start = this.#start(method, uri);
    const tails = this.#tails;
    if (start === undefined || tails === null) return undefined;
    // The cached lines were checked when they were kept: only the request's own are checked here.
    let own = '';
    for (let k = 0; k < extra.length; k++) {
      const pair = extra[k]!;
      const name = pair[0];
      const value = pair[1];
      if (ENCODER_OWN.test(name) || !isToken(name) || !isSafeFieldValue(value)) return undefined;
      own += `${name}: ${value}\r\n`;
    }
    if (own !== '' && !isLatin1(own)) return undefined;
    let lines = start[1] + own;
    if (req !== undefined && !isLatin1(req)) return undefined;
    if (res !== undefined && !isLatin1(res)) return undefined;
    lines += allow204 ? tails[0] : tails[1];
    if (preview !== undefined) lines += `Preview: ${preview}\r\n`;
    // As encodeIcapRequest: offsets in bytes, here one per character (every part is byte for byte).
    let encapsulated: string;
    let offset = 0;
    if (req !== undefined) {
      encapsulated = 'req-hdr=0, ';
      offset = req.length;
    } else {
      encapsulated = '';
    }
    if (res !== undefined) {
      encapsulated += `res-hdr=${offset}, `;
      offset += res.length;
    }
    encapsulated += hasBody
      ? `${method === 'RESPMOD' ? 'res-body' : 'req-body'}=${offset}`
      : `null-body=${offset}`;
    lines += `Encapsulated: ${encapsulated}\r\n`;
    let text = `${start[0]}${lines}\r\n`;
    if (req !== undefined) text += req;
    if (res !== undefined) text += res;
    return { head: Buffer.from(text, 'latin1'), icapHeaders: lines };
  }

  /** The request line and the lines that precede the request's own headers, checked; undefined: not here. */
  #start(method: 'REQMOD' | 'RESPMOD', uri: string): readonly [string, string] | undefined {
    const starts = method === 'REQMOD' ? this.#reqmodStarts : this.#respmodStarts;
    let start = starts.get(uri);
    if (start !== undefined) return start;
    if (uri === '' || /[\s\x00-\x1f\x7f]/.test(uri)) return undefined;
    const startLine = `${method} ${uri} ICAP/1.0\r\n`;
    let lines = '';
    const pairs: Array<readonly [string, string]> = [['Host', this.#host], ...this.#headers];
    for (let k = 0; k < pairs.length; k++) {
      const [name, value] = pairs[k]!;
      if ((k > 0 && ENCODER_OWN.test(name)) || !isToken(name) || !isSafeFieldValue(value)) return undefined;
      lines += `${name}: ${value}\r\n`;
    }
    if (!isLatin1(startLine) || !isLatin1(lines)) return undefined;
    start = [startLine, lines];
    // A few services in practice; a caller naming a new one per request gets no cache.
    if (starts.size < 64) starts.set(uri, start);
    return start;
  }
}

/** Chunk sizes whose header line is kept ready. */
const SMALL_CHUNK = 4096;
/** Bytes per kept header line: up to three hex digits and CRLF. */
const HEADER_SLOT = 5;
/**
 * The kept header lines, views over one arena of their own. Not `Buffer.from` per line: each
 * such small Buffer is a slice of Node's shared 8 KiB pool and would keep a whole slab alive.
 */
const chunkHeaders: Buffer[] = [];
let chunkHeaderArena: Buffer | undefined;

/** `<hex size>\r\n`, the line before a chunk of `size` bytes. */
export function chunkHeader(size: number): Buffer {
  if (size >= 0 && size < SMALL_CHUNK && Number.isInteger(size)) {
    let b = chunkHeaders[size];
    if (b === undefined) {
      chunkHeaderArena ??= Buffer.allocUnsafeSlow(SMALL_CHUNK * HEADER_SLOT);
      const at = size * HEADER_SLOT;
      const n = chunkHeaderArena.write(`${size.toString(16)}\r\n`, at, 'latin1');
      b = chunkHeaderArena.subarray(at, at + n);
      chunkHeaders[size] = b;
    }
    return b;
  }
  return Buffer.from(`${size.toString(16)}\r\n`, 'latin1');
}

function invalid(message: string): IcapError {
  return new IcapError(IcapErrorCodes.INVALID_ARGUMENT, message);
}
