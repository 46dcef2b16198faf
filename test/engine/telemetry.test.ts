/**
 * What the engine reports besides the log: OpenTelemetry metrics and spans (checked with the
 * SDK's in-memory exporters), Prometheus metrics in a prom-client registry, diagnostics_channel
 * events, and NODE_DEBUG=icapkit lines.
 */
import { execFile } from 'node:child_process';
import * as dc from 'node:diagnostics_channel';
import { existsSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { createEngine, type IcapEngine, type IcapProfile } from '@icapkit/core';
import { eicar, type IcapTestServer, startIcapServer } from '@icapkit/testing';
import { context, metrics, trace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import {
  AggregationTemporality,
  InMemoryMetricExporter,
  MeterProvider,
  PeriodicExportingMetricReader,
} from '@opentelemetry/sdk-metrics';
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  SimpleSpanProcessor,
} from '@opentelemetry/sdk-trace-base';
import { Registry } from 'prom-client';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { refusingPort } from '../support/c-icap.js';
import { type ScanServer, startScanServer } from '../support/scan-server.js';

const metricExporter = new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE);
const reader = new PeriodicExportingMetricReader({
  exporter: metricExporter,
  exportIntervalMillis: 3_600_000,
});
const spanExporter = new InMemorySpanExporter();
const contextManager = new AsyncLocalStorageContextManager();

let icap: IcapTestServer;
let engine: IcapEngine | undefined;
let app: ScanServer | undefined;

beforeAll(async () => {
  metrics.setGlobalMeterProvider(new MeterProvider({ readers: [reader] }));
  trace.setGlobalTracerProvider(
    new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(spanExporter)] }),
  );
  context.setGlobalContextManager(contextManager.enable());
  icap = await startIcapServer({ recordBodies: false });
});
afterAll(async () => {
  await icap.close();
  contextManager.disable();
});
afterEach(async () => {
  await app?.close();
  await engine?.close();
  app = undefined;
  engine = undefined;
  spanExporter.reset();
  metricExporter.reset();
});

async function start(profile: Partial<IcapProfile> = {}) {
  engine = createEngine({ name: 'telemetry', poolGroup: icap.url(), serviceUri: '/avscan', ...profile });
  app = await startScanServer(engine);
  return app;
}

function post(url: string, body: Buffer | string) {
  return new Promise<number>((resolve, reject) => {
    const b = Buffer.from(body);
    const req = httpRequest(
      `${url}/upload`,
      { method: 'POST', headers: { 'content-length': String(b.length) } },
      (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode!));
      },
    );
    req.on('error', reject);
    req.end(b);
  });
}

async function collect() {
  await reader.forceFlush();
  const rm = metricExporter.getMetrics().at(-1)!;
  return rm.scopeMetrics.flatMap((s) => s.metrics);
}

describe('OpenTelemetry', () => {
  it('records scan outcomes, durations, bytes, ICAP transaction durations, connections and health', async () => {
    const a = await start();
    expect(await post(a.url, 'clean body')).toBe(200);
    expect(await post(a.url, eicar())).toBe(403);
    const all = await collect();
    const byName = new Map(all.map((m) => [m.descriptor.name, m]));
    const outcomes = byName.get('icapkit.scan.outcomes')!;
    const points = outcomes.dataPoints.map((d) => [d.attributes['icap.action'], d.value]);
    expect(points).toEqual(
      expect.arrayContaining([
        ['ICAP_PASSED', 1],
        ['ICAP_BLOCKED', 1],
      ]),
    );
    expect(outcomes.dataPoints[0]!.attributes).toMatchObject({
      'icap.vendor': 'generic',
      'icap.pool': 'telemetry-pool',
    });
    const duration = byName.get('icapkit.scan.duration')!;
    expect(duration.descriptor.unit).toBe('s');
    expect(duration.dataPoints.reduce((n, d) => n + (d.value as { count: number }).count, 0)).toBe(2);
    expect(byName.get('icapkit.scan.bytes')!.dataPoints[0]!.value).toBe(10 + 68);
    const icapDuration = byName.get('icap.client.request.duration')!;
    expect(icapDuration.dataPoints.map((d) => d.attributes['icap.status_code']).sort()).toEqual([200, 204]);
    expect(byName.get('icapkit.connections.created')!.dataPoints[0]!.value).toBeGreaterThanOrEqual(1);
    expect(byName.get('icapkit.server.up')!.dataPoints[0]!.value).toBe(1);
    const states = byName
      .get('icapkit.connections')!
      .dataPoints.map((d) => d.attributes['icapkit.connection.state']);
    expect(states).toEqual(expect.arrayContaining(['busy', 'idle']));
  });

  it('a span per scan, child of the active span, with the outcome; errors marked', async () => {
    const a = await start({
      poolGroup: {
        pools: [{ name: 'p', servers: [icap.url(), `icap://127.0.0.1:${await refusingPort()}`] }],
      },
    });
    const parent = trace.getTracer('test').startSpan('HTTP POST /upload');
    await context.with(trace.setSpan(context.active(), parent), async () => {
      await post(a.url, eicar());
    });
    parent.end();
    const scan = spanExporter.getFinishedSpans().find((s) => s.name === 'icap.scan')!;
    expect(scan.attributes).toMatchObject({
      'icap.action': 'ICAP_BLOCKED',
      'icap.profile': 'telemetry',
      'icap.status_code': 200,
      'icap.threat.name': 'Eicar-Test-Signature',
      'server.port': icap.port,
    });
    await app!.close();
    await engine!.close();
    spanExporter.reset();
    const b = await start({ poolGroup: `icap://127.0.0.1:${await refusingPort()}` });
    expect(await post(b.url, 'x')).toBe(503);
    const failed = spanExporter.getFinishedSpans().find((s) => s.name === 'icap.scan')!;
    expect(failed.status.code).toBe(2);
    expect(failed.attributes['error.type']).toBe('ICAP_ERR_CONNECT');
  });

  it('scan spans are children of the request span when the request runs inside one', async () => {
    engine = createEngine({ name: 'telemetry', poolGroup: icap.url(), serviceUri: '/avscan' });
    const tracer = trace.getTracer('test');
    const { Readable } = await import('node:stream');
    const req = Object.assign(Readable.from([Buffer.from('hello')]), {
      method: 'POST',
      url: '/u',
      headers: { 'content-length': '5', host: 'app' },
      httpVersion: '1.1',
    });
    const parent = tracer.startSpan('parent');
    const outcome = await context.with(trace.setSpan(context.active(), parent), () => engine!.scan(req));
    outcome.dispose();
    parent.end();
    const scan = spanExporter.getFinishedSpans().find((s) => s.name === 'icap.scan')!;
    expect(scan.parentSpanContext?.spanId).toBe(parent.spanContext().spanId);
  });
});

describe('Prometheus (prom-client registry supplied by the application)', () => {
  it('exposes bounded metrics in the given registry only, and removes them on close', async () => {
    const registry = new Registry();
    const a = await start({ metrics: { registry, prefix: 'uploads_' } });
    await post(a.url, 'clean');
    await post(a.url, eicar());
    const text = await registry.metrics();
    expect(text).toContain(
      'uploads_scans_total{action="ICAP_PASSED",vendor="generic",pool="telemetry-pool"} 1',
    );
    expect(text).toContain(
      'uploads_scans_total{action="ICAP_BLOCKED",vendor="generic",pool="telemetry-pool"} 1',
    );
    expect(text).toMatch(/uploads_scan_duration_seconds_bucket\{action="ICAP_BLOCKED",le="\+Inf"\} 1/);
    expect(text).toMatch(/uploads_scan_duration_seconds_count\{action="ICAP_PASSED"\} 1/);
    expect(text).toContain('uploads_scanned_bytes_total 73');
    expect(text).toMatch(
      new RegExp(
        `uploads_icap_server_up\\{pool="telemetry-pool",server="icap://127.0.0.1:${icap.port}"\\} 1`,
      ),
    );
    expect(text).toMatch(/uploads_icap_connections_created_total\{[^}]*\} [1-9]/);
    expect(text).not.toMatch(/upload\.|eicar|Eicar/);
    await engine!.close();
    expect(await registry.metrics()).not.toContain('uploads_');
  });

  it('rejects something that is not a registry, naming the field', () => {
    expect(() =>
      createEngine({
        name: 'x',
        poolGroup: 'icap://h',
        serviceUri: '/s',
        metrics: { registry: {} as never },
      }),
    ).toThrowError(expect.objectContaining({ field: 'profile.metrics.registry' }));
  });
});

describe('diagnostics_channel', () => {
  it('publishes scan and transaction events, connects and errors', async () => {
    const events: Array<[string, Record<string, unknown>]> = [];
    const names = [
      'icapkit:scan:start',
      'icapkit:scan:end',
      'icapkit:transaction:start',
      'icapkit:transaction:preview',
      'icapkit:transaction:verdict',
      'icapkit:transaction:error',
      'icapkit:client:connect',
    ];
    const subs = names.map((name) => {
      const fn = (message: unknown) => events.push([name, message as Record<string, unknown>]);
      dc.subscribe(name, fn);
      return () => dc.unsubscribe(name, fn);
    });
    try {
      const dead = await refusingPort();
      const a = await start({
        poolGroup: {
          pools: [
            { name: 'first', priority: 20, servers: [`icap://127.0.0.1:${dead}`] },
            { name: 'second', priority: 1, servers: [icap.url()] },
          ],
        },
        previewMinBodySize: 0,
      });
      expect(await post(a.url, Buffer.alloc(5000, 0x61))).toBe(200);
      const seq = events.map(([n]) => n.replace('icapkit:', ''));
      expect(seq).toEqual([
        'scan:start',
        'transaction:start',
        'transaction:error',
        'transaction:start',
        'client:connect',
        'transaction:preview',
        'transaction:verdict',
        'scan:end',
      ]);
      const error = events.find(([n]) => n === 'icapkit:transaction:error')![1];
      expect((error.error as { code: string }).code).toBe('ICAP_ERR_CONNECT');
      expect(error.pool).toBe('first');
      const verdict = events.find(([n]) => n === 'icapkit:transaction:verdict')![1];
      expect(verdict).toMatchObject({ pool: 'second', status: 204, verdict: 'clean', service: '/avscan' });
      const end = events.at(-1)![1];
      expect(end).toMatchObject({ action: 'ICAP_PASSED' });
      expect(events[0]![1].scanId).toBe(end.scanId);
    } finally {
      for (const u of subs) u();
    }
  });
});

describe('icapkit:scan:stage (per-stage timings for profiling)', () => {
  it('publishes each stage of a scan in order while subscribed, and nothing once unsubscribed', async () => {
    const events: Array<{ stage: string; cpuUs: number; wallUs: number }> = [];
    const fn = (m: unknown) => events.push(m as { stage: string; cpuUs: number; wallUs: number });
    dc.subscribe('icapkit:scan:stage', fn);
    const a = await start();
    try {
      expect(await post(a.url, 'clean body')).toBe(200);
      expect(events.map((e) => e.stage)).toEqual(['admission', 'intake', 'exchange', 'outcome']);
      for (const e of events) {
        expect(Number.isInteger(e.cpuUs) && e.cpuUs >= 0).toBe(true);
        expect(Number.isInteger(e.wallUs) && e.wallUs >= 0).toBe(true);
      }
      // A blocked upload goes through the same stages.
      events.length = 0;
      expect(await post(a.url, eicar())).toBe(403);
      expect(events.map((e) => e.stage)).toEqual(['admission', 'intake', 'exchange', 'outcome']);
    } finally {
      dc.unsubscribe('icapkit:scan:stage', fn);
    }
    events.length = 0;
    expect(await post(a.url, 'clean body')).toBe(200);
    expect(events).toEqual([]);
  });
});

describe('NODE_DEBUG=icapkit', () => {
  it('prints the life of a scan', async () => {
    const dist = new URL('../../packages/core/dist/index.js', import.meta.url);
    if (!existsSync(dist)) {
      expect(process.env.CI, 'packages/core must be built (pnpm test builds it)').not.toBe('true');
      return;
    }
    const script = `
      const { createEngine } = await import(${JSON.stringify(dist.href)});
      const { Readable } = await import('node:stream');
      const engine = createEngine({ name: 'dbg', poolGroup: ${JSON.stringify(icap.url())}, serviceUri: '/avscan' });
      const req = Object.assign(Readable.from([Buffer.from('hello')]), { method: 'POST', url: '/u', headers: { 'content-length': '5' }, httpVersion: '1.1' });
      const o = await engine.scan(req); o.dispose(); await engine.close();
    `;
    const stderr = await new Promise<string>((resolve, reject) =>
      execFile(
        process.execPath,
        ['--input-type=module', '-e', script],
        { env: { ...process.env, NODE_DEBUG: 'icapkit' }, timeout: 20_000 },
        (err, _o, e) => (err ? reject(err) : resolve(e)),
      ),
    );
    expect(stderr).toMatch(/ICAPKIT \d+: scan \d+: REQMOD icap:\/\/127\.0\.0\.1:\d+\/avscan/);
    expect(stderr).toMatch(/ICAPKIT \d+: scan \d+ ICAP_PASSED in \d+ ms \(1 ICAP transactions\)/);
  });
});
