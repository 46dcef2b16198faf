/**
 * steady.js reads each framework's three applications side by side: the order rotates every
 * round, and "above the framework" is the median of differences taken within a round (windows
 * seconds apart), not the difference of medians taken minutes apart.
 */
import { describe, expect, it } from 'vitest';
import {
  renderStageRows,
  renderSteady,
  roundOrder,
  SUBJECTS,
  stageRow,
  summarise,
  type Window,
} from '../src/steady.js';
import { median } from '../src/util.js';

/** One measured window of 1,000 requests. */
function w(round: number, subject: Window['subject'], us: number): Window {
  return { round, subject, usPerRequest: us, requests: 1000 };
}

describe('steady', () => {
  it('rotates who is measured first, each application once a round', () => {
    const firsts = [0, 1, 2].map((r) => roundOrder(r)[0]);
    expect(new Set(firsts)).toEqual(new Set(SUBJECTS));
    for (let r = 0; r < 5; r++) expect([...roundOrder(r)].sort()).toEqual([...SUBJECTS].sort());
  });

  it('rotates two applications too (against c-icap echo there is no hold floor)', () => {
    const two = ['alone', 'icapkit'] as const;
    expect(roundOrder(0, two)).toEqual(['alone', 'icapkit']);
    expect(roundOrder(1, two)).toEqual(['icapkit', 'alone']);
    expect(roundOrder(2, two)).toEqual(['alone', 'icapkit']);
  });

  it('with no hold floor, its columns say so and the differences against the framework stand', () => {
    const s = summarise('koa', [
      w(0, 'alone', 60),
      w(0, 'icapkit', 150),
      w(1, 'icapkit', 160),
      w(1, 'alone', 62),
    ]);
    expect(s.icapkitAbove).toBe(94); // 90, 98
    expect(s.holdAbove).toBeNaN();
    expect(renderSteady([s], 'h').join('\n')).toContain('| koa | 61 | — | 155 | — | 94 (90 to 98) | — |');
  });

  it('per stage: the totals over the window ÷ its requests, the rest of the app and the framework beside them', () => {
    const delta = {
      admission: { n: 2000, cpuUs: 20_000, wallUs: 30_000 },
      intake: { n: 2000, cpuUs: 10_000, wallUs: 90_000 },
      exchange: { n: 2000, cpuUs: 60_000, wallUs: 400_000 },
      outcome: { n: 2000, cpuUs: 30_000, wallUs: 40_000 },
    };
    const row = stageRow('fastify', delta, 2000, 180, 70);
    expect(row.stages).toEqual({ admission: 10, intake: 5, exchange: 30, outcome: 15 });
    // stages 60, the rest of the app 120, the app 180, the framework alone 70: 110 above it.
    expect(renderStageRows([row], 'h').join('\n')).toContain(
      '| fastify | 10 | 5 | 30 | 15 | 60 | 120 | 180 | 70 | 110 |',
    );
  });

  it('medians of odd and even counts', () => {
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 3, 2])).toBe(2.5);
    expect(median([])).toBeNaN();
  });

  it('takes differences within each round, so a slow phase hitting every application of a round cancels', () => {
    // Round 1 ran in a phase 1.5× slower for everybody: the difference of medians would mix phases.
    const windows = [
      w(0, 'alone', 50),
      w(0, 'hold', 80),
      w(0, 'icapkit', 140),
      w(1, 'alone', 75),
      w(1, 'hold', 120),
      w(1, 'icapkit', 210),
      w(2, 'alone', 52),
      w(2, 'hold', 84),
      w(2, 'icapkit', 145),
      w(3, 'icapkit', 999), // a round with no framework-alone window: in no difference
    ];
    const s = summarise('fastify', windows);
    expect(s.median.alone).toBe(52);
    expect(s.median.icapkit).toBe(177.5);
    expect(s.icapkitAbove).toBe(93); // 90, 135, 93
    expect(s.icapkitAboveRange).toEqual([90, 135]);
    expect(s.holdAbove).toBe(32); // 30, 45, 32
    expect(s.icapkitAboveHold).toBe(61); // 60, 90, 61
    expect(s.rounds).toBe(4);
    const table = renderSteady([s], 'heading').join('\n');
    expect(table).toContain('| fastify | 52 | 84 | 178 | 32 | 93 (90 to 135) | 61 |');
  });
});
