import { Readable } from 'node:stream';
import type { ScanRequest } from '@icapkit/core';
import { WebBodyReadable } from './body.js';

/**
 * A Web `Request` as the engine's {@link ScanRequest}: the same facts the Node adapters hand
 * over (method, origin-form target, header pairs, client address, scheme), and the body as a
 * Node stream read with backpressure.
 *
 * Where a Web request says less than an HTTP/1.1 message, it is said the way the engine already
 * understands:
 * - the target is the URL's path and query, as the application reads it (`new URL(req.url)`);
 * - the host is the URL's: a `Host` header that names another host (letter case and a default
 *   port aside) is refused by the engine (400, "Host and :authority differ"), since the
 *   application and the ICAP server would not see the same request; without a `Host` header
 *   the ICAP server gets the URL's host;
 * - a body read from the Request's own stream is framed as `Transfer-Encoding: chunked`, its
 *   `Content-Length` left out (the stream is what the application reads, and its length is
 *   unknown until it ends, exactly as for a chunked upload); a request without a body carries
 *   no framing field at all (a `Content-Length` a GET request names is not a body the
 *   application can read).
 */
export interface WebScanRequest extends ScanRequest {
  /** Whether the body stream was read from (a request whose body was never opened can be handed back as it is). */
  readonly bodyOpened: boolean;
}

export interface WebRequestInfo {
  /** The client's address (the Node adapters take it from the socket). */
  clientIp?: string | undefined;
  /**
   * The Node request under the Web one (@hono/node-server's `env.incoming`): its trailer fields,
   * which an application can read there, are the engine's to refuse (a Web Request has none).
   */
  incoming?: NodeUnder | undefined;
  /**
   * The body to read instead of `request.body`: the Node request under a Request that reads its
   * body from it and that nothing has asked for the body of yet (node-server.ts).
   */
  nodeBody?: Readable | undefined;
  /**
   * `nodeBody` is a Node request something already read before the scan: the scan request
   * stands for its stream, so that the engine refuses it (see {@link ReadFirstRequestReadable}).
   */
  nodeBodyRead?: boolean | undefined;
}

/** What the scan reads of the Node request under a Web one. */
interface NodeUnder {
  rawTrailers?: string[] | undefined;
  /** Its HTTP/2 stream: one its headers did not end may carry trailers after an empty body. */
  stream?: { endAfterHeaders?: boolean | undefined } | undefined;
}

const FRAMING = new Set(['content-length', 'transfer-encoding']);

export function toScanRequest(request: Request, info: WebRequestInfo = {}): WebScanRequest {
  const url = new URL(request.url);
  const body = info.nodeBody ?? request.body;
  // A Web body stream is the body, whatever `Content-Length` says: a Request can be made with
  // `content-length: 0` (or any length) over a stream of other bytes (campaign-ap AP5), and the
  // application reads the stream. So its length is unknown until it ends, as for a chunked
  // upload. Only a Node request's body is held to its framing fields by Node's parser.
  const framed = info.nodeBody !== undefined;
  const pairs: Array<[string, string]> = [];
  let length: string | undefined;
  let transfer = false;
  for (const [name, value] of request.headers) {
    if (FRAMING.has(name)) {
      if (name === 'content-length') length = value;
      else transfer = true;
      if (body === null || !framed) continue;
    }
    pairs.push([name, value]);
  }
  if (body !== null && ((length === undefined && !transfer) || !framed))
    pairs.push(['transfer-encoding', 'chunked']);
  // The host the application reads is the URL's: a Host header naming another one is refused.
  const host = request.headers.get('host');
  if (host === null || !sameHost(host, url)) pairs.push([':authority', url.host]);

  const headers = headerRecord(pairs);
  // A request without a body gets an ended stream of its own (the engine does not read it).
  const Scanned = info.nodeBodyRead === true ? ReadFirstRequestReadable : WebRequestReadable;
  return new Scanned(
    body,
    request.method,
    `${url.pathname}${url.search}`,
    headers,
    pairs.flat(),
    { remoteAddress: info.clientIp, encrypted: url.protocol === 'https:' },
    info.incoming,
  );
}

/**
 * What can still be read of a `Request` whose body or URL cannot be (a server library that made
 * a lazy Request of a target the Fetch API refuses, such as @hono/node-server with an absolute
 * target carrying credentials): its method, path and header fields, and no body stream, for the
 * engine to refuse (400) before anything reads the body. Every read is guarded: a field that
 * cannot be read is left out.
 */
export function unreadableRequest(request: Request, info: WebRequestInfo = {}): WebScanRequest {
  const method = tryRead(() => request.method) ?? 'POST';
  const url = tryRead(() => new URL(request.url));
  const pairs: Array<[string, string]> = [];
  try {
    for (const [name, value] of request.headers) pairs.push([name, value]);
  } catch {
    // Headers that cannot be read: the engine refuses the request without them.
  }
  const headers = headerRecord(pairs);
  const target = url === undefined ? '/' : `${url.pathname}${url.search}`;
  return new WebRequestReadable(
    null,
    method,
    target,
    headers,
    pairs.flat(),
    { remoteAddress: info.clientIp, encrypted: url?.protocol === 'https:' },
    info.incoming,
  );
}

/** Node's `req.headers` shape: one value per name, an array for a repeated one. */
function headerRecord(pairs: Array<[string, string]>): Record<string, string | string[] | undefined> {
  const headers: Record<string, string | string[] | undefined> = {};
  for (const [name, value] of pairs) {
    const prev = headers[name];
    if (prev === undefined) headers[name] = value;
    else headers[name] = [...(Array.isArray(prev) ? prev : [prev]), value];
  }
  return headers;
}

function tryRead<T>(read: () => T): T | undefined {
  try {
    return read();
  } catch {
    return undefined;
  }
}

/**
 * The request's fields on the body stream, as one class (every request of one shape: fields
 * added to a stream one by one, and a getter defined on each, gave each request a map of its own).
 */
class WebRequestReadable extends WebBodyReadable implements WebScanRequest {
  method: string;
  url: string;
  headers: Record<string, string | string[] | undefined>;
  rawHeaders: string[];
  httpVersion = '1.1';
  httpVersionMajor = 1;
  socket: { remoteAddress: string | undefined; encrypted: boolean };
  complete: boolean;
  /** The HTTP/2 stream of the Node request under this one, when it has a body (see NodeUnder). */
  stream: NodeUnder['stream'];
  readonly #hasBody: boolean;
  readonly #incoming: NodeUnder | undefined;

  constructor(
    body: ReadableStream<Uint8Array> | Readable | null,
    method: string,
    url: string,
    headers: Record<string, string | string[] | undefined>,
    rawHeaders: string[],
    socket: { remoteAddress: string | undefined; encrypted: boolean },
    incoming: NodeUnder | undefined,
  ) {
    super(body ?? emptyBody());
    this.#hasBody = body !== null;
    this.#incoming = incoming;
    this.stream = body === null ? undefined : incoming?.stream;
    this.method = method;
    this.url = url;
    this.headers = headers;
    this.rawHeaders = rawHeaders;
    this.socket = socket;
    this.complete = body === null;
  }

  get bodyOpened(): boolean {
    return this.#hasBody && this.opened;
  }

  /** The trailer fields of the Node request under this one, if any (read once the body ended). */
  get rawTrailers(): string[] | undefined {
    return this.#incoming?.rawTrailers;
  }
}

/** The Node request a {@link ReadFirstRequestReadable} stands for. */
const READ_FIRST = Symbol('readFirst');

/**
 * The scan request of a Request whose Node request something read before the scan
 * (node-server.ts, `incomingReadFirst`). Its stream facts are that Node request's: what was read,
 * whether it ended, its readers. Those are what the engine's own check reads
 * (`bodyConsumedReason` of @icapkit/core), so the engine refuses it at once as it refuses a Node
 * adapter's request a body parser read (500, ICAP_ERR_BODY_CONSUMED, the fix said once per
 * middleware, `Connection: close` while the body is still arriving), for the same reason, in
 * either failure mode, before anything is sent to the ICAP server. A request the rules do not
 * select passes untouched, as on the Node adapters. It is never read: the engine reads no body
 * it refuses or does not scan.
 */
class ReadFirstRequestReadable extends WebRequestReadable {
  readonly [READ_FIRST]: Readable;

  constructor(body: ReadableStream<Uint8Array> | Readable | null, ...rest: WebRequestArgs) {
    super(body, ...rest);
    this[READ_FIRST] = body as Readable;
  }
}

type WebRequestArgs =
  ConstructorParameters<typeof WebRequestReadable> extends [unknown, ...infer R] ? R : never;

// Accessors, as on Readable.prototype (an own property of the stream's names would say the same).
for (const key of ['_body', 'body', 'readableEnded', 'readableDidRead', 'readableFlowing'] as const)
  Object.defineProperty(ReadFirstRequestReadable.prototype, key, {
    get(this: ReadFirstRequestReadable) {
      return (this[READ_FIRST] as unknown as Record<string, unknown>)[key];
    },
    configurable: true,
  });
// Its readers are the Node request's; every other event is this stream's own.
Object.defineProperty(ReadFirstRequestReadable.prototype, 'listenerCount', {
  value(this: ReadFirstRequestReadable, type: string | symbol, listener?: (...args: unknown[]) => void) {
    return type === 'data' || type === 'readable'
      ? this[READ_FIRST].listenerCount(type, listener)
      : Readable.prototype.listenerCount.call(this, type, listener);
  },
  configurable: true,
  writable: true,
});

function emptyBody(): ReadableStream<Uint8Array> {
  return new ReadableStream<Uint8Array>({
    start(controller) {
      controller.close();
    },
  });
}

const DEFAULT_PORT: Record<string, string> = { 'http:': '80', 'https:': '443' };

/** `host` names the URL's host (letter case aside, the default port written out or not). */
function sameHost(host: string, url: URL): boolean {
  const h = host.toLowerCase();
  if (h === url.host) return true;
  const port = DEFAULT_PORT[url.protocol];
  return url.port === '' && port !== undefined && h === `${url.host}:${port}`;
}
