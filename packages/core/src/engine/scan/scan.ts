import { actAfterReading } from '../../client/deadline.js';
import { IcapError, IcapErrorCodes } from '../../errors.js';
import { LightAbortController } from '../../light-signal.js';
import type { BodyStore } from '../body.js';
import { DecodedView, viewFacts } from '../decoded/view.js';
import { type IcapLog, observe } from '../log.js';
import { isMultipartFormData } from '../multipart/parse.js';
import { scanParts } from '../multipart/parts.js';
import type { PolicyDecision } from '../policy.js';
import type { PoolGroup } from '../pool-group.js';
import type { PinoLike, ResolvedProfile } from '../profile.js';
import { type HttpRequestFacts, requestFacts, type ScanRequest, trailerProblem } from '../request.js';
import type { ScanScope, Telemetry } from '../telemetry.js';
import type { AttemptResult, EngineCore, ScanOptions, ScanOutcome } from '../types.js';
import { admit, refusedWhateverTheRules } from './admission.js';
import { bodyConsumedReason } from './consumed.js';
import { exchange } from './exchange.js';
import {
  allArrived,
  bodyComplete,
  bodyFailure,
  checkForm,
  type Decoded,
  decodeBody,
  finished,
  openStore,
  whenReadyToScan,
} from './intake.js';
import {
  applyVerdict,
  bodyConsumed,
  failed,
  failureOutcome,
  newLog,
  pass,
  refuse,
  withDispose,
} from './outcome.js';
import { takesFailAction } from './retry.js';
import {
  DECODED_NAME,
  ENCODED_NAME,
  mayStartWithBom,
  NO_BOM_NAME,
  REWROTE_DECODED,
  REWROTE_ENCODED,
  REWROTE_NO_BOM,
  secondObject,
  withLength,
  withoutBom,
} from './second-object.js';
import { StageClock } from './stage-clock.js';

/**
 * One request's scan, from the adapter's `engine.scan(req)` to its outcome: the transaction
 * object (Squid's ModXact, one per request). It holds the request's state (its facts, the
 * policy decision, the icap_log record, the body store, the timers, the abort signal) and runs
 * the stages in order, each in a file of its own:
 *
 * 1. policy: the profile's rules decide whether the request is scanned at all;
 * 2. admission (admission.ts): what the head alone refuses (400, 413, 415, 501);
 * 3. intake (intake.ts): the body stored as it arrives (bounded), decoded, its form checked;
 * 4. the scan: per-file multipart (multipart/parts.ts), or the whole body in one exchange
 *    (exchange.ts) once it can be fed fast enough; compressed, also as sent (#scanEncoded);
 * 5. outcome (outcome.ts): pass, rewrite or respond, or what a failure turns into (the
 *    failure action for ICAP-side failures only); the icap_log record emitted once.
 *
 * No byte of the body reaches the application before the verdict allows it (fail closed).
 */
export class Scan {
  readonly profile: ResolvedProfile;
  readonly group: PoolGroup;
  readonly telemetry: Telemetry;
  readonly options: ScanOptions;
  readonly facts: HttpRequestFacts;
  readonly decision: PolicyDecision;
  readonly log: IcapLog;
  readonly scope: ScanScope;
  readonly #engine: EngineCore;
  readonly #req: ScanRequest;
  readonly #logger: PinoLike | undefined;
  readonly #t0: number;
  /** Per-stage timings, only while something listens to `icapkit:scan:stage` (stage-clock.ts). */
  readonly #clock = StageClock.start();

  /** The body as it arrives (null: the request has none). */
  store: BodyStore | null = null;
  /** The body as the ICAP server sees it: `store`, or its decoded copy. */
  scanned: BodyStore | null = null;
  /** The request as the ICAP server sees it (no Content-Encoding when decoded). */
  scanFacts: HttpRequestFacts;
  contentType: string | undefined;
  #decoded: Decoded | null = null;
  /** The decoded strings of a JSON or urlencoded body, read while it arrives (decoded/view.ts). */
  #view: DecodedView | null = null;
  /** Whole multipart mode: the strict parser's verdict on the form, while the scan runs. */
  #formCheck: Promise<IcapError | undefined> | null = null;
  #perFile = false;
  /** The scan's abort signal (a light one: see LightAbortController). */
  #control: LightAbortController | null = null;
  #leaveIntake: () => void = NOTHING;
  /** Gives back the scan's place among the bodies streamed while they arrive (StreamGate). */
  #givePlace: () => void = NOTHING;
  #onCallerAbort: (() => void) | undefined;
  /** The one timer of bodyDeadline and responseTimeout, armed for at most responseTimeout (early: again). */
  #timer: NodeJS.Timeout | undefined;
  /** Bytes of ICAP answers read for this scan (ExchangeContext.heard): responseTimeout reads on while they come. */
  heard = 0;
  /** performance.now() by which the body must have arrived (Infinity: it has, or there is none). */
  #bodyDue = Number.POSITIVE_INFINITY;
  /** performance.now() by which ICAP must have answered (Infinity: not waiting for it). */
  #responseDue = Number.POSITIVE_INFINITY;
  #abort: (err: IcapError) => void = NOTHING;
  /** Called (once) when the scan's signal aborts: whenReadyToScan's wait (see AbortHook). */
  #abortWaiter: ((reason: unknown) => void) | undefined;
  /** The refusal of a request with trailer fields (see #trailersRefused), once its body has ended. */
  #trailers: IcapError | undefined;
  #waitStart: number;
  #settled = false;

  constructor(engine: EngineCore, req: ScanRequest, options: ScanOptions) {
    const p = engine.profile;
    this.#engine = engine;
    this.#req = req;
    this.profile = p;
    this.group = engine.group;
    this.telemetry = engine.telemetry;
    this.options = options;
    this.#t0 = performance.now();
    this.#waitStart = this.#t0;
    this.facts = requestFacts(req);
    this.scanFacts = this.facts;
    this.decision = p.policy.evaluate(this.facts);
    this.log = newLog(p.name, this.facts, this.decision);
    this.#logger = options.logger ?? p.logger;
    this.scope = engine.telemetry.scanStart(this.facts.method, this.log.uri_path);
  }

  /** Aborts with the request: the client went away, a bound was crossed, the caller aborted. */
  get signal(): AbortSignal {
    return this.#control!.signal;
  }

  /** AbortHook: the scan aborts its signal itself (#receive's `abort`), and tells the waiter then. */
  setAbortWaiter(waiter: ((reason: unknown) => void) | undefined): void {
    this.#abortWaiter = waiter;
  }

  async run(): Promise<ScanOutcome> {
    const { profile: p, facts } = this;
    // Fields Node dropped, routes the scan cannot tell apart: refused, whatever the rules decide.
    const unconditional = refusedWhateverTheRules(this);
    if (unconditional !== null) return this.#finish(unconditional);
    if (!this.decision.scan) return this.#finish(pass('ICAP_DISABLED', this.log, null, []));
    // A body read before the scan (a parser mounted before the middleware): refused at once.
    const consumed = facts.hasBody ? bodyConsumedReason(this.#req, this.options.parsedBody) : undefined;
    if (consumed !== undefined)
      return this.#finish(bodyConsumed(this, this.#engine, this.#req, consumed, this.#logger));
    const refusal = admit(this);
    if (refusal !== null) return this.#finish(await refusal);
    if (this.#engine.closed) {
      const closed = new IcapError(IcapErrorCodes.CLOSED_CLIENT, 'the ICAP engine was closed');
      return this.#finish(failed(this, closed, null));
    }
    // One client address holds at most maxBodiesPerClient uploads in intake (429 beyond).
    if (facts.hasBody) {
      const leave = this.#engine.intake.enter(facts.clientIp);
      if (leave === null) {
        const reason = `this client already has ${p.maxBodiesPerClient} uploads arriving (maxBodiesPerClient)`;
        return this.#finish(refuse(this, 'too-many', IcapErrorCodes.CLIENT_LIMIT, reason, null));
      }
      this.#leaveIntake = leave;
    }
    this.#clock?.lap('admission');
    this.#receive();
    try {
      const outcome = await (this.#perFile ? this.#scanForm() : this.#scanWhole());
      return this.#finish(this.#trailersRefused(outcome) ?? outcome);
    } catch (caught) {
      return this.#finish(await this.#failure(caught));
    } finally {
      this.#cleanup();
    }
  }

  /** Intake: the store, its bounds in time, decoding, the form check, the timers and the abort signal. */
  #receive(): void {
    const { profile: p, facts } = this;
    const control = new LightAbortController();
    this.#control = control;
    const abort = (err: IcapError) => {
      if (control.signal.aborted) return;
      control.abort(err);
      const waiter = this.#abortWaiter;
      this.#abortWaiter = undefined;
      waiter?.(err);
    };
    this.#abort = abort;
    const contentType = facts.headers.get('content-type');
    this.contentType = contentType;
    const form = facts.hasBody && isMultipartFormData(contentType);
    this.#perFile = form && p.multipart === 'per-file';
    if (facts.hasBody) {
      const store = openStore(p, facts, this.#req, this.#perFile, abort);
      this.store = store;
      // bodyDeadline bounds the whole upload (a trickle never idles long enough for bodyTimeout).
      this.#bodyDue = performance.now() + p.bodyDeadline;
      this.#timer = setTimeout(this.#onTimer, Math.min(p.bodyDeadline, p.responseTimeout));
      // What the ICAP server sees: the body as sent, or decoded when it is compressed.
      this.#decoded = decodeBody(p, facts, store, abort);
      this.scanned = this.#decoded?.store ?? store;
      this.scanFacts = this.#decoded?.facts ?? facts;
      // Whole mode: the raw form is scanned as one object, and checked by the strict parser while
      // it arrives (a form parsers could read differently is refused, as in per-file mode).
      if (form && p.multipart === 'whole') this.#formCheck = checkForm(p, contentType!, this.scanned, abort);
      // What a body parser decodes out of the body is scanned too, as a second object.
      else if (!form) this.#view = DecodedView.start(p, contentType, this.scanned, abort);
      // responseTimeout bounds how long the request waits for ICAP once its body has arrived:
      // a slow upload is not a slow scanner (stalls while uploading are bounded by ioTimeout).
      // Heard from the store's own end (no promise of its own); a body that failed is acted on a
      // microtask later, where the promise's reaction used to run, not inside the stream's event.
      const onEnd = () => {
        this.#bodyDue = Number.POSITIVE_INFINITY;
        this.#leaveIntake();
        this.#givePlace();
        if (store.error !== undefined) queueMicrotask(() => this.#bodyFailed(store));
        else if (store.ended && this.#hasTrailers()) abort(this.#trailers!);
        else this.#armTimer();
      };
      if (!store.onEnded(onEnd)) void store.whenEnded().then(onEnd);
    } else this.#armTimer();
    const signal = this.options.signal;
    if (signal?.aborted) abort(callerAbort(signal));
    else if (signal !== undefined) {
      // Through a local: a function literal assigned straight to a property is old-generation.
      const onCallerAbort = () => abort(callerAbort(signal));
      this.#onCallerAbort = onCallerAbort;
      signal.addEventListener('abort', onCallerAbort, { once: true });
    }
  }

  /**
   * Trailer fields after a chunked body (HTTP/1.1, or HTTP/2 trailers): Node hands them to the
   * application (`req.trailers`, `req.rawTrailers`, and the hand-off keeps them), but they are
   * no part of the body the ICAP server scans, nor of the head it is sent: a channel around the
   * scan. They are known once the body has ended, before the verdict lets the handler run; the
   * request is refused (400, ICAP_ERR_BAD_REQUEST: the client's doing, never the failure action).
   */
  #hasTrailers(): boolean {
    if (this.#trailers !== undefined) return true;
    const problem = trailerProblem(this.#req);
    if (problem !== undefined) this.#trailers = new IcapError(IcapErrorCodes.BAD_REQUEST, problem);
    return problem !== undefined;
  }

  /**
   * A pass or rewrite of a request whose body ended with trailer fields: the 400 instead (the
   * abort at the body's end may come after an exchange that had answered already). Null: none.
   */
  #trailersRefused(outcome: ScanOutcome): ScanOutcome | null {
    const store = this.store;
    const passes = outcome.kind === 'pass' || outcome.kind === 'rewrite';
    if (!passes || store === null || !store.ended || !this.#hasTrailers()) return null;
    outcome.dispose();
    return refuse(this, 'bad-request', IcapErrorCodes.BAD_REQUEST, this.#trailers!.message, store);
  }

  /** The HTTP client went away before the body was complete (or its temp file failed): the scan aborts. */
  #bodyFailed(store: BodyStore): void {
    this.#stopTimer();
    this.#abort(bodyFailure(store));
  }

  /** The body has arrived (or there is none): responseTimeout starts. */
  #armTimer(): void {
    if (this.#settled) {
      this.#stopTimer();
      return;
    }
    const now = performance.now();
    this.#waitStart = now;
    this.#responseDue = now + this.profile.responseTimeout;
    // A timer still armed (for bodyDeadline) was armed earlier for at most responseTimeout:
    // it fires before the response is due, and then arms itself for what is left.
    if (this.#timer === undefined) this.#timer = setTimeout(this.#onTimer, this.profile.responseTimeout);
  }

  readonly #onTimer = (): void => {
    this.#timer = undefined;
    const p = this.profile;
    const now = performance.now();
    // What came while the process stalled past a deadline is read first (client/deadline.ts): for
    // bodyDeadline while the client's bytes come, for responseTimeout the answer's (campaign-bc/bd/be).
    const body = now >= this.#bodyDue;
    if (body || now >= this.#responseDue) {
      const moot = () => (body ? this.#bodyDue : this.#responseDue) === Number.POSITIVE_INFINITY;
      const count = body ? () => this.store?.received ?? 0 : () => this.heard;
      actAfterReading(body ? p.bodyDeadline : p.responseTimeout, moot, () => this.#expired(body), count);
    } else {
      // Early (the other deadline's turn, or the clock's rounding): again for the nearer one.
      const next = Math.min(this.#bodyDue, this.#responseDue) - now;
      if (next !== Number.POSITIVE_INFINITY)
        this.#timer = setTimeout(this.#onTimer, Math.max(1, Math.min(Math.ceil(next), p.responseTimeout)));
    }
  };

  /** bodyDeadline (`body`) or responseTimeout passed, and still applies: the scan fails. */
  #expired(body: boolean): void {
    const p = this.profile;
    if (body) this.#bodyDue = Number.POSITIVE_INFINITY;
    else this.#responseDue = Number.POSITIVE_INFINITY;
    const msg = body
      ? `the HTTP client did not send its whole request body within bodyDeadline (${p.bodyDeadline} ms)`
      : `ICAP scan took longer than responseTimeout (${p.responseTimeout} ms)`;
    this.#abort(new IcapError(body ? IcapErrorCodes.BODY_TIMEOUT : IcapErrorCodes.TIMEOUT, msg));
  }

  #stopTimer(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  /** responseTimeout no longer applies (the scan settled); bodyDeadline does while the body arrives. */
  #stopResponseClock(): void {
    this.#settled = true;
    this.#responseDue = Number.POSITIVE_INFINITY;
    if (this.#bodyDue === Number.POSITIVE_INFINITY) this.#stopTimer();
  }

  /** The scan is over (a verdict, or a failure): responseTimeout no longer applies. */
  #settle(): void {
    this.#stopResponseClock();
    if (performance.now() - this.#waitStart > this.profile.slowResponseWarningThreshold)
      this.log.significance.push('SLOW_RESPONSE');
  }

  /** multipart/form-data per file: every part its own ICAP request (multipart/parts.ts). */
  async #scanForm(): Promise<ScanOutcome> {
    const outcome = await scanParts(
      this as this & { scanned: BodyStore; store: BodyStore; contentType: string },
    );
    // The parts are scanned while the form arrives: intake and exchange are one stage here.
    this.#clock?.lap('exchange');
    this.#settle();
    return withDispose(outcome, this.#decoded?.store);
  }

  /** The body as one ICAP request, then the outcome from its verdict. */
  async #scanWhole(): Promise<ScanOutcome> {
    const p = this.profile;
    const { store, scanned } = this;
    // The ICAP connection is taken once the body can be fed at the scanner's speed; a body
    // complete by then is sent with its length.
    let sendFacts = this.scanFacts;
    if (scanned !== null) {
      // The body's 'data' events matter only when enough of it can arrive before its end to
      // stream it: not for a declared length under holdBodySize, which only its end makes ready.
      const facts = this.facts;
      const short =
        !facts.chunked && facts.contentLength !== undefined && facts.contentLength < p.holdBodySize;
      const place = await whenReadyToScan(
        scanned,
        this.#decoded === null && !short ? this.#req : null,
        {
          holdBytes: p.holdBodySize,
          minRate: p.minBodyRate,
          wholeBody: p.lengthRequired,
          gate: this.#engine.streams,
        },
        this.#t0,
        this.signal,
        this,
      );
      // Streamed while it arrives: the place is given back once the client has sent it all.
      if (place !== undefined) {
        if (this.store !== null && !finished(this.store)) this.#givePlace = place;
        else place();
      }
      // (A request that declared this length already says so: it is sent as it is.)
      if (
        scanned.ended &&
        scanned.error === undefined &&
        !scanned.exceeded &&
        (sendFacts.chunked || sendFacts.contentLength !== scanned.received)
      )
        sendFacts = { ...sendFacts, contentLength: scanned.received, chunked: false };
    }
    this.#clock?.lap('intake');
    if (emptyAsSent(this.facts, this.#decoded, store)) {
      this.#settle();
      return pass('ICAP_DISABLED', this.log, store, []);
    }
    let result = await exchange(this, sendFacts, scanned, this.signal);
    if (result.verdict?.unscannable) this.log.significance.push('UNSCANNABLE');
    // The application gets a body only once all of it is here (the store holds it anyway).
    if (result.type === 'clean') {
      if (!arrived(scanned)) await bodyComplete(scanned, p.bufferSize);
      if (!arrived(store)) await bodyComplete(store, p.bufferSize);
    }
    // Decoded for the scan: the body as sent must pass too, since raw readers get it.
    if (this.#decoded !== null && store !== null && passing(result)) {
      const blocked = await this.#scanEncoded(store, result);
      if (blocked !== null) result = blocked;
    }
    // The strings a parser decodes must pass too.
    const view = this.#view;
    if (view !== null && passing(result) && !view.nothingToScan()) {
      const blocked = await this.#scanDecoded(view, result);
      if (blocked !== null) result = blocked;
    }
    // A leading UTF-8 BOM, which text readers drop: the body without it must pass too (a
    // clean body has arrived: looked at now; an echo of it once it has: #scanWithoutBom).
    if (
      scanned !== null &&
      passing(result) &&
      scanned.retaining &&
      (result.type !== 'clean' || mayStartWithBom(scanned))
    ) {
      const blocked = await this.#scanWithoutBom(scanned, result);
      if (blocked !== null) result = blocked;
    }
    this.#clock?.lap('exchange');
    this.#settle();
    if (this.#formCheck !== null && result.type !== 'blocked') {
      const problem = await this.#formCheck;
      if (problem !== undefined) throw problem;
    }
    // A clean verdict passes the held body (what applyVerdict does for it, without a promise).
    const outcome =
      result.type === 'clean'
        ? pass('ICAP_PASSED', this.log, store, result.verdict?.client_headers ?? [])
        : await applyVerdict(this, result, store, sendFacts);
    return withDispose(outcome, this.#decoded?.store);
  }

  /**
   * A compressed body as it was sent (Content-Encoding kept) as its own ICAP request, once its
   * decoded copy passed (`first`): null when it is clean, else the block to answer with. The
   * application's raw readers (Fastify's buffer parser, `for await (const c of req)`, Hono's
   * arrayBuffer) get these bytes, and they can hold what no decoder outputs (gzip header
   * fields, brotli metadata blocks). A server that rewrites them blocks, as for the decoded
   * strings: the request goes on with one body, and the decoded copy's verdict is about another.
   */
  async #scanEncoded(store: BodyStore, first: AttemptResult): Promise<AttemptResult | null> {
    return secondObject(this.log, first, ENCODED_NAME, REWROTE_ENCODED, async (entries) => {
      await allArrived(store, this.signal, this.profile.bufferSize);
      const facts = this.facts;
      const sent =
        facts.chunked || facts.contentLength !== store.received
          ? { ...facts, contentLength: store.received, chunked: false }
          : facts;
      return exchange(this, sent, store, this.signal, entries);
    });
  }

  /**
   * The decoded strings of the body (decoded/view.ts) as their own ICAP request, once the body
   * itself passed (`first`): null when there are none or they are clean, else the block to
   * answer with. A server that rewrites them blocks too: a rewrite of decoded strings cannot be
   * put back into the body the application parses. Throws what the exchange throws (an ICAP
   * failure takes the failure action), or 413 when they outgrow bufferSize.
   */
  async #scanDecoded(view: DecodedView, first: AttemptResult): Promise<AttemptResult | null> {
    try {
      return await secondObject(this.log, first, DECODED_NAME, REWROTE_DECODED, async (entries) => {
        const object = await view.result();
        if (object === null) return null;
        this.log.significance.push('DECODED_STRINGS');
        return exchange(this, viewFacts(this.scanFacts, object.received), object, this.signal, entries);
      });
    } finally {
      view.dispose();
    }
  }

  /**
   * A body (as scanned) that starts with a UTF-8 BOM, once it passed with it (`first`): sent
   * again without it (second-object.ts says why). Null when it is clean (or has no BOM after
   * all), else the block to answer with; a rewrite blocks.
   */
  async #scanWithoutBom(scanned: BodyStore, first: AttemptResult): Promise<AttemptResult | null> {
    let copy: BodyStore | null = null;
    try {
      return await secondObject(this.log, first, NO_BOM_NAME, REWROTE_NO_BOM, async (entries) => {
        await allArrived(scanned, this.signal, this.profile.bufferSize);
        if (!mayStartWithBom(scanned)) return null;
        copy = await withoutBom(this.profile, scanned);
        if (copy === null) return null;
        this.log.significance.push('DECODED_STRINGS');
        return exchange(this, withLength(this.scanFacts, copy.received), copy, this.signal, entries);
      });
    } finally {
      (copy as BodyStore | null)?.dispose();
    }
  }

  /** Whatever failed on the way: the error it counts as, and the outcome it turns into. */
  async #failure(caught: unknown): Promise<ScanOutcome> {
    this.#stopResponseClock();
    const { profile: p, store, log } = this;
    // A client that went away is an abort, not an ICAP failure.
    const clientGone =
      store?.error !== undefined &&
      !(caught instanceof IcapError && caught.code === IcapErrorCodes.REQUEST_TOO_LARGE);
    let error = clientGone
      ? bodyFailure(store!)
      : caught instanceof IcapError
        ? caught
        : new IcapError(
            IcapErrorCodes.INTERNAL,
            `ICAP scan failed: ${caught instanceof Error ? caught.message : String(caught)}`,
            { cause: caught },
          );
    // Trailer fields (the abort at the body's end): the client's doing, 400 whatever failAction.
    const trailers = this.#trailers;
    if (trailers !== undefined && (error === trailers || this.#control?.signal.reason === trailers)) {
      log.error_code = trailers.code;
      log.error_message = trailers.message;
      this.#decoded?.store.dispose();
      return refuse(this, 'bad-request', trailers.code, trailers.message, store);
    }
    // Fail-open never hands over a form the strict parser did not read to its end: per-file
    // mode only passes forms it serialised itself; whole mode waits for the check.
    let canReplay = !this.#perFile;
    const formCheck = this.#formCheck;
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
    const decodedTooLarge = this.#decoded?.store.exceeded === true || this.#view?.tooLarge === true;
    this.#decoded?.store.dispose();
    if (error.code === IcapErrorCodes.MULTIPART) canReplay = false;
    return failureOutcome(this, error, store, canReplay, decodedTooLarge);
  }

  #cleanup(): void {
    this.#view?.dispose();
    if (this.#onCallerAbort !== undefined)
      this.options.signal?.removeEventListener('abort', this.#onCallerAbort);
    this.#bodyDue = Number.POSITIVE_INFINITY;
    this.#stopTimer();
    this.#leaveIntake();
    this.#givePlace();
  }

  /** Fills in and emits the icap_log record (once per scan), and returns the outcome. */
  #finish<T extends ScanOutcome>(outcome: T): T {
    const log = this.log;
    const received = this.store?.received ?? 0;
    log.action = outcome.action;
    log.duration = Math.round(performance.now() - this.#t0);
    if (this.store !== null) log.request_body_length = received;
    if (outcome.kind === 'respond') log.http_response_code = outcome.status;
    log.significant = log.significance.length > 0;
    // Observers (metrics, a tracer, hooks, the logger) cannot change the outcome: a throw of
    // theirs is caught (emitLog guards the hooks and the logger one by one).
    observe(
      () => this.telemetry.scanEnd(this.scope, log, received),
      this.#logger,
      'icapkit: telemetry threw',
    );
    this.#engine.emit(log, this.#logger);
    this.#clock?.lap('outcome');
    return outcome;
  }
}

function NOTHING(): void {}

/** A body (or none) that is all here: what bodyComplete() would wait for and accept at once. */
function arrived(store: BodyStore | null): boolean {
  return store === null || (store.ended && !store.exceeded && store.error === undefined);
}

function callerAbort(signal: AbortSignal): IcapError {
  return new IcapError(IcapErrorCodes.ABORTED, 'the scan was aborted', { cause: signal.reason });
}

/** Neither blocked nor skipped by the server's Transfer-Ignore: what else is scanned must pass too. */
function passing(r: AttemptResult): boolean {
  return r.type !== 'blocked' && !(r.type === 'clean' && r.skipped !== undefined);
}
/** Nothing to scan: an open HTTP/2 stream declared empty, no bytes as sent (not decoded to none). */
function emptyAsSent(facts: HttpRequestFacts, decoded: unknown, store: BodyStore | null): boolean {
  return facts.contentLength === 0 && decoded === null && store?.ended === true && store.received === 0;
}
