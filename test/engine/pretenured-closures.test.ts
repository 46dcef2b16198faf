/**
 * V8 allocates a function literal written straight into a property (`obj.x = () => …`,
 * `this.#x = function …`) in the old generation: the parser takes it for a method, likely to
 * live long. Made per request, such a closure keeps its context, and through it the request's
 * objects, alive across every scavenge until the next mark-compact; V8 then sees the request's
 * allocation sites survive and tenures them for good (bench/README.md, thirty-third round: one in
 * ReplayPass's constructor made every scan's objects survive, 2 MB promoted per scavenge, −59 k
 * instructions per request once gone). Per-request code makes the closure through a local or a
 * call (`disposeOnce`). The places listed run once per engine or server, not per request.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const PACKAGES = join(dirname(fileURLToPath(import.meta.url)), '../../packages');

/** Once per engine, server or application (set-up), never per request. */
const ONCE: Record<string, number> = {
  'core/src/engine/telemetry.ts': 4,
  'core/src/engine/engine.ts': 1,
  'nestjs/src/middleware-layers.ts': 1,
};

/** A function literal assigned to a member: `a.b = (…) =>`, `a[k] = x =>`, `this.#c = function`. */
const ASSIGNED =
  /(?:\.[#\w$]+|\[[^\]]+\])\s*=\s*(?:async\s+)?(?:function\b|\([^()]*\)\s*(?::[^=]+)?=>|[\w$]+\s*=>)/g;

function sources(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) {
      if (e.name !== 'node_modules' && e.name !== 'dist') out.push(...sources(p));
    } else if (e.name.endsWith('.ts') && !e.name.endsWith('.d.ts')) out.push(p);
  }
  return out;
}

function count(text: string): number {
  const code = text.replace(/\/\*[\s\S]*?\*\//g, '').replace(/^\s*\/\/.*$/gm, '');
  return [...code.matchAll(ASSIGNED)].length;
}

describe('no closure written straight into a property on the request path', () => {
  it('the pattern finds the forms V8 pretenures, and not a closure through a local', () => {
    expect(count('this.dispose = () => {\n  free();\n};')).toBe(1);
    expect(count('outcome.dispose = function () {};')).toBe(1);
    expect(count('this.#onEnd = (err: Error): void => {};')).toBe(1);
    expect(count('x[KEY] = async (a, b) => a;')).toBe(1);
    expect(count('a.b = c => c;')).toBe(1);
    expect(count('const both = () => {};\noutcome.dispose = both;')).toBe(0);
    expect(count('this.dispose = disposeOnce(free);')).toBe(0);
    expect(count('a.b = c;\nif (a.b === (() => 1)) {}')).toBe(0);
    expect(count('function f(values: (d: D) => string[] = (d) => d) {}')).toBe(0);
  });

  it('in packages/*/src (testing, cli and the analytics page aside) only set-up code does it', () => {
    const found: Record<string, number> = {};
    for (const pkg of readdirSync(PACKAGES)) {
      if (pkg === 'testing' || pkg === 'cli') continue;
      const src = join(PACKAGES, pkg, 'src');
      let files: string[];
      try {
        files = sources(src);
      } catch {
        continue;
      }
      for (const file of files) {
        const name = relative(PACKAGES, file).split('\\').join('/');
        if (name === 'core/src/analytics/page.ts') continue;
        const n = count(readFileSync(file, 'utf8'));
        if (n > 0) found[name] = n;
      }
    }
    expect(found).toEqual(ONCE);
  });
});
