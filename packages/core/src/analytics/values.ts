import type { IcapAction, IcapLog, IcapRequestLog } from '../engine/log.js';

/**
 * What the log analytics page counts and filters on. Every value shown on the page belongs to
 * one of these dimensions, and clicking it adds the filter `dimension = value`: values of one
 * dimension are alternatives (action = blocked or failed), dimensions combine (and).
 */

export const ANALYTICS_DIMENSIONS = [
  'action',
  'significant',
  'significance',
  'threat',
  'rule',
  'server',
  'pool',
  'vendor',
  'latency',
  'error',
  'file',
  'method',
  'path',
  'status',
  'icap_status',
  'profile',
  'client',
] as const;

export type Dimension = (typeof ANALYTICS_DIMENSIONS)[number];

/** Selected values per dimension: a record matches when, for every dimension given, one of its values is selected. */
export type AnalyticsFilters = Partial<Record<Dimension, readonly string[]>>;

export const ACTIONS: readonly IcapAction[] = [
  'ICAP_PASSED',
  'ICAP_BLOCKED',
  'ICAP_MODIFIED',
  'ICAP_FAILED',
  'ICAP_DISABLED',
];

/** Upper bounds (ms, exclusive) of the latency buckets; the last bucket has none. */
export const LATENCY_BOUNDS = [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000] as const;

export interface LatencyBucket {
  /** The bucket's name, also its filter value: '0-5 ms', '500 ms-1 s', '10 s+'. */
  label: string;
  /** Lower bound, ms (inclusive). */
  from: number;
  /** Upper bound, ms (exclusive); null for the last bucket. */
  to: number | null;
  count: number;
}

function msLabel(ms: number): string {
  return ms < 1000 ? `${ms} ms` : `${ms / 1000} s`;
}

function bucketLabel(i: number): string {
  const from = i === 0 ? 0 : LATENCY_BOUNDS[i - 1]!;
  const to = LATENCY_BOUNDS[i];
  if (to === undefined) return `${msLabel(from)}+`;
  // '5-10 ms', '1-2.5 s', but '500 ms-1 s' where the units differ.
  if (from === 0) return `0-${msLabel(to)}`;
  if (from < 1000 === to < 1000) return `${msLabel(from).split(' ')[0]}-${msLabel(to)}`;
  return `${msLabel(from)}-${msLabel(to)}`;
}

export const LATENCY_LABELS: readonly string[] = Array.from({ length: LATENCY_BOUNDS.length + 1 }, (_, i) =>
  bucketLabel(i),
);

/** The ICAP latency of a record: the slowest of its ICAP transactions (undefined without any). */
export function recordLatency(log: IcapLog): number | undefined {
  let max: number | undefined;
  for (const e of log.request_logs ?? []) {
    const n = Number(e.latency);
    if (Number.isFinite(n) && n >= 0 && (max === undefined || n > max)) max = n;
  }
  return max;
}

export function latencyBucket(ms: number): number {
  let i = 0;
  while (i < LATENCY_BOUNDS.length && ms >= LATENCY_BOUNDS[i]!) i++;
  return i;
}

/** `icap://host:port` of an entry, as `engine.status()` names the server. */
export function serverOf(entry: IcapRequestLog): string | undefined {
  const m = /^(icaps?:\/\/[^/?#]+)/i.exec(entry.icap_absolute_uri ?? '');
  return m === null ? undefined : m[1];
}

/** A record's ICAP transactions (none when it has no list). */
export function entriesOf(log: IcapLog): IcapRequestLog[] {
  return Array.isArray(log.request_logs) ? log.request_logs : [];
}

function distinct(values: Iterable<string | undefined>): string[] {
  const out = new Set<string>();
  for (const v of values) if (typeof v === 'string' && v !== '') out.add(v);
  return [...out];
}

/** Threat names: per entry (threat_id, violations, OPSWAT), and of the parts removed from a form. */
export function threatsOf(log: IcapLog): string[] {
  const names: Array<string | undefined> = [];
  for (const e of entriesOf(log)) {
    names.push(e.threat_id, e.opswat_log?.threat_id);
    for (const v of e.violations ?? []) names.push(v.threat_name);
    for (const v of e.opswat_log?.violations ?? []) names.push(v.threat_name);
  }
  for (const p of log.removed_parts ?? []) names.push(p.threat_id);
  return distinct(names);
}

const NO_FILE = new Set(['', '-']);

/** File names: the form's files, the scanned part of each entry, the violations' files. */
export function filesOf(log: IcapLog): string[] {
  const names: Array<string | undefined> = [...(log.file_names ?? [])];
  for (const e of entriesOf(log)) {
    names.push(e.file_name);
    for (const v of e.violations ?? []) if (!NO_FILE.has(v.file_name)) names.push(v.file_name);
    for (const v of e.opswat_log?.violations ?? []) if (!NO_FILE.has(v.file_name)) names.push(v.file_name);
  }
  for (const p of log.removed_parts ?? []) names.push(p.file_name);
  return distinct(names);
}

/** 'POST' from 'HTTP_METHOD_POST'. */
export function methodOf(log: IcapLog): string {
  return String(log.http_method ?? '').replace(/^HTTP_METHOD_/, '');
}

/** The values a record has in a dimension (several for threats, files, servers; none when it has none). */
export function logValues(log: IcapLog, dimension: Dimension): string[] {
  switch (dimension) {
    case 'action':
      return distinct([log.action]);
    case 'significant':
      return [isSignificant(log) ? 'yes' : 'no'];
    case 'significance':
      return distinct(log.significance ?? []);
    case 'threat':
      return threatsOf(log);
    case 'rule':
      return distinct([log.rule_name]);
    case 'server':
      return distinct(entriesOf(log).map(serverOf));
    case 'pool':
      return distinct(entriesOf(log).map((e) => e.pool_name?.val));
    case 'vendor':
      return distinct(entriesOf(log).map((e) => e.vendor));
    case 'latency': {
      const ms = recordLatency(log);
      return ms === undefined ? [] : [LATENCY_LABELS[latencyBucket(ms)]!];
    }
    case 'error':
      return distinct([log.error_code, ...entriesOf(log).map((e) => e.error_code)]);
    case 'file':
      return filesOf(log);
    case 'method':
      return distinct([methodOf(log)]);
    case 'path':
      return distinct([log.uri_path]);
    case 'status':
      return log.http_response_code === undefined ? [] : [String(log.http_response_code)];
    case 'icap_status':
      return distinct(
        entriesOf(log).map((e) =>
          e.icap_response_code === undefined ? undefined : String(e.icap_response_code),
        ),
      );
    case 'profile':
      return distinct([log.profile_name]);
    case 'client':
      return distinct([log.client_ip]);
  }
}

/**
 * Whether a record is a page view: a request without a body (GET, HEAD, a favicon...), which
 * the middleware lets through unread. The page hides them unless asked (`pageViews=show`).
 */
export function isPageView(log: IcapLog): boolean {
  return log.policy_reason === 'no-body';
}

/** Whether the overview counts page views ('show') or leaves them out ('hide'). */
export type PageViews = 'show' | 'hide';

/** Whether a record is significant (blocked, modified, failed, slow, refused...). */
export function isSignificant(log: IcapLog): boolean {
  return log.significant === true || (log.significance?.length ?? 0) > 0;
}
