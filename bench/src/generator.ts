/**
 * What the ICAP load generators (rawload.js, floorload.js) share: N loops started at once, a
 * warm-up, then a measured window with the generator's own CPU, and one `RESULT {json}` line.
 */

export interface GeneratorState {
  /** Inside the measured window: requests count, errors count. */
  measuring: boolean;
  /** When the loops stop starting requests (performance.now() time). */
  stopAt: number;
  latencies: number[];
  errors: number;
  firstError: string | undefined;
}

export function generatorState(): GeneratorState {
  return {
    measuring: false,
    stopAt: Number.POSITIVE_INFINITY,
    latencies: [],
    errors: 0,
    firstError: undefined,
  };
}

/**
 * Prints READY, starts `concurrency` loops, measures from the end of the warm-up until every
 * loop has returned, and prints RESULT with what `extra` adds (connections, statuses).
 */
export async function runGenerator(
  state: GeneratorState,
  concurrency: number,
  warmupMs: number,
  durationMs: number,
  loop: () => Promise<void>,
  extra: () => Record<string, unknown>,
): Promise<void> {
  process.stdout.write('READY {}\n');
  state.stopAt = performance.now() + warmupMs + durationMs;
  const loops = Array.from({ length: concurrency }, () => loop());
  await new Promise((r) => setTimeout(r, warmupMs));
  state.measuring = true;
  const m0 = performance.now();
  const cpu0 = process.cpuUsage();
  await Promise.all(loops);
  const elapsed = (performance.now() - m0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  const latencies = state.latencies.sort((a, b) => a - b);
  const pct = (p: number) =>
    latencies.length === 0
      ? 0
      : latencies[Math.min(latencies.length - 1, Math.floor((p / 100) * latencies.length))]!;
  process.stdout.write(
    `RESULT ${JSON.stringify({
      requests: latencies.length,
      errors: state.errors,
      firstError: state.firstError,
      durationS: elapsed,
      rps: latencies.length / elapsed,
      p50: pct(50),
      p99: pct(99),
      ...extra(),
      /** CPU µs (user + system) of this generator over the measured window. */
      cpuUs: cpu.user + cpu.system,
    })}\n`,
  );
}
