import { tmpdir } from 'node:os';
import { DEFAULT_ICAP_PORT, DEFAULT_ICAPS_PORT } from '../client/client.js';
import type { IcapTlsOptions } from '../client/connection.js';
import { IcapError, IcapErrorCodes } from '../client/errors.js';
import { isSafeFieldValue, isToken } from '../protocol/headers.js';
import type { IcapLog } from './log.js';
import { type CompiledPolicy, compilePolicy, type PolicyRule } from './policy.js';
import { unknownOptionHint } from './suggest.js';
import type { MetricsOptions } from './telemetry.js';
import { DEFAULT_NSX_STATUS_URL, VENDORS, type Vendor } from './verdict/index.js';

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
  /** ICAP headers added to every request (e.g. an API key). Values are redacted in logs. */
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
  /** Held bytes above which a body moves to a temp file (bytes or '8mb'). Default 8 MiB. */
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
   * the decoded bytes (bounded by bufferSize) and hands the application the original ones;
   * 'refuse' answers 415. Other or stacked encodings always get 415.
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
  /** ICAPS for every server of the pool (true, or TLS options). */
  tls?: boolean | IcapTlsOptions | undefined;
  loadBalancing?: LoadBalancing | undefined;
}

export interface ServerConfig {
  host: string;
  /** Default 1344, or 11344 with TLS. */
  port?: number | undefined;
  tls?: boolean | IcapTlsOptions | undefined;
}

export interface PinoLike {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
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
  previewMinBodySize: number;
  responseTimeout: number;
  slowResponseWarningThreshold: number;
  bodyTimeout: number;
  bodyDeadline: number;
  holdBodySize: number;
  minBodyRate: number;
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

export const PROFILE_DEFAULTS = {
  vendor: 'generic',
  allow204: true,
  bufferSize: 50 * 1024 * 1024,
  bufferSizeExceedAction: 'fail-closed',
  enablePreview: true,
  previewSize: 5000,
  previewMinBodySize: 64 * 1024,
  responseTimeout: 60_000,
  slowResponseWarningThreshold: 10_000,
  bodyTimeout: 30_000,
  bodyDeadline: 600_000,
  minBodyRate: 128 * 1024,
  drainBytes: 16 * 1024 * 1024,
  drainTimeout: 5_000,
  failAction: 'fail-closed',
  blockResponse: 'page',
  maxConnections: 32,
  connectTimeout: 5_000,
  keepAliveTimeout: 30_000,
  failureLimit: 3,
  probeInterval: 5_000,
  maxProbeInterval: 60_000,
  successThreshold: 3,
  memoryThreshold: 8 * 1024 * 1024,
  multipart: 'per-file',
  otherMultipart: 'refuse',
  multipartFields: 'scan',
  infectedPartAction: 'block',
  multipartConcurrency: 4,
} as const;

/** Header names whose values never appear in logs. */
const ALWAYS_REDACTED = [
  'authorization',
  'proxy-authorization',
  'cookie',
  'set-cookie',
  'x-mdcloud-apikey',
  'x-api-key',
  'apikey',
];

const PROFILE_KEYS = new Set([
  'name',
  'poolGroup',
  'serviceUri',
  'vendor',
  'allow204',
  'bufferSize',
  'bufferSizeExceedAction',
  'enablePreview',
  'previewSize',
  'previewMinBodySize',
  'responseTimeout',
  'slowResponseWarningThreshold',
  'bodyTimeout',
  'bodyDeadline',
  'holdBodySize',
  'minBodyRate',
  'lengthRequired',
  'maxBodiesPerClient',
  'drainAfterAnswer',
  'failAction',
  'nsxDefenderConfig',
  'tls',
  'rules',
  'onLog',
  'logger',
  'blockResponse',
  'icapHeaders',
  'sendClientIp',
  'absoluteUri',
  'transferIgnore',
  'redactHeaders',
  'connection',
  'health',
  'loadBalancing',
  'memoryThreshold',
  'spoolDir',
  'allowedContentTypes',
  'multipart',
  'otherMultipart',
  'multipartFields',
  'infectedPartAction',
  'multipartConcurrency',
  'multipartLimits',
  'metrics',
  'contentEncoding',
  'startupCheck',
]);

function fail(field: string, message: string): never {
  throw new IcapError(IcapErrorCodes.INVALID_PROFILE, `invalid ICAP profile: ${field} ${message}`, { field });
}

function describe(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v);
  if (typeof v === 'function') return 'a function';
  if (Array.isArray(v)) return 'an array';
  if (v === null) return 'null';
  if (typeof v === 'object') return 'an object';
  return String(v);
}

function checkKeys(obj: object, allowed: ReadonlySet<string>, field: string): void {
  for (const key of Object.keys(obj)) {
    if (!allowed.has(key)) {
      fail(`${field}.${key}`, `is not a known option${unknownOptionHint(key, allowed)}`);
    }
  }
}

function oneOf<T extends string>(v: unknown, allowed: readonly T[], field: string, fallback: T): T {
  if (v === undefined) return fallback;
  if (typeof v !== 'string' || !(allowed as readonly string[]).includes(v)) {
    fail(field, `must be one of ${allowed.map((a) => `'${a}'`).join(', ')} (got ${describe(v)})`);
  }
  return v as T;
}

/** Names people write for a vendor, with the `vendor` value that reads that server. */
const VENDOR_HINTS: Readonly<Record<string, Vendor>> = {
  clamav: 'c-icap',
  cicap: 'c-icap',
  squidclamav: 'generic',
  metadefender: 'opswat',
  lastline: 'nsx-defender',
  nsx: 'nsx-defender',
  kwts: 'kaspersky',
  mwg: 'mcafee',
  skyhigh: 'mcafee',
  broadcom: 'symantec',
  trend: 'trend-micro',
  trendmicro: 'trend-micro',
  savdi: 'sophos',
  fsecure: 'f-secure',
};

function vendorOf(v: unknown): Vendor {
  if (v === undefined) return PROFILE_DEFAULTS.vendor;
  if (typeof v === 'string' && (VENDORS as readonly string[]).includes(v)) return v as Vendor;
  const key = typeof v === 'string' ? v.toLowerCase().replace(/[^a-z]/g, '') : '';
  const exact = VENDORS.find((x) => x.replace(/[^a-z]/g, '') === key);
  const hint = exact ?? (Object.hasOwn(VENDOR_HINTS, key) ? VENDOR_HINTS[key] : undefined);
  fail(
    'profile.vendor',
    `must be one of ${VENDORS.map((a) => `'${a}'`).join(', ')} (got ${describe(v)})` +
      (hint !== undefined ? `; did you mean '${hint}'?` : ''),
  );
}

function bool(v: unknown, field: string, fallback: boolean): boolean {
  if (v === undefined) return fallback;
  if (typeof v !== 'boolean') fail(field, `must be true or false (got ${describe(v)})`);
  return v;
}

function integer(
  v: unknown,
  field: string,
  fallback: number,
  min: number,
  max: number,
  unit: string,
): number {
  if (v === undefined) return fallback;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    fail(field, `must be an integer from ${min} to ${max} ${unit} (got ${describe(v)})`);
  }
  return v;
}

const SIZE_UNITS: Record<string, number> = {
  '': 1,
  b: 1,
  kb: 1024,
  k: 1024,
  kib: 1024,
  mb: 1024 ** 2,
  m: 1024 ** 2,
  mib: 1024 ** 2,
  gb: 1024 ** 3,
  g: 1024 ** 3,
  gib: 1024 ** 3,
};

/** Bytes from a number or a string such as '50mb', '512 KiB', '1.5gb' (binary units). */
export function parseSize(v: unknown, field: string): number {
  if (typeof v === 'number') return v;
  if (typeof v !== 'string')
    fail(field, `must be a number of bytes or a size such as '50mb' (got ${describe(v)})`);
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(v);
  const unit = m === null ? undefined : SIZE_UNITS[m[2]!.toLowerCase()];
  if (m === null || unit === undefined) {
    fail(field, `must be a number of bytes or a size such as '50mb', '512kb', '1gb' (got ${describe(v)})`);
  }
  return Math.floor(Number(m[1]) * unit);
}

const MAX_BUFFER = 4 * 1024 ** 3;

export function resolveProfile(profile: IcapProfile): ResolvedProfile {
  if (typeof profile !== 'object' || profile === null || Array.isArray(profile)) {
    fail('profile', `must be an object (got ${describe(profile)})`);
  }
  checkKeys(profile, PROFILE_KEYS, 'profile');
  const p = profile as IcapProfile;
  if (typeof p.name !== 'string' || p.name.trim() === '')
    fail('profile.name', `is required: a non-empty string (got ${describe(p.name)})`);
  if (typeof p.serviceUri !== 'string' || !/^\/[^\s]*$/.test(p.serviceUri)) {
    fail(
      'profile.serviceUri',
      `must be the service path starting with '/', e.g. '/avscan' (got ${describe(p.serviceUri)})`,
    );
  }
  const tlsDefault = p.tls;
  if (tlsDefault !== undefined && (typeof tlsDefault !== 'object' || tlsDefault === null)) {
    fail('profile.tls', `must be an object of TLS options (got ${describe(tlsDefault)})`);
  }
  const loadBalancing = oneOf(
    p.loadBalancing,
    ['least-outstanding', 'round-robin'],
    'profile.loadBalancing',
    'least-outstanding',
  );
  const { name: poolGroupName, pools } = resolvePoolGroup(p.poolGroup, p.name, tlsDefault, loadBalancing);

  const bufferSize = parseSize(p.bufferSize ?? PROFILE_DEFAULTS.bufferSize, 'profile.bufferSize');
  if (!Number.isInteger(bufferSize) || bufferSize < 1 || bufferSize > MAX_BUFFER) {
    fail('profile.bufferSize', `must be from 1 byte to 4gb (got ${describe(p.bufferSize)})`);
  }
  const responseTimeout = integer(
    p.responseTimeout,
    'profile.responseTimeout',
    PROFILE_DEFAULTS.responseTimeout,
    50,
    3_600_000,
    'ms',
  );
  const nsx = p.nsxDefenderConfig;
  if (nsx !== undefined) {
    if (typeof nsx !== 'object' || nsx === null) fail('profile.nsxDefenderConfig', 'must be an object');
    checkKeys(nsx, new Set(['statusUrl', 'forwardLastlineHeaders']), 'profile.nsxDefenderConfig');
    if (
      nsx.statusUrl !== undefined &&
      (typeof nsx.statusUrl !== 'string' || !/^https?:\/\//.test(nsx.statusUrl))
    ) {
      fail(
        'profile.nsxDefenderConfig.statusUrl',
        `must be an http(s) URL template with $uuid (got ${describe(nsx.statusUrl)})`,
      );
    }
  }
  if (p.onLog !== undefined && typeof p.onLog !== 'function')
    fail('profile.onLog', `must be a function (got ${describe(p.onLog)})`);
  if (p.logger !== undefined) {
    for (const level of ['debug', 'info', 'warn', 'error'] as const) {
      if (typeof (p.logger as unknown as Record<string, unknown>)[level] !== 'function') {
        fail('profile.logger', `must be a pino-compatible logger with a ${level}() method`);
      }
    }
  }
  const icapHeaders: Array<[string, string]> = [];
  if (p.icapHeaders !== undefined) {
    if (typeof p.icapHeaders !== 'object' || p.icapHeaders === null)
      fail('profile.icapHeaders', 'must be an object of header names to values');
    for (const [k, v] of Object.entries(p.icapHeaders)) {
      if (!isToken(k)) fail(`profile.icapHeaders.${k}`, 'is not a valid header name');
      if (typeof v !== 'string' || !isSafeFieldValue(v))
        fail(`profile.icapHeaders.${k}`, 'must be a string without CR, LF or NUL');
      if (['host', 'encapsulated', 'preview', 'allow'].includes(k.toLowerCase())) {
        fail(`profile.icapHeaders.${k}`, 'is set by the client itself and cannot be overridden');
      }
      icapHeaders.push([k, v]);
    }
  }
  const redact = new Set(ALWAYS_REDACTED);
  if (p.redactHeaders !== undefined) {
    if (!Array.isArray(p.redactHeaders)) fail('profile.redactHeaders', 'must be an array of header names');
    p.redactHeaders.forEach((h, i) => {
      if (typeof h !== 'string' || !isToken(h)) fail(`profile.redactHeaders[${i}]`, 'must be a header name');
      redact.add(h.toLowerCase());
    });
  }
  for (const k of Object.keys(p.icapHeaders ?? {})) {
    if (/key|token|secret|auth|pass/i.test(k)) redact.add(k.toLowerCase());
  }
  const conn = p.connection ?? {};
  if (typeof conn !== 'object' || conn === null) fail('profile.connection', 'must be an object');
  checkKeys(
    conn,
    new Set([
      'maxConnections',
      'connectTimeout',
      'keepAliveTimeout',
      'ioTimeout',
      'stallTimeout',
      'queueTimeout',
    ]),
    'profile.connection',
  );
  const health = p.health ?? {};
  if (typeof health !== 'object' || health === null) fail('profile.health', 'must be an object');
  checkKeys(
    health,
    new Set(['failureLimit', 'probeInterval', 'maxProbeInterval', 'successThreshold']),
    'profile.health',
  );
  const connectTimeout = integer(
    conn.connectTimeout,
    'profile.connection.connectTimeout',
    PROFILE_DEFAULTS.connectTimeout,
    1,
    3_600_000,
    'ms',
  );
  const stallTimeout = integer(
    conn.stallTimeout,
    'profile.connection.stallTimeout',
    Math.max(1, Math.floor(responseTimeout / 3)),
    1,
    3_600_000,
    'ms',
  );
  const probeInterval = integer(
    health.probeInterval,
    'profile.health.probeInterval',
    PROFILE_DEFAULTS.probeInterval,
    10,
    3_600_000,
    'ms',
  );

  const previewMinBodySize = parseSize(
    p.previewMinBodySize ?? PROFILE_DEFAULTS.previewMinBodySize,
    'profile.previewMinBodySize',
  );
  if (!Number.isInteger(previewMinBodySize) || previewMinBodySize < 0 || previewMinBodySize > MAX_BUFFER) {
    fail('profile.previewMinBodySize', `must be from 0 to 4gb (got ${describe(p.previewMinBodySize)})`);
  }
  const memoryThreshold = parseSize(
    p.memoryThreshold ?? PROFILE_DEFAULTS.memoryThreshold,
    'profile.memoryThreshold',
  );
  if (!Number.isInteger(memoryThreshold) || memoryThreshold < 0 || memoryThreshold > MAX_BUFFER) {
    fail('profile.memoryThreshold', `must be from 0 to 4gb (got ${describe(p.memoryThreshold)})`);
  }
  if (p.spoolDir !== undefined && (typeof p.spoolDir !== 'string' || p.spoolDir === '')) {
    fail('profile.spoolDir', `must be a folder path (got ${describe(p.spoolDir)})`);
  }
  let allowedContentTypes: string[] | undefined;
  if (p.allowedContentTypes !== undefined) {
    if (!Array.isArray(p.allowedContentTypes) || p.allowedContentTypes.length === 0) {
      fail('profile.allowedContentTypes', 'must be a non-empty array of media types');
    }
    allowedContentTypes = p.allowedContentTypes.map((t, i) => {
      const lower = typeof t === 'string' ? t.trim().toLowerCase() : '';
      if (!/^[a-z0-9!#$&^_.+-]+\/(?:\*|[a-z0-9!#$&^_.+-]+)$/.test(lower)) {
        fail(
          `profile.allowedContentTypes[${i}]`,
          `is not a media type such as 'image/png' or 'image/*' (got ${describe(t)})`,
        );
      }
      return lower;
    });
  }
  const limits = p.multipartLimits ?? {};
  if (typeof limits !== 'object' || limits === null) fail('profile.multipartLimits', 'must be an object');
  checkKeys(
    limits,
    new Set([
      'files',
      'fields',
      'parts',
      'fileSize',
      'fieldSize',
      'fieldNameSize',
      'headerPairs',
      'headerSize',
    ]),
    'profile.multipartLimits',
  );
  const lim = (k: keyof MultipartLimits, fallback: number, max: number) =>
    integer(limits[k], `profile.multipartLimits.${k}`, fallback, 1, max, k.endsWith('Size') ? 'bytes' : '');

  const metricsOptions = p.metrics ?? {};
  if (typeof metricsOptions !== 'object' || metricsOptions === null)
    fail('profile.metrics', 'must be an object');
  checkKeys(metricsOptions, new Set(['registry', 'prefix']), 'profile.metrics');
  const reg = metricsOptions.registry as unknown as Record<string, unknown> | undefined;
  if (
    reg !== undefined &&
    (typeof reg?.registerMetric !== 'function' || typeof reg.removeSingleMetric !== 'function')
  ) {
    fail('profile.metrics.registry', 'must be a prom-client Registry (registerMetric, removeSingleMetric)');
  }
  if (metricsOptions.prefix !== undefined && !/^[a-zA-Z_:][a-zA-Z0-9_:]*$/.test(metricsOptions.prefix)) {
    fail(
      'profile.metrics.prefix',
      `must be a valid Prometheus metric name prefix (got ${describe(metricsOptions.prefix)})`,
    );
  }

  return {
    name: p.name,
    poolGroupName,
    pools,
    serviceUri: p.serviceUri,
    vendor: vendorOf(p.vendor),
    allow204: bool(p.allow204, 'profile.allow204', PROFILE_DEFAULTS.allow204),
    bufferSize,
    bufferSizeExceedAction: oneOf(
      p.bufferSizeExceedAction,
      ['fail-closed', 'fail-open'],
      'profile.bufferSizeExceedAction',
      PROFILE_DEFAULTS.bufferSizeExceedAction,
    ),
    enablePreview: bool(p.enablePreview, 'profile.enablePreview', PROFILE_DEFAULTS.enablePreview),
    previewSize: integer(
      p.previewSize,
      'profile.previewSize',
      PROFILE_DEFAULTS.previewSize,
      0,
      5000,
      'bytes',
    ),
    previewMinBodySize,
    responseTimeout,
    slowResponseWarningThreshold: integer(
      p.slowResponseWarningThreshold,
      'profile.slowResponseWarningThreshold',
      PROFILE_DEFAULTS.slowResponseWarningThreshold,
      1,
      3_600_000,
      'ms',
    ),
    bodyTimeout: integer(
      p.bodyTimeout,
      'profile.bodyTimeout',
      PROFILE_DEFAULTS.bodyTimeout,
      50,
      3_600_000,
      'ms',
    ),
    ...intakeOptions(p, previewMinBodySize, bufferSize),
    failAction: oneOf(
      p.failAction,
      ['fail-closed', 'fail-open'],
      'profile.failAction',
      PROFILE_DEFAULTS.failAction,
    ),
    nsxStatusUrl: nsx?.statusUrl ?? DEFAULT_NSX_STATUS_URL,
    forwardLastlineHeaders: bool(
      nsx?.forwardLastlineHeaders,
      'profile.nsxDefenderConfig.forwardLastlineHeaders',
      true,
    ),
    policy: compilePolicy(p.rules, 'profile.rules'),
    onLog: p.onLog,
    logger: p.logger,
    blockResponse: oneOf(
      p.blockResponse,
      ['page', 'relay'],
      'profile.blockResponse',
      PROFILE_DEFAULTS.blockResponse,
    ),
    icapHeaders,
    sendClientIp: bool(p.sendClientIp, 'profile.sendClientIp', false),
    absoluteUri: bool(p.absoluteUri, 'profile.absoluteUri', true),
    transferIgnore: oneOf(p.transferIgnore, ['off', 'extension'], 'profile.transferIgnore', 'off'),
    redactHeaders: redact,
    maxConnections: integer(
      conn.maxConnections,
      'profile.connection.maxConnections',
      PROFILE_DEFAULTS.maxConnections,
      1,
      10_000,
      'connections',
    ),
    connectTimeout,
    keepAliveTimeout: integer(
      conn.keepAliveTimeout,
      'profile.connection.keepAliveTimeout',
      PROFILE_DEFAULTS.keepAliveTimeout,
      1,
      3_600_000,
      'ms',
    ),
    ioTimeout: integer(conn.ioTimeout, 'profile.connection.ioTimeout', responseTimeout, 1, 3_600_000, 'ms'),
    stallTimeout,
    queueTimeout: integer(
      conn.queueTimeout,
      'profile.connection.queueTimeout',
      Math.min(connectTimeout, stallTimeout),
      1,
      3_600_000,
      'ms',
    ),
    failureLimit: integer(
      health.failureLimit,
      'profile.health.failureLimit',
      PROFILE_DEFAULTS.failureLimit,
      1,
      1000,
      'failures',
    ),
    probeInterval,
    maxProbeInterval: Math.max(
      probeInterval,
      integer(
        health.maxProbeInterval,
        'profile.health.maxProbeInterval',
        PROFILE_DEFAULTS.maxProbeInterval,
        10,
        3_600_000,
        'ms',
      ),
    ),
    successThreshold: integer(
      health.successThreshold,
      'profile.health.successThreshold',
      PROFILE_DEFAULTS.successThreshold,
      1,
      1000,
      'successes',
    ),

    memoryThreshold,
    spoolDir: p.spoolDir ?? tmpdir(),
    allowedContentTypes,
    multipart: oneOf(p.multipart, ['per-file', 'whole'], 'profile.multipart', PROFILE_DEFAULTS.multipart),
    otherMultipart: oneOf(
      p.otherMultipart,
      ['refuse', 'whole'],
      'profile.otherMultipart',
      PROFILE_DEFAULTS.otherMultipart,
    ),
    multipartFields: oneOf(
      p.multipartFields,
      ['scan', 'skip'],
      'profile.multipartFields',
      PROFILE_DEFAULTS.multipartFields,
    ),
    infectedPartAction: oneOf(
      p.infectedPartAction,
      ['block', 'strip'],
      'profile.infectedPartAction',
      PROFILE_DEFAULTS.infectedPartAction,
    ),
    multipartConcurrency: integer(
      p.multipartConcurrency,
      'profile.multipartConcurrency',
      PROFILE_DEFAULTS.multipartConcurrency,
      1,
      64,
      'parts',
    ),
    multipartLimits: {
      files: lim('files', 1000, 100_000),
      fields: lim('fields', 1000, 100_000),
      parts: lim('parts', 2000, 200_000),
      fileSize: lim('fileSize', bufferSize, MAX_BUFFER),
      fieldSize: lim('fieldSize', 1024 * 1024, MAX_BUFFER),
      fieldNameSize: lim('fieldNameSize', 200, 64 * 1024),
      headerPairs: lim('headerPairs', 100, 10_000),
      headerSize: lim('headerSize', 16 * 1024, 1024 * 1024),
    },
    metrics: metricsOptions,
    contentEncoding: oneOf(p.contentEncoding, ['decode', 'refuse'], 'profile.contentEncoding', 'decode'),
    startupCheck: oneOf(p.startupCheck, ['fail', 'warn', 'off'], 'profile.startupCheck', 'fail'),
  };
}

function resolvePoolGroup(
  v: IcapProfile['poolGroup'],
  profileName: string,
  tlsDefault: IcapTlsOptions | undefined,
  loadBalancing: LoadBalancing,
): { name: string; pools: ResolvedPool[] } {
  const field = 'profile.poolGroup';
  const defaultName = `${profileName}-pool-group`;
  if (typeof v === 'string' || Array.isArray(v)) {
    const urls: unknown[] = typeof v === 'string' ? [v] : [...(v as readonly unknown[])];
    if (urls.length === 0) fail(field, 'must name at least one ICAP server');
    const servers = urls.map((u, i) =>
      serverFromUrl(u, typeof v === 'string' ? field : `${field}[${i}]`, tlsDefault),
    );
    return {
      name: defaultName,
      pools: [{ name: `${profileName}-pool`, priority: 10, servers, loadBalancing }],
    };
  }
  if (typeof v !== 'object' || v === null) {
    fail(field, `is required: an icap:// URL, a list of URLs, or { pools: [...] } (got ${describe(v)})`);
  }
  const group = v as PoolGroupConfig;
  checkKeys(group, new Set(['name', 'pools']), field);
  if (group.name !== undefined && (typeof group.name !== 'string' || group.name === ''))
    fail(`${field}.name`, 'must be a non-empty string');
  if (!Array.isArray(group.pools) || group.pools.length === 0)
    fail(`${field}.pools`, 'must be a non-empty array of pools');
  const names = new Set<string>();
  const pools = group.pools.map((pool, i): ResolvedPool => {
    const pf = `${field}.pools[${i}]`;
    if (typeof pool !== 'object' || pool === null) fail(pf, 'must be an object');
    checkKeys(pool, new Set(['name', 'priority', 'servers', 'tls', 'loadBalancing']), pf);
    if (typeof pool.name !== 'string' || pool.name === '')
      fail(`${pf}.name`, 'is required: a non-empty string');
    if (names.has(pool.name)) fail(`${pf}.name`, `duplicates pool name ${JSON.stringify(pool.name)}`);
    names.add(pool.name);
    const priority = integer(pool.priority, `${pf}.priority`, 10, 0, 1_000_000, '');
    if (!Array.isArray(pool.servers) || pool.servers.length === 0)
      fail(`${pf}.servers`, 'must be a non-empty array');
    const poolTls = tlsOption(pool.tls, `${pf}.tls`, tlsDefault);
    const servers = (pool.servers as ReadonlyArray<string | ServerConfig>).map((s, k): ResolvedServer => {
      const sf = `${pf}.servers[${k}]`;
      if (typeof s === 'string') return serverFromUrl(s, sf, tlsDefault, poolTls);
      if (typeof s !== 'object' || s === null) fail(sf, 'must be an icap:// URL or { host, port, tls }');
      checkKeys(s, new Set(['host', 'port', 'tls']), sf);
      if (typeof s.host !== 'string' || s.host === '') fail(`${sf}.host`, 'is required');
      const tls = s.tls === undefined ? poolTls : tlsOption(s.tls, `${sf}.tls`, tlsDefault);
      const port = integer(s.port, `${sf}.port`, tls ? DEFAULT_ICAPS_PORT : DEFAULT_ICAP_PORT, 1, 65535, '');
      return makeServer(s.host, port, tls);
    });
    return {
      name: pool.name,
      priority,
      servers,
      loadBalancing: oneOf(
        pool.loadBalancing,
        ['least-outstanding', 'round-robin'],
        `${pf}.loadBalancing`,
        loadBalancing,
      ),
    };
  });
  // Higher priority first; a stable sort keeps the configured order among equals.
  pools.sort((a, b) => b.priority - a.priority);
  return { name: group.name ?? defaultName, pools };
}

function tlsOption(
  v: unknown,
  field: string,
  tlsDefault: IcapTlsOptions | undefined,
): IcapTlsOptions | false {
  if (v === undefined || v === false) return false;
  if (v === true) return tlsDefault ?? {};
  if (typeof v === 'object' && v !== null) return { ...(tlsDefault ?? {}), ...(v as IcapTlsOptions) };
  fail(field, `must be true, false or TLS options (got ${describe(v)})`);
}

function serverFromUrl(
  u: unknown,
  field: string,
  tlsDefault: IcapTlsOptions | undefined,
  poolTls: IcapTlsOptions | false = false,
): ResolvedServer {
  if (typeof u !== 'string') fail(field, `must be an icap:// or icaps:// URL (got ${describe(u)})`);
  let url: URL;
  try {
    url = new URL(u);
  } catch {
    fail(field, `is not a valid URL: ${JSON.stringify(u)}`);
  }
  if (url.protocol !== 'icap:' && url.protocol !== 'icaps:')
    fail(field, `must start with icap:// or icaps:// (got ${JSON.stringify(u)})`);
  if (url.pathname !== '' && url.pathname !== '/') {
    fail(
      field,
      `must not contain a service path (${JSON.stringify(url.pathname)}): set profile.serviceUri instead`,
    );
  }
  const secure = url.protocol === 'icaps:';
  const tls = secure ? poolTls || tlsDefault || {} : false;
  const port = url.port === '' ? (secure ? DEFAULT_ICAPS_PORT : DEFAULT_ICAP_PORT) : Number(url.port);
  return makeServer(url.hostname.replace(/^\[(.*)\]$/, '$1'), port, tls);
}

function makeServer(host: string, port: number, tls: IcapTlsOptions | false): ResolvedServer {
  const h = host.includes(':') ? `[${host}]` : host;
  return { host, port, tls, url: `${tls ? 'icaps' : 'icap'}://${h}:${port}` };
}

/** The intake options (see IcapProfile: bodyDeadline ... drainAfterAnswer). */
function intakeOptions(
  p: IcapProfile,
  previewMinBodySize: number,
  bufferSize: number,
): Pick<
  ResolvedProfile,
  | 'bodyDeadline'
  | 'holdBodySize'
  | 'minBodyRate'
  | 'lengthRequired'
  | 'maxBodiesPerClient'
  | 'drainBytes'
  | 'drainTimeout'
> {
  const holdBodySize = parseSize(p.holdBodySize ?? previewMinBodySize, 'profile.holdBodySize');
  if (!Number.isInteger(holdBodySize) || holdBodySize < 0 || holdBodySize > MAX_BUFFER)
    fail('profile.holdBodySize', `must be from 0 to 4gb (got ${describe(p.holdBodySize)})`);
  const minBodyRate = parseSize(p.minBodyRate ?? PROFILE_DEFAULTS.minBodyRate, 'profile.minBodyRate');
  if (!Number.isInteger(minBodyRate) || minBodyRate < 0 || minBodyRate > MAX_BUFFER)
    fail('profile.minBodyRate', `must be from 0 to 4gb per second (got ${describe(p.minBodyRate)})`);
  const drain = p.drainAfterAnswer ?? {};
  if (typeof drain !== 'object' || drain === null)
    fail('profile.drainAfterAnswer', `must be an object (got ${describe(drain)})`);
  const drainBytes = parseSize(drain.bytes ?? PROFILE_DEFAULTS.drainBytes, 'profile.drainAfterAnswer.bytes');
  if (!Number.isInteger(drainBytes) || drainBytes < 0 || drainBytes > MAX_BUFFER)
    fail('profile.drainAfterAnswer.bytes', `must be from 0 to 4gb (got ${describe(drain.bytes)})`);
  return {
    bodyDeadline: integer(
      p.bodyDeadline,
      'profile.bodyDeadline',
      PROFILE_DEFAULTS.bodyDeadline,
      50,
      86_400_000,
      'ms',
    ),
    // A body larger than bufferSize is refused anyway: holding more than that means holding it whole.
    holdBodySize: Math.min(holdBodySize, bufferSize),
    minBodyRate,
    lengthRequired: bool(p.lengthRequired, 'profile.lengthRequired', false),
    maxBodiesPerClient:
      p.maxBodiesPerClient === undefined
        ? undefined
        : integer(p.maxBodiesPerClient, 'profile.maxBodiesPerClient', 0, 1, 1_000_000, 'uploads'),
    drainBytes,
    drainTimeout: integer(
      drain.timeout,
      'profile.drainAfterAnswer.timeout',
      PROFILE_DEFAULTS.drainTimeout,
      0,
      3_600_000,
      'ms',
    ),
  };
}
