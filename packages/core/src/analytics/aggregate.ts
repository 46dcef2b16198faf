import type { IcapAction, IcapLog, IcapRequestLog } from '../engine/log.js';
import type { ServerStatus } from '../engine/pool-group.js';
import type { StoredLog } from './ring.js';
import {
  ANALYTICS_DIMENSIONS,
  type AnalyticsFilters,
  type Dimension,
  entriesOf,
  isPageView,
  isSignificant,
  LATENCY_BOUNDS,
  LATENCY_LABELS,
  type LatencyBucket,
  latencyBucket,
  logValues,
  methodOf,
  type PageViews,
  recordLatency,
  serverOf,
} from './values.js';

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
    error: log.error_code ?? entriesOf(log).find((e) => e.error_code !== undefined)?.error_code ?? null,
    truncated: s.truncated,
  };
}

/**
 * The `k` most frequent values (ties by value), without sorting them all: clients choose how
 * many distinct values there are (file names, paths).
 */
function topOf(counts: ReadonlyMap<string, number>, k: number): Array<[string, number]> {
  const before = (a: [string, number], b: [string, number]) => a[1] > b[1] || (a[1] === b[1] && a[0] < b[0]);
  const top: Array<[string, number]> = [];
  if (k <= 0) return top;
  // Inserting into a long list costs more than one sort.
  if (k > 64) return [...counts].sort((a, b) => (before(a, b) ? -1 : before(b, a) ? 1 : 0)).slice(0, k);
  for (const e of counts) {
    if (top.length === k && !before(e, top[k - 1]!)) continue;
    let i = Math.min(top.length, k - 1);
    while (i > 0 && before(e, top[i - 1]!)) i--;
    top.splice(i, 0, e);
    if (top.length > k) top.pop();
  }
  return top;
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
    for (const e of entriesOf(log)) {
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
