/**
 * tinychunks.js reads each process twice: its first body (a fresh process, one-time costs
 * included) and its second (what a body costs). The ratios and the table carry both, and the
 * growth of the process's Buffers (where a held body lives) beside its RSS.
 */
import { describe, expect, it } from 'vitest';
import { renderTinyChunks, type TinyChunkRow, tinyRatios } from '../src/tinychunks.js';

const MiB = 2 ** 20;

function row(
  scanned: boolean,
  first: number[],
  second: number[],
  ms: number,
  buffers: [number, number],
): TinyChunkRow {
  const mid = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;
  return {
    framework: 'fastify',
    scanned,
    status: 200,
    ms,
    cpuS: ms / 1000,
    rssGrowthMiB: mid(first),
    rssRuns: first,
    buffersGrowthMiB: buffers[0],
    second: { ms: ms / 2, rssGrowthMiB: mid(second), rssRuns: second, buffersGrowthMiB: buffers[1] },
  };
}

describe('tiny chunks report', () => {
  const rows = [
    row(false, [9, 9.2, 8.8], [1.5, 1.4, 1.7], 6000, [0.01, 0.01]),
    row(true, [11.7, 11.5, 27.8], [1.3, 1.8, 1.6], 5700, [0.35, 1.09]),
  ];

  it('gives the extra growth over the body for the first and the second body of each process', () => {
    const [q] = tinyRatios(rows, MiB);
    expect(q!.framework).toBe('fastify');
    expect(q!.time).toBeCloseTo(0.95);
    expect(q!.extraRssOverBody).toBeCloseTo(11.7 - 9);
    expect(q!.extraRssOverBodySecond).toBeCloseTo(1.6 - 1.5);
    expect(q!.extraBuffersOverBodySecond).toBeCloseTo(1.08);
  });

  it('shows both bodies, each run, and both ratios', () => {
    const text = renderTinyChunks({ size: MiB, rows, ratios: tinyRatios(rows, MiB) });
    expect(text).toContain(
      '| fastify | icapkit → embedded 204 | 200 | 5700 | 5.70 | 11.7 | 11.7, 11.5, 27.8 | 2850 | 1.6 | 1.3, 1.8, 1.6 | 0.35 / 1.09 |',
    );
    expect(text).toContain('| fastify | 0.95× | 0.95× | 2.70× | 0.10× | 1.08× |');
  });
});
