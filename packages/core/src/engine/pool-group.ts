import { IcapClient, type IcapClientOptions } from '../client/client.js';
import { IcapError, IcapErrorCodes } from '../errors.js';
import { maskQuery } from '../protocol/shown-uri.js';
import { type CheckAnswer, checkAnswer, HealthCheck } from './health-check.js';
import { observe } from './log.js';
import { PreviewAdvice } from './preview-advice.js';
import type { ResolvedPool, ResolvedProfile, ResolvedServer } from './profile/types.js';

/**
 * The ICAP servers of a profile: pools by priority, each with servers that share its load.
 *
 * Each server's health is a circuit breaker:
 *
 * - `up`: takes requests. `failureLimit` failures in a row (connect errors, resets, protocol
 *   errors, 5xx answers, timeouts and stalls) suspend it. When one of them is a failure the
 *   HTTP client's content can provoke (a 5xx answer, a response timeout, ioTimeout or a stall
 *   while the server had the request: `provokable`, retry.ts), the server is only suspect: a
 *   check runs at once, a REQMOD of a small fixed body (no client content in it) on a
 *   connection of its own, and the server is suspended only if that fails too (no answer in
 *   time, a 5xx). So no client can suspend a healthy server (and send every other request to
 *   the failure action) with uploads that are slow or impossible to scan; a dead, hung or
 *   broken server fails the check.
 * - `suspended`: takes no request. After a backoff (`probeInterval`, doubled after each failed
 *   probe or trial, up to `maxProbeInterval`) an OPTIONS probe runs: a failed probe doubles the
 *   backoff, a successful one makes the server half-open.
 * - `half-open`: one trial request at a time goes to the server (the request can still be
 *   retried elsewhere if the trial fails before an answer). `successThreshold` successful trials
 *   in a row bring it back `up`; a failed one suspends it again with the backoff doubled (a
 *   provokable failure: once the check fails too).
 *
 * A server suspended again within `maxProbeInterval` of coming back keeps doubling its
 * backoff (it is flapping); one that stayed up longer starts again from `probeInterval`.
 * Results of requests that started before the last transition do not move the state (a slow
 * success from before a suspension does not revive the server). Each transition is reported
 * once through `onStateChange`.
 *
 * Until a server has answered once (an OPTIONS, a transaction), `status()` calls it `unknown`
 * rather than `up`: it takes requests like an up server, but nothing says it is alive.
 *
 * A request goes to the highest-priority pool that has a server available and not yet tried
 * for this request: a half-open server waiting for its trial first, otherwise the up server
 * with the fewest outstanding requests (ties taken in turn) or simply in turn.
 */

export type ServerState = 'up' | 'suspended' | 'half-open';

/**
 * A server's health as `status()` reports it: its {@link ServerState}, except that a server
 * that takes requests but has not answered yet (no successful OPTIONS or transaction since
 * the engine started) is `unknown`, not `up`.
 */
export type ServerHealthState = ServerState | 'unknown';

export interface ServerStatus {
  pool: string;
  server: string;
  /** `unknown` until the server has answered once (see `engine.ready()`), then up, suspended or half-open. */
  state: ServerHealthState;
  outstanding: number;
  consecutiveFailures: number;
  lastError: string | undefined;
  connections: IcapClient['stats'];
  /** Times the server was suspended since the engine started. */
  suspensions: number;
  /** While suspended: ms between the suspension (or last failed probe) and the next probe. */
  backoff: number | undefined;
  /** While half-open: successful trials in a row so far. */
  trialSuccesses: number;
  /**
   * Services of this server whose bodies go without a preview (`adaptivePreview`): the server
   * asked for the rest of every one of the last previews; one body in 16 is still previewed.
   */
  previewsSkipped: string[];
}

/** One transition of a server's health, reported once. */
export interface ServerTransition {
  from: ServerState;
  to: ServerState;
  /** Why: the error that tipped it, the probe's result, the trials. */
  reason: string;
  /** When suspended: ms until the next probe. */
  backoff?: number | undefined;
  consecutiveFailures: number;
}

/** The servers a request has tried (a `ReadonlySet<ServerHandle>` will do). */
export interface TriedServers {
  has(server: ServerHandle): boolean;
  readonly size: number;
}

/** One attempt on a server, from `begin()` to its result. */
export interface AttemptTicket {
  readonly generation: number;
  /** The half-open server's trial request. */
  readonly trial: boolean;
  settled: boolean;
}

export class ServerHandle {
  readonly pool: ResolvedPool;
  readonly server: ResolvedServer;
  readonly client: IcapClient;
  outstanding = 0;
  consecutiveFailures = 0;
  state: ServerState = 'up';
  lastError: string | undefined;
  suspensions = 0;
  /** Whether the server has answered since the engine started (OPTIONS or a transaction). */
  #answered = false;
  #trialSuccesses = 0;
  #trialInFlight = false;
  /** Incremented on every transition. */
  #generation = 0;
  /** Backoff exponent: the next probe waits probeInterval * 2^level (capped). */
  #level = 0;
  #backoff: number | undefined;
  #upSince = 0;
  #probe: NodeJS.Timeout | undefined;
  /** Failures the client's content can provoke are among the consecutive ones. */
  #suspect = false;
  /** The health check of a suspect server is under way. */
  #checking = false;
  /** Attempts holding a connection here while their HTTP client is still sending the body. */
  #clientFed = 0;
  /** performance.now() when the last of them stopped (see {@link clientHeldSince}). */
  #clientFedUntil = Number.NEGATIVE_INFINITY;
  /** The server's health check (health-check.ts): a connection of its own, one at a time. */
  readonly #health: HealthCheck;
  #closed = false;
  #uriService: string | undefined;
  #uri = '';
  /** Per service: whether its bodies are previewed (`adaptivePreview`, preview-advice.ts). */
  readonly #previews = new Map<string, PreviewAdvice>();
  readonly #group: PoolGroup;

  constructor(group: PoolGroup, pool: ResolvedPool, server: ResolvedServer, profile: ResolvedProfile) {
    this.#group = group;
    this.pool = pool;
    this.server = server;
    const clientOptions: IcapClientOptions = {
      url: server.url,
      tls: server.tls === false ? undefined : server.tls,
      maxConnections: profile.maxConnections,
      connectTimeout: profile.connectTimeout,
      keepAliveTimeout: profile.keepAliveTimeout,
      ioTimeout: profile.ioTimeout,
      // Bounds OPTIONS (before a request, and the probes): waiting for a connection, connecting,
      // then stallTimeout for the answer; a server that does not answer them in that time is as
      // stalled as one that does not answer a request (and the request can still go elsewhere).
      timeout: Math.min(
        profile.responseTimeout,
        profile.queueTimeout + profile.connectTimeout + profile.stallTimeout,
      ),
      headers: profile.icapHeaders,
      onWarning: (message, details) =>
        observe(() => profile.logger?.warn({ icap_server: server.url, ...details }, message), undefined, ''),
    };
    this.client = new IcapClient(clientOptions);
    const checkPreview = profile.enablePreview ? profile.previewSize : false;
    this.#health = new HealthCheck(clientOptions, profile.serviceUri, profile.stallTimeout, checkPreview);
  }

  /**
   * An attempt got its connection while its HTTP client is still sending the body: until
   * {@link clientFedEnd}, the connection waits on that client as much as on the server.
   */
  clientFedStart(): void {
    this.#clientFed++;
  }

  /** The attempt read its body's end, or ended. */
  clientFedEnd(): void {
    if (this.#clientFed > 0 && --this.#clientFed === 0) this.#clientFedUntil = performance.now();
  }

  /**
   * Whether, at some time since `t` (performance.now()), a connection of this server was held
   * by an attempt whose HTTP client was still sending its body. A request that waited that
   * long for a connection did not wait on the ICAP server alone: HTTP clients (slow ones, or
   * ones that stopped sending after the exchange began) held the connections, so its failure
   * is not the ICAP side's and never takes the failure action (exchange.ts).
   */
  clientHeldSince(t: number): boolean {
    return this.#clientFed > 0 || this.#clientFedUntil >= t;
  }

  /**
   * The service's ICAP URI on this server as records show it (`client.shownUri`: the query's
   * values masked), kept for the last service asked for.
   */
  uriOf(service: string): string {
    if (service !== this.#uriService) {
      this.#uri = this.client.shownUri(service);
      this.#uriService = service;
    }
    return this.#uri;
  }

  /** Whether a request may be sent here now (up, or half-open with no trial under way). */
  get available(): boolean {
    // Half-open with its trial's health check under way: no other trial until it is known.
    return this.state === 'up' || (this.state === 'half-open' && !this.#trialInFlight && !this.#checking);
  }

  /** Starts an attempt (right after {@link PoolGroup.pick} chose this server). */
  begin(): AttemptTicket {
    const trial = this.state === 'half-open' && !this.#trialInFlight;
    if (trial) this.#trialInFlight = true;
    return { generation: this.#generation, trial, settled: false };
  }

  /** The server answered (its OPTIONS, outside a request): its state is known from now on. */
  answered(): void {
    this.#answered = true;
  }

  /** The state as `status()` reports it: `unknown` while up but never heard from. */
  get healthState(): ServerHealthState {
    return this.state === 'up' && !this.#answered ? 'unknown' : this.state;
  }

  /** A transaction went well. */
  succeeded(ticket?: AttemptTicket): void {
    if (!this.#settle(ticket)) return;
    this.#answered = true;
    if (ticket?.trial === true && this.state === 'half-open' && ticket.generation === this.#generation) {
      this.#trialSuccesses++;
      this.consecutiveFailures = 0;
      if (this.#trialSuccesses >= this.#group.successThreshold) {
        this.#transition('up', `${this.#trialSuccesses} trial requests in a row succeeded`);
      }
      return;
    }
    // A success from before the last transition says nothing about the server now.
    const current = ticket === undefined || ticket.generation === this.#generation;
    if (this.state === 'up' && current) {
      this.consecutiveFailures = 0;
      this.#suspect = false;
    }
  }

  /**
   * A transaction failed in a way that says something about the server. `provokable`: the
   * HTTP client's content may have caused it (retry.ts); then the server is suspended only
   * once a health check of its own fails too.
   */
  failed(err: unknown, ticket?: AttemptTicket, provokable = false): void {
    if (!this.#settle(ticket)) return;
    const message = err instanceof Error ? err.message : String(err);
    this.lastError = message;
    const current = ticket === undefined || ticket.generation === this.#generation;
    if (this.state === 'half-open') {
      if (ticket?.trial === true && current) {
        this.consecutiveFailures++;
        const reason = `the trial request failed: ${message}`;
        if (provokable) this.#check(reason, () => this.#level + 1);
        else this.#suspend(this.#level + 1, reason);
      }
      return;
    }
    if (this.state !== 'up' || !current) return;
    this.consecutiveFailures++;
    if (provokable) this.#suspect = true;
    if (this.consecutiveFailures >= this.#group.failureLimit) {
      // Suspended again soon after coming back: still failing, the backoff keeps growing.
      const level = () =>
        this.#upSince > 0 && performance.now() - this.#upSince < this.#group.maxProbeInterval
          ? this.#level + 1
          : 0;
      const reason = `${this.consecutiveFailures} failures in a row, the last: ${message}`;
      if (this.#suspect) this.#check(reason, level);
      else this.#suspend(level(), reason);
    }
  }

  /**
   * A suspect server's check (health-check.ts): the path that failed, not only OPTIONS (one
   * answered in the last second will do). The server is suspended (at `level()`) only if the
   * check fails (no answer, a 5xx) and nothing moved its state meanwhile; answered, it stays
   * as it is: the failures were the content's.
   */
  #check(reason: string, level: () => number): void {
    if (this.#checking || this.#closed) return;
    this.#checking = true;
    const generation = this.#generation;
    this.#health.recent(performance.now()).then((err) => {
      this.#checking = false;
      if (this.#closed) return;
      if (err === undefined) {
        this.#answered = true;
        return;
      }
      if (this.#generation !== generation || this.state === 'suspended') return;
      this.lastError = err.message;
      this.#suspend(level(), `${reason}; then the health check failed: ${err.message}`);
    });
  }

  /**
   * What a health check of the server says of a failure at `since` (health-check.ts,
   * `recent`): a request under fail-open whose failure here its own content may have provoked
   * passes unscanned only if the server neither answers it nor went down on the upload
   * (retry.ts, `judged`). A suspended server that answers counts as answering: it works now.
   */
  async answersCheck(since: number): Promise<CheckAnswer> {
    if (this.#closed) return 'failed';
    const answer = checkAnswer(await this.#health.recent(since));
    if (this.#closed) return 'failed';
    if (answer === 'answered' && this.state !== 'suspended') this.#answered = true;
    return answer;
  }

  /** The attempt ended without a verdict on the server (the HTTP client went away, say). */
  abandoned(ticket: AttemptTicket): void {
    this.#settle(ticket);
  }

  status(): ServerStatus {
    return {
      pool: this.pool.name,
      server: this.server.url,
      state: this.healthState,
      outstanding: this.outstanding,
      consecutiveFailures: this.consecutiveFailures,
      lastError: this.lastError,
      connections: this.client.stats,
      suspensions: this.suspensions,
      backoff: this.state === 'suspended' ? this.#backoff : undefined,
      trialSuccesses: this.state === 'half-open' ? this.#trialSuccesses : 0,
      previewsSkipped: [...this.#previews]
        .filter(([, a]) => a.skipping)
        .map(([service]) => maskQuery(service)),
    };
  }

  /** Whether `service`'s bodies are previewed on this server (`adaptivePreview`). */
  previewAdvice(service: string): PreviewAdvice {
    let advice = this.#previews.get(service);
    if (advice === undefined) {
      advice = new PreviewAdvice();
      this.#previews.set(service, advice);
    }
    return advice;
  }

  close(): void {
    this.#closed = true;
    if (this.#probe !== undefined) clearTimeout(this.#probe);
    this.#probe = undefined;
    this.client.destroy();
    this.#health.destroy();
  }

  /** Marks the ticket settled (once); false when it was already. */
  #settle(ticket: AttemptTicket | undefined): boolean {
    if (ticket === undefined) return true;
    if (ticket.settled) return false;
    ticket.settled = true;
    if (ticket.trial && ticket.generation === this.#generation) this.#trialInFlight = false;
    return true;
  }

  #delay(level: number): number {
    const g = this.#group;
    return Math.min(g.maxProbeInterval, g.probeInterval * 2 ** Math.min(level, 30));
  }

  #suspend(level: number, reason: string): void {
    this.#level = Math.min(level, this.#levelCap());
    this.suspensions++;
    this.#transition('suspended', reason);
  }

  /** The smallest level whose delay reaches maxProbeInterval. */
  #levelCap(): number {
    let l = 0;
    while (this.#delay(l) < this.#group.maxProbeInterval && l < 30) l++;
    return l;
  }

  #schedule(): void {
    if (this.#probe !== undefined) clearTimeout(this.#probe);
    this.#backoff = this.#delay(this.#level);
    this.#probe = setTimeout(() => this.#runProbe(), this.#backoff);
    this.#probe.unref();
  }

  #runProbe(): void {
    this.#probe = undefined;
    if (this.#closed || this.state !== 'suspended') return;
    const generation = this.#generation;
    this.client.options(this.#group.serviceUri, { refresh: true }).then(
      () => {
        if (this.#closed || this.state !== 'suspended' || this.#generation !== generation) return;
        this.#answered = true;
        this.#transition('half-open', 'the OPTIONS probe succeeded');
      },
      (err: unknown) => {
        if (this.#closed || this.state !== 'suspended' || this.#generation !== generation) return;
        this.lastError = err instanceof Error ? err.message : String(err);
        this.#level = Math.min(this.#level + 1, this.#levelCap());
        this.#schedule();
      },
    );
  }

  #transition(to: ServerState, reason: string): void {
    const from = this.state;
    this.state = to;
    this.#generation++;
    this.#trialInFlight = false;
    this.#trialSuccesses = 0;
    if (this.#probe !== undefined) clearTimeout(this.#probe);
    this.#probe = undefined;
    this.#backoff = undefined;
    this.#suspect = false;
    if (to === 'up') {
      this.consecutiveFailures = 0;
      this.#upSince = performance.now();
    }
    if (to === 'suspended' && !this.#closed) this.#schedule();
    const change: ServerTransition = {
      from,
      to,
      reason,
      backoff: this.#backoff,
      consecutiveFailures: this.consecutiveFailures,
    };
    try {
      this.#group.onStateChange?.(this, to, change);
    } catch {
      // a reporter that throws does not change the server's health
    }
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
  readonly maxProbeInterval: number;
  readonly successThreshold: number;
  readonly #pools: PoolEntry[];
  /** How many servers the group has (fixed): with one, a request can never go elsewhere. */
  readonly serverCount: number;
  /** Called once per transition of a server's health (suspended, half-open, up). */
  onStateChange: ((server: ServerHandle, state: ServerState, change: ServerTransition) => void) | undefined;

  constructor(profile: ResolvedProfile) {
    this.name = profile.poolGroupName;
    this.serviceUri = profile.serviceUri;
    this.failureLimit = profile.failureLimit;
    this.probeInterval = profile.probeInterval;
    this.maxProbeInterval = profile.maxProbeInterval;
    this.successThreshold = profile.successThreshold;
    this.#pools = profile.pools.map((pool) => ({
      pool,
      servers: pool.servers.map((s) => new ServerHandle(this, pool, s, profile)),
      next: 0,
    }));
    this.serverCount = this.#pools.reduce((n, e) => n + e.servers.length, 0);
  }

  get servers(): ServerHandle[] {
    return this.#pools.flatMap((p) => p.servers);
  }

  /** The smallest connection limit of the servers now (OPTIONS `Max-Connections`). */
  smallestLimit(): number {
    let smallest = Number.POSITIVE_INFINITY;
    for (const entry of this.#pools)
      for (const s of entry.servers) if (s.client.pool.limit < smallest) smallest = s.client.pool.limit;
    return smallest;
  }

  /**
   * The server for the next attempt of a request, or an ICAP_ERR_NO_SERVER error. Call
   * `begin()` on it right away (a half-open server's trial is given to this attempt).
   */
  pick(tried: TriedServers): ServerHandle {
    for (const entry of this.#pools) {
      // One server in the pool: it, if it can be tried (what the general path below picks too).
      if (entry.servers.length === 1) {
        const only = entry.servers[0]!;
        if (only.available && !tried.has(only)) return only;
        continue;
      }
      const candidates = entry.servers.filter((s) => s.available && !tried.has(s));
      if (candidates.length === 0) continue;
      // A half-open server waiting for its trial gets this request.
      const trial = candidates.find((s) => s.state === 'half-open');
      if (trial !== undefined) return trial;
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
    const down = this.servers.filter((s) => s.state !== 'up').length;
    throw new IcapError(
      IcapErrorCodes.NO_SERVER,
      tried.size > 0
        ? `no other ICAP server to try (${tried.size} tried, ${down} suspended or on trial)`
        : `no ICAP server is available (${down} suspended or on trial)`,
    );
  }

  /** Whether {@link pick} would find a server not in `tried`. */
  hasAlternative(tried: TriedServers): boolean {
    for (const e of this.#pools) for (const s of e.servers) if (s.available && !tried.has(s)) return true;
    return false;
  }

  status(): ServerStatus[] {
    return this.servers.map((s) => s.status());
  }

  close(): void {
    for (const s of this.servers) s.close();
  }
}
