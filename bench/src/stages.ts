/**
 * Totals of the engine's per-stage timings (diagnostics channel `icapkit:scan:stage`, published
 * by packages/core/src/engine/stage-clock.ts only while someone subscribes): per stage, how many
 * scans reached it and the CPU and wall µs they spent in it. The application subscribes when
 * BENCH_STAGES=1 and serves the totals in /__stats; the runner takes the difference over the
 * measured window.
 */
import * as dc from 'node:diagnostics_channel';

export const STAGES = ['admission', 'intake', 'exchange', 'outcome'] as const;
export type Stage = (typeof STAGES)[number];

export interface StageTotal {
  n: number;
  cpuUs: number;
  wallUs: number;
}

export type StageSnapshot = Record<Stage, StageTotal>;

function empty(): StageSnapshot {
  return Object.fromEntries(STAGES.map((s) => [s, { n: 0, cpuUs: 0, wallUs: 0 }])) as StageSnapshot;
}

export class StageTotals {
  readonly #totals = empty();

  static subscribe(): StageTotals {
    const t = new StageTotals();
    dc.subscribe('icapkit:scan:stage', (message) => {
      const m = message as { stage: string; cpuUs: number; wallUs: number };
      const s = t.#totals[m.stage as Stage];
      if (s === undefined) return;
      s.n++;
      s.cpuUs += m.cpuUs;
      s.wallUs += m.wallUs;
    });
    return t;
  }

  snapshot(): StageSnapshot {
    return structuredClone(this.#totals);
  }
}

/** after − before, per stage. */
export function stageDelta(before: StageSnapshot, after: StageSnapshot): StageSnapshot {
  const d = empty();
  for (const s of STAGES) {
    d[s] = {
      n: after[s].n - before[s].n,
      cpuUs: after[s].cpuUs - before[s].cpuUs,
      wallUs: after[s].wallUs - before[s].wallUs,
    };
  }
  return d;
}
