import { IcapClient } from '../client/client.js';
import { IcapError, IcapErrorCodes } from '../client/errors.js';
import type { ResolvedPool, ResolvedProfile, ResolvedServer } from './profile.js';

/**
 * The ICAP servers of a profile: pools by priority, each with servers that share its load.
 * A server that fails `failureLimit` times in a row is suspended; a suspended server gets an
 * OPTIONS probe every `probeInterval` and comes back on the first success. A request goes to
 * the highest-priority pool that has a server up and not yet tried for this request, to the
 * server with the fewest outstanding requests (ties taken in turn) or simply in turn.
 */

export type ServerState = 'up' | 'suspended';

export interface ServerStatus {
  pool: string;
  server: string;
  state: ServerState;
  outstanding: number;
  consecutiveFailures: number;
  lastError: string | undefined;
  connections: IcapClient['stats'];
}

export class ServerHandle {
  readonly pool: ResolvedPool;
  readonly server: ResolvedServer;
  readonly client: IcapClient;
  outstanding = 0;
  consecutiveFailures = 0;
  state: ServerState = 'up';
  lastError: string | undefined;
  #probe: NodeJS.Timeout | undefined;
  readonly #group: PoolGroup;

  constructor(group: PoolGroup, pool: ResolvedPool, server: ResolvedServer, profile: ResolvedProfile) {
    this.#group = group;
    this.pool = pool;
    this.server = server;
    this.client = new IcapClient({
      url: server.url,
      tls: server.tls === false ? undefined : server.tls,
      maxConnections: profile.maxConnections,
      connectTimeout: profile.connectTimeout,
      keepAliveTimeout: profile.keepAliveTimeout,
      ioTimeout: profile.ioTimeout,
      timeout: profile.responseTimeout,
      headers: profile.icapHeaders,
      onWarning: (message, details) => profile.logger?.warn({ icap_server: server.url, ...details }, message),
    });
  }

  /** A transaction went well. */
  succeeded(): void {
    this.consecutiveFailures = 0;
    if (this.state === 'suspended') this.#revive();
  }

  /** A transaction failed in a way that says something about the server. */
  failed(err: unknown): void {
    this.consecutiveFailures++;
    this.lastError = err instanceof Error ? err.message : String(err);
    if (this.state === 'up' && this.consecutiveFailures >= this.#group.failureLimit) this.#suspend();
  }

  status(): ServerStatus {
    return {
      pool: this.pool.name,
      server: this.server.url,
      state: this.state,
      outstanding: this.outstanding,
      consecutiveFailures: this.consecutiveFailures,
      lastError: this.lastError,
      connections: this.client.stats,
    };
  }

  close(): void {
    if (this.#probe !== undefined) clearInterval(this.#probe);
    this.#probe = undefined;
    this.client.destroy();
  }

  #suspend(): void {
    this.state = 'suspended';
    this.#group.onStateChange?.(this, 'suspended');
    this.#probe = setInterval(() => {
      this.client.options(this.#group.serviceUri, { refresh: true }).then(
        () => this.succeeded(),
        (err: unknown) => {
          this.lastError = err instanceof Error ? err.message : String(err);
        },
      );
    }, this.#group.probeInterval);
    this.#probe.unref();
  }

  #revive(): void {
    if (this.#probe !== undefined) clearInterval(this.#probe);
    this.#probe = undefined;
    this.state = 'up';
    this.consecutiveFailures = 0;
    this.#group.onStateChange?.(this, 'up');
  }
}

interface PoolEntry {
  pool: ResolvedPool;
  servers: ServerHandle[];
  next: number;
}

export class PoolGroup {
  readonly name: string;
  readonly serviceUri: string;
  readonly failureLimit: number;
  readonly probeInterval: number;
  readonly #pools: PoolEntry[];
  /** Called when a server is suspended or comes back. */
  onStateChange: ((server: ServerHandle, state: ServerState) => void) | undefined;

  constructor(profile: ResolvedProfile) {
    this.name = profile.poolGroupName;
    this.serviceUri = profile.serviceUri;
    this.failureLimit = profile.failureLimit;
    this.probeInterval = profile.probeInterval;
    this.#pools = profile.pools.map((pool) => ({
      pool,
      servers: pool.servers.map((s) => new ServerHandle(this, pool, s, profile)),
      next: 0,
    }));
  }

  get servers(): ServerHandle[] {
    return this.#pools.flatMap((p) => p.servers);
  }

  /** The server for the next attempt of a request, or an ICAP_ERR_NO_SERVER error. */
  pick(tried: ReadonlySet<ServerHandle>): ServerHandle {
    for (const entry of this.#pools) {
      const candidates = entry.servers.filter((s) => s.state === 'up' && !tried.has(s));
      if (candidates.length === 0) continue;
      if (candidates.length === 1) return candidates[0]!;
      if (entry.pool.loadBalancing === 'round-robin') {
        const s = candidates[entry.next % candidates.length]!;
        entry.next = (entry.next + 1) % 1_000_000;
        return s;
      }
      let best = Number.POSITIVE_INFINITY;
      for (const s of candidates) best = Math.min(best, s.outstanding);
      const least = candidates.filter((s) => s.outstanding === best);
      const s = least[entry.next % least.length]!;
      entry.next = (entry.next + 1) % 1_000_000;
      return s;
    }
    const down = this.servers.filter((s) => s.state === 'suspended').length;
    throw new IcapError(
      IcapErrorCodes.NO_SERVER,
      tried.size > 0
        ? `no other ICAP server to try (${tried.size} tried, ${down} suspended)`
        : `no ICAP server is available (${down} suspended)`,
    );
  }

  status(): ServerStatus[] {
    return this.servers.map((s) => s.status());
  }

  close(): void {
    for (const s of this.servers) s.close();
  }
}
