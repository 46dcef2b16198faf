import { compileRule, fail, foldsLowerCase, show } from './policy/compile.js';
import { pathReadings } from './policy/paths.js';
import {
  contentTypeMatches,
  contentTypeReadings,
  hostMatches,
  hostReadings,
  methodReadings,
} from './policy/readings.js';
import type {
  CompiledPolicy,
  CompiledRule,
  ContentTypeTest,
  EvalContext,
  PolicyDecision,
  PolicyRule,
} from './policy/types.js';
import { ANY, NO_BODY, NO_MATCH, NO_RULES, PATH_READINGS_LIMIT } from './policy/types.js';

/**
 * The HTTP security policy: named rules, evaluated in order, the first matching rule deciding
 * whether a request goes to ICAP ('enable-icap') or not ('skip'). The deciding rule's name
 * appears in the log.
 *
 * Bypass resistance. A request is not matched as one string but as every reading an
 * application behind the middleware might give it:
 * - the path raw, percent-decoded once and twice, with backslashes as slashes, dot segments
 *   (also `%2e`) resolved, repeated slashes collapsed, `;params` dropped, a trailing slash
 *   dropped, and combinations of these ({@link pathCandidates});
 * - for an absolute-form target, also the path from the first `/` after `scheme://` (older
 *   routers cut the authority there: `http://h?x/upload` is `/upload` to them);
 * - the method as received, as named by method-override headers and `_method` query
 *   parameters, and every method a rule names for a body parsed into fields (`_method`);
 * - the host from the Host field, `:authority`, `X-Forwarded-Host` (first and last entry) and
 *   an absolute-form target, each normalised and as sent; a host frameworks read differently
 *   reads as every host;
 * - every Content-Type field of the request, and what formidable reads it as (`/multipart/i`...).
 * The rule list runs once per reading and the request is scanned when ANY reading reaches an
 * 'enable-icap' rule: it is skipped only when every reading skips (or matches nothing). So a
 * request cannot dodge an 'enable-icap' rule, nor reach a 'skip' rule, by spelling its path or
 * method in a way the middleware and the application read differently.
 *
 * Everything is compiled once (lower-cased lists, RegExp objects, a BlockList per IP list);
 * the no-rules case is O(1), and a plain path (no `%`, `\`, `;`, `//`, dot segment or trailing
 * slash) is one reading.
 */

/*
 * Files: policy/types.ts (rule types, decisions, compiled form), policy/compile.ts (checks and
 * compiles each rule), policy/readings.ts (the readings of a request), policy/paths.ts (the
 * readings of its path).
 */

/** The case readings of a path: folded first (the skip a log names), then as sent. */
const BOTH_CASES: readonly boolean[] = [true, false];
const FOLDED: readonly boolean[] = [true];

export { pathCandidates, pathReadings } from './policy/paths.js';
export type {
  CompiledPolicy,
  HeaderCriterion,
  PolicyAction,
  PolicyDecision,
  PolicyRule,
  QueryCriterion,
  RequestFacts,
  RuleMatch,
  StringMatch,
} from './policy/types.js';
// ---------------------------------------------------------------------------------------------
// The policy

/**
 * Validates and compiles the rules; throws an INVALID_PROFILE IcapError naming the exact field
 * (under the `field` prefix) on the first problem.
 */
export function compilePolicy(rules: readonly PolicyRule[] | undefined, field = 'rules'): CompiledPolicy {
  if (rules !== undefined && !Array.isArray(rules))
    fail(field, `must be an array of rules (got ${show(rules)})`);
  const list: readonly PolicyRule[] = Object.freeze([...(rules ?? [])]);
  if (list.length === 0) {
    return { rules: list, evaluate: (facts) => (facts.hasBody ? NO_RULES : NO_BODY) };
  }

  const names = new Map<string, string>();
  const active: CompiledRule[] = [];
  for (let i = 0; i < list.length; i++) {
    const rule: unknown = list[i];
    const compiled = compileRule(rule, `${field}[${i}]`, names);
    if ((rule as PolicyRule).enabled !== false) active.push(compiled);
  }
  if (active.length === 0) return { rules: list, evaluate: () => NO_MATCH };

  // Which dimensions vary between readings, and what a reading of each can be reduced to.
  const knownMethods = new Set<string>();
  const knownTypes = new Set<string>();
  const knownMajors = new Set<string>();
  // A host no reading can pin down (hostReadings) reads as each of these: every exact host a
  // rule names, one name under each `*.domain` (a NUL before it: no listed name, and no longer
  // suffix, can match it) and no listed host at all. Any real host matches the same rules as
  // one of them, so the request is skipped only if each of them is.
  const everyHost: Array<string | undefined> = [undefined];
  let anyType = false;
  let usesPath = false;
  let usesHost = false;
  let usesType = false;
  let usesFixed = false;
  // Case folding is a reading of its own (campaign-bj BJ2): with a case-insensitive path rule,
  // each path is evaluated as sent and folded; a lower-case path only when some such rule
  // names an upper-case letter or a regex (else both readings agree).
  let foldsPath = false;
  let foldsLowerPath = false;
  for (let i = 0; i < list.length; i++) {
    const rule = list[i]!;
    const path = rule.enabled === false ? undefined : rule.match?.path;
    if (path === undefined || (typeof path !== 'string' && path.caseSensitive === true)) continue;
    foldsPath = true;
    if (foldsLowerCase(path)) foldsLowerPath = true;
  }
  for (const r of active) {
    if (r.methods !== undefined) for (const x of r.methods) knownMethods.add(x);
    if (r.path !== undefined) usesPath = true;
    if (r.host !== undefined) {
      usesHost = true;
      for (const h of r.host.exact) if (!everyHost.includes(h)) everyHost.push(h);
      for (const s of r.host.suffixes) if (!everyHost.includes(`\u0000${s}`)) everyHost.push(`\u0000${s}`);
    }
    if (r.fixed.length > 0) usesFixed = true;
    if (r.contentType !== undefined) {
      usesType = true;
      for (const x of r.contentType.exact) knownTypes.add(x);
      for (const x of r.contentType.majors) knownMajors.add(x);
      if (r.contentType.any) anyType = true;
    }
  }
  const usesMethod = knownMethods.size > 0;
  const anyScanRule = active.some((r) => r.scan);
  const types: ContentTypeTest = { exact: knownTypes, majors: knownMajors, any: anyType };

  return {
    rules: list,
    evaluate(facts) {
      const methods = usesMethod ? methodReadings(facts, knownMethods) : ANY;
      const read = usesPath ? pathReadings(facts.target) : undefined;
      const paths = read?.paths;
      const lowerPaths = paths?.map((p) => p.toLowerCase());
      const hosts = usesHost ? hostReadings(facts, everyHost) : ANY;
      const contentTypes = usesType ? contentTypeReadings(facts, types) : ANY;
      const ctx: EvalContext = { facts, query: undefined, queryOdd: undefined };
      // Results of each rule's fixed criteria: 0 not computed yet, 1 hold, 2 fail.
      const fixed = usesFixed ? new Uint8Array(active.length) : undefined;
      const pathCount = paths?.length ?? 1;
      let skip: PolicyDecision | undefined;

      for (const method of methods) {
        for (let p = 0; p < pathCount; p++) {
          const path = paths?.[p] ?? '';
          const lowerPath = lowerPaths?.[p] ?? '';
          const cases = foldsPath && (foldsLowerPath || path !== lowerPath) ? BOTH_CASES : FOLDED;
          for (const fold of cases)
            for (const host of hosts) {
              for (const type of contentTypes) {
                let i = 0;
                for (; i < active.length; i++) {
                  const r = active[i]!;
                  if (r.methods !== undefined && (method === undefined || !r.methods.has(method))) continue;
                  if (r.path !== undefined && !r.path(path, lowerPath, fold)) continue;
                  if (r.host !== undefined && !hostMatches(r.host, host)) continue;
                  if (r.contentType !== undefined && !contentTypeMatches(r.contentType, type)) continue;
                  if (fixed !== undefined && r.fixed.length > 0) {
                    if (fixed[i] === 0) fixed[i] = r.fixed.every((t) => t(ctx)) ? 1 : 2;
                    if (fixed[i] === 2) continue;
                  }
                  break;
                }
                const r = active[i];
                if (r === undefined) continue;
                if (r.scan) return r.decision;
                skip ??= r.decision;
              }
            }
        }
      }
      // Readings left out (a path written to have too many) may be the one that reaches an
      // 'enable-icap' rule: it is scanned rather than skipped on the readings that were made.
      if (read !== undefined && !read.complete && anyScanRule) return PATH_READINGS_LIMIT;
      return skip ?? NO_MATCH;
    },
  };
}
