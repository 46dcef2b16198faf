/**
 * The targets' multipart line: a form scanned per file is read against the raw client sending it
 * part by part (rawparts), not against the one sending it whole, as Squid does.
 */
import { describe, expect, it } from 'vitest';
import type { CellResult } from '../src/run.js';
import { blankResult, renderTargets, warmText, zeroCostBound } from '../src/table.js';

function cell(over: Partial<CellResult>): CellResult {
  const of = {
    path: 'x',
    kind: 'icapkit',
    framework: undefined,
    service: 'avscan',
    body: 'mp5',
    bodyLabel: 'multipart 5x200 KiB',
    clients: 8,
  } as const;
  return { ...blankResult(of), ok: 1000, rps: 100, ...over };
}

const results = [
  cell({
    path: 'ceiling-fastify',
    kind: 'ceiling',
    framework: 'fastify',
    service: undefined,
    cpuUsPerReqMachine: 2000,
  }),
  cell({ path: 'fastify-avscan', framework: 'fastify', rps: 115 }),
  cell({ path: 'squid-avscan', kind: 'squid', framework: 'express', rps: 100 }),
  // Whole form: 2e6 / (2000 + 8000) = 200 forms/s; part by part: 2e6 / (2000 + 14000) = 125.
  cell({ path: 'raw-avscan', kind: 'raw', rps: 300, cpuUsPerReqMachine: 8000 }),
  cell({ path: 'rawparts-avscan', kind: 'rawparts', rps: 300, cpuUsPerReqMachine: 14000 }),
];

describe('the multipart target', () => {
  it('takes its zero-cost bound from the part-by-part raw client when there is one', () => {
    expect(zeroCostBound(results, results[1]!, 2)).toBe(125);
    const wholeOnly = results.filter((r) => r.kind !== 'rawparts');
    expect(zeroCostBound(wholeOnly, wholeOnly[1]!, 2)).toBe(200);
  });

  it('says 1.2x Squid forms/s, missed at 1.15x with its bound', () => {
    const line = renderTargets(results).find((l) => l.includes('Squid forms/s'));
    expect(line).toContain('0/1 cells met');
    expect(line).toContain('Fastify c=8: 1.15× (at most 1.25× at zero cost)');
    const met = renderTargets(results.map((r) => (r.kind === 'icapkit' ? { ...r, rps: 121 } : r)));
    expect(met.find((l) => l.includes('Squid forms/s'))).toContain('1/1 cells met');
  });

  it("names the 10 KiB cells' own warm-up count in the report's header", () => {
    expect(warmText({ warmRequests: 1000, warmRequests10k: 30_000, warmMaxS: 10 })).toBe(
      ' and until 1000 requests were answered (10 KiB cells: 30000), at most 10 s',
    );
    // A run saved before the 10 KiB count existed, and one with both counts equal.
    expect(warmText({ warmRequests: 1000, warmMaxS: 10 })).toBe(
      ' and until 1000 requests were answered, at most 10 s',
    );
    expect(warmText({ warmRequests: 500, warmRequests10k: 500, warmMaxS: 10 })).toBe(
      ' and until 500 requests were answered, at most 10 s',
    );
    expect(warmText({ warmRequests: 0, warmRequests10k: 0, warmMaxS: 10 })).toBe('');
  });
});
