import { absoluteAuthority, percentDecode } from './paths.js';
import type { ContentTypeTest, EvalContext, HostTest, RequestFacts } from './types.js';
import { METHOD_OVERRIDE_HEADERS, METHOD_OVERRIDE_PARAM } from './types.js';

// ---------------------------------------------------------------------------------------------
// Readings of a request

/**
 * The method as received, every method-override header value, every `_method` query parameter
 * (method-override's documented query getter, `methodOverride('_method')`, reads it), upper-cased.
 * A form body (urlencoded or multipart) may carry a `_method` field too (the Rails/Laravel
 * convention, method-override with a body getter), which a body parser reads after icapkit
 * decided: such a request has every method a rule names among its readings. A method no rule
 * names is reduced to undefined (it matches no method list), which bounds the readings by the
 * configuration however many override values a request carries.
 */
export function methodReadings(facts: RequestFacts, known: ReadonlySet<string>): Array<string | undefined> {
  const canon = (m: string): string | undefined => {
    const u = m.trim().toUpperCase();
    return known.has(u) ? u : undefined;
  };
  const out: Array<string | undefined> = [canon(facts.method)];
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
  if (facts.hasBody && facts.headers.getAll('content-type').some((v) => /urlencoded|multipart/i.test(v))) {
    for (const m of known) if (!out.includes(m)) out.push(m);
  }
  return out;
}

/** Host header (or :authority) and the authority of an absolute-form target, normalized. */
export function hostReadings(facts: RequestFacts): Array<string | undefined> {
  const header = facts.host === undefined ? undefined : normalizeRequestHost(facts.host);
  const authority = absoluteAuthority(facts.target);
  const fromTarget = authority === undefined ? undefined : normalizeRequestHost(authority);
  if (fromTarget === undefined || fromTarget === header) return [header];
  if (header === undefined) return [fromTarget];
  return [header, fromTarget];
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
 */
export function contentTypeReadings(facts: RequestFacts, known: ContentTypeTest): Array<string | undefined> {
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

export function contentTypeMatches(test: ContentTypeTest, key: string | undefined): boolean {
  if (key === undefined) return false;
  if (test.any || test.exact.has(key)) return true;
  const slash = key.indexOf('/');
  return slash > 0 && test.majors.has(key.slice(0, slash));
}

export function queryOf(ctx: EvalContext): Map<string, string[]> {
  ctx.query ??= parseQuery(ctx.facts.target);
  return ctx.query;
}

/** Query parameters by decoded name (`+` is a space, %XX decoded leniently), values in order. */
export function parseQuery(target: string): Map<string, string[]> {
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

export function decodeQueryPart(s: string): string {
  return percentDecode(s.includes('+') ? s.replaceAll('+', ' ') : s);
}
