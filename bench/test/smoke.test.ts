/**
 * Smoke tests of the benchmark and the soak: `bench/dist/run.js --short` starts c-icap, the
 * embedded server, Squid and every application, runs one small cell per path and prints the
 * table; `bench/dist/soak.js` sends a few seconds of mixed clean, infected and faulty uploads. No
 * timing assertion: only that they run, every path produced a row, every soak answer was right,
 * and everything they started is gone.
 *
 * Skipped when c-icap or Squid is not installed, or the bench was not built (`pnpm run build`),
 * except under CI=true, where that is a failure.
 */
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { cIcapMissing } from '../src/cicap.js';
import { squidMissing } from '../src/squid.js';

const BENCH = fileURLToPath(new URL('..', import.meta.url));
const RUN = join(BENCH, 'dist', 'run.js');
const SOAK = join(BENCH, 'dist', 'soak.js');

const missing = [...cIcapMissing(), ...squidMissing()];
if (!existsSync(RUN)) missing.push(`${RUN} (run pnpm run build first)`);
if (missing.length > 0 && process.env.CI === 'true') {
  throw new Error(
    `CI=true but the benchmark's prerequisites are missing: ${missing.join('; ')}. ` +
      'Install: apt-get install -y c-icap libc-icap-mod-virus-scan squid (wrk optional: autocannon is the fallback)',
  );
}

/** Processes whose command line mentions `needle` (to check nothing was left running). */
function processesWith(needle: string): number[] {
  return processesWhere((pid) => readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(needle));
}

/**
 * Processes carrying `mark` (NAME=value) in their environment: what this run started, whatever it
 * is (c-icap, Squid, load generators, apps inherit the environment), and nothing of another
 * session's benchmark on the same machine.
 */
function processesMarked(mark: string): number[] {
  return processesWhere((pid) => readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0').includes(mark));
}

function processesWhere(test: (pid: string) => boolean): number[] {
  const pids: number[] = [];
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e) || Number(e) === process.pid) continue;
    try {
      if (test(e)) pids.push(Number(e));
    } catch {
      // gone, or not ours to read
    }
  }
  return pids;
}

/** Marks the processes of this file's runs (see processesMarked). */
const RUN_ID = randomUUID();
const MARK = `ICAPKIT_BENCH_SMOKE_RUN=${RUN_ID}`;
const MARKED_ENV = { ...process.env, ICAPKIT_BENCH_SMOKE_RUN: RUN_ID };

describe.skipIf(missing.length > 0)('bench --short', () => {
  it('runs every path once and prints one table with ratios', { timeout: 240_000 }, async () => {
    const out = await mkdtemp(join(tmpdir(), 'icapkit-bench-smoke-'));
    try {
      const { code, stdout, stderr } = await new Promise<{
        code: number | null;
        stdout: string;
        stderr: string;
      }>((resolve) => {
        execFile(
          process.execPath,
          [RUN, '--short', `--out=${out}`],
          { timeout: 220_000, killSignal: 'SIGINT', maxBuffer: 16 * 1024 * 1024, env: MARKED_ENV },
          (err, so, se) =>
            resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout: so, stderr: se }),
        );
      });
      expect(code, `bench failed:\n${stderr}\n${stdout}`).toBe(0);
      // The table, the ratios and the targets.
      expect(stdout).toContain('| Body | Clients | Path | req/s | p50 ms | p99 ms |');
      expect(stdout).toContain('÷ Squid');
      expect(stdout).toContain('Targets (computed from this run)');
      // The machine's CPU per request, with the framework alone and the raw client beside the paths.
      expect(stdout).toMatch(/\| 10 KiB \| 8 \| raw IcapClient → c-icap avscan \| [^\n]* of \d+ \|/);
      expect(stdout).toMatch(/\| 10 KiB \| 8 \| Express, no scanning \(ceiling\) \| [^\n]* of \d+ \|/);
      const json = JSON.parse(await readFile(join(out, 'short.json'), 'utf8')) as {
        results: Array<{ path: string; ok: number; note?: string }>;
      };
      const paths = json.results.map((r) => r.path);
      for (const p of [
        'ceiling-express',
        'express-avscan',
        'fastify-echo',
        'koa-204',
        'squid-avscan',
        'raw-avscan',
        'floor-204',
        'hold-fastify',
      ]) {
        expect(paths).toContain(p);
      }
      for (const r of json.results) {
        expect(r.note ?? '', `${r.path}: ${r.note}`).not.toMatch(/^(failed|check failed)/);
        expect(r.ok, r.path).toBeGreaterThan(0);
      }
      // Nothing it started outlives it.
      expect(processesMarked(MARK)).toEqual([]);
      expect(processesWith(join(BENCH, 'dist'))).toEqual([]);
    } finally {
      await rm(out, { recursive: true, force: true });
    }
  });

  // In the same file as the run above, so the two never overlap (each checks that no process of
  // bench/dist is left, which the other's would be). `pnpm soak` runs it for ten minutes.
  it('a short soak: every answer is the one its request must get', { timeout: 90_000 }, async () => {
    const { code, stdout } = await new Promise<{ code: number | null; stdout: string }>((resolve) => {
      execFile(
        process.execPath,
        [SOAK, '--duration=6', '--connections=8'],
        { timeout: 60_000, maxBuffer: 4 * 1024 * 1024 },
        (err, out) => resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout: out }),
      );
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
    expect(processesWith(join(BENCH, 'dist'))).toEqual([]);
  });
});
