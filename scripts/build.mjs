#!/usr/bin/env node
// `pnpm run build`: the published packages first (tsc -b packages/*), then their CommonJS entries
// and typings (scripts/cjs-entries.mjs), then everything else (tsc -b: bench, examples). In that
// order because a CommonJS project in the workspace (a NestJS example) reads the packages'
// `.d.cts` typings, which tsc does not write: they must exist before it is compiled.
// Extra arguments go to both tsc runs (`--pretty`, `--verbose`).
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildCjsEntries } from './cjs-entries.mjs';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
const args = process.argv.slice(2);
const packages = readdirSync(join(root, 'packages'), { withFileTypes: true })
  .filter((d) => d.isDirectory() && existsSync(join(root, 'packages', d.name, 'tsconfig.json')))
  .map((d) => join('packages', d.name));

function tscBuild(projects) {
  const result = spawnSync(process.execPath, [tsc, '-b', ...projects, ...args], {
    cwd: root,
    stdio: 'inherit',
  });
  if (result.status !== 0) process.exit(result.status ?? 1);
}

tscBuild(packages);
for (const dir of packages) buildCjsEntries(join(root, dir));
tscBuild([]);
