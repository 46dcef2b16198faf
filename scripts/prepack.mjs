#!/usr/bin/env node
// `prepack` of every published package (run by `pnpm pack`, `pnpm publish`, `npm pack`, `npm publish`
// in the package's folder). Refuses to pack when the tarball would be wrong:
// - packed by npm: npm leaves `workspace:^` in dependencies, which no registry install can
//   resolve; pnpm rewrites them to the real versions. Use `pnpm pack` / `pnpm publish`.
// - no build, or a build without the CommonJS entry (`pnpm run build` at the repository root);
// - build leftovers: a dist/ file whose source is gone (a renamed or deleted src/ file).
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';

const dir = process.cwd();
const manifest = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'));
const problems = [];

const agent = process.env.npm_config_user_agent ?? '';
const deps = { ...manifest.dependencies, ...manifest.peerDependencies, ...manifest.optionalDependencies };
const workspaceDeps = Object.entries(deps).filter(([, range]) => String(range).startsWith('workspace:'));
if (workspaceDeps.length > 0 && !agent.startsWith('pnpm/')) {
  problems.push(
    `${workspaceDeps.map(([n, r]) => `${n}@${r}`).join(', ')}: only pnpm replaces workspace: ranges with versions.\n` +
      `  Pack or publish with pnpm: \`pnpm pack\` / \`pnpm publish\` in ${relative(process.cwd(), dir) || '.'} (see RELEASING.md).`,
  );
}

const files = (d) =>
  existsSync(d)
    ? readdirSync(d, { withFileTypes: true }).flatMap((e) =>
        e.isDirectory() ? files(join(d, e.name)) : [join(d, e.name)],
      )
    : [];
const dist = join(dir, 'dist');
const entries = [manifest.main, manifest.types, manifest.bin && Object.values(manifest.bin)]
  .flat()
  .filter((f) => typeof f === 'string');
for (const entry of entries) {
  if (!existsSync(join(dir, entry)))
    problems.push(`${entry} is missing: run \`pnpm run build\` at the repository root.`);
}
for (const file of files(dist)) {
  const rel = relative(dist, file);
  const stem = rel.replace(/(\.exports)?(\.d)?\.(c|m)?(js|ts)$/, '');
  if (!/\.(c|m)?js$|\.d\.(c|m)?ts$/.test(rel) || stem === rel) continue;
  if (!existsSync(join(dir, 'src', `${stem}.ts`)) && !existsSync(join(dir, 'src', `${stem}.tsx`))) {
    problems.push(
      `dist/${rel} has no source (src/${stem}.ts): a leftover: delete dist/ and run \`pnpm run build\` at the repository root.`,
    );
  }
}

if (problems.length > 0) {
  process.stderr.write(`\n${manifest.name}: not packing.\n- ${problems.join('\n- ')}\n\n`);
  process.exit(1);
}
