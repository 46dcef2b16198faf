/**
 * The ring of recent icap_log records: bounded in count and in the size of each record, a copy
 * of what it was given, newest first, addressable by id while held.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { IcapError, LOG_RING_DEFAULTS, LogRing, summarizeLogs, TRUNCATION_MARK } from '@icapkit/core';
import { describe, expect, it } from 'vitest';
import { charCount, entry, record } from './records.js';

describe('LogRing', () => {
  it('keeps the last `capacity` records, newest first, with increasing ids', () => {
    const ring = new LogRing({ capacity: 3 });
    expect(ring.capacity).toBe(3);
    expect(ring.records()).toEqual([]);
    for (let i = 1; i <= 5; i++) ring.push(record('ICAP_PASSED', { uri_path: `/u${i}` }));
    expect(ring.size).toBe(3);
    const held = ring.records();
    expect(held.map((s) => s.id)).toEqual([5, 4, 3]);
    expect(held.map((s) => s.log.uri_path)).toEqual(['/u5', '/u4', '/u3']);
  });

  it('finds a held record by id, and nothing for dropped, future or malformed ids', () => {
    const ring = new LogRing({ capacity: 4 });
    for (let i = 1; i <= 10; i++) ring.push(record('ICAP_PASSED', { uri_path: `/u${i}` }));
    for (const id of [7, 8, 9, 10]) expect(ring.get(id)?.log.uri_path).toBe(`/u${id}`);
    for (const id of [0, 1, 6, 11, -1, 1.5, Number.NaN]) expect(ring.get(id)).toBeUndefined();
    ring.clear();
    expect(ring.size).toBe(0);
    expect(ring.get(10)).toBeUndefined();
    expect(ring.push(record('ICAP_FAILED')).id).toBe(11);
    expect(ring.get(11)?.log.action).toBe('ICAP_FAILED');
  });

  it('stores a copy: later changes to the record do not show', () => {
    const ring = new LogRing();
    const log = record('ICAP_BLOCKED');
    ring.push(log);
    log.uri_path = '/changed';
    log.request_logs[0]!.threat_id = 'changed';
    log.significance.push('SLOW_RESPONSE');
    const stored = ring.records()[0]!;
    expect(stored.log.uri_path).toBe('/upload');
    expect(stored.log.request_logs[0]!.threat_id).toBe('Eicar-Test-Signature');
    expect(stored.log.significance).toEqual(['ICAP_BLOCKED']);
    expect(stored.truncated).toBe(false);
    expect(stored.log).toEqual(record('ICAP_BLOCKED', { start_time: stored.log.start_time }));
  });

  it('cuts long strings (header blocks) to maxStringLength and marks the record', () => {
    const ring = new LogRing({ maxStringLength: 100 });
    const headers = `X-Long: ${'a'.repeat(10_000)}\r\n`;
    const stored = ring.push(
      record('ICAP_PASSED', { request_logs: [entry({ icap_headers_received_from_server: headers })] }),
    );
    const kept = stored.log.request_logs[0]!.icap_headers_received_from_server!;
    expect(kept).toBe(headers.slice(0, 100) + TRUNCATION_MARK);
    expect(stored.truncated).toBe(true);
    // A string at the limit is kept whole.
    const exact = ring.push(record('ICAP_PASSED', { uri_path: `/${'p'.repeat(99)}` }));
    expect(exact.log.uri_path).toHaveLength(100);
    expect(exact.truncated).toBe(false);
  });

  it('does not split a surrogate pair when cutting', () => {
    const ring = new LogRing({ maxStringLength: 64 });
    const name = `${'x'.repeat(63)}😀😀`;
    const stored = ring.push(record('ICAP_PASSED', { file_names: [name] }));
    const kept = stored.log.file_names![0]!;
    expect(kept).toBe(`${'x'.repeat(63)}${TRUNCATION_MARK}`);
    expect(kept.isWellFormed()).toBe(true);
  });

  it('shortens long lists to maxListLength', () => {
    const ring = new LogRing({ maxListLength: 5 });
    const files = Array.from({ length: 40 }, (_, i) => `file-${i}.txt`);
    const stored = ring.push(record('ICAP_PASSED', { file_names: files }));
    expect(stored.log.file_names).toEqual(files.slice(0, 5));
    expect(stored.truncated).toBe(true);
  });

  it('bounds the whole record, keeping its own fields when its ICAP entries are too many', () => {
    const ring = new LogRing({ maxRecordLength: 4096, maxListLength: 1000 });
    const big = `Via: ${'v'.repeat(3000)}\r\n`;
    const entries = Array.from({ length: 500 }, () =>
      entry({ icap_headers_sent_to_server: big, icap_headers_received_from_server: big }),
    );
    const log = record('ICAP_FAILED', {
      request_logs: entries,
      error_code: 'ICAP_ERR_CONNECT',
      uri_path: '/the/path',
    });
    expect(charCount(log)).toBeGreaterThan(3_000_000);
    const stored = ring.push(log);
    expect(stored.truncated).toBe(true);
    // The budget counts characters plus 16 per value; what is kept is within it (plus the marks).
    expect(charCount(stored.log)).toBeLessThanOrEqual(4096 + 4 * TRUNCATION_MARK.length);
    expect(stored.log.request_logs.length).toBeLessThan(500);
    expect(stored.log.request_logs.length).toBeGreaterThan(0);
    expect(stored.log).toMatchObject({
      action: 'ICAP_FAILED',
      uri_path: '/the/path',
      error_code: 'ICAP_ERR_CONNECT',
      profile_name: 'uploads',
    });
  });

  it('holds at most capacity × maxRecordLength characters, whatever it is fed', () => {
    const ring = new LogRing({ capacity: 20, maxRecordLength: 2048, maxStringLength: 512 });
    const huge = 'h'.repeat(100_000);
    for (let i = 0; i < 500; i++) {
      ring.push(
        record('ICAP_BLOCKED', {
          file_names: Array.from({ length: 200 }, () => huge),
          request_logs: Array.from({ length: 50 }, () => entry({ icap_headers_sent_to_server: huge })),
        }),
      );
    }
    const total = ring.records().reduce((n, s) => n + charCount(s.log), 0);
    expect(ring.size).toBe(20);
    expect(total).toBeLessThanOrEqual(20 * (2048 + 4 * TRUNCATION_MARK.length));
  });

  it('drops what is not JSON data and nesting deeper than a record has', () => {
    const ring = new LogRing();
    let deep: Record<string, unknown> = { leaf: 'x' };
    for (let i = 0; i < 20; i++) deep = { deep };
    const stored = ring.push({
      ...record('ICAP_PASSED'),
      extra: { fn: () => 1, deep },
    } as unknown as Parameters<LogRing['push']>[0]);
    const extra = (stored.log as unknown as { extra: { fn: unknown; deep: unknown } }).extra;
    expect(extra.fn).toBeNull();
    expect(JSON.stringify(extra.deep)).not.toContain('leaf');
    expect(stored.truncated).toBe(true);
  });

  it('has documented defaults and refuses options out of range', () => {
    const ring = new LogRing();
    expect(ring.capacity).toBe(LOG_RING_DEFAULTS.capacity);
    expect(ring.maxStringLength).toBe(LOG_RING_DEFAULTS.maxStringLength);
    expect(ring.maxListLength).toBe(LOG_RING_DEFAULTS.maxListLength);
    expect(ring.maxRecordLength).toBe(LOG_RING_DEFAULTS.maxRecordLength);
    for (const bad of [{ capacity: 0 }, { capacity: 1.5 }, { capacity: 200_000 }, { maxStringLength: 10 }]) {
      expect(() => new LogRing(bad)).toThrow(IcapError);
    }
    expect(() => new LogRing({ capacity: 0 })).toThrow(/capacity must be an integer from 1 to 100000/);
  });

  it('a record cut to fit still counts the threat that blocked it, however many entries come first (campaign-ag F2)', () => {
    const ring = new LogRing();
    // A form of 30 clean files, then EICAR: the clean parts' entries fill the record's budget.
    const clean = Array.from({ length: 30 }, (_, i) =>
      entry({
        file_name: `clean-${i}.txt`,
        icap_headers_received_from_server: `ISTag: "${'x'.repeat(800)}"\r\n`,
      }),
    );
    const infected = entry({
      action: 'ICAP_BLOCKED',
      icap_response_code: 200,
      file_name: 'eicar.com',
      threat_id: 'Eicar-Test-Signature',
    });
    const stored = ring.push(
      record('ICAP_BLOCKED', {
        request_logs: [...clean, infected],
        file_names: [...clean.map((e) => e.file_name!), 'eicar.com'],
      }),
    );
    expect(stored.truncated).toBe(true);
    expect(JSON.stringify(stored.log)).not.toContain('Eicar-Test-Signature');
    const all = summarizeLogs(ring.records(), {});
    const row = all.records[0]!;
    expect([row.threats, row.significance, row.files.length]).toEqual([
      ['Eicar-Test-Signature'],
      ['ICAP_BLOCKED'],
      10,
    ]);
    expect(all.facets.threat.top).toEqual([{ value: 'Eicar-Test-Signature', count: 1 }]);
    expect(all.facets.significance.top).toEqual([{ value: 'ICAP_BLOCKED', count: 1 }]);
    expect(summarizeLogs(ring.records(), { threat: ['Eicar-Test-Signature'] }).matched).toBe(1);
    expect(summarizeLogs(ring.records(), { file: ['eicar.com'] }).matched).toBe(1);
    // Within the budget all the same: the values take at most half of it.
    expect(charCount(stored.values) + charCount(stored.log)).toBeLessThanOrEqual(
      LOG_RING_DEFAULTS.maxRecordLength,
    );
  });

  it('holds on to nothing beyond what it keeps: a short string cut from a long one is copied (campaign-ag F1)', async () => {
    const dist = new URL('../../packages/core/dist/index.js', import.meta.url);
    if (!existsSync(dist)) {
      expect(process.env.CI, 'packages/core must be built (pnpm test builds it)').not.toBe('true');
      return;
    }
    // 1,000 records, each with a file name sliced out of its own 64 KiB header line (as a
    // multipart parser cuts it) and a 64 KiB ICAP head the ring cuts: 128 MiB of parents.
    const script = `
      const { LogRing } = await import(${JSON.stringify(dist.href)});
      const ring = new LogRing({ capacity: 1000 });
      const heap = () => { globalThis.gc(); globalThis.gc(); return process.memoryUsage().heapUsed; };
      const before = heap();
      for (let i = 0; i < 1000; i++) {
        const line = 'form-data; name="f"; filename="name-' + String(i).padStart(6, '0') + '.txt"' + ' '.repeat(65536) + i;
        const name = line.slice(line.indexOf('filename="') + 10, line.indexOf('.txt"') + 4);
        const head = 'ISTag: "' + String(i) + '"' + 'x'.repeat(65536);
        ring.push({ action: 'ICAP_PASSED', uri_path: '/u', file_names: [name],
          request_logs: [{ action: 'ICAP_PASSED', file_name: name, icap_headers_received_from_server: head }] });
      }
      console.log(JSON.stringify({ growth: heap() - before, held: ring.size }));
    `;
    const out = await new Promise<string>((resolve, reject) =>
      execFile(
        process.execPath,
        ['--expose-gc', '--input-type=module', '-e', script],
        { timeout: 60_000 },
        (err, stdout, stderr) => (err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout)),
      ),
    );
    const { growth, held } = JSON.parse(out) as { growth: number; held: number };
    expect(held).toBe(1000);
    // What it keeps: about 1,000 × (4 KiB of head, two names, the rest): well under 32 MiB.
    expect(growth).toBeLessThan(32 * 1024 * 1024);
  });
});
