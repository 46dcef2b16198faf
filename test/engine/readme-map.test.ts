/**
 * The "How it works" map in packages/core/README.md matches the tree: every path its table names
 * exists, and every source file of packages/core/src is named there (by itself or by its folder).
 * A row's first cell lists paths in backticks: the first from `src/`, the others relative to the
 * first one's folder (`src/client/connection.ts`, `pool.ts`); a path ending in `/` is a folder.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, posix, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const CORE = join(dirname(fileURLToPath(import.meta.url)), '../../packages/core');

function sourceFiles(dir: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...sourceFiles(path));
    else if (entry.name.endsWith('.ts') && !entry.name.endsWith('.d.ts')) out.push(path);
  }
  return out;
}

/** The paths (files, and folders ending in `/`) named in the first cells of the map's table. */
function mapPaths(readme: string): string[] {
  const start = readme.indexOf('## How it works');
  if (start < 0) return [];
  const end = readme.indexOf('\n## ', start + 1);
  const section = readme.slice(start, end < 0 ? undefined : end);
  const paths: string[] = [];
  for (const line of section.split('\n')) {
    if (!line.startsWith('|')) continue;
    const cell = line.split('|')[1] ?? '';
    const tokens = [...cell.matchAll(/`([^`]+)`/g)].map((m) => m[1]!);
    const first = tokens[0];
    if (first === undefined || !first.startsWith('src/')) continue;
    const base = first.endsWith('/') ? posix.dirname(first.slice(0, -1)) : posix.dirname(first);
    for (const t of tokens) paths.push(t.startsWith('src/') ? t : posix.join(base, t));
  }
  return paths;
}

describe('packages/core/README.md "How it works" map', () => {
  const readme = readFileSync(join(CORE, 'README.md'), 'utf8');
  const paths = mapPaths(readme);

  it('reads the relative paths of a row against its first path', () => {
    const sample = '## How it works\n| file | concept |\n| --- | --- |\n| `src/a/b.ts`, `c.ts`, `d/` | x |\n';
    expect(mapPaths(sample)).toEqual(['src/a/b.ts', 'src/a/c.ts', 'src/a/d/']);
  });

  it('names only paths that exist', () => {
    expect(paths.length).toBeGreaterThan(20);
    const missing = paths.filter((p) => !existsSync(join(CORE, p)));
    expect(missing, `the README names paths that are not in the tree: ${missing.join(', ')}`).toEqual([]);
  });

  it('names every source file of packages/core/src, or its folder', () => {
    const files = new Set(paths.filter((p) => !p.endsWith('/')));
    const folders = paths.filter((p) => p.endsWith('/'));
    const unnamed = sourceFiles(join(CORE, 'src'))
      .map((f) => relative(CORE, f).split('\\').join('/'))
      .filter((f) => !files.has(f) && !folders.some((d) => f.startsWith(d)));
    expect(unnamed, `add these files to the README's map: ${unnamed.join(', ')}`).toEqual([]);
  });
});
