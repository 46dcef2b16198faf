// The published packages (every packages/* that is not private), built and packed the way a
// release packs them (`pnpm pack`), for the packaging tests.
import { execFile } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = fileURLToPath(new URL('../..', import.meta.url));

export interface PackageManifest {
  name: string;
  version: string;
  private?: boolean;
  [field: string]: unknown;
}

export interface WorkspacePackage {
  /** Folder name under packages/. */
  dir: string;
  path: string;
  manifest: PackageManifest;
}

/** Every publishable package, found by listing packages/* (a new package is covered without edits). */
export function publishedPackages(): WorkspacePackage[] {
  const base = join(ROOT, 'packages');
  return readdirSync(base, { withFileTypes: true })
    .filter((d) => d.isDirectory() && existsSync(join(base, d.name, 'package.json')))
    .map((d) => {
      const path = join(base, d.name);
      const manifest = JSON.parse(readFileSync(join(path, 'package.json'), 'utf8')) as PackageManifest;
      return { dir: d.name, path, manifest };
    })
    .filter((p) => p.manifest.private !== true)
    .sort((a, b) => a.dir.localeCompare(b.dir));
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs a command with a deadline; never throws (the caller asserts on the result). The child's
 * environment loses the variables a package manager sets for the script running this test, so
 * npm and pnpm read their own configuration, not the workspace's.
 */
export function run(
  file: string,
  args: string[],
  options: { cwd: string; timeoutMs: number; env?: Record<string, string | undefined> },
): Promise<RunResult> {
  const env: Record<string, string | undefined> = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (
      /^npm_(package_|lifecycle_|config_user_agent$|config_verify_deps_before_run$|execpath$|node_execpath$|command$)/.test(
        key,
      )
    ) {
      continue;
    }
    env[key] = value;
  }
  Object.assign(env, options.env);
  return new Promise((resolve) => {
    execFile(
      file,
      args,
      {
        cwd: options.cwd,
        timeout: options.timeoutMs,
        killSignal: 'SIGKILL',
        env,
        maxBuffer: 64 * 1024 * 1024,
      },
      (err, stdout, stderr) => {
        const code = err === null ? 0 : typeof err.code === 'number' ? err.code : 1;
        const note = err?.killed ? `\n[killed after ${options.timeoutMs} ms]` : '';
        resolve({ code, stdout: String(stdout), stderr: `${String(stderr)}${note}` });
      },
    );
  });
}

/** Runs `fn` over `items`, at most `limit` at once (the CI machine has 2 cores). */
export async function mapLimit<T, R>(
  items: readonly T[],
  limit: number,
  fn: (item: T) => Promise<R>,
): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  const workers = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) {
      const index = next++;
      results[index] = await fn(items[index] as T);
    }
  });
  await Promise.all(workers);
  return results;
}

/** `pnpm run build` (tsc -b, then the CommonJS entries): a no-op in ~2 s when nothing changed. */
export async function build(): Promise<void> {
  const result = await run('pnpm', ['run', 'build'], { cwd: ROOT, timeoutMs: 240_000 });
  if (result.code !== 0) throw new Error(`pnpm run build failed:\n${result.stdout}\n${result.stderr}`);
}

/** Packs every published package with `pnpm pack` into `dest`; returns name -> tarball path. */
export async function packAll(dest: string): Promise<Map<string, string>> {
  const tarballs = new Map<string, string>();
  await mapLimit(publishedPackages(), 2, async (pkg) => {
    const result = await run('pnpm', ['pack', '--pack-destination', dest], {
      cwd: pkg.path,
      timeoutMs: 60_000,
    });
    if (result.code !== 0)
      throw new Error(`pnpm pack failed in packages/${pkg.dir}:\n${result.stdout}\n${result.stderr}`);
    const file = `${pkg.manifest.name.replace(/^@/, '').replace('/', '-')}-${pkg.manifest.version}.tgz`;
    const path = join(dest, file);
    if (!existsSync(path))
      throw new Error(`pnpm pack in packages/${pkg.dir} did not write ${file}:\n${result.stdout}`);
    tarballs.set(pkg.manifest.name, path);
  });
  return tarballs;
}
