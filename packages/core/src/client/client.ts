import { escapeControls, IcapError, IcapErrorCodes } from '../errors.js';
import {
  encodeIcapRequest,
  type HeaderPairs,
  httpRequestHeadText,
  httpResponseHeadText,
  IcapHeadEncoder,
} from '../protocol/encoder.js';
import { maskQuery, maskUrl } from '../protocol/shown-uri.js';

export type { IcapClientOptions, IcapRequestOptions } from './client-options.js';
export { maskUrl };

import { abortError, LightAbortController } from './abort.js';
import type { IcapClientOptions, IcapRequestOptions } from './client-options.js';
import { endpointLabel, type IcapTlsOptions, type ServerEndpoint } from './connection.js';
import { actAfterReading, addHeard, countOf, type Heard, holdHeard, PROGRESS_STEP } from './deadline.js';
import {
  extensionOf,
  type IcapServiceOptions,
  OptionsCache,
  parseOptions,
  type TransferPolicy,
  transferPolicy,
} from './options.js';
import { type Lease, Pool, type PoolStats } from './pool.js';
import { type BodySource, toBodySource } from './source.js';
import { Transaction } from './transaction.js';
import type { IcapResponse, TransactionRequest } from './transaction-types.js';

export const DEFAULT_ICAP_PORT = 1344;
export const DEFAULT_ICAPS_PORT = 11344;
const VERSION = '0.1.0';

/** Returned instead of a response when `Transfer-Ignore` says the server does not want the message. */
export interface IcapSkipped {
  skipped: 'transfer-ignore';
  extension: string;
  options: IcapServiceOptions;
}

/** A connection could not be made (see `#attempt`). */
const CONNECT_FAILURES: ReadonlySet<string> = new Set([
  IcapErrorCodes.CONNECT,
  IcapErrorCodes.CONNECT_TIMEOUT,
]);

/**
 * A client for one ICAP server: a keep-alive connection pool, the OPTIONS of each service it
 * uses, and transactions with preview, 204 and early-response handling. A request that fails
 * on a reused connection before any response byte arrives is retried once on a fresh
 * connection, if its body can be replayed (the keep-alive race: the server closed the idle
 * connection just as it was reused). If that connection cannot be made, the request fails
 * with the drop (the server went away with the request), not with the connect error.
 */
export class IcapClient {
  readonly endpoint: ServerEndpoint;
  readonly label: string;
  readonly #pool: Pool;
  readonly #options: OptionsCache;
  readonly #connectTimeout: number;
  readonly #ioTimeout: number;
  readonly #timeout: number;
  readonly #maxHeaderSize: number;
  readonly #useOptions: boolean;
  readonly #defaultOptionsTtl: number;
  readonly #headers: HeaderPairs;
  readonly #userAgent: string | undefined;
  readonly #hostHeader: string;
  readonly #onWarning: IcapClientOptions['onWarning'];
  readonly #uris = new Map<string, string>();
  readonly #shownUris = new Map<string, string>();
  /** The heads of REQMOD and RESPMOD requests (their constant parts kept). */
  readonly #encoder: IcapHeadEncoder;
  /** The client's own headers ask for `Connection: close`. */
  readonly #closeAsked: boolean;
  #closed = false;
  /** Bytes of OPTIONS answers read: a request's timeout reads on while its OPTIONS comes too. */
  #optionsRead = 0;

  constructor(options: IcapClientOptions) {
    this.endpoint = parseServerUrl(options.url, options.tls);
    this.label = endpointLabel(this.endpoint);
    this.#connectTimeout = positive(options.connectTimeout, 10_000, 'connectTimeout');
    this.#ioTimeout = positive(options.ioTimeout, 60_000, 'ioTimeout');
    this.#timeout = positive(options.timeout, 60_000, 'timeout');
    this.#maxHeaderSize = positive(options.maxHeaderSize, 64 * 1024, 'maxHeaderSize');
    this.#useOptions = options.useOptions ?? true;
    this.#defaultOptionsTtl = positive(options.defaultOptionsTtl, 60_000, 'defaultOptionsTtl');
    // A copy: the heads' constant part is built from it once (see IcapHeadEncoder).
    this.#headers = (options.headers ?? []).map(([name, value]) => [name, value] as const);
    this.#userAgent = options.userAgent === false ? undefined : (options.userAgent ?? `icapkit/${VERSION}`);
    const { host, port } = this.endpoint;
    this.#hostHeader = `${host.includes(':') ? `[${host}]` : host}:${port}`;
    this.#encoder = new IcapHeadEncoder(this.#hostHeader, this.#headers, this.#userAgent);
    this.#closeAsked = asksClose(this.#headers);
    this.#pool = new Pool(this.endpoint, {
      maxConnections: positive(options.maxConnections, 32, 'maxConnections'),
      keepAliveTimeout: positive(options.keepAliveTimeout, 30_000, 'keepAliveTimeout'),
      connectTimeout: this.#connectTimeout,
      queueTimeout:
        options.queueTimeout === undefined ? undefined : positive(options.queueTimeout, 0, 'queueTimeout'),
    });
    this.#onWarning = options.onWarning;
    this.#options = new OptionsCache(
      (service) => this.#fetchOptions(service),
      0.1,
      options.optionsRefreshInterval === 0
        ? 0
        : positive(options.optionsRefreshInterval, 30_000, 'optionsRefreshInterval'),
    );
  }

  get stats(): PoolStats {
    return this.#pool.stats;
  }

  /** Bytes of OPTIONS answers read so far (a watch of requests waiting for one reads on while it comes). */
  get optionsRead(): number {
    return this.#optionsRead;
  }

  /** The pool, for instrumentation (new-connection hook). */
  get pool(): Pool {
    return this.#pool;
  }

  /** `icap://host:port/service` for a service path. */
  uri(service: string): string {
    let u = this.#uris.get(service);
    if (u === undefined) {
      u = `${this.label}${service.startsWith('/') ? '' : '/'}${service}`;
      // A few services in practice; a caller naming a new one per request gets no cache.
      if (this.#uris.size < 64) this.#uris.set(service, u);
    }
    return u;
  }

  /** {@link uri} as messages show it: the arguments' values masked (shown-uri.ts). */
  shownUri(service: string): string {
    let u = this.#shownUris.get(service);
    if (u === undefined) {
      u = maskQuery(this.uri(service));
      if (this.#shownUris.size < 64) this.#shownUris.set(service, u);
    }
    return u;
  }

  /** The service's OPTIONS, from the cache when fresh. */
  options(
    service: string,
    init: { signal?: AbortSignal | undefined; refresh?: boolean } = {},
  ): Promise<IcapServiceOptions> {
    if (init.refresh) this.#options.invalidate(service);
    return this.#options.get(service, init.signal);
  }

  /** OPTIONS already fetched for the service, without fetching. */
  cachedOptions(service: string): IcapServiceOptions | undefined {
    return this.#options.peek(service);
  }

  /** Drops cached OPTIONS (all services when none is named). */
  invalidateOptions(service?: string): void {
    this.#options.invalidate(service);
  }

  /**
   * Sends a REQMOD or RESPMOD. Resolves with the final response once its head is read (its
   * body then streams), or with {@link IcapSkipped} when the server's `Transfer-Ignore` covers
   * the message. Rejects with an {@link IcapError}.
   */
  async request(options: IcapRequestOptions): Promise<IcapResponse | IcapSkipped> {
    if (this.#closed) throw new IcapError(IcapErrorCodes.CLOSED_CLIENT, 'the ICAP client was closed');
    const timeout = positive(options.timeout, this.#timeout, 'timeout');
    // A timeout of our own reads on while the answer's bytes come (client/deadline.ts): counted.
    if (options.heard !== undefined && (typeof options.heard !== 'object' || options.heard === null))
      throw new IcapError(IcapErrorCodes.INVALID_ARGUMENT, 'heard must be an object (its `heard` a count)');
    const init =
      timeout < MAX_TIMER_DELAY && options.heard === undefined
        ? { ...options, heard: { heard: 0 } }
        : options;
    const uri = this.uri(init.service);
    // No timeout of our own (the engine bounds its requests with its signal): the caller's
    // signal is used as it is, without a controller, a listener and a cleanup of our own; a
    // reason that is not an IcapError is wrapped where it surfaces (see #abortError), as the
    // controller would have.
    const label = `${init.method} ${this.shownUri(init.service)}`;
    const own =
      timeout < MAX_TIMER_DELAY ? this.#requestSignal(init.signal, timeout, label, init.heard, true) : null;
    const signal = own === null ? (init.signal ?? NEVER_ABORTED) : own.signal;
    try {
      let preview: number | undefined = init.preview === false ? undefined : (init.preview ?? 4096);
      let policy: TransferPolicy = 'preview';
      if (this.#useOptions) {
        const opts = this.#options.fresh(init.service) ?? (await this.#options.get(init.service, signal));
        if (opts.methods.length > 0 && !opts.methods.includes(init.method)) {
          throw new IcapError(
            IcapErrorCodes.METHOD_NOT_SUPPORTED,
            `ICAP service ${this.shownUri(init.service)} does not support ${init.method} (Methods: ${opts.methods.join(', ')})`,
          );
        }
        this.#pool.setServerLimit(opts.maxConnections);
        // No Transfer-Ignore or Transfer-Complete list: 'preview' whatever the extension (the
        // usual case: the target is not read for it).
        const extension =
          opts.transferIgnore.length === 0 && opts.transferComplete.length === 0
            ? undefined
            : (init.fileExtension ?? extensionOf(init.httpRequest?.target ?? '/'));
        if (extension !== undefined) policy = transferPolicy(opts, extension);
        if (policy === 'ignore' && extension !== undefined && (init.honourTransferIgnore ?? false)) {
          own?.cleanup();
          return { skipped: 'transfer-ignore', extension, options: opts };
        }
        preview =
          preview === undefined || opts.preview === undefined ? undefined : Math.min(preview, opts.preview);
      }
      if (policy === 'complete') preview = undefined;
      const source: BodySource | null =
        init.body === undefined || init.body === null ? null : toBodySource(init.body);
      const bodyLength = init.bodyLength ?? source?.length;
      if (source !== null && bodyLength !== undefined && preview !== undefined)
        preview = Math.min(preview, bodyLength);
      const tx = this.#encode(init, uri, source, bodyLength, preview);
      const response = await this.#attempt(tx, signal, init.queueTimeout, own === null ? label : undefined);
      this.#options.noteIstag(init.service, response.istag);
      if (own !== null) response.done.then(own.cleanup, own.cleanup);
      return response;
    } catch (err) {
      if (own !== null) own.cleanup();
      else if (err === signal.reason && signal.aborted) throw abortError(err, label);
      throw err;
    }
  }

  /** Closes idle connections and refuses new requests; requests under way finish. */
  async close(): Promise<void> {
    this.#closed = true;
    this.#pool.close();
  }

  /** Destroys every connection now, transactions under way included. */
  destroy(): void {
    this.#closed = true;
    this.#pool.destroy();
  }

  #encode(
    init: IcapRequestOptions,
    uri: string,
    source: BodySource | null,
    bodyLength: number | undefined,
    preview: number | undefined,
  ) {
    const hasBody = source !== null;
    const contentLength = hasBody ? bodyLength : 0;
    let httpRequestHead: string | undefined;
    let httpResponseHead: string | undefined;
    if (init.method === 'REQMOD') {
      if (init.httpRequest === undefined) {
        throw new IcapError(IcapErrorCodes.INVALID_ARGUMENT, 'REQMOD needs httpRequest');
      }
      httpRequestHead = httpRequestHeadText(init.httpRequest, { contentLength });
    } else {
      if (init.httpResponse === undefined) {
        throw new IcapError(IcapErrorCodes.INVALID_ARGUMENT, 'RESPMOD needs httpResponse');
      }
      if (init.httpRequest !== undefined) httpRequestHead = httpRequestHeadText(init.httpRequest);
      httpResponseHead = httpResponseHeadText(init.httpResponse, { contentLength });
    }
    const extra = init.headers ?? NO_HEADERS;
    const encoded = this.#encoder.encode(
      init.method,
      uri,
      httpRequestHead,
      httpResponseHead,
      hasBody,
      hasBody ? preview : undefined,
      init.allow204 ?? true,
      extra,
    );
    const req: TransactionRequest = {
      method: init.method,
      head: encoded.head,
      icapHeaders: encoded.icapHeaders,
      body: source,
      preview: hasBody ? preview : undefined,
      allow204: init.allow204 ?? true,
      onContinue: init.onContinue,
      onStray: init.onStray,
      heard: init.heard,
      strayBlocks: init.strayBlocks,
      waitAfterServerError: init.waitAfterServerError,
      echoHold: init.echoHold,
      // The only `Connection` line an encoded head can hold is one of these ICAP headers (the
      // encapsulated HTTP heads never carry one; no value holds a line break).
      closeAsked: this.#closeAsked || asksClose(extra),
    };
    return req;
  }

  async #attempt(
    req: TransactionRequest,
    signal: AbortSignal,
    queueTimeout?: number | undefined,
    abortWhat?: string | undefined,
    onQueued?: () => void,
  ): Promise<IcapResponse> {
    let fresh = false;
    let dropped: IcapError | undefined;
    for (;;) {
      // An idle connection is taken at once (no promise, no turn of the microtask queue).
      let lease: Lease;
      try {
        let now = fresh ? undefined : this.#pool.takeIdleNow(signal);
        if (now === undefined && onQueued !== undefined) {
          // Every connection busy (or being made): the wait is behind them.
          const s = this.#pool.stats;
          if (s.busy + s.connecting >= s.limit) onQueued();
        }
        now ??= await this.#pool.acquire(signal, fresh, queueTimeout);
        lease = now;
      } catch (err) {
        // The fresh connection could not be made: the server is gone, and the drop of the
        // reused one (it may have had the whole request) is what happened to this request.
        if (dropped === undefined || !(err instanceof IcapError) || !CONNECT_FAILURES.has(err.code))
          throw err;
        throw new IcapError(dropped.code, `${dropped.message}; then no new connection: ${err.message}`, {
          cause: err,
        });
      }
      const tx = new Transaction(
        lease.connection,
        lease.reused,
        req,
        {
          ioTimeout: this.#ioTimeout,
          maxHeaderSize: this.#maxHeaderSize,
          signal,
          abortWhat,
          onStray: req.onStray,
          strayBlocks: req.strayBlocks,
          heard: req.heard,
        },
        this.#pool,
      );
      try {
        return await tx.run();
      } catch (err) {
        const retriable =
          !fresh &&
          lease.reused &&
          !tx.receivedAny &&
          !signal.aborted &&
          (req.body === null || req.body.replayable) &&
          err instanceof IcapError &&
          (err.code === IcapErrorCodes.RESET || err.code === IcapErrorCodes.CLOSED);
        if (!retriable) throw err;
        // A step of progress for a watch of the server's (the attempt goes on: campaign-bf BF4).
        addHeard(req.heard, PROGRESS_STEP);
        dropped = err;
        fresh = true;
      }
    }
  }

  async #fetchOptions(service: string): Promise<IcapServiceOptions> {
    const label = `OPTIONS ${this.shownUri(service)}`;
    // Its answer (a body perhaps) is counted for its timeout to read on while it comes (campaign-bf BF3).
    // The requests waiting for it count them too (their own timeouts: BF4's OPTIONS form).
    let read = 0;
    const client = this;
    const heard: Heard = {
      get heard() {
        return read;
      },
      set heard(n: number) {
        client.#optionsRead += n - read;
        read = n;
      },
    };
    const { signal, cleanup } = this.#requestSignal(undefined, this.#timeout, label, heard, false);
    let queued = false;
    try {
      const encoded = encodeIcapRequest({
        method: 'OPTIONS',
        uri: this.uri(service),
        host: this.#hostHeader,
        hasBody: false,
        headers: this.#headers,
        userAgent: this.#userAgent,
      });
      const res = await this.#attempt(
        {
          method: 'OPTIONS',
          head: encoded.head,
          icapHeaders: encoded.icapHeaders,
          body: null,
          preview: undefined,
          allow204: false,
          onContinue: undefined,
          heard,
        },
        signal,
        undefined,
        undefined,
        () => {
          queued = true;
        },
      );
      res.body?.resume();
      await res.done;
      if (res.status !== 200) {
        throw new IcapError(
          IcapErrorCodes.SERVER_STATUS,
          `${label} answered ${res.status} ${escapeControls(res.reason)}`.trim(),
          { status: res.status },
        );
      }
      const opts = parseOptions(res, this.#defaultOptionsTtl);
      const { missingHeaders, malformedHeaders } = opts;
      if (missingHeaders.length > 0 || malformedHeaders.length > 0) {
        const said: string[] = [];
        if (missingHeaders.length > 0)
          said.push(
            `lacks the required ${missingHeaders.join(' and ')} header${missingHeaders.length > 1 ? 's' : ''}`,
          );
        if (malformedHeaders.length > 0)
          said.push(`has ${malformedHeaders.join(', ')}, not a whole number (read as absent)`);
        try {
          this.#onWarning?.(`${label} ${said.join('; ')}`, {
            service: maskQuery(service),
            missingHeaders,
            malformedHeaders,
          });
        } catch {
          // a throwing warning sink does not fail the request
        }
      }
      this.#pool.setServerLimit(opts.maxConnections);
      return opts;
    } catch (err) {
      throw queued ? this.#queuedOptions(err, label) : err;
    } finally {
      cleanup();
    }
  }

  /**
   * An OPTIONS fetch's timeout, when the fetch had to wait for a connection behind busy ones:
   * ICAP_ERR_SATURATED, as a request's wait for one is (the engine's waitedForConnection: busy is
   * not broken, and never the failure action when HTTP clients held those connections: campaign-bk
   * BK4), not the server's silence, whether or not a connection came before the bound (a client
   * that lets one go just before it, the OPTIONS then answered late: campaign-bm BM1). A server
   * that hangs still fails the engine's health check, which decides then.
   */
  #queuedOptions(err: unknown, label: string): unknown {
    if (!(err instanceof IcapError) || err.code !== IcapErrorCodes.TIMEOUT) return err;
    return new IcapError(
      IcapErrorCodes.SATURATED,
      `${label} waited for a connection to ICAP server ${this.label}, all ${this.#pool.stats.limit} of them busy (${err.message})`,
      { cause: err },
    );
  }

  /** A request's count for its timeout: its answer's bytes, and with `withOptions` the OPTIONS it may wait for. */
  #countOf(heard: Heard, withOptions: boolean): () => number {
    const own = countOf(heard);
    return withOptions ? () => own() + this.#optionsRead : own;
  }

  /**
   * One signal for a request: the caller's, plus the request timeout. A LightAbortController
   * (no EventTarget, no AbortSignal to create, listeners in a plain array): the signal goes to
   * this client's own code only (the pool's wait, the OPTIONS wait, the connect, the
   * transaction), never to Node's APIs.
   */
  #requestSignal(
    outer: AbortSignal | undefined,
    timeout: number,
    what: string,
    heard: Heard | undefined,
    withOptions: boolean,
  ) {
    const ac = new LightAbortController();
    const onOuterAbort = () => ac.abort(abortError(outer!.reason, what));
    if (outer?.aborted) onOuterAbort();
    else outer?.addEventListener('abort', onOuterAbort, { once: true });
    // setTimeout's largest delay means "no timeout of our own" (the engine bounds requests with
    // its signal): no timer to create and clear for every request.
    const timer =
      timeout >= MAX_TIMER_DELAY
        ? undefined
        : setTimeout(() => {
            // What came while the process stalled past it is read first (campaign-bd BD2, BD3).
            actAfterReading(
              timeout,
              () => cleaned || ac.signal.aborted,
              () => ac.abort(new IcapError(IcapErrorCodes.TIMEOUT, `${what} took longer than ${timeout} ms`)),
              heard === undefined ? undefined : this.#countOf(heard, withOptions),
            );
          }, timeout);
    let cleaned = false;
    const cleanup = () => {
      if (cleaned) return;
      cleaned = true;
      clearTimeout(timer);
      outer?.removeEventListener('abort', onOuterAbort);
      // (A count the caller reuses does not carry this answer's wait for its reader: campaign-bg BG2.)
      holdHeard(heard, false);
    };
    return { signal: ac.signal, cleanup };
  }
}

export function isSkipped(r: IcapResponse | IcapSkipped): r is IcapSkipped {
  return (r as IcapSkipped).skipped !== undefined;
}

/** A `Connection: close` pair, as the encoded head would hold the line `\r\nConnection: close\r\n`. */
function asksClose(headers: HeaderPairs): boolean {
  for (const [n, v] of headers) if (n === 'Connection' && v === 'close') return true;
  return false;
}

/** Parses `icap://host[:port]` / `icaps://host[:port]` into an endpoint. */
export function parseServerUrl(url: string | URL, tls?: IcapTlsOptions): ServerEndpoint {
  const shown = () => JSON.stringify(maskUrl(String(url)));
  let u: URL;
  try {
    u = typeof url === 'string' ? new URL(url) : url;
  } catch {
    throw new IcapError(IcapErrorCodes.INVALID_ARGUMENT, `invalid ICAP server URL ${shown()}`, {
      field: 'url',
    });
  }
  const secure = u.protocol === 'icaps:';
  if (!secure && u.protocol !== 'icap:') {
    throw new IcapError(
      IcapErrorCodes.INVALID_ARGUMENT,
      `ICAP server URL must start with icap:// or icaps:// (got ${shown()})`,
      { field: 'url' },
    );
  }
  if (u.username !== '' || u.password !== '') {
    throw new IcapError(
      IcapErrorCodes.INVALID_ARGUMENT,
      `ICAP server URL must not contain credentials (user:password@), which would never be sent; pass an API key in headers (got ${shown()})`,
      { field: 'url' },
    );
  }
  const host = u.hostname.replace(/^\[(.*)\]$/, '$1');
  if (host === '')
    throw new IcapError(IcapErrorCodes.INVALID_ARGUMENT, `ICAP server URL has no host: ${shown()}`, {
      field: 'url',
    });
  const port = u.port === '' ? (secure ? DEFAULT_ICAPS_PORT : DEFAULT_ICAP_PORT) : Number(u.port);
  return { host, port, tls: secure ? (tls ?? {}) : false };
}

const NO_HEADERS: HeaderPairs = [];

/** setTimeout's largest delay (a larger one fires at once). */
const MAX_TIMER_DELAY = 2_147_483_647;

/** The signal of a request with neither a signal nor a timeout: it never aborts. */
const NEVER_ABORTED = new AbortController().signal;

function positive(v: number | undefined, fallback: number, name: string): number {
  if (v === undefined) return fallback;
  if (!Number.isFinite(v) || v <= 0) {
    throw new IcapError(
      IcapErrorCodes.INVALID_ARGUMENT,
      `${name} must be a positive number of ms/bytes (got ${v})`,
      {
        field: name,
      },
    );
  }
  return v;
}
