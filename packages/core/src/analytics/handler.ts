import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { ServerStatus } from '../engine/pool-group.js';
import type { LogListener } from '../engine/types.js';
import { IcapError, IcapErrorCodes } from '../errors.js';
import { type AnalyticsOverview, summarizeLogs } from './aggregate.js';
import { DATA_CSP, PAGE_CSP, PAGE_HTML } from './page.js';
import { LogRing, type LogRingOptions, type StoredLog } from './ring.js';
import { ANALYTICS_DIMENSIONS, type AnalyticsFilters, type Dimension, type PageViews } from './values.js';

/**
 * The log analytics page as a plain `node:http` handler: an HTML overview of the recent
 * `icap_log` records (counts by action, top threats and rules, per-server and per-pool
 * outcomes with the servers' current health, a latency chart, the significant entries and the
 * records themselves, every value a filter) and the JSON it reads.
 *
 *   const analytics = createLogAnalytics({ engine, guard: loopbackOnly });
 *   createServer((req, res) => analytics.handle(req, res));
 *
 * Off unless built, and never without a `guard`: it decides who may see the records (they
 * hold paths, file names, client addresses and ICAP headers). `() => true` makes it public.
 *
 * Paths below the mount point: `/` the page, `/api/overview?<dimension>=<value>&limit=<n>` the
 * aggregates and the list, `/api/records/<id>` one whole record. Only GET and HEAD.
 */

/** What a guard answers: true lets the request through; false is 403; or an explicit refusal. */
export type AnalyticsGuardResult = boolean | AnalyticsRefusal;

/** A refusal with its status; a 401 may carry the `WWW-Authenticate` challenge to send. */
export interface AnalyticsRefusal {
  status: 401 | 403;
  wwwAuthenticate?: string | undefined;
}

/** Decides whether a request may see the analytics. Anything but `true` (or a throw) refuses. */
export type AnalyticsGuard = (req: IncomingMessage) => AnalyticsGuardResult | Promise<AnalyticsGuardResult>;

/** What the analytics needs of an engine (an `IcapEngine` has it). */
export interface AnalyticsSource {
  readonly profile: { readonly name: string };
  addLogListener(listener: LogListener): () => void;
  /** Records that got the application's HTTP status after delivery (an engine has it). */
  addResponseListener?(listener: LogListener): () => void;
  status(): ServerStatus[];
}

/** An engine, or something that has one (the Express and Koa middlewares: `mw.engine`). */
export type AnalyticsEngine = AnalyticsSource | { readonly engine: AnalyticsSource };

export interface LogAnalyticsOptions extends LogRingOptions {
  /** The engine(s) whose records are kept and whose servers' health is shown. */
  engine: AnalyticsEngine | readonly AnalyticsEngine[];
  /** Required: who may see the page (`loopbackOnly`, `tokenGuard(token)`, your own check, or `() => true`). */
  guard: AnalyticsGuard;
}

export interface LogAnalytics {
  /** The records kept (newest last pushed). */
  readonly ring: LogRing;
  /** Whether `target` (a path below the mount point, with or without a query) is one of the handler's. */
  owns(target: string): boolean;
  /**
   * Answers the request. `target` is its path and query below the mount point (default
   * `req.url`: the handler is mounted at the root). A path that is not one of its own gets 404.
   */
  handle(req: IncomingMessage, res: ServerResponse, target?: string): Promise<void>;
  /** The overview the JSON endpoint answers, for these filters. */
  /** `pageViews: 'hide'` leaves out requests without a body (see `isPageView`). */
  overview(filters?: AnalyticsFilters, limit?: number, pageViews?: PageViews): AnalyticsOverview;
  /** Stops receiving records (the ring keeps what it has). */
  close(): void;
}

/** Longest request target accepted (path and query); longer ones get 414. */
export const MAX_TARGET_LENGTH = 4096;
/** Most filter values in one query. */
export const MAX_FILTER_VALUES = 32;
/** Longest filter value. */
export const MAX_FILTER_VALUE_LENGTH = 512;
/** Records listed at most by one answer (`limit`). */
export const MAX_LIST_LIMIT = 500;
const DEFAULT_LIST_LIMIT = 100;

const COMMON_HEADERS: ReadonlyArray<[string, string]> = [
  ['X-Content-Type-Options', 'nosniff'],
  ['Cache-Control', 'no-store'],
  ['Referrer-Policy', 'no-referrer'],
  ['X-Frame-Options', 'DENY'],
  ['Cross-Origin-Resource-Policy', 'same-origin'],
  ['Cross-Origin-Opener-Policy', 'same-origin'],
];

const DIMENSION_SET: ReadonlySet<string> = new Set(ANALYTICS_DIMENSIONS);

type Route = { kind: 'page' } | { kind: 'overview' } | { kind: 'record'; id: number };

function route(path: string): Route | null {
  if (path === '' || path === '/') return { kind: 'page' };
  if (path === '/api/overview') return { kind: 'overview' };
  const m = /^\/api\/records\/(\d{1,15})$/.exec(path);
  if (m !== null) return { kind: 'record', id: Number(m[1]) };
  return null;
}

function splitTarget(target: string): { path: string; query: string } {
  const q = target.indexOf('?');
  return q === -1 ? { path: target, query: '' } : { path: target.slice(0, q), query: target.slice(q + 1) };
}

/** Filters and list limit from a query string; a message when it is not acceptable. */
export function parseOverviewQuery(
  query: string,
): { filters: AnalyticsFilters; limit: number; pageViews: PageViews } | { error: string } {
  const filters: Partial<Record<Dimension, string[]>> = {};
  let limit = DEFAULT_LIST_LIMIT;
  let pageViews: PageViews = 'show';
  let n = 0;
  for (const [key, value] of new URLSearchParams(query)) {
    if (key === 'pageViews') {
      if (value !== 'show' && value !== 'hide') return { error: "pageViews must be 'show' or 'hide'" };
      pageViews = value;
      continue;
    }
    if (key === 'limit') {
      if (!/^\d{1,4}$/.test(value) || Number(value) < 1 || Number(value) > MAX_LIST_LIMIT)
        return { error: `limit must be an integer from 1 to ${MAX_LIST_LIMIT}` };
      limit = Number(value);
      continue;
    }
    if (!DIMENSION_SET.has(key)) return { error: `unknown filter ${JSON.stringify(key.slice(0, 64))}` };
    if (++n > MAX_FILTER_VALUES) return { error: `at most ${MAX_FILTER_VALUES} filter values` };
    if (value.length > MAX_FILTER_VALUE_LENGTH)
      return { error: `a filter value is longer than ${MAX_FILTER_VALUE_LENGTH} characters` };
    const d = key as Dimension;
    const list = filters[d] ?? [];
    if (!list.includes(value)) list.push(value);
    filters[d] = list;
  }
  return { filters, limit, pageViews };
}

export function createLogAnalytics(options: LogAnalyticsOptions): LogAnalytics {
  const guard = options?.guard;
  if (typeof guard !== 'function') {
    throw new IcapError(
      IcapErrorCodes.INVALID_ARGUMENT,
      'log analytics needs a guard: a function (req) => boolean deciding who may see the records ' +
        '(loopbackOnly, tokenGuard(token), or () => true to make the page public)',
      { field: 'guard' },
    );
  }
  const given: readonly AnalyticsEngine[] = Array.isArray(options.engine)
    ? (options.engine as readonly AnalyticsEngine[])
    : [options.engine as AnalyticsEngine];
  const engines = given.map((e) =>
    (typeof e === 'object' || typeof e === 'function') &&
    e !== null &&
    !('addLogListener' in e) &&
    'engine' in e
      ? e.engine
      : e,
  ) as readonly AnalyticsSource[];
  if (engines.length === 0 || engines.some((e) => typeof e?.addLogListener !== 'function')) {
    throw new IcapError(
      IcapErrorCodes.INVALID_ARGUMENT,
      'log analytics needs the engine (or engines) whose records it shows',
      { field: 'engine' },
    );
  }
  const ring = new LogRing(options);
  // Each stored copy by its original, so the application's status (known when its response
  // finished, after the record was delivered) reaches the copy.
  const copies = new WeakMap<object, StoredLog>();
  const unsubscribe = engines.map((e) => e.addLogListener((log) => copies.set(log, ring.push(log))));
  for (const e of engines) {
    const off = e.addResponseListener?.((log) => {
      const copy = copies.get(log);
      const status = log.http_response_code;
      if (copy !== undefined && copy.log.http_response_code === undefined && status !== undefined) {
        copy.log.http_response_code = status;
        copy.values.status = [String(status)];
      }
    });
    if (off !== undefined) unsubscribe.push(off);
  }
  let closed = false;

  const overview = (
    filters: AnalyticsFilters = {},
    limit = DEFAULT_LIST_LIMIT,
    pageViews: PageViews = 'show',
  ): AnalyticsOverview =>
    summarizeLogs(ring.records(), filters, {
      limit,
      pageViews,
      capacity: ring.capacity,
      health: engines.map((e) => ({ profile: e.profile.name, status: e.status() })),
    });

  const handle = async (
    req: IncomingMessage,
    res: ServerResponse,
    target = req.url ?? '/',
  ): Promise<void> => {
    if (target.length > MAX_TARGET_LENGTH) return send(req, res, 414, 'text', 'URI Too Long\n');
    const { path, query } = splitTarget(target);
    const r = route(path);
    if (r === null) return send(req, res, 404, 'text', 'Not Found\n');
    // A guard that fails (throws, rejects, or answers with an object that throws when read) refuses.
    let refusal: { status: 401 | 403; challenge?: string } | undefined;
    try {
      const verdict: AnalyticsGuardResult = await guard(req);
      if (verdict !== true) {
        refusal = { status: 403 };
        if (typeof verdict === 'object' && verdict !== null && verdict.status === 401) {
          refusal = { status: 401 };
          const challenge: unknown = verdict.wwwAuthenticate;
          if (typeof challenge === 'string' && /^[\x20-\x7e]{1,512}$/.test(challenge))
            refusal.challenge = challenge;
        }
      }
    } catch {
      refusal = { status: 403 };
    }
    if (refusal !== undefined) {
      if (refusal.status === 403) return send(req, res, 403, 'text', 'Forbidden\n');
      const extra: Array<[string, string]> =
        refusal.challenge === undefined ? [] : [['WWW-Authenticate', refusal.challenge]];
      return send(req, res, 401, 'text', 'Unauthorized\n', extra);
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      return send(req, res, 405, 'text', 'Method Not Allowed\n', [['Allow', 'GET, HEAD']]);
    }
    switch (r.kind) {
      case 'page':
        return send(req, res, 200, 'html', PAGE_HTML);
      case 'overview': {
        const q = parseOverviewQuery(query);
        if ('error' in q) return send(req, res, 400, 'json', json({ error: q.error }));
        return send(req, res, 200, 'json', json(overview(q.filters, q.limit, q.pageViews)));
      }
      case 'record': {
        const stored: StoredLog | undefined = ring.get(r.id);
        if (stored === undefined)
          return send(req, res, 404, 'json', json({ error: 'no such record (it may have left the ring)' }));
        return send(req, res, 200, 'json', json(stored));
      }
    }
  };

  return {
    ring,
    owns: (target) => route(splitTarget(target).path) !== null,
    handle,
    overview,
    close: () => {
      if (closed) return;
      closed = true;
      for (const u of unsubscribe) u();
    },
  };
}

/** JSON that is also inert as HTML: `<`, `>`, `&` and the JavaScript line separators escaped. */
function json(value: unknown): string {
  return JSON.stringify(value).replace(
    /[<>&\u2028\u2029]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
}

const TYPES = {
  html: 'text/html; charset=utf-8',
  json: 'application/json; charset=utf-8',
  text: 'text/plain; charset=utf-8',
} as const;

function send(
  req: IncomingMessage,
  res: ServerResponse,
  status: number,
  type: keyof typeof TYPES,
  body: string,
  extra: ReadonlyArray<[string, string]> = [],
): void {
  if (res.headersSent) {
    res.end();
    return;
  }
  const bytes = Buffer.from(body, 'utf8');
  const headers: Array<[string, string]> = [
    ['Content-Type', TYPES[type]],
    ['Content-Length', String(bytes.length)],
    ['Content-Security-Policy', type === 'html' ? PAGE_CSP : DATA_CSP],
    ...COMMON_HEADERS,
    ...extra,
  ];
  res.writeHead(status, headers.flat());
  res.end(req.method === 'HEAD' ? undefined : bytes);
}

// ---------------------------------------------------------------------------- guards

/** Whether an address is the local host (127.0.0.0/8, ::1, or IPv4-mapped 127.x). */
export function isLoopbackAddress(address: string | undefined): boolean {
  if (address === undefined) return false;
  const a = address.toLowerCase().replace(/^::ffff:/, '');
  return a === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(a);
}

/**
 * Whether a Host (or HTTP/2 :authority) value names the local host: `localhost`, a 127.x
 * address or `[::1]`, with or without a port.
 */
export function isLoopbackHost(host: string | undefined): boolean {
  if (host === undefined) return false;
  const h = host.trim().toLowerCase();
  const name = h.startsWith('[') ? h.slice(0, h.indexOf(']') + 1) : h.replace(/:\d*$/, '');
  if (h.length !== name.length && !/^:\d{1,5}$/.test(h.slice(name.length))) return false;
  return name === 'localhost' || name === '[::1]' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(name);
}

/**
 * A guard that lets only connections from the local host through: the TCP peer is the local
 * host (not any forwarded header), and so is the name the request was sent to (Host, or
 * HTTP/2's :authority), so that a browser on this host cannot be led to the page by a name an
 * attacker's DNS points at 127.0.0.1 (DNS rebinding). Behind a reverse proxy on the same host
 * every request is local: use a token there.
 */
export const loopbackOnly: AnalyticsGuard = (req) =>
  isLoopbackAddress(req.socket?.remoteAddress) &&
  isLoopbackHost(req.headers.host ?? (req.headers[':authority'] as string | undefined));

export interface TokenGuardOptions {
  /** Realm of the Basic challenge the browser shows. Default 'icapkit log analytics'. */
  realm?: string | undefined;
}

/**
 * A guard that wants a secret token: `Authorization: Bearer <token>` (scripts, curl), or HTTP
 * Basic with the token as password and any user name (a browser asks for it, since a refusal
 * is a 401 with a Basic challenge). Compared in constant time. The token must have at least 16
 * characters.
 */
export function tokenGuard(token: string, options: TokenGuardOptions = {}): AnalyticsGuard {
  if (typeof token !== 'string' || token.length < 16) {
    throw new IcapError(
      IcapErrorCodes.INVALID_ARGUMENT,
      'the log analytics token must be a string of at least 16 characters',
      { field: 'token' },
    );
  }
  const realm = options.realm ?? 'icapkit log analytics';
  if (!/^[\x20-\x7e]{1,100}$/.test(realm) || /["\\]/.test(realm)) {
    throw new IcapError(
      IcapErrorCodes.INVALID_ARGUMENT,
      'the realm must be printable ASCII without quotes or backslashes',
      { field: 'realm' },
    );
  }
  const digest = (s: string) => createHash('sha256').update(s, 'utf8').digest();
  const expected = digest(token);
  const refusal = { status: 401, wwwAuthenticate: `Basic realm="${realm}", charset="UTF-8"` } as const;
  return (req) => {
    const header = req.headers.authorization;
    if (typeof header !== 'string' || header.length > 4096) return refusal;
    const m = /^(Bearer|Basic)[ \t]+(\S+)[ \t]*$/i.exec(header);
    if (m === null) return refusal;
    let presented: string;
    if (m[1]!.toLowerCase() === 'bearer') presented = m[2]!;
    else {
      const decoded = Buffer.from(m[2]!, 'base64').toString('utf8');
      const colon = decoded.indexOf(':');
      if (colon === -1) return refusal;
      presented = decoded.slice(colon + 1);
    }
    return timingSafeEqual(digest(presented), expected) ? true : refusal;
  };
}
