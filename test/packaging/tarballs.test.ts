// What `pnpm pack` puts in each published package's tarball (issue 15): a license, metadata that
// works on npm, a README that stands on its own, no build leftovers, entry points that resolve in
// every module system (publint, @arethetypeswrong/cli), and the guard against `npm pack`.
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { publint } from 'publint';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { build, packAll, publishedPackages, ROOT, run } from './packages.js';

const REPO = 'https://github.com/icapkit/icapkit';
const packages = publishedPackages();
const scratch = mkdtempSync(join(tmpdir(), 'icapkit-tarballs-'));
let tarballs = new Map<string, string>();

function filesUnder(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? filesUnder(join(dir, e.name)) : [join(dir, e.name)],
  );
}

/** The unpacked tarball of a package: its `package/` folder. */
function unpacked(name: string): string {
  const dir = join(scratch, 'unpacked', name.replace('/', '+'));
  return join(dir, 'package');
}

beforeAll(async () => {
  await build();
  tarballs = await packAll(join(scratch, 'tarballs'));
  for (const [name, tarball] of tarballs) {
    const dir = join(scratch, 'unpacked', name.replace('/', '+'));
    mkdirSync(dir, { recursive: true });
    const result = await run('tar', ['-xzf', tarball, '-C', dir], { cwd: scratch, timeoutMs: 30_000 });
    if (result.code !== 0) throw new Error(`tar failed for ${tarball}: ${result.stderr}`);
  }
}, 300_000);

afterAll(() => {
  rmSync(scratch, { recursive: true, force: true });
});

it('finds the packages to check by listing packages/*', () => {
  expect(packages.map((p) => p.manifest.name)).toEqual(
    expect.arrayContaining([
      '@icapkit/core',
      '@icapkit/express',
      '@icapkit/fastify',
      '@icapkit/koa',
      '@icapkit/testing',
      '@icapkit/cli',
    ]),
  );
});

it('the repository has the MIT LICENSE', () => {
  expect(readFileSync(join(ROOT, 'LICENSE'), 'utf8')).toMatch(/^MIT License\n/);
});

describe.each(packages.map((p) => [p.manifest.name, p] as const))('%s tarball', (name, pkg) => {
  it('follows the package layout (node scripts/package-layout.mjs applies it)', async () => {
    const { applyLayout } = (await import(join(ROOT, 'scripts/package-layout.mjs'))) as {
      applyLayout: (dir: string, options: { check: boolean }) => string[];
    };
    expect(applyLayout(pkg.path, { check: true })).toEqual([]);
  });

  it('ships the MIT LICENSE, identical to the repository one', () => {
    const license = readFileSync(join(unpacked(name), 'LICENSE'), 'utf8');
    expect(license).toBe(readFileSync(join(ROOT, 'LICENSE'), 'utf8'));
  });

  it('has no build leftovers: no .tsbuildinfo, no source maps, no map comments, every file from a source', () => {
    const root = unpacked(name);
    const files = filesUnder(root).map((f) => relative(root, f));
    expect(files.filter((f) => /tsbuildinfo/.test(f))).toEqual([]);
    expect(files.filter((f) => f.endsWith('.map'))).toEqual([]);
    const withMapComment = files.filter(
      (f) => /\.(c|m)?(js|ts)$/.test(f) && readFileSync(join(root, f), 'utf8').includes('sourceMappingURL'),
    );
    expect(withMapComment).toEqual([]);
    // Every compiled file comes from a source that still exists (a renamed file's old output is not shipped).
    const orphans = files
      .filter((f) => f.startsWith('dist/') && /\.(d\.)?(c|m)?(js|ts)$/.test(f))
      .map((f) => f.slice('dist/'.length).replace(/(\.exports)?(\.d)?\.(c|m)?(js|ts)$/, ''))
      .filter(
        (stem) =>
          !filesUnder(join(pkg.path, 'src')).some((s) => relative(join(pkg.path, 'src'), s) === `${stem}.ts`),
      );
    expect(orphans).toEqual([]);
    expect(files.filter((f) => f.startsWith('src/') || f.startsWith('test/'))).toEqual([]);
  });

  it('has a package.json with versions instead of workspace: ranges, and the metadata npm shows', () => {
    const text = readFileSync(join(unpacked(name), 'package.json'), 'utf8');
    expect(text).not.toContain('workspace:');
    const manifest = JSON.parse(text);
    expect(manifest.license).toBe('MIT');
    expect(manifest.repository).toEqual({
      type: 'git',
      url: 'git+https://github.com/icapkit/icapkit.git',
      directory: `packages/${pkg.dir}`,
    });
    expect(manifest.homepage).toBe(`https://github.com/icapkit/icapkit/tree/main/packages/${pkg.dir}#readme`);
    expect(manifest.bugs).toEqual({ url: 'https://github.com/icapkit/icapkit/issues' });
    expect(manifest.keywords).toEqual(expect.arrayContaining(['icap']));
    expect(manifest.engines).toEqual({ node: '>=20.19' });
    expect(typeof manifest.sideEffects).toBe('boolean');
    expect(manifest.publishConfig).toEqual({ access: 'public' });
    // Both module systems, with their own typings, and the fields for tools that ignore `exports`.
    expect(manifest.exports['.']).toEqual({
      import: { types: './dist/index.d.ts', default: './dist/index.js' },
      require: { types: './dist/index.d.cts', default: './dist/index.cjs' },
    });
    expect(manifest.main).toBe('./dist/index.cjs');
    expect(manifest.types).toBe('./dist/index.d.cts');
    for (const dep of Object.keys(manifest.dependencies ?? {}).filter((d: string) =>
      d.startsWith('@icapkit/'),
    )) {
      expect(manifest.dependencies[dep]).toMatch(/^\^\d+\.\d+\.\d+$/);
    }
  });

  it('has a README that stands on its own on npm: install line, usage, absolute links', () => {
    const readme = readFileSync(join(unpacked(name), 'README.md'), 'utf8');
    expect(readme).toMatch(
      new RegExp(`npm install (--save-dev |-D |--global |-g )?${name.replace('/', '\\/')}(\\s|$)`),
    );
    expect(readme).toMatch(/```(js|ts|sh)/);
    // Relative links and images break on npmjs.com: every link is absolute or an anchor.
    const links = [...readme.matchAll(/\]\(([^)\s]+)[^)]*\)/g)].map((m) => m[1] as string);
    expect(links.filter((l) => !/^(https:\/\/|#|mailto:)/.test(l))).toEqual([]);
    // Links into the repository point at a heading of the root README or at a path that exists.
    const headings = new Set(
      readFileSync(join(ROOT, 'README.md'), 'utf8')
        .split('\n')
        .filter((l) => /^#{1,6} /.test(l))
        .map((l) =>
          l
            .replace(/^#+ /, '')
            .toLowerCase()
            .replace(/[^a-z0-9 _-]/g, '')
            .replace(/ /g, '-'),
        ),
    );
    headings.add('readme');
    const broken = links
      .filter((l) => l.startsWith(REPO))
      .filter((l) => {
        const rest = l.slice(REPO.length);
        if (rest.startsWith('#')) return !headings.has(rest.slice(1));
        const path = /^\/(?:tree|blob)\/main\/([^#]+)/.exec(rest)?.[1];
        return path === undefined || !existsSync(join(ROOT, path));
      });
    expect(broken).toEqual([]);
  });

  it('passes publint (strict, suggestions included)', async () => {
    const tarball = readFileSync(tarballs.get(name) as string);
    const ab = tarball.buffer.slice(
      tarball.byteOffset,
      tarball.byteOffset + tarball.byteLength,
    ) as ArrayBuffer;
    const { messages } = await publint({ pack: { tarball: ab }, level: 'suggestion', strict: true });
    expect(messages).toEqual([]);
  });

  it('passes @arethetypeswrong/cli: node10, node16 from CJS and ESM, bundler', async () => {
    const result = await run(
      join(ROOT, 'node_modules/.bin/attw'),
      [tarballs.get(name) as string, '--format', 'json'],
      {
        cwd: scratch,
        timeoutMs: 60_000,
      },
    );
    const report = JSON.parse(result.stdout) as { analysis: { problems?: unknown[] } };
    expect(report.analysis.problems ?? []).toEqual([]);
    expect(result.code).toBe(0);
  });
});

describe('the prepack guard', () => {
  it('npm pack in a package folder fails, naming pnpm pack, instead of shipping workspace: ranges', async () => {
    const express = packages.find((p) => p.dir === 'express');
    expect(express).toBeDefined();
    const dest = join(scratch, 'npm-pack');
    mkdirSync(dest, { recursive: true });
    const result = await run('npm', ['pack', '--pack-destination', dest], {
      cwd: (express as { path: string }).path,
      timeoutMs: 60_000,
    });
    expect(result.code).not.toBe(0);
    expect(result.stderr).toContain('@icapkit/core@workspace:^');
    expect(result.stderr).toContain('pnpm pack');
    expect(readdirSync(dest)).toEqual([]);
  });

  it('refuses a build with leftovers or without its entry points', async () => {
    const dir = join(scratch, 'fake-package');
    mkdirSync(join(dir, 'src'), { recursive: true });
    mkdirSync(join(dir, 'dist'), { recursive: true });
    writeFileSync(
      join(dir, 'package.json'),
      JSON.stringify({ name: '@icapkit/fake', main: './dist/index.cjs', types: './dist/index.d.cts' }),
    );
    writeFileSync(join(dir, 'src/index.ts'), 'export {};\n');
    writeFileSync(join(dir, 'dist/index.js'), 'export {};\n');
    writeFileSync(join(dir, 'dist/index.cjs'), '');
    writeFileSync(join(dir, 'dist/renamed.js'), 'export {};\n');
    const guard = join(ROOT, 'scripts/prepack.mjs');
    const env = { npm_config_user_agent: 'pnpm/10.34.9 npm/? node/v20 linux x64' };
    const bad = await run(process.execPath, [guard], { cwd: dir, timeoutMs: 30_000, env });
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain('dist/renamed.js has no source');
    expect(bad.stderr).toContain('./dist/index.d.cts is missing');
    rmSync(join(dir, 'dist/renamed.js'));
    writeFileSync(join(dir, 'dist/index.d.cts'), 'export {};\n');
    const good = await run(process.execPath, [guard], { cwd: dir, timeoutMs: 30_000, env });
    expect(good.stderr).toBe('');
    expect(good.code).toBe(0);
    expect(statSync(join(dir, 'dist/index.cjs')).isFile()).toBe(true);
  });
});
