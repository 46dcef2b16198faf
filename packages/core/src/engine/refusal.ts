import { escapeControls, IcapError, type IcapErrorCode, IcapErrorCodes } from '../errors.js';
import { type IcapAction, type IcapLog, observe } from './log.js';
import type { ResponseKind } from './respond.js';
import type { RespondOutcome } from './types.js';

/**
 * Refusals are the application's to shape. Every adapter takes the same two options:
 *
 * - `onRefusal(refusal, ...frameworkArgs)`: render it yourself. Return
 *   `{ status?, headers?, body? }` (a string, bytes, or a value sent as JSON), or send the
 *   response with the framework (Express `res`, Fastify `reply`, Koa `ctx.body`); the status
 *   is preset to the refusal's. Returning nothing (and sending nothing) keeps the default page.
 * - `refusals: 'error'`: hand it to the framework's error handling instead, as an
 *   {@link IcapRefusalError} (`status`, `statusCode`, `expose`, `headers` like http-errors):
 *   Express `next(err)`, Fastify `reply.send(err)` (so `setErrorHandler` sees it), Koa a
 *   thrown error (your try/catch or `app.on('error')`).
 *
 * The default (`refusals: 'respond'`, no `onRefusal`) is icapkit's own page (HTML or
 * problem+json). A refusal never turns into a pass: if `onRefusal` throws, returns something
 * that is not a response (a status below 300 or above 599, a body it cannot send), or hangs
 * nothing on the response, the default page is sent; the handler never runs.
 */

/** Why the request was refused: which default page it gets. */
export type RefusalReason = ResponseKind;

/** A refused request, as `onRefusal` and {@link IcapRefusalError} describe it. */
export interface IcapRefusal {
  /** 'blocked' (a threat), 'too-large', 'unavailable' (scanner down), 'bad-request', ... */
  reason: RefusalReason;
  /** The HTTP status of the default page (403, 413, 503, ...). */
  status: number;
  /** Stable code: ICAP_ERR_BLOCKED for a threat, else the error's (ICAP_ERR_REQUEST_TOO_LARGE, ICAP_ERR_CONNECT...). */
  code: IcapErrorCode;
  /**
   * A sentence about it; safe to show the client when `expose` is true (status below 500): plain
   * text, `<`, `>` and `&` written as `\u003c`-style escapes (fit for an HTML text node, not an
   * attribute value: quotes stay). For a 5xx a sentence that names no
   * server (the detail is in `log.error_message`).
   */
  message: string;
  /** Whether `message` may be shown to the client (http-errors' rule: status below 500). */
  expose: boolean;
  /** The threat name, when the ICAP server named one. */
  threat: string | undefined;
  /** The log action (ICAP_BLOCKED, ICAP_FAILED). */
  action: IcapAction;
  /** The request's `icap_log` record. */
  log: IcapLog;
  /** The default page: what is sent when you leave it to icapkit. */
  response: { status: number; headers: Array<[string, string]>; body: Buffer };
  /** The request body was not read to its end: the connection closes after the answer. */
  closeConnection: boolean;
}

/** What `onRefusal` may return instead of sending the response itself. */
export interface IcapRefusalReply {
  /** Default: the refusal's status. Must be 300-599 (a refusal never answers 2xx). */
  status?: number | undefined;
  headers?: Record<string, string | number | readonly string[]> | ReadonlyArray<readonly [string, string]>;
  /** A string (text/plain), bytes (application/octet-stream), or any other value (JSON). */
  body?: unknown;
}

/** What `onRefusal` returns: a reply, or nothing (sent it yourself, or keep the default page). */
// biome-ignore lint/suspicious/noConfusingVoidType: a callback that sends the answer itself returns nothing
export type IcapRefusalResult = IcapRefusalReply | undefined | void;

/** How refusals are answered: icapkit's page (or `onRefusal`'s), or an error for the framework. */
export type IcapRefusalMode = 'respond' | 'error';

/**
 * The refusal options every adapter takes; `Args` are the framework's own arguments
 * (Express `[req, res]`, Fastify `[request, reply]`, Koa `[ctx]`); `Sent` is what a callback
 * that sent the answer itself may return (Express `res`, Fastify `reply`).
 */
export interface IcapRefusalOptions<Args extends unknown[], Sent = never> {
  /**
   * 'respond' (default): answer with icapkit's page, or `onRefusal`'s. 'error': hand an
   * {@link IcapRefusalError} to the framework's error handler instead.
   */
  refusals?: IcapRefusalMode | undefined;
  /**
   * Render a refusal yourself: return `{ status, headers, body }`, or send it with the
   * framework. Throwing, or doing nothing, sends the default page (a refusal never passes).
   */
  onRefusal?:
    | ((refusal: IcapRefusal, ...args: Args) => IcapRefusalResult | Sent | Promise<IcapRefusalResult | Sent>)
    | undefined;
}

const REASON_BY_STATUS: Record<number, RefusalReason> = {
  400: 'bad-request',
  403: 'blocked',
  408: 'timeout',
  413: 'too-large',
  415: 'unsupported-type',
  429: 'too-many',
  500: 'misconfigured',
  501: 'unsupported-transfer-coding',
  503: 'unavailable',
};

/** The refusal a `respond` outcome stands for. */
export function refusalOf(outcome: RespondOutcome): IcapRefusal {
  const log = outcome.log;
  const blocked = log.significance.includes('ICAP_BLOCKED') || outcome.threat !== undefined;
  const reason: RefusalReason = blocked
    ? 'blocked'
    : log.error_code === IcapErrorCodes.UNSCANNED_ROUTE
      ? 'unscanned-route'
      : (REASON_BY_STATUS[outcome.status] ?? (outcome.status >= 500 ? 'unavailable' : 'bad-request'));
  const code: IcapErrorCode = blocked
    ? IcapErrorCodes.BLOCKED
    : ((log.error_code as IcapErrorCode | undefined) ?? IcapErrorCodes.INTERNAL);
  const expose = outcome.status < 500;
  let message: string;
  if (blocked)
    message =
      outcome.threat === undefined
        ? 'Upload blocked: the content scanner refused it'
        : `Upload blocked: the content scanner found ${outcome.threat}`.replace(HTML_SPECIAL, htmlSafe);
  // A 5xx says nothing of the ICAP side (its address, its reason phrase) to the client, even where
  // a framework shows the message whatever `expose` says (Fastify's default error handler:
  // campaign-bl BL3); the record keeps the detail. What a 4xx quotes of the request is written
  // so that no HTML can come of it (an application showing the message as a page, BL4).
  else if (!expose) message = `Upload refused: ${reason} (${outcome.status})`;
  else message = (log.error_message ?? `Upload refused (${reason})`).replace(HTML_SPECIAL, htmlSafe);
  return {
    reason,
    status: outcome.status,
    code,
    message,
    expose,
    threat: outcome.threat,
    action: outcome.action,
    log,
    response: { status: outcome.status, headers: outcome.headers, body: outcome.body },
    closeConnection: outcome.closeConnection,
  };
}

/** Characters that make text markup, in a message a page may show: written as JSON escapes. */
const HTML_SPECIAL = /[<>&]/g;
const htmlSafe = (c: string) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`;

const REFUSAL_BRAND = Symbol.for('icapkit.refusal-error');

/**
 * A refusal handed to the framework (`refusals: 'error'`). Like an http-errors error:
 * `status` and `statusCode` are the HTTP status, `expose` says whether `message` may be shown
 * to the client (below 500), `headers` are the ones the answer should carry (`Retry-After`,
 * `Connection: close`). `code` is stable (ICAP_ERR_BLOCKED, ICAP_ERR_REQUEST_TOO_LARGE...),
 * `refusal` has the rest (reason, threat, the `icap_log` record, the default page).
 * Note: `status` is the HTTP status here, not an ICAP status as on other IcapErrors.
 */
export class IcapRefusalError extends IcapError {
  declare readonly status: number;
  /** The HTTP status (same as `status`). */
  readonly statusCode: number;
  /** Whether the message may be shown to the client (status below 500). */
  readonly expose: boolean;
  /** Headers the answer should carry (lower-case names). */
  readonly headers: Record<string, string>;
  /** 'blocked', 'too-large', 'unavailable', ... */
  readonly reason: RefusalReason;
  readonly threat: string | undefined;
  /** The request's `icap_log` record. */
  readonly log: IcapLog;
  readonly refusal: IcapRefusal;

  constructor(refusal: IcapRefusal, options: { http2?: boolean } = {}) {
    super(refusal.code, refusal.message, { status: refusal.status });
    this.name = 'IcapRefusalError';
    this.statusCode = refusal.status;
    this.expose = refusal.expose;
    this.reason = refusal.reason;
    this.threat = refusal.threat;
    this.log = refusal.log;
    this.refusal = refusal;
    const headers: Record<string, string> = {};
    for (const [n, v] of refusal.response.headers) {
      const name = n.toLowerCase();
      if (name === 'retry-after' || name === 'cache-control') headers[name] = v;
    }
    if (refusal.closeConnection && options.http2 !== true) headers.connection = 'close';
    this.headers = headers;
    Object.defineProperty(this, REFUSAL_BRAND, { value: true });
  }

  static override [Symbol.hasInstance](value: unknown): boolean {
    return (
      typeof value === 'object' &&
      value !== null &&
      (value as Record<symbol, unknown>)[REFUSAL_BRAND] === true
    );
  }
}

/** Whether `value` is an {@link IcapRefusalError} (from any copy of the package). */
export function isIcapRefusalError(value: unknown): value is IcapRefusalError {
  return value instanceof IcapRefusalError;
}

/** Throws (at start-up) when the refusal options are not usable. */
export function checkRefusalOptions(options: IcapRefusalOptions<never[], unknown>, where: string): void {
  const mode = options.refusals;
  if (mode !== undefined && mode !== 'respond' && mode !== 'error')
    throw new IcapError(
      IcapErrorCodes.INVALID_ARGUMENT,
      `${where}: refusals must be 'respond' or 'error', not ${JSON.stringify(mode)}`,
      { field: 'refusals' },
    );
  if (options.onRefusal !== undefined && typeof options.onRefusal !== 'function')
    throw new IcapError(IcapErrorCodes.INVALID_ARGUMENT, `${where}: onRefusal must be a function`, {
      field: 'onRefusal',
    });
  if (options.onRefusal !== undefined && mode === 'error')
    throw new IcapError(
      IcapErrorCodes.INVALID_ARGUMENT,
      `${where}: onRefusal and refusals: 'error' exclude each other (render the refusal yourself, or hand it to the framework)`,
      { field: 'onRefusal' },
    );
}

/** A response ready to write. */
export interface RefusalResponse {
  status: number;
  headers: Array<[string, string]>;
  body: Buffer;
}

/**
 * The response for a refusal given `onRefusal`'s result: null when the application sent it
 * itself (`sent()`), its reply when usable, else the default page (with `report` told why).
 * A hook that threw after it had started the response cannot be finished as a page: `abort`
 * is called (the adapter destroys the response), and `report` is told so.
 */
export async function refusalResponse(
  refusal: IcapRefusal,
  run: () => IcapRefusalResult | Promise<IcapRefusalResult> | unknown,
  sent: (result: unknown) => boolean,
  report: (err: unknown) => void,
  http2 = false,
  abort?: () => void,
): Promise<RefusalResponse | null> {
  let result: unknown;
  try {
    result = await run();
  } catch (err) {
    if (!sent(undefined)) {
      report(err);
      return refusal.response;
    }
    const message = err instanceof Error ? err.message : String(err);
    report(Object.assign(new Error(message, { cause: err }), { [RESPONSE_ABORTED]: true }));
    abort?.();
    return null;
  }
  if (sent(result)) return null;
  if (result === undefined || result === null) return refusal.response;
  try {
    return replyResponse(refusal, result as IcapRefusalReply, http2);
  } catch (err) {
    report(err);
    return refusal.response;
  }
}

/** A reply returned by onRefusal as a response (throws when it is not a refusal). */
export function replyResponse(refusal: IcapRefusal, reply: IcapRefusalReply, http2 = false): RefusalResponse {
  if (typeof reply !== 'object' || reply === null)
    throw new TypeError('onRefusal must return { status, headers, body } or nothing');
  const status = reply.status ?? refusal.status;
  if (!Number.isInteger(status) || status < 300 || status > 599)
    throw new RangeError(`onRefusal returned status ${String(status)}: a refusal is answered with 300-599`);
  const headers: Array<[string, string]> = [];
  const given = reply.headers ?? {};
  const entries: ReadonlyArray<readonly [string, unknown]> = Array.isArray(given)
    ? (given as ReadonlyArray<readonly [string, string]>)
    : Object.entries(given);
  for (const [name, value] of entries) {
    if (typeof name !== 'string' || !/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(name))
      throw new TypeError(`onRefusal returned an invalid header name ${JSON.stringify(name)}`);
    const lower = name.toLowerCase();
    if (lower === 'content-length' || lower === 'transfer-encoding' || lower === 'connection') continue;
    for (const v of Array.isArray(value) ? value : [value]) {
      const text = String(v);
      if (/[\r\n\0]/.test(text))
        throw new TypeError(`onRefusal returned an invalid value for header ${name}`);
      headers.push([name, text]);
    }
  }
  const has = (n: string) => headers.some(([h]) => h.toLowerCase() === n);
  let body: Buffer;
  let type: string | undefined;
  const b = reply.body;
  if (b === undefined || b === null) body = Buffer.alloc(0);
  else if (typeof b === 'string') {
    body = Buffer.from(b);
    type = 'text/plain; charset=utf-8';
  } else if (b instanceof Uint8Array) {
    body = Buffer.from(b.buffer, b.byteOffset, b.byteLength);
    type = 'application/octet-stream';
  } else {
    const json = JSON.stringify(b);
    if (json === undefined) throw new TypeError('onRefusal returned a body that cannot be sent');
    body = Buffer.from(json);
    type = 'application/json; charset=utf-8';
  }
  if (type !== undefined && !has('content-type')) headers.push(['Content-Type', type]);
  if (!has('cache-control')) headers.push(['Cache-Control', 'no-store']);
  if (!has('x-content-type-options')) headers.push(['X-Content-Type-Options', 'nosniff']);
  if (refusal.reason === 'unavailable' && !has('retry-after')) {
    const retry = refusal.response.headers.find(([n]) => n.toLowerCase() === 'retry-after');
    if (retry !== undefined) headers.push(retry);
  }
  if (refusal.closeConnection && !http2) headers.push(['Connection', 'close']);
  headers.push(['Content-Length', String(body.length)]);
  return { status, headers, body };
}

/** Marks an onRefusal error that came after the hook had started the response (refusalResponse). */
const RESPONSE_ABORTED = Symbol('icapkit.refusal.responseAborted');

/**
 * A reporter for problems of the application's own refusal handling: the logger when there
 * is one (every time), and one process warning per middleware (a disabled logger, like
 * Fastify's default, must not make them silent).
 */
export function refusalReporter(
  where: string,
): (err: unknown, logger?: { error(obj: object, msg: string): void }) => void {
  let warned = false;
  return (err, logger) => {
    const aborted = typeof err === 'object' && err !== null && RESPONSE_ABORTED in err;
    const message = `${where}: onRefusal failed (${err instanceof Error ? err.message : String(err)}); ${aborted ? 'it had started the response, which was aborted' : 'the default refusal page was sent'}`;
    if (logger !== undefined)
      observe(() => logger.error({ err, code: 'ICAP_ERR_ON_REFUSAL' }, message), undefined, '');
    if (warned) return;
    warned = true;
    // The callback's error message may quote the request: written with its control characters escaped.
    process.emitWarning(escapeControls(message), { code: 'ICAP_ERR_ON_REFUSAL' });
  };
}
