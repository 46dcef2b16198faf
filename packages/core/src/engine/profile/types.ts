/** The types of a profile: what the application writes (IcapProfile) and what resolveProfile returns. */

import type { IcapTlsOptions } from '../../client/connection.js';
import type { IcapLog, PinoLike } from '../log.js';
import type { CompiledPolicy, PolicyRule } from '../policy/types.js';
import type { MetricsOptions } from '../telemetry-options.js';
import type { Vendor } from '../verdict/index.js';

/**
 * The ICAP profile: what to scan, where, and what to do when scanning is not possible. Field
 * names follow the reference product's IcapProfile in camelCase; sizes are bytes (or strings
 * such as '50mb'), times are ms. Validated once, at start-up: an invalid profile throws an
 * IcapError (ICAP_ERR_INVALID_PROFILE) whose message names the field and the allowed range.
 */
export interface IcapProfile {
  /** Appears in every log record. */
  name: string;
  /**
   * The ICAP servers: one `icap://host[:port]` / `icaps://host[:port]` URL, a list of them (one
   * pool), or a full pool group with named pools by priority.
   */
  poolGroup: string | readonly string[] | PoolGroupConfig;
  /** Path and arguments of the ICAP service, e.g. '/avscan', '/OMSScanReq-AV', '/lastline'. */
  serviceUri: string;
  /** How the server reports verdicts. Default 'generic'. */
  vendor?: Vendor | undefined;
  /** Offer `Allow: 204` and hold the whole body to replay it on a 204. Default true. */
  allow204?: boolean | undefined;
  /** Largest body held for scanning, bytes or '50mb'. Default 50 MiB (range 1 byte - 50 MiB... up to 4 GiB). */
  bufferSize?: number | string | undefined;
  /** Body larger than bufferSize: 'fail-closed' answers 413, 'fail-open' passes it unscanned. Default 'fail-closed'. */
  bufferSizeExceedAction?: FailureAction | undefined;
  /** Use RFC 3507 preview. Default true. */
  enablePreview?: boolean | undefined;
  /** Preview bytes, 0-5000, capped by the server's OPTIONS `Preview`. Default 5000. */
  previewSize?: number | undefined;
  /**
   * Previews per server and service as they pay: after 32 previews in a row answered
   * `100 Continue` (a scanner that reads every body whole), bodies go to that service whole,
   * one in 16 still previewed; a preview it decides from (a 204) turns them back on. false:
   * every body above previewMinBodySize is previewed. Default true.
   */
  adaptivePreview?: boolean | undefined;
  /**
   * A body whose Content-Length is at most this goes whole, without a preview: one round trip
   * instead of two, and sending it costs less than waiting for 100 Continue (bytes or '64kb';
   * 0 previews every body). Default 64 KiB.
   */
  previewMinBodySize?: number | string | undefined;
  /** ms the request may wait for ICAP; then the failure action runs. Default 60000 (50-3600000). */
  responseTimeout?: number | undefined;
  /** ms after which a scan makes the log entry significant. Default 10000. */
  slowResponseWarningThreshold?: number | undefined;
  /**
   * ms the HTTP client may send nothing in the middle of its request body; then the scan is
   * cancelled and the client gets 408 (never the failure action: there is no whole body to
   * pass). A stalled client never counts against the ICAP server's health. Default 30000 (50-3600000).
   */
  bodyTimeout?: number | undefined;
  /**
   * ms the whole request body may take to arrive, from the start of the scan (a client
   * trickling bytes never idles long enough for bodyTimeout). Then the client gets 408, never
   * the failure action, and the ICAP server's health is untouched. Default 600000 (50-86400000).
   */
  bodyDeadline?: number | undefined;
  /**
   * Bytes of a body that must have arrived before an ICAP connection is taken for it (bytes or
   * '64kb'), and at `minBodyRate` or faster; until then the body is held. A body complete within
   * this bound is sent with its length (encapsulated `Content-Length`, a chunked upload too).
   * 0: the exchange starts with the first byte. Default previewMinBodySize.
   */
  holdBodySize?: number | string | undefined;
  /**
   * Bytes per second (or '128kb') an upload must arrive at, on average, to be streamed to the
   * ICAP server while it arrives; a slower one is held whole first (spooled above
   * memoryThreshold), so slow clients never hold scanner connections. Default 128 KiB/s.
   */
  minBodyRate?: number | string | undefined;
  /**
   * Uploads streamed to the ICAP servers while their HTTP clients still send them, at most this
   * many at once (across the servers). A fast start proves nothing of the rest: a client may
   * send `holdBodySize` bytes at once and then stop, holding its ICAP connection for as long as
   * bodyDeadline allows. Beyond this many, an upload is held whole first (as a slow one is), so
   * such clients hold at most this share of the connections and the others stay for bodies
   * that have arrived. A share of connection.maxConnections: a server whose OPTIONS allow
   * fewer connections (`Max-Connections`) scales it down. Default half of maxConnections (at
   * least 1); 0: every body is held whole before its exchange; maxConnections: no share kept.
   */
  maxStreamingUploads?: number | undefined;
  /**
   * The ICAP server needs the encapsulated `Content-Length` (Kaspersky style, it answers 400
   * without): every body is held whole (spooled above memoryThreshold) before the exchange
   * starts. Default false.
   */
  lengthRequired?: boolean | undefined;
  /**
   * Uploads one client address may have arriving at once; more get 429 (a client error, never
   * the failure action). Behind a proxy, every client shares its address. Default: no limit.
   */
  maxBodiesPerClient?: number | undefined;
  /**
   * After an answer given before the request body was read (503, 413, 415, 400, 403, 408), the
   * rest of the body is still read and discarded, up to `bytes` (or '16mb') and for `timeout` ms,
   * so the client can read the answer instead of a connection reset; then the connection
   * closes. Default 16 MiB, 5000 ms.
   */
  drainAfterAnswer?: { bytes?: number | string | undefined; timeout?: number | undefined } | undefined;
  /** ICAP failure (connect, timeout, protocol, 4xx/5xx, reset): 'fail-closed' answers 503, 'fail-open' passes. Default 'fail-closed'. */
  failAction?: FailureAction | undefined;
  nsxDefenderConfig?:
    | {
        /** Template of the analysis URL; `$uuid` is replaced by the task UUID. */
        statusUrl?: string | undefined;
        /** Forward X-Lastline-Status/Score/Task to the HTTP client. Default true. */
        forwardLastlineHeaders?: boolean | undefined;
      }
    | undefined;
  /** TLS options for ICAPS servers (a pool's own `tls` object overrides them). */
  tls?: IcapTlsOptions | undefined;
  /** HTTP security policy: named rules, first match wins. */
  rules?: readonly PolicyRule[] | undefined;
  /** Receives one record per HTTP request. */
  onLog?: ((log: IcapLog) => void) | undefined;
  /** A pino-compatible logger (`info(obj, msg)` ...). Adapters default to the framework's request logger. */
  logger?: PinoLike | undefined;
  /** 'page': our own 403 (HTML or JSON by Accept); 'relay': the ICAP server's block response. Default 'page'. */
  blockResponse?: 'page' | 'relay' | undefined;
  /**
   * ICAP headers added to every request (e.g. an API key). Their values are redacted in every
   * log record, whatever the header names.
   */
  icapHeaders?: Readonly<Record<string, string>> | undefined;
  /** Send `X-Client-IP` with the HTTP client's address. Default false. */
  sendClientIp?: boolean | undefined;
  /** Encapsulate the request target in absolute form (`http://host/path`), as a proxy does. Default true. */
  absoluteUri?: boolean | undefined;
  /**
   * The ICAP server's `Transfer-Ignore` (OPTIONS: "do not send me files of these types"). 'off'
   * (default): ignored, every body is scanned. 'extension': a request whose URL ends in a listed
   * extension is not scanned at all; the HTTP client chooses its URL, so this lets any client
   * skip the scan of any upload by naming it `*.jpg`: only for routes whose content is not
   * trusted anyway. (Sniffing the type from the first bytes would not be sound either: a
   * JPEG header is as easy to send as a `.jpg` name.)
   */
  transferIgnore?: 'off' | 'extension' | undefined;
  /** More header names whose values are redacted in logs (Authorization-like ones always are). */
  redactHeaders?: readonly string[] | undefined;
  /** Connections and timeouts of each server's client. */
  connection?:
    | {
        maxConnections?: number | undefined;
        connectTimeout?: number | undefined;
        keepAliveTimeout?: number | undefined;
        ioTimeout?: number | undefined;
        /**
         * ms an established ICAP exchange may go without progress (a body chunk taken by the
         * server, its 100 Continue, its answer head, 16 KiB of its answer body) while it is the
         * server's turn; then the attempt fails with ICAP_ERR_STALLED, counts against the
         * server's health and the request is retried on the next server. Time spent waiting
         * for the HTTP client's body never counts. Default a third of responseTimeout, so a
         * retry fits in the responseTimeout budget.
         */
        stallTimeout?: number | undefined;
        /**
         * ms a request waits for a free connection to a server whose connections are all busy,
         * when another server could take it (ICAP_ERR_SATURATED, then the next healthy server
         * or pool); with nowhere else to go it waits on, within responseTimeout. Default the
         * smaller of connectTimeout and stallTimeout.
         */
        queueTimeout?: number | undefined;
      }
    | undefined;
  /**
   * Server health, a circuit breaker: `failureLimit` consecutive failures suspend a server;
   * after `probeInterval` an OPTIONS probe runs, and when it succeeds the server is half-open:
   * one trial request at a time, `successThreshold` consecutive successes bring it back.
   * A failed probe or trial suspends it again with the interval doubled, up to
   * `maxProbeInterval`; so does a new suspension within `maxProbeInterval` of coming back.
   */
  health?:
    | {
        failureLimit?: number | undefined;
        probeInterval?: number | undefined;
        maxProbeInterval?: number | undefined;
        successThreshold?: number | undefined;
      }
    | undefined;
  /** How a pool spreads requests over its servers. Default 'least-outstanding'. */
  loadBalancing?: LoadBalancing | undefined;
  /**
   * Held bytes above which a body moves to a temp file (bytes or '8mb'). Default 8 MiB. Also the
   * most bytes held to compare with a server's echo (at most 2 MiB): after an answer that returns
   * a larger body the connection is not kept, so 0 costs echo-answering servers their pooling.
   */
  memoryThreshold?: number | string | undefined;
  /** Folder for those temp files. Default the OS temp folder. */
  spoolDir?: string | undefined;
  /** Media types a request body may have (e.g. ['multipart/form-data', 'image/*']); others get 415 before the body is read. */
  allowedContentTypes?: readonly string[] | undefined;
  /**
   * multipart/form-data: scan each file on its own and hand the application a form serialised
   * from the strict parse ('per-file', default), or scan the raw body as one object after the
   * same strict parser checked it ('whole'). Either way a form parsers could read differently
   * is refused (400).
   */
  multipart?: 'per-file' | 'whole' | undefined;
  /**
   * multipart types other than form-data (mixed, related, alternative...): refused with 415
   * ('refuse', default: some body parsers read any multipart/* as a form), or scanned as raw
   * bytes like any other body ('whole'; only for applications that read them as raw bytes).
   */
  otherMultipart?: 'refuse' | 'whole' | undefined;
  /** Per-file mode: scan non-file fields too ('scan', default) or not ('skip'). */
  multipartFields?: 'scan' | 'skip' | undefined;
  /** Per-file mode, an infected part: refuse the whole request ('block', default) or remove that part ('strip'). */
  infectedPartAction?: 'block' | 'strip' | undefined;
  /** Per-file mode: parts scanned at once. Default 4. */
  multipartConcurrency?: number | undefined;
  /** Limits of the multipart parser (both modes); crossing any refuses the request (413). */
  multipartLimits?: MultipartLimits | undefined;
  /**
   * Compressed request bodies (Content-Encoding gzip, deflate, br): 'decode' (default) scans
   * the decoded bytes (bounded by bufferSize) and the body as sent, each as its own ICAP
   * request (raw readers get the latter, which can hold what a decoder skips: gzip header
   * fields, brotli metadata), and hands the application the original bytes; a body that does
   * not decode, or has bytes after the end of its compressed data, gets 400. 'refuse' answers
   * 415. Other or stacked encodings always get 415.
   */
  contentEncoding?: 'decode' | 'refuse' | undefined;
  /** Prometheus metrics in your prom-client registry (OpenTelemetry metrics need no option). */
  metrics?: MetricsOptions | undefined;
  /**
   * What `engine.ready()` (Express and Koa `mw.ready()`, Fastify's `ready()` / `listen()`) does
   * with servers that do not answer OPTIONS: 'fail' (default) rejects naming each one and why,
   * 'warn' reports them (logger, or a process warning) and resolves, 'off' sends nothing.
   */
  startupCheck?: StartupCheck | undefined;
}

export type StartupCheck = 'fail' | 'warn' | 'off';

/** Multipart limits with every value filled in. */
export type ResolvedMultipartLimits = { [K in keyof MultipartLimits]-?: number };

export interface MultipartLimits {
  /** Default 1000. */
  files?: number | undefined;
  /** Default 1000. */
  fields?: number | undefined;
  /** Default 2000. */
  parts?: number | undefined;
  /** Bytes of one file. Default bufferSize. */
  fileSize?: number | undefined;
  /** Bytes of one field value. Default 1 MiB. */
  fieldSize?: number | undefined;
  /** Bytes of one field name. Default 200. */
  fieldNameSize?: number | undefined;
  /** Header lines of one part. Default 100. */
  headerPairs?: number | undefined;
  /** Bytes of one part's headers. Default 16 KiB. */
  headerSize?: number | undefined;
}

export type FailureAction = 'fail-closed' | 'fail-open';
export type LoadBalancing = 'least-outstanding' | 'round-robin';

export interface PoolGroupConfig {
  /** Name in logs. Default the profile name + '-pool-group'. */
  name?: string | undefined;
  pools: readonly PoolConfig[];
}

export interface PoolConfig {
  name: string;
  /** Higher first; pools of equal priority keep their order. Default 10. */
  priority?: number | undefined;
  servers: ReadonlyArray<string | ServerConfig>;
  /**
   * ICAPS for every server of the pool (true, or TLS options added to the profile's `tls`).
   * Its URL servers must then be `icaps://` (an `icap://` one is refused).
   */
  tls?: boolean | IcapTlsOptions | undefined;
  loadBalancing?: LoadBalancing | undefined;
}

export interface ServerConfig {
  host: string;
  /** Default 1344, or 11344 with TLS. */
  port?: number | undefined;
  /** Default: the pool's. true or TLS options: added to the pool's TLS options (or the profile's). */
  tls?: boolean | IcapTlsOptions | undefined;
}

export interface ResolvedServer {
  host: string;
  port: number;
  tls: IcapTlsOptions | false;
  /** `icap://host:port` / `icaps://host:port`. */
  url: string;
}

export interface ResolvedPool {
  name: string;
  priority: number;
  servers: ResolvedServer[];
  loadBalancing: LoadBalancing;
}

/** A validated profile with every default filled in. */
export interface ResolvedProfile {
  name: string;
  poolGroupName: string;
  pools: ResolvedPool[];
  serviceUri: string;
  vendor: Vendor;
  allow204: boolean;
  bufferSize: number;
  bufferSizeExceedAction: FailureAction;
  enablePreview: boolean;
  previewSize: number;
  adaptivePreview: boolean;
  previewMinBodySize: number;
  responseTimeout: number;
  slowResponseWarningThreshold: number;
  bodyTimeout: number;
  bodyDeadline: number;
  holdBodySize: number;
  minBodyRate: number;
  maxStreamingUploads: number;
  lengthRequired: boolean;
  maxBodiesPerClient: number | undefined;
  drainBytes: number;
  drainTimeout: number;
  failAction: FailureAction;
  nsxStatusUrl: string;
  forwardLastlineHeaders: boolean;
  policy: CompiledPolicy;
  onLog: ((log: IcapLog) => void) | undefined;
  logger: PinoLike | undefined;
  blockResponse: 'page' | 'relay';
  icapHeaders: Array<[string, string]>;
  sendClientIp: boolean;
  absoluteUri: boolean;
  transferIgnore: 'off' | 'extension';
  redactHeaders: Set<string>;
  maxConnections: number;
  connectTimeout: number;
  keepAliveTimeout: number;
  ioTimeout: number;
  stallTimeout: number;
  queueTimeout: number;
  failureLimit: number;
  probeInterval: number;
  maxProbeInterval: number;
  successThreshold: number;
  memoryThreshold: number;
  spoolDir: string;
  allowedContentTypes: string[] | undefined;
  multipart: 'per-file' | 'whole';
  otherMultipart: 'refuse' | 'whole';
  multipartFields: 'scan' | 'skip';
  infectedPartAction: 'block' | 'strip';
  multipartConcurrency: number;
  multipartLimits: ResolvedMultipartLimits;
  metrics: MetricsOptions;
  contentEncoding: 'decode' | 'refuse';
  startupCheck: StartupCheck;
}
