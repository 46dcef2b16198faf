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

describe('the 1.5x Squid targets', () => {
  const at1m = (over: Partial<CellResult>) => cell({ body: '1m', bodyLabel: '1 MiB', ...over });
  const run = (expressAlone: number) => [
    at1m({
      path: 'ceiling-express',
      kind: 'ceiling',
      framework: 'express',
      service: undefined,
      cpuUsPerReq: expressAlone,
      cpuUsPerReqMachine: 4000,
    }),
    at1m({ path: 'express-avscan', framework: 'express', service: 'avscan', rps: 160, cpuUsPerReq: 3000 }),
    at1m({ path: 'express-echo', framework: 'express', service: 'echo', rps: 280, cpuUsPerReq: 3000 }),
    at1m({ path: 'squid-avscan', kind: 'squid', framework: 'express', service: 'avscan', rps: 100 }),
    at1m({ path: 'squid-echo', kind: 'squid', framework: 'express', service: 'echo', rps: 200 }),
    // 2e6 / (4000 + 4000) = 250 req/s at zero cost against echo; 2e6 / (4000 + 9000) = 154 against avscan.
    at1m({ path: 'raw-echo', kind: 'raw', service: 'echo', rps: 400, cpuUsPerReqMachine: 4000 }),
    at1m({ path: 'raw-avscan', kind: 'raw', service: 'avscan', rps: 150, cpuUsPerReqMachine: 9000 }),
  ];

  it('reads the echo cells against Squid with echo, as the avscan cells against Squid with avscan', () => {
    const lines = renderTargets(run(2000));
    expect(lines.find((l) => l.includes('Squid req/s (avscan'))).toContain('1/1 cells met');
    const echo = lines.find((l) => l.includes('Squid req/s (echo'));
    expect(echo).toContain('0/1 cells met; missed: Express 1 MiB c=8: 1.40× (at most 1.25× at zero cost)');
  });

  it('takes the framework at its cheapest where it cost more alone than with icapkit, or gives no bound', () => {
    const echo = renderTargets(run(3500)).find((l) => l.includes('Squid req/s (echo'));
    expect(echo).toContain(
      'Express 1 MiB c=8: 1.40× (no zero-cost bound: Express alone cost more CPU per request here, 3500 µs, than with icapkit, 3000)',
    );
    expect(echo).not.toContain('at zero cost');
    // The same framework alone with 64 clients, cheaper than icapkit: 2e6 / (2000 + 4000) = 333 req/s.
    const withC64 = [
      ...run(3500),
      at1m({
        path: 'ceiling-express',
        kind: 'ceiling',
        framework: 'express',
        service: undefined,
        clients: 64,
        cpuUsPerReq: 1800,
        cpuUsPerReqMachine: 2000,
      }),
    ];
    expect(renderTargets(withC64).find((l) => l.includes('Squid req/s (echo'))).toContain(
      'Express 1 MiB c=8: 1.40× (at most 1.67× at zero cost with Express alone as at c=64, 2000 µs of the machine per request: Express alone cost more CPU per request here, 3500 µs, than with icapkit, 3000)',
    );
  });
});
