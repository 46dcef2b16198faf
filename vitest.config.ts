import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

const src = (pkg: string) => fileURLToPath(new URL(`./packages/${pkg}/src/index.ts`, import.meta.url));

// Tests run against the TypeScript sources of the workspace packages, so a change is
// tested without a build; `pnpm test` still builds first to type-check and emit .d.ts.
export const alias = {
  '@icapkit/core': src('core'),
  '@icapkit/testing': src('testing'),
  '@icapkit/express': src('express'),
  '@icapkit/fastify': src('fastify'),
  '@icapkit/koa': src('koa'),
  '@icapkit/nestjs': src('nestjs'),
  '@icapkit/cli': src('cli'),
  '@icapkit/web': src('web'),
  '@icapkit/hono': src('hono'),
};

export default defineConfig({
  resolve: { alias },
  test: {
    include: [
      'packages/*/test/**/*.test.ts',
      'test/**/*.test.ts',
      'examples/*/test/**/*.test.ts',
      'bench/test/**/*.test.ts',
    ],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    pool: 'forks',
    // At least two files at a time (vitest's own default is one fewer than the cores: one on a
    // 2-core machine): the slowest files mostly wait on servers' timers (idle bounds, the short
    // waits after an answer), not on the CPU. On 2 cores: 12 minutes instead of 21. Every test
    // waits with a deadline, so a second file beside it is one more kind of busy machine
    // (scripts/ci-under-load.sh adds a CPU burner on top). `vitest run --maxWorkers=1`: one at a time.
    maxWorkers: Math.max(2, availableParallelism() - 1),
    // Memory tests measure live memory: they collect garbage while sampling.
    execArgv: ['--expose-gc'],
    // .ci/run asks for a JSON report too, to print its "N passed, N failed" line.
    reporters: process.env.ICAPKIT_JSON_REPORT
      ? ['default', ['json', { outputFile: process.env.ICAPKIT_JSON_REPORT }]]
      : ['default'],
  },
});
