import { absoluteAuthority, percentDecode } from './paths.js';
import type { ContentTypeTest, EvalContext, HostTest, RequestFacts } from './types.js';
import { METHOD_OVERRIDE_HEADERS, METHOD_OVERRIDE_PARAM } from './types.js';

// ---------------------------------------------------------------------------------------------
// Readings of a request

/**
 * The method as received (a HEAD also as GET), every method-override header value, every `_method` query parameter
 * (method-override's documented query getter, `methodOverride('_method')`, reads it), upper-cased.
 * A body a parser turns into named fields may carry a `_method` field too (the Rails/Laravel
 * convention, method-override's body getter `(req) => req.body._method`), which the application
 * reads after icapkit decided: such a request has every method a rule names among its readings.
 * Those are the bodies whose Content-Type mentions `json` (express.json and koa-body take any
 * `+json` type, formidable `/json/i`), `urlencoded`, `multipart` or `csp-report` (a JSON type
 * of koa-body's): the types body parsers pick by default. A method no rule names is reduced to
 * undefined (it matches no method list), which bounds the readings by the configuration however
 * many override values a request carries.
 */
export function methodReadings(facts: RequestFacts, known: ReadonlySet<string>): Array<string | undefined> {
  const canon = (m: string): string | undefined => {
    const u = m.trim().toUpperCase();
    return known.has(u) ? u : undefined;
  };
  const out: Array<string | undefined> = [canon(facts.method)];
  // Routers serve HEAD by GET routes (Express runs the GET handler, which may read a body that
  // HEAD carries; Fastify's exposeHeadRoutes, @koa/router and Hono too): HEAD reads as GET
  // too (campaign-bq BQ5).
  if (facts.method.trim().toUpperCase() === 'HEAD') {
    const get = canon('GET');
    if (!out.includes(get)) out.push(get);
  }
  const add = (value: string): void => {
    for (const part of value.split(',')) {
      if (part.trim() === '') continue;
      const m = canon(part);
      if (!out.includes(m)) out.push(m);
    }
  };
  for (const h of METHOD_OVERRIDE_HEADERS) for (const value of facts.headers.getAll(h)) add(value);
  if (facts.target.includes('?'))
    for (const value of parseQuery(facts.target).get(METHOD_OVERRIDE_PARAM) ?? []) add(value);
  if (facts.hasBody && facts.headers.getAll('content-type').some((v) => FIELDS_BODY.test(v))) {
    for (const m of known) if (!out.includes(m)) out.push(m);
  }
  return out;
}

/** A Content-Type some body parser reads as named fields (where a `_method` field can be). */
const FIELDS_BODY = /json|urlencoded|multipart|csp-report/i;

/**
 * Every host an application may read the request as, normalized and as sent (a bracketed IPv6
 * literal without its brackets, as rules list it): the Host field (Express,
 * Fastify), `:authority` (Koa and @hono/node-server prefer it on HTTP/2), the first and the last
 * entry of `X-Forwarded-Host` (Express with `trust proxy` and Koa with `proxy` take the first,
 * Fastify with `trustProxy` the last: icapkit cannot know whether the application trusts it)
 * and the authority of an absolute-form target. A value frameworks do not all read alike (not
 * letters, digits, `.`, `-`, `_` or an IP literal, with a port or not: `api:1@static` is
 * `api` to Express and Fastify and `static` to a URL parser, `a,b` is `a` to Koa, `%61` and
 * `0x7f.1` are decoded by URL parsers) could be any host: its readings are `every`, one host
 * for each way the rules tell hosts apart (see policy.ts), so a skip rule on a host never
 * skips it when another rule would scan some host.
 */
export function hostReadings(
  facts: RequestFacts,
  every: ReadonlyArray<string | undefined>,
): ReadonlyArray<string | undefined> {
  const out: Array<string | undefined> = [];
  const add = (raw: string): boolean => {
    if (!isPlainHost(raw)) return false;
    const h = normalizeRequestHost(raw);
    if (!out.includes(h)) out.push(h);
    // As sent too (campaign-bj BJ3): find-my-way's host constraint compares the field as sent
    // (case, port), Express's req.hostname keeps a trailing dot, so a host rule's name does
    // not reach the application's host routing in another spelling. A rule names a host in
    // lower case without port or trailing dot: only that spelling matches it as sent (under a
    // `*.domain` rule, the domain so spelt).
    const sent = raw.charCodeAt(0) === 0x5b && raw.endsWith(']') ? raw.slice(1, -1) : raw;
    if (!out.includes(sent)) out.push(sent);
    return true;
  };
  const headers = facts.headers;
  if (facts.host !== undefined && !add(facts.host)) return every;
  for (const v of headers.getAll('host')) if (!add(v)) return every;
  for (const v of headers.getAll(':authority')) if (!add(v)) return every;
  const forwarded = headers.getAll('x-forwarded-host');
  if (forwarded.length > 0) {
    const list = forwarded.join(',').split(',');
    if (!add(list[0]!.trim()) || !add(list[list.length - 1]!.trim())) return every;
  }
  const authority = absoluteAuthority(facts.target);
  if (authority !== undefined && !add(authority)) return every;
  if (out.length === 0) out.push(undefined);
  return out;
}

/** `host[:port]`, the host a name of letters, digits, `.`, `-`, `_` (`''` too) or a bracketed IPv6. */
const PLAIN_HOST = /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]*)(?::[0-9]*)?$/;

/**
 * A Host every framework reads as the same name: PLAIN_HOST, and not a name a URL parser
 * would read as another IPv4 address (a last label that is a number: `0x7f.1`, `2130706433`,
 * `127.1` are 127.0.0.1 to `new URL()`, unless it is the dotted quad itself).
 */
export function isPlainHost(raw: string): boolean {
  if (!PLAIN_HOST.test(raw)) return false;
  if (raw.charCodeAt(0) === 0x5b) return true;
  const colon = raw.indexOf(':');
  let name = colon === -1 ? raw : raw.slice(0, colon);
  while (name.endsWith('.')) name = name.slice(0, -1);
  const last = name.slice(name.lastIndexOf('.') + 1);
  if (!/^(?:[0-9]+|0x[0-9a-f]*)$/i.test(last)) return true;
  return /^(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])$/.test(
    name,
  );
}

/** Lower case, without port, brackets, userinfo or a trailing dot. */
export function normalizeRequestHost(raw: string): string {
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

export function hostMatches(test: HostTest, host: string | undefined): boolean {
  if (host === undefined) return false;
  if (test.exact.has(host)) return true;
  for (const s of test.suffixes) if (host.length > s.length && host.endsWith(s)) return true;
  return false;
}

/**
 * The media type of every Content-Type field, each reduced to what the configured lists can
 * tell apart: a listed type, `major/*` for a listed major, `*∕*` for any other when a rule lists
 * `*∕*`, else undefined (like no Content-Type at all). Without a Content-Type: [undefined].
 * A value that mentions `multipart`, `json` (or `csp-report`), `urlencoded` or `octet-stream`
 * anywhere (in a parameter too) also reads as multipart/form-data, application/json,
 * application/x-www-form-urlencoded or application/octet-stream: formidable picks its parser
 * with `/multipart/i`, `/json/i`, `/urlencoded/i` and `/octet-stream/i` on the whole value, so
 * `image/png; x=multipart; boundary=b` is a form to it (a request scanned for it is then
 * refused by admission: a multipart mention that is not a multipart type is a 415).
 */
export function contentTypeReadings(facts: RequestFacts, known: ContentTypeTest): Array<string | undefined> {
  const values = facts.headers.getAll('content-type');
  if (values.length === 0) return [undefined];
  const out: Array<string | undefined> = [];
  const read = (media: string): void => {
    const slash = media.indexOf('/');
    const major = slash === -1 ? media : media.slice(0, slash);
    let key: string | undefined;
    if (known.exact.has(media)) key = media;
    else if (slash > 0 && known.majors.has(major)) key = `${major}/*`;
    else if (media !== '' && known.any) key = '*/*';
    if (!out.includes(key)) out.push(key);
  };
  for (const value of values) {
    const semi = value.indexOf(';');
    read((semi === -1 ? value : value.slice(0, semi)).trim().toLowerCase());
    for (const [mention, media] of PARSER_MENTIONS) if (mention.test(value)) read(media);
  }
  return out;
}

/**
 * What formidable's plugins look for in a Content-Type value, and the type they parse it as;
 * and `csp-report`, a JSON type to co-body, koa-body and @koa/bodyparser by default (their
 * other default JSON types, `application/json-patch+json`, `application/vnd.api+json`,
 * `application/scim+json`, mention `json`) (campaign-bj BJ4).
 */
const PARSER_MENTIONS: ReadonlyArray<readonly [RegExp, string]> = [
  [/multipart/i, 'multipart/form-data'],
  [/json/i, 'application/json'],
  [/csp-report/i, 'application/json'],
  [/urlencoded/i, 'application/x-www-form-urlencoded'],
  [/octet-stream/i, 'application/octet-stream'],
];

export function contentTypeMatches(test: ContentTypeTest, key: string | undefined): boolean {
  if (key === undefined) return false;
  if (test.any || test.exact.has(key)) return true;
  const slash = key.indexOf('/');
  return slash > 0 && test.majors.has(key.slice(0, slash));
}

/**
 * The query as each parser reads it ({@link queryStrings}), parsed ({@link parseQueryString}):
 * one map for most targets, never none (a target without a query has an empty one).
 */
export function queryReadingsOf(ctx: EvalContext): ReadonlyArray<Map<string, string[]>> {
  ctx.query ??= queryStrings(ctx.facts.target).map(parseQueryString);
  return ctx.query;
}

/**
 * The query strings parsers read in `target`, deduplicated, at least one (campaign-br BR1):
 * - after the first `?`, up to a `#` after it (WHATWG URL, Express, Koa, Hono);
 * - find-my-way's (Fastify, Nest on Fastify): from the first `?` or `#` to the end, the fragment
 *   included (`/store#type=upload` has `type=upload` to it);
 * - find-my-way's with `useSemicolonDelimiter`: from the first `?`, `#` or `;` (`/store;type=upload`).
 */
export function queryStrings(target: string): string[] {
  const out = [queryAsSent(target)];
  if (!target.includes('#') && !target.includes(';')) return out;
  const router = firstOf(target.indexOf('?', 1), target.indexOf('#', 1));
  const semicolon = firstOf(router, target.indexOf(';', 1));
  for (const cut of [router, semicolon]) {
    if (cut === -1) continue;
    const query = target.slice(cut + 1);
    if (!out.includes(query)) out.push(query);
  }
  return out;
}

/** The lesser of two indexOf results, -1 when both are. */
function firstOf(a: number, b: number): number {
  return a === -1 || (b !== -1 && b < a) ? b : a;
}

/** The query after the first `?` up to a `#` after it, parsed ({@link parseQueryString}). */
export function parseQuery(target: string): Map<string, string[]> {
  return parseQueryString(queryAsSent(target));
}

/** The query after the first `?` up to a `#` after it (Express, Koa, Hono); '' without one. */
function queryAsSent(target: string): string {
  const q = target.indexOf('?');
  if (q === -1) return '';
  const hash = target.indexOf('#', q);
  return target.slice(q + 1, hash === -1 ? undefined : hash);
}

/**
 * Query parameters by decoded name (`+` is a space, %XX decoded leniently), values in order. A
 * name written another way is a value of its plain name too ({@link plainName}: qs merges
 * `type[]`, `type[k]` and `[type]` into `type`: campaign-bn BN2, campaign-bp BP3), and so is the
 * first name after a `?` that opens the query (`??type=x`: Koa's URLSearchParams drops it, BP1).
 */
export function parseQueryString(query: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  if (query === '') return out;
  const add = (name: string, value: string) => {
    const values = out.get(name);
    if (values === undefined) out.set(name, [value]);
    else values.push(value);
  };
  const parts = query.split('&');
  for (let i = 0; i < parts.length; i++) {
    const part = parts[i]!;
    if (part === '') continue;
    const eq = part.indexOf('=');
    const name = decodeQueryPart(eq === -1 ? part : part.slice(0, eq));
    const value = eq === -1 ? '' : decodeQueryPart(part.slice(eq + 1));
    add(name, value);
    for (const other of otherNames(name, i === 0)) add(other, value);
  }
  return out;
}

/** The plain name a query parser may read `name` as: `type[]`, `type[k]`, `[type]`, `type.x`: `type`. */
function plainName(name: string): string {
  let n = name;
  if (n.startsWith('[')) {
    const close = n.indexOf(']');
    n = close === -1 ? n.slice(1) : n.slice(1, close) + n.slice(close + 1);
  }
  const cut = n.search(/[[.\]]/);
  return cut >= 0 ? n.slice(0, cut) : n;
}

/**
 * The top-level name qs reads a query name as (its parseKeys): the text before the first
 * `[...]` segment (one without brackets inside), or that segment's content when no text comes
 * before it, whatever follows: `[type]x` and `[type]type` are `type` to it (campaign-bq BQ4).
 */
function qsRoot(name: string): string {
  const segment = /\[[^[\]]*]/.exec(name);
  if (segment === null) return name;
  return segment.index > 0 ? name.slice(0, segment.index) : segment[0].slice(1, -1);
}

/** The names other than itself a parser may read a query name as (`first`: the query's first). */
function otherNames(name: string, first: boolean): string[] {
  const out: string[] = [];
  const add = (n: string) => {
    for (const other of [plainName(n), qsRoot(n)])
      if (other !== name && other !== '' && !out.includes(other)) out.push(other);
  };
  add(name);
  if (first && name.startsWith('?') && name.length > 1) {
    const rest = name.slice(1);
    out.push(rest);
    add(rest);
  }
  return out;
}

/**
 * The query names a skip rule's criterion cannot vouch for, where query parsers read the query
 * apart (campaign-bo, campaign-bp): null (none can) when the target has a `#` (find-my-way keeps
 * it in the query, Express reads a query after it, icapkit cut it), a `;` before its query
 * (find-my-way's useSemicolonDelimiter reads the query from there) or 1000 parameters or more
 * (qs' parameterLimit and querystring's maxKeys drop the rest); else the names written another
 * way too ({@link otherNames}), and a name whose value holds `]=` (qs splits the part there:
 * `type=webhook]=x` is no `type` to it), each under its plain name.
 */
export function queryOddOf(ctx: EvalContext): ReadonlySet<string> | null {
  if (ctx.queryOdd === undefined) ctx.queryOdd = oddQueryNames(ctx.facts.target);
  return ctx.queryOdd;
}

const NO_ODD_NAMES: ReadonlySet<string> = new Set();

function oddQueryNames(target: string): ReadonlySet<string> | null {
  if (target.includes('#')) return null;
  const q = target.indexOf('?');
  // A `;` before the query: find-my-way with useSemicolonDelimiter (a Fastify option, Fastify
  // 4's default) ends the path there and reads the query from it (campaign-bq BQ6).
  if ((q === -1 ? target : target.slice(0, q)).includes(';')) return null;
  if (q === -1) return NO_ODD_NAMES;
  // (Without a `#` and a `;` before the `?`, every parser reads this one query: queryStrings.)
  const parts = target.slice(q + 1).split('&');
  if (parts.length >= 1000) return null;
  let odd: Set<string> | undefined;
  for (let i = 0; i < parts.length; i++) {
    const part = parts[i]!;
    const eq = part.indexOf('=');
    const name = decodeQueryPart(eq === -1 ? part : part.slice(0, eq));
    const others = otherNames(name, i === 0);
    if (eq !== -1 && decodeQueryPart(part.slice(eq + 1)).includes(']='))
      others.push(name, plainName(name), qsRoot(name));
    // An escape that does not decode (a lone `%`, bytes that are not UTF-8) in the name or the
    // value: qs and fast-querystring keep the whole part as sent, querystring and URLSearchParams
    // write U+FFFD for it, icapkit Latin-1: `type=w%65b%` is `web%` here and `w%65b%` to Express 4
    // and Fastify (campaign-bq BQ2).
    if (!decodesCleanly(part)) others.push(name, plainName(name), qsRoot(name));
    if (others.length === 0) continue;
    odd ??= new Set();
    for (const o of others) odd.add(o);
  }
  return odd ?? NO_ODD_NAMES;
}

/** Whether every escape of a query part decodes (as UTF-8): where all parsers decode it alike. */
function decodesCleanly(part: string): boolean {
  if (!part.includes('%')) return true;
  try {
    decodeURIComponent(part);
    return true;
  } catch {
    return false;
  }
}

export function decodeQueryPart(s: string): string {
  return percentDecode(s.includes('+') ? s.replaceAll('+', ' ') : s);
}
