/**
 * floors.js reads Squid, the raw client, the hold floor and icapkit in interleaved rounds: every
 * path once a round, the order rotating, and each ratio taken within a round (both sides in one
 * phase of the machine), then its median and range over the rounds.
 */
import { describe, expect, it } from 'vitest';
import {
  errorNotes,
  type FloorWindow,
  floorRows,
  floorSubjects,
  ratioOf,
  renderFloors,
} from '../src/floors.js';
import { rotate } from '../src/util.js';

const w = (round: number, subject: string, rps: number): FloorWindow => ({ round, subject, rps });

/** Three rounds of the paths given (req/s by round), round `slow` in a phase where all run at half speed. */
function phasedRounds(slow: number, rps: Record<string, (round: number) => number>): FloorWindow[] {
  const windows: FloorWindow[] = [];
  for (let r = 0; r < 3; r++) {
    const phase = r === slow ? 0.5 : 1;
    for (const [subject, at] of Object.entries(rps)) windows.push(w(r, subject, at(r) * phase));
  }
  return windows;
}

describe('floors', () => {
  it('measures Squid, the raw client and each framework with the hold floor and with icapkit', () => {
    expect(floorSubjects(['fastify', 'koa'])).toEqual([
      'squid',
      'raw',
      'hold:fastify',
      'icapkit:fastify',
      'hold:koa',
      'icapkit:koa',
    ]);
  });

  it('adds the hold floor part by part for a multipart form', () => {
    expect(floorSubjects(['koa'], { parts: true })).toEqual([
      'squid',
      'raw',
      'hold:koa',
      'holdparts:koa',
      'icapkit:koa',
    ]);
  });

  it('adds icapkit without previews after icapkit when asked (--no-preview-too=1)', () => {
    expect(floorSubjects(['koa', 'express'], { noPreview: true })).toEqual([
      'squid',
      'raw',
      'hold:koa',
      'icapkit:koa',
      'nopreview:koa',
      'hold:express',
      'icapkit:express',
      'nopreview:express',
    ]);
  });

  it('rotates the order: every path once a round, each first in some round', () => {
    const subjects = floorSubjects(['express']);
    const firsts = new Set(subjects.map((_, r) => rotate(r, subjects)[0]));
    expect(firsts).toEqual(new Set(subjects));
    for (let r = 0; r < 7; r++) expect([...rotate(r, subjects)].sort()).toEqual([...subjects].sort());
  });

  it('takes each ratio within a round, not as a ratio of medians', () => {
    // The machine's phase halves everything in round 1: within a round icapkit is 1.5× Squid
    // every time; the medians of each path (100 vs 75) would say 1.33×.
    const phase = (r: number) => (r % 2 === 1 ? 0.5 : 1);
    const windows = [0, 1, 2, 3].flatMap((r) => [
      w(r, 'squid', 100 * phase(r)),
      w(r, 'icapkit:koa', 150 * phase(r)),
    ]);
    expect(ratioOf(windows, 'icapkit:koa', 'squid')).toEqual({ median: 1.5, min: 1.5, max: 1.5, rounds: 4 });
  });

  it('leaves out a round that lacks either side, and says "—" when no round has both', () => {
    const windows = [
      w(0, 'squid', 100),
      w(0, 'hold:koa', 120),
      w(1, 'hold:koa', 999),
      w(2, 'squid', 0),
      w(2, 'hold:koa', 5),
    ];
    expect(ratioOf(windows, 'hold:koa', 'squid')).toEqual({ median: 1.2, min: 1.2, max: 1.2, rounds: 1 });
    const none = ratioOf(windows, 'icapkit:koa', 'squid');
    expect(none.rounds).toBe(0);
    const [row] = floorRows(['koa'], windows);
    const line = renderFloors([row!], 'h').at(-1)!;
    expect(line).toContain('| 1.20× (1.20–1.20) |');
    // icapkit ÷ Squid, icapkit ÷ raw, hold floor ÷ raw (no raw client measured), icapkit ÷ hold floor
    expect(line.split('|').filter((c) => c.trim() === '—').length).toBe(4);
  });

  it('renders one row per framework: median req/s and every ratio with its range', () => {
    const windows: FloorWindow[] = [];
    for (let r = 0; r < 3; r++)
      windows.push(
        w(r, 'squid', 80 + r),
        w(r, 'raw', 200),
        w(r, 'hold:fastify', 160),
        w(r, 'icapkit:fastify', 150 - r * 10),
      );
    const rows = floorRows(['fastify'], windows);
    expect(rows[0]!.rps).toEqual({ icapkit: 140, hold: 160, squid: 81, raw: 200 });
    expect(rows[0]!.icapkitHold.median).toBeCloseTo(140 / 160);
    expect(rows[0]!.icapkitRaw).toMatchObject({ min: 0.65, max: 0.75, rounds: 3 });
    const lines = renderFloors(rows, 'heading');
    expect(lines[0]).toBe('heading');
    expect(lines).toHaveLength(5);
    expect(lines[4]).toMatch(/^\| fastify \| 140 \/ 160 \/ 81\.0 \/ 200 \| /);
    expect(lines[4]).toContain('| 0.70× (0.65–0.75) |'); // icapkit ÷ raw
    expect(lines[4]).toContain('| 1.98× (1.95–2.00) |'); // hold floor ÷ Squid: 160/80, 160/81, 160/82
  });

  it('gives the part-by-part floor its columns when it was measured, "—" for a row without it', () => {
    const windows: FloorWindow[] = [];
    for (let r = 0; r < 3; r++)
      windows.push(
        w(r, 'squid', 100),
        w(r, 'raw', 130),
        w(r, 'hold:koa', 170),
        w(r, 'holdparts:koa', 120 + r),
        w(r, 'icapkit:koa', 110),
        w(r, 'hold:express', 160),
        w(r, 'icapkit:express', 105),
      );
    const rows = floorRows(['koa', 'express'], windows);
    expect(rows[0]!.holdParts).toMatchObject({ rps: 121, squid: { median: 1.21, min: 1.2, max: 1.22 } });
    expect(rows[0]!.holdParts!.icapkit.median).toBeCloseTo(110 / 121);
    expect(rows[1]!.holdParts).toBeUndefined();
    const lines = renderFloors(rows, 'h');
    expect(lines[2]).toContain('| req/s: hold floor part by part | part by part ÷ Squid |');
    expect(lines[3]!.split('|').length).toBe(lines[2]!.split('|').length);
    expect(lines[4]).toMatch(
      /\| 121 \| 1\.21× \(1\.20–1\.22\) \| 0\.93× \(0\.92–0\.94\) \| 0\.91× \(0\.90–0\.92\) \|$/,
    );
    expect(lines[5]).toMatch(/\| — \| — \| — \| — \|$/);
  });

  it('reads icapkit against itself without previews, within each round', () => {
    const windows = phasedRounds(1, {
      squid: () => 100,
      'hold:koa': () => 170,
      'icapkit:koa': () => 90,
      'nopreview:koa': (r) => 100 + r,
    });
    const [row] = floorRows(['koa'], windows);
    expect(row!.noPreview!.rps).toBe(100);
    expect(row!.noPreview!.squid).toMatchObject({ median: 1.01, min: 1, max: 1.02 });
    expect(row!.noPreview!.icapkit.median).toBeCloseTo(90 / 101);
    const lines = renderFloors([row!], 'h');
    expect(lines[2]).toContain('| icapkit ÷ without preview |');
    expect(lines[3]!.split('|').length).toBe(lines[2]!.split('|').length);
    expect(lines[4]!.split('|').length).toBe(lines[2]!.split('|').length);
    expect(lines[4]).toMatch(/\| 100 \| 1\.01× \(1\.00–1\.02\) \| 0\.89× \(0\.88–0\.90\) \|$/);
  });

  it('measures icapkit with other profile fields too (--variant-too), after the one without previews', () => {
    expect(floorSubjects(['koa'], { noPreview: true, variant: true })).toEqual([
      'squid',
      'raw',
      'hold:koa',
      'icapkit:koa',
      'nopreview:koa',
      'variant:koa',
    ]);
    const windows = phasedRounds(2, {
      squid: () => 100,
      'hold:koa': () => 170,
      'icapkit:koa': () => 120,
      'variant:koa': (r) => 100 - r,
    });
    const [row] = floorRows(['koa'], windows);
    expect(row!.noPreview).toBeUndefined();
    expect(row!.variant!.rps).toBe(99);
    expect(row!.variant!.icapkit).toMatchObject({ median: 120 / 99, min: 1.2, max: 60 / 49 });
    const lines = renderFloors([row!], 'h');
    expect(lines[2]).toContain('| icapkit ÷ variant |');
    expect(lines[2]).not.toContain('without preview');
    expect(lines[4]!.split('|').length).toBe(lines[2]!.split('|').length);
    expect(lines[4]).toMatch(/\| 99\.0 \| 0\.99× \(0\.98–1\.00\) \| 1\.21× \(1\.20–1\.22\) \|$/);
  });

  it('measures the hold floor handing on a stream too (--hold-stream-too), beside the hold floor', () => {
    expect(floorSubjects(['express'], { holdStream: true })).toEqual([
      'squid',
      'raw',
      'hold:express',
      'holdstream:express',
      'icapkit:express',
    ]);
    const windows = phasedRounds(1, {
      squid: () => 100,
      'hold:express': () => 190,
      'holdstream:express': (r) => 170 + r,
      'icapkit:express': () => 140,
    });
    const [row] = floorRows(['express'], windows);
    expect(row!.variant).toBeUndefined();
    expect(row!.holdStream!.rps).toBe(170);
    expect(row!.holdStream!.squid).toMatchObject({ median: 1.71, min: 1.7, max: 1.72 });
    expect(row!.holdStream!.icapkit).toMatchObject({ median: 140 / 171, min: 140 / 172, max: 140 / 170 });
    const lines = renderFloors([row!], 'h');
    expect(lines[2]).toContain('| icapkit ÷ stream floor |');
    expect(lines[2]).not.toContain('variant');
    expect(lines[3]!.split('|').length).toBe(lines[2]!.split('|').length);
    expect(lines[4]!.split('|').length).toBe(lines[2]!.split('|').length);
    expect(lines[4]).toMatch(/\| 170 \| 1\.71× \(1\.70–1\.72\) \| 0\.82× \(0\.81–0\.82\) \|$/);
  });

  it('notes the paths that failed requests, and only those', () => {
    const windows: FloorWindow[] = [
      { round: 0, subject: 'squid', rps: 90, errors: 12 },
      { round: 1, subject: 'squid', rps: 95, errors: 0 },
      { round: 2, subject: 'squid', rps: 91, errors: 3 },
      { round: 0, subject: 'icapkit:koa', rps: 150, errors: 0 },
      { round: 1, subject: 'raw', rps: 200 },
    ];
    expect(errorNotes(windows)).toEqual([
      'squid: 15 failed requests in 2 of its windows (req/s counts answers only)',
    ]);
  });
});
