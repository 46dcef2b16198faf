/** The policy's rule types (what a profile writes), its decisions, and their compiled form. */

import type { Headers } from '../../protocol/headers.js';

export interface RequestFacts {
  /** As received, e.g. 'POST'. */
  method: string;
  /** Raw request target: origin-form `/p?q` or absolute-form `http://h/p`. */
  target: string;
  /** Host header or HTTP/2 :authority, possibly with a port. */
  host: string | undefined;
  headers: Headers;
  /** IPv4, IPv6 or IPv4-mapped IPv6. */
  clientIp: string | undefined;
  hasBody: boolean;
}

export type PolicyAction = 'enable-icap' | 'skip';

/** A text test: matches when any entry of any list matches (OR); `negate` inverts the result. */
export interface StringMatch {
  exact?: readonly string[] | undefined;
  prefix?: readonly string[] | undefined;
  suffix?: readonly string[] | undefined;
  contains?: readonly string[] | undefined;
  /** JavaScript regular expressions, unanchored (use ^ and $), at most 1000 characters each. */
  regex?: readonly string[] | undefined;
  /**
   * Default false. False: the entries match a value in any case for an `enable-icap` rule,
   * but a `skip` rule skips a path only when it matches as sent too (the entries as written,
   * regexes without `i`): case folding is one more reading beside the path as sent, and a
   * request is skipped only when every reading skips, because case-sensitive routers (Fastify,
   * Hono) send `/WEBHOOKS/x` elsewhere than `/webhooks/x`. A header or query value: any case
   * for an `enable-icap` rule; as sent for a `skip` rule, which needs the field or parameter
   * to occur once (`type[]` counting as `type`). True: every reading compares as written. (A `skip` rule's path
   * `prefix` matches whole segments: `/webhooks` is not `/webhooksx`.)
   */
  caseSensitive?: boolean | undefined;
  /** Inverts the match. */
  negate?: boolean | undefined;
}

/** A header field or query parameter criterion. */
export interface HeaderCriterion {
  /** Header field name (case-insensitive) or query parameter name (exact, after decoding). */
  name: string;
  /** true: it must be there; false: it must not be there. */
  present?: boolean | undefined;
  /** Some value must match; a string is an exact (case-insensitive) match. Implies presence. */
  value?: StringMatch | string | undefined;
}

export type QueryCriterion = HeaderCriterion;

/** Every criterion given must hold (AND); within a list any entry may hold (OR). */
export interface RuleMatch {
  /**
   * Methods, case-insensitive; also matched against method-override headers, `_method` query
   * parameters, and (a body parsed into fields: json, urlencoded, multipart) every listed method.
   */
  method?: readonly string[] | undefined;
  /** A string is a prefix match: `'/upload'` is `{ prefix: ['/upload'] }`. */
  path?: StringMatch | string | undefined;
  /**
   * Exact host names (no port); `*.example.com` matches subdomains. Read from Host,
   * `:authority`, X-Forwarded-Host (first and last) and an absolute-form target, each both
   * normalised (lower case, no port or trailing dot) and as sent: an `enable-icap` rule matches
   * the host in any case, with any port; a `skip` rule skips only a host written as it names it
   * (lower case, no port, no trailing dot), since host routing may compare the field as sent.
   */
  host?: readonly string[] | undefined;
  headers?: readonly HeaderCriterion[] | undefined;
  /** Media types without parameters, case-insensitive; `image/*` and `*∕*` wildcards. */
  contentType?: readonly string[] | undefined;
  query?: readonly QueryCriterion[] | undefined;
  /** IPs and CIDRs, IPv4 and IPv6; IPv4-mapped IPv6 clients match IPv4 entries. */
  clientIp?: readonly string[] | undefined;
}

export interface PolicyRule {
  /** Required, unique; appears in the log. */
  name: string;
  /** Default true. A disabled rule is still validated. */
  enabled?: boolean | undefined;
  /** Absent: matches every request. */
  match?: RuleMatch | undefined;
  action: PolicyAction;
}

export interface PolicyDecision {
  scan: boolean;
  /** Name of the deciding rule. */
  rule: string | undefined;
  /**
   * `path-readings-limit`: the path has more readings than are made per request (a client wrote
   * it so), so the ones left out cannot be ruled out: scanned, as if an 'enable-icap' rule matched.
   */
  reason: 'rule' | 'no-rule-matched' | 'no-rules' | 'no-body' | 'path-readings-limit';
}

export interface CompiledPolicy {
  readonly rules: readonly PolicyRule[];
  evaluate(facts: RequestFacts): PolicyDecision;
}

export const METHOD_OVERRIDE_HEADERS = [
  'x-http-method-override',
  'x-http-method',
  'x-method-override',
] as const;
/** The query parameter (and form field) method-override's documented getter reads (`?_method=PUT`). */
export const METHOD_OVERRIDE_PARAM = '_method';
export const RULE_KEYS = ['name', 'enabled', 'match', 'action'] as const;
export const MATCH_KEYS = ['method', 'path', 'host', 'headers', 'contentType', 'query', 'clientIp'] as const;
export const STRING_MATCH_LISTS = ['exact', 'prefix', 'suffix', 'contains', 'regex'] as const;
export const STRING_MATCH_KEYS = [...STRING_MATCH_LISTS, 'caseSensitive', 'negate'] as const;
export const CRITERION_KEYS = ['name', 'present', 'value'] as const;
export const MAX_REGEX_LENGTH = 1000;
/** Upper bound on the path readings expanded per request (a normal path has 1, an odd one a few). */
export const MAX_PATH_STATES = 256;
/** Upper bound on the characters of those readings (the work per request is a few passes over them). */
export const PATH_READING_BUDGET = 64 * 1024;
/** RFC 9110 token. */
export const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
export const MEDIA_PART = "[a-z0-9!#$&^_.+'`|~-]+";
export const MEDIA_TYPE = new RegExp(`^(?:\\*/\\*|${MEDIA_PART}/(?:\\*|${MEDIA_PART}))$`);
export const HOST_LABELS = /^[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?)*$/;

export const NO_RULES: PolicyDecision = Object.freeze({ scan: true, rule: undefined, reason: 'no-rules' });
export const NO_BODY: PolicyDecision = Object.freeze({ scan: false, rule: undefined, reason: 'no-body' });
export const PATH_READINGS_LIMIT: PolicyDecision = Object.freeze({
  scan: true,
  rule: undefined,
  reason: 'path-readings-limit',
});
export const NO_MATCH: PolicyDecision = Object.freeze({
  scan: false,
  rule: undefined,
  reason: 'no-rule-matched',
});
/** The single reading of a dimension no rule looks at. */
export const ANY: readonly [undefined] = [undefined];

// ---------------------------------------------------------------------------------------------
// Compiled form

/**
 * A compiled text test; `lower` is `value.toLowerCase()`, computed once by the caller. `fold`:
 * the folded reading, where a case-insensitive match compares `lower` with its lower-cased
 * entries (and its regexes with the `i` flag); otherwise (the as-sent reading) every match
 * compares `value` with its entries as written.
 */
export type TextTest = (value: string, lower: string, fold: boolean) => boolean;

export interface EvalContext {
  readonly facts: RequestFacts;
  /** The query as each parser reads it (readings.ts queryReadingsOf); undefined: not read yet. */
  query: ReadonlyArray<Map<string, string[]>> | undefined;
  /** Query names a skip rule cannot vouch for (readings.ts queryOddOf); null: none; undefined: not read yet. */
  queryOdd?: ReadonlySet<string> | null | undefined;
}

/** The criteria that do not vary between readings (headers, query, client IP). */
export type FixedTest = (ctx: EvalContext) => boolean;

export interface ContentTypeTest {
  exact: ReadonlySet<string>;
  /** Major types of `major/*` entries. */
  majors: ReadonlySet<string>;
  /** `*∕*`: any content type present. */
  any: boolean;
}

export interface HostTest {
  exact: ReadonlySet<string>;
  /** `.example.com` for `*.example.com`. */
  suffixes: readonly string[];
}

export interface CompiledRule {
  readonly name: string;
  readonly scan: boolean;
  readonly decision: PolicyDecision;
  readonly methods: ReadonlySet<string> | undefined;
  readonly path: TextTest | undefined;
  readonly host: HostTest | undefined;
  readonly contentType: ContentTypeTest | undefined;
  readonly fixed: readonly FixedTest[];
}
