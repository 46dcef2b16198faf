// Installs the packed tarballs WITH npm into a fresh app outside the workspace (os.tmpdir()), as a
// user would, and runs Express 4 and 5, Fastify 5, Koa 2 and 3 apps written in ESM JS, CommonJS JS
// and strict TypeScript (six module settings) against @icapkit/testing's embedded ICAP server:
// a clean upload reaches the handler (200), the EICAR test file is blocked (403).
//
// The frameworks come from the npm registry (aliases: express4@npm:express@4 ...), installed with
// --prefer-offline so a second run uses npm's cache. Without the registry the test fails on CI
// (CI=true) and is skipped elsewhere, saying why.
import { cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { build, mapLimit, packAll, publishedPackages, ROOT, type RunResult, run } from './packages.js';

const FIXTURES = join(ROOT, 'test/packaging/fixtures');
const TSC = join(ROOT, 'node_modules/typescript/bin/tsc');
const CI = process.env.CI === 'true' || process.env.CI === '1';

/** Each framework major, installed under its own name; `base` is the fixture it is made from. */
const FRAMEWORKS = [
  {
    id: 'express4',
    base: 'express',
    from: 'express',
    spec: 'npm:express@^4.21.2',
    types: 'npm:@types/express@^4',
  },
  {
    id: 'express5',
    base: 'express',
    from: 'express',
    spec: 'npm:express@^5.1.0',
    types: 'npm:@types/express@^5',
  },
  { id: 'fastify5', base: 'fastify', from: 'fastify', spec: 'npm:fastify@^5.3.0', types: undefined },
  { id: 'koa2', base: 'koa', from: 'koa', spec: 'npm:koa@^2.16.1', types: 'npm:@types/koa@^2' },
  { id: 'koa3', base: 'koa', from: 'koa', spec: 'npm:koa@^3.0.0', types: 'npm:@types/koa@^3' },
] as const;

/**
 * TypeScript settings a user may have; `type` is the scratch folder's package.json type; `cts`:
 * also compile require.cts (`import x = require()`, which bundler mode does not allow).
 */
const TS_MODES = [
  {
    id: 'nodenext-esm',
    type: 'module',
    cts: true,
    options: { module: 'nodenext', moduleResolution: 'nodenext' },
  },
  {
    id: 'nodenext-cjs',
    type: 'commonjs',
    cts: true,
    options: { module: 'nodenext', moduleResolution: 'nodenext' },
  },
  { id: 'node16-esm', type: 'module', cts: true, options: { module: 'node16', moduleResolution: 'node16' } },
  {
    id: 'node16-cjs',
    type: 'commonjs',
    cts: true,
    options: { module: 'node16', moduleResolution: 'node16' },
  },
  { id: 'bundler', type: 'module', cts: false, options: { module: 'esnext', moduleResolution: 'bundler' } },
  {
    id: 'commonjs-node10',
    type: 'commonjs',
    cts: true,
    options: { module: 'commonjs', moduleResolution: 'node10' },
  },
] as const;

const published = publishedPackages().map((p) => p.manifest.name);
const scratch = mkdtempSync(join(tmpdir(), 'icapkit-install-'));
const app = join(scratch, 'app');
let installed: RunResult | undefined;
/** tsc per module setting, started once npm install is done, two at a time (2 cores). */
const compiled = new Map<string, Promise<RunResult>>();
let unreachable = '';

/** A fixture with its framework import renamed to the installed alias (`from 'express'` -> `'express4'`). */
function fixture(file: string, framework: (typeof FRAMEWORKS)[number]): string {
  const text = readFileSync(join(FIXTURES, file), 'utf8');
  const renamed = text.replace(
    new RegExp(`(from |require\\()'${framework.from}'`, 'g'),
    (_m, lead: string) => `${lead}'${framework.id}'`,
  );
  if (renamed === text) throw new Error(`${file} does not import '${framework.from}'`);
  return renamed;
}

function writeJson(path: string, value: unknown): void {
  writeFileSync(path, `${JSON.stringify(value, null, 2)}\n`);
}

beforeAll(async () => {
  await build();
  const tarballs = await packAll(join(scratch, 'tarballs'));
  mkdirSync(app, { recursive: true });
  const dependencies: Record<string, string> = { '@types/node': '^20.19.0' };
  for (const [name, tarball] of tarballs) dependencies[name] = `file:${tarball}`;
  for (const f of FRAMEWORKS) {
    dependencies[f.id] = f.spec;
    if (f.types) dependencies[`@types/${f.id}`] = f.types;
  }
  // fastify 5's light-my-request >= 6.7 needs cookie 2 (Node >= 22): the same pin as the workspace's.
  const overrides = { 'light-my-request': '6.6.0' };
  writeJson(join(app, 'package.json'), {
    name: 'icapkit-packaging-app',
    private: true,
    dependencies,
    overrides,
  });
  installed = await run(
    'npm',
    [
      'install',
      '--engine-strict',
      '--prefer-offline',
      '--no-audit',
      '--no-fund',
      '--loglevel=error',
      '--fetch-timeout=60000',
    ],
    { cwd: app, timeoutMs: 240_000 },
  );
  if (
    installed.code !== 0 &&
    /E(NOTFOUND|AI_AGAIN|CONNREFUSED|CONNRESET|TIMEDOUT|NETUNREACH)|network/i.test(installed.stderr)
  ) {
    unreachable = installed.stderr.split('\n').slice(0, 5).join('\n');
  }

  // The JavaScript apps: one file per framework major and module system.
  for (const format of ['esm', 'cjs'] as const) {
    const ext = format === 'esm' ? 'mjs' : 'cjs';
    const dir = join(app, format);
    mkdirSync(dir, { recursive: true });
    cpSync(join(FIXTURES, format, `harness.${ext}`), join(dir, `harness.${ext}`));
    for (const f of FRAMEWORKS)
      writeFileSync(join(dir, `${f.id}.${ext}`), fixture(`${format}/${f.base}.${ext}`, f));
  }
  // The TypeScript apps: the same sources under each module setting, in an ESM or a CommonJS folder.
  for (const mode of TS_MODES) {
    const dir = join(app, `ts-${mode.id}`);
    mkdirSync(join(dir, 'src'), { recursive: true });
    writeJson(join(dir, 'package.json'), { private: true, type: mode.type });
    writeJson(join(dir, 'tsconfig.json'), {
      compilerOptions: {
        ...mode.options,
        target: 'es2022',
        lib: ['es2023'],
        types: ['node'],
        strict: true,
        esModuleInterop: true,
        // Our declarations are checked too, as in a project that does not skip them.
        skipLibCheck: false,
        rootDir: 'src',
        outDir: 'out',
      },
      include: ['src'],
    });
    cpSync(join(FIXTURES, 'ts/harness.ts'), join(dir, 'src/harness.ts'));
    for (const f of FRAMEWORKS) writeFileSync(join(dir, `src/${f.id}.ts`), fixture(`ts/${f.base}.ts`, f));
    if (mode.cts) cpSync(join(FIXTURES, 'ts/require.cts'), join(dir, 'src/require.cts'));
  }
  if (installed.code === 0) {
    const pending = mapLimit(TS_MODES, 2, (mode) => {
      const dir = join(app, `ts-${mode.id}`);
      return run(process.execPath, [TSC, '-p', dir], { cwd: dir, timeoutMs: 180_000 });
    });
    TS_MODES.forEach((mode, index) => {
      compiled.set(
        mode.id,
        pending.then((results) => results[index] as RunResult),
      );
    });
  }
}, 420_000);

afterAll(() => {
  rmSync(scratch, { recursive: true, force: true });
});

/** Stops here when npm could not reach the registry: a failure on CI, a skip elsewhere. */
function requireInstall(ctx: { skip: (note?: string) => void }): void {
  if (installed === undefined) throw new Error('npm install did not run');
  if (installed.code !== 0 && unreachable !== '' && !CI) {
    ctx.skip(`npm cannot reach the registry (set CI=true to make this a failure):\n${unreachable}`);
  }
  if (installed.code !== 0) {
    throw new Error(
      `npm install of the tarballs failed (exit ${installed.code}):\n${installed.stderr.slice(-4000)}`,
    );
  }
}

interface AppReport {
  name: string;
  clean: { status: number; body: string };
  blocked: { status: number; body: string };
  oneInstance?: boolean;
}

async function runApp(file: string): Promise<AppReport> {
  const result = await run(process.execPath, [file], { cwd: app, timeoutMs: 30_000 });
  const line = result.stdout.trim().split('\n').at(-1) ?? '';
  if (result.code !== 0 || !line.startsWith('{')) {
    throw new Error(`${file} failed (exit ${result.code}):\n${result.stdout}\n${result.stderr}`);
  }
  return JSON.parse(line) as AppReport;
}

function expectScanned(report: AppReport): void {
  expect(report.clean.status, report.clean.body).toBe(200);
  expect(report.clean.body).toMatch(/^ok ICAP_/);
  expect(report.blocked.status, report.blocked.body).toBe(403);
}

it('npm installs the packed tarballs and the frameworks into an app outside the workspace', {
  timeout: 10_000,
}, (ctx) => {
  requireInstall(ctx);
  const names = readdirSync(join(app, 'node_modules/@icapkit')).map((d) => `@icapkit/${d}`);
  expect(names.sort()).toEqual(published.sort());
  // npm resolved the adapters' dependency on @icapkit/core to the packed core, not the registry.
  const lock = readFileSync(join(app, 'package-lock.json'), 'utf8');
  expect(lock).not.toContain('registry.npmjs.org/@icapkit');
});

it('the CLI runs from the installed package (npx icapkit --help)', { timeout: 60_000 }, async (ctx) => {
  requireInstall(ctx);
  const result = await run('npx', ['--no-install', 'icapkit', '--help'], { cwd: app, timeoutMs: 30_000 });
  // npm may warn about its own configuration; the command itself prints nothing on stderr.
  expect(result.stderr.split('\n').filter((l) => l !== '' && !l.startsWith('npm warn'))).toEqual([]);
  expect(result.stdout).toContain('icapkit scan');
  expect(result.code).toBe(0);
});

describe.each(['esm', 'cjs'] as const)('%s JavaScript apps', (format) => {
  it.each(FRAMEWORKS.map((f) => f.id))(
    '%s: a clean upload passes, EICAR is blocked',
    { timeout: 60_000 },
    async (id, ctx) => {
      requireInstall(ctx);
      const report = await runApp(join(app, format, `${id}.${format === 'esm' ? 'mjs' : 'cjs'}`));
      expectScanned(report);
      // A CommonJS app that require()s and import()s @icapkit/core gets one instance (instanceof holds).
      if (format === 'cjs') expect(report.oneInstance).toBe(true);
    },
  );
});

describe.each(TS_MODES.map((m) => [m.id, m] as const))('TypeScript --strict, %s', (id, mode) => {
  it('compiles every app (our declarations included) and each one scans', {
    timeout: 240_000,
  }, async (ctx) => {
    requireInstall(ctx);
    const dir = join(app, `ts-${id}`);
    const result = await compiled.get(id);
    expect(result).toBeDefined();
    expect((result as RunResult).stdout + (result as RunResult).stderr).toBe('');
    expect((result as RunResult).code).toBe(0);
    const reports = await mapLimit(FRAMEWORKS, 2, (f) => runApp(join(dir, 'out', `${f.id}.js`)));
    for (const report of reports) expectScanned(report);
    expect(
      mode.type === 'module' || readFileSync(join(dir, 'out/express4.js'), 'utf8').includes('require('),
    ).toBe(true);
    if (mode.cts) {
      const required = await run(process.execPath, [join(dir, 'out/require.cjs')], {
        cwd: dir,
        timeoutMs: 30_000,
      });
      expect(required.stderr).toBe('');
      expect(JSON.parse(required.stdout)).toEqual({
        express: 'function',
        koa: 'function',
        fastify: 'function',
        sameFunction: true,
        routeError: true,
        isIcapError: true,
        eicar: true,
        cli: 'function',
      });
    }
  });
});
