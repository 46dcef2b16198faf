import { emitProcessWarning, isQuiet, ProcessAlerts } from './alerts.js';
import { emitLog, type IcapAction, type IcapLog, observe } from './log.js';
import type { PolicyDecision } from './policy.js';
import { PoolGroup, type ServerStatus } from './pool-group.js';
import { type IcapProfile, type PinoLike, type ResolvedProfile, resolveProfile } from './profile.js';
import { requestFacts, type ScanRequest } from './request.js';
import { admit } from './scan/admission.js';
import { ClientIntake, StreamGate, streamingLimit } from './scan/intake.js';
import { newLog } from './scan/outcome.js';
import { reportTransition } from './scan/retry.js';
import { Scan } from './scan/scan.js';
import { checkServers, type StartupReport } from './startup.js';
import { Telemetry } from './telemetry.js';
import type { EngineCore, LogListener, RespondOutcome, ScanOptions, ScanOutcome } from './types.js';

export type {
  AbortedOutcome,
  LogListener,
  PassOutcome,
  RespondOutcome,
  RewriteOutcome,
  ScanOptions,
  ScanOutcome,
} from './types.js';

/**
 * The one entry point the framework adapters call: `engine.scan(req)` reads the request body
 * (as it arrives), runs the ICAP transaction against the profile's servers (failing over while
 * the body can be replayed), and says what to do with the request:
 *
 * - `pass`: continue to the application; `body` is the original body (replayed from what was
 *   held, or null when the request was not touched at all);
 * - `rewrite`: continue with the ICAP server's modified request (new method, URL, headers, body);
 * - `respond`: answer the client with `status`, `headers`, `body` (403, 413, 503) and stop;
 * - `aborted`: the client went away (or the caller aborted); nothing to answer.
 *
 * No byte of the body reaches the application before the verdict allows it (fail closed),
 * unless the profile says fail-open for the situation at hand. Every call produces one
 * `icap_log` record, delivered to `onLog` and the logger, and attached to the outcome.
 */

export class IcapEngine {
  readonly profile: ResolvedProfile;
  readonly #group: PoolGroup;
  readonly #telemetry: Telemetry;
  readonly #logListeners = new Set<LogListener>();
  readonly #responseListeners = new Set<LogListener>();
  readonly #intake: ClientIntake;
  /** Process warnings, when the profile has no logger and no onLog (engine/alerts.ts). */
  readonly #alerts: ProcessAlerts | null;
  /** What every request's Scan borrows from the engine (one object, made once). */
  readonly #core: EngineCore;

  constructor(profile: IcapProfile) {
    this.profile = resolveProfile(profile);
    this.#intake = new ClientIntake(this.profile.maxBodiesPerClient);
    this.#group = new PoolGroup(this.profile);
    this.#telemetry = new Telemetry(
      this.profile.name,
      this.profile.vendor,
      this.#group,
      this.profile.metrics,
    );
    this.#alerts = isQuiet(this.profile) ? null : new ProcessAlerts(this.profile.name);
    this.#group.onStateChange = (server, _state, change) => {
      this.#telemetry.serverState(server, change);
      reportTransition(this.profile.logger, this.profile.name, server, change);
      this.#alerts?.transition(server.server.url, change);
    };
    this.#core = {
      profile: this.profile,
      group: this.#group,
      telemetry: this.#telemetry,
      intake: this.#intake,
      streams: new StreamGate(() =>
        streamingLimit(
          this.profile.maxStreamingUploads,
          this.profile.maxConnections,
          this.#group.smallestLimit(),
        ),
      ),
      closed: false,
      emit: (log, logger) => this.#emit(log, logger),
    };
  }

  /**
   * The start-up check (engine/startup.ts): OPTIONS to every server; per the profile's
   * `startupCheck`, rejects naming each server that did not answer ('fail', the default),
   * reports them ('warn') or sends nothing ('off').
   */
  ready(): Promise<StartupReport> {
    return checkServers(this.#group.servers, {
      profile: this.profile.name,
      serviceUri: this.profile.serviceUri,
      mode: this.profile.startupCheck,
      logger: this.profile.logger,
      warn: emitProcessWarning,
    });
  }

  /** Whether the policy sends this request to ICAP (nothing is read). */
  decide(req: ScanRequest): PolicyDecision {
    return this.profile.policy.evaluate(requestFacts(req));
  }

  /** Health and connections of every server. */
  status(): ServerStatus[] {
    return this.#group.status();
  }

  /** Uploads from a client address still arriving (what maxBodiesPerClient limits; counted only with it). */
  uploadsArriving(address: string): number {
    return this.#intake.count(address);
  }

  /** The pool group (for instrumentation). */
  get poolGroup(): PoolGroup {
    return this.#group;
  }

  /**
   * Adds a receiver of every `icap_log` record, after the profile's `onLog` and the logger
   * (which it does not replace). Returns the function that removes it. A listener that throws
   * is reported to the logger and does not affect the scan or the other listeners.
   */
  addLogListener(listener: LogListener): () => void {
    const entry: LogListener = (log) => listener(log);
    this.#logListeners.add(entry);
    return () => {
      this.#logListeners.delete(entry);
    };
  }

  /**
   * The application answered a request the middleware let through (the adapters call this
   * when the response has finished): its status becomes the record's `http_response_code`
   * (the record was delivered before the application answered, so only readers that keep it,
   * such as the analytics ring, see it), and response listeners hear of it.
   */
  responded(log: IcapLog, status: number): void {
    if (log.http_response_code !== undefined || !Number.isInteger(status)) return;
    try {
      log.http_response_code = status;
    } catch {
      // A record an onLog froze (or sealed) keeps what it had: it was emitted already.
      return;
    }
    for (const listener of this.#responseListeners) observe(() => listener(log), undefined, '');
  }

  /** Adds a receiver of records that got the application's HTTP status (see `responded`). */
  addResponseListener(listener: LogListener): () => void {
    const entry: LogListener = (log) => listener(log);
    this.#responseListeners.add(entry);
    return () => {
      this.#responseListeners.delete(entry);
    };
  }

  /** Sends a finished record to `onLog`, the logger and the log listeners. */
  #emit(log: IcapLog, logger: PinoLike | undefined): void {
    emitLog(log, this.profile.onLog, logger);
    this.#alerts?.record(log);
    for (const listener of this.#logListeners)
      observe(() => listener(log), logger, 'icapkit: a log listener threw');
  }

  /** Stops probes and closes every ICAP connection. */
  async close(): Promise<void> {
    this.#core.closed = true;
    this.#alerts?.close();
    this.#telemetry.close();
    this.#group.close();
  }

  /** Scans one request: see scan/scan.ts for what happens to it, stage by stage. */
  scan(req: ScanRequest, options: ScanOptions = {}): Promise<ScanOutcome> {
    try {
      return new Scan(this.#core, req, options).run();
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /**
   * For a request that announced `Expect: 100-continue`: the answer that can be given before
   * the client sends its body (413, 415), or null when the body is wanted. A refusal is logged
   * like any other; a fail-open pass is not a refusal (null).
   */
  async preflight(req: ScanRequest, options: ScanOptions = {}): Promise<RespondOutcome | null> {
    const profile = this.profile;
    const facts = requestFacts(req);
    const decision = profile.policy.evaluate(facts);
    // Refused whatever the rules decide (as run() does), before 100 Continue: too many header
    // fields, a route the scan cannot tell apart.
    const unscannedRoute = options.unscannedRoute !== undefined && facts.hasBody;
    if (!decision.scan && facts.tooManyFields === undefined && !unscannedRoute) return null;
    const log = newLog(profile.name, facts, decision);
    const early = await admit({ profile, facts, log, options });
    if (early === null || early.kind !== 'respond') return null;
    log.action = early.action;
    log.http_response_code = early.status;
    log.significant = true;
    this.#telemetry.scanEnd(this.#telemetry.scanStart(facts.method, log.uri_path), log, 0);
    this.#emit(log, options.logger ?? profile.logger);
    return early;
  }
}

/** What the application can read about the scan of its request (`req.icap`, `request.icap`, `ctx.state.icap`). */
export interface IcapRequestInfo {
  action: IcapAction;
  /** Threat name when blocked. */
  threat: string | undefined;
  /** The policy rule that decided, if any. */
  rule: string | undefined;
  /** Parts removed from a multipart form (infectedPartAction 'strip'). */
  removed: NonNullable<IcapLog['removed_parts']>;
  /** The full icap_log record. */
  log: IcapLog;
}

/** What `req.icap` says of an outcome (or of a refusal, which carries the same three fields). */
export function requestInfo(outcome: Pick<ScanOutcome, 'action' | 'threat' | 'log'>): IcapRequestInfo {
  return {
    action: outcome.action,
    threat: outcome.threat,
    rule: outcome.log.rule_name,
    removed: outcome.log.removed_parts ?? [],
    log: outcome.log,
  };
}

/** Creates an engine for a profile (validated now; throws ICAP_ERR_INVALID_PROFILE). */
export function createEngine(profile: IcapProfile): IcapEngine {
  return new IcapEngine(profile);
}
