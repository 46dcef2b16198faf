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
    // Memory tests measure live memory: they collect garbage while sampling.
    execArgv: ['--expose-gc'],
    // .ci/run asks for a JSON report too, to print its "N passed, N failed" line.
    reporters: process.env.ICAPKIT_JSON_REPORT
      ? ['default', ['json', { outputFile: process.env.ICAPKIT_JSON_REPORT }]]
      : ['default'],
  },
});
