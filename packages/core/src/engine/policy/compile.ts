import { BlockList, isIP } from 'node:net';
import { IcapError, IcapErrorCodes } from '../../errors.js';
import { unknownOptionHint } from '../suggest.js';
import { queryOddOf, queryReadingsOf } from './readings.js';
import type { CompiledRule, ContentTypeTest, FixedTest, HostTest, TextTest } from './types.js';
import {
  CRITERION_KEYS,
  HOST_LABELS,
  MATCH_KEYS,
  MAX_REGEX_LENGTH,
  MEDIA_TYPE,
  RULE_KEYS,
  STRING_MATCH_KEYS,
  STRING_MATCH_LISTS,
  TOKEN,
} from './types.js';

// ---------------------------------------------------------------------------------------------
// Validation helpers

export function fail(field: string, message: string): never {
  throw new IcapError(IcapErrorCodes.INVALID_PROFILE, `invalid ICAP profile: ${field} ${message}`, { field });
}

export function show(v: unknown): string {
  let s: string;
  try {
    s = JSON.stringify(v) ?? String(v);
  } catch {
    s = String(v);
  }
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}

export function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export function checkKeys(
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

export function optionalBoolean(v: unknown, field: string): boolean | undefined {
  if (v !== undefined && typeof v !== 'boolean') fail(field, `must be true or false (got ${show(v)})`);
  return v as boolean | undefined;
}

/** A non-empty array of strings, each checked by `check` (which returns an error or undefined). */
export function stringList(v: unknown, field: string, check?: (s: string) => string | undefined): string[] {
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
export function compileStringMatch(
  v: unknown,
  field: string,
  plain: 'exact' | 'prefix',
  isPath: boolean,
  skips = false,
): TextTest {
  const slash = (s: string) =>
    isPath && !s.startsWith('/') && s !== '*' ? "must start with '/'" : undefined;
  if (typeof v === 'string') {
    const problem = slash(v);
    if (problem !== undefined) fail(field, `${problem} (got ${show(v)})`);
    return compileStringMatch({ [plain]: [v] }, field, plain, isPath, skips);
  }
  if (!isRecord(v)) {
    fail(field, `must be a string or an object { ${STRING_MATCH_KEYS.join(', ')} } (got ${show(v)})`);
  }
  checkKeys(v, STRING_MATCH_KEYS, field, 'a string match');
  const caseSensitive = optionalBoolean(v.caseSensitive, `${field}.caseSensitive`) ?? false;
  const negate = optionalBoolean(v.negate, `${field}.negate`) ?? false;
  // A skip rule's path prefix matches whole segments only (`/webhooks` is not `/webhooksx` nor
  // `/webhooks;x`, which routers send elsewhere: campaign-bm BM2); an enable rule's, or a negated
  // skip's inner test, any string prefix (matching more scans more).
  const segments = isPath && skips !== negate;
  if (STRING_MATCH_LISTS.every((k) => v[k] === undefined)) {
    fail(field, `needs at least one of ${STRING_MATCH_LISTS.join(', ')}`);
  }
  const list = (
    key: 'exact' | 'prefix' | 'suffix' | 'contains',
    check?: (s: string) => string | undefined,
  ) => (v[key] === undefined ? [] : stringList(v[key], `${field}.${key}`, check));
  // Each list as written (the as-sent reading's, and every reading's under caseSensitive) and
  // lower-cased (the folded reading's); the regexes as configured (`i` unless caseSensitive:
  // the folded reading's) and without `i` (the as-sent reading's).
  const exact = new Set(list('exact', slash));
  const prefixes = list('prefix', slash);
  const suffixes = list('suffix');
  const contains = list('contains');
  const configured =
    v.regex === undefined
      ? []
      : stringList(v.regex, `${field}.regex`).map((src, i) =>
          compileRegex(src, caseSensitive, `${field}.regex[${i}]`),
        );
  const written = {
    exact,
    prefixes,
    suffixes,
    contains,
    regexes: caseSensitive ? configured : configured.map((re) => new RegExp(re.source)),
  };
  const lower = (l: readonly string[]) => l.map((s) => s.toLowerCase());
  const folded = caseSensitive
    ? written
    : {
        exact: new Set(lower([...written.exact])),
        prefixes: lower(written.prefixes),
        suffixes: lower(written.suffixes),
        contains: lower(written.contains),
        regexes: configured,
      };

  const test: TextTest = (value, lowerValue, fold) => {
    const f = fold && !caseSensitive;
    const s = f ? lowerValue : value;
    const m = f ? folded : written;
    if (m.exact.has(s)) return true;
    for (const p of m.prefixes) if (s.startsWith(p) && (!segments || atSegment(s, p))) return true;
    for (const p of m.suffixes) if (s.endsWith(p)) return true;
    for (const p of m.contains) if (s.includes(p)) return true;
    for (const re of m.regexes) if (re.test(value)) return true;
    return false;
  };
  return negate ? (value, lowerValue, fold) => !test(value, lowerValue, fold) : test;
}

/** Whether prefix `p` of `s` ends at a segment boundary: at a '/' of its own, or before one, or at the end. */
function atSegment(s: string, p: string): boolean {
  return p.endsWith('/') || s.length === p.length || s.charCodeAt(p.length) === 0x2f;
}

/**
 * Whether a StringMatch tells the as-sent and the folded reading of an all-lower-case value
 * apart: it is case-insensitive and names an upper-case letter or has a regex. If not, the
 * as-sent reading of a lower-case path need not be evaluated.
 */
export function foldsLowerCase(v: unknown): boolean {
  if (typeof v === 'string') return v !== v.toLowerCase();
  if (!isRecord(v) || v.caseSensitive === true) return false;
  if (v.regex !== undefined) return true;
  return STRING_MATCH_LISTS.some(
    (k) =>
      Array.isArray(v[k]) && (v[k] as unknown[]).some((s) => typeof s === 'string' && s !== s.toLowerCase()),
  );
}

export function compileRegex(src: string, caseSensitive: boolean, field: string): RegExp {
  if (src.length > MAX_REGEX_LENGTH) {
    fail(field, `is longer than ${MAX_REGEX_LENGTH} characters (${src.length})`);
  }
  try {
    return new RegExp(src, caseSensitive ? '' : 'i');
  } catch (err) {
    return fail(field, `is not a valid regular expression: ${(err as Error).message}`);
  }
}

export function compileMethods(v: unknown, field: string): Set<string> {
  const list = stringList(v, field, (s) =>
    TOKEN.test(s) ? undefined : `is not an HTTP method (a token) (got ${show(s)})`,
  );
  return new Set(list.map((m) => m.toUpperCase()));
}

export function compileHosts(v: unknown, field: string): HostTest {
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
export function normalizeHostEntry(s: string): string | undefined {
  let h = s.trim().toLowerCase();
  if (h.startsWith('[') && h.endsWith(']')) h = h.slice(1, -1);
  if (isIP(h) === 6) return h;
  if (h.endsWith('.')) h = h.slice(0, -1);
  return HOST_LABELS.test(h) ? h : undefined;
}

export function compileContentTypes(v: unknown, field: string): ContentTypeTest {
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

export function compileClientIps(v: unknown, field: string): FixedTest {
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

export function clientAddress(
  raw: string | undefined,
): { address: string; family: 'ipv4' | 'ipv6' } | undefined {
  if (raw === undefined) return undefined;
  let ip = raw.trim();
  if (ip.startsWith('[') && ip.endsWith(']')) ip = ip.slice(1, -1);
  const version = isIP(ip);
  if (version === 0) return undefined;
  return { address: ip, family: version === 4 ? 'ipv4' : 'ipv6' };
}

export function compileCriteria(
  v: unknown,
  field: string,
  kind: 'headers' | 'query',
  skips = false,
): FixedTest[] {
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
      c.value === undefined ? undefined : compileStringMatch(c.value, `${cf}.value`, 'exact', false, skips);
    // A skip rule's value matches a field or parameter that occurs once, its value as sent (an
    // application may read the first, the last, all of them as a list, or compare case:
    // campaign-bm BM3, campaign-bn BN1); an enable rule's, when any value does in either case,
    // and a negated one when the field is absent too (nothing there is the value it names: BN4).
    const negated = isRecord(c.value) && c.value.negate === true;
    const fold = skips === negated;
    const matches = (values: readonly string[] | undefined): boolean => {
      if (values === undefined || values.length === 0) return !skips && negated;
      if (skips) return values.length === 1 && value!(values[0]!, values[0]!.toLowerCase(), fold);
      for (const x of values) if (value!(x, x.toLowerCase(), fold)) return true;
      return false;
    };
    if (kind === 'headers') {
      if (present === false) return ({ facts }) => !facts.headers.has(name);
      if (value === undefined) return ({ facts }) => facts.headers.has(name);
      return ({ facts }) => matches(facts.headers.getAll(name));
    }
    // Each query reading is judged (readings.ts queryStrings: find-my-way reads after a '#' or a
    // ';' too): an enable rule's criterion holds when it does in any, a skip rule's only when it
    // does in all of them and the parsers read the names alike (campaign-bo, campaign-br BR1).
    const holds: (query: Map<string, string[]>) => boolean =
      present === false
        ? (query) => !query.has(name)
        : value === undefined
          ? (query) => query.has(name)
          : (query) => matches(query.get(name));
    if (!skips) return (ctx) => queryReadingsOf(ctx).some(holds);
    return (ctx) => queryOddOf(ctx)?.has(name) === false && queryReadingsOf(ctx).every(holds);
  });
}

export function compileRule(rule: unknown, rf: string, names: Map<string, string>): CompiledRule {
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
  if (m.path !== undefined) compiled.path = compileStringMatch(m.path, `${mf}.path`, 'prefix', true, !scan);
  if (m.host !== undefined) compiled.host = compileHosts(m.host, `${mf}.host`);
  if (m.headers !== undefined) fixed.push(...compileCriteria(m.headers, `${mf}.headers`, 'headers', !scan));
  if (m.contentType !== undefined)
    compiled.contentType = compileContentTypes(m.contentType, `${mf}.contentType`);
  if (m.query !== undefined) fixed.push(...compileCriteria(m.query, `${mf}.query`, 'query', !scan));
  if (m.clientIp !== undefined) fixed.push(compileClientIps(m.clientIp, `${mf}.clientIp`));
  compiled.fixed = fixed;
  return compiled;
}
