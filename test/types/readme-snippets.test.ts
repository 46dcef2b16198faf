/**
 * Types a user can trust (issue 15, item 2): every ```js / ```ts block of the root README and
 * the package READMEs, the examples' servers, and the adapters' type tests
 * (adapter-types.ts, with its @ts-expect-error lines) compile under `tsc --strict` against
 * the workspace packages' sources, as an application would compile them (NodeNext, strict,
 * skipLibCheck).
 *
 * A block may be preceded by a directive comment:
 *   <!-- snippet: given app, profile -->   it continues an earlier block: declare these names
 *   <!-- snippet: skip <why> -->           not a program (counted below; keep it rare)
 */
import { readFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

const READMES = [
  'README.md',
  'packages/express/README.md',
  'packages/fastify/README.md',
  'packages/koa/README.md',
  'packages/core/README.md',
  'packages/testing/README.md',
  'packages/web/README.md',
  'packages/hono/README.md',
  'packages/nestjs/README.md',
];
const EXAMPLES = ['examples/express/server.js', 'examples/fastify/server.js', 'examples/koa/server.js'];
const TYPE_TESTS = ['test/types/adapter-types.ts'];

/** What `given` names declare (types only: an earlier block of the README made them). */
const GIVENS: Record<string, string> = {
  app: "declare const app: import('express').Express;",
  'koa-app': "declare const app: import('koa')<import('koa').DefaultState, import('koa').DefaultContext>;",
  fastify: "declare const fastify: import('fastify').FastifyInstance;",
  profile: "declare const profile: import('@icapkit/core').IcapProfile;",
  handler: "declare const handler: import('fastify').RouteHandlerMethod;",
  readsTheBody: "declare const readsTheBody: import('fastify').preParsingHookHandler;",
  server: "declare const server: import('@icapkit/testing').IcapTestServer;",
  release: 'declare const release: () => void;',
  AppModule: 'declare class AppModule {}',
  UploadController: 'declare class UploadController {}',
};

interface Snippet {
  file: string;
  /** 1-based line of the first code line in the README. */
  line: number;
  lang: string;
  code: string;
  given: string[];
  skip: string | undefined;
}

/** The fenced js/ts blocks of a Markdown file, with their directives. */
function snippets(file: string, text: string): Snippet[] {
  const lines = text.split('\n');
  const out: Snippet[] = [];
  for (let i = 0; i < lines.length; i++) {
    const open = /^```(js|javascript|ts|typescript|mjs)\s*$/.exec(lines[i]!);
    if (open === null) continue;
    let end = i + 1;
    while (end < lines.length && !/^```\s*$/.test(lines[end]!)) end++;
    let directive = '';
    for (let j = i - 1; j >= 0 && j >= i - 2; j--) {
      const m = /^<!--\s*snippet:\s*(.*?)\s*-->\s*$/.exec(lines[j]!);
      if (m !== null) {
        directive = m[1]!;
        break;
      }
      if (lines[j]!.trim() !== '') break;
    }
    const given = /^given\s+(.*)$/.exec(directive)?.[1]?.split(/\s*,\s*/) ?? [];
    const skip = /^skip\b\s*(.*)$/.exec(directive)?.[1];
    out.push({ file, line: i + 2, lang: open[1]!, code: lines.slice(i + 1, end).join('\n'), given, skip });
    i = end;
  }
  return out;
}

const options: ts.CompilerOptions = {
  strict: true,
  noEmit: true,
  // NestJS's parameter decorators (@UploadedFile(), @IcapResult()) are the legacy kind
  experimentalDecorators: true,
  skipLibCheck: true,
  target: ts.ScriptTarget.ES2022,
  lib: ['lib.es2023.d.ts'],
  module: ts.ModuleKind.NodeNext,
  moduleResolution: ts.ModuleResolutionKind.NodeNext,
  types: ['node'],
  allowJs: true,
  checkJs: true,
  baseUrl: root,
  paths: {
    '@icapkit/*': ['packages/*/src/index.ts'],
    // One fastify, as in an application: the workspace also has the copy that
    // @nestjs/platform-fastify pins, whose FastifyInstance lacks the plugins' augmentations.
    fastify: ['node_modules/fastify/fastify.d.ts'],
  },
};

interface Checked {
  /** Diagnostics in the snippets, examples and type tests, as `file:line: message`. */
  problems: string[];
  checked: number;
  skipped: Snippet[];
}

function check(): Checked {
  const virtual = new Map<string, { text: string; snippet: Snippet; offset: number }>();
  const skipped: Snippet[] = [];
  for (const readme of READMES) {
    for (const s of snippets(readme, readFileSync(join(root, readme), 'utf8'))) {
      if (s.skip !== undefined) {
        skipped.push(s);
        continue;
      }
      const unknown = s.given.filter((g) => GIVENS[g] === undefined);
      if (unknown.length > 0) throw new Error(`${readme}:${s.line}: unknown given ${unknown.join(', ')}`);
      const prelude = s.given.map((g) => GIVENS[g]!);
      const name = join(root, 'test/types/.snippets', `${readme.replace(/[/.]/g, '_')}_${s.line}.mts`);
      virtual.set(name, {
        text: `${[...prelude, s.code].join('\n')}\nexport {};\n`,
        snippet: s,
        offset: prelude.length,
      });
    }
  }
  const host = ts.createCompilerHost(options);
  const getSourceFile = host.getSourceFile.bind(host);
  host.getSourceFile = (fileName, languageVersion, ...rest) => {
    const v = virtual.get(fileName);
    if (v !== undefined) return ts.createSourceFile(fileName, v.text, languageVersion, true);
    return getSourceFile(fileName, languageVersion, ...rest);
  };
  const fileExists = host.fileExists.bind(host);
  host.fileExists = (f) => virtual.has(f) || fileExists(f);
  const readFile = host.readFile.bind(host);
  host.readFile = (f) => virtual.get(f)?.text ?? readFile(f);
  const own = [...EXAMPLES, ...TYPE_TESTS].map((f) => join(root, f));
  const program = ts.createProgram([...virtual.keys(), ...own], options, host);
  const problems: string[] = [];
  for (const d of ts.getPreEmitDiagnostics(program)) {
    const f = d.file?.fileName;
    const message = ts.flattenDiagnosticMessageText(d.messageText, '\n');
    if (f === undefined) {
      problems.push(`(global) ${message}`);
      continue;
    }
    const v = virtual.get(f);
    const line = d.start === undefined ? 0 : d.file!.getLineAndCharacterOfPosition(d.start).line;
    if (v !== undefined) problems.push(`${v.snippet.file}:${v.snippet.line + line - v.offset}: ${message}`);
    else if (own.includes(f)) problems.push(`${relative(root, f)}:${line + 1}: ${message}`);
  }
  return { problems, checked: virtual.size + own.length, skipped };
}

describe('README snippets, examples and adapter types', () => {
  it('compile under tsc --strict against the workspace packages', { timeout: 240_000 }, () => {
    const { problems, checked, skipped } = check();
    expect(problems).toEqual([]);
    expect(checked).toBeGreaterThan(15);
    // Blocks that are not programs: each one named here, so a new skip is a decision.
    expect(skipped.map((s) => `${s.file}:${s.line}`)).toEqual([]);
  });

  it('finds the blocks and reads the directives', () => {
    const md = [
      'text',
      '<!-- snippet: given app, profile -->',
      '```js',
      'app.use(x);',
      '```',
      '',
      '<!-- snippet: skip not a program -->',
      '',
      '```ts',
      'rules: [',
      '```',
      '```sh',
      'pnpm demo',
      '```',
    ].join('\n');
    expect(snippets('X.md', md)).toEqual([
      { file: 'X.md', line: 4, lang: 'js', code: 'app.use(x);', given: ['app', 'profile'], skip: undefined },
      { file: 'X.md', line: 10, lang: 'ts', code: 'rules: [', given: [], skip: 'not a program' },
    ]);
  });
});
