import { isUtf8 } from 'node:buffer';
import { parse as legacyParse } from 'node:url';
import { MAX_PATH_STATES, PATH_READING_BUDGET } from './types.js';

// ---------------------------------------------------------------------------------------------
// Path readings

/**
 * The readings of a request target's path an application or a proxy in front of it might route
 * on, deduplicated, the raw path first:
 * - the raw path: query and fragment removed; for an absolute-form target its path part
 *   (`/` when empty), and also what follows the first `/` after `scheme://` when that differs
 *   ({@link firstSlashPath}), and the path Node's legacy `url.parse()` reads when it ends the
 *   authority earlier ({@link legacyUrlPath}), and for another scheme than http(s) the target
 *   itself ({@link otherSchemePaths}); also with a leading '/' when it has none;
 * - closed under: percent-decoding (at most twice, so `%252e` becomes `.`; `%2F` and `%5C`
 *   included; invalid escapes kept; UTF-8 when the bytes are UTF-8, else Latin-1), backslashes
 *   as slashes, dot segments removed per RFC 3986 §5.2.4 (`%2e` counting as `.`), repeated
 *   slashes collapsed, `;params` removed from segments, the path cut at its first `;`; each in
 *   any order;
 * - and each of those without a trailing slash.
 *
 * At most MAX_PATH_STATES readings and PATH_READING_BUDGET characters of them are made: past
 * either the list is cut short (see {@link pathReadings}, which says so).
 */
export function pathCandidates(target: string): string[] {
  return pathReadings(target).paths;
}

/**
 * {@link pathCandidates}, and whether the list is all of them. A path a client wrote to have
 * more readings than the limits (thousands of `%`, `\`, `;` and `//` in 16 KiB) gets a list cut
 * short, which may miss the reading its application routes on: the policy then scans it
 * (policy.ts). The budget in characters bounds the work per request (a 16 KiB path of 256
 * readings cost 49 ms before it: 5 transforms of each).
 */
export function pathReadings(target: string): { paths: string[]; complete: boolean } {
  const raw = rawPath(target);
  // (An origin-form target, the usual case, has no other raw path.)
  const absolute = target.charCodeAt(0) !== 0x2f;
  const cut = absolute ? firstSlashPath(target, raw) : undefined;
  const legacy = absolute ? legacyUrlPath(target, raw) : protocolRelativePath(target, raw);
  const scheme = absolute ? otherSchemePaths(target) : NO_PATHS;
  if (cut === undefined && legacy === undefined && scheme.length === 0 && isPlainPath(raw))
    return { paths: [raw], complete: true };

  const out = new Set<string>();
  const add = (s: string) => {
    out.add(s);
    const t = trimTrailingSlashes(s);
    if (t !== s) out.add(t);
  };
  // A reading and how many decodings it may still go through.
  const states = new Map<string, number>();
  const queue: Array<[string, number]> = [];
  let chars = 0;
  let complete = true;
  const push = (s: string, decodes: number) => {
    const known = states.get(s);
    if (known !== undefined && known >= decodes) return;
    if (known === undefined) {
      // (The raw path always: a longer one than the budget has that reading, and no other.)
      if (states.size >= MAX_PATH_STATES || (states.size > 0 && chars + s.length > PATH_READING_BUDGET)) {
        complete = false;
        return;
      }
      chars += s.length;
    }
    states.set(s, decodes);
    queue.push([s, decodes]);
  };
  push(raw, 2);
  if (!raw.startsWith('/')) push(`/${raw}`, 2);
  if (cut !== undefined) push(cut, 2);
  for (const other of legacy === undefined ? scheme : [legacy, ...scheme]) {
    push(other, 2);
    if (!other.startsWith('/')) push(`/${other}`, 2);
  }
  // Once a reading is left out the list is incomplete whatever follows: no more work on it.
  for (let i = 0; i < queue.length && complete; i++) {
    const [s, decodes] = queue[i]!;
    add(s);
    push(backslashesToSlashes(s), decodes);
    push(removeDotSegments(s), decodes);
    push(collapseSlashes(s), decodes);
    push(removeParams(s), decodes);
    push(cutAtSemicolon(s), decodes);
    if (decodes > 0) push(percentDecode(s), decodes - 1);
  }
  return { paths: [...out], complete };
}

export function rawPath(target: string): string {
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

/**
 * The path of an absolute-form target as routers before find-my-way 9.10 read it (Fastify 5
 * accepts those): everything up to the first `/` after `scheme://` is the authority
 * (`/^https?:\/\/.*?\//`), so `http://h?x/upload` is `/upload` to them where RFC 3986 (and
 * `rawPath`) reads the path `/` and the query `?x/upload`. Undefined when it is the same path.
 */
export function firstSlashPath(target: string, raw: string): string | undefined {
  const scheme = SCHEME.exec(target);
  if (scheme === null) return undefined;
  const slash = target.indexOf('/', scheme[0].length);
  if (slash === -1) return undefined;
  let end = slash;
  for (; end < target.length; end++) {
    const c = target.charCodeAt(end);
    if (c === 0x3f || c === 0x23) break;
  }
  const path = target.slice(slash, end);
  return path === raw ? undefined : path;
}

/**
 * The path Node's legacy `url.parse()` reads in an origin-form target that starts with `//` or
 * `/\\`: parseurl (Express 4/5, Koa, Nest on Express) falls back to it for a target holding a `#`
 * or white space, and it reads `//user@host` (backslashes as slashes first) as an authority:
 * `POST //a@b/upload#x` is routed to `/upload` (campaign-bt BT2: EICAR delivered past an
 * enable-icap rule on `/upload`). Undefined when it reads the raw path, or none.
 */
export function protocolRelativePath(target: string, raw: string): string | undefined {
  const second = target.charCodeAt(1);
  if (second !== 0x2f && second !== 0x5c) return undefined;
  let path: string | null;
  try {
    path = legacyParse(target).pathname;
  } catch {
    return undefined;
  }
  return path === null || path === raw ? undefined : path;
}

/**
 * What Node's legacy `url.parse()` (parseurl: Express 4 and 5's `req.path` and routing, Koa's
 * `ctx.path`) reads as the path of an absolute-form target, when it ends the authority before
 * the first `/`, `\`, `?` or `#` (campaign-bq BQ1). After the userinfo (to the last `@`), it
 * ends the host at the first character RFC 2396 never allows in one (`%`, `;`, `'`, `"`, `<`,
 * `>`, `^`, `` ` ``, `{`, `|`, `}`, space, tab, CR, LF) and reads the path from there
 * (`http://h%2Fwebhooks/x` is `%2Fwebhooks/x`, `http://h;x/webhooks` is `;x/webhooks`); and
 * a host with a `:` but no port after it (`h:80x`) is cut at that `:` and read as a path
 * segment (`/:80x/...`). Undefined when it reads the same path as {@link rawPath}.
 */
export function legacyUrlPath(target: string, raw: string): string | undefined {
  const scheme = SCHEME.exec(target);
  if (scheme === null) return undefined;
  const start = scheme[0].length;
  const end = authorityEnd(target, start);
  const authority = target.slice(start, end);
  const hostStart = authority.lastIndexOf('@') + 1;
  let cut = hostStart;
  while (cut < authority.length && !NON_HOST.includes(authority[cut]!)) cut++;
  const host = authority.slice(hostStart, cut);
  let path = authority.slice(cut);
  if (!(host.startsWith('[') && host.endsWith(']'))) {
    const port = /:[0-9]*$/.exec(host);
    const name = port === null ? host : host.slice(0, port.index);
    const colon = name.indexOf(':');
    if (colon !== -1) path = `/${name.slice(colon)}${path}`;
  }
  if (path === '') return undefined;
  let pathEnd = end;
  for (; pathEnd < target.length; pathEnd++) {
    const c = target.charCodeAt(pathEnd);
    if (c === 0x3f || c === 0x23) break;
  }
  path += target.slice(end, pathEnd);
  return path === raw ? undefined : path;
}

const NO_PATHS: readonly string[] = [];

/**
 * The paths of an absolute-form target of another scheme than `http` or `https` (campaign-bq
 * BQ3): find-my-way (Fastify) takes only those two as absolute and routes any other target as
 * it is (`foo://h/webhooks` up to its `?`), and legacy `url.parse()` (Express, Koa) reads no
 * host after `javascript:` (`javascript://h/webhooks` is `//h/webhooks` to them).
 */
export function otherSchemePaths(target: string): readonly string[] {
  const scheme = SCHEME.exec(target);
  if (scheme === null) return NO_PATHS;
  const name = scheme[0].slice(0, -3).toLowerCase();
  if (name === 'http' || name === 'https') return NO_PATHS;
  let end = 0;
  for (; end < target.length; end++) {
    const c = target.charCodeAt(end);
    if (c === 0x3f || c === 0x23) break;
  }
  const whole = target.slice(0, end);
  return name === 'javascript' ? [whole, whole.slice(name.length + 1)] : [whole];
}

/** What legacy `url.parse()` never takes as part of a host (it starts the path there). */
const NON_HOST = '%;\'"<>^`{|} \t\r\n';

/** True when no reading can differ from the path itself. */
export function isPlainPath(p: string): boolean {
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

export function trimTrailingSlashes(s: string): string {
  let end = s.length;
  while (end > 1 && s.charCodeAt(end - 1) === 0x2f) end--;
  return end === s.length ? s : s.slice(0, end);
}

export function backslashesToSlashes(s: string): string {
  return s.includes('\\') ? s.replaceAll('\\', '/') : s;
}

export function collapseSlashes(s: string): string {
  return s.includes('//') ? s.replace(/\/{2,}/g, '/') : s;
}

/**
 * `/a;x/b` -> `/a`: find-my-way with useSemicolonDelimiter (a Fastify option, Fastify 4's
 * default) ends the path at its first `;` (campaign-bq BQ7).
 */
export function cutAtSemicolon(s: string): string {
  const semi = s.indexOf(';');
  return semi === -1 ? s : s.slice(0, semi);
}

/** `/a;x=1/b;y` -> `/a/b`. */
export function removeParams(s: string): string {
  return s.includes(';') ? s.replace(/;[^/]*/g, '') : s;
}

/** 0: not a dot segment, 1: `.`, 2: `..` (`%2e` counting as a dot). */
export function dotSegment(seg: string): 0 | 1 | 2 {
  if (seg === '.') return 1;
  if (seg === '..') return 2;
  if (seg.length < 3 || seg.length > 6) return 0;
  const s = seg.toLowerCase();
  if (s === '%2e') return 1;
  if (s === '.%2e' || s === '%2e.' || s === '%2e%2e') return 2;
  return 0;
}

/** RFC 3986 §5.2.4 on an absolute path; other strings are returned as they are. */
export function removeDotSegments(path: string): string {
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

export function isHexDigit(c: number): boolean {
  return (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x46) || (c >= 0x61 && c <= 0x66);
}

/** True when a valid %XX escape starts at `i`. */
export function isEscapeAt(s: string, i: number): boolean {
  return (
    s.charCodeAt(i) === 0x25 &&
    i + 2 < s.length &&
    isHexDigit(s.charCodeAt(i + 1)) &&
    isHexDigit(s.charCodeAt(i + 2))
  );
}

/** Decodes every %XX once; invalid escapes stay as they are. */
export function percentDecode(s: string): string {
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

export function bytesToString(bytes: number[]): string {
  if (bytes.every((b) => b < 0x80)) {
    let s = '';
    for (const b of bytes) s += String.fromCharCode(b);
    return s;
  }
  const buf = Buffer.from(bytes);
  return buf.toString(isUtf8(buf) ? 'utf8' : 'latin1');
}

// The authority of an absolute-form target (read here for the path, and by readings.ts for the host).

export const SCHEME = /^[A-Za-z][A-Za-z0-9+.-]*:\/\//;

/** The authority of an absolute-form target (`http://h:80/p` -> `h:80`), else undefined. */
export function absoluteAuthority(target: string): string | undefined {
  const scheme = SCHEME.exec(target);
  if (scheme === null) return undefined;
  const start = scheme[0].length;
  return target.slice(start, authorityEnd(target, start));
}

/** Index where an authority starting at `start` ends: at `/`, `\`, `?` or `#`. */
export function authorityEnd(target: string, start: number): number {
  let i = start;
  for (; i < target.length; i++) {
    const c = target.charCodeAt(i);
    if (c === 0x2f || c === 0x5c || c === 0x3f || c === 0x23) break;
  }
  return i;
}
