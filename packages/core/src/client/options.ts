import { type Headers, splitList } from '../protocol/headers.js';
import { untilAborted } from './abort.js';
import type { IcapResponse } from './transaction-types.js';

/** A service's capabilities, from its OPTIONS response (RFC 3507 §4.10). */
export interface IcapServiceOptions {
  /** ICAP methods the service supports (`Methods`). */
  methods: string[];
  istag: string | undefined;
  service: string | undefined;
  serviceId: string | undefined;
  /** Preview bytes the server wants (`Preview`); undefined: the server does not take previews. */
  preview: number | undefined;
  /** The server can answer 204 outside a preview (`Allow: 204`). */
  allow204: boolean;
  /** `Max-Connections`, when given. */
  maxConnections: number | undefined;
  /** `Options-TTL` in seconds, when given. */
  optionsTtl: number | undefined;
  transferPreview: string[];
  transferIgnore: string[];
  transferComplete: string[];
  /** Headers the server asks clients to add (`X-Include`). */
  include: string[];
  headers: Headers;
  rawHeaders: string;
  /**
   * Headers RFC 3507 §4.10.2 requires in an OPTIONS response that it lacks (`ISTag`,
   * `Methods`): the answer is used, but the server is misconfigured or not an ICAP server.
   */
  missingHeaders: string[];
  /**
   * Numeric headers (`Preview`, `Max-Connections`, `Options-TTL`) whose value is not a whole
   * number, as `Name: "value"`: each is read as absent (no preview, no limit, the default TTL).
   */
  malformedHeaders: string[];
  /** Epoch ms. */
  fetchedAt: number;
  /** Epoch ms after which these options must be fetched again. */
  expiresAt: number;
}

export type TransferPolicy = 'preview' | 'complete' | 'ignore';

/** Reads an OPTIONS response. `defaultTtl` (ms) applies when the server sends no `Options-TTL`. */
export function parseOptions(res: IcapResponse, defaultTtl: number, now = Date.now()): IcapServiceOptions {
  const h = res.headers;
  const methods = splitList(h.get('methods')).map((m) => m.toUpperCase());
  // A malformed number is read as absent (as Squid does), and named: a typo in one header must
  // not make the server unusable (and every request take the failure action).
  const malformedHeaders: string[] = [];
  const int = (name: string): number | undefined => {
    const v = h.get(name);
    const n = optionalInt(v);
    if (n === null) malformedHeaders.push(`${name}: ${JSON.stringify(v)}`);
    return n ?? undefined;
  };
  const preview = int('Preview');
  const maxConnections = int('Max-Connections');
  const optionsTtl = int('Options-TTL');
  const lower = (v: string | undefined) => splitList(v).map((s) => s.toLowerCase());
  const ttlMs = optionsTtl === undefined ? defaultTtl : optionsTtl * 1000;
  const missingHeaders: string[] = [];
  if ((h.get('istag') ?? '').trim() === '') missingHeaders.push('ISTag');
  if (methods.length === 0) missingHeaders.push('Methods');
  return {
    methods,
    istag: res.istag,
    service: h.get('service'),
    serviceId: h.get('service-id') ?? h.get('serviceid'),
    preview,
    allow204: splitList(h.get('allow')).includes('204'),
    maxConnections: maxConnections !== undefined && maxConnections > 0 ? maxConnections : undefined,
    optionsTtl,
    transferPreview: lower(h.get('transfer-preview')),
    transferIgnore: lower(h.get('transfer-ignore')),
    transferComplete: lower(h.get('transfer-complete')),
    include: splitList(h.get('x-include')),
    headers: h,
    rawHeaders: res.rawHeaders,
    missingHeaders,
    malformedHeaders,
    fetchedAt: now,
    expiresAt: now + ttlMs,
  };
}

/** A header's whole number; undefined when absent or empty, null when malformed. */
function optionalInt(v: string | undefined): number | undefined | null {
  if (v === undefined || v.trim() === '') return undefined;
  const t = v.trim();
  return /^\d{1,10}$/.test(t) ? Number(t) : null;
}

/**
 * How a message whose URL (or file name) ends in `extension` is to be sent, from
 * `Transfer-Preview`, `Transfer-Ignore` and `Transfer-Complete`: a listed extension takes its
 * list's policy; others take the policy of the list holding `*`; with no `*`, preview.
 */
export function transferPolicy(options: IcapServiceOptions, extension: string | undefined): TransferPolicy {
  const ext = extension?.toLowerCase();
  if (ext !== undefined && ext !== '') {
    if (options.transferIgnore.includes(ext)) return 'ignore';
    if (options.transferComplete.includes(ext)) return 'complete';
    if (options.transferPreview.includes(ext)) return 'preview';
  }
  if (options.transferIgnore.includes('*')) return 'ignore';
  if (options.transferComplete.includes('*')) return 'complete';
  return 'preview';
}

/** The extension of the last path segment of a request target, lower-cased ('' when none). */
export function extensionOf(target: string): string {
  let path = target;
  const q = path.search(/[?#]/);
  if (q !== -1) path = path.slice(0, q);
  const slash = path.lastIndexOf('/');
  const name = path.slice(slash + 1);
  const dot = name.lastIndexOf('.');
  return dot <= 0 ? '' : name.slice(dot + 1).toLowerCase();
}

interface Entry {
  value: IcapServiceOptions | undefined;
  inflight: Promise<IcapServiceOptions> | undefined;
  stale: boolean;
}

/**
 * OPTIONS per service: fetched on first use, kept until `Options-TTL` runs out, refreshed in
 * the background shortly before that (so requests do not wait for it), and marked stale when a
 * response carries a different ISTag (the service changed, so its options may have too).
 * A stale entry is fetched again only once `minRefreshInterval` has passed since it was
 * fetched: a server whose ISTag changes on every answer costs one OPTIONS per interval, not one
 * per request. Concurrent callers share one fetch.
 */
export class OptionsCache {
  readonly #fetch: (service: string) => Promise<IcapServiceOptions>;
  readonly #entries = new Map<string, Entry>();
  /** Refresh when less than this share of the TTL is left. */
  readonly #refreshAhead: number;
  /** ms: an ISTag change refreshes options fetched at least this long ago, not younger ones. */
  readonly #minRefreshInterval: number;
  /** Called with background refresh failures (the cached options stay in use until they expire). */
  onRefreshError: ((service: string, err: unknown) => void) | undefined;

  constructor(
    fetch: (service: string) => Promise<IcapServiceOptions>,
    refreshAhead = 0.1,
    minRefreshInterval = 30_000,
  ) {
    this.#fetch = fetch;
    this.#refreshAhead = refreshAhead;
    this.#minRefreshInterval = minRefreshInterval;
  }

  peek(service: string): IcapServiceOptions | undefined {
    return this.#entries.get(service)?.value;
  }

  /**
   * The cached OPTIONS when they can be used now, without waiting (a refresh ahead of their
   * expiry is started when due, as {@link get} does); undefined when {@link get} would fetch.
   */
  fresh(service: string, now = Date.now()): IcapServiceOptions | undefined {
    const entry = this.#entries.get(service);
    const v = entry?.value;
    if (entry === undefined || v === undefined) return undefined;
    const staleDue = entry.stale && now - v.fetchedAt >= this.#minRefreshInterval;
    if (staleDue || now >= v.expiresAt) return undefined;
    const left = v.expiresAt - now;
    if (left < (v.expiresAt - v.fetchedAt) * this.#refreshAhead && entry.inflight === undefined) {
      this.#start(service, entry).catch((err: unknown) => this.onRefreshError?.(service, err));
    }
    return v;
  }

  async get(service: string, signal?: AbortSignal, now = Date.now()): Promise<IcapServiceOptions> {
    const v = this.fresh(service, now);
    if (v !== undefined) return v;
    let entry = this.#entries.get(service);
    if (entry === undefined) {
      entry = { value: undefined, inflight: undefined, stale: false };
      this.#entries.set(service, entry);
    }
    // A caller already gone starts nothing (a fetch nobody waits for would fail unobserved).
    if (signal?.aborted) return Promise.reject(signal.reason);
    // One shared fetch, bounded by the client's own timeout; each caller waits with its own signal.
    return this.#wait(entry.inflight ?? this.#start(service, entry), signal);
  }

  /** A response carried this ISTag: if it differs from the cached one, refetch next time. */
  noteIstag(service: string, istag: string | undefined): void {
    const entry = this.#entries.get(service);
    if (entry?.value !== undefined && istag !== undefined && entry.value.istag !== istag) entry.stale = true;
  }

  invalidate(service?: string): void {
    if (service === undefined) this.#entries.clear();
    else this.#entries.delete(service);
  }

  #start(service: string, entry: Entry): Promise<IcapServiceOptions> {
    const p = this.#fetch(service).then(
      (value) => {
        entry.value = value;
        entry.stale = false;
        entry.inflight = undefined;
        return value;
      },
      (err: unknown) => {
        entry.inflight = undefined;
        throw err;
      },
    );
    // Every caller waits on it with its own signal and may leave before it settles: the shared
    // fetch's own failure is observed here, so it never becomes an unhandled rejection.
    p.catch(() => undefined);
    entry.inflight = p;
    return p;
  }

  #wait(p: Promise<IcapServiceOptions>, signal: AbortSignal | undefined): Promise<IcapServiceOptions> {
    return untilAborted(p, signal);
  }
}
