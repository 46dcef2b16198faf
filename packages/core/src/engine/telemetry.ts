import * as dc from 'node:diagnostics_channel';
import { debuglog } from 'node:util';
import {
  type Attributes,
  type Counter,
  context,
  createNoopMeter,
  type Histogram,
  metrics,
  type ObservableResult,
  type Span,
  SpanKind,
  SpanStatusCode,
  trace,
} from '@opentelemetry/api';
import type { IcapError } from '../errors.js';
import { maskQuery } from '../protocol/shown-uri.js';
import type { IcapAction, IcapLog } from './log.js';
import type { PoolGroup, ServerHandle, ServerState, ServerTransition } from './pool-group.js';
import type { MetricsOptions, PromMetric, PromRegistryLike } from './telemetry-options.js';

/**
 * What the engine tells the outside world besides the log record:
 *
 * - `diagnostics_channel` events (free when nobody subscribes), named like undici's:
 *   `icapkit:scan:start`, `icapkit:scan:end`, `icapkit:transaction:start`,
 *   `icapkit:transaction:preview`, `icapkit:transaction:verdict`, `icapkit:transaction:error`,
 *   `icapkit:client:connect`, `icapkit:server:state` (a server's health changed: suspended,
 *   half-open, up; once per transition);
 * - `NODE_DEBUG=icapkit` lines (`util.debuglog`);
 * - OpenTelemetry metrics and a span per scan through `@opentelemetry/api` (no-ops unless the
 *   application registered an SDK);
 * - Prometheus metrics in a registry the application hands over (prom-client's `Registry`, or
 *   anything with `registerMetric`): nothing is registered globally.
 *
 * Every label has a bounded set of values: actions and vendors are enums, pools and servers
 * come from the profile, ICAP status codes are three digits. No path, file name or threat name
 * is ever a label.
 */

const VERSION = '0.1.0';

export const ScanChannels = {
  scanStart: dc.channel('icapkit:scan:start'),
  scanEnd: dc.channel('icapkit:scan:end'),
  transactionStart: dc.channel('icapkit:transaction:start'),
  transactionPreview: dc.channel('icapkit:transaction:preview'),
  transactionVerdict: dc.channel('icapkit:transaction:verdict'),
  transactionError: dc.channel('icapkit:transaction:error'),
  connect: dc.channel('icapkit:client:connect'),
  serverState: dc.channel('icapkit:server:state'),
} as const;

/** Payloads of the diagnostics_channel events. */
export interface ScanStartMessage {
  scanId: number;
  profile: string;
  method: string;
  path: string;
}
export interface ScanEndMessage {
  scanId: number;
  action: IcapAction;
  durationMs: number;
  log: IcapLog;
}
export interface TransactionMessage {
  scanId: number;
  pool: string;
  server: string;
  service: string;
}
export interface TransactionVerdictMessage extends TransactionMessage {
  status: number;
  verdict: 'clean' | 'blocked' | 'adapted' | 'error';
  threat: string | undefined;
  latencyMs: number;
}
export interface TransactionErrorMessage extends TransactionMessage {
  error: IcapError;
}
export interface ServerStateMessage {
  profile: string;
  pool: string;
  server: string;
  from: ServerState;
  to: ServerState;
  reason: string;
  /** When suspended: ms until the next probe. */
  backoff: number | undefined;
}
/** What a server's health transition says (diagnostics channel and log record alike). */
export function serverStateMessage(
  profile: string,
  server: ServerHandle,
  change: ServerTransition,
): ServerStateMessage {
  return {
    profile,
    pool: server.pool.name,
    server: server.server.url,
    from: change.from,
    to: change.to,
    reason: change.reason,
    backoff: change.backoff,
  };
}
export interface ConnectMessage {
  pool: string;
  server: string;
  localPort: number | undefined;
}

const debug = debuglog('icapkit');
/** Whether NODE_DEBUG names icapkit (read once, as debuglog does): the messages' arguments are not built otherwise. */
const debugOn = debug.enabled;

export type { MetricsOptions, PromMetric, PromRegistryLike } from './telemetry-options.js';

/** Upper bounds (seconds) of the scan duration histogram. */
const DURATION_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

export interface ScanScope {
  id: number;
  span: Span;
  t0: number;
}

let nextScanId = 1;

export class Telemetry {
  readonly #profile: string;
  readonly #vendor: string;
  readonly #group: PoolGroup;
  readonly #tracer = trace.getTracer('icapkit', VERSION);
  readonly #scanDuration: Histogram;
  readonly #scanOutcomes: Counter;
  readonly #scanBytes: Counter;
  readonly #icapDuration: Histogram;
  readonly #transitions: Counter;
  readonly #observe: (r: ObservableResult) => void;
  readonly #observeCreated: (r: ObservableResult) => void;
  readonly #observeHealth: (r: ObservableResult) => void;
  readonly #gauges: Array<{
    removeCallback(cb: (r: ObservableResult) => void): void;
    cb: (r: ObservableResult) => void;
  }>;
  readonly #prom: PromState | undefined;
  /**
   * No OpenTelemetry meter provider was registered when the engine was made: the instruments
   * are the API's no-op ones (they stay so), so their attributes are not built per request.
   */
  readonly #metricsOff: boolean;

  constructor(profile: string, vendor: string, group: PoolGroup, options: MetricsOptions = {}) {
    this.#profile = profile;
    this.#vendor = vendor;
    this.#group = group;
    const meter = metrics.getMeter('icapkit', VERSION);
    this.#metricsOff = meter === createNoopMeter();
    this.#scanDuration = meter.createHistogram('icapkit.scan.duration', {
      unit: 's',
      description: 'Time a request spent in the ICAP middleware',
      advice: { explicitBucketBoundaries: DURATION_BUCKETS },
    });
    this.#scanOutcomes = meter.createCounter('icapkit.scan.outcomes', {
      description: 'Scans by action (icap_log action)',
    });
    this.#scanBytes = meter.createCounter('icapkit.scan.bytes', {
      unit: 'By',
      description: 'Request body bytes scanned',
    });
    this.#icapDuration = meter.createHistogram('icap.client.request.duration', {
      unit: 's',
      description: 'Duration of ICAP transactions',
      advice: { explicitBucketBoundaries: DURATION_BUCKETS },
    });
    this.#transitions = meter.createCounter('icapkit.server.transitions', {
      description: 'Changes of ICAP server health (to suspended, half-open or up)',
    });
    const connections = meter.createObservableGauge('icapkit.connections', {
      description: 'ICAP connections by state',
    });
    const created = meter.createObservableCounter('icapkit.connections.created', {
      description: 'ICAP connections opened',
    });
    const health = meter.createObservableGauge('icapkit.server.up', {
      description: '1 when the ICAP server is up, 0 when suspended or on trial (no value before it answered)',
    });
    this.#observe = (r) => {
      for (const s of group.servers) {
        const st = s.client.stats;
        r.observe(st.busy, { ...serverAttrs(s), 'icapkit.connection.state': 'busy' });
        r.observe(st.idle, { ...serverAttrs(s), 'icapkit.connection.state': 'idle' });
      }
    };
    this.#observeCreated = (r) => {
      for (const s of group.servers) r.observe(s.client.stats.created, serverAttrs(s));
    };
    this.#observeHealth = (r) => {
      // No value for a server that has not answered yet (unknown): neither up nor down.
      for (const s of group.servers)
        if (s.healthState !== 'unknown') r.observe(s.state === 'up' ? 1 : 0, serverAttrs(s));
    };
    connections.addCallback(this.#observe);
    created.addCallback(this.#observeCreated);
    health.addCallback(this.#observeHealth);
    this.#gauges = [
      { removeCallback: (cb) => connections.removeCallback(cb), cb: this.#observe },
      { removeCallback: (cb) => created.removeCallback(cb), cb: this.#observeCreated },
      { removeCallback: (cb) => health.removeCallback(cb), cb: this.#observeHealth },
    ];
    if (options.registry !== undefined)
      this.#prom = new PromState(options.registry, options.prefix ?? 'icapkit_', group);
    for (const s of group.servers) {
      s.client.pool.onConnect = (conn) => {
        const message: ConnectMessage = {
          pool: s.pool.name,
          server: s.server.url,
          localPort: conn.localPort,
        };
        if (ScanChannels.connect.hasSubscribers) ScanChannels.connect.publish(message);
        if (debugOn) debug('connected to %s from port %d', s.server.url, conn.localPort);
      };
    }
  }

  scanStart(method: string, path: string): ScanScope {
    const id = nextScanId++;
    const span = this.#tracer.startSpan(
      'icap.scan',
      {
        kind: SpanKind.INTERNAL,
        attributes: { 'icap.profile': this.#profile, 'http.request.method': method },
      },
      context.active(),
    );
    if (ScanChannels.scanStart.hasSubscribers) {
      ScanChannels.scanStart.publish({
        scanId: id,
        profile: this.#profile,
        method,
        path,
      } satisfies ScanStartMessage);
    }
    return { id, span, t0: performance.now() };
  }

  scanEnd(scope: ScanScope, log: IcapLog, bytes: number): void {
    const seconds = (performance.now() - scope.t0) / 1000;
    const last = log.request_logs.at(-1);
    const pool = last?.pool_name.val ?? 'none';
    if (!this.#metricsOff) {
      const attrs: Attributes = { 'icap.action': log.action, 'icap.vendor': this.#vendor, 'icap.pool': pool };
      this.#scanDuration.record(seconds, attrs);
      this.#scanOutcomes.add(1, attrs);
      if (bytes > 0) this.#scanBytes.add(bytes, { 'icap.vendor': this.#vendor });
    }
    this.#prom?.scan(log.action, this.#vendor, pool, seconds, bytes);
    const span = scope.span;
    // A span nobody records (no tracer provider) takes no attributes.
    if (span.isRecording()) {
      span.setAttribute('icap.action', log.action);
      if (log.rule_name !== undefined) span.setAttribute('icap.rule', log.rule_name);
      if (last !== undefined) {
        if (last.icap_server_ip !== undefined) span.setAttribute('server.address', last.icap_server_ip);
        span.setAttribute('server.port', last.icap_server_port);
        span.setAttribute('icap.pool', pool);
        if (last.icap_response_code !== undefined)
          span.setAttribute('icap.status_code', last.icap_response_code);
        if (last.threat_id !== undefined) span.setAttribute('icap.threat.name', last.threat_id);
      }
      span.setAttribute('icap.transactions', log.request_logs.length);
      if (log.action === 'ICAP_FAILED') {
        span.setAttribute('error.type', log.error_code ?? 'ICAP_FAILED');
        span.setStatus({ code: SpanStatusCode.ERROR, message: log.error_message ?? 'ICAP scan failed' });
      }
    }
    span.end();
    if (ScanChannels.scanEnd.hasSubscribers) {
      ScanChannels.scanEnd.publish({
        scanId: scope.id,
        action: log.action,
        durationMs: seconds * 1000,
        log,
      } satisfies ScanEndMessage);
    }
    if (debugOn)
      debug(
        'scan %d %s in %d ms (%d ICAP transactions)',
        scope.id,
        log.action,
        Math.round(seconds * 1000),
        log.request_logs.length,
      );
  }

  transactionStart(scope: ScanScope, server: ServerHandle, service: string): void {
    if (ScanChannels.transactionStart.hasSubscribers)
      ScanChannels.transactionStart.publish(this.#tx(scope, server, service));
    if (debugOn) debug('scan %d: REQMOD %s%s', scope.id, server.server.url, maskQuery(service));
  }

  transactionPreview(scope: ScanScope, server: ServerHandle, service: string): void {
    if (ScanChannels.transactionPreview.hasSubscribers)
      ScanChannels.transactionPreview.publish(this.#tx(scope, server, service));
    if (debugOn) debug('scan %d: %s wants more than the preview', scope.id, server.server.url);
  }

  transactionVerdict(
    scope: ScanScope,
    server: ServerHandle,
    service: string,
    status: number,
    verdict: TransactionVerdictMessage['verdict'],
    threat: string | undefined,
    latencyMs: number,
  ): void {
    if (!this.#metricsOff)
      this.#icapDuration.record(latencyMs / 1000, { ...serverAttrs(server), 'icap.status_code': status });
    if (ScanChannels.transactionVerdict.hasSubscribers) {
      ScanChannels.transactionVerdict.publish({
        ...this.#tx(scope, server, service),
        status,
        verdict,
        threat,
        latencyMs,
      } satisfies TransactionVerdictMessage);
    }
    if (debugOn) debug('scan %d: %s answered %d (%s)', scope.id, server.server.url, status, verdict);
  }

  transactionError(scope: ScanScope, server: ServerHandle, service: string, error: IcapError): void {
    this.#prom?.error(server, error.code);
    if (ScanChannels.transactionError.hasSubscribers) {
      ScanChannels.transactionError.publish({
        ...this.#tx(scope, server, service),
        error,
      } satisfies TransactionErrorMessage);
    }
    if (debugOn) debug('scan %d: %s failed: %s %s', scope.id, server.server.url, error.code, error.message);
  }

  /** A server's health changed (reported once per transition). */
  serverState(server: ServerHandle, change: ServerTransition): void {
    this.#transitions.add(1, { ...serverAttrs(server), 'icapkit.server.state': change.to });
    this.#prom?.transition(server, change.to);
    if (ScanChannels.serverState.hasSubscribers) {
      ScanChannels.serverState.publish(serverStateMessage(this.#profile, server, change));
    }
    if (debugOn) debug('server %s: %s -> %s (%s)', server.server.url, change.from, change.to, change.reason);
  }

  close(): void {
    for (const g of this.#gauges) g.removeCallback(g.cb);
    this.#prom?.unregister();
    for (const s of this.#group.servers) s.client.pool.onConnect = undefined;
  }

  #tx(scope: ScanScope, server: ServerHandle, service: string): TransactionMessage {
    return {
      scanId: scope.id,
      pool: server.pool.name,
      server: server.server.url,
      service: maskQuery(service),
    };
  }
}

function serverAttrs(s: ServerHandle): Attributes {
  return { 'server.address': s.server.host, 'server.port': s.server.port, 'icap.pool': s.pool.name };
}

/** Prometheus metrics kept here and handed to the user's registry at scrape time. */
class PromState {
  readonly #registry: PromRegistryLike;
  readonly #names: string[] = [];
  readonly #outcomes = new Map<string, number>();
  readonly #errors = new Map<string, number>();
  readonly #transitions = new Map<string, number>();
  readonly #buckets = new Map<string, { counts: number[]; sum: number; count: number }>();
  #bytes = 0;

  constructor(registry: PromRegistryLike, prefix: string, group: PoolGroup) {
    this.#registry = registry;
    const metric = (name: string, help: string, type: PromMetric['type'], values: () => PromValues): void => {
      const full = `${prefix}${name}`;
      registry.registerMetric({
        name: full,
        help,
        type,
        aggregator: 'sum',
        get: async () => ({ name: full, help, type, aggregator: 'sum', values: values() }),
        reset: () => {},
      });
      this.#names.push(full);
    };
    metric('scans_total', 'Scans by icap_log action', 'counter', () =>
      [...this.#outcomes].map(([k, value]) => {
        const [action, vendor, pool] = k.split('\u0000') as [string, string, string];
        return { value, labels: { action, vendor, pool } };
      }),
    );
    metric('scanned_bytes_total', 'Request body bytes scanned', 'counter', () => [
      { value: this.#bytes, labels: {} },
    ]);
    metric('scan_duration_seconds', 'Time a request spent in the ICAP middleware', 'histogram', () => {
      const out: PromValues = [];
      for (const [action, h] of this.#buckets) {
        let cumulative = 0;
        DURATION_BUCKETS.forEach((le, i) => {
          cumulative += h.counts[i]!;
          out.push({
            value: cumulative,
            labels: { action, le },
            metricName: `${prefix}scan_duration_seconds_bucket`,
          });
        });
        out.push({
          value: h.count,
          labels: { action, le: '+Inf' },
          metricName: `${prefix}scan_duration_seconds_bucket`,
        });
        out.push({ value: h.sum, labels: { action }, metricName: `${prefix}scan_duration_seconds_sum` });
        out.push({ value: h.count, labels: { action }, metricName: `${prefix}scan_duration_seconds_count` });
      }
      return out;
    });
    metric('icap_errors_total', 'ICAP transaction failures by server and error code', 'counter', () =>
      [...this.#errors].map(([k, value]) => {
        const [server, code] = k.split('\u0000') as [string, string];
        return { value, labels: { server, code } };
      }),
    );
    metric('icap_connections', 'ICAP connections by server and state', 'gauge', () =>
      group.servers.flatMap((s) => [
        { value: s.client.stats.busy, labels: { pool: s.pool.name, server: s.server.url, state: 'busy' } },
        { value: s.client.stats.idle, labels: { pool: s.pool.name, server: s.server.url, state: 'idle' } },
      ]),
    );
    metric('icap_connections_created_total', 'ICAP connections opened', 'counter', () =>
      group.servers.map((s) => ({
        value: s.client.stats.created,
        labels: { pool: s.pool.name, server: s.server.url },
      })),
    );
    metric(
      'icap_server_transitions_total',
      'Changes of ICAP server health by server and new state (suspended, half-open, up)',
      'counter',
      () =>
        [...this.#transitions].map(([k, value]) => {
          const [pool, server, state] = k.split('\u0000') as [string, string, string];
          return { value, labels: { pool, server, state } };
        }),
    );
    metric('icap_server_up', '1 when the ICAP server is up, 0 when suspended or on trial', 'gauge', () =>
      // No sample for a server that has not answered yet (unknown): neither up nor down.
      group.servers
        .filter((s) => s.healthState !== 'unknown')
        .map((s) => ({
          value: s.state === 'up' ? 1 : 0,
          labels: { pool: s.pool.name, server: s.server.url },
        })),
    );
  }

  scan(action: string, vendor: string, pool: string, seconds: number, bytes: number): void {
    const k = `${action}\u0000${vendor}\u0000${pool}`;
    this.#outcomes.set(k, (this.#outcomes.get(k) ?? 0) + 1);
    this.#bytes += bytes;
    let h = this.#buckets.get(action);
    if (h === undefined) {
      h = { counts: DURATION_BUCKETS.map(() => 0), sum: 0, count: 0 };
      this.#buckets.set(action, h);
    }
    const i = DURATION_BUCKETS.findIndex((le) => seconds <= le);
    if (i !== -1) h.counts[i]!++;
    h.sum += seconds;
    h.count++;
  }

  error(server: ServerHandle, code: string): void {
    const k = `${server.server.url}\u0000${code}`;
    this.#errors.set(k, (this.#errors.get(k) ?? 0) + 1);
  }

  transition(server: ServerHandle, state: ServerState): void {
    const k = `${server.pool.name}\u0000${server.server.url}\u0000${state}`;
    this.#transitions.set(k, (this.#transitions.get(k) ?? 0) + 1);
  }

  unregister(): void {
    for (const n of this.#names) this.#registry.removeSingleMetric(n);
  }
}

type PromValues = Array<{ value: number; labels: Record<string, string | number>; metricName?: string }>;
