import type { Readable } from 'node:stream';
import { encodeHttpRequestHead } from '../protocol/encoder.js';
import { Headers, HOP_BY_HOP_FIELDS, isTokenFrom } from '../protocol/headers.js';
import type { RequestFacts } from './policy.js';

/**
 * The engine's view of an incoming HTTP request, duck-typed so that Node's
 * `http.IncomingMessage` and `http2.Http2ServerRequest` both fit (adapters pass `req`,
 * `request.raw` or `ctx.req`). Nothing here knows a framework.
 */
export interface ScanRequest extends Readable {
  method?: string | undefined;
  url?: string | undefined;
  headers: Record<string, string | string[] | undefined>;
  rawHeaders?: string[] | undefined;
  httpVersion?: string | undefined;
  httpVersionMajor?: number | undefined;
  socket?:
    | {
        remoteAddress?: string | undefined;
        encrypted?: boolean | undefined;
        /** The Node server it came to: its `maxHeadersCount` bounds the fields Node keeps. */
        server?: { maxHeadersCount?: number | null | undefined } | null | undefined;
        /** The connection's HTTP/1 parser: its bound on header entries, fixed when it was accepted. */
        parser?: { maxHeaderPairs?: number | undefined } | null | undefined;
      }
    | null
    | undefined;
  /** HTTP/2 compatibility requests expose their stream. */
  stream?: { endAfterHeaders?: boolean | undefined } | undefined;
  complete?: boolean | undefined;
  /** Trailer fields after a chunked body (Node fills them in before 'end'; a Web Request has none). */
  rawTrailers?: string[] | undefined;
  trailers?: Record<string, string | string[] | undefined> | undefined;
}

export interface HttpRequestFacts extends RequestFacts {
  /** Header pairs as received, in order (HTTP/2 pseudo-headers included). */
  headerPairs: Array<[string, string]>;
  httpVersion: string;
  scheme: 'http' | 'https';
  /** Declared `Content-Length`, when there is exactly one valid value. */
  contentLength: number | undefined;
  chunked: boolean;
  /** The body's content coding: 'identity', one coding, or the whole list for stacked ones. */
  contentCoding: string;
  /** The transfer codings ('chunked', or the whole list when there is more), if any. */
  transferCoding: string | undefined;
  /** File name from `Content-Disposition`, else the last segment of the path (for logs and block pages). */
  fileName: string | undefined;
  /**
   * Why the request's header fields cannot be read as Node read them (see {@link fieldsProblem}:
   * more than it keeps, a name that is not a token), if they cannot.
   */
  tooManyFields?: string | undefined;
}

/**
 * Header fields a request may have. Far above any real request's, and half the bound on the
 * fields of an encapsulated head icapkit reads back (protocol/headers.ts, 1000): a scanner that
 * returns the request (a 200 with the request's head, a block page quoting it) stays within it.
 */
export const MAX_REQUEST_FIELDS = 500;

/**
 * Bytes of head (target and header fields) a scanned request may have: half the bound on an
 * ICAP answer's head (maxHeaderSize, 64 KiB), so that a scanner's echo of them, with what it
 * adds, is read whole (a threat it names there included). Node's own bound is 16 KiB for
 * HTTP/1 (unless an application raised it: `--max-http-header-size`) and 64 KiB for HTTP/2.
 */
export const MAX_REQUEST_HEAD = 32 * 1024;

/**
 * Why a request has too many header fields, or undefined. Node's HTTP/1 server keeps the first
 * `maxHeadersCount` fields (1000 unless the server sets it; 0: all) and drops the rest without
 * a word, while the framing a dropped `Content-Length` or `Transfer-Encoding` carried still
 * applies: the application reads a body the fields icapkit sees do not announce, and the
 * request would pass unscanned as one without a body. Refused (400) before anything is decided
 * from its fields, as is any request over {@link MAX_REQUEST_FIELDS}.
 */
function fieldsProblem(req: ScanRequest, pairs: ReadonlyArray<[string, string]>): string | undefined {
  // Node's lenient parser (insecureHTTPParser) takes `Content-Length : 5` as the framing field
  // while its name, a space in it, is another field's to every reader: the body would go unseen.
  // (An HTTP/2 pseudo-header's name is checked without its ':'.)
  for (let i = 0; i < pairs.length; i++) {
    const name = pairs[i]![0];
    if (!isTokenFrom(name, name.charCodeAt(0) === 0x3a ? 1 : 0))
      return `a header field name is not a token (${JSON.stringify(name.slice(0, 64))}): what it says of the body cannot be read as Node reads it`;
  }
  return countProblem(req, pairs.length);
}

function countProblem(req: ScanRequest, fields: number): string | undefined {
  // The connection's own bound (set when it was accepted: a server's maxHeadersCount changed
  // since does not apply to it), else the server's, else Node's default.
  const pairs = req.socket?.parser?.maxHeaderPairs;
  const max = typeof pairs === 'number' ? pairs / 2 : req.socket?.server?.maxHeadersCount;
  const kept = typeof max === 'number' ? (max > 0 ? Math.floor(max) : Number.POSITIVE_INFINITY) : 1000;
  if (fields < kept && fields <= MAX_REQUEST_FIELDS) return undefined;
  // An HTTP/2 stream (nghttp2 resets one with too many fields, it drops none); not the version a
  // client wrote on an HTTP/1 request line (`HTTP/2.0`, which llhttp accepts).
  if (fields >= kept && req.stream === undefined)
    return `the request has at least ${kept} header fields, the HTTP server's limit (maxHeadersCount): the fields past it are dropped, and with them what they say of its body`;
  if (fields > MAX_REQUEST_FIELDS)
    return `the request has ${fields} header fields, more than ${MAX_REQUEST_FIELDS}`;
  return undefined;
}

/**
 * Whether a request carries a body, as the scan reads its head: a Content-Length above 0 (or
 * one it cannot use), chunked, an HTTP/2 stream its headers did not end, or header fields that
 * cannot be read as Node read them (see {@link fieldsProblem}).
 */
export function requestHasBody(req: ScanRequest): boolean {
  return requestFacts(req).hasBody;
}

export function requestFacts(req: ScanRequest): HttpRequestFacts {
  const headerPairs = pairsOf(req);
  const headers = new Headers(headerPairs);
  const method = (req.method ?? headers.get(':method') ?? 'GET').toUpperCase();
  const target = req.url ?? headers.get(':path') ?? '/';
  const host = headers.get('host') ?? headers.get(':authority');
  const httpVersion = req.httpVersion ?? (req.httpVersionMajor === 2 ? '2.0' : '1.1');
  const scheme =
    (headers.get(':scheme') ?? (req.socket?.encrypted ? 'https' : 'http')).toLowerCase() === 'https'
      ? 'https'
      : 'http';
  const lengths = headers.getAll('content-length');
  let contentLength: number | undefined;
  // One field of digits (the usual case) is its own only value; anything else is read below.
  if (lengths.length === 1 && isLength(lengths[0]!)) contentLength = Number(lengths[0]);
  else if (lengths.length > 0) {
    const values = new Set(lengths.flatMap((v) => v.split(',')).map((v) => v.trim()));
    const only = values.size === 1 ? [...values][0]! : '';
    if (isLength(only)) contentLength = Number(only);
  }
  const transfer = headers.getAll('transfer-encoding');
  const chunked = transfer.length > 0;
  const tooManyFields = fieldsProblem(req, headerPairs);
  let hasBody: boolean;
  // Fields were dropped: whether a body follows is unknown (the answer closes the connection).
  if (chunked || tooManyFields !== undefined) hasBody = true;
  // An HTTP/2 stream its headers did not end may carry trailer fields after an empty body.
  else if (contentLength !== undefined) hasBody = contentLength > 0 || req.stream?.endAfterHeaders === false;
  else if (lengths.length > 0)
    hasBody = true; // an unusable Content-Length: treat as a body of unknown length
  else if (httpVersion.startsWith('2'))
    hasBody = req.stream?.endAfterHeaders === false || (req.stream === undefined && !req.readableEnded);
  else hasBody = false;
  return {
    method,
    target,
    host,
    headers,
    clientIp: req.socket?.remoteAddress,
    hasBody,
    headerPairs,
    httpVersion,
    scheme,
    contentLength,
    chunked,
    contentCoding: codingsOf(headers.getAll('content-encoding'), true) ?? 'identity',
    transferCoding: codingsOf(transfer, false),
    fileName: fileNameOf(headers.get('content-disposition'), target),
    tooManyFields,
  };
}

/**
 * Why the request's trailer fields (after its chunked body, known once the body has ended) are
 * refused, or undefined when there are none. Node hands them to the application
 * (`req.trailers`, `req.rawTrailers`) but they are no part of the body the ICAP server scans.
 */
export function trailerProblem(req: ScanRequest): string | undefined {
  const raw = req.rawTrailers;
  // The usual request (Node's empty array): nothing to build, twice per scan on the hot path.
  if (Array.isArray(raw) && raw.length === 0) return undefined;
  const names: string[] = [];
  if (Array.isArray(raw)) for (let i = 0; i < raw.length; i += 2) names.push(raw[i]!);
  // Not Node's `trailers` getter when `rawTrailers` is there: it adds a property to the request.
  if (names.length === 0 && !Array.isArray(raw) && typeof req.trailers === 'object' && req.trailers !== null)
    names.push(...Object.keys(req.trailers));
  if (names.length === 0) return undefined;
  const shown = names.slice(0, 8).map((n) => JSON.stringify(n.slice(0, 64)));
  const more = names.length > shown.length ? ` and ${names.length - shown.length} more` : '';
  return `the request has trailer fields after its body (${shown.join(', ')}${more}), which would reach the application unscanned`;
}

/** A valid Content-Length value: 1 to 15 digits (what `/^\d{1,15}$/` accepts), without a regular expression. */
function isLength(v: string): boolean {
  if (v.length === 0 || v.length > 15) return false;
  for (let i = 0; i < v.length; i++) {
    const c = v.charCodeAt(i);
    if (c < 0x30 || c > 0x39) return false;
  }
  return true;
}

/** The codings a field's values list, lower-cased and joined (`identity` left out if asked); undefined for none. */
function codingsOf(values: string[], dropIdentity: boolean): string | undefined {
  if (values.length === 0) return undefined;
  const codings = values
    .flatMap((v) => v.split(','))
    .map((c) => c.trim().toLowerCase())
    .filter((c) => c !== '' && !(dropIdentity && c === 'identity'));
  return codings.length === 0 ? undefined : codings.join(', ');
}

function fileNameOf(disposition: string | undefined, target: string): string | undefined {
  if (disposition !== undefined) {
    const star = /filename\*\s*=\s*(?:UTF-8|utf-8)''([^;]+)/.exec(disposition);
    if (star !== null) {
      try {
        return decodeURIComponent(star[1]!.trim());
      } catch {
        // fall through to the plain parameter
      }
    }
    const plain = /filename\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;\s]+))/.exec(disposition);
    if (plain !== null) return (plain[1] ?? plain[2])!.replace(/\\(.)/g, '$1');
  }
  // Otherwise the last path segment, when it looks like a file name (has an extension).
  const path = pathOf(target);
  const last = path.slice(path.lastIndexOf('/') + 1);
  // (No '.' at all, the usual case: no extension, without the pattern.)
  if (!last.includes('.') || !/\.[A-Za-z0-9]{1,10}$/.test(last)) return undefined;
  try {
    return decodeURIComponent(last);
  } catch {
    return last;
  }
}

function pairsOf(req: ScanRequest): Array<[string, string]> {
  const raw = req.rawHeaders;
  const out: Array<[string, string]> = [];
  if (Array.isArray(raw) && raw.length > 0) {
    for (let i = 0; i + 1 < raw.length; i += 2) out.push([raw[i]!, raw[i + 1]!]);
    return out;
  }
  for (const [name, value] of Object.entries(req.headers)) {
    if (value === undefined) continue;
    if (Array.isArray(value)) for (const v of value) out.push([name, v]);
    else out.push([name, value]);
  }
  return out;
}

/** The request target in absolute form (`http://host/path`), as a proxy sends it to ICAP. */
export function absoluteTarget(facts: HttpRequestFacts): string {
  // A path (the usual case) cannot start with a scheme.
  if (facts.target.charCodeAt(0) !== 0x2f && /^[a-z][a-z0-9+.-]*:\/\//i.test(facts.target))
    return facts.target;
  // An empty Host (allowed by HTTP/1.1) would read `http:///path`, which URL parsers take apart differently.
  const host = facts.host || 'localhost';
  const path = facts.target.startsWith('/') ? facts.target : `/${facts.target}`;
  return `${facts.scheme}://${host}${path}`;
}

/** Path of a target without query or fragment. */
export function pathOf(target: string): string {
  let t = target;
  // An origin-form target (a path: the usual case) cannot start with a scheme.
  if (t.charCodeAt(0) !== 0x2f) {
    const abs = /^[a-z][a-z0-9+.-]*:\/\/[^/?#]*/i.exec(t);
    if (abs !== null) t = t.slice(abs[0].length) || '/';
  }
  // The first '?' or '#' (what `t.search(/[?#]/)` finds), without a regular expression.
  const query = t.indexOf('?');
  const hash = t.indexOf('#');
  const q = query === -1 ? hash : hash === -1 ? query : Math.min(query, hash);
  return q === -1 ? t : t.slice(0, q);
}

/**
 * An authority as RFC 3986 allows it in a URI (`host[:port]`, the host a reg-name, IPv4 or an
 * IP literal). Anything else in Host or `:authority` (a space, a tab, U+00A0, `/`, `?`, `#`, `@`)
 * would change how the ICAP server splits the absolute URI it gets (another host, another path).
 */
const AUTHORITY = /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]*)(?::[0-9]{0,5})?$/;

/** Visible ASCII (0x21-0x7e), the only characters of a request target (RFC 9112 §3.2, RFC 3986); not empty. */
function isVisibleAscii(s: string): boolean {
  if (s.length === 0) return false;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x21 || c > 0x7e) return false;
  }
  return true;
}

/** A field value that is fine to send (the ICAP server reads it as the application does). */
const VALUE_OK = 0;
/** A control character other than HTAB, or whitespace (SP, HTAB) leading or trailing. */
const VALUE_UNSAFE = 1;
/** A character above 0xff (the field is written one byte per character). */
const VALUE_WIDE = 2;

/**
 * What is wrong with a field value, if anything: VALUE_UNSAFE where
 * `/[\x00-\x08\x0a-\x1f\x7f]|^[ \t]|[ \t]$/` matches, else VALUE_WIDE for a character above
 * 0xff, else VALUE_OK (one pass over the value).
 */
function valueProblem(v: string): number {
  const n = v.length;
  if (n > 0) {
    const first = v.charCodeAt(0);
    const last = v.charCodeAt(n - 1);
    if (first === 0x20 || first === 0x09 || last === 0x20 || last === 0x09) return VALUE_UNSAFE;
  }
  let wide = false;
  for (let i = 0; i < n; i++) {
    const c = v.charCodeAt(i);
    if (c < 0x20 ? c !== 0x09 : c === 0x7f) return VALUE_UNSAFE;
    if (c > 0xff) wide = true;
  }
  return wide ? VALUE_WIDE : VALUE_OK;
}

/**
 * Why the request head the engine would encapsulate cannot be sent to the ICAP server as the
 * application reads it, or undefined when it can. Everything checked comes from the HTTP
 * client (method, target, Host, `:authority`, `:path`, header names and values, the fields
 * `Connection` names), so a problem here is the client's: the request is refused (400) before
 * any ICAP attempt, and never reaches the failure action. `absolute`: the profile sends the target in absolute form.
 */
export function encapsulationProblem(facts: HttpRequestFacts, absolute: boolean): string | undefined {
  if (!isTokenFrom(facts.method, 0)) return 'the request method is not a token';
  const target = facts.target;
  if (!isVisibleAscii(target)) return 'the request target contains characters other than visible ASCII';
  // A path (the usual case) cannot start with a scheme.
  const absoluteForm = target.charCodeAt(0) !== 0x2f && /^[a-z][a-z0-9+.-]*:\/\//i.test(target);
  if (!absoluteForm && !target.startsWith('/') && !(target === '*' && facts.method === 'OPTIONS'))
    return 'the request target is neither a path nor an absolute URI';
  if (absoluteForm) {
    const authority = /^[a-z][a-z0-9+.-]*:\/\/([^/?#]*)/i.exec(target)![1]!;
    if (authority.includes('@') || !AUTHORITY.test(authority))
      return 'the authority of the request target is not a valid host';
  }
  const hosts = facts.headers.getAll('host');
  if (hosts.length > 1) return 'the request has more than one Host field';
  const authorities = facts.headers.getAll(':authority');
  if (authorities.length > 1) return 'the request has more than one :authority';
  if (hosts.length === 1 && authorities.length === 1 && hosts[0] !== authorities[0])
    return 'Host and :authority differ';
  for (const paths of [':path', ':method', ':scheme']) {
    if (facts.headers.getAll(paths).length > 1) return `the request has more than one ${paths}`;
  }
  const host = hosts[0] ?? authorities[0];
  if (host !== undefined && !isPlainAuthority(host) && !AUTHORITY.test(host))
    return 'the Host of the request is not a valid host';
  let pseudo = false;
  // The encapsulated request line counts too: its target (a long query), in absolute form with
  // the Host in it a second time.
  let size =
    facts.method.length + target.length + 12 + (absolute && !absoluteForm ? (host?.length ?? 0) + 8 : 0);
  for (const [name, value] of facts.headerPairs) {
    size += name.length + value.length + 4;
    if (size > MAX_REQUEST_HEAD)
      return `the request's head (its target and header fields) exceeds ${MAX_REQUEST_HEAD / 1024} KiB (a scanner returning it would be answering more than icapkit reads of a head)`;
    // A pseudo-header's name is checked without its ':'.
    const from = name.charCodeAt(0) === 0x3a ? 1 : 0;
    if (from === 1) pseudo = true;
    if (!isTokenFrom(name, from)) return 'a header name is not a token';
    const problem = valueProblem(value);
    if (problem === VALUE_UNSAFE)
      return `the ${name} header has a control character or surrounding whitespace`;
    if (problem === VALUE_WIDE) return `the ${name} header has a character that is not one byte`;
  }
  const connection = connectionProblem(facts.headers);
  if (connection !== undefined) return connection;
  // Without pseudo-headers, what the encoder checks was checked above (the method a token, the
  // target visible ASCII, as is the Host an absolute target is made from; names tokens, values
  // free of CR, LF and NUL): only the version is left. Pseudo-headers (HTTP/2) replace the
  // method, target or Host: the head is then encoded to see.
  if (!pseudo && versionEncodes(facts.httpVersion)) return undefined;
  try {
    encodeHttpRequestHead({
      method: facts.method,
      target: absolute ? absoluteTarget(facts) : target,
      httpVersion: facts.httpVersion,
      headers: facts.headerPairs,
    });
  } catch (err) {
    return `the request head cannot be encapsulated: ${err instanceof Error ? err.message : String(err)}`;
  }
  return undefined;
}

/**
 * Why the request's `Connection` names a field the application reads, or undefined. Node hands
 * every field to the application, those `Connection` names included, but they are never
 * encapsulated (RFC 9110 §7.6.1: the encoder drops them): a client could hide its Content-Type,
 * Content-Disposition or Host from the ICAP server while the handler reads them. A token naming
 * a fixed hop-by-hop field (`keep-alive`, `upgrade`, `te`...), a field the request does not have
 * (`close`) or a pseudo-header is harmless. (HTTP/2 forbids `Connection`: Node refuses such a stream.)
 */
function connectionProblem(headers: Headers): string | undefined {
  const values = headers.getAll('connection');
  for (const value of values) {
    for (const token of value.split(',')) {
      const t = token.trim().toLowerCase();
      if (t === '' || HOP_BY_HOP_FIELDS.has(t) || t.charCodeAt(0) === 0x3a || !headers.has(t)) continue;
      return `the Connection header names the ${JSON.stringify(token.trim().slice(0, 64))} field, which the application reads but the ICAP server would not be sent`;
    }
  }
  return undefined;
}

/**
 * A host of letters, digits, '.' and '-', with a port of at most 5 digits or none: the usual Host,
 * which AUTHORITY accepts (a reg-name and a port). False says nothing: AUTHORITY decides then.
 */
function isPlainAuthority(h: string): boolean {
  let i = 0;
  for (; i < h.length; i++) {
    const c = h.charCodeAt(i);
    if (c === 0x3a) break;
    if (
      !(
        (c >= 0x61 && c <= 0x7a) ||
        (c >= 0x41 && c <= 0x5a) ||
        (c >= 0x30 && c <= 0x39) ||
        c === 0x2e ||
        c === 0x2d
      )
    )
      return false;
  }
  if (i === h.length) return true;
  if (h.length - i - 1 > 5) return false;
  for (let j = i + 1; j < h.length; j++) {
    const c = h.charCodeAt(j);
    if (c < 0x30 || c > 0x39) return false;
  }
  return true;
}

/** Whether encodeHttpRequestHead accepts this HTTP version (HTTP/2 is written as HTTP/1.1). */
function versionEncodes(v: string): boolean {
  // The versions Node's HTTP/1 parser reports, without the string and the pattern below.
  if (v === '1.1' || v === '1.0') return true;
  return v.startsWith('2') || /^HTTP\/\d\.\d$/.test(v.startsWith('HTTP/') ? v : `HTTP/${v}`);
}

/** The media type of a Content-Type value, lower case, without its parameters ('' for none). */
export function mediaTypeOf(contentType: string | undefined): string {
  if (contentType === undefined) return '';
  const semi = contentType.indexOf(';');
  return (semi === -1 ? contentType : contentType.slice(0, semi)).trim().toLowerCase();
}

/** What follows the name `charset` in a Content-Type: `=` and a quoted or bare value. */
export const CHARSET_VALUE = /^\s*=\s*(?:"([^"]*)"|([^\s;,"]*))/;

/** The value of the first readable `charset` parameter, lower case (admission allows one at most). */
export function charsetOf(contentType: string): string | undefined {
  const re = /charset/gi;
  for (let m = re.exec(contentType); m !== null; m = re.exec(contentType)) {
    const rest = CHARSET_VALUE.exec(contentType.slice(m.index + m[0].length));
    if (rest !== null) return (rest[1] ?? rest[2])!.trim().toLowerCase();
  }
  return undefined;
}
