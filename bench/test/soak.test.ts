/**
 * Smoke test of the soak script (`pnpm soak` runs it for ten minutes): a few seconds of mixed
 * clean, infected and faulty uploads must give no wrong verdict and leave no process behind.
 * No timing assertion.
 */
import { execFile } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';

const SOAK = join(fileURLToPath(new URL('..', import.meta.url)), 'dist', 'soak.js');

if (!existsSync(SOAK) && process.env.CI === 'true') {
  throw new Error(`CI=true but ${SOAK} is missing (pnpm run build first)`);
}

it.skipIf(!existsSync(SOAK))(
  'a short soak: every answer is the one its request must get',
  async () => {
    const { code, stdout } = await new Promise<{ code: number | null; stdout: string }>((resolve) => {
      const child = execFile(
        process.execPath,
        [SOAK, '--duration=6', '--connections=8'],
        { timeout: 60_000, maxBuffer: 4 * 1024 * 1024 },
        (err, out) => resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout: out }),
      );
      child.stdin?.end();
    });
    const line = stdout.split('\n').find((l) => l.startsWith('RESULT '));
    expect(line, stdout).toBeDefined();
    const result = JSON.parse(line!.slice(7)) as {
      total: number;
      wrong: number;
      scenarios: Record<string, { count: number; wrong: number }>;
    };
    expect(result.wrong, stdout).toBe(0);
    expect(code).toBe(0);
    expect(result.total).toBeGreaterThan(100);
    // The mix reached the application: clean, infected and faulty requests all happened.
    for (const s of ['clean-10k', 'eicar-10k', 'icap-status-500'])
      expect(result.scenarios[s]?.count).toBeGreaterThan(0);
    // The ICAP server it started is gone (its application runs bench/dist/app.js, which the
    // benchmark's own smoke test may be running at the same time, so it is not looked for).
    expect(processesWith(SOAK.replace(/soak\.js$/, 'soak-icap.js'))).toEqual([]);
  },
  90_000,
);

function processesWith(needle: string): number[] {
  const pids: number[] = [];
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      if (readFileSync(`/proc/${e}/cmdline`, 'utf8').includes(needle)) pids.push(Number(e));
    } catch {
      // gone
    }
  }
  return pids;
}
