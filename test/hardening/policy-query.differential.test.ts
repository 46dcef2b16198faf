/**
 * A skip rule's query criterion against the query parsers themselves, property-based and
 * without HTTP (the fast companion of policy-skip.differential.test.ts): wherever the policy
 * lets a criterion on `type` hold for a skip (the parameter there once with a value, or not
 * there at all), every parser an application behind icapkit may use must read `type` the same
 * way: qs as Express 4 calls it (and Express 5's 'extended' parser), node:querystring
 * (Express 5), URLSearchParams (Koa 3, Web handlers), fast-querystring (Fastify) and Hono's
 * `c.req.query()` / `c.req.queries()`.
 *
 * The queries are written from tokens that parsers split, decode or merge differently (names
 * with brackets and dots, `%` escapes valid and not, `+`, `?`, `;`, `=` and `&` runs,
 * prototype names). `ICAPKIT_POLICY_QUERY_RUNS` sets the number of queries (default 3000);
 * `ICAPKIT_FUZZ_SEED` replays one.
 */
import { createRequire } from 'node:module';
import { parse as parseQuerystring } from 'node:querystring';
import { compilePolicy, type PolicyRule } from '@icapkit/core';
import fc from 'fast-check';
import { Hono } from 'hono';
import { describe, expect, it } from 'vitest';
import { parseQuery } from '../../packages/core/src/engine/policy/readings.js';
import { Headers } from '../../packages/core/src/protocol/headers.js';
import { checkAsyncProperty, runsFromEnv } from '../fuzz/support.js';

const RUNS = runsFromEnv('ICAPKIT_POLICY_QUERY_RUNS', 3000);

// The parsers as the frameworks load them.
const qs = createRequire(createRequire(import.meta.url).resolve('express4/package.json'))('qs') as {
  parse(s: string, o: object): Record<string, unknown>;
};
/** Express 5's own qs, as its 'extended' query parser calls it. */
const qs5 = createRequire(createRequire(import.meta.url).resolve('express/package.json'))('qs') as typeof qs;
const fastQuerystring = createRequire(createRequire(import.meta.url).resolve('fastify/package.json'))(
  'fast-querystring',
) as { parse(s: string): Record<string, unknown> };

const hono = new Hono();
hono.get('*', (c) => c.json({ first: c.req.query('type') ?? null, all: c.req.queries('type') ?? null }));

const skipWhen = (criterion: NonNullable<PolicyRule['match']>['query']) =>
  compilePolicy([
    { name: 'skip', match: { query: criterion }, action: 'skip' },
    { name: 'scan', action: 'enable-icap' },
  ]);
/** Skips when `type` is there once, with any value. */
const skipAnyValue = skipWhen([{ name: 'type', value: { regex: ['^'] } }]);
/** Skips when `type` is not there. */
const skipAbsent = skipWhen([{ name: 'type', present: false }]);

const facts = (target: string) => ({
  method: 'POST',
  target,
  host: 'h',
  headers: new Headers({}),
  clientIp: '127.0.0.1',
  hasBody: true,
});

/** Every reading of `type`: one entry per parser, each the values it holds (a string each). */
async function readings(query: string): Promise<Record<string, unknown>> {
  const own = (o: Record<string, unknown>) => (Object.hasOwn(o, 'type') ? o.type : undefined);
  const url = new URLSearchParams(query);
  const res = await hono.request(`http://h/x?${query}`);
  const h = (await res.json()) as { first: string | null; all: string[] | null };
  return {
    qs: own(qs.parse(query, { allowPrototypes: true, arrayLimit: 1000 })),
    'qs (Express 5 extended)': own(qs5.parse(query, { allowPrototypes: true })),
    querystring: own(parseQuerystring(query)),
    URLSearchParams: url.has('type') ? url.getAll('type') : undefined,
    'fast-querystring': own(fastQuerystring.parse(query)),
    'hono query()': h.first ?? undefined,
    'hono queries()': h.all ?? undefined,
  };
}

const single = (v: unknown) => (Array.isArray(v) && v.length === 1 ? v[0] : v);

const TOKENS = [
  'type',
  'type',
  'type',
  'typ',
  'e',
  '=',
  '=',
  '&',
  '&',
  '[',
  ']',
  '.',
  '%',
  '%25',
  '%5B',
  '%5D',
  '%2E',
  '%3D',
  '%26',
  '%3F',
  '%C0',
  '%FF',
  '%E2%80%8B',
  '%74',
  '%65',
  '%2',
  '+',
  '?',
  ';',
  '#',
  'w',
  'webhook',
  '_',
  '0',
  '%00',
  '__proto__',
  'constructor',
  'toString',
  'hasOwnProperty',
  '%20',
  "'",
  '"',
  ',',
];
const queryArb = fc
  .oneof(
    fc.array(fc.constantFrom(...TOKENS), { maxLength: 12 }),
    // A type=value with tokens around it.
    fc
      .tuple(
        fc.array(fc.constantFrom(...TOKENS), { maxLength: 5 }),
        fc.array(fc.constantFrom(...TOKENS), { maxLength: 4 }),
        fc.array(fc.constantFrom(...TOKENS), { maxLength: 5 }),
      )
      .map(([before, value, after]) => [...before, '&', 'type', '=', ...value, '&', ...after]),
  )
  .map((tokens) => tokens.join(''));

describe('the query criterion of a skip rule', () => {
  it('holds only where every query parser reads `type` as the policy does', async () => {
    await checkAsyncProperty(
      'policy-query',
      fc.asyncProperty(queryArb, async (query) => {
        const target = `/x?${query}`;
        const anyValue = !skipAnyValue.evaluate(facts(target)).scan;
        const absent = !skipAbsent.evaluate(facts(target)).scan;
        if (!anyValue && !absent) return;
        // The parsers read the query up to a fragment (the policy skips no target with one).
        const read = await readings(query);
        if (anyValue) {
          const value = parseQuery(target).get('type')!;
          expect(value, query).toHaveLength(1);
          for (const [parser, v] of Object.entries(read))
            expect(single(v), `${parser} on ${JSON.stringify(query)}: ${JSON.stringify(read)}`).toBe(
              value[0],
            );
        } else {
          for (const [parser, v] of Object.entries(read))
            expect(v, `${parser} on ${JSON.stringify(query)}: ${JSON.stringify(read)}`).toBeUndefined();
        }
      }),
      RUNS,
    );
  }, 120_000);
});
