import type { Readable, Transform } from 'node:stream';
import { createBrotliDecompress, createGunzip, createInflate } from 'node:zlib';
import { isSkipped } from '../client/client.js';
import { IcapError, type IcapErrorCode, IcapErrorCodes } from '../client/errors.js';
import type { IcapResponse } from '../client/transaction.js';
import { bodyConsumedReason, reportBodyConsumed } from '../node/consumed.js';
import { endToEndHeaders, Headers, isSafeFieldValue, isToken } from '../protocol/headers.js';
import { AttemptWatch } from './attempt-watch.js';
import { AdaptedBody, BodyStore } from './body.js';
import { ClientIntake, whenReadyToScan } from './intake.js';
import {
  emitLog,
  httpMethodEnum,
  type IcapAction,
  type IcapLog,
  type IcapRequestLog,
  poolIdentity,
  redactHeaderBlock,
  type Significance,
  vendorEnum,
} from './log.js';
import {
  boundaryOf,
  canonicalForm,
  isMultipart,
  isMultipartFormData,
  type Part,
  parseMultipart,
  validateMultipart,
} from './multipart.js';
import type { PolicyDecision } from './policy.js';
import { PoolGroup, type ServerHandle, type ServerStatus } from './pool-group.js';
import { type IcapProfile, type PinoLike, type ResolvedProfile, resolveProfile } from './profile.js';
import {
  absoluteTarget,
  encapsulationProblem,
  type HttpRequestFacts,
  pathOf,
  requestFacts,
  type ScanRequest,
} from './request.js';
import { buildResponse, type ClientResponse, type ResponseKind } from './respond.js';
import { classifyFailure, HEALTH_FAULTS, reportTransition } from './retry.js';
import { type ScanScope, Telemetry } from './telemetry.js';
import { readVerdict, type Verdict } from './verdict/index.js';

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

export interface ScanOptions {
  signal?: AbortSignal | undefined;
  /** A request logger (pino-compatible) to use instead of the profile's. */
  logger?: PinoLike | undefined;
  /** Shown on block pages so users can quote it. */
  requestId?: string | undefined;
  /**
   * A body the framework already parsed for this request (Koa `ctx.request.body`, Fastify
   * `request.body`): one that says a parser ran before the scan refuses the request (500,
   * ICAP_ERR_BODY_CONSUMED; see node/consumed.ts).
   */
  parsedBody?: unknown;
}

interface OutcomeBase {
  action: IcapAction;
  log: IcapLog;
  /** Threat name when blocked. */
  threat: string | undefined;
  /** Headers to add to the response sent to the client (NSX Defender X-Lastline-*). */
  responseHeaders: Array<[string, string]>;
  /** Frees what the scan still holds. Adapters call it once the response is finished. */
  dispose(): void;
}

export interface PassOutcome extends OutcomeBase {
  kind: 'pass';
  /** The body for the application, or null when the request was left untouched (read it as usual). */
  body: Readable | null;
  /** Length of `body` (when there is one). */
  contentLength: number | undefined;
  /**
   * Replacement request headers for the application, when `body` is not the request's own
   * bytes (a multipart form icapkit serialised again: a new content-type with a fresh
   * boundary; content-length is `contentLength`; no transfer-encoding or content-encoding).
   * Undefined: keep the request's headers.
   */
  headers?: Array<[string, string]> | undefined;
}

export interface RewriteOutcome extends OutcomeBase {
  kind: 'rewrite';
  method: string;
  /** Origin-form request target. */
  url: string;
  /** Request headers for the application; `content-length` is the new body's length. */
  headers: Array<[string, string]>;
  body: Readable;
  contentLength: number;
}

export interface RespondOutcome extends OutcomeBase {
  kind: 'respond';
  status: number;
  headers: Array<[string, string]>;
  body: Buffer;
  /** The request body was not read to its end: close the connection after the response. */
  closeConnection: boolean;
}

export interface AbortedOutcome extends OutcomeBase {
  kind: 'aborted';
  error: IcapError;
}

export type ScanOutcome = PassOutcome | RewriteOutcome | RespondOutcome | AbortedOutcome;

/** Receives every finished `icap_log` record of an engine (see `engine.addLogListener`). */
export type LogListener = (log: Readonly<IcapLog>) => void;

/** setTimeout's largest delay: the engine bounds transactions with its own signal. */
const NO_CLIENT_TIMEOUT = 2_147_483_647;
/** How long a refused request's remaining body is read (and discarded) before answering. */
const DRAIN_WAIT = 5_000;
/** Largest ICAP block page relayed to the client. */
const MAX_RELAY_BODY = 1024 * 1024;
/** A response body we do not need is read up to this size to keep the connection; larger ones are dropped. */
const MAX_DRAIN = 64 * 1024;

/**
 * Failures of the ICAP side, the only errors the failure action applies to (an allow-list):
 * anything else (the client's doing, a local failure, an unexpected exception) fails closed.
 */
const ICAP_SIDE_FAILURES = new Set<IcapErrorCode>([
  // what counts against a server's health (engine/retry.ts), and besides:
  ...HEALTH_FAULTS,
  IcapErrorCodes.SATURATED,
  IcapErrorCodes.NO_SERVER,
  IcapErrorCodes.CLOSED_CLIENT,
]);

/**
 * ICAP 4xx answers to a REQMOD: the server refused what it was sent, which carries what the
 * HTTP client chose (its size, its headers). Never a reason to pass the request unscanned.
 */
const REQMOD_REFUSALS = new WeakSet<IcapError>();

/** Whether the failure action (fail-open) may apply to this error. */
function takesFailAction(error: IcapError): boolean {
  return ICAP_SIDE_FAILURES.has(error.code) && !REQMOD_REFUSALS.has(error);
}

type AttemptResult =
  | { type: 'clean'; res: IcapResponse | null; verdict: Verdict | null; skipped: string | undefined }
  | { type: 'blocked'; res: IcapResponse | null; verdict: Verdict; relay: ClientResponse | undefined }
  | { type: 'adapted'; res: IcapResponse; verdict: Verdict; adapted: AdaptedBody };

export class IcapEngine {
  readonly profile: ResolvedProfile;
  readonly #group: PoolGroup;
  readonly #telemetry: Telemetry;
  readonly #logListeners = new Set<LogListener>();
  readonly #intake: ClientIntake;
  #closed = false;

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
    this.#group.onStateChange = (server, _state, change) => {
      this.#telemetry.serverState(server, change);
      reportTransition(this.profile.logger, this.profile.name, server, change);
    };
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

  /** Sends a finished record to `onLog`, the logger and the log listeners. */
  #emit(log: IcapLog, logger: PinoLike | undefined): void {
    emitLog(log, this.profile.onLog, logger);
    for (const listener of this.#logListeners) {
      try {
        listener(log);
      } catch (err) {
        logger?.error({ err }, 'icapkit: a log listener threw');
      }
    }
  }

  /** Stops probes and closes every ICAP connection. */
  async close(): Promise<void> {
    this.#closed = true;
    this.#telemetry.close();
    this.#group.close();
  }

  async scan(req: ScanRequest, options: ScanOptions = {}): Promise<ScanOutcome> {
    const p = this.profile;
    const t0 = performance.now();
    const facts = requestFacts(req);
    const decision = p.policy.evaluate(facts);
    const log = newLog(p.name, facts, decision);
    const logger = options.logger ?? p.logger;
    const scope = this.#telemetry.scanStart(facts.method, log.uri_path);
    let store: BodyStore | null = null;
    const finish = <T extends ScanOutcome>(outcome: T): T => {
      log.action = outcome.action;
      log.duration = Math.round(performance.now() - t0);
      if (store !== null) log.request_body_length = store.received;
      if (outcome.kind === 'respond') log.http_response_code = outcome.status;
      log.significant = log.significance.length > 0;
      this.#telemetry.scanEnd(scope, log, store?.received ?? 0);
      this.#emit(log, logger);
      return outcome;
    };

    if (!decision.scan) return finish(pass('ICAP_DISABLED', log, null, null, []));
    // A body read before the scan (a parser mounted before the middleware): refused at once.
    const consumed = facts.hasBody ? bodyConsumedReason(req, options.parsedBody) : undefined;
    if (consumed !== undefined) return finish(this.#bodyConsumed(req, consumed, facts, log, options, logger));
    const early = await this.#early(facts, log, options);
    if (early !== null) return finish(early);
    if (this.#closed) {
      return finish(
        this.#failed(
          new IcapError(IcapErrorCodes.CLOSED_CLIENT, 'the ICAP engine was closed'),
          facts,
          log,
          null,
          options,
        ),
      );
    }
    const contentType = facts.headers.get('content-type');
    const perFile = facts.hasBody && p.multipart === 'per-file' && isMultipartFormData(contentType);
    const wholeForm = facts.hasBody && p.multipart === 'whole' && isMultipartFormData(contentType);

    const control = new AbortController();
    const abort = (err: IcapError) => {
      if (!control.signal.aborted) control.abort(err);
    };
    // One client address holds at most maxBodiesPerClient uploads in intake (429 beyond).
    const leaveIntake = facts.hasBody ? this.#intake.enter(facts.clientIp) : () => {};
    if (leaveIntake === null) {
      return finish(
        this.#refuse(
          'too-many',
          IcapErrorCodes.CLIENT_LIMIT,
          `this client already has ${p.maxBodiesPerClient} uploads arriving (maxBodiesPerClient)`,
          facts,
          log,
          null,
          options,
        ),
      );
    }
    if (facts.hasBody) {
      // Per-file scanning replays the original form when every part is clean: hold all of it.
      const retainAll = p.allow204 || perFile || facts.contentCoding !== 'identity';
      store = new BodyStore({
        limit: p.bufferSize,
        retainAll,
        hash: !retainAll,
        memoryThreshold: p.memoryThreshold,
        spoolDir: p.spoolDir,
        onExceeded: () =>
          abort(
            new IcapError(
              IcapErrorCodes.REQUEST_TOO_LARGE,
              `the request body is larger than bufferSize (${p.bufferSize} bytes)`,
            ),
          ),
        idleTimeout: p.bodyTimeout,
        onIdle: () =>
          abort(
            new IcapError(
              IcapErrorCodes.BODY_TIMEOUT,
              `the HTTP client sent nothing of its request body for bodyTimeout (${p.bodyTimeout} ms)`,
            ),
          ),
      });
      store.attach(req);
    }
    // bodyDeadline bounds the whole upload (a trickle never idles long enough for bodyTimeout).
    let deadline: NodeJS.Timeout | undefined;
    if (store !== null) {
      deadline = setTimeout(
        () =>
          abort(
            new IcapError(
              IcapErrorCodes.BODY_TIMEOUT,
              `the HTTP client did not send its whole request body within bodyDeadline (${p.bodyDeadline} ms)`,
            ),
          ),
        p.bodyDeadline,
      );
      const stopDeadline = () => {
        clearTimeout(deadline);
        leaveIntake();
      };
      void store.whenEnded().then(stopDeadline);
    }
    // What the ICAP server sees: the body as sent, or decoded when it is compressed.
    const decoding = store !== null ? this.#decode(facts, store, abort) : null;
    const scanned = decoding?.store ?? store;
    const scanFacts = decoding?.facts ?? facts;
    // Whole mode: the raw form is scanned as one object, and checked by the strict parser while
    // it arrives (a form parsers could read differently is refused, as in per-file mode).
    const formCheck = wholeForm && scanned !== null ? this.#checkForm(contentType!, scanned, abort) : null;
    // responseTimeout bounds how long the request waits for ICAP once its body has arrived:
    // a slow upload is not a slow scanner (stalls while uploading are bounded by ioTimeout).
    let settled = false;
    let timer: NodeJS.Timeout | undefined;
    let waitStart = performance.now();
    const armTimer = () => {
      if (settled) return;
      waitStart = performance.now();
      timer = setTimeout(
        () =>
          abort(
            new IcapError(
              IcapErrorCodes.TIMEOUT,
              `ICAP scan took longer than responseTimeout (${p.responseTimeout} ms)`,
            ),
          ),
        p.responseTimeout,
      );
    };
    const s = store;
    if (s === null) armTimer();
    else {
      void s.whenEnded().then(() => {
        if (s.error !== undefined) {
          abort(
            new IcapError(
              IcapErrorCodes.BODY_SOURCE,
              'the HTTP client went away before its request body was complete',
              {
                cause: s.error,
              },
            ),
          );
        } else armTimer();
      });
    }
    const onCallerAbort = () =>
      abort(new IcapError(IcapErrorCodes.ABORTED, 'the scan was aborted', { cause: options.signal?.reason }));
    if (options.signal?.aborted) onCallerAbort();
    else options.signal?.addEventListener('abort', onCallerAbort, { once: true });

    try {
      if (perFile) {
        const outcome = await this.#scanParts(
          scanFacts,
          scanned!,
          contentType!,
          control.signal,
          log,
          options,
          scope,
          store!,
        );
        settled = true;
        clearTimeout(timer);
        if (performance.now() - waitStart > p.slowResponseWarningThreshold)
          log.significance.push('SLOW_RESPONSE');
        return finish(withDispose(outcome, decoding?.store));
      }
      // The ICAP connection is taken once the body can be fed at the scanner's speed; a body
      // complete by then is sent with its length.
      let sendFacts = scanFacts;
      if (scanned !== null) {
        await whenReadyToScan(
          scanned,
          decoding === null ? req : null,
          { holdBytes: p.holdBodySize, minRate: p.minBodyRate, wholeBody: p.lengthRequired },
          t0,
          control.signal,
        );
        if (scanned.ended && scanned.error === undefined && !scanned.exceeded)
          sendFacts = { ...scanFacts, contentLength: scanned.received, chunked: false };
      }
      const result = await this.#withFailover(sendFacts, scanned, control.signal, log, scope);
      settled = true;
      clearTimeout(timer);
      const waited = performance.now() - waitStart;
      if (waited > p.slowResponseWarningThreshold) log.significance.push('SLOW_RESPONSE');
      if (result.verdict?.unscannable) log.significance.push('UNSCANNABLE');
      // The application gets a body only once all of it is here (the store holds it anyway).
      if (result.type === 'clean') {
        await bodyComplete(scanned, p.bufferSize);
        await bodyComplete(store, p.bufferSize);
      }
      if (formCheck !== null && result.type !== 'blocked') {
        const problem = await formCheck;
        if (problem !== undefined) throw problem;
      }
      return finish(
        withDispose(await this.#apply(result, facts, log, store, options, sendFacts), decoding?.store),
      );
    } catch (caught) {
      settled = true;
      clearTimeout(timer);
      // Whatever failed on the way, a client that went away is an abort, not an ICAP failure.
      const clientGone =
        store?.error !== undefined &&
        !(caught instanceof IcapError && caught.code === IcapErrorCodes.REQUEST_TOO_LARGE);
      let error = clientGone
        ? new IcapError(
            IcapErrorCodes.BODY_SOURCE,
            'the HTTP client went away before its request body was complete',
            { cause: store?.error },
          )
        : caught instanceof IcapError
          ? caught
          : new IcapError(
              IcapErrorCodes.INTERNAL,
              `ICAP scan failed: ${caught instanceof Error ? caught.message : String(caught)}`,
              { cause: caught },
            );
      // Fail-open never hands over a form the strict parser did not read to its end: per-file
      // mode only passes forms it serialised itself; whole mode waits for the check.
      let canReplay = !perFile;
      if (formCheck !== null && takesFailAction(error) && p.failAction === 'fail-open' && store !== null) {
        await store.whenEnded();
        if (store.ended && !store.exceeded && store.error === undefined) {
          const problem = await formCheck;
          if (problem !== undefined) error = problem;
        }
      }
      log.error_code = error.code;
      log.error_message = error.message;
      // Decoded past bufferSize: the wire size alone says nothing, so this never fails open.
      const decodedTooLarge = decoding?.store.exceeded === true;
      decoding?.store.dispose();
      if (error.code === IcapErrorCodes.MULTIPART) canReplay = false;
      return finish(await this.#onError(error, facts, log, store, options, canReplay, decodedTooLarge));
    } finally {
      options.signal?.removeEventListener('abort', onCallerAbort);
      clearTimeout(deadline);
      leaveIntake();
    }
  }

  /**
   * A compressed body (gzip, deflate, br) decoded for the scan, into a store of its own
   * (bounded by bufferSize, so a zip bomb stops there, and spooled like any body). The
   * encapsulated request loses Content-Encoding and Content-Length, since the ICAP server gets
   * the decoded bytes; the application still gets the original ones.
   */
  #decode(
    facts: HttpRequestFacts,
    raw: BodyStore,
    abort: (err: IcapError) => void,
  ): { store: BodyStore; facts: HttpRequestFacts } | null {
    const coding = facts.contentCoding;
    const make = DECODERS.get(coding);
    if (coding === 'identity' || make === undefined) return null;
    const p = this.profile;
    const decoded = new BodyStore({
      limit: p.bufferSize,
      retainAll: true,
      memoryThreshold: p.memoryThreshold,
      spoolDir: p.spoolDir,
      onExceeded: () =>
        abort(
          new IcapError(
            IcapErrorCodes.REQUEST_TOO_LARGE,
            `the decoded request body is larger than bufferSize (${p.bufferSize} bytes)`,
          ),
        ),
    });
    const source = raw.stream();
    const decoder = make();
    decoder.on('error', (err) => {
      decoded.fail(
        new IcapError(
          IcapErrorCodes.CONTENT_ENCODING,
          `the ${coding} body cannot be decoded: ${err.message}`,
          { cause: err },
        ),
      );
      source.destroy();
    });
    source.on('error', (err) => decoded.fail(err));
    source.pipe(decoder);
    decoded.attach(decoder);
    const pairs = facts.headerPairs.filter(
      ([n]) => !['content-encoding', 'content-length'].includes(n.toLowerCase()),
    );
    return {
      store: decoded,
      facts: {
        ...facts,
        headerPairs: pairs,
        headers: new Headers(pairs),
        contentLength: undefined,
        chunked: true,
        contentCoding: 'identity',
      },
    };
  }

  /**
   * Decides what needs no body: for a request the rules select, a declared length above
   * bufferSize (413, or the untouched request with fail-open) and a content type the profile
   * does not allow (415). Null: the body must be scanned.
   */
  async #early(facts: HttpRequestFacts, log: IcapLog, options: ScanOptions): Promise<ScanOutcome | null> {
    const p = this.profile;
    // What the ICAP server would be sent must be what the application reads: else 400, never failAction.
    const problem = encapsulationProblem(facts, p.absoluteUri);
    if (problem !== undefined)
      return this.#refuse('bad-request', IcapErrorCodes.BAD_REQUEST, problem, facts, log, null, options);
    const transfer = facts.transferCoding;
    if (transfer !== 'chunked' && transfer !== undefined) {
      // Node only removes the chunked framing: the body would reach the application still coded.
      return this.#refuse(
        'unsupported-transfer-coding',
        IcapErrorCodes.CONTENT_ENCODING,
        `Transfer-Encoding ${JSON.stringify(transfer)} is not supported (only chunked)`,
        facts,
        log,
        null,
        options,
      );
    }
    const coding = facts.contentCoding;
    if (facts.hasBody && coding !== 'identity' && (p.contentEncoding === 'refuse' || !DECODERS.has(coding))) {
      const reason =
        p.contentEncoding === 'refuse'
          ? `compressed uploads (Content-Encoding: ${coding}) are not accepted`
          : `Content-Encoding ${JSON.stringify(coding)} is not supported`;
      return this.#refuse(
        'unsupported-type',
        IcapErrorCodes.CONTENT_ENCODING,
        reason,
        facts,
        log,
        null,
        options,
      );
    }
    const contentType = facts.headers.get('content-type');
    if (
      facts.hasBody &&
      p.allowedContentTypes !== undefined &&
      !mediaTypeAllowed(contentType, p.allowedContentTypes)
    ) {
      const reason = `content type ${JSON.stringify(contentType ?? '(none)')} is not allowed`;
      return this.#refuse('unsupported-type', IcapErrorCodes.CONTENT_TYPE, reason, facts, log, null, options);
    }
    const multipart = this.#multipartEarly(facts, contentType, log, options);
    if (multipart !== null) return multipart;
    if (facts.contentLength !== undefined && facts.contentLength > p.bufferSize) {
      return this.#tooLarge(facts, log, null, options);
    }
    return null;
  }

  /**
   * A multipart body, from its head: multipart/form-data needs a Content-Type every parser
   * reads the same boundary from (400 otherwise); other multipart types are refused (415)
   * unless the profile scans them as raw bytes.
   */
  #multipartEarly(
    facts: HttpRequestFacts,
    contentType: string | undefined,
    log: IcapLog,
    options: ScanOptions,
  ): ScanOutcome | null {
    if (!facts.hasBody || !isMultipart(contentType)) return null;
    if (!isMultipartFormData(contentType)) {
      if (this.profile.otherMultipart === 'whole') return null;
      const media = contentType!.split(';')[0]!.trim().toLowerCase();
      const reason = `${media} bodies are not accepted (multipart/form-data is)`;
      return this.#refuse('unsupported-type', IcapErrorCodes.MULTIPART, reason, facts, log, null, options);
    }
    try {
      boundaryOf(contentType!);
    } catch (err) {
      const e = err as IcapError;
      return this.#refuse('bad-request', e.code, e.message, facts, log, null, options);
    }
    return null;
  }

  /**
   * Whole mode: the strict multipart parser over the body as it arrives. Resolves with the
   * problem it found (and aborts the scan with it), or undefined.
   */
  #checkForm(
    contentType: string,
    body: BodyStore,
    abort: (err: IcapError) => void,
  ): Promise<IcapError | undefined> {
    return validateMultipart(contentType, body.open(), this.profile.multipartLimits).then(
      () => undefined,
      (err: unknown) => {
        if (!(err instanceof IcapError) || err.code !== IcapErrorCodes.MULTIPART) return undefined;
        abort(err);
        return err;
      },
    );
  }

  /**
   * For a request that announced `Expect: 100-continue`: the answer that can be given before
   * the client sends its body (413, 415), or null when the body is wanted. A refusal is logged
   * like any other; a fail-open pass is not a refusal (null).
   */
  async preflight(req: ScanRequest, options: ScanOptions = {}): Promise<RespondOutcome | null> {
    const facts = requestFacts(req);
    const decision = this.profile.policy.evaluate(facts);
    if (!decision.scan) return null;
    const log = newLog(this.profile.name, facts, decision);
    const early = await this.#early(facts, log, options);
    if (early === null || early.kind !== 'respond') return null;
    log.action = early.action;
    log.http_response_code = early.status;
    log.significant = true;
    this.#telemetry.scanEnd(this.#telemetry.scanStart(facts.method, log.uri_path), log, 0);
    this.#emit(log, options.logger ?? this.profile.logger);
    return early;
  }

  /** What a failed scan turns into: 413, an aborted request, or the failure action. */
  async #onError(
    error: IcapError,
    facts: HttpRequestFacts,
    log: IcapLog,
    store: BodyStore | null,
    options: ScanOptions,
    canReplay = true,
    decodedTooLarge = false,
  ): Promise<ScanOutcome> {
    if (error.code === IcapErrorCodes.REQUEST_TOO_LARGE)
      return this.#tooLarge(facts, log, store, options, decodedTooLarge);
    if (error.code === IcapErrorCodes.CONTENT_ENCODING) {
      return this.#refuse('bad-request', error.code, error.message, facts, log, store, options);
    }
    if (error.code === IcapErrorCodes.MULTIPART) {
      return this.#refuse(
        error.status === 413 ? 'too-large' : 'bad-request',
        error.code,
        error.message,
        facts,
        log,
        store,
        options,
      );
    }
    if (error.code === IcapErrorCodes.BODY_TIMEOUT)
      return this.#clientTimeout(error, facts, log, store, options);
    if (error.code === IcapErrorCodes.BODY_SOURCE || error.code === IcapErrorCodes.ABORTED) {
      log.significance.push('CLIENT_ABORTED');
      store?.dispose();
      return { ...base('ICAP_FAILED', log, undefined, [], () => {}), kind: 'aborted', error };
    }
    // Only a failure of the ICAP side may take the failure action; anything else fails closed.
    if (!takesFailAction(error)) return this.#failed(error, facts, log, store, options, false, canReplay);
    if (this.profile.failAction === 'fail-open' && (store === null || store.complete)) {
      // Passing unscanned still needs the whole body first (and it may turn out too large).
      try {
        await bodyComplete(store, this.profile.bufferSize);
      } catch (err) {
        const e = err as IcapError;
        log.error_code = e.code;
        log.error_message = e.message;
        return this.#onError(e, facts, log, store, options, canReplay);
      }
    }
    return this.#failed(error, facts, log, store, options, undefined, canReplay);
  }

  // ---------------------------------------------------------------- multipart, part by part

  /**
   * multipart/form-data scanned per file: the strict parser splits the form (refusing what it
   * cannot read one way only), each part (and each non-empty field, unless skipped) is its own
   * ICAP request named after its file, `multipartConcurrency` at a time. The application always
   * gets a form serialised from this parse (canonicalForm): all clean, every part (pass, with
   * new content-type and content-length headers); a part blocked, 403 naming it, or (strip) the
   * form without it; a part rewritten, the form with the new content.
   */
  async #scanParts(
    facts: HttpRequestFacts,
    store: BodyStore,
    contentType: string,
    signal: AbortSignal,
    log: IcapLog,
    options: ScanOptions,
    scope: ScanScope,
    replay: BodyStore = store,
  ): Promise<ScanOutcome> {
    const p = this.profile;
    const local = new AbortController();
    const onAbort = () => local.abort(signal.reason);
    if (signal.aborted) onAbort();
    else signal.addEventListener('abort', onAbort, { once: true });
    const run = limiter(p.multipartConcurrency);
    const scans: Array<Promise<PartResult>> = [];
    const scannedParts: Part[] = [];
    // Every part, as soon as it starts: a failed parse must still dispose what was created.
    const parts: Part[] = [];
    const disposeParts = () => {
      for (const part of parts) part.store.dispose();
    };
    /** 403 naming the first infected part. */
    const blockedPart = (first: PartResult, clientHeaders: Array<[string, string]> = []): ScanOutcome => {
      log.significance.push('ICAP_BLOCKED');
      const response = buildResponse('blocked', facts.headers.get('accept'), {
        threat: first.verdict?.threat_id,
        fileName: first.part.fileName ?? first.part.field,
        requestId: options.requestId,
      });
      return {
        ...base('ICAP_BLOCKED', log, first.verdict?.threat_id, clientHeaders, () => {
          store.dispose();
          replay.dispose();
        }),
        kind: 'respond',
        status: response.status,
        headers: [...response.headers, ...clientHeaders],
        body: response.body,
        // The rest of a malformed form may not have been read.
        closeConnection: !store.ended,
      };
    };
    try {
      await parseMultipart(
        contentType,
        store.open(),
        { limits: p.multipartLimits, storage: { memoryThreshold: p.memoryThreshold, spoolDir: p.spoolDir } },
        (part) => {
          parts.push(part);
          if (!mustScanPart(part, p.multipartFields)) return;
          // A scan failing for its own reason must not be an unhandled rejection before it is awaited.
          const scan = run(() => this.#scanPart(part, facts, local.signal, log, scope));
          scan.catch(() => {});
          scans.push(scan);
          scannedParts.push(part);
        },
        local.signal,
      );
    } catch (err) {
      local.abort(err);
      const done = await Promise.allSettled(scans);
      disposeParts();
      // A threat already found is not lost to a malformed rest of the form: 403, not 400.
      const threat = done.find(
        (r): r is PromiseFulfilledResult<PartResult> =>
          r.status === 'fulfilled' && r.value.type === 'blocked',
      );
      if (threat !== undefined && err instanceof IcapError && err.code === IcapErrorCodes.MULTIPART) {
        log.file_names = parts.filter((x) => x.kind === 'file').map((x) => x.fileName ?? '');
        log.significance.push('MULTIPART_REFUSED');
        log.error_code = err.code;
        log.error_message = err.message;
        return blockedPart(threat.value);
      }
      throw err;
    } finally {
      signal.removeEventListener('abort', onAbort);
    }
    const settled = await Promise.allSettled(scans);
    const results: PartResult[] = [];
    for (const [i, r] of settled.entries()) {
      if (r.status === 'fulfilled') {
        results.push(r.value);
        continue;
      }
      // The whole form was parsed: a scan stopped by responseTimeout is an ICAP failure of that
      // part (the failure action decides); anything else (the client, an abort) ends the scan.
      const e = r.reason;
      if (e instanceof IcapError && e.code === IcapErrorCodes.TIMEOUT) {
        results.push({ part: scannedParts[i]!, type: 'failed', error: e });
        continue;
      }
      disposeParts();
      throw e;
    }
    log.file_names = parts.filter((x) => x.kind === 'file').map((x) => x.fileName ?? '');
    const clientHeaders = results.flatMap((r) => r.verdict?.client_headers ?? []);
    if (results.some((r) => r.verdict?.unscannable)) log.significance.push('UNSCANNABLE');

    const blocked = results.filter((r) => r.type === 'blocked');
    if (blocked.length > 0 && p.infectedPartAction === 'block') {
      disposeParts();
      return blockedPart(blocked[0]!, clientHeaders);
    }
    const failed = results.filter((r) => r.type === 'failed');
    if (failed.length > 0) {
      if (p.failAction === 'fail-closed') {
        disposeParts();
        throw failed[0]!.error;
      }
      log.significance.push('ICAP_ERROR', 'FAIL_OPEN');
      log.fail_action = 'fail-open';
      log.error_code = failed[0]!.error!.code;
      log.error_message = failed[0]!.error!.message;
    }
    const modified = results.filter((r) => r.type === 'modified');
    // The form for the application: serialised from the parse, without the blocked parts
    // (strip), with the rewritten ones, under a fresh boundary.
    const byIndex = new Map(results.map((r) => [r.part.index, r]));
    const kept = parts
      .filter((part) => byIndex.get(part.index)?.type !== 'blocked')
      .map((part) => {
        const r = byIndex.get(part.index);
        return r?.type === 'modified' && r.adapted !== undefined
          ? { part, content: { stream: () => r.adapted!.stream(), length: r.adapted.length } }
          : { part };
      });
    const form = canonicalForm(kept);
    const headers = endToEndHeaders(facts.headerPairs).filter(
      ([n]) => !FORM_HEADERS_REPLACED.has(n.toLowerCase()),
    );
    headers.push(['content-type', form.contentType], ['content-length', String(form.length)]);
    store.dispose();
    replay.dispose();
    const disposeForm = () => {
      form.body.destroy();
      disposeParts();
      for (const r of modified) r.adapted?.dispose();
    };
    if (blocked.length === 0 && modified.length === 0) {
      const action = failed.length > 0 ? 'ICAP_FAILED' : 'ICAP_PASSED';
      const outcome = pass(action, log, null, form.body, clientHeaders, disposeForm, form.length);
      outcome.headers = headers;
      return outcome;
    }
    if (blocked.length > 0) {
      log.significance.push('ICAP_BLOCKED', 'PARTS_REMOVED');
      log.removed_parts = blocked.map((r) => {
        const removed: { field: string; file_name?: string; threat_id?: string } = { field: r.part.field };
        if (r.part.fileName !== undefined) removed.file_name = r.part.fileName;
        if (r.verdict?.threat_id !== undefined) removed.threat_id = r.verdict.threat_id;
        return removed;
      });
    }
    if (modified.length > 0) log.significance.push('ICAP_MODIFIED');
    return {
      ...base('ICAP_MODIFIED', log, blocked[0]?.verdict?.threat_id, clientHeaders, disposeForm),
      kind: 'rewrite',
      method: facts.method,
      url: facts.target,
      headers,
      body: form.body,
      contentLength: form.length,
    };
  }

  /** One part as its own ICAP request. ICAP failures are a result; aborts and client errors throw. */
  async #scanPart(
    part: Part,
    facts: HttpRequestFacts,
    signal: AbortSignal,
    log: IcapLog,
    scope: ScanScope,
  ): Promise<PartResult> {
    await part.done;
    // A field is scanned as its raw bytes (whatever its charset): what the application gets.
    const body = part.store;
    if (part.kind === 'field' && body.received === 0) return { part, type: 'clean', verdict: undefined };
    const subject = partFacts(facts, part, body.received);
    const entries: IcapRequestLog[] = [];
    try {
      const result = await this.#withFailover(subject, body, signal, log, scope, entries);
      for (const entry of entries) nameEntry(entry, part);
      if (result.type === 'clean') return { part, type: 'clean', verdict: result.verdict ?? undefined };
      if (result.type === 'blocked') return { part, type: 'blocked', verdict: result.verdict };
      const identical = await result.adapted.identical();
      const entry = entries.at(-1);
      if (entry !== undefined) {
        entry.action = identical ? 'ICAP_PASSED' : 'ICAP_MODIFIED';
        if (!identical) entry.modified_content_length = result.adapted.length;
      }
      return identical
        ? { part, type: 'clean', verdict: result.verdict }
        : { part, type: 'modified', verdict: result.verdict, adapted: result.adapted };
    } catch (err) {
      for (const entry of entries) nameEntry(entry, part);
      if (
        err instanceof IcapError &&
        takesFailAction(err) &&
        (!signal.aborted || err.code === IcapErrorCodes.NO_SERVER)
      )
        return { part, type: 'failed', error: err };
      throw err;
    }
  }

  // ---------------------------------------------------------------- ICAP attempts

  async #withFailover(
    facts: HttpRequestFacts,
    store: BodyStore | null,
    signal: AbortSignal,
    log: IcapLog,
    scope: ScanScope,
    entries?: IcapRequestLog[],
  ): Promise<AttemptResult> {
    // One try per server, next healthy server or pool after a failure, all within the
    // request's responseTimeout (its signal): see engine/retry.ts for what is retried.
    const tried = new Set<ServerHandle>();
    let lastError: unknown;
    // A server that refused the request (ICAP 4xx) decides, whatever the next one does.
    let refusal: IcapError | undefined;
    for (;;) {
      let handle: ServerHandle;
      try {
        handle = this.#group.pick(tried);
      } catch (err) {
        throw refusal ?? lastError ?? err;
      }
      const ticket = handle.begin();
      tried.add(handle);
      const entry = this.#newEntry(handle, facts);
      log.request_logs.push(entry);
      entries?.push(entry);
      handle.outstanding++;
      const watch = new AttemptWatch(signal, this.profile.stallTimeout, handle.server.url, {
        busy: () => handle.client.stats.pending > 0 || handle.client.stats.connecting > 0,
        canRetry: () => (store === null || store.complete) && this.#group.hasAlternative(tried),
      });
      try {
        this.#telemetry.transactionStart(scope, handle, this.profile.serviceUri);
        const result = await this.#attempt(handle, facts, store, watch.signal, entry, scope, watch);
        handle.succeeded(ticket);
        this.#telemetry.transactionVerdict(
          scope,
          handle,
          this.profile.serviceUri,
          entry.icap_response_code ?? 0,
          result.verdict?.kind ?? 'clean',
          result.verdict?.threat_id,
          Number(entry.latency),
        );
        return result;
      } catch (err) {
        const error =
          err instanceof IcapError
            ? err
            : new IcapError(IcapErrorCodes.INTERNAL, String(err), { cause: err });
        if (REQMOD_REFUSALS.has(error)) refusal ??= error;
        entry.action = 'ICAP_FAILED';
        // An ICAP error status stays in the record, whatever else was wrong with the answer.
        if (error.status !== undefined) entry.icap_response_code ??= error.status;
        entry.error_code = error.code;
        entry.error_message = error.message;
        this.#telemetry.transactionError(scope, handle, this.profile.serviceUri, error);
        const failure = classifyFailure(error, signal, watch);
        // A refusal (ICAP 4xx) is about the request, not the server: it must not let clients
        // suspend a healthy server (and so switch fail-open on for everyone).
        if (failure.health && !REQMOD_REFUSALS.has(error)) handle.failed(error, ticket);
        else handle.abandoned(ticket);
        const replayable = store === null || store.complete;
        if (!failure.retry || !replayable) throw error;
        lastError = error;
      } finally {
        watch.dispose();
        handle.abandoned(ticket);
        handle.outstanding--;
      }
    }
  }

  async #attempt(
    handle: ServerHandle,
    facts: HttpRequestFacts,
    store: BodyStore | null,
    signal: AbortSignal,
    entry: IcapRequestLog,
    scope: ScanScope,
    watch?: AttemptWatch,
  ): Promise<AttemptResult> {
    const p = this.profile;
    const started = performance.now();
    watch?.start();
    const extraHeaders: Array<[string, string]> = [];
    if (p.sendClientIp && facts.clientIp !== undefined)
      extraHeaders.push(['X-Client-IP', facts.clientIp.replace(/^::ffff:/, '')]);
    const exchange = handle.client.request({
      method: 'REQMOD',
      service: p.serviceUri,
      httpRequest: {
        method: facts.method,
        target: p.absoluteUri ? absoluteTarget(facts) : facts.target,
        httpVersion: facts.httpVersion,
        headers: facts.headerPairs,
      },
      body: store !== null && watch !== undefined ? watch.wrap(store) : store,
      bodyLength: facts.chunked ? undefined : facts.contentLength,
      preview: p.enablePreview && !smallBody(facts, p.previewMinBodySize) ? p.previewSize : false,
      allow204: p.allow204,
      honourTransferIgnore: p.transferIgnore === 'extension',
      headers: extraHeaders,
      signal,
      timeout: NO_CLIENT_TIMEOUT,
      // Waiting for a busy server's connection is bounded only when the request can go elsewhere.
      queueTimeout: watch === undefined || watch.canRetry() ? p.queueTimeout : Number.POSITIVE_INFINITY,
      onContinue: () => {
        watch?.progress();
        store?.stopHolding();
        this.#telemetry.transactionPreview(scope, handle, p.serviceUri);
      },
    });
    const headBlock: { result?: AttemptResult | null } = {};
    const r = await exchange.catch((err: unknown) => {
      // A head received whole that then broke a framing rule still names its verdict: a threat
      // in it blocks (a threat verdict is never lost); anything else stays the error it was.
      headBlock.result = err instanceof IcapError ? this.#blockedByHead(err, facts, entry, started) : null;
      if (headBlock.result === null) throw err;
      return null;
    });
    if (r === null) return headBlock.result!;
    if (isSkipped(r)) {
      entry.action = 'ICAP_PASSED';
      entry.reason = `Transfer-Ignore: ${r.extension}`;
      return { type: 'clean', res: null, verdict: null, skipped: r.extension };
    }
    const res = r;
    watch?.progress();
    this.#fillEntry(entry, res);
    const verdict = readVerdict(
      p.vendor,
      {
        method: 'REQMOD',
        status: res.status,
        reasonPhrase: res.reason,
        headers: res.headers,
        httpRequest: res.httpRequest,
        httpResponse: res.httpResponse,
        fileName: facts.fileName,
      },
      { nsxStatusUrl: p.nsxStatusUrl, forwardLastlineHeaders: p.forwardLastlineHeaders },
    );
    fillVerdict(entry, verdict, p.vendor);
    switch (verdict.kind) {
      case 'error': {
        await drain(res);
        const error = new IcapError(
          IcapErrorCodes.SERVER_STATUS,
          `ICAP server ${handle.server.url} answered ${res.status} ${res.reason}`.trim(),
          { status: res.status },
        );
        if (res.status < 500) REQMOD_REFUSALS.add(error);
        throw error;
      }
      case 'clean': {
        await drain(res);
        entry.latency = await latencyOf(res, started);
        entry.action = 'ICAP_PASSED';
        return { type: 'clean', res, verdict, skipped: undefined };
      }
      case 'blocked': {
        // The threat is named in the head: the block stands even when the block page cannot be
        // read to its end (the server closes or resets after its answer). Our own page then.
        // Nothing may turn this verdict into a failure now.
        watch?.stop();
        let relay: ClientResponse | undefined;
        try {
          if (p.blockResponse === 'relay' && res.httpResponse !== null) {
            relay = await readRelay(res);
          } else {
            await drain(res);
          }
        } catch {
          // The page broke off (reset, stall): the verdict read from the head still blocks,
          // with our own page; it is never retried elsewhere or turned into a failure.
          relay = undefined;
          res.body?.destroy();
        }
        entry.latency = await latencyOf(res, started).catch(() =>
          String(Math.round(performance.now() - started)),
        );
        entry.action = 'ICAP_BLOCKED';
        entry.http_response_code = relay?.status ?? 403;
        return { type: 'blocked', res, verdict, relay };
      }
      case 'adapted': {
        const adapted = new AdaptedBody(store, p.bufferSize, {
          memoryThreshold: p.memoryThreshold,
          spoolDir: p.spoolDir,
        });
        try {
          if (res.body !== null) {
            for await (const chunk of res.body as AsyncIterable<Buffer>) {
              watch?.received(chunk.length);
              if (!adapted.write(chunk)) {
                res.body.destroy();
                throw new IcapError(
                  IcapErrorCodes.BODY_TOO_LARGE,
                  `the body returned by the ICAP server is larger than bufferSize (${p.bufferSize} bytes)`,
                );
              }
            }
          }
          entry.latency = String(Math.round((await res.done).latencyMs));
          watch?.stop();
          // Whether the returned body equals the original can only be said once the original is complete.
          await bodyComplete(store, p.bufferSize);
        } catch (err) {
          // What was stored of the returned body (in memory or a temp file) goes with the attempt.
          adapted.dispose();
          throw err;
        }
        return { type: 'adapted', res, verdict, adapted };
      }
    }
  }

  /** A threat named in the head carried by a failed exchange's error, as a block; else null. */
  #blockedByHead(
    err: IcapError,
    facts: HttpRequestFacts,
    entry: IcapRequestLog,
    started: number,
  ): AttemptResult | null {
    const head = err.head;
    if (head === undefined) return null;
    const p = this.profile;
    const verdict = readVerdict(
      p.vendor,
      {
        method: 'REQMOD',
        status: head.status,
        reasonPhrase: head.reason,
        headers: head.headers,
        httpRequest: null,
        httpResponse: head.httpResponse,
        fileName: facts.fileName,
      },
      { nsxStatusUrl: p.nsxStatusUrl, forwardLastlineHeaders: p.forwardLastlineHeaders },
    );
    if (verdict.kind !== 'blocked') return null;
    fillVerdict(entry, verdict, p.vendor);
    entry.icap_response_code = head.status;
    entry.icap_headers_received_from_server = redactHeaderBlock(head.rawHeaders, p.redactHeaders);
    entry.error_code = err.code;
    entry.error_message = err.message;
    entry.latency = String(Math.round(performance.now() - started));
    entry.action = 'ICAP_BLOCKED';
    entry.http_response_code = 403;
    return { type: 'blocked', res: null, verdict, relay: undefined };
  }

  // ---------------------------------------------------------------- outcomes

  async #apply(
    result: AttemptResult,
    facts: HttpRequestFacts,
    log: IcapLog,
    store: BodyStore | null,
    options: ScanOptions,
    sentFacts: HttpRequestFacts = facts,
  ): Promise<ScanOutcome> {
    const entry = log.request_logs.at(-1);
    const clientHeaders = result.verdict?.client_headers ?? [];
    const dispose = () => store?.dispose();
    if (result.type === 'clean') {
      return pass('ICAP_PASSED', log, store, null, clientHeaders);
    }
    if (result.type === 'blocked') {
      log.significance.push('ICAP_BLOCKED');
      const threat = result.verdict.threat_id;
      const reported = result.verdict.violations[0]?.file_name;
      const fileName =
        reported !== undefined && reported !== '' && reported !== '-' ? reported : facts.fileName;
      let response: ClientResponse;
      const closeConnection = !(await drainRequest(store, this.profile));
      if (result.relay !== undefined) {
        response = result.relay;
        if (closeConnection && !isHttp2(facts)) response.headers.push(['Connection', 'close']);
      } else {
        response = buildResponse('blocked', facts.headers.get('accept'), {
          threat,
          fileName,
          requestId: options.requestId,
          closeConnection: closeConnection && !isHttp2(facts),
        });
      }
      return {
        ...base('ICAP_BLOCKED', log, threat, clientHeaders, dispose),
        kind: 'respond',
        status: response.status,
        headers: [...response.headers, ...clientHeaders],
        body: response.body,
        closeConnection,
      };
    }
    // adapted
    const { res, adapted } = result;
    const head = res.httpRequest;
    const sameHead = head === null || sameRequestHead(head, sentFacts, this.profile.absoluteUri);
    if (sameHead && (await adapted.identical())) {
      if (entry !== undefined) entry.action = 'ICAP_PASSED';
      if (store?.retaining) {
        // The original is replayed: what was kept of the echo (in hash mode, maybe a temp file) goes.
        adapted.dispose();
        return pass('ICAP_PASSED', log, store, null, clientHeaders);
      }
      return pass('ICAP_PASSED', log, null, adapted.stream(), clientHeaders, dispose, adapted.length);
    }
    log.significance.push('ICAP_MODIFIED');
    if (entry !== undefined) {
      entry.action = 'ICAP_MODIFIED';
      entry.modified_content_length = adapted.length;
    }
    const body = adapted.stream();
    store?.dispose();
    const rewritten = rewriteHead(head, facts, adapted.length);
    return {
      ...base('ICAP_MODIFIED', log, undefined, clientHeaders, () => body.destroy()),
      kind: 'rewrite',
      method: rewritten.method,
      url: rewritten.url,
      headers: rewritten.headers,
      body,
      contentLength: adapted.length,
    };
  }

  /**
   * A request refused for what it is, not for what the ICAP server said: a malformed or
   * over-limit multipart form, a content type the profile does not allow. Never subject to the
   * failure action.
   */
  #refuse(
    kind: ResponseKind,
    code: IcapErrorCode,
    reason: string,
    facts: HttpRequestFacts,
    log: IcapLog,
    store: BodyStore | null,
    options: ScanOptions,
  ): ScanOutcome {
    log.significance.push(REFUSAL_SIGNIFICANCE[code] ?? 'MULTIPART_REFUSED');
    log.error_code ??= code;
    log.error_message ??= reason;
    const closeConnection = store === null ? facts.hasBody : !store.ended;
    store?.dispose();
    return answer('ICAP_BLOCKED', log, kind, facts, options, closeConnection, capitalise(reason));
  }

  /** 500 for a body read before the scan; the fix is reported once per engine (see node/consumed.ts). */
  #bodyConsumed(
    req: ScanRequest,
    reason: string,
    facts: HttpRequestFacts,
    log: IcapLog,
    options: ScanOptions,
    logger: PinoLike | undefined,
  ): ScanOutcome {
    const message = reportBodyConsumed(this, this.profile.name, reason, logger);
    log.significance.push('ICAP_ERROR');
    log.error_code = IcapErrorCodes.BODY_CONSUMED;
    log.error_message = message;
    const ended = (req as { readableEnded?: boolean }).readableEnded === true;
    return answer('ICAP_FAILED', log, 'misconfigured', facts, options, !ended);
  }

  /** bufferSize exceeded (declared or while reading). */
  async #tooLarge(
    facts: HttpRequestFacts,
    log: IcapLog,
    store: BodyStore | null,
    options: ScanOptions,
    decoded = false,
  ): Promise<ScanOutcome> {
    const p = this.profile;
    // Decoded past bufferSize (a small compressed body): the parser downstream would decode it
    // too, so passing it unscanned would let a few KiB switch fail-open on. Always 413.
    const open = p.bufferSizeExceedAction === 'fail-open' && !decoded;
    log.significance.push('BUFFER_SIZE_EXCEEDED');
    log.fail_action = open ? 'fail-open' : 'fail-closed';
    log.error_code ??= IcapErrorCodes.REQUEST_TOO_LARGE;
    log.error_message ??= `the request body is larger than bufferSize (${p.bufferSize} bytes)`;
    if (open) {
      // Unscanned, as the profile allows: the request untouched (what was read is put back),
      // or, if it ended already, the whole held body replayed.
      if (store === null) {
        log.significance.push('FAIL_OPEN');
        return pass('ICAP_FAILED', log, null, null, []);
      }
      if (store.ended && store.complete) {
        log.significance.push('FAIL_OPEN');
        return pass('ICAP_FAILED', log, store, null, []);
      }
      if (await store.restore()) {
        log.significance.push('FAIL_OPEN');
        return pass('ICAP_FAILED', log, null, null, []);
      }
      log.error_message +=
        ' (the body was already streamed to the ICAP server and not kept, so it cannot pass unscanned)';
    }
    store?.dispose();
    return answer('ICAP_FAILED', log, 'too-large', facts, options, true);
  }

  /** The ICAP side failed: failAction decides (`open` false: fail closed whatever it says). */
  #failed(
    error: IcapError,
    facts: HttpRequestFacts,
    log: IcapLog,
    store: BodyStore | null,
    options: ScanOptions,
    open = this.profile.failAction === 'fail-open',
    canReplay = true,
  ): ScanOutcome {
    log.significance.push('ICAP_ERROR');
    log.fail_action = open ? 'fail-open' : 'fail-closed';
    log.error_code = error.code;
    log.error_message = error.message;
    if (open && !canReplay) {
      log.error_message +=
        ' (a multipart form passes only as icapkit serialised it from a complete parse, which this request did not get)';
    } else if (open) {
      if (store === null || store.complete) {
        log.significance.push('FAIL_OPEN');
        return pass('ICAP_FAILED', log, store, null, []);
      }
      log.error_message +=
        ' (the body was already streamed to the ICAP server and not kept, so it cannot pass unscanned)';
    }
    store?.dispose();
    return answer('ICAP_FAILED', log, 'unavailable', facts, options, store !== null && !store.ended);
  }

  /** The HTTP client stalled in the middle of its body: 408, whatever the failure action. */
  #clientTimeout(
    error: IcapError,
    facts: HttpRequestFacts,
    log: IcapLog,
    store: BodyStore | null,
    options: ScanOptions,
  ): ScanOutcome {
    log.significance.push('CLIENT_TIMEOUT');
    log.error_code = error.code;
    log.error_message = error.message;
    store?.dispose();
    return answer('ICAP_FAILED', log, 'timeout', facts, options, true);
  }

  // ---------------------------------------------------------------- log entries

  #newEntry(handle: ServerHandle, facts: HttpRequestFacts): IcapRequestLog {
    const p = this.profile;
    const pool = poolIdentity(handle.pool.name);
    return {
      action: 'ICAP_FAILED',
      icap_method: 'ICAP_METHOD_REQMOD',
      http_method: httpMethodEnum(facts.method),
      icap_absolute_uri: handle.client.uri(p.serviceUri),
      complete_body_sent: false,
      pool_name: pool.name,
      pool_uuid: pool.uuid,
      icap_server_ip: handle.server.host,
      icap_server_port: handle.server.port,
      latency: '0',
      icap_headers_sent_to_server: '',
      vendor: vendorEnum(p.vendor),
    };
  }

  #fillEntry(entry: IcapRequestLog, res: IcapResponse): void {
    const redact = this.profile.redactHeaders;
    entry.icap_response_code = res.status;
    entry.complete_body_sent = res.completeBodySent;
    if (res.connection.remoteAddress !== undefined) entry.icap_server_ip = res.connection.remoteAddress;
    if (res.connection.remotePort !== undefined) entry.icap_server_port = res.connection.remotePort;
    if (res.connection.localPort !== undefined) entry.source_port = res.connection.localPort;
    entry.icap_headers_sent_to_server = redactHeaderBlock(res.requestHeaders, redact);
    entry.icap_headers_received_from_server = redactHeaderBlock(res.rawHeaders, redact);
    if (res.istag !== undefined) entry.istag = res.istag;
    const preview = /(?:^|\n)Preview: (\d+)/.exec(res.requestHeaders);
    if (preview !== null) entry.preview_size = Number(preview[1]);
    entry.connection_reused = res.connection.reused;
  }
}

/** Request headers a canonical multipart form replaces (or drops: it has no transfer or content coding). */
const FORM_HEADERS_REPLACED = new Set([
  'content-type',
  'content-length',
  'transfer-encoding',
  'content-encoding',
]);

/**
 * Whether a part is scanned: files always; fields unless `multipartFields: 'skip'`, and even
 * then a field whose name holds `filename` (a parser that finds `filename=` with a regex over
 * the whole Content-Disposition value could make a file of it; formidable 3.5 does not, but
 * the cost of scanning such a field is nil).
 */
function mustScanPart(part: Part, fields: 'scan' | 'skip'): boolean {
  if (part.kind === 'file' || fields === 'scan') return true;
  return /filename/i.test(part.head.nameBytes);
}

interface PartResult {
  part: Part;
  type: 'clean' | 'blocked' | 'modified' | 'failed';
  verdict?: Verdict | undefined;
  adapted?: AdaptedBody | undefined;
  error?: IcapError | undefined;
}

/** The log's significance for a request refused for what it is. */
const REFUSAL_SIGNIFICANCE: Partial<Record<IcapErrorCode, Significance>> = {
  [IcapErrorCodes.CONTENT_TYPE]: 'CONTENT_TYPE_REFUSED',
  [IcapErrorCodes.CONTENT_ENCODING]: 'CONTENT_ENCODING_REFUSED',
  [IcapErrorCodes.MULTIPART]: 'MULTIPART_REFUSED',
  [IcapErrorCodes.BAD_REQUEST]: 'REQUEST_REFUSED',
  [IcapErrorCodes.CLIENT_LIMIT]: 'CLIENT_LIMITED',
};

/** Content decoders for the codings a request body may use. */
const DECODERS = new Map<string, () => Transform>([
  ['gzip', () => createGunzip()],
  ['x-gzip', () => createGunzip()],
  ['deflate', () => createInflate()],
  ['br', () => createBrotliDecompress()],
]);

/** A body small enough to send whole: a preview would cost a round trip to spare a few bytes. */
function smallBody(facts: HttpRequestFacts, limit: number): boolean {
  return !facts.chunked && facts.contentLength !== undefined && facts.contentLength <= limit;
}

/** Adds `store.dispose()` to an outcome's dispose. */
function withDispose<T extends ScanOutcome>(outcome: T, store: BodyStore | undefined): T {
  if (store === undefined) return outcome;
  const inner = outcome.dispose;
  outcome.dispose = () => {
    inner();
    store.dispose();
  };
  return outcome;
}

function newLog(profileName: string, facts: HttpRequestFacts, decision: PolicyDecision): IcapLog {
  const log: IcapLog = {
    action: 'ICAP_DISABLED',
    request_logs: [],
    profile_name: profileName,
    policy_reason: decision.reason,
    significant: false,
    significance: [],
    http_method: httpMethodEnum(facts.method),
    uri_path: pathOf(facts.target),
    start_time: Date.now(),
    duration: 0,
  };
  if (decision.rule !== undefined) log.rule_name = decision.rule;
  if (facts.clientIp !== undefined) log.client_ip = facts.clientIp;
  return log;
}

/** Runs at most `n` tasks at once. */
function limiter(n: number): <T>(task: () => Promise<T>) => Promise<T> {
  let active = 0;
  const queue: Array<() => void> = [];
  return <T>(task: () => Promise<T>) =>
    new Promise<T>((resolve, reject) => {
      const start = () => {
        active++;
        task()
          .then(resolve, reject)
          .finally(() => {
            active--;
            queue.shift()?.();
          });
      };
      if (active < n) start();
      else queue.push(start);
    });
}

/** The encapsulated request for one part: the original request line, the part's own headers. */
function partFacts(facts: HttpRequestFacts, part: Part, length: number): HttpRequestFacts {
  const name = part.fileName ?? part.field;
  const pairs: Array<[string, string]> = [];
  if (facts.host !== undefined) pairs.push(['Host', facts.host]);
  pairs.push(
    ['Content-Type', part.mimeType],
    ['Content-Disposition', contentDisposition(part.kind === 'file' ? 'attachment' : 'form-data', name)],
  );
  return {
    ...facts,
    method: 'POST',
    headerPairs: pairs,
    headers: new Headers(pairs),
    hasBody: true,
    contentLength: length,
    chunked: false,
    fileName: name,
  };
}

/** A Content-Disposition value safe on the wire, with the UTF-8 name in filename* (RFC 6266). */
function contentDisposition(type: string, name: string): string {
  const ascii = name.replace(/[^\x20-\x7e]|["\\]/g, '_');
  const encoded = encodeURIComponent(name).replace(
    /['()*]/g,
    (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`,
  );
  return ascii === name
    ? `${type}; filename="${name}"`
    : `${type}; filename="${ascii}"; filename*=UTF-8''${encoded}`;
}

/** Names a part's log entry and its violations after the part. */
function nameEntry(entry: IcapRequestLog, part: Part): void {
  const name = part.fileName ?? part.field;
  entry.file_name = name;
  for (const v of entry.violations ?? []) if (v.file_name === '' || v.file_name === '-') v.file_name = name;
}

function mediaTypeAllowed(contentType: string | undefined, allowed: readonly string[]): boolean {
  if (contentType === undefined) return false;
  const media = contentType.split(';')[0]!.trim().toLowerCase();
  const major = media.split('/')[0];
  return allowed.some((t) => t === media || (t.endsWith('/*') && t.slice(0, -2) === major));
}

function capitalise(s: string): string {
  return s.length === 0 ? s : `${s[0]!.toUpperCase()}${s.slice(1)}.`;
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

export function requestInfo(outcome: ScanOutcome): IcapRequestInfo {
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

function base(
  action: IcapAction,
  log: IcapLog,
  threat: string | undefined,
  responseHeaders: Array<[string, string]>,
  dispose: () => void,
): OutcomeBase {
  let disposed = false;
  return {
    action,
    log,
    threat,
    responseHeaders,
    dispose: () => {
      if (disposed) return;
      disposed = true;
      dispose();
    },
  };
}

/** HTTP/2 has no `Connection` field (a stream ends without its connection): never send one. */
function isHttp2(facts: HttpRequestFacts): boolean {
  return facts.httpVersion.startsWith('2');
}

/** The middleware's own answer (403 aside): a 400/408/413/415/501/503 page or problem+json. */
function answer(
  action: IcapAction,
  log: IcapLog,
  kind: ResponseKind,
  facts: HttpRequestFacts,
  options: ScanOptions,
  closeConnection: boolean,
  detail?: string,
): RespondOutcome {
  const response = buildResponse(kind, facts.headers.get('accept'), {
    detail,
    requestId: options.requestId,
    closeConnection: closeConnection && !isHttp2(facts),
  });
  return {
    ...base(action, log, undefined, [], () => {}),
    kind: 'respond',
    status: response.status,
    headers: response.headers,
    body: response.body,
    closeConnection,
  };
}

function pass(
  action: IcapAction,
  log: IcapLog,
  store: BodyStore | null,
  body: Readable | null,
  responseHeaders: Array<[string, string]>,
  dispose?: () => void,
  length?: number,
): PassOutcome {
  let stream = body;
  let contentLength = length;
  if (store !== null) {
    // Open the replay first: its reader keeps the bytes that release() would otherwise drop.
    stream = store.stream();
    contentLength = store.received;
    store.release();
  }
  const s = stream;
  return {
    ...base(action, log, undefined, responseHeaders, () => {
      dispose?.();
      store?.dispose();
      if (s !== null && !s.readableEnded) s.destroy();
    }),
    kind: 'pass',
    body: stream,
    contentLength,
  };
}

function fillVerdict(entry: IcapRequestLog, v: Verdict, vendor: string): void {
  if (v.reason !== undefined) entry.reason = v.reason;
  if (v.threat_id !== undefined) entry.threat_id = v.threat_id;
  if (v.violations.length > 0) entry.violations = v.violations;
  if (vendor === 'opswat' && v.opswat_log !== undefined) entry.opswat_log = v.opswat_log;
  if (vendor === 'nsx-defender' && v.nsx_defender_log !== undefined)
    entry.nsx_defender_log = v.nsx_defender_log;
}

/**
 * Waits for the whole request body. Throws ICAP_ERR_REQUEST_TOO_LARGE when it outgrows the
 * limit and ICAP_ERR_BODY_SOURCE when the client goes away.
 */
async function bodyComplete(store: BodyStore | null, limit: number): Promise<void> {
  if (store === null) return;
  await store.whenEnded();
  if (store.exceeded) {
    throw new IcapError(
      IcapErrorCodes.REQUEST_TOO_LARGE,
      `the request body is larger than bufferSize (${limit} bytes)`,
    );
  }
  if (store.error !== undefined) {
    throw new IcapError(
      IcapErrorCodes.BODY_SOURCE,
      'the HTTP client went away before its request body was complete',
      {
        cause: store.error,
      },
    );
  }
}

/** Reads and discards a response body we do not need (small ones keep the connection alive). */
async function drain(res: IcapResponse): Promise<void> {
  const body = res.body;
  if (body === null) return;
  let n = 0;
  for await (const chunk of body as AsyncIterable<Buffer>) {
    n += chunk.length;
    if (n > MAX_DRAIN) {
      body.destroy();
      return;
    }
  }
}

/**
 * The exchange's latency for the log, once it is over. A response body we stopped reading
 * ourselves (drain and relay stop at their limits) ends the exchange with an abort of our own
 * making: the verdict read from the head stands; it is neither a server failure nor the client
 * going away.
 */
async function latencyOf(res: IcapResponse, started: number): Promise<string> {
  if (res.body !== null && !res.body.readableEnded) {
    await res.done.catch(() => undefined);
    return String(Math.round(performance.now() - started));
  }
  return String(Math.round((await res.done).latencyMs));
}

/** The ICAP server's own block response, relayed with sanitised headers and a bounded body. */
async function readRelay(res: IcapResponse): Promise<ClientResponse> {
  const http = res.httpResponse!;
  const chunks: Buffer[] = [];
  let n = 0;
  if (res.body !== null) {
    for await (const chunk of res.body as AsyncIterable<Buffer>) {
      n += chunk.length;
      if (n > MAX_RELAY_BODY) {
        res.body.destroy();
        break;
      }
      chunks.push(chunk);
    }
  }
  const body = n > MAX_RELAY_BODY ? Buffer.from('Blocked\n') : Buffer.concat(chunks, n);
  const headers: Array<[string, string]> = [];
  for (const [name, value] of endToEndHeaders(http.headers)) {
    const key = name.toLowerCase();
    if (RELAY_DROP.has(key) || !isToken(name) || !isSafeFieldValue(value)) continue;
    headers.push([name, value]);
  }
  headers.push(['Content-Length', String(body.length)], ['Cache-Control', 'no-store']);
  // A blocked upload never looks accepted: a 2xx (or odd) page goes out as 403; a redirect stays.
  const status = http.status >= 300 && http.status <= 599 ? http.status : 403;
  return { status, headers, body };
}

/** Besides the hop-by-hop fields: what a relayed block page must not set on our response. */
const RELAY_DROP = new Set(['content-length', 'set-cookie', 'cache-control']);

/**
 * Before refusing a request, read (and discard) the rest of its body for a short while, so
 * the client is not reset while still sending and the connection can be kept. True when the
 * body was read to its end. Bounded in time and in bytes (drainAfterAnswer): what arrives
 * meanwhile is still stored (in memory or the temp file) until the store is disposed, and a
 * fast client must not fill either. Past the bounds the adapter goes on discarding (bounded
 * again) after the answer, without storing.
 */
async function drainRequest(
  store: BodyStore | null,
  limits: { drainBytes: number; drainTimeout: number },
): Promise<boolean> {
  if (store === null || store.ended) return true;
  if (store.error !== undefined) return false;
  store.release();
  store.limitRest(limits.drainBytes);
  let timer: NodeJS.Timeout | undefined;
  const ended = await Promise.race([
    store.whenEnded().then(() => store.ended && store.error === undefined && !store.exceeded),
    new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(false), Math.min(DRAIN_WAIT, limits.drainTimeout));
    }),
  ]);
  clearTimeout(timer);
  store.dispose();
  return ended;
}

/** Fields of a returned request head that do not make it a modification. */
const IGNORED_IN_COMPARISON = new Set([
  'via',
  'content-length',
  'transfer-encoding',
  'date',
  'connection',
  'keep-alive',
]);

function comparableHeaders(pairs: Iterable<readonly [string, string]>): string[] {
  const out: string[] = [];
  for (const [n, v] of pairs) {
    const key = n.toLowerCase();
    if (key.startsWith(':') || IGNORED_IN_COMPARISON.has(key) || key.startsWith('x-lastline-')) continue;
    out.push(`${key}:${v.trim()}`);
  }
  return out.sort();
}

function sameRequestHead(
  head: NonNullable<IcapResponse['httpRequest']>,
  facts: HttpRequestFacts,
  absolute: boolean,
): boolean {
  if (head.method.toUpperCase() !== facts.method) return false;
  const sentTarget = absolute ? absoluteTarget(facts) : facts.target;
  if (head.target !== sentTarget && originForm(head.target) !== originForm(facts.target)) return false;
  const a = comparableHeaders(head.headers);
  const b = comparableHeaders(endToEndHeaders(facts.headerPairs));
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

function originForm(target: string): string {
  const m = /^[a-z][a-z0-9+.-]*:\/\/[^/?#]*(.*)$/i.exec(target);
  if (m === null) return target;
  return m[1] === '' ? '/' : m[1]!;
}

/** The request head for the application from a modified request: sanitised, with the new length. */
function rewriteHead(
  head: IcapResponse['httpRequest'],
  facts: HttpRequestFacts,
  length: number,
): { method: string; url: string; headers: Array<[string, string]> } {
  const source: Iterable<readonly [string, string]> = head?.headers ?? facts.headerPairs;
  const headers: Array<[string, string]> = [];
  for (const [name, value] of endToEndHeaders(source)) {
    const key = name.toLowerCase();
    if (key === 'content-length' || key.startsWith('x-lastline-')) continue;
    if (!isToken(name) || !isSafeFieldValue(value)) continue;
    headers.push([name, value]);
  }
  headers.push(['content-length', String(length)]);
  const method = head !== null && isToken(head.method) ? head.method.toUpperCase() : facts.method;
  const url = head !== null ? originForm(head.target) : facts.target;
  return { method, url: url.startsWith('/') ? url : facts.target, headers };
}
