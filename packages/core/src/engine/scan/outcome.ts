import type { Readable } from 'node:stream';
import { type IcapError, type IcapErrorCode, IcapErrorCodes } from '../../errors.js';
import { type Cursor, HELD_REPLAY, LazyReplay } from '../body/cursor.js';
import type { BodyStore } from '../body.js';
import { httpMethodEnum, type IcapAction, type IcapLog, type Significance } from '../log.js';
import type { PolicyDecision } from '../policy.js';
import type { PinoLike } from '../profile.js';
import { type HttpRequestFacts, pathOf } from '../request.js';
import { buildResponse, type ClientResponse, type ResponseKind } from '../respond.js';
import type { AttemptResult, PassOutcome, RequestContext, RespondOutcome, ScanOutcome } from '../types.js';
import { reportBodyConsumed } from './consumed.js';
import { bodyComplete } from './intake.js';
import { isContentProvoked, takesFailAction } from './retry.js';
import { rewriteHead, sameRequestHead } from './returned-head.js';

/**
 * The outcome stage: what a request becomes (pass, rewrite, respond, aborted), from ICAP's
 * verdict (applyVerdict), a refusal of the request itself (refuse, tooLarge) or a failure
 * (failureOutcome: the failure action for the ICAP side only), and its icap_log record
 * (newLog at the start; the scan fills in the rest when it finishes).
 */

/** How long a refused request's remaining body is read (and discarded) before answering. */
const DRAIN_WAIT = 5_000;

/** The request's icap_log record as it starts: what is known before any byte is read. */
export function newLog(profileName: string, facts: HttpRequestFacts, decision: PolicyDecision): IcapLog {
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

// ---------------------------------------------------------------- after a verdict

/**
 * What the request becomes after ICAP's verdict: passed (the held body replayed, or the
 * server's identical copy), blocked (403 or the relayed block page), or rewritten.
 * `sentFacts` is the request as it was sent to ICAP (what a returned head is compared with).
 */
export async function applyVerdict(
  ctx: RequestContext,
  result: AttemptResult,
  store: BodyStore | null,
  sentFacts: HttpRequestFacts,
): Promise<ScanOutcome> {
  const { facts, log } = ctx;
  const entry = log.request_logs.at(-1);
  const clientHeaders = result.verdict?.client_headers ?? [];
  const dispose = () => store?.dispose();
  if (result.type === 'clean') {
    return pass('ICAP_PASSED', log, store, clientHeaders);
  }
  if (result.type === 'blocked') {
    log.significance.push('ICAP_BLOCKED');
    const threat = result.verdict.threat_id;
    const reported = result.verdict.violations[0]?.file_name;
    const fileName =
      reported !== undefined && reported !== '' && reported !== '-' ? reported : facts.fileName;
    let response: ClientResponse;
    const closeConnection = !(await drainRequest(store, ctx.profile));
    if (result.relay !== undefined) {
      response = result.relay;
      if (closeConnection && !isHttp2(facts)) response.headers.push(['Connection', 'close']);
    } else {
      response = buildResponse('blocked', facts.headers.get('accept'), {
        threat,
        fileName,
        requestId: ctx.options.requestId,
        closeConnection: closeConnection && !isHttp2(facts),
      });
    }
    return {
      action: 'ICAP_BLOCKED',
      log,
      threat,
      responseHeaders: clientHeaders,
      dispose: disposeOnce(dispose),
      kind: 'respond',
      status: response.status,
      headers: [...response.headers, ...clientHeaders],
      body: response.body,
      closeConnection,
    };
  }
  const { res, adapted } = result; // adapted
  const head = res.httpRequest;
  const sameHead = head === null || sameRequestHead(head, sentFacts, ctx.profile.absoluteUri);
  // Said at once unless both bodies must be read back (no promise to await for an echo in memory).
  let same = sameHead && adapted.identical();
  if (same !== true && same !== false) same = await same;
  if (same) {
    if (entry !== undefined) entry.action = 'ICAP_PASSED';
    if (store?.retaining) {
      // The original is replayed: what was kept of the echo (in hash mode, maybe a temp file) goes.
      adapted.dispose();
      return pass('ICAP_PASSED', log, store, clientHeaders);
    }
    return passBody('ICAP_PASSED', log, adapted.stream(), adapted.length, clientHeaders, dispose);
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
    action: 'ICAP_MODIFIED',
    log,
    threat: undefined,
    responseHeaders: clientHeaders,
    dispose: disposeOnce(() => body.destroy()),
    kind: 'rewrite',
    method: rewritten.method,
    url: rewritten.url,
    headers: rewritten.headers,
    body,
    contentLength: adapted.length,
  };
}

// ---------------------------------------------------------------- refusals and failures

/** What a failed scan turns into: 413, an aborted request, or the failure action. */
export async function failureOutcome(
  ctx: RequestContext,
  error: IcapError,
  store: BodyStore | null,
  canReplay = true,
  decodedTooLarge = false,
): Promise<ScanOutcome> {
  const log = ctx.log;
  if (error.code === IcapErrorCodes.REQUEST_TOO_LARGE) return tooLarge(ctx, store, decodedTooLarge);
  // A body that does not decode (400); a byte its charset refuses in the decoded strings (415).
  if (error.code === IcapErrorCodes.CONTENT_ENCODING || error.code === IcapErrorCodes.CONTENT_TYPE) {
    const kind = error.code === IcapErrorCodes.CONTENT_TYPE ? 'unsupported-type' : 'bad-request';
    return refuse(ctx, kind, error.code, error.message, store);
  }
  if (error.code === IcapErrorCodes.MULTIPART)
    return refuse(ctx, error.status === 413 ? 'too-large' : 'bad-request', error.code, error.message, store);
  if (error.code === IcapErrorCodes.BODY_TIMEOUT) return clientTimeout(ctx, error, store);
  if (error.code === IcapErrorCodes.BODY_SOURCE || error.code === IcapErrorCodes.ABORTED) {
    log.significance.push('CLIENT_ABORTED');
    store?.dispose();
    return {
      action: 'ICAP_FAILED',
      log,
      threat: undefined,
      responseHeaders: [],
      dispose: disposeOnce(() => {}),
      kind: 'aborted',
      error,
    };
  }
  // Only a failure of the ICAP side may take the failure action; anything else fails closed.
  if (!takesFailAction(error)) return failed(ctx, error, store, false, canReplay);
  if (ctx.profile.failAction === 'fail-open' && (store === null || store.complete)) {
    // Passing unscanned still needs the whole body first (and it may turn out too large).
    try {
      await bodyComplete(store, ctx.profile.bufferSize);
    } catch (err) {
      const e = err as IcapError;
      log.error_code = e.code;
      log.error_message = e.message;
      return failureOutcome(ctx, e, store, canReplay);
    }
  }
  return failed(ctx, error, store, undefined, canReplay);
}

/**
 * A request refused for what it is, not for what the ICAP server said: a malformed or
 * over-limit multipart form, a content type the profile does not allow. Never subject to the
 * failure action.
 */
export function refuse(
  ctx: RequestContext,
  kind: ResponseKind,
  code: IcapErrorCode,
  reason: string,
  store: BodyStore | null,
): ScanOutcome {
  const log = ctx.log;
  log.significance.push(REFUSAL_SIGNIFICANCE[code] ?? 'MULTIPART_REFUSED');
  log.error_code ??= code;
  log.error_message ??= reason;
  const closeConnection = store === null ? ctx.facts.hasBody : !store.ended;
  store?.dispose();
  return answer(ctx, 'ICAP_BLOCKED', kind, closeConnection, capitalise(reason));
}

/** 500 for a body read before the scan; the fix is reported once per engine (engine/scan/consumed.ts). */
export function bodyConsumed(
  ctx: RequestContext,
  engine: object,
  req: { readableEnded?: boolean },
  reason: string,
  logger: PinoLike | undefined,
): RespondOutcome {
  const log = ctx.log;
  const message = reportBodyConsumed(engine, log.profile_name, reason, logger);
  log.significance.push('ICAP_ERROR');
  log.error_code = IcapErrorCodes.BODY_CONSUMED;
  log.error_message = message;
  return answer(ctx, 'ICAP_FAILED', 'misconfigured', req.readableEnded !== true);
}

/** bufferSize exceeded (declared or while reading). */
export async function tooLarge(
  ctx: RequestContext,
  store: BodyStore | null,
  decoded = false,
): Promise<ScanOutcome> {
  const { profile: p, log } = ctx;
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
      return pass('ICAP_FAILED', log, null, []);
    }
    if (store.ended && store.complete) {
      log.significance.push('FAIL_OPEN');
      return pass('ICAP_FAILED', log, store, []);
    }
    if (await store.restore()) {
      log.significance.push('FAIL_OPEN');
      return pass('ICAP_FAILED', log, null, []);
    }
    log.error_message +=
      ' (the body was already streamed to the ICAP server and not kept, so it cannot pass unscanned)';
  }
  store?.dispose();
  return answer(ctx, 'ICAP_FAILED', 'too-large', true);
}

/** The ICAP side failed: failAction decides (`open` false: fail closed whatever it says). */
export function failed(
  ctx: RequestContext,
  error: IcapError,
  store: BodyStore | null,
  open = ctx.profile.failAction === 'fail-open',
  canReplay = true,
): ScanOutcome {
  const log = ctx.log;
  log.significance.push('ICAP_ERROR');
  if (isContentProvoked(error)) log.significance.push('CONTENT_PROVOKED');
  log.fail_action = open ? 'fail-open' : 'fail-closed';
  log.error_code = error.code;
  log.error_message = error.message;
  if (open && !canReplay) {
    log.error_message +=
      ' (a multipart form passes only as icapkit serialised it from a complete parse, which this request did not get)';
  } else if (open) {
    if (store === null || store.complete) {
      log.significance.push('FAIL_OPEN');
      return pass('ICAP_FAILED', log, store, []);
    }
    log.error_message +=
      ' (the body was already streamed to the ICAP server and not kept, so it cannot pass unscanned)';
  }
  store?.dispose();
  return answer(ctx, 'ICAP_FAILED', 'unavailable', store !== null && !store.ended);
}

/** The HTTP client stalled in the middle of its body: 408, whatever the failure action. */
function clientTimeout(ctx: RequestContext, error: IcapError, store: BodyStore | null): ScanOutcome {
  const log = ctx.log;
  log.significance.push('CLIENT_TIMEOUT');
  log.error_code = error.code;
  log.error_message = error.message;
  store?.dispose();
  return answer(ctx, 'ICAP_FAILED', 'timeout', true);
}

/** The log's significance for a request refused for what it is. */
const REFUSAL_SIGNIFICANCE: Partial<Record<IcapErrorCode, Significance>> = {
  [IcapErrorCodes.CONTENT_TYPE]: 'CONTENT_TYPE_REFUSED',
  [IcapErrorCodes.CONTENT_ENCODING]: 'CONTENT_ENCODING_REFUSED',
  [IcapErrorCodes.MULTIPART]: 'MULTIPART_REFUSED',
  [IcapErrorCodes.BAD_REQUEST]: 'REQUEST_REFUSED',
  [IcapErrorCodes.UNSCANNED_ROUTE]: 'REQUEST_REFUSED',
  [IcapErrorCodes.CLIENT_LIMIT]: 'CLIENT_LIMITED',
};

function capitalise(s: string): string {
  return s.length === 0 ? s : `${s[0]!.toUpperCase()}${s.slice(1)}.`;
}

// ---------------------------------------------------------------- building outcomes

/**
 * `f`, run at most once (an outcome's dispose). Outcomes are written as plain literals with their
 * common fields first (action, log, threat, responseHeaders, dispose), not spread from a shared
 * object: V8's object spread (CloneObjectIC) in code not yet optimised keeps each request's
 * objects alive across scavenges, and the allocation sites it leaves tenured then keep doing so
 * for the life of the process (bench/README.md, thirty-third round).
 */
export function disposeOnce(f: () => void): () => void {
  let disposed = false;
  return () => {
    if (disposed) return;
    disposed = true;
    f();
  };
}

/** HTTP/2 has no `Connection` field (a stream ends without its connection): never send one. */
function isHttp2(facts: HttpRequestFacts): boolean {
  return facts.httpVersion.startsWith('2');
}

/** The middleware's own answer (403 aside): a 400/408/413/415/501/503 page or problem+json. */
export function answer(
  ctx: RequestContext,
  action: IcapAction,
  kind: ResponseKind,
  closeConnection: boolean,
  detail?: string,
): RespondOutcome {
  const response = buildResponse(kind, ctx.facts.headers.get('accept'), {
    detail,
    requestId: ctx.options.requestId,
    closeConnection: closeConnection && !isHttp2(ctx.facts),
  });
  return {
    action,
    log: ctx.log,
    threat: undefined,
    responseHeaders: [],
    dispose: disposeOnce(() => {}),
    kind: 'respond',
    status: response.status,
    headers: response.headers,
    body: response.body,
    closeConnection,
  };
}

/**
 * Continue to the application with the held body replayed (`store`), or the request untouched
 * (null: the application reads it as usual).
 */
export function pass(
  action: IcapAction,
  log: IcapLog,
  store: BodyStore | null,
  responseHeaders: Array<[string, string]>,
): PassOutcome {
  if (store === null) {
    return {
      action,
      log,
      threat: undefined,
      responseHeaders,
      dispose: disposeOnce(() => {}),
      kind: 'pass',
      body: null,
      contentLength: undefined,
    };
  }
  return heldPass(action, log, store, responseHeaders);
}

/**
 * A pass with a held body as one object (the common outcome of a scan, and a form passed as it
 * was scanned). `body` (its replay stream) is made only when read: the adapters take the held
 * bytes through HELD_REPLAY instead. `free` runs once, at the first dispose.
 */
export class ReplayPass implements PassOutcome {
  readonly kind = 'pass' as const;
  readonly action: IcapAction;
  readonly log: IcapLog;
  readonly threat: undefined = undefined;
  readonly responseHeaders: Array<[string, string]>;
  readonly contentLength: number;
  readonly [HELD_REPLAY]: LazyReplay;
  dispose: () => void;

  constructor(
    action: IcapAction,
    log: IcapLog,
    replay: LazyReplay,
    contentLength: number,
    responseHeaders: Array<[string, string]>,
    free: () => void,
  ) {
    this.action = action;
    this.log = log;
    this.responseHeaders = responseHeaders;
    this.contentLength = contentLength;
    this[HELD_REPLAY] = replay;
    // Made by a call, not written here: V8 allocates a function literal assigned straight to a
    // property in the old generation, where it keeps the request's objects alive across
    // scavenges (see disposeOnce).
    this.dispose = disposeOnce(free);
  }

  get body(): Readable {
    return this[HELD_REPLAY].stream;
  }
}

/** The held body's pass: its replay opened first (its reader keeps the bytes that release() drops). */
function heldPass(
  action: IcapAction,
  log: IcapLog,
  store: BodyStore,
  responseHeaders: Array<[string, string]>,
): ReplayPass {
  const replay = new LazyReplay(store.open() as Cursor);
  const contentLength = store.received;
  store.release();
  return new ReplayPass(action, log, replay, contentLength, responseHeaders, () => {
    store.dispose();
    replay.destroy();
  });
}

/** Continue to the application with another body than the request's own (`dispose` frees what it holds). */
export function passBody(
  action: IcapAction,
  log: IcapLog,
  body: Readable,
  length: number,
  responseHeaders: Array<[string, string]>,
  dispose: () => void,
): PassOutcome {
  return {
    action,
    log,
    threat: undefined,
    responseHeaders,
    dispose: disposeOnce(() => {
      dispose();
      if (!body.readableEnded) body.destroy();
    }),
    kind: 'pass',
    body,
    contentLength: length,
  };
}

/** Adds `store.dispose()` to an outcome's dispose. */
export function withDispose<T extends ScanOutcome>(outcome: T, store: BodyStore | undefined): T {
  if (store === undefined) return outcome;
  const inner = outcome.dispose;
  // Through a local (see ReplayPass's dispose).
  const both = () => {
    inner();
    store.dispose();
  };
  outcome.dispose = both;
  return outcome;
}

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
