/**
 * The shape of packages/core/src, read from its import lines: no import cycles (type-only
 * imports count too), layers that only point down (errors <- protocol <- client <- engine), and
 * no source file over 600 lines.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, posix, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const SRC = join(dirname(fileURLToPath(import.meta.url)), '../../packages/core/src');
const MAX_LINES = 600;

/** The analytics page is one HTML/CSS/JS template; its header comment says it is the exception. */
const LENGTH_EXCEPTIONS = ['analytics/page.ts'];

type Graph = Map<string, string[]>;

function sourceFiles(dir: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...sourceFiles(path));
    else if (entry.name.endsWith('.ts') && !entry.name.endsWith('.d.ts')) out.push(path);
  }
  return out;
}

/** Relative module specifiers of `import ... from`, `export ... from`, `import '...'` and `import('...')`. */
function importSpecifiers(text: string): string[] {
  const code = text.replace(/\/\*[\s\S]*?\*\//g, '').replace(/^\s*\/\/.*$/gm, '');
  const specs: string[] = [];
  const patterns = [
    /(?:^|[\s;])(?:import|export)\s[^'";]*?\sfrom\s*['"]([^'"]+)['"]/g,
    /(?:^|[\s;])import\s*['"]([^'"]+)['"]/g,
    /\bimport\s*\(\s*['"]([^'"]+)['"]\s*\)/g,
  ];
  for (const re of patterns) for (const m of code.matchAll(re)) specs.push(m[1]!);
  return specs.filter((s) => s.startsWith('.'));
}

function buildGraph(): Graph {
  const graph: Graph = new Map();
  for (const file of sourceFiles(SRC)) {
    const from = relative(SRC, file).split('\\').join('/');
    const targets = importSpecifiers(readFileSync(file, 'utf8')).map((spec) =>
      posix.normalize(posix.join(posix.dirname(from), spec)).replace(/\.js$/, '.ts'),
    );
    graph.set(from, [...new Set(targets)].sort());
  }
  return graph;
}

/** Cycles found by a depth-first search (at least one whenever there is any), each as a path `a -> b -> a`. */
function findCycles(graph: Graph): string[][] {
  const cycles: string[][] = [];
  const seen = new Set<string>();
  const state = new Map<string, 'open' | 'done'>();
  const stack: string[] = [];
  const visit = (node: string): void => {
    state.set(node, 'open');
    stack.push(node);
    for (const next of graph.get(node) ?? []) {
      if (!graph.has(next)) continue;
      const s = state.get(next);
      if (s === 'open') {
        const cycle = [...stack.slice(stack.indexOf(next)), next];
        const key = [...cycle.slice(0, -1)].sort().join('|');
        if (!seen.has(key)) {
          seen.add(key);
          cycles.push(cycle);
        }
      } else if (s === undefined) visit(next);
    }
    stack.pop();
    state.set(node, 'done');
  };
  for (const node of [...graph.keys()].sort()) if (!state.has(node)) visit(node);
  return cycles;
}

const graph = buildGraph();
/** [file, import] pairs breaking a layer rule: files under `from` may import only what `allowed` accepts. */
function violations(from: (file: string) => boolean, allowed: (target: string) => boolean): string[] {
  const out: string[] = [];
  for (const [file, targets] of graph)
    if (from(file)) for (const t of targets) if (!allowed(t)) out.push(`${file} -> ${t}`);
  return out;
}

describe('packages/core/src architecture', () => {
  it('the import parser sees import, export-from, side-effect and dynamic imports, and no comments', () => {
    const text = [
      "import { a } from './a.js';",
      "import type {\n  B,\n  C,\n} from '../b.js';",
      "export * from './c.js';",
      "export { d } from './d.js';",
      "import './e.js';",
      "type F = import('./f.js').F;",
      "// import { g } from './g.js';",
      "/* export * from './h.js'; */",
      "import { readFileSync } from 'node:fs';",
    ].join('\n');
    expect(importSpecifiers(text).sort()).toEqual([
      '../b.js',
      './a.js',
      './c.js',
      './d.js',
      './e.js',
      './f.js',
    ]);
    expect(graph.size).toBeGreaterThan(30);
    expect(graph.get('index.ts')).toContain('errors.ts');
  });

  it('the cycle finder reports the path of a cycle', () => {
    const g: Graph = new Map([
      ['a.ts', ['b.ts']],
      ['b.ts', ['c.ts']],
      ['c.ts', ['a.ts']],
      ['d.ts', ['a.ts']],
    ]);
    expect(findCycles(g)).toEqual([['a.ts', 'b.ts', 'c.ts', 'a.ts']]);
  });

  it('has no import cycles', () => {
    const cycles = findCycles(graph);
    expect(
      cycles.map((c) => c.join(' -> ')),
      'import cycles',
    ).toEqual([]);
  });

  it('errors.ts and light-signal.ts import nothing from the package', () => {
    expect(graph.get('errors.ts')).toEqual([]);
    expect(graph.get('light-signal.ts')).toEqual([]);
  });

  it('protocol/ imports only errors.ts and itself', () => {
    const bad = violations(
      (f) => f.startsWith('protocol/'),
      (t) => t === 'errors.ts' || t.startsWith('protocol/'),
    );
    expect(bad, 'protocol/ imports from above').toEqual([]);
  });

  it('client/ imports only errors.ts, light-signal.ts, protocol/ and itself', () => {
    const bad = violations(
      (f) => f.startsWith('client/'),
      (t) =>
        t === 'errors.ts' || t === 'light-signal.ts' || t.startsWith('protocol/') || t.startsWith('client/'),
    );
    expect(bad, 'client/ imports from above').toEqual([]);
  });

  it('engine/ imports nothing from node/, analytics/ or the package index', () => {
    const bad = violations(
      (f) => f.startsWith('engine/'),
      (t) => !t.startsWith('node/') && !t.startsWith('analytics/') && t !== 'index.ts',
    );
    expect(bad, 'engine/ imports from above').toEqual([]);
  });

  it('the verdict readers (engine/verdict/) import only protocol/ and each other', () => {
    const bad = violations(
      (f) => f.startsWith('engine/verdict/'),
      (t) => t.startsWith('protocol/') || t.startsWith('engine/verdict/'),
    );
    expect(bad, 'engine/verdict/ imports').toEqual([]);
  });

  it('node/ imports only errors.ts, light-signal.ts and itself; only index.ts imports analytics/; nothing imports index.ts', () => {
    const node = violations(
      (f) => f.startsWith('node/'),
      (t) => t === 'errors.ts' || t === 'light-signal.ts' || t.startsWith('node/'),
    );
    expect(node, 'node/ imports from above').toEqual([]);
    const analytics = violations(
      (f) => f !== 'index.ts' && !f.startsWith('analytics/'),
      (t) => !t.startsWith('analytics/'),
    );
    expect(analytics, 'imports of analytics/').toEqual([]);
    expect(
      violations(
        () => true,
        (t) => t !== 'index.ts',
      ),
      'imports of the package index',
    ).toEqual([]);
  });

  it(`no source file is over ${MAX_LINES} lines (analytics/page.ts is the one exception)`, () => {
    const long: string[] = [];
    for (const file of graph.keys()) {
      if (LENGTH_EXCEPTIONS.includes(file)) continue;
      const lines = readFileSync(join(SRC, file), 'utf8').split('\n').length - 1;
      if (lines > MAX_LINES) long.push(`${file}: ${lines} lines`);
    }
    expect(long, 'files over the limit').toEqual([]);
    for (const file of LENGTH_EXCEPTIONS)
      expect(/\/\*\*[\s\S]*?\*\//.exec(readFileSync(join(SRC, file), 'utf8'))?.[0], `${file} header`).toMatch(
        /exception to the 600-line limit/,
      );
  });
});
