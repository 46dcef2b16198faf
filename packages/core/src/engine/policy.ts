import { isUtf8 } from 'node:buffer';
import { BlockList, isIP } from 'node:net';
import { IcapError, IcapErrorCodes } from '../client/errors.js';
import type { Headers } from '../protocol/headers.js';
import { unknownOptionHint } from './suggest.js';

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
 * - the method as received and as named by method-override headers;
 * - the host from the Host header and from an absolute-form target;
 * - every Content-Type field of the request.
 * The rule list runs once per reading and the request is scanned when ANY reading reaches an
 * 'enable-icap' rule: it is skipped only when every reading skips (or matches nothing). So a
 * request cannot dodge an 'enable-icap' rule, nor reach a 'skip' rule, by spelling its path or
 * method in a way the middleware and the application read differently.
 *
 * Everything is compiled once (lower-cased lists, RegExp objects, a BlockList per IP list);
 * the no-rules case is O(1), and a plain path (no `%`, `\`, `;`, `//`, dot segment or trailing
 * slash) is one reading.
 */

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
  /** Default false. */
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
  /** Methods, case-insensitive; also matched against method-override headers. */
  method?: readonly string[] | undefined;
  /** A string is a prefix match: `'/upload'` is `{ prefix: ['/upload'] }`. */
  path?: StringMatch | string | undefined;
  /** Exact host names (port ignored, case-insensitive); `*.example.com` matches subdomains. */
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
  reason: 'rule' | 'no-rule-matched' | 'no-rules' | 'no-body';
}

export interface CompiledPolicy {
  readonly rules: readonly PolicyRule[];
  evaluate(facts: RequestFacts): PolicyDecision;
}

const METHOD_OVERRIDE_HEADERS = ['x-http-method-override', 'x-http-method', 'x-method-override'] as const;
const RULE_KEYS = ['name', 'enabled', 'match', 'action'] as const;
const MATCH_KEYS = ['method', 'path', 'host', 'headers', 'contentType', 'query', 'clientIp'] as const;
const STRING_MATCH_LISTS = ['exact', 'prefix', 'suffix', 'contains', 'regex'] as const;
const STRING_MATCH_KEYS = [...STRING_MATCH_LISTS, 'caseSensitive', 'negate'] as const;
const CRITERION_KEYS = ['name', 'present', 'value'] as const;
const MAX_REGEX_LENGTH = 1000;
/** Upper bound on the path readings expanded per request (a normal path has 1, an odd one a few). */
const MAX_PATH_STATES = 256;
/** RFC 9110 token. */
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const MEDIA_PART = "[a-z0-9!#$&^_.+'`|~-]+";
const MEDIA_TYPE = new RegExp(`^(?:\\*/\\*|${MEDIA_PART}/(?:\\*|${MEDIA_PART}))$`);
const HOST_LABELS = /^[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?)*$/;

const NO_RULES: PolicyDecision = Object.freeze({ scan: true, rule: undefined, reason: 'no-rules' });
const NO_BODY: PolicyDecision = Object.freeze({ scan: false, rule: undefined, reason: 'no-body' });
const NO_MATCH: PolicyDecision = Object.freeze({ scan: false, rule: undefined, reason: 'no-rule-matched' });
/** The single reading of a dimension no rule looks at. */
const ANY: readonly [undefined] = [undefined];

// ---------------------------------------------------------------------------------------------
// Compiled form

/** A compiled text test; `lower` is `value.toLowerCase()`, computed once by the caller. */
type TextTest = (value: string, lower: string) => boolean;

interface EvalContext {
  readonly facts: RequestFacts;
  query: Map<string, string[]> | undefined;
}

/** The criteria that do not vary between readings (headers, query, client IP). */
type FixedTest = (ctx: EvalContext) => boolean;

interface ContentTypeTest {
  exact: ReadonlySet<string>;
  /** Major types of `major/*` entries. */
  majors: ReadonlySet<string>;
  /** `*∕*`: any content type present. */
  any: boolean;
}

interface HostTest {
  exact: ReadonlySet<string>;
  /** `.example.com` for `*.example.com`. */
  suffixes: readonly string[];
}

interface CompiledRule {
  readonly name: string;
  readonly scan: boolean;
  readonly decision: PolicyDecision;
  readonly methods: ReadonlySet<string> | undefined;
  readonly path: TextTest | undefined;
  readonly host: HostTest | undefined;
  readonly contentType: ContentTypeTest | undefined;
  readonly fixed: readonly FixedTest[];
}

// ---------------------------------------------------------------------------------------------
// Validation helpers

function fail(field: string, message: string): never {
  throw new IcapError(IcapErrorCodes.INVALID_PROFILE, `invalid ICAP profile: ${field} ${message}`, { field });
}

function show(v: unknown): string {
  let s: string;
  try {
    s = JSON.stringify(v) ?? String(v);
  } catch {
    s = String(v);
  }
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function checkKeys(
  obj: Record<string, unknown>,
  known: readonly string[],
  field: string,
  what: string,
): void {
  for (const key of Object.keys(obj)) {
    if (!known.includes(key))
      fail(`${field}.${key}`, `is not a known option of ${what}${unknownOptionHint(key, known)}`);
  }
}

function optionalBoolean(v: unknown, field: string): boolean | undefined {
  if (v !== undefined && typeof v !== 'boolean') fail(field, `must be true or false (got ${show(v)})`);
  return v as boolean | undefined;
}

/** A non-empty array of strings, each checked by `check` (which returns an error or undefined). */
function stringList(v: unknown, field: string, check?: (s: string) => string | undefined): string[] {
  if (!Array.isArray(v) || v.length === 0)
    fail(field, `must be a non-empty array of strings (got ${show(v)})`);
  const out: string[] = [];
  for (let i = 0; i < v.length; i++) {
    const s: unknown = v[i];
    if (typeof s !== 'string') fail(`${field}[${i}]`, `must be a string (got ${show(s)})`);
    const problem = check?.(s);
    if (problem !== undefined) fail(`${field}[${i}]`, problem);
    out.push(s);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Criteria compilers

/**
 * Compiles a StringMatch, or a plain string standing for `{ [plain]: [s] }`. For paths, exact
 * and prefix entries must start with '/' (a path reading always does), so that a typo such as
 * 'upload' fails at start-up instead of never matching.
 */
function compileStringMatch(v: unknown, field: string, plain: 'exact' | 'prefix', isPath: boolean): TextTest {
  const slash = (s: string) =>
    isPath && !s.startsWith('/') && s !== '*' ? "must start with '/'" : undefined;
  if (typeof v === 'string') {
    const problem = slash(v);
    if (problem !== undefined) fail(field, `${problem} (got ${show(v)})`);
    return compileStringMatch({ [plain]: [v] }, field, plain, isPath);
  }
  if (!isRecord(v)) {
    fail(field, `must be a string or an object { ${STRING_MATCH_KEYS.join(', ')} } (got ${show(v)})`);
  }
  checkKeys(v, STRING_MATCH_KEYS, field, 'a string match');
  const caseSensitive = optionalBoolean(v.caseSensitive, `${field}.caseSensitive`) ?? false;
  const negate = optionalBoolean(v.negate, `${field}.negate`) ?? false;
  if (STRING_MATCH_LISTS.every((k) => v[k] === undefined)) {
    fail(field, `needs at least one of ${STRING_MATCH_LISTS.join(', ')}`);
  }
  const norm = (s: string) => (caseSensitive ? s : s.toLowerCase());
  const list = (
    key: 'exact' | 'prefix' | 'suffix' | 'contains',
    check?: (s: string) => string | undefined,
  ) => (v[key] === undefined ? [] : stringList(v[key], `${field}.${key}`, check).map(norm));
  const exact = new Set(list('exact', slash));
  const prefixes = list('prefix', slash);
  const suffixes = list('suffix');
  const contains = list('contains');
  const regexes =
    v.regex === undefined
      ? []
      : stringList(v.regex, `${field}.regex`).map((src, i) =>
          compileRegex(src, caseSensitive, `${field}.regex[${i}]`),
        );

  const test: TextTest = (value, lower) => {
    const s = caseSensitive ? value : lower;
    if (exact.has(s)) return true;
    for (const p of prefixes) if (s.startsWith(p)) return true;
    for (const p of suffixes) if (s.endsWith(p)) return true;
    for (const p of contains) if (s.includes(p)) return true;
    for (const re of regexes) if (re.test(value)) return true;
    return false;
  };
  return negate ? (value, lower) => !test(value, lower) : test;
}

function compileRegex(src: string, caseSensitive: boolean, field: string): RegExp {
  if (src.length > MAX_REGEX_LENGTH) {
    fail(field, `is longer than ${MAX_REGEX_LENGTH} characters (${src.length})`);
  }
  try {
    return new RegExp(src, caseSensitive ? '' : 'i');
  } catch (err) {
    return fail(field, `is not a valid regular expression: ${(err as Error).message}`);
  }
}

function compileMethods(v: unknown, field: string): Set<string> {
  const list = stringList(v, field, (s) =>
    TOKEN.test(s) ? undefined : `is not an HTTP method (a token) (got ${show(s)})`,
  );
  return new Set(list.map((m) => m.toUpperCase()));
}

function compileHosts(v: unknown, field: string): HostTest {
  const exact = new Set<string>();
  const suffixes: string[] = [];
  stringList(v, field, (s) => {
    const wildcard = s.startsWith('*.');
    const name = normalizeHostEntry(wildcard ? s.slice(2) : s);
    if (name === undefined || (wildcard && isIP(name) !== 0)) {
      return `is not a host name, IP address or *.domain wildcard (no port) (got ${show(s)})`;
    }
    if (wildcard) suffixes.push(`.${name}`);
    else exact.add(name);
    return undefined;
  });
  return { exact, suffixes };
}

/** A configured host (no port) in the form requests are compared in, or undefined if invalid. */
function normalizeHostEntry(s: string): string | undefined {
  let h = s.trim().toLowerCase();
  if (h.startsWith('[') && h.endsWith(']')) h = h.slice(1, -1);
  if (isIP(h) === 6) return h;
  if (h.endsWith('.')) h = h.slice(0, -1);
  return HOST_LABELS.test(h) ? h : undefined;
}

function compileContentTypes(v: unknown, field: string): ContentTypeTest {
  const exact = new Set<string>();
  const majors = new Set<string>();
  let any = false;
  stringList(v, field, (s) => {
    const t = s.trim().toLowerCase();
    if (!MEDIA_TYPE.test(t)) {
      return `is not a media type (type/subtype, type/* or */*, without parameters) (got ${show(s)})`;
    }
    if (t === '*/*') any = true;
    else if (t.endsWith('/*')) majors.add(t.slice(0, -2));
    else exact.add(t);
    return undefined;
  });
  return { exact, majors, any };
}

function compileClientIps(v: unknown, field: string): FixedTest {
  const list = new BlockList();
  stringList(v, field, (entry) => {
    const slash = entry.indexOf('/');
    const addr = (slash === -1 ? entry : entry.slice(0, slash)).trim();
    const version = isIP(addr);
    if (version === 0) return `is not an IP address or CIDR (got ${show(entry)})`;
    const family = version === 4 ? 'ipv4' : 'ipv6';
    if (slash === -1) {
      list.addAddress(addr, family);
      return undefined;
    }
    const bits = entry.slice(slash + 1).trim();
    const max = version === 4 ? 32 : 128;
    if (!/^\d{1,3}$/.test(bits) || Number(bits) > max) {
      return `has an invalid prefix length, IPv${version} allows /0 to /${max} (got ${show(entry)})`;
    }
    list.addSubnet(addr, Number(bits), family);
    return undefined;
  });
  return ({ facts }) => {
    const ip = clientAddress(facts.clientIp);
    if (ip === undefined) return false;
    // BlockList matches IPv4-mapped IPv6 addresses (::ffff:a.b.c.d) against IPv4 entries too.
    return list.check(ip.address, ip.family);
  };
}

function clientAddress(raw: string | undefined): { address: string; family: 'ipv4' | 'ipv6' } | undefined {
  if (raw === undefined) return undefined;
  let ip = raw.trim();
  if (ip.startsWith('[') && ip.endsWith(']')) ip = ip.slice(1, -1);
  const version = isIP(ip);
  if (version === 0) return undefined;
  return { address: ip, family: version === 4 ? 'ipv4' : 'ipv6' };
}

function compileCriteria(v: unknown, field: string, kind: 'headers' | 'query'): FixedTest[] {
  const shape = '{ name, present, value }';
  if (!Array.isArray(v) || v.length === 0)
    fail(field, `must be a non-empty array of ${shape} (got ${show(v)})`);
  return v.map((c: unknown, i): FixedTest => {
    const cf = `${field}[${i}]`;
    if (!isRecord(c)) fail(cf, `must be an object ${shape} (got ${show(c)})`);
    checkKeys(c, CRITERION_KEYS, cf, kind === 'headers' ? 'a header criterion' : 'a query criterion');
    const name = c.name;
    if (typeof name !== 'string' || name === '') {
      fail(`${cf}.name`, `is required: a ${kind === 'headers' ? 'header field' : 'query parameter'} name`);
    }
    if (kind === 'headers' && !TOKEN.test(name)) {
      fail(`${cf}.name`, `is not a valid header field name (got ${show(name)})`);
    }
    const present = optionalBoolean(c.present, `${cf}.present`);
    if (present === false && c.value !== undefined) {
      fail(`${cf}.value`, 'cannot be combined with present: false');
    }
    const value =
      c.value === undefined ? undefined : compileStringMatch(c.value, `${cf}.value`, 'exact', false);
    if (kind === 'headers') {
      if (present === false) return ({ facts }) => !facts.headers.has(name);
      if (value === undefined) return ({ facts }) => facts.headers.has(name);
      return ({ facts }) => {
        for (const x of facts.headers.getAll(name)) if (value(x, x.toLowerCase())) return true;
        return false;
      };
    }
    if (present === false) return (ctx) => !queryOf(ctx).has(name);
    if (value === undefined) return (ctx) => queryOf(ctx).has(name);
    return (ctx) => {
      const values = queryOf(ctx).get(name);
      if (values !== undefined) for (const x of values) if (value(x, x.toLowerCase())) return true;
      return false;
    };
  });
}

function compileRule(rule: unknown, rf: string, names: Map<string, string>): CompiledRule {
  if (!isRecord(rule)) fail(rf, `must be an object { name, enabled, match, action } (got ${show(rule)})`);
  checkKeys(rule, RULE_KEYS, rf, 'a rule');
  const name = rule.name;
  if (typeof name !== 'string' || name.trim() === '') {
    fail(`${rf}.name`, `is required: a non-empty string (got ${show(name)})`);
  }
  if (/[\u0000-\u001f\u007f]/.test(name)) fail(`${rf}.name`, 'must not contain control characters');
  const previous = names.get(name);
  if (previous !== undefined) fail(`${rf}.name`, `duplicates the name of ${previous} (${show(name)})`);
  names.set(name, rf);
  const action = rule.action;
  if (action !== 'enable-icap' && action !== 'skip') {
    fail(`${rf}.action`, `must be 'enable-icap' or 'skip' (got ${show(action)})`);
  }
  optionalBoolean(rule.enabled, `${rf}.enabled`);

  const scan = action === 'enable-icap';
  const compiled: {
    -readonly [K in keyof CompiledRule]: CompiledRule[K];
  } = {
    name,
    scan,
    decision: Object.freeze({ scan, rule: name, reason: 'rule' }),
    methods: undefined,
    path: undefined,
    host: undefined,
    contentType: undefined,
    fixed: [],
  };
  const m = rule.match;
  if (m === undefined) return compiled;
  const mf = `${rf}.match`;
  if (!isRecord(m)) fail(mf, `must be an object { ${MATCH_KEYS.join(', ')} } (got ${show(m)})`);
  checkKeys(m, MATCH_KEYS, mf, "a rule's match");
  const fixed: FixedTest[] = [];
  if (m.method !== undefined) compiled.methods = compileMethods(m.method, `${mf}.method`);
  if (m.path !== undefined) compiled.path = compileStringMatch(m.path, `${mf}.path`, 'prefix', true);
  if (m.host !== undefined) compiled.host = compileHosts(m.host, `${mf}.host`);
  if (m.headers !== undefined) fixed.push(...compileCriteria(m.headers, `${mf}.headers`, 'headers'));
  if (m.contentType !== undefined)
    compiled.contentType = compileContentTypes(m.contentType, `${mf}.contentType`);
  if (m.query !== undefined) fixed.push(...compileCriteria(m.query, `${mf}.query`, 'query'));
  if (m.clientIp !== undefined) fixed.push(compileClientIps(m.clientIp, `${mf}.clientIp`));
  compiled.fixed = fixed;
  return compiled;
}

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
  let anyType = false;
  let usesPath = false;
  let usesHost = false;
  let usesType = false;
  let usesFixed = false;
  for (const r of active) {
    if (r.methods !== undefined) for (const x of r.methods) knownMethods.add(x);
    if (r.path !== undefined) usesPath = true;
    if (r.host !== undefined) usesHost = true;
    if (r.fixed.length > 0) usesFixed = true;
    if (r.contentType !== undefined) {
      usesType = true;
      for (const x of r.contentType.exact) knownTypes.add(x);
      for (const x of r.contentType.majors) knownMajors.add(x);
      if (r.contentType.any) anyType = true;
    }
  }
  const usesMethod = knownMethods.size > 0;
  const types: ContentTypeTest = { exact: knownTypes, majors: knownMajors, any: anyType };

  return {
    rules: list,
    evaluate(facts) {
      const methods = usesMethod ? methodReadings(facts, knownMethods) : ANY;
      const paths = usesPath ? pathCandidates(facts.target) : undefined;
      const lowerPaths = paths?.map((p) => p.toLowerCase());
      const hosts = usesHost ? hostReadings(facts) : ANY;
      const contentTypes = usesType ? contentTypeReadings(facts, types) : ANY;
      const ctx: EvalContext = { facts, query: undefined };
      // Results of each rule's fixed criteria: 0 not computed yet, 1 hold, 2 fail.
      const fixed = usesFixed ? new Uint8Array(active.length) : undefined;
      const pathCount = paths?.length ?? 1;
      let skip: PolicyDecision | undefined;

      for (const method of methods) {
        for (let p = 0; p < pathCount; p++) {
          const path = paths?.[p] ?? '';
          const lowerPath = lowerPaths?.[p] ?? '';
          for (const host of hosts) {
            for (const type of contentTypes) {
              let i = 0;
              for (; i < active.length; i++) {
                const r = active[i]!;
                if (r.methods !== undefined && (method === undefined || !r.methods.has(method))) continue;
                if (r.path !== undefined && !r.path(path, lowerPath)) continue;
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
      return skip ?? NO_MATCH;
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Readings of a request

/**
 * The method as received and every method-override header value, upper-cased. A method no rule
 * names is reduced to undefined (it matches no method list), which bounds the readings by the
 * configuration however many override values a request carries.
 */
function methodReadings(facts: RequestFacts, known: ReadonlySet<string>): Array<string | undefined> {
  const canon = (m: string): string | undefined => {
    const u = m.trim().toUpperCase();
    return known.has(u) ? u : undefined;
  };
  const out: Array<string | undefined> = [canon(facts.method)];
  for (const h of METHOD_OVERRIDE_HEADERS) {
    for (const value of facts.headers.getAll(h)) {
      for (const part of value.split(',')) {
        if (part.trim() === '') continue;
        const m = canon(part);
        if (!out.includes(m)) out.push(m);
      }
    }
  }
  return out;
}

/** Host header (or :authority) and the authority of an absolute-form target, normalized. */
function hostReadings(facts: RequestFacts): Array<string | undefined> {
  const header = facts.host === undefined ? undefined : normalizeRequestHost(facts.host);
  const authority = absoluteAuthority(facts.target);
  const fromTarget = authority === undefined ? undefined : normalizeRequestHost(authority);
  if (fromTarget === undefined || fromTarget === header) return [header];
  if (header === undefined) return [fromTarget];
  return [header, fromTarget];
}

/** Lower case, without port, brackets, userinfo or a trailing dot. */
function normalizeRequestHost(raw: string): string {
  let h = raw.trim().toLowerCase();
  const at = h.lastIndexOf('@');
  if (at !== -1) h = h.slice(at + 1);
  if (h.startsWith('[')) {
    const end = h.indexOf(']');
    return end === -1 ? h.slice(1) : h.slice(1, end);
  }
  const colon = h.indexOf(':');
  // One colon is a port; several without brackets is a bare IPv6 address.
  if (colon !== -1 && h.indexOf(':', colon + 1) === -1) h = h.slice(0, colon);
  while (h.endsWith('.')) h = h.slice(0, -1);
  return h;
}

function hostMatches(test: HostTest, host: string | undefined): boolean {
  if (host === undefined) return false;
  if (test.exact.has(host)) return true;
  for (const s of test.suffixes) if (host.length > s.length && host.endsWith(s)) return true;
  return false;
}

const SCHEME = /^[A-Za-z][A-Za-z0-9+.-]*:\/\//;

/** The authority of an absolute-form target (`http://h:80/p` -> `h:80`), else undefined. */
function absoluteAuthority(target: string): string | undefined {
  const scheme = SCHEME.exec(target);
  if (scheme === null) return undefined;
  const start = scheme[0].length;
  return target.slice(start, authorityEnd(target, start));
}

/** Index where an authority starting at `start` ends: at `/`, `\`, `?` or `#`. */
function authorityEnd(target: string, start: number): number {
  let i = start;
  for (; i < target.length; i++) {
    const c = target.charCodeAt(i);
    if (c === 0x2f || c === 0x5c || c === 0x3f || c === 0x23) break;
  }
  return i;
}

/**
 * The media type of every Content-Type field, each reduced to what the configured lists can
 * tell apart: a listed type, `major/*` for a listed major, `*∕*` for any other when a rule lists
 * `*∕*`, else undefined (like no Content-Type at all). Without a Content-Type: [undefined].
 */
function contentTypeReadings(facts: RequestFacts, known: ContentTypeTest): Array<string | undefined> {
  const values = facts.headers.getAll('content-type');
  if (values.length === 0) return [undefined];
  const out: Array<string | undefined> = [];
  for (const value of values) {
    const semi = value.indexOf(';');
    const media = (semi === -1 ? value : value.slice(0, semi)).trim().toLowerCase();
    const slash = media.indexOf('/');
    const major = slash === -1 ? media : media.slice(0, slash);
    let key: string | undefined;
    if (known.exact.has(media)) key = media;
    else if (slash > 0 && known.majors.has(major)) key = `${major}/*`;
    else if (media !== '' && known.any) key = '*/*';
    if (!out.includes(key)) out.push(key);
  }
  return out;
}

function contentTypeMatches(test: ContentTypeTest, key: string | undefined): boolean {
  if (key === undefined) return false;
  if (test.any || test.exact.has(key)) return true;
  const slash = key.indexOf('/');
  return slash > 0 && test.majors.has(key.slice(0, slash));
}

function queryOf(ctx: EvalContext): Map<string, string[]> {
  ctx.query ??= parseQuery(ctx.facts.target);
  return ctx.query;
}

/** Query parameters by decoded name (`+` is a space, %XX decoded leniently), values in order. */
function parseQuery(target: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  const q = target.indexOf('?');
  if (q === -1) return out;
  const hash = target.indexOf('#', q);
  const query = target.slice(q + 1, hash === -1 ? undefined : hash);
  for (const part of query.split('&')) {
    if (part === '') continue;
    const eq = part.indexOf('=');
    const name = decodeQueryPart(eq === -1 ? part : part.slice(0, eq));
    const value = eq === -1 ? '' : decodeQueryPart(part.slice(eq + 1));
    const values = out.get(name);
    if (values === undefined) out.set(name, [value]);
    else values.push(value);
  }
  return out;
}

function decodeQueryPart(s: string): string {
  return percentDecode(s.includes('+') ? s.replaceAll('+', ' ') : s);
}

// ---------------------------------------------------------------------------------------------
// Path readings

/**
 * The readings of a request target's path an application or a proxy in front of it might route
 * on, deduplicated, the raw path first:
 * - the raw path: query and fragment removed; for an absolute-form target its path part
 *   (`/` when empty); also with a leading '/' when it has none;
 * - closed under: percent-decoding (at most twice, so `%252e` becomes `.`; `%2F` and `%5C`
 *   included; invalid escapes kept; UTF-8 when the bytes are UTF-8, else Latin-1), backslashes
 *   as slashes, dot segments removed per RFC 3986 §5.2.4 (`%2e` counting as `.`), repeated
 *   slashes collapsed, `;params` removed from segments; each in any order;
 * - and each of those without a trailing slash.
 */
export function pathCandidates(target: string): string[] {
  const raw = rawPath(target);
  if (isPlainPath(raw)) return [raw];

  const out = new Set<string>();
  const add = (s: string) => {
    out.add(s);
    const t = trimTrailingSlashes(s);
    if (t !== s) out.add(t);
  };
  // A reading and how many decodings it may still go through.
  const states = new Map<string, number>();
  const queue: Array<[string, number]> = [];
  const push = (s: string, decodes: number) => {
    const known = states.get(s);
    if (known !== undefined && known >= decodes) return;
    if (known === undefined && states.size >= MAX_PATH_STATES) return;
    states.set(s, decodes);
    queue.push([s, decodes]);
  };
  push(raw, 2);
  if (!raw.startsWith('/')) push(`/${raw}`, 2);
  for (let i = 0; i < queue.length; i++) {
    const [s, decodes] = queue[i]!;
    add(s);
    push(backslashesToSlashes(s), decodes);
    push(removeDotSegments(s), decodes);
    push(collapseSlashes(s), decodes);
    push(removeParams(s), decodes);
    if (decodes > 0) push(percentDecode(s), decodes - 1);
  }
  return [...out];
}

function rawPath(target: string): string {
  let start = 0;
  const scheme = SCHEME.exec(target);
  if (scheme !== null) start = authorityEnd(target, scheme[0].length);
  let end = start;
  for (; end < target.length; end++) {
    const c = target.charCodeAt(end);
    if (c === 0x3f || c === 0x23) break;
  }
  const path = target.slice(start, end);
  return path === '' ? '/' : path;
}

/** True when no reading can differ from the path itself. */
function isPlainPath(p: string): boolean {
  const n = p.length;
  if (p.charCodeAt(0) !== 0x2f) return false;
  if (n > 1 && p.charCodeAt(n - 1) === 0x2f) return false;
  for (let i = 0; i < n; i++) {
    const c = p.charCodeAt(i);
    if (c === 0x25 || c === 0x5c || c === 0x3b) return false; // % \ ;
    if (c === 0x2e && p.charCodeAt(i - 1) === 0x2f) {
      // '/.' starting a '.' or '..' segment
      const next = i + 1 < n ? p.charCodeAt(i + 1) : 0x2f;
      if (next === 0x2f) return false;
      if (next === 0x2e && (i + 2 >= n || p.charCodeAt(i + 2) === 0x2f)) return false;
    }
    if (c === 0x2f && p.charCodeAt(i + 1) === 0x2f) return false;
  }
  return true;
}

function trimTrailingSlashes(s: string): string {
  let end = s.length;
  while (end > 1 && s.charCodeAt(end - 1) === 0x2f) end--;
  return end === s.length ? s : s.slice(0, end);
}

function backslashesToSlashes(s: string): string {
  return s.includes('\\') ? s.replaceAll('\\', '/') : s;
}

function collapseSlashes(s: string): string {
  return s.includes('//') ? s.replace(/\/{2,}/g, '/') : s;
}

/** `/a;x=1/b;y` -> `/a/b`. */
function removeParams(s: string): string {
  return s.includes(';') ? s.replace(/;[^/]*/g, '') : s;
}

/** 0: not a dot segment, 1: `.`, 2: `..` (`%2e` counting as a dot). */
function dotSegment(seg: string): 0 | 1 | 2 {
  if (seg === '.') return 1;
  if (seg === '..') return 2;
  if (seg.length < 3 || seg.length > 6) return 0;
  const s = seg.toLowerCase();
  if (s === '%2e') return 1;
  if (s === '.%2e' || s === '%2e.' || s === '%2e%2e') return 2;
  return 0;
}

/** RFC 3986 §5.2.4 on an absolute path; other strings are returned as they are. */
function removeDotSegments(path: string): string {
  if (!path.startsWith('/') || !/\.|%2e/i.test(path)) return path;
  const segments = path.split('/');
  const out: string[] = [''];
  const last = segments.length - 1;
  for (let i = 1; i <= last; i++) {
    const seg = segments[i]!;
    const dots = dotSegment(seg);
    if (dots === 0) {
      out.push(seg);
      continue;
    }
    if (dots === 2 && out.length > 1) out.pop();
    // A trailing dot segment leaves the path ending in '/'.
    if (i === last) out.push('');
  }
  return out.length === 1 ? '/' : out.join('/');
}

function isHexDigit(c: number): boolean {
  return (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x46) || (c >= 0x61 && c <= 0x66);
}

/** True when a valid %XX escape starts at `i`. */
function isEscapeAt(s: string, i: number): boolean {
  return (
    s.charCodeAt(i) === 0x25 &&
    i + 2 < s.length &&
    isHexDigit(s.charCodeAt(i + 1)) &&
    isHexDigit(s.charCodeAt(i + 2))
  );
}

/** Decodes every %XX once; invalid escapes stay as they are. */
function percentDecode(s: string): string {
  let i = s.indexOf('%');
  if (i === -1) return s;
  let out = '';
  let literalFrom = 0;
  while (i < s.length) {
    if (!isEscapeAt(s, i)) {
      i++;
      continue;
    }
    out += s.slice(literalFrom, i);
    const bytes: number[] = [];
    while (isEscapeAt(s, i)) {
      bytes.push(Number.parseInt(s.slice(i + 1, i + 3), 16));
      i += 3;
    }
    out += bytesToString(bytes);
    literalFrom = i;
  }
  return out + s.slice(literalFrom);
}

function bytesToString(bytes: number[]): string {
  if (bytes.every((b) => b < 0x80)) {
    let s = '';
    for (const b of bytes) s += String.fromCharCode(b);
    return s;
  }
  const buf = Buffer.from(bytes);
  return buf.toString(isUtf8(buf) ? 'utf8' : 'latin1');
}
