/**
 * Aggregation and filtering of the analytics page: which values a record has in each
 * dimension, how filters combine, and what the overview counts.
 */
import {
  isPageView,
  LATENCY_LABELS,
  LogRing,
  logValues,
  MAX_FILTER_VALUES,
  matchesFilters,
  parseOverviewQuery,
  summarizeLogs,
} from '@icapkit/core';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { entry, record, serverStatus } from './records.js';

function ringOf(...logs: Parameters<LogRing['push']>[0][]): LogRing {
  const ring = new LogRing();
  for (const l of logs) ring.push(l);
  return ring;
}

describe('values of a record', () => {
  it('reads threats and files from entries, violations, OPSWAT logs and removed parts', () => {
    const log = record('ICAP_BLOCKED', {
      file_names: ['a.pdf', 'b.doc'],
      removed_parts: [{ field: 'f', file_name: 'c.exe', threat_id: 'Trojan.C' }],
      request_logs: [
        entry({
          action: 'ICAP_BLOCKED',
          threat_id: 'Eicar',
          file_name: 'a.pdf',
          violations: [
            { file_name: '-', threat_name: 'Eicar', resolution: 'ICAP_FILE_NOT_REPAIRED' },
            { file_name: 'inner.zip', threat_name: 'Worm.X', resolution: 'ICAP_FILE_NOT_REPAIRED' },
          ],
          opswat_log: {
            threat_id: 'OPSWAT.T',
            violations: [{ file_name: '', threat_name: 'OPSWAT.V', resolution: 'ICAP_FILE_REPAIRED' }],
          },
        }),
      ],
    });
    expect(logValues(log, 'threat').sort()).toEqual(['Eicar', 'OPSWAT.T', 'OPSWAT.V', 'Trojan.C', 'Worm.X']);
    expect(logValues(log, 'file').sort()).toEqual(['a.pdf', 'b.doc', 'c.exe', 'inner.zip']);
  });

  it('names servers as engine.status() does, pools, vendors, methods and codes', () => {
    const log = record('ICAP_PASSED', {
      request_logs: [
        entry({
          action: 'ICAP_FAILED',
          icap_absolute_uri: 'icap://[::1]:1344/avscan',
          error_code: 'ICAP_ERR_CONNECT',
        }),
        entry({
          icap_absolute_uri: 'icaps://av.example:11344/avscan?x=1',
          pool_name: { val: 'backup', crc32: 2 },
        }),
      ],
    });
    expect(logValues(log, 'server')).toEqual(['icap://[::1]:1344', 'icaps://av.example:11344']);
    expect(logValues(log, 'pool')).toEqual(['primary', 'backup']);
    expect(logValues(log, 'vendor')).toEqual(['ICAP_VENDOR_GENERIC']);
    expect(logValues(log, 'method')).toEqual(['POST']);
    expect(logValues(log, 'error')).toEqual(['ICAP_ERR_CONNECT']);
    expect(logValues(log, 'icap_status')).toEqual(['204']);
    expect(logValues(log, 'status')).toEqual([]);
    expect(logValues(record('ICAP_BLOCKED'), 'status')).toEqual(['403']);
    expect(logValues(log, 'significant')).toEqual(['no']);
    expect(logValues(record('ICAP_FAILED'), 'significant')).toEqual(['yes']);
  });

  it('puts the record in the latency bucket of its slowest transaction', () => {
    const log = record('ICAP_PASSED', {
      request_logs: [entry({ latency: '2' }), entry({ latency: '730' }), entry({ latency: 'n/a' })],
    });
    expect(logValues(log, 'latency')).toEqual(['500 ms-1 s']);
    expect(logValues(record('ICAP_DISABLED'), 'latency')).toEqual([]);
    expect(LATENCY_LABELS[0]).toBe('0-5 ms');
    expect(LATENCY_LABELS).toContain('1-2.5 s');
    expect(LATENCY_LABELS.at(-1)).toBe('10 s+');
    expect(new Set(LATENCY_LABELS).size).toBe(LATENCY_LABELS.length);
  });
});

describe('filters', () => {
  const blocked = record('ICAP_BLOCKED', { rule_name: 'uploads' });
  const failed = record('ICAP_FAILED', { rule_name: 'uploads' });
  const passed = record('ICAP_PASSED', { rule_name: 'api' });

  it('values of one dimension are alternatives; dimensions combine', () => {
    expect(matchesFilters(blocked, {})).toBe(true);
    expect(matchesFilters(blocked, { action: ['ICAP_BLOCKED', 'ICAP_FAILED'] })).toBe(true);
    expect(matchesFilters(failed, { action: ['ICAP_BLOCKED', 'ICAP_FAILED'] })).toBe(true);
    expect(matchesFilters(passed, { action: ['ICAP_BLOCKED', 'ICAP_FAILED'] })).toBe(false);
    expect(matchesFilters(blocked, { action: ['ICAP_BLOCKED', 'ICAP_FAILED'], rule: ['uploads'] })).toBe(
      true,
    );
    expect(matchesFilters(blocked, { action: ['ICAP_BLOCKED'], rule: ['api'] })).toBe(false);
    expect(
      matchesFilters(blocked, { threat: ['Eicar-Test-Signature'], significance: ['ICAP_BLOCKED'] }),
    ).toBe(true);
    expect(matchesFilters(passed, { threat: ['Eicar-Test-Signature'] })).toBe(false);
    // A record without a value in a filtered dimension does not match.
    expect(matchesFilters(record('ICAP_DISABLED'), { latency: ['0-5 ms'] })).toBe(false);
  });

  it('the aggregates follow the filters', () => {
    const ring = ringOf(blocked, failed, passed, record('ICAP_PASSED', { rule_name: 'api' }));
    const all = summarizeLogs(ring.records(), {});
    expect(all.matched).toBe(4);
    expect(all.actions).toEqual({
      ICAP_PASSED: 2,
      ICAP_BLOCKED: 1,
      ICAP_MODIFIED: 0,
      ICAP_FAILED: 1,
      ICAP_DISABLED: 0,
    });
    const api = summarizeLogs(ring.records(), { rule: ['api'] });
    expect(api.matched).toBe(2);
    expect(api.actions.ICAP_PASSED).toBe(2);
    expect(api.actions.ICAP_BLOCKED).toBe(0);
    expect(api.facets.threat.top).toEqual([]);
    expect(api.records.map((r) => r.action)).toEqual(['ICAP_PASSED', 'ICAP_PASSED']);
    expect(api.filters).toEqual([{ key: 'rule', value: 'api' }]);
    const none = summarizeLogs(ring.records(), { rule: ['api'], action: ['ICAP_BLOCKED'] });
    expect(none.matched).toBe(0);
    expect(none.records).toEqual([]);
  });
});

describe('summarizeLogs', () => {
  it('counts every action, the significant records and the top values', () => {
    const logs = [
      record('ICAP_BLOCKED'),
      record('ICAP_BLOCKED'),
      record('ICAP_BLOCKED', {
        request_logs: [entry({ action: 'ICAP_BLOCKED', threat_id: 'Worm.Y', icap_response_code: 200 })],
      }),
      record('ICAP_MODIFIED', { significance: ['ICAP_MODIFIED'] }),
      record('ICAP_DISABLED'),
      record('ICAP_PASSED'),
    ];
    const o = summarizeLogs(ringOf(...logs).records(), {}, { top: 1 });
    expect(o.actions).toEqual({
      ICAP_PASSED: 1,
      ICAP_BLOCKED: 3,
      ICAP_MODIFIED: 1,
      ICAP_FAILED: 0,
      ICAP_DISABLED: 1,
    });
    expect(o.significant).toBe(4);
    expect(o.facets.threat).toEqual({ top: [{ value: 'Eicar-Test-Signature', count: 2 }], others: 1 });
    expect(o.facets.significance.top).toEqual([{ value: 'ICAP_BLOCKED', count: 3 }]);
    expect(o.significantRecords.map((r) => r.action)).toEqual([
      'ICAP_MODIFIED',
      'ICAP_BLOCKED',
      'ICAP_BLOCKED',
      'ICAP_BLOCKED',
    ]);
  });

  it('lists the newest matching records first, up to the limit', () => {
    const ring = ringOf(
      ...Array.from({ length: 30 }, (_, i) => record('ICAP_PASSED', { uri_path: `/p${i}` })),
    );
    const o = summarizeLogs(ring.records(), {}, { limit: 5 });
    expect(o.matched).toBe(30);
    expect(o.records.map((r) => r.path)).toEqual(['/p29', '/p28', '/p27', '/p26', '/p25']);
    expect(o.records[0]).toMatchObject({
      id: 30,
      method: 'POST',
      action: 'ICAP_PASSED',
      latency: 3,
      status: null,
    });
  });

  it('counts transactions per server and pool, with the servers health from the engines', () => {
    const logs = [
      // failover: the first server refused, the second passed
      record('ICAP_PASSED', {
        request_logs: [
          entry({ action: 'ICAP_FAILED', icap_absolute_uri: 'icap://10.0.0.9:1344/avscan', latency: '0' }),
          entry({
            icap_absolute_uri: 'icap://10.0.0.5:1344/avscan',
            pool_name: { val: 'backup', crc32: 2 },
            latency: '10',
          }),
        ],
      }),
      record('ICAP_BLOCKED', {
        request_logs: [
          entry({
            action: 'ICAP_BLOCKED',
            icap_absolute_uri: 'icap://10.0.0.5:1344/avscan',
            pool_name: { val: 'backup', crc32: 2 },
            latency: '20',
          }),
        ],
      }),
    ];
    const o = summarizeLogs(
      ringOf(...logs).records(),
      {},
      {
        health: [
          {
            profile: 'uploads',
            status: [
              serverStatus({
                server: 'icap://10.0.0.9:1344',
                state: 'suspended',
                consecutiveFailures: 3,
                lastError: 'refused',
              }),
              serverStatus({ server: 'icap://10.0.0.5:1344', pool: 'backup' }),
              serverStatus({ server: 'icap://10.0.0.7:1344', pool: 'backup' }),
            ],
          },
        ],
      },
    );
    const byServer = Object.fromEntries(o.servers.map((s) => [s.server, s]));
    expect(Object.keys(byServer).sort()).toEqual([
      'icap://10.0.0.5:1344',
      'icap://10.0.0.7:1344',
      'icap://10.0.0.9:1344',
    ]);
    expect(byServer['icap://10.0.0.9:1344']).toMatchObject({
      transactions: 1,
      actions: { ICAP_FAILED: 1, ICAP_PASSED: 0 },
      pools: ['primary'],
      health: [{ profile: 'uploads', state: 'suspended', consecutiveFailures: 3, lastError: 'refused' }],
    });
    expect(byServer['icap://10.0.0.5:1344']).toMatchObject({
      transactions: 2,
      actions: { ICAP_PASSED: 1, ICAP_BLOCKED: 1 },
      meanLatency: 15,
      pools: ['backup'],
    });
    expect(byServer['icap://10.0.0.7:1344']).toMatchObject({ transactions: 0, meanLatency: null });
    const byPool = Object.fromEntries(o.pools.map((p) => [p.pool, p]));
    expect(byPool.backup).toMatchObject({
      servers: ['icap://10.0.0.5:1344', 'icap://10.0.0.7:1344'],
      up: 2,
      transactions: 2,
    });
    expect(byPool.primary).toMatchObject({ servers: ['icap://10.0.0.9:1344'], up: 0, transactions: 1 });
  });

  it('draws the latency distribution from the matching records', () => {
    const logs = ['1', '4', '7', '30', '30', '1200', '15000'].map((latency) =>
      record('ICAP_PASSED', { request_logs: [entry({ latency })] }),
    );
    logs.push(record('ICAP_DISABLED'));
    const o = summarizeLogs(ringOf(...logs).records(), {});
    const counts = Object.fromEntries(o.latency.buckets.map((b) => [b.label, b.count]));
    expect(counts).toMatchObject({ '0-5 ms': 2, '5-10 ms': 1, '25-50 ms': 2, '1-2.5 s': 1, '10 s+': 1 });
    expect(o.latency.buckets).toHaveLength(LATENCY_LABELS.length);
    expect(o.latency.buckets[0]).toEqual({ label: '0-5 ms', from: 0, to: 5, count: 2 });
    expect(o.latency.buckets.at(-1)).toMatchObject({ from: 10_000, to: null });
    expect(o.latency).toMatchObject({ count: 7, p50: 30, p95: 15_000, max: 15_000 });
    const slow = summarizeLogs(ringOf(...logs).records(), { latency: ['25-50 ms', '10 s+'] });
    expect(slow.matched).toBe(3);
    expect(slow.latency.count).toBe(3);
  });
});

describe('parseOverviewQuery', () => {
  it('reads repeated dimensions as alternatives and the list limit', () => {
    expect(parseOverviewQuery('action=ICAP_BLOCKED&action=ICAP_FAILED&threat=a+b%22c&limit=20')).toEqual({
      filters: { action: ['ICAP_BLOCKED', 'ICAP_FAILED'], threat: ['a b"c'] },
      limit: 20,
      pageViews: 'show',
    });
    expect(parseOverviewQuery('')).toEqual({ filters: {}, limit: 100, pageViews: 'show' });
    expect(parseOverviewQuery('pageViews=hide&path=%2Fa')).toEqual({
      filters: { path: ['/a'] },
      limit: 100,
      pageViews: 'hide',
    });
    expect(parseOverviewQuery('pageViews=maybe')).toEqual({ error: "pageViews must be 'show' or 'hide'" });
  });

  it('refuses unknown filters, too many or too long values and a bad limit', () => {
    expect(parseOverviewQuery('colour=red')).toEqual({ error: 'unknown filter "colour"' });
    const many = Array.from({ length: MAX_FILTER_VALUES + 1 }, (_, i) => `path=/p${i}`).join('&');
    expect(parseOverviewQuery(many)).toEqual({ error: `at most ${MAX_FILTER_VALUES} filter values` });
    expect(parseOverviewQuery(`file=${'x'.repeat(513)}`)).toMatchObject({
      error: expect.stringMatching(/longer/),
    });
    for (const limit of ['0', '501', '-1', '1e3', 'ten', '']) {
      expect(parseOverviewQuery(`limit=${limit}`)).toMatchObject({ error: expect.stringMatching(/limit/) });
    }
  });
});

describe('page views (requests without a body)', () => {
  const view = (path: string, method = 'HTTP_METHOD_GET') =>
    record('ICAP_DISABLED', { policy_reason: 'no-body', http_method: method, uri_path: path });
  const logs = () => [
    record('ICAP_PASSED'),
    view('/'),
    view('/favicon.ico'),
    view('/health', 'HTTP_METHOD_HEAD'),
    record('ICAP_BLOCKED'),
    // Not scanned by a rule, but it had a body: not a page view.
    record('ICAP_DISABLED', { policy_reason: 'rule', rule_name: 'skip-webhooks' }),
  ];

  it('a page view is a request the policy found without a body', () => {
    expect(logs().map(isPageView)).toEqual([false, true, true, true, false, false]);
  });

  it("'hide' leaves them out of every count and list, and says how many it left out", () => {
    const o = summarizeLogs(ringOf(...logs()).records(), {}, { pageViews: 'hide' });
    expect(o.pageViews).toEqual({ count: 3, hidden: true });
    expect(o.stored).toBe(6);
    expect(o.matched).toBe(3);
    expect(o.actions).toMatchObject({ ICAP_PASSED: 1, ICAP_BLOCKED: 1, ICAP_DISABLED: 1 });
    expect(o.records.map((r) => r.path)).toEqual(['/upload', '/upload', '/upload']);
    expect(o.facets.method.top.map((v) => v.value)).toEqual(['POST']);
  });

  it("'show' (the JSON's default) counts them like any record", () => {
    const o = summarizeLogs(ringOf(...logs()).records(), {});
    expect(o.pageViews).toEqual({ count: 3, hidden: false });
    expect(o.matched).toBe(6);
    expect(o.actions.ICAP_DISABLED).toBe(4);
    // Filters apply first: page views among the matching records only.
    const heads = summarizeLogs(ringOf(...logs()).records(), { method: ['HEAD'] }, { pageViews: 'hide' });
    expect(heads).toMatchObject({ matched: 0, pageViews: { count: 1, hidden: true } });
  });
});

describe('facets over many distinct values (campaign-ag F4: the top without sorting them all)', () => {
  it('are the most frequent values, ties by value, as a full sort gives them', () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.array(fc.constantFrom('a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k', 'l', 'm'), {
            maxLength: 4,
          }),
          {
            maxLength: 60,
          },
        ),
        fc.integer({ min: 0, max: 12 }),
        (forms, top) => {
          const ring = new LogRing({ capacity: 100 });
          for (const files of forms)
            ring.push(record('ICAP_PASSED', { file_names: files.map((f) => `${f}.txt`) }));
          const counts = new Map<string, number>();
          for (const files of forms)
            for (const f of new Set(files)) counts.set(`${f}.txt`, (counts.get(`${f}.txt`) ?? 0) + 1);
          const sorted = [...counts].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1));
          const facet = summarizeLogs(ring.records(), {}, { top }).facets.file;
          expect(facet.top).toEqual(sorted.slice(0, top).map(([value, count]) => ({ value, count })));
          expect(facet.others).toBe(Math.max(0, counts.size - top));
        },
      ),
      { numRuns: 300 },
    );
  });
});
