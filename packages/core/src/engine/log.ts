import { createHash } from 'node:crypto';
import { crc32 } from 'node:zlib';
import type { PolicyDecision } from './policy/types.js';
import type { Violation } from './verdict/index.js';

/**
 * The `icap_log` record: one per HTTP request, in the shape of the reference product's log
 * (snake_case JSON, the same field names and enum values), so the same log queries work.
 * `request_logs` has one entry per ICAP transaction tried (a failover adds entries).
 */

export type IcapAction = 'ICAP_DISABLED' | 'ICAP_PASSED' | 'ICAP_MODIFIED' | 'ICAP_BLOCKED' | 'ICAP_FAILED';

export type Significance =
  | 'ICAP_BLOCKED'
  | 'ICAP_MODIFIED'
  | 'ICAP_ERROR'
  | 'SLOW_RESPONSE'
  | 'BUFFER_SIZE_EXCEEDED'
  | 'FAIL_OPEN'
  | 'CLIENT_ABORTED'
  | 'CLIENT_TIMEOUT'
  | 'UNSCANNABLE'
  | 'MULTIPART_REFUSED'
  | 'CONTENT_TYPE_REFUSED'
  | 'CONTENT_ENCODING_REFUSED'
  | 'REQUEST_REFUSED'
  | 'PARTS_REMOVED'
  | 'DECODED_STRINGS'
  | 'CLIENT_LIMITED'
  | 'CONTENT_PROVOKED';

export interface IcapRequestLog {
  action: IcapAction;
  icap_method: 'ICAP_METHOD_REQMOD' | 'ICAP_METHOD_RESPMOD';
  http_method: string;
  icap_response_code?: number;
  http_response_code?: number;
  icap_absolute_uri: string;
  complete_body_sent: boolean;
  pool_name: { val: string; crc32: number };
  pool_uuid: string;
  icap_server_ip?: string;
  icap_server_port: number;
  source_port?: number;
  /** ms from the first ICAP byte sent to the last received, as the reference product writes it (a string). */
  latency: string;
  icap_headers_sent_to_server: string;
  icap_headers_received_from_server?: string;
  modified_content_length?: number;
  /** The profile's `vendor` (the reference product's three names stay as they were). */
  vendor: IcapVendorEnum;
  reason?: string;
  threat_id?: string;
  violations?: Violation[];
  opswat_log?: { reason?: string; threat_id?: string; violations: Violation[] };
  nsx_defender_log?: { score?: number; status_url?: string; task_uuid?: string; status?: string };
  /** Beyond the reference schema: */
  /** The scanned part's file (or field) name, in per-file multipart scanning. */
  file_name?: string;
  istag?: string;
  preview_size?: number;
  connection_reused?: boolean;
  error_code?: string;
  error_message?: string;
}

export interface IcapLog {
  action: IcapAction;
  request_logs: IcapRequestLog[];
  profile_name: string;
  /** The policy rule that decided (absent when no rules are configured). */
  rule_name?: string;
  /** Why the request was (not) scanned: the policy decision's reason (see PolicyDecision). */
  policy_reason: PolicyDecision['reason'];
  significant: boolean;
  significance: Significance[];
  http_method: string;
  /** Path of the request (query string removed). */
  uri_path: string;
  client_ip?: string;
  /**
   * Status the middleware answered with, when it answered (403, 413, 503); for a request it
   * let through, the application's status, added when the response finished (after the record
   * was delivered to onLog and the logger: readers that keep the record see it).
   */
  http_response_code?: number;
  /** Which failure action applied, when one did. */
  fail_action?: 'fail-closed' | 'fail-open';
  /** Body bytes received from the HTTP client. */
  request_body_length?: number;
  /** Epoch ms. */
  start_time: number;
  /** ms the request spent in the middleware. */
  duration: number;
  /** Stable error code when the scan failed. */
  error_code?: string;
  error_message?: string;
  /** Names of the files, when the scan was per file (multipart). */
  file_names?: string[];
  /** Parts removed from the form (infectedPartAction 'strip'). */
  removed_parts?: Array<{ field: string; file_name?: string; threat_id?: string }>;
}

/** The enum names of the methods seen most (a bounded cache: methods come from the client). */
const METHOD_ENUMS = new Map<string, string>();

export function httpMethodEnum(method: string): string {
  let name = METHOD_ENUMS.get(method);
  if (name === undefined) {
    name = `HTTP_METHOD_${method.toUpperCase().replace(/[^A-Z0-9]/g, '_')}`;
    if (METHOD_ENUMS.size < 32) METHOD_ENUMS.set(method, name);
  }
  return name;
}

export type IcapVendorEnum =
  | 'ICAP_VENDOR_GENERIC'
  | 'ICAP_VENDOR_OPSWAT'
  | 'ICAP_VENDOR_LASTLINE'
  | 'ICAP_VENDOR_CICAP'
  | 'ICAP_VENDOR_KASPERSKY'
  | 'ICAP_VENDOR_ESET'
  | 'ICAP_VENDOR_SYMANTEC'
  | 'ICAP_VENDOR_MCAFEE'
  | 'ICAP_VENDOR_TRENDMICRO'
  | 'ICAP_VENDOR_SOPHOS'
  | 'ICAP_VENDOR_FSECURE';

const VENDOR_ENUM: Readonly<Record<string, IcapVendorEnum>> = {
  generic: 'ICAP_VENDOR_GENERIC',
  opswat: 'ICAP_VENDOR_OPSWAT',
  'nsx-defender': 'ICAP_VENDOR_LASTLINE',
  'c-icap': 'ICAP_VENDOR_CICAP',
  kaspersky: 'ICAP_VENDOR_KASPERSKY',
  eset: 'ICAP_VENDOR_ESET',
  symantec: 'ICAP_VENDOR_SYMANTEC',
  mcafee: 'ICAP_VENDOR_MCAFEE',
  'trend-micro': 'ICAP_VENDOR_TRENDMICRO',
  sophos: 'ICAP_VENDOR_SOPHOS',
  'f-secure': 'ICAP_VENDOR_FSECURE',
};

export function vendorEnum(vendor: string): IcapRequestLog['vendor'] {
  return Object.hasOwn(VENDOR_ENUM, vendor) ? VENDOR_ENUM[vendor]! : 'ICAP_VENDOR_GENERIC';
}

const poolNameCache = new Map<string, { name: { val: string; crc32: number }; uuid: string }>();

/** `{ val, crc32 }` as the reference product writes pool names, and a stable pool UUID. */
export function poolIdentity(name: string): { name: { val: string; crc32: number }; uuid: string } {
  let id = poolNameCache.get(name);
  if (id === undefined) {
    const h = createHash('sha1').update(`icapkit-pool:${name}`).digest('hex');
    id = {
      name: { val: name, crc32: crc32(name) },
      uuid: `poolgroup-${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`,
    };
    poolNameCache.set(name, id);
  }
  return id;
}

/**
 * The last few blocks redacted, with their results: the same blocks come back request after
 * request (the ICAP head sent for one kind of request, a server's 204 answer), and comparing a
 * block with the one kept costs less than lower-casing it again. Keyed by the block's text and
 * the set of names (a profile's own, fixed once resolved); a pure function's results, so a hit
 * returns exactly what the redaction would. Only blocks in which nothing was redacted are kept.
 */
const REDACTED_SLOTS = 4;
const redactedRaw: string[] = ['', '', '', ''];
const redactedNames: Array<ReadonlySet<string> | null> = [null, null, null, null];
const redactedOut: string[] = ['', '', '', ''];
let redactedNext = 0;

/** Replaces the values of the named headers in a raw `Name: value\r\n` block. */
export function redactHeaderBlock(raw: string, names: ReadonlySet<string>): string {
  if (raw === '' || names.size === 0) return raw;
  for (let i = 0; i < REDACTED_SLOTS; i++)
    if (redactedNames[i] === names && redactedRaw[i] === raw) return redactedOut[i]!;
  const out = redactBlock(raw, names);
  // Kept only when nothing was redacted (a block holding a secret value is never kept past its
  // request) and short (no large strings held for the process's life).
  if (out === raw && raw.length <= 2048) {
    const at = redactedNext;
    redactedNext = (at + 1) % REDACTED_SLOTS;
    redactedRaw[at] = raw;
    redactedNames[at] = names;
    redactedOut[at] = out;
  }
  return out;
}

function redactBlock(raw: string, names: ReadonlySet<string>): string {
  // Most blocks name none of the redacted fields (a name is redacted only if it appears in the
  // lower-cased block): one search each instead of a replace with a callback per line.
  const lower = raw.toLowerCase();
  let named = false;
  for (const name of names) {
    if (lower.includes(name)) {
      named = true;
      break;
    }
  }
  if (!named) return raw;
  return raw.replace(/^([^:\r\n]+):[ \t]*([^\r\n]*)/gm, (line, name: string) =>
    names.has(name.trim().toLowerCase()) ? `${name}: [REDACTED]` : line,
  );
}

/**
 * Sends a finished record to `onLog` and the logger, at a level that fits the action. Neither
 * can change anything: a hook or logger method that throws, or returns a promise that rejects
 * (an async `onLog`, a logger whose destination fails), is caught here, so the request keeps
 * its outcome and no rejection reaches the process.
 */
export function emitLog(
  log: IcapLog,
  onLog: ((log: IcapLog) => void) | undefined,
  logger: PinoLike | undefined,
): void {
  if (onLog !== undefined) observe(() => onLog(log), logger, 'icapkit: onLog threw');
  if (logger === undefined) return;
  const obj = { icap_log: log };
  observe(
    () => {
      switch (log.action) {
        case 'ICAP_BLOCKED':
          return logger.warn(obj, 'icap: request blocked');
        case 'ICAP_FAILED':
          return logger.error(obj, 'icap: scan failed');
        case 'ICAP_MODIFIED':
          return logger.info(obj, 'icap: request modified');
        default:
          if (log.significant) return logger.warn(obj, 'icap: significant');
          return logger.debug(
            obj,
            log.action === 'ICAP_PASSED' ? 'icap: request passed' : 'icap: scanning disabled',
          );
      }
    },
    undefined,
    '',
  );
}

/**
 * Calls an observer of ours (a hook, a logger, a listener) so that nothing it does reaches the
 * caller: a throw, or a returned promise that rejects, is reported to `logger` (itself guarded)
 * when there is one, else dropped.
 */
export function observe(call: () => unknown, logger: PinoLike | undefined, what: string): void {
  const report = (err: unknown) => {
    if (logger === undefined) return;
    try {
      const r: unknown = logger.error({ err }, what);
      if (isThenable(r)) r.then(undefined, ignore);
    } catch {
      // a logger that throws reporting another's throw: nothing more to tell
    }
  };
  try {
    const r = call();
    if (isThenable(r)) r.then(undefined, report);
  } catch (err) {
    report(err);
  }
}

function isThenable(v: unknown): v is PromiseLike<unknown> {
  return (
    (typeof v === 'object' || typeof v === 'function') &&
    v !== null &&
    typeof (v as { then?: unknown }).then === 'function'
  );
}

function ignore(): void {}

/** The logger a profile may name (pino's methods, or any object with the same four). */
export interface PinoLike {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}
