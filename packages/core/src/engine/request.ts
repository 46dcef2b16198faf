import type { Readable } from 'node:stream';
import { Headers } from '../protocol/headers.js';
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
  socket?: { remoteAddress?: string | undefined; encrypted?: boolean | undefined } | null | undefined;
  /** HTTP/2 compatibility requests expose their stream. */
  stream?: { endAfterHeaders?: boolean | undefined } | undefined;
  complete?: boolean | undefined;
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
  if (lengths.length > 0) {
    const values = new Set(lengths.flatMap((v) => v.split(',')).map((v) => v.trim()));
    const only = values.size === 1 ? [...values][0]! : '';
    if (/^\d{1,15}$/.test(only)) contentLength = Number(only);
  }
  const chunked = headers.has('transfer-encoding');
  let hasBody: boolean;
  if (chunked) hasBody = true;
  else if (contentLength !== undefined) hasBody = contentLength > 0;
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
    contentCoding: codingsOf(headers, 'content-encoding', true) ?? 'identity',
    transferCoding: codingsOf(headers, 'transfer-encoding', false),
    fileName: fileNameOf(headers.get('content-disposition'), target),
  };
}

/** The codings a field lists, lower-cased and joined (`identity` left out if asked); undefined for none. */
function codingsOf(headers: Headers, name: string, dropIdentity: boolean): string | undefined {
  const codings = headers
    .getAll(name)
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
  if (!/\.[A-Za-z0-9]{1,10}$/.test(last)) return undefined;
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
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(facts.target)) return facts.target;
  const host = facts.host ?? 'localhost';
  const path = facts.target.startsWith('/') ? facts.target : `/${facts.target}`;
  return `${facts.scheme}://${host}${path}`;
}

/** Path of a target without query or fragment. */
export function pathOf(target: string): string {
  let t = target;
  const abs = /^[a-z][a-z0-9+.-]*:\/\/[^/?#]*/i.exec(t);
  if (abs !== null) t = t.slice(abs[0].length) || '/';
  const q = t.search(/[?#]/);
  return q === -1 ? t : t.slice(0, q);
}
