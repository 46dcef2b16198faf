/** The options of an IcapClient and of one of its requests (the public API: client.ts). */
import type { IcapReceivedHead } from '../errors.js';
import type { HeaderPairs, HttpRequestHeadInit, HttpResponseHeadInit } from '../protocol/encoder.js';
import type { IcapTlsOptions } from './connection.js';
import type { Heard } from './deadline.js';
import type { BodyInput } from './source.js';

export interface IcapClientOptions {
  /**
   * The server: `icap://host[:port]` or `icaps://host[:port]` (ICAPS, TLS). Ports default to
   * 1344 and 11344. Any path is ignored: the service is named per request.
   */
  url: string | URL;
  /** TLS options for `icaps://` (ca, cert/key, servername, ciphers, minVersion, ...). */
  tls?: IcapTlsOptions | undefined;
  /** Most connections open at once (the server's `Max-Connections` lowers it). Default 32. */
  maxConnections?: number | undefined;
  /** ms to establish TCP (and TLS). Default 10 000. */
  connectTimeout?: number | undefined;
  /**
   * ms without any byte moving while the transaction waits for the server. Not while it waits
   * for its own body source or for the reader of the response body. Default 60 000.
   */
  ioTimeout?: number | undefined;
  /**
   * ms a request waits for a free connection when all `maxConnections` are busy; then it
   * fails with ICAP_ERR_SATURATED (so a caller can try another server). Default: no limit.
   */
  queueTimeout?: number | undefined;
  /** ms for a whole request (OPTIONS included), unless the request gives its own. Default 60 000. */
  timeout?: number | undefined;
  /** ms an idle keep-alive connection is kept. Default 30 000. */
  keepAliveTimeout?: number | undefined;
  /** Largest ICAP header section, and largest encapsulated header area. Default 64 KiB. */
  maxHeaderSize?: number | undefined;
  /**
   * Fetch each service's OPTIONS before using it and honour them (`Methods`, `Preview`,
   * `Max-Connections`, `Transfer-*`). Default true.
   */
  useOptions?: boolean | undefined;
  /** ms to keep OPTIONS when the server sends no `Options-TTL`. Default 60 000. */
  defaultOptionsTtl?: number | undefined;
  /**
   * ms: a response with another ISTag than the cached OPTIONS (the service changed) refetches
   * them at most once per this interval. Default 30 000; 0 refetches on every change.
   */
  optionsRefreshInterval?: number | undefined;
  /**
   * Called with a warning about the server (an OPTIONS response without the required `ISTag`
   * or `Methods`, or with a `Preview`, `Max-Connections` or `Options-TTL` that is not a whole
   * number); the answer is used anyway (a malformed number read as absent).
   */
  onWarning?:
    | ((
        message: string,
        details: { service: string; missingHeaders: string[]; malformedHeaders: string[] },
      ) => void)
    | undefined;
  /** ICAP headers sent on every request (for example an API key header); copied when the client is made. */
  headers?: HeaderPairs | undefined;
  /** `User-Agent` on ICAP requests; false sends none. */
  userAgent?: string | false | undefined;
}

export interface IcapRequestOptions {
  method: 'REQMOD' | 'RESPMOD';
  /** Service path and arguments, for example `/avscan` or `/srv?mode=x`. */
  service: string;
  /** The HTTP request (REQMOD: the one to adapt; RESPMOD: the one that produced the response). */
  httpRequest?: HttpRequestHeadInit | undefined;
  /** The HTTP response to adapt (RESPMOD). */
  httpResponse?: HttpResponseHeadInit | undefined;
  /** The HTTP body; omit or null for a message without a body. */
  body?: BodyInput | null | undefined;
  /** Length of the body when known (encapsulated `Content-Length`, smaller `Preview`). */
  bodyLength?: number | undefined;
  /** Preview bytes wanted (capped by the server's OPTIONS `Preview`); false sends no preview. Default 4096. */
  preview?: number | false | undefined;
  /** Offer `Allow: 204` (the caller keeps the whole body to replay). Default true. */
  allow204?: boolean | undefined;
  /** More ICAP headers for this request. */
  headers?: HeaderPairs | undefined;
  signal?: AbortSignal | undefined;
  /** ms for the whole request, the response body included. */
  timeout?: number | undefined;
  /** Extension used for `Transfer-*` (default: from the HTTP request target). */
  fileExtension?: string | undefined;
  /** Called when the server answers the preview with 100 Continue (it wants the rest of the body). */
  onContinue?: (() => void) | undefined;
  /**
   * Called with the bytes that come while the exchange waits after a failure or an answer for
   * what the server sends next (read for a threat only): progress, for a caller that watches it.
   */
  onStray?: ((bytes: number) => void) | undefined;
  /**
   * Whether a head read from what followed a failure or an answer blocks (the caller's verdict):
   * the wait then keeps the first such head and ends there; else the heads that may name a
   * threat by the client's wide reading (`mayName`), the first and the last of them.
   */
  strayBlocks?: ((head: IcapReceivedHead) => boolean) | undefined;
  /**
   * After an ICAP 5xx answer (whole, nothing after it yet), wait as after a broken answer for
   * what the server sends next, read for a threat (its real verdict may follow an error): for a
   * caller that would pass the message on an error (fail-open). Default false.
   */
  waitAfterServerError?: boolean | undefined;
  /**
   * The most bytes of the message body held to compare with an answer that returns a body (a
   * connection is kept after one only when it returns the body sent, byte for byte): at most and
   * by default 2 MiB; past it, such an answer costs the connection. The body's own buffers are
   * held, so a caller whose body is read from disk bounds what that keeps in memory here.
   */
  echoHold?: number | undefined;
  /**
   * ms this request may wait for a free connection (the client's `queueTimeout` when left out;
   * `Infinity`: no limit).
   */
  queueTimeout?: number | undefined;
  /**
   * Honour `Transfer-Ignore` by not sending the message at all. Default false: the extension
   * comes from the request target (or `fileExtension`), which whoever sends the message
   * chooses, so honouring it lets them skip the scan; turn it on only where that is acceptable.
   */
  honourTransferIgnore?: boolean | undefined;
  /**
   * Counts the answer's bytes as they are read (what follows it too), adding to `heard`: a
   * deadline of the caller's own can read on while it moves (see client/deadline.ts). One
   * object per request: its `held` is that request's (cleared when it ends), and a kept-alive
   * connection the server closed, which the client replaces, adds a step of progress
   * (PROGRESS_STEP) without a byte read.
   */
  heard?: Heard | undefined;
}
