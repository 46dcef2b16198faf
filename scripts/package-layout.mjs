#!/usr/bin/env node
// The layout every published package (packages/*, not private) follows, applied or checked:
// package.json metadata and entry points, tsconfig.json extending tsconfig.package.json, a copy of
// the root LICENSE. See RELEASING.md, "Adding a package".
//
//   node scripts/package-layout.mjs           rewrite what differs (idempotent), list what changed
//   node scripts/package-layout.mjs --check   list what differs, exit 1 if anything does
import { copyFileSync, existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const REPOSITORY = 'https://github.com/icapkit/icapkit';

const ORDER = [
  'name',
  'version',
  'description',
  'keywords',
  'homepage',
  'bugs',
  'repository',
  'license',
  'author',
  'type',
  'sideEffects',
  'engines',
  'bin',
  'main',
  'types',
  'exports',
  'files',
  'scripts',
  'dependencies',
  'peerDependencies',
  'peerDependenciesMeta',
  'devDependencies',
  'publishConfig',
];

/** The manifest with the layout's fields; the package's own fields (name, dependencies...) kept. */
export function layoutManifest(manifest, dir) {
  const m = { ...manifest };
  m.keywords = m.keywords?.length ? m.keywords : ['icap', 'rfc3507', 'antivirus', 'upload', 'scan'];
  m.homepage = `${REPOSITORY}/tree/main/packages/${dir}#readme`;
  m.bugs = { url: `${REPOSITORY}/issues` };
  m.repository = { type: 'git', url: `git+${REPOSITORY}.git`, directory: `packages/${dir}` };
  m.license = 'MIT';
  m.author ??= 'icapkit contributors';
  m.type = 'module';
  m.sideEffects ??= false;
  m.engines = { ...m.engines, node: '>=20.19' };
  m.main = './dist/index.cjs';
  m.types = './dist/index.d.cts';
  m.exports = {
    ...(typeof m.exports === 'object' && m.exports !== null ? m.exports : {}),
    '.': {
      import: { types: './dist/index.d.ts', default: './dist/index.js' },
      require: { types: './dist/index.d.cts', default: './dist/index.cjs' },
    },
    './package.json': './package.json',
  };
  m.files = ['dist', '!dist/.tsbuildinfo', '!dist/**/*.map', 'LICENSE', 'README.md'];
  m.scripts = {
    ...m.scripts,
    build: 'tsc -b && node ../../scripts/cjs-entries.mjs .',
    prepack: 'node ../../scripts/prepack.mjs',
  };
  m.publishConfig = { ...m.publishConfig, access: 'public' };
  const out = {};
  for (const key of ORDER) if (key in m) out[key] = m[key];
  for (const key of Object.keys(m)) if (!(key in out)) out[key] = m[key];
  return out;
}

/** Applies (or, with check, only reports) the layout to one package; returns what differs. */
export function applyLayout(pkgDir, { check = false } = {}) {
  const dir = pkgDir.split(/[\\/]/).pop();
  const differences = [];
  const manifestPath = join(pkgDir, 'package.json');
  const manifest = JSON.parse(readFileSync(manifestPath, 'utf8'));
  if (manifest.private === true) return differences;
  const wanted = `${JSON.stringify(layoutManifest(manifest, dir), null, 2)}\n`;
  if (JSON.stringify(JSON.parse(wanted)) !== JSON.stringify(manifest)) {
    differences.push(`packages/${dir}/package.json`);
    if (!check) writeFileSync(manifestPath, wanted);
  }
  const tsconfigPath = join(pkgDir, 'tsconfig.json');
  if (existsSync(tsconfigPath)) {
    const tsconfig = JSON.parse(readFileSync(tsconfigPath, 'utf8'));
    const options = tsconfig.compilerOptions ?? {};
    if (
      tsconfig.extends !== '../../tsconfig.package.json' ||
      options.tsBuildInfoFile !== 'dist/.tsbuildinfo' ||
      options.sourceMap === true ||
      options.declarationMap === true
    ) {
      differences.push(`packages/${dir}/tsconfig.json`);
      if (!check) {
        tsconfig.extends = '../../tsconfig.package.json';
        tsconfig.compilerOptions = {
          ...options,
          rootDir: 'src',
          outDir: 'dist',
          tsBuildInfoFile: 'dist/.tsbuildinfo',
        };
        delete tsconfig.compilerOptions.sourceMap;
        delete tsconfig.compilerOptions.declarationMap;
        writeFileSync(tsconfigPath, `${JSON.stringify(tsconfig, null, 2)}\n`);
      }
    }
  } else {
    differences.push(`packages/${dir}/tsconfig.json (missing: copy packages/koa/tsconfig.json)`);
  }
  const license = join(pkgDir, 'LICENSE');
  const rootLicense = readFileSync(join(root, 'LICENSE'), 'utf8');
  if (!existsSync(license) || readFileSync(license, 'utf8') !== rootLicense) {
    differences.push(`packages/${dir}/LICENSE`);
    if (!check) copyFileSync(join(root, 'LICENSE'), license);
  }
  return differences;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const check = process.argv.includes('--check');
  const base = join(root, 'packages');
  const differences = readdirSync(base, { withFileTypes: true })
    .filter((d) => d.isDirectory() && existsSync(join(base, d.name, 'package.json')))
    .flatMap((d) => applyLayout(join(base, d.name), { check }));
  for (const d of differences) process.stdout.write(`${check ? 'differs' : 'updated'}: ${d}\n`);
  if (check && differences.length > 0) {
    process.stdout.write(
      'run `node scripts/package-layout.mjs` to apply the package layout (RELEASING.md)\n',
    );
    process.exit(1);
  }
}
