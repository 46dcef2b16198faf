import { BlockList, isIP } from 'node:net';
import { IcapError, IcapErrorCodes } from '../client/errors.js';
import { type Headers, isToken } from '../protocol/headers.js';

/**
 * The HTTP security policy: named rules, evaluated in order, the first match deciding whether a
 * request goes to ICAP ('enable-icap') or not ('skip'). The rule name appears in the log.
 *
 * Bypass resistance: a path is not matched as one string but as every reading an application
 * might give it (raw, percent-decoded once and twice, backslashes as slashes, dot segments
 * resolved, repeated slashes collapsed, `;params` dropped), and a method as the real one plus
 * any method-override header. The rule list is evaluated for each reading and the request is
 * scanned if ANY reading says so: an attacker cannot dodge an 'enable-icap' rule, nor reach a
 * 'skip' rule, by spelling the path differently from how the application will route it.
 */

export interface RequestFacts {
  method: string;
  /** Raw request target: origin-form `/p?q` or absolute-form `http://h/p`. */
  target: string;
  /** Host header or HTTP/2 :authority, possibly with a port. */
  host: string | undefined;
  headers: Headers;
  clientIp: string | undefined;
  hasBody: boolean;
}

export type PolicyAction = 'enable-icap' | 'skip';

export interface StringMatch {
  exact?: readonly string[] | undefined;
  prefix?: readonly string[] | undefined;
  suffix?: readonly string[] | undefined;
  contains?: readonly string[] | undefined;
  regex?: readonly string[] | undefined;
  /** Default false. */
  caseSensitive?: boolean | undefined;
  /** Inverts the match. */
  negate?: boolean | undefined;
}

export interface HeaderCriterion {
  name: string;
  /** true: the header must be there; false: it must not. */
  present?: boolean | undefined;
  /** A string is an exact match. */
  value?: StringMatch | string | undefined;
}

export interface RuleMatch {
  /** Methods, case-insensitive; also matched against method-override headers. */
  method?: readonly string[] | undefined;
  /** A string is a prefix match. */
  path?: StringMatch | string | undefined;
  /** Exact host names (port ignored, case-insensitive); `*.example.com` matches subdomains. */
  host?: readonly string[] | undefined;
  headers?: readonly HeaderCriterion[] | undefined;
  /** Media types without parameters; `image/*` wildcards. */
  contentType?: readonly string[] | undefined;
  query?: readonly HeaderCriterion[] | undefined;
  /** IPs and CIDRs, IPv4 and IPv6. */
  clientIp?: readonly string[] | undefined;
}

export interface PolicyRule {
  name: string;
  /** Default true. */
  enabled?: boolean | undefined;
  /** All criteria must hold; absent matches every request. */
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

const METHOD_OVERRIDE_HEADERS = ['x-http-method-override', 'x-http-method', 'x-method-override'];
const RULE_KEYS = new Set(['name', 'enabled', 'match', 'action']);
const MATCH_KEYS = new Set(['method', 'path', 'host', 'headers', 'contentType', 'query', 'clientIp']);
const STRING_MATCH_KEYS = new Set([
  'exact',
  'prefix',
  'suffix',
  'contains',
  'regex',
  'caseSensitive',
  'negate',
]);
const CRITERION_KEYS = new Set(['name', 'present', 'value']);
const MAX_REGEX = 1000;

type Test = (s: string) => boolean;

interface Compiled {
  name: string;
  action: PolicyAction;
  /** Per-request criteria (everything but path and method). */
  other: Array<(f: RequestFacts) => boolean>;
  path: Test | undefined;
  methods: Set<string> | undefined;
}

function invalid(field: string, message: string): never {
  throw new IcapError(IcapErrorCodes.INVALID_PROFILE, `invalid ICAP profile: ${field} ${message}`, { field });
}

function checkKeys(obj: object, allowed: ReadonlySet<string>, field: string): void {
  for (const k of Object.keys(obj)) {
    if (!allowed.has(k))
      invalid(`${field}.${k}`, `is not a known option (known: ${[...allowed].join(', ')})`);
  }
}

function stringList(v: unknown, field: string): string[] {
  if (!Array.isArray(v)) invalid(field, 'must be an array of strings');
  return v.map((s, i) => {
    if (typeof s !== 'string') invalid(`${field}[${i}]`, 'must be a string');
    return s;
  });
}

function compileStringMatch(v: unknown, field: string, caseDefault = false): Test {
  if (typeof v === 'string') {
    const needle = caseDefault ? v : v.toLowerCase();
    return caseDefault ? (s) => s === needle : (s) => s.toLowerCase() === needle;
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v))
    invalid(field, 'must be a string or { exact, prefix, suffix, contains, regex }');
  checkKeys(v, STRING_MATCH_KEYS, field);
  const m = v as StringMatch;
  if (m.caseSensitive !== undefined && typeof m.caseSensitive !== 'boolean')
    invalid(`${field}.caseSensitive`, 'must be true or false');
  if (m.negate !== undefined && typeof m.negate !== 'boolean')
    invalid(`${field}.negate`, 'must be true or false');
  const cs = m.caseSensitive ?? caseDefault;
  const norm = (s: string) => (cs ? s : s.toLowerCase());
  const tests: Test[] = [];
  const lists: Array<[keyof StringMatch, (hay: string, needle: string) => boolean]> = [
    ['exact', (h, n) => h === n],
    ['prefix', (h, n) => h.startsWith(n)],
    ['suffix', (h, n) => h.endsWith(n)],
    ['contains', (h, n) => h.includes(n)],
  ];
  for (const [key, op] of lists) {
    if (m[key] === undefined) continue;
    const needles = stringList(m[key], `${field}.${key}`).map(norm);
    tests.push((s) => {
      const h = norm(s);
      return needles.some((n) => op(h, n));
    });
  }
  if (m.regex !== undefined) {
    const res = stringList(m.regex, `${field}.regex`).map((src, i) =>
      compileRegex(src, cs, `${field}.regex[${i}]`),
    );
    tests.push((s) => res.some((re) => re.test(s)));
  }
  if (tests.length === 0) invalid(field, 'needs at least one of exact, prefix, suffix, contains, regex');
  const any: Test = (s) => tests.some((t) => t(s));
  return m.negate ? (s) => !any(s) : any;
}

function compileRegex(src: string, caseSensitive: boolean, field: string): RegExp {
  if (src.length > MAX_REGEX) invalid(field, `is longer than ${MAX_REGEX} characters`);
  try {
    return new RegExp(src, caseSensitive ? 'u' : 'iu');
  } catch (err) {
    return invalid(field, `is not a valid regular expression: ${(err as Error).message}`);
  }
}

function compileCriteria(
  v: unknown,
  field: string,
  read: (f: RequestFacts, name: string) => string[],
): (f: RequestFacts) => boolean {
  if (!Array.isArray(v)) invalid(field, 'must be an array of { name, present, value }');
  const checks = v.map((c: unknown, i) => {
    const cf = `${field}[${i}]`;
    if (typeof c !== 'object' || c === null) invalid(cf, 'must be an object { name, present, value }');
    checkKeys(c, CRITERION_KEYS, cf);
    const crit = c as HeaderCriterion;
    if (typeof crit.name !== 'string' || crit.name === '') invalid(`${cf}.name`, 'is required');
    if (crit.present !== undefined && typeof crit.present !== 'boolean')
      invalid(`${cf}.present`, 'must be true or false');
    if (crit.present === false && crit.value !== undefined)
      invalid(cf, 'cannot ask for a value of an absent field');
    const value = crit.value === undefined ? undefined : compileStringMatch(crit.value, `${cf}.value`);
    const name = crit.name;
    return (f: RequestFacts) => {
      const values = read(f, name);
      if (crit.present === false) return values.length === 0;
      if (value === undefined) return values.length > 0;
      return values.some(value);
    };
  });
  return (f) => checks.every((c) => c(f));
}

function compileHosts(v: unknown, field: string): (f: RequestFacts) => boolean {
  const hosts = stringList(v, field).map((h) => h.toLowerCase());
  return (f) => {
    if (f.host === undefined) return false;
    const host = stripPort(f.host.toLowerCase());
    return hosts.some((h) =>
      h.startsWith('*.') ? host.endsWith(h.slice(1)) && host.length > h.length - 1 : host === h,
    );
  };
}

function stripPort(host: string): string {
  if (host.startsWith('[')) {
    const end = host.indexOf(']');
    return end === -1 ? host : host.slice(1, end);
  }
  const colon = host.lastIndexOf(':');
  return colon !== -1 && host.indexOf(':') === colon ? host.slice(0, colon) : host;
}

function compileContentTypes(v: unknown, field: string): (f: RequestFacts) => boolean {
  const types = stringList(v, field).map((t, i) => {
    const lower = t.trim().toLowerCase();
    if (!/^[a-z0-9!#$&^_.+-]+\/(?:\*|[a-z0-9!#$&^_.+-]+)$/.test(lower))
      invalid(`${field}[${i}]`, `is not a media type: ${JSON.stringify(t)}`);
    return lower;
  });
  return (f) => {
    const ct = f.headers.get('content-type');
    if (ct === undefined) return false;
    const media = ct.split(';')[0]!.trim().toLowerCase();
    const major = media.split('/')[0];
    return types.some((t) => t === media || (t.endsWith('/*') && t.slice(0, -2) === major));
  };
}

function compileIps(v: unknown, field: string): (f: RequestFacts) => boolean {
  const list = new BlockList();
  stringList(v, field).forEach((entry, i) => {
    const [addr, prefix, extra] = entry.trim().split('/');
    const type = isIP(addr ?? '');
    if (type === 0 || extra !== undefined)
      invalid(`${field}[${i}]`, `is not an IP address or CIDR: ${JSON.stringify(entry)}`);
    const family = type === 4 ? 'ipv4' : 'ipv6';
    if (prefix === undefined) {
      list.addAddress(addr!, family);
      return;
    }
    const bits = Number(prefix);
    if (!/^\d{1,3}$/.test(prefix) || bits > (type === 4 ? 32 : 128)) {
      invalid(`${field}[${i}]`, `has an invalid prefix length: ${JSON.stringify(entry)}`);
    }
    list.addSubnet(addr!, bits, family);
  });
  return (f) => {
    if (f.clientIp === undefined) return false;
    const ip = f.clientIp;
    const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
    if (mapped !== null && list.check(mapped[1]!, 'ipv4')) return true;
    const t = isIP(ip);
    return t !== 0 && list.check(ip, t === 4 ? 'ipv4' : 'ipv6');
  };
}

function compileRule(rule: unknown, index: number, field: string, names: Set<string>): Compiled {
  const rf = `${field}[${index}]`;
  if (typeof rule !== 'object' || rule === null || Array.isArray(rule))
    invalid(rf, 'must be an object { name, match, action }');
  checkKeys(rule, RULE_KEYS, rf);
  const r = rule as PolicyRule;
  if (typeof r.name !== 'string' || r.name.trim() === '')
    invalid(`${rf}.name`, 'is required: a non-empty string');
  if (names.has(r.name)) invalid(`${rf}.name`, `duplicates rule name ${JSON.stringify(r.name)}`);
  names.add(r.name);
  if (r.action !== 'enable-icap' && r.action !== 'skip') {
    invalid(`${rf}.action`, `must be 'enable-icap' or 'skip' (got ${JSON.stringify(r.action)})`);
  }
  if (r.enabled !== undefined && typeof r.enabled !== 'boolean')
    invalid(`${rf}.enabled`, 'must be true or false');
  const compiled: Compiled = {
    name: r.name,
    action: r.action,
    other: [],
    path: undefined,
    methods: undefined,
  };
  const m = r.match;
  if (m === undefined) return compiled;
  const mf = `${rf}.match`;
  if (typeof m !== 'object' || m === null || Array.isArray(m)) invalid(mf, 'must be an object');
  checkKeys(m, MATCH_KEYS, mf);
  if (m.method !== undefined) {
    compiled.methods = new Set(
      stringList(m.method, `${mf}.method`).map((x, i) => {
        if (!isToken(x)) invalid(`${mf}.method[${i}]`, `is not an HTTP method: ${JSON.stringify(x)}`);
        return x.toUpperCase();
      }),
    );
  }
  if (m.path !== undefined) {
    compiled.path = compileStringMatch(
      typeof m.path === 'string' ? { prefix: [m.path] } : m.path,
      `${mf}.path`,
    );
  }
  if (m.host !== undefined) compiled.other.push(compileHosts(m.host, `${mf}.host`));
  if (m.headers !== undefined) {
    compiled.other.push(compileCriteria(m.headers, `${mf}.headers`, (f, name) => f.headers.getAll(name)));
  }
  if (m.contentType !== undefined)
    compiled.other.push(compileContentTypes(m.contentType, `${mf}.contentType`));
  if (m.query !== undefined)
    compiled.other.push(compileCriteria(m.query, `${mf}.query`, (f, name) => queryValues(f.target, name)));
  if (m.clientIp !== undefined) compiled.other.push(compileIps(m.clientIp, `${mf}.clientIp`));
  return compiled;
}

export function compilePolicy(rules: readonly PolicyRule[] | undefined, field = 'rules'): CompiledPolicy {
  if (rules !== undefined && !Array.isArray(rules)) invalid(field, 'must be an array of rules');
  const list = rules ?? [];
  const names = new Set<string>();
  const compiled = list
    .map((r, i) => compileRule(r, i, field, names))
    .filter((_, i) => list[i]!.enabled !== false);
  if (list.length === 0) {
    return {
      rules: list,
      evaluate: (f) =>
        f.hasBody
          ? { scan: true, rule: undefined, reason: 'no-rules' }
          : { scan: false, rule: undefined, reason: 'no-body' },
    };
  }
  const needPaths = compiled.some((c) => c.path !== undefined);
  const needMethods = compiled.some((c) => c.methods !== undefined);
  return {
    rules: list,
    evaluate(f) {
      const paths = needPaths ? pathCandidates(f.target) : [''];
      const methods = needMethods ? methodCandidates(f) : [f.method.toUpperCase()];
      let skipRule: string | undefined;
      for (const method of methods) {
        for (const path of paths) {
          const rule = firstMatch(compiled, f, method, path);
          if (rule === undefined) continue;
          if (rule.action === 'enable-icap') return { scan: true, rule: rule.name, reason: 'rule' };
          skipRule ??= rule.name;
        }
      }
      // Skipped only if no reading reached an enabling rule; a reading that matched nothing
      // does not scan either (no rule enables it).
      return skipRule === undefined
        ? { scan: false, rule: undefined, reason: 'no-rule-matched' }
        : { scan: false, rule: skipRule, reason: 'rule' };
    },
  };
}

function firstMatch(rules: Compiled[], f: RequestFacts, method: string, path: string): Compiled | undefined {
  for (const r of rules) {
    if (r.methods !== undefined && !r.methods.has(method)) continue;
    if (r.path !== undefined && !r.path(path)) continue;
    if (!r.other.every((t) => t(f))) continue;
    return r;
  }
  return undefined;
}

function methodCandidates(f: RequestFacts): string[] {
  const out = new Set([f.method.toUpperCase()]);
  for (const h of METHOD_OVERRIDE_HEADERS) {
    for (const v of f.headers.getAll(h)) {
      for (const m of v.split(',')) if (m.trim() !== '') out.add(m.trim().toUpperCase());
    }
  }
  return [...out];
}

/** The readings of a request target's path an application might route on. */
export function pathCandidates(target: string): string[] {
  let path = target;
  const abs = /^[a-z][a-z0-9+.-]*:\/\/[^/?#]*/i.exec(path);
  if (abs !== null) path = path.slice(abs[0].length);
  const q = path.search(/[?#]/);
  if (q !== -1) path = path.slice(0, q);
  if (!path.startsWith('/')) path = `/${path}`;
  const out = new Set<string>();
  const once = percentDecode(path);
  const twice = percentDecode(once);
  for (const p of [path, once, twice]) {
    out.add(p);
    const slashes = p.replace(/\\/g, '/');
    const noParams = slashes.replace(/;[^/]*/g, '');
    for (const v of [slashes, noParams]) {
      const resolved = removeDotSegments(v);
      const collapsed = resolved.replace(/\/{2,}/g, '/');
      out.add(v);
      out.add(resolved);
      out.add(collapsed);
      out.add(removeDotSegments(v.replace(/\/{2,}/g, '/')));
    }
  }
  return [...out];
}

function percentDecode(s: string): string {
  return s.replace(/%([0-9a-fA-F]{2})/g, (_, hex: string) => String.fromCharCode(Number.parseInt(hex, 16)));
}

/** RFC 3986 §5.2.4. */
function removeDotSegments(path: string): string {
  const input = path.split('/');
  const output: string[] = [];
  for (let i = 0; i < input.length; i++) {
    const seg = input[i]!;
    if (seg === '.') {
      if (i === input.length - 1) output.push('');
      continue;
    }
    if (seg === '..') {
      if (output.length > 1) output.pop();
      if (i === input.length - 1) output.push('');
      continue;
    }
    output.push(seg);
  }
  const joined = output.join('/');
  return joined.startsWith('/') ? joined : `/${joined}`;
}

function queryValues(target: string, name: string): string[] {
  const q = target.indexOf('?');
  if (q === -1) return [];
  const end = target.indexOf('#', q);
  const query = target.slice(q + 1, end === -1 ? undefined : end);
  const out: string[] = [];
  for (const part of query.split('&')) {
    if (part === '') continue;
    const eq = part.indexOf('=');
    const k = decodeQuery(eq === -1 ? part : part.slice(0, eq));
    if (k === name) out.push(eq === -1 ? '' : decodeQuery(part.slice(eq + 1)));
  }
  return out;
}

function decodeQuery(s: string): string {
  try {
    return decodeURIComponent(s.replace(/\+/g, ' '));
  } catch {
    return s;
  }
}
