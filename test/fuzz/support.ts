/**
 * Shared plumbing of the fuzz tests: how many inputs each property gets, and a report of what ran.
 *
 * `ICAPKIT_FUZZ_RUNS` sets the number of generated inputs per property (default
 * {@link DEFAULT_RUNS}, what `pnpm test` runs; `scripts/fuzz.sh` asks for 100 000).
 * `ICAPKIT_FUZZ_SEED` (and `ICAPKIT_FUZZ_PATH`) replay a reported failure. With `ICAPKIT_FUZZ_REPORT=<file>`, one JSON line
 * per property (name, runs, ms) is appended to that file, so the nightly script can print counts.
 */
import { appendFileSync } from 'node:fs';
import fc from 'fast-check';

export const DEFAULT_RUNS = 1500;

function envInt(name: string): number | undefined {
  const raw = process.env[name];
  if (raw === undefined || raw.trim() === '') return undefined;
  const n = Number(raw.replace(/_/g, ''));
  if (!Number.isSafeInteger(n) || n < 1) throw new Error(`${name} must be a positive integer (got ${raw})`);
  return n;
}

/** Generated inputs per property. */
export const FUZZ_RUNS = envInt('ICAPKIT_FUZZ_RUNS') ?? DEFAULT_RUNS;
/** Replaying a failure: the seed (and optionally the path) fast-check reported. */
const SEED = ((raw) => (raw === undefined || raw === '' ? undefined : Number.parseInt(raw, 10)))(
  process.env.ICAPKIT_FUZZ_SEED,
);
const PATH = process.env.ICAPKIT_FUZZ_PATH || undefined;
const replay = (): { seed?: number; path?: string } => ({
  ...(SEED === undefined || Number.isNaN(SEED) ? {} : { seed: SEED }),
  ...(PATH === undefined ? {} : { path: PATH }),
});

/** A positive integer from the environment, or the fallback. */
export function runsFromEnv(name: string, fallback: number): number {
  return envInt(name) ?? fallback;
}

/** The runs for a property: `weight` scales the default (cheap properties run more often in CI). */
export function runsFor(weight = 1): number {
  if (process.env.ICAPKIT_FUZZ_RUNS !== undefined) return FUZZ_RUNS;
  return Math.max(1, Math.round(FUZZ_RUNS * weight));
}

/** A vitest timeout that grows with the number of runs (µs per run, plus a floor). */
export function timeoutFor(runs: number, microsPerRun = 1000): number {
  return Math.max(30_000, Math.ceil((runs * microsPerRun) / 1000) * 3);
}

/**
 * Runs a property, records its counts, and fails with fast-check's report (seed, path and the
 * shrunk counterexample) when it does not hold.
 */
export function checkProperty<Ts extends [unknown, ...unknown[]]>(
  name: string,
  property: fc.IProperty<Ts>,
  numRuns: number,
): void {
  const t0 = performance.now();
  const details = fc.check(property, { numRuns, ...replay() });
  report(name, details.numRuns, performance.now() - t0, details.failed);
  if (details.failed) throw failure(name, details);
}

/** The async variant of {@link checkProperty}. */
export async function checkAsyncProperty<Ts extends [unknown, ...unknown[]]>(
  name: string,
  property: fc.IAsyncProperty<Ts>,
  numRuns: number,
  parameters: fc.Parameters<Ts> = {},
): Promise<void> {
  const t0 = performance.now();
  const details = await fc.check(property, {
    ...parameters,
    numRuns,
    ...replay(),
  });
  report(name, details.numRuns, performance.now() - t0, details.failed);
  if (details.failed) throw failure(name, details);
}

function failure<Ts>(name: string, details: fc.RunDetails<Ts>): Error {
  const cause = details.errorInstance;
  const why = cause instanceof Error ? cause.message : String(cause);
  return new Error(`${fc.defaultReportMessage(details) ?? `property ${name} failed`}\n\nFailure: ${why}`);
}

function report(name: string, runs: number, ms: number, failed: boolean): void {
  const file = process.env.ICAPKIT_FUZZ_REPORT;
  if (file === undefined || file === '') return;
  appendFileSync(file, `${JSON.stringify({ property: name, runs, ms: Math.round(ms), failed })}\n`);
}

/** Cuts `data` into pieces whose sizes cycle through `sizes` (0 gives an empty feed). */
export function split(data: Buffer, sizes: readonly number[]): Buffer[] {
  if (sizes.length === 0) return [data];
  const out: Buffer[] = [];
  let at = 0;
  let k = 0;
  let empties = 0;
  while (at < data.length) {
    const size = sizes[k++ % sizes.length]!;
    if (size === 0) {
      // An empty feed now and then, never a run of them that makes no progress.
      if (empties++ < 2) out.push(Buffer.alloc(0));
      else out.push(data.subarray(at, ++at));
      continue;
    }
    empties = 0;
    // Copies, not views: the parser must not depend on what lies around a piece.
    out.push(Buffer.from(data.subarray(at, at + size)));
    at += size;
  }
  return out;
}
