import { Readable } from 'node:stream';
import {
  buildResponse,
  checkRefusalOptions,
  createEngine,
  type DrainLimits,
  drainLimits,
  type HeldBody,
  handoffBody,
  IcapEngine,
  IcapError,
  IcapErrorCodes,
  type IcapLog,
  type IcapProfile,
  type IcapRefusal,
  type IcapRequestInfo,
  type PinoLike,
  rearmRequest,
  refusalOf,
  refusalReporter,
  requestInfo,
  type ScanOutcome,
} from '@icapkit/core';
import { toWebStream } from './body.js';
import { onceDisposer } from './held.js';
import { BODYLESS, incomingReadFirst, incomingUnder, untouchedIncoming } from './node-server.js';
import { defaultRefusalResponse, shapeRefusal, type WebOnRefusal } from './refusal.js';
import { toScanRequest, unreadableRequest, type WebScanRequest } from './request.js';

/**
 * The engine of @icapkit/core driven by a Web `Request` (Hono, Next.js route handlers, any
 * fetch-style server): the same profile, rules, pools, failure actions, multipart handling and
 * telemetry as the Node adapters, and the same pages.
 *
 *   const scanner = createScanner(profile);
 *   const result = await scanner.scan(request);
 *   if (result.response) return result.response;   // 403, 413, 415, 400, 408, 429, 503 ...
 *   return handle(result.request);                  // the approved request
 */

export interface WebScanOptions {
  /** Aborts the scan (the request's own `signal` always does). */
  signal?: AbortSignal | undefined;
  /** A request logger (pino-compatible) to use instead of the profile's. */
  logger?: PinoLike | undefined;
  /** Shown on block pages so users can quote it. */
  requestId?: string | undefined;
  /** The client's address, for `maxBodiesPerClient`, rules on addresses and `X-Client-IP` (default: `incoming`'s). */
  clientIp?: string | undefined;
  /**
   * The Node request under the Web one, when there is one (@hono/node-server passes it as
   * `env.incoming`): its socket gives the client's address, and on HTTP/1 a refusal that leaves
   * the body unread says `Connection: close`, as the Node adapters do (so the client does not
   * send its next request on a connection the server is about to close).
   */
  incoming?: IncomingLike | undefined;
  /**
   * Render a refusal yourself: `(refusal, request) => Response | { status, headers, body }`
   * becomes `result.response` (a status outside 300-599, a throw or nothing: the default page).
   * Given to `createScanner`, it applies to every scan that does not pass its own.
   */
  onRefusal?: WebOnRefusal<[request: Request]> | undefined;
}

/** Options of {@link createScanner}. */
export interface WebScannerOptions {
  /** The default `onRefusal` of this scanner's scans (see {@link WebScanOptions}). */
  onRefusal?: WebOnRefusal<[request: Request]> | undefined;
}

/** What is read of a Node `IncomingMessage` (or `Http2ServerRequest`). */
export interface IncomingLike {
  httpVersionMajor?: number | undefined;
  socket?: { remoteAddress?: string | undefined } | null | undefined;
  /** Trailer fields after a chunked body (refused: they would reach the application unscanned). */
  rawTrailers?: string[] | undefined;
}

/** `env.incoming` of @hono/node-server (the second argument of its fetch callback), if it is one. */
export function incomingOf(env: unknown): IncomingLike | undefined {
  if (typeof env !== 'object' || env === null) return undefined;
  const incoming = (env as { incoming?: unknown }).incoming;
  if (typeof incoming !== 'object' || incoming === null) return undefined;
  const i = incoming as IncomingLike;
  return typeof i.httpVersionMajor === 'number' ? i : undefined;
}

interface ResultBase {
  /** What the application can read about the scan (`{ action, threat, rule, removed, log }`). */
  icap: IcapRequestInfo;
  /** The icap_log record of the scan. */
  log: IcapLog;
  /**
   * Frees what the scan still holds (the approved body's bytes in memory or a temp file).
   * Called by itself once the approved body was read to its end or cancelled; call it when the
   * response is done if the body may never be read (the Hono middleware and `withIcap` do).
   */
  dispose(): void;
}

export interface WebApproved extends ResultBase {
  /**
   * The request to continue with: the original one when the scan did not read its body,
   * otherwise a new `Request` with the same URL, method and signal, whose body streams the
   * approved bytes (from what the scan holds: memory up to memoryThreshold, then its temp file)
   * and whose headers carry their `Content-Length` (no `Transfer-Encoding`). A request the ICAP
   * server modified comes with its new method, URL, headers and body.
   */
  request: Request;
  response?: undefined;
  /** Headers to add to the response the application sends (NSX Defender X-Lastline-*). */
  responseHeaders: Array<[string, string]>;
}

export interface WebRefused extends ResultBase {
  /** The answer to send instead of calling the application (403, 413, 415, 400, 408, 429, 503 ...). */
  response: Response;
  request?: undefined;
  /**
   * Why it was refused (reason, status, code, threat, the default page): undefined when the
   * client went away, and for a request the ICAP server rewrote into one a Web Request cannot
   * carry (a 503 page).
   */
  refusal: IcapRefusal | undefined;
  /** The client went away before the scan finished: there is no one to answer (`response` is a bare 499). */
  aborted: boolean;
}

export type WebScanResult = WebApproved | WebRefused;

export interface WebScanner {
  scan(request: Request, options?: WebScanOptions): Promise<WebScanResult>;
  readonly engine: IcapEngine;
  /** Stops probes and closes every ICAP connection. */
  close(): Promise<void>;
}

/** Holds one engine for a profile (validated now; throws ICAP_ERR_INVALID_PROFILE). */
export function createScanner(
  profile: IcapProfile | IcapEngine,
  scannerOptions: WebScannerOptions = {},
): WebScanner {
  checkRefusalOptions(scannerOptions as never, '@icapkit/web createScanner');
  const engine = profile instanceof IcapEngine ? profile : createEngine(profile);
  const report = refusalReporter('@icapkit/web');
  return {
    engine,
    scan: (request, options) =>
      scanWith(engine, request, { onRefusal: scannerOptions.onRefusal, ...options }, report),
    close: () => engine.close(),
  };
}

/** Engines made by `scan(request, profile)`, one per profile object. */
const engines = new WeakMap<IcapProfile, IcapEngine>();

/**
 * Scans one request. `profileOrEngine`: an engine (from `createEngine`, or `scanner.engine`),
 * or a profile object, for which one engine is made and kept for as long as the object lives
 * (pass the same object every time; use {@link createScanner} to be able to close it).
 */
export function scan(
  request: Request,
  profileOrEngine: IcapProfile | IcapEngine,
  options: WebScanOptions = {},
): Promise<WebScanResult> {
  let engine: IcapEngine;
  if (profileOrEngine instanceof IcapEngine) engine = profileOrEngine;
  else {
    let made = engines.get(profileOrEngine);
    if (made === undefined) {
      made = createEngine(profileOrEngine);
      engines.set(profileOrEngine, made);
    }
    engine = made;
  }
  return scanWith(engine, request, options, reportScan);
}

const reportScan = refusalReporter('@icapkit/web');

async function scanWith(
  engine: IcapEngine,
  request: Request,
  options: WebScanOptions,
  report: ReturnType<typeof refusalReporter>,
): Promise<WebScanResult> {
  if (options.onRefusal !== undefined && typeof options.onRefusal !== 'function')
    throw new IcapError(IcapErrorCodes.INVALID_ARGUMENT, '@icapkit/web: onRefusal must be a function', {
      field: 'onRefusal',
    });
  // Not given (a fetch wrapper that drops @hono/node-server's env): the one the Request carries.
  if (options.incoming === undefined) {
    const under = incomingUnder(request);
    if (under !== undefined) options = { ...options, incoming: under };
  }
  const clientIp = options.clientIp ?? options.incoming?.socket?.remoteAddress ?? undefined;
  const http1 = options.incoming?.httpVersionMajor === 1;
  let source: WebScanRequest;
  let badRequest: string | undefined;
  let unreadable: string | undefined;
  // The Node request the body comes from, already read by something before the scan: the
  // engine refuses it (500, ICAP_ERR_BODY_CONSUMED), as the Node adapters' requests (node-server.ts).
  const readFirst = incomingReadFirst(request, options.incoming);
  // @hono/node-server's lightweight Request whose body nothing asked for: its Node request is
  // read (and handed back) instead of a Web stream over it (node-server.ts).
  const untouched = readFirst === undefined ? untouchedIncoming(request, options.incoming) : undefined;
  let nodeBody: Readable | undefined;
  try {
    if (
      readFirst === undefined &&
      untouched === undefined &&
      (request.bodyUsed || request.body?.locked === true)
    ) {
      // A programming error (something read the body before the scan), never the client's doing.
      throw new IcapError(
        IcapErrorCodes.INVALID_ARGUMENT,
        'the request body was already read before the scan: scan before anything reads it',
        { field: 'request' },
      );
    }
    badRequest = bodyOutOfView(request, options.incoming);
    // Refused, the body announced is read from the Node request only to be drained.
    if (badRequest !== undefined) nodeBody = options.incoming as Readable;
    else if (readFirst !== undefined) nodeBody = readFirst;
    else if (untouched !== undefined && !BODYLESS.test(request.method)) nodeBody = untouched;
    source = toScanRequest(request, {
      clientIp,
      incoming: options.incoming,
      nodeBody,
      nodeBodyRead: readFirst !== undefined,
    });
  } catch (err) {
    if (err instanceof IcapError) throw err;
    // The server library cannot make a Request of what the client sent (@hono/node-server takes
    // an absolute target with credentials, or a header name or value that a lenient Node
    // parser let through, and the Fetch API refuses it when it is read): the client's doing, so
    // a 400 from the engine whatever its rules decide (they would judge a request without its
    // fields, while the Node request under it still frames a body), never a 500 or the failure
    // action. The reason names no part of the target (it may carry a password).
    unreadable =
      'the request cannot be read as a Web Request (its target, method or header fields are refused by the Fetch API)';
    source = unreadableRequest(request, { clientIp, incoming: options.incoming });
  }
  const signal =
    options.signal === undefined ? request.signal : AbortSignal.any([request.signal, options.signal]);
  let outcome: ScanOutcome;
  try {
    outcome = await engine.scan(source, {
      signal,
      logger: options.logger,
      requestId: options.requestId,
      badRequest,
      unreadable,
    });
  } catch (err) {
    // The engine answers every failure with an outcome; this is a last resort (fail closed).
    source.destroy();
    throw err;
  }
  const icap = requestInfo(outcome);
  const dispose = onceDisposer(() => {
    outcome.dispose();
    // A body nobody will read any more: release the request's stream.
    if (!source.destroyed && source.bodyOpened && !source.readableEnded) source.destroy();
  });
  // The result's common fields are written out in each literal, not spread from a shared object
  // (core's outcome.ts `disposeOnce` says why); `base` is for refuse().
  const base = { icap, log: outcome.log, dispose };
  switch (outcome.kind) {
    case 'aborted':
      dispose();
      return {
        icap,
        log: outcome.log,
        dispose,
        response: new Response(null, { status: 499 }),
        refusal: undefined,
        aborted: true,
      };
    case 'respond': {
      outcome.dispose();
      // The rest of an unread body is read and dropped (bounded by drainAfterAnswer), so the
      // client, still sending, reads the answer and the connection stays usable; cancelling
      // the request's stream at once would reset the connection under the answer.
      if (outcome.closeConnection && source.bodyOpened) drain(source, drainLimits(engine));
      const refusal = refusalOf(outcome);
      const onRefusal = options.onRefusal;
      const response =
        onRefusal === undefined
          ? defaultRefusalResponse(refusal, http1)
          : await shapeRefusal(
              refusal,
              () => onRefusal(refusal, request),
              (err) => report(err, options.logger),
              http1,
            );
      return { icap, log: outcome.log, dispose, response, refusal, aborted: false };
    }
    case 'rewrite': {
      if (outcome.contentLength > 0 && /^(?:GET|HEAD)$/i.test(outcome.method)) {
        // A Web Request cannot carry a body with these methods: never drop bytes silently.
        dispose();
        return refuse(base, request);
      }
      return {
        icap,
        log: outcome.log,
        dispose,
        request: approved(request, {
          method: outcome.method,
          url: targetUrl(request.url, outcome.url),
          headers: outcome.headers,
          body: outcome.body,
          contentLength: outcome.contentLength,
          dispose,
        }),
        responseHeaders: outcome.responseHeaders,
      };
    }
    case 'pass': {
      if (outcome.body === null) {
        // Untouched (not scanned, or given back whole by the engine after reading part of it).
        if (!source.bodyOpened) {
          dispose();
          return { icap, log: outcome.log, dispose, request, responseHeaders: outcome.responseHeaders };
        }
        return {
          icap,
          log: outcome.log,
          dispose,
          request: approved(request, {
            headers: pairsOf(request.headers),
            body: source,
            contentLength: undefined,
            dispose,
          }),
          responseHeaders: outcome.responseHeaders,
        };
      }
      if (nodeBody === untouched && nodeBody !== undefined && outcome.headers === undefined) {
        // The body as it came, read from the Node request: that request is made readable again
        // with it, and the application keeps the Request that reads it from there.
        handBack(
          request,
          nodeBody,
          handoffBody(outcome) ?? outcome.body,
          outcome.contentLength ?? 0,
          dispose,
        );
        return { icap, log: outcome.log, dispose, request, responseHeaders: outcome.responseHeaders };
      }
      return {
        icap,
        log: outcome.log,
        dispose,
        request: approved(request, {
          headers: outcome.headers ?? pairsOf(request.headers),
          body: outcome.body,
          contentLength: outcome.contentLength ?? 0,
          dispose,
        }),
        responseHeaders: outcome.responseHeaders,
      };
    }
  }
}

/**
 * Hands a passed body back in the Node request it was read from (`rearmRequest`, with its
 * `Content-Length`), and the same framing in the headers the Request already made of it.
 * `dispose` runs once the request was read to its end or closed.
 */
function handBack(
  request: Request,
  incoming: Readable,
  body: Readable | HeldBody,
  contentLength: number,
  dispose: () => void,
): void {
  rearmRequest(incoming as Readable & { headers: Record<string, string | string[] | undefined> }, {
    body,
    contentLength,
  });
  const headers = request.headers;
  headers.delete('transfer-encoding');
  headers.set('content-length', String(contentLength));
  incoming.once('end', dispose);
  incoming.once('close', dispose);
}

/**
 * Why a request whose body the Web `Request` does not show must be refused: a GET, HEAD or TRACE
 * request (a Web Request has no body for them) whose Node request under it announces one. The
 * application could still read that body, unscanned: @hono/node-server's `text()`, `json()` and
 * `arrayBuffer()` of a TRACE request read the Node request, and so does anything reading
 * `env.incoming`. The engine refuses it (400) when its rules select the request.
 */
function bodyOutOfView(request: Request, incoming: IncomingLike | undefined): string | undefined {
  if (!(incoming instanceof Readable) || !BODYLESS.test(request.method)) return undefined;
  const node = incoming as IncomingLike & {
    headers?: Record<string, string | string[] | undefined>;
    stream?: { endAfterHeaders?: boolean };
  };
  const headers = node.headers ?? {};
  const length = headers['content-length'];
  const announced =
    headers['transfer-encoding'] !== undefined ||
    (length !== undefined && length !== '0') ||
    (node.httpVersionMajor === 2 && node.stream?.endAfterHeaders === false);
  return announced
    ? `a ${request.method.toUpperCase()} request with a body, which a Web Request does not carry but the Node request under it does`
    : undefined;
}

interface Handoff {
  method?: string;
  url?: string;
  headers: ReadonlyArray<readonly [string, string]>;
  body: Readable;
  /** Undefined: the original framing is kept (the body is the request's own stream). */
  contentLength: number | undefined;
  dispose: () => void;
}

/** The approved request: the original's URL, method and signal, the handed-over head and body. */
function approved(original: Request, handoff: Handoff): Request {
  const headers = new Headers();
  for (const [name, value] of handoff.headers) {
    const key = name.toLowerCase();
    if (key.startsWith(':')) continue;
    if (handoff.contentLength !== undefined && (key === 'content-length' || key === 'transfer-encoding'))
      continue;
    headers.append(name, value);
  }
  if (handoff.contentLength !== undefined) headers.set('content-length', String(handoff.contentLength));
  const method = handoff.method ?? original.method;
  // GET and HEAD carry no body in a Web Request (a rewrite with one is refused before).
  const bodyless = /^(?:GET|HEAD)$/i.test(method);
  const init: RequestInit & { duplex: 'half' } = {
    method,
    headers,
    signal: original.signal,
    body: bodyless ? null : toWebStream(handoff.body, handoff.dispose),
    duplex: 'half',
  };
  if (bodyless) {
    handoff.body.destroy();
    handoff.dispose();
  }
  return new Request(handoff.url ?? original.url, init);
}

/** The rewritten origin-form target on the original origin (an absolute URI is taken as it is). */
function targetUrl(original: string, target: string): string {
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(target)) return target;
  const origin = new URL(original).origin;
  return `${origin}${target.startsWith('/') ? target : `/${target}`}`;
}

function pairsOf(headers: Headers): Array<[string, string]> {
  return [...headers];
}

/** The ICAP server modified the request into one a Web Request cannot carry: 503, fail closed. */
function refuse(base: ResultBase, request: Request): WebRefused {
  const page = buildResponse('unavailable', request.headers.get('accept') ?? undefined, {
    detail: 'The content scanner returned a request that cannot be handed to the application.',
  });
  return {
    icap: base.icap,
    log: base.log,
    dispose: base.dispose,
    response: new Response(new Uint8Array(page.body), { status: page.status, headers: page.headers }),
    refusal: undefined,
    aborted: false,
  };
}

/** Reads `source` to its end, discarding, at most `limits.bytes` for `limits.timeout` ms; then cancels it. */
function drain(source: Readable, limits: DrainLimits): void {
  if (source.destroyed || source.readableEnded) return;
  let seen = 0;
  const cleanup = () => {
    clearTimeout(timer);
    source.removeListener('data', onData);
    source.removeListener('end', cleanup);
    source.removeListener('close', cleanup);
  };
  const giveUp = () => {
    cleanup();
    source.destroy();
  };
  const onData = (chunk: Buffer) => {
    seen += chunk.length;
    if (seen > limits.bytes) giveUp();
  };
  const timer = setTimeout(giveUp, limits.timeout);
  timer.unref();
  source.on('data', onData);
  source.once('end', cleanup);
  source.once('close', cleanup);
  source.resume();
}
