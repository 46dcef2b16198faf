/** Reading callgrind's counters from a running process (callgrind.ts, callgrind-client.ts). */
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { sleep } from './util.js';

/** The `totals:` (or `summary:`) Ir of a callgrind output file. */
export function totalIr(file: string): number {
  const m = /^(?:totals|summary):\s+(\d+)/m.exec(readFileSync(file, 'utf8'));
  if (!m) throw new Error(`no totals in ${file}`);
  return Number(m[1]);
}

/**
 * Ir of one dump (the files of every thread, with --separate-threads: `<base>.<n>-<thread>`):
 * the main thread (JavaScript, libuv, the syscalls' user side) and the others (V8's compiler
 * and GC helpers, libuv's thread pool).
 */
export function dumpIr(dir: string, dumpNo: string): { main: number; other: number } {
  let main = 0;
  let other = 0;
  for (const f of readdirSync(dir)) {
    const m = /\.(\d+)-(\d+)$/.exec(f);
    if (!m || m[1] !== dumpNo) continue;
    const ir = totalIr(join(dir, f));
    if (m[2] === '01') main += ir;
    else other += ir;
  }
  return { main, other };
}

/** Dumps (and zeroes) the counters of a callgrind process; resolves with the dump's number. */
export async function dump(pid: number, dir: string, no: number): Promise<string> {
  execFileSync('callgrind_control', ['-d', String(pid)], { timeout: 120_000, stdio: 'ignore' });
  const deadline = Date.now() + 120_000;
  const want = new RegExp(`\\.${no}-01$`);
  while (Date.now() < deadline) {
    const f = readdirSync(dir).find((x) => want.test(x));
    if (f !== undefined) {
      try {
        totalIr(join(dir, f));
        await sleep(500);
        return String(no);
      } catch {
        // still being written
      }
    }
    await sleep(200);
  }
  throw new Error('callgrind dump did not appear');
}
