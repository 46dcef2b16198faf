import type { IcapAction, IcapLog, IcapRequestLog } from '../engine/log.js';
import type { ServerStatus } from '../engine/pool-group.js';
import type { StoredLog } from './ring.js';
import { topOf } from './top.js';

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

function entries(log: IcapLog): IcapRequestLog[] {
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
  for (const e of entries(log)) {
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
  for (const e of entries(log)) {
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
      return distinct(entries(log).map(serverOf));
    case 'pool':
      return distinct(entries(log).map((e) => e.pool_name?.val));
    case 'vendor':
      return distinct(entries(log).map((e) => e.vendor));
    case 'latency': {
      const ms = recordLatency(log);
      return ms === undefined ? [] : [LATENCY_LABELS[latencyBucket(ms)]!];
    }
    case 'error':
      return distinct([log.error_code, ...entries(log).map((e) => e.error_code)]);
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
        entries(log).map((e) =>
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

/**
 * Whether a record matches every dimension of the filters (one selected value per dimension);
 * `values` reads its values (a stored record's: those read when it was stored).
 */
export function matchesFilters(
  log: IcapLog,
  filters: AnalyticsFilters,
  values: (d: Dimension) => readonly string[] = (d) => logValues(log, d),
): boolean {
  for (const d of ANALYTICS_DIMENSIONS) {
    const wanted = filters[d];
    if (wanted === undefined || wanted.length === 0) continue;
    if (!values(d).some((v) => wanted.includes(v))) return false;
  }
  return true;
}

export interface FacetValue {
  value: string;
  /** Records with this value. */
  count: number;
}

export interface Facet {
  /** The most frequent values, most frequent first. */
  top: FacetValue[];
  /** How many other distinct values were left out. */
  others: number;
}

/** Outcomes of the ICAP transactions of a server or a pool. */
export interface Outcomes {
  /** ICAP transactions (entries of request_logs) of the matching records. */
  transactions: number;
  /** Transactions by their action. */
  actions: Record<IcapAction, number>;
  /** Mean latency of the transactions, ms (null without any). */
  meanLatency: number | null;
}

export interface ServerHealth {
  profile: string;
  state: ServerStatus['state'];
  outstanding: number;
  consecutiveFailures: number;
  lastError: string | null;
  connections: { open: number; busy: number; idle: number; pending: number; limit: number };
}

export interface ServerRow extends Outcomes {
  /** `icap://host:port`. */
  server: string;
  pools: string[];
  /** The server's current health in each engine that has it (empty when only the log names it). */
  health: ServerHealth[];
}

export interface PoolRow extends Outcomes {
  pool: string;
  /** Servers of the pool (from the engines, and from the log). */
  servers: string[];
  /** Of those, how many are up now (null when no engine has the pool any more). */
  up: number | null;
  /** Of those, how many have not answered yet (state `unknown`; null as for `up`). */
  unknown: number | null;
}

export interface RecordSummary {
  id: number;
  /** Epoch ms the request started. */
  time: number;
  action: IcapAction;
  method: string;
  path: string;
  /** The HTTP status: the middleware's answer (403, 413, 503), or the application's once its response finished. */
  status: number | null;
  /** ms in the middleware. */
  duration: number;
  /** ICAP latency, ms (the slowest transaction), null without one. */
  latency: number | null;
  profile: string;
  rule: string | null;
  threats: string[];
  files: string[];
  servers: string[];
  pools: string[];
  significance: string[];
  error: string | null;
  truncated: boolean;
}

export interface AnalyticsOverview {
  /** Epoch ms of this answer. */
  generatedAt: number;
  /** Records the ring holds at most. */
  capacity: number;
  /** Records held now. */
  stored: number;
  /** Records that match the filters (what everything below counts). */
  matched: number;
  /** Page views (requests without a body) among the records that match the filters, and whether they were left out. */
  pageViews: { count: number; hidden: boolean };
  /** The filters applied, one entry per selected value. */
  filters: Array<{ key: Dimension; value: string }>;
  /** Matching records by action, every action present. */
  actions: Record<IcapAction, number>;
  /** Matching records that are significant. */
  significant: number;
  facets: Record<FacetDimension, Facet>;
  servers: ServerRow[];
  pools: PoolRow[];
  latency: {
    buckets: LatencyBucket[];
    /** Records with an ICAP latency. */
    count: number;
    p50: number | null;
    p95: number | null;
    max: number | null;
  };
  /** The most recent significant records among the matching ones, newest first. */
  significantRecords: RecordSummary[];
  /** The most recent matching records, newest first (at most `limit`). */
  records: RecordSummary[];
}

/** Dimensions listed as "top values" on the page (the others have panels of their own). */
export const FACET_DIMENSIONS = [
  'threat',
  'rule',
  'significance',
  'vendor',
  'error',
  'file',
  'path',
  'method',
  'status',
  'icap_status',
  'profile',
  'client',
] as const satisfies readonly Dimension[];

export type FacetDimension = (typeof FACET_DIMENSIONS)[number];

export interface SummarizeOptions {
  /** Records listed at most. Default 100. */
  limit?: number | undefined;
  /** Values per facet. Default 10. */
  top?: number | undefined;
  /** Significant records listed at most. Default 20. */
  significantLimit?: number | undefined;
  /** Current health of the servers, per engine (profile). */
  health?: ReadonlyArray<{ profile: string; status: readonly ServerStatus[] }> | undefined;
  /** The ring's capacity, reported as is. */
  capacity?: number | undefined;
  now?: number | undefined;
  /** 'hide' leaves page views out of everything but `pageViews.count`. Default 'show'. */
  pageViews?: PageViews | undefined;
}

/** Items of a summary list shown at most (threats, files, ...). */
const SUMMARY_LIST = 10;

export function summarizeRecord(s: StoredLog): RecordSummary {
  const log = s.log;
  const latency = recordLatency(log);
  return {
    id: s.id,
    time: log.start_time,
    action: log.action,
    method: methodOf(log),
    path: String(log.uri_path ?? ''),
    status: log.http_response_code ?? null,
    duration: log.duration,
    latency: latency ?? null,
    profile: String(log.profile_name ?? ''),
    rule: log.rule_name ?? null,
    threats: storedValues(s, 'threat').slice(0, SUMMARY_LIST),
    files: storedValues(s, 'file').slice(0, SUMMARY_LIST),
    servers: storedValues(s, 'server').slice(0, SUMMARY_LIST),
    pools: storedValues(s, 'pool').slice(0, SUMMARY_LIST),
    significance: storedValues(s, 'significance').slice(0, SUMMARY_LIST),
    error: log.error_code ?? entries(log).find((e) => e.error_code !== undefined)?.error_code ?? null,
    truncated: s.truncated,
  };
}

/** A stored record's values in a dimension: those read when it was stored (see ring.ts). */
export function storedValues(s: StoredLog, d: Dimension): readonly string[] {
  return s.values?.[d] ?? logValues(s.log, d);
}

function zeroActions(): Record<IcapAction, number> {
  return { ICAP_PASSED: 0, ICAP_BLOCKED: 0, ICAP_MODIFIED: 0, ICAP_FAILED: 0, ICAP_DISABLED: 0 };
}

interface OutcomeAcc {
  transactions: number;
  actions: Record<IcapAction, number>;
  latencySum: number;
  latencyN: number;
  members: Set<string>;
}

function acc(map: Map<string, OutcomeAcc>, key: string): OutcomeAcc {
  let a = map.get(key);
  if (a === undefined) {
    a = { transactions: 0, actions: zeroActions(), latencySum: 0, latencyN: 0, members: new Set() };
    map.set(key, a);
  }
  return a;
}

function addEntry(a: OutcomeAcc, e: IcapRequestLog): void {
  a.transactions++;
  if (e.action in a.actions) a.actions[e.action]++;
  const ms = Number(e.latency);
  if (Number.isFinite(ms) && ms >= 0) {
    a.latencySum += ms;
    a.latencyN++;
  }
}

function outcomes(a: OutcomeAcc | undefined): Outcomes {
  if (a === undefined) return { transactions: 0, actions: zeroActions(), meanLatency: null };
  return {
    transactions: a.transactions,
    actions: a.actions,
    meanLatency: a.latencyN === 0 ? null : Math.round((a.latencySum / a.latencyN) * 10) / 10,
  };
}

function percentile(sorted: readonly number[], p: number): number | null {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

/** Counts, top values, per-server and per-pool outcomes, latency and the record list, over the records that match. */
export function summarizeLogs(
  records: readonly StoredLog[],
  filters: AnalyticsFilters,
  options: SummarizeOptions = {},
): AnalyticsOverview {
  const limit = options.limit ?? 100;
  const top = options.top ?? 10;
  const significantLimit = options.significantLimit ?? 20;
  const actions = zeroActions();
  const facetCounts = new Map<FacetDimension, Map<string, number>>(
    FACET_DIMENSIONS.map((d) => [d, new Map()]),
  );
  const servers = new Map<string, OutcomeAcc>();
  const pools = new Map<string, OutcomeAcc>();
  const buckets = LATENCY_LABELS.map((label, i) => ({
    label,
    from: i === 0 ? 0 : LATENCY_BOUNDS[i - 1]!,
    to: LATENCY_BOUNDS[i] ?? null,
    count: 0,
  }));
  const latencies: number[] = [];
  const list: RecordSummary[] = [];
  const significantList: RecordSummary[] = [];
  let matched = 0;
  let significant = 0;
  let pageViews = 0;
  const hidePageViews = options.pageViews === 'hide';

  for (const s of records) {
    const log = s.log;
    if (!matchesFilters(log, filters, (d) => storedValues(s, d))) continue;
    if (isPageView(log)) {
      pageViews++;
      if (hidePageViews) continue;
    }
    matched++;
    if (log.action in actions) actions[log.action]++;
    for (const [d, counts] of facetCounts) {
      for (const v of storedValues(s, d)) counts.set(v, (counts.get(v) ?? 0) + 1);
    }
    for (const e of entries(log)) {
      const server = serverOf(e);
      const pool = e.pool_name?.val;
      if (server !== undefined) {
        const a = acc(servers, server);
        addEntry(a, e);
        if (pool !== undefined) a.members.add(pool);
      }
      if (pool !== undefined) {
        const a = acc(pools, pool);
        addEntry(a, e);
        if (server !== undefined) a.members.add(server);
      }
    }
    const ms = recordLatency(log);
    if (ms !== undefined) {
      latencies.push(ms);
      buckets[latencyBucket(ms)]!.count++;
    }
    const significantRecord = isSignificant(log);
    if (significantRecord) significant++;
    if (list.length < limit) list.push(summarizeRecord(s));
    if (significantRecord && significantList.length < significantLimit)
      significantList.push(summarizeRecord(s));
  }

  const facets = {} as Record<FacetDimension, Facet>;
  for (const [d, counts] of facetCounts) {
    facets[d] = {
      top: topOf(counts, top).map(([value, count]) => ({ value, count })),
      others: Math.max(0, counts.size - top),
    };
  }

  // Servers and pools: those the engines have now, and those the log names.
  const health = new Map<string, ServerHealth[]>();
  const poolServers = new Map<
    string,
    { servers: Set<string>; up: number; unknown: number; known: boolean }
  >();
  for (const { profile, status } of options.health ?? []) {
    for (const st of status) {
      const h = health.get(st.server) ?? [];
      h.push({
        profile,
        state: st.state,
        outstanding: st.outstanding,
        consecutiveFailures: st.consecutiveFailures,
        lastError: st.lastError ?? null,
        connections: {
          open: st.connections.open,
          busy: st.connections.busy,
          idle: st.connections.idle,
          pending: st.connections.pending,
          limit: st.connections.limit,
        },
      });
      health.set(st.server, h);
      const p = poolServers.get(st.pool) ?? { servers: new Set<string>(), up: 0, unknown: 0, known: true };
      if (!p.servers.has(st.server) && st.state === 'up') p.up++;
      if (!p.servers.has(st.server) && st.state === 'unknown') p.unknown++;
      p.servers.add(st.server);
      poolServers.set(st.pool, p);
      acc(servers, st.server).members.add(st.pool);
    }
  }
  const serverRows: ServerRow[] = [...servers].map(([server, a]) => ({
    server,
    pools: [...a.members].sort(),
    health: health.get(server) ?? [],
    ...outcomes(a),
  }));
  serverRows.sort((a, b) => (a.server < b.server ? -1 : a.server > b.server ? 1 : 0));
  const poolNames = new Set([...pools.keys(), ...poolServers.keys()]);
  const poolRows: PoolRow[] = [...poolNames].sort().map((pool) => {
    const known = poolServers.get(pool);
    const a = pools.get(pool);
    return {
      pool,
      servers: [...new Set([...(known?.servers ?? []), ...(a?.members ?? [])])].sort(),
      up: known === undefined ? null : known.up,
      unknown: known === undefined ? null : known.unknown,
      ...outcomes(a),
    };
  });

  latencies.sort((a, b) => a - b);
  const filterList: Array<{ key: Dimension; value: string }> = [];
  for (const d of ANALYTICS_DIMENSIONS)
    for (const value of filters[d] ?? []) filterList.push({ key: d, value });

  return {
    generatedAt: options.now ?? Date.now(),
    capacity: options.capacity ?? records.length,
    stored: records.length,
    matched,
    pageViews: { count: pageViews, hidden: hidePageViews },
    filters: filterList,
    actions,
    significant,
    facets,
    servers: serverRows,
    pools: poolRows,
    latency: {
      buckets,
      count: latencies.length,
      p50: percentile(latencies, 50),
      p95: percentile(latencies, 95),
      max: latencies.length === 0 ? null : latencies[latencies.length - 1]!,
    },
    significantRecords: significantList,
    records: list,
  };
}
