/**
 * The rules RFC 3507 sets on a final ICAP answer's head, checked when it arrives, the errors a
 * Transaction reports about an answer (one that broke a rule, one that never came), and the
 * 100 Continue heads before it. What followed an answer on its connection: stray.ts.
 */
import { Readable } from 'node:stream';
import {
  IcapError,
  type IcapErrorCode,
  IcapErrorCodes,
  type IcapReceivedHead,
  RfcErrorCodes,
} from '../errors.js';
import type { IcapRequestMethod } from '../protocol/encoder.js';
import type { EncapsulatedEntry, IcapResponseHead } from '../protocol/parser.js';
import { receivedAnswer } from '../protocol/salvage.js';
import type { Connection } from './connection.js';
import { noop } from './deferred.js';
import type {
  ConnectionInfo,
  IcapResponse,
  TransactionRequest,
  TransactionSummary,
} from './transaction-types.js';

/**
 * Throws when a final head breaks a rule for this request (a 204 not offered, entities the
 * method does not allow); returns whether the body it announces is to be ignored.
 */
export function checkFinalHead(
  req: TransactionRequest,
  head: IcapResponseHead,
  previewPhase: boolean,
): boolean {
  if (head.status === 204 && !req.allow204 && !previewPhase) {
    throw new IcapError(
      IcapErrorCodes.PROTOCOL,
      'ICAP 204 outside the preview although Allow: 204 was not offered',
      {
        rfcCode: RfcErrorCodes.ICAP_SERVER_UNEXPECTED_CLOSE_204,
      },
    );
  }
  // An error status (4xx/5xx) is an answer whatever its Encapsulated says: some servers send
  // a 500 with `opt-body=0` and no body. Its status is what matters; a body it may announce
  // is not read (an OPTIONS error has nothing to say in one, a misframed one cannot be
  // trusted), and the connection is not reused, since what follows the head is unknown.
  let ignoreBody = false;
  if (head.status >= 400 && head.body !== null) {
    ignoreBody = req.method === 'OPTIONS' || !encapsulatedFits(req.method, head);
  }
  if (!ignoreBody) checkEncapsulated(req.method, head);
  return ignoreBody;
}

/** The error with the final head it was raised about, read whole (so a verdict in it is not lost). */
export { withReceivedHead } from '../protocol/salvage.js';

/** `err` as it is when an IcapError, else as an IcapError of `code` whose message starts with `what`. */
export function asIcapError(err: unknown, code: IcapErrorCode, what: string): IcapError {
  if (err instanceof IcapError) return err;
  return new IcapError(code, `${what}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
}

/** The error for a connection on which nothing moved for `ms` (ioTimeout). */
export function idleError(label: string, ms: number): IcapError {
  return new IcapError(IcapErrorCodes.IO_TIMEOUT, `no data moved on the connection to ${label} for ${ms} ms`);
}

/** The error for a connection the server closed before its answer was complete. */
export function closedError(label: string, receivedAny: boolean, duringPreview: boolean): IcapError {
  return new IcapError(
    IcapErrorCodes.CLOSED,
    receivedAny
      ? `ICAP server ${label} closed the connection in the middle of its response`
      : `ICAP server ${label} closed the connection without responding`,
    {
      rfcCode: duringPreview
        ? RfcErrorCodes.ICAP_SERVER_UNEXPECTED_CLOSE
        : RfcErrorCodes.ICAP_SERVER_RESPONSE_CLOSE,
    },
  );
}

function encapsulatedFits(method: IcapRequestMethod, head: IcapResponseHead): boolean {
  try {
    checkEncapsulated(method, head);
    return true;
  } catch {
    return false;
  }
}

/** The entities a final response may encapsulate, per ICAP method (RFC 3507 §4.4.1). */
function checkEncapsulated(method: IcapRequestMethod, head: IcapResponseHead): void {
  const entries = head.encapsulated;
  // No message (no Encapsulated, or a null-body alone: a 204, most errors): no rule below applies.
  if (entries === null || (entries.length === 1 && entries[0]!.name === 'null-body')) return;
  const names = head.encapsulated?.map((e) => e.name) ?? [];
  const has = (n: string) => names.includes(n as EncapsulatedEntry['name']);
  // A 200/201 without Encapsulated carries no message ("no header means no body"): the verdict
  // reader decides (a threat header blocks, an explicit allow is clean, anything else an error).
  if (method === 'OPTIONS') {
    if (has('req-hdr') || has('res-hdr') || has('req-body') || has('res-body')) {
      throw new IcapError(
        IcapErrorCodes.PROTOCOL,
        `OPTIONS response encapsulates HTTP messages: ${names.join(', ')}`,
      );
    }
    return;
  }
  if (has('opt-body')) throw new IcapError(IcapErrorCodes.PROTOCOL, `${method} response has an opt-body`);
  if (method === 'RESPMOD' && has('req-body')) {
    throw new IcapError(IcapErrorCodes.PROTOCOL, 'RESPMOD response carries a req-body');
  }
  if (method === 'REQMOD' && ((has('req-body') && has('res-hdr')) || (has('res-body') && !has('res-hdr')))) {
    throw new IcapError(
      IcapErrorCodes.PROTOCOL,
      `inconsistent REQMOD response Encapsulated: ${names.join(', ')}`,
    );
  }
}

/** A value without the double quotes around it (as `.replace(/^"(.*)"$/, '$1')`, without the regex). */
export function unquote(v: string): string {
  const n = v.length;
  if (n < 2 || v.charCodeAt(0) !== 0x22 || v.charCodeAt(n - 1) !== 0x22) return v;
  for (let i = 1; i < n - 1; i++) {
    const c = v.charCodeAt(i);
    // `.` matches no line terminator: the regex leaves such a value as it is.
    if (c === 0x0a || c === 0x0d || c === 0x2028 || c === 0x2029) return v;
  }
  return v.slice(1, n - 1);
}

/** The response body's buffer, as a Readable's (`push` says to pause past it). */
const BODY_HIGH_WATER_MARK = 64 * 1024;

/**
 * Where a response body's chunks go when its reader takes them as they come (see takeBody),
 * instead of through a Readable: called from the socket's data, in order, synchronously.
 */
export interface BodySink {
  /** The next chunk of the body (a slice of what the socket read: not copied); false: stop (the exchange then fails, as when its Readable is destroyed). */
  data(chunk: Buffer): boolean;
  /** The body is complete (and the exchange over). */
  end(): void;
  /** The exchange failed before the body's end (the error `done` rejects with). */
  error(err: IcapError): void;
}

const OPEN = 0;
const ENDED = 1;
const FAILED = 2;

/**
 * A response body on its way from the transaction to its reader. The Readable the caller sees
 * (`IcapResponse.body`) is made when first asked for; until then (or instead of it, when the
 * reader takes the chunks through a BodySink) the chunks wait here. Either way the reader gets
 * what the Readable would give: the same chunks in order, then the end or the error; holding
 * more than a Readable's buffer pauses the socket (`push` returns false) until it is read.
 * `more`: the reader wants more; `destroyed`: the reader gave up before the end (destroyed the
 * Readable, or abandoned its sink), with an IcapError (its own, or ICAP_ERR_ABORTED).
 */
export class AnswerBody {
  readonly #more: () => void;
  readonly #destroyed: (err: IcapError) => void;
  #readable: Readable | null = null;
  #sink: BodySink | null = null;
  #held: Buffer[] | null = null;
  #heldBytes = 0;
  #state = OPEN;
  #error: IcapError | null = null;

  constructor(more: () => void, destroyed: (err: IcapError) => void) {
    this.#more = more;
    this.#destroyed = destroyed;
  }

  /** The transaction's next chunk; false when its reader is behind (pause the socket). */
  push(chunk: Buffer): boolean {
    if (this.#state !== OPEN) return true;
    if (this.#readable !== null) return this.#readable.push(chunk);
    if (this.#sink !== null) {
      if (!this.#sink.data(chunk)) this.#abandon();
      return true;
    }
    if (this.#held === null) this.#held = [chunk];
    else this.#held.push(chunk);
    this.#heldBytes += chunk.length;
    return this.#heldBytes < BODY_HIGH_WATER_MARK;
  }

  /** The body is complete. */
  end(): void {
    if (this.#state !== OPEN) return;
    this.#state = ENDED;
    if (this.#readable !== null) this.#readable.push(null);
    else this.#sink?.end();
  }

  /** The exchange failed: the reader gets `err` (a destroyed Readable keeps its own end). */
  fail(err: IcapError): void {
    if (this.#state !== OPEN) return;
    this.#state = FAILED;
    this.#error = err;
    this.#held = null;
    const readable = this.#readable;
    if (readable !== null) {
      if (!readable.destroyed) readable.destroy(err);
    } else {
      const sink = this.#sink;
      this.#sink = null;
      sink?.error(err);
    }
  }

  /**
   * The body as a Readable (made at the first call, with what is held in it), or null once a
   * sink took it.
   */
  readable(): Readable | null {
    if (this.#readable === null) {
      if (this.#sink !== null) return null;
      this.#readable = this.#makeReadable();
    }
    return this.#readable;
  }

  /**
   * Hands the body to `sink` instead of a Readable: what is held at once, then each chunk as it
   * comes, then the end or the error. False (and nothing done) when the Readable was made.
   */
  take(sink: BodySink): boolean {
    if (this.#readable !== null || this.#sink !== null) return false;
    this.#sink = sink;
    const held = this.#held;
    this.#held = null;
    this.#heldBytes = 0;
    if (held !== null) {
      for (const chunk of held) {
        if (!sink.data(chunk)) {
          this.#abandon();
          return true;
        }
      }
    }
    if (this.#state === ENDED) sink.end();
    else if (this.#state === FAILED) {
      this.#sink = null;
      sink.error(this.#error!);
    } else this.#more();
    return true;
  }

  /** The sink's reader stops before the end (as destroying the Readable would): the exchange fails. */
  #abandon(): void {
    if (this.#sink === null) return;
    this.#sink = null;
    // (After the end, as a Readable destroyed before its end was read: the transaction, over, ignores it.)
    this.#destroyed(
      new IcapError(IcapErrorCodes.ABORTED, 'the ICAP response body was destroyed before its end'),
    );
  }

  #makeReadable(): Readable {
    const body = new Readable({
      highWaterMark: BODY_HIGH_WATER_MARK,
      read: this.#more,
      destroy: (err, cb) => {
        // Destroyed after its end (autoDestroy): the transaction had finished before the end was
        // pushed, so there is nothing to report (and no error worth its stack trace to build).
        if (err === null && body.readableEnded) {
          cb(null);
          return;
        }
        // Destroyed by the transaction's failure: it knows already.
        if (this.#state !== FAILED) {
          this.#destroyed(
            err instanceof IcapError
              ? err
              : new IcapError(IcapErrorCodes.ABORTED, 'the ICAP response body was destroyed before its end', {
                  cause: err ?? undefined,
                }),
          );
        }
        cb(err);
      },
    });
    // The body may fail before anyone reads it (a misframed chunk in the same read as the head):
    // the error stays on the stream for its reader and rejects `done`, and is not an uncaught
    // 'error' event that would end the process.
    body.on('error', noop);
    const held = this.#held;
    this.#held = null;
    this.#heldBytes = 0;
    if (held !== null) for (const chunk of held) body.push(chunk);
    if (this.#state === ENDED) body.push(null);
    else if (this.#state === FAILED) body.destroy(this.#error!);
    return body;
  }
}

/** Hands `res`'s body to `sink` (see AnswerBody.take); false when it has none to hand, or not this way. */
export function takeBody(res: IcapResponse, sink: BodySink): boolean {
  return res instanceof FinalResponse && res.takeBody(sink);
}

/** A final response as the caller gets it; `sent` tells, when asked, whether the whole body had been sent. */
export function finalResponse(
  head: IcapResponseHead,
  req: TransactionRequest,
  body: AnswerBody | null,
  sent: { readonly completeBodySent: boolean },
  answeredInPreview: boolean,
  connection: ConnectionInfo,
  done: Promise<TransactionSummary>,
  continueHead: IcapReceivedHead | null = null,
): IcapResponse {
  return new FinalResponse(head, req, body, sent, answeredInPreview, connection, done, continueHead);
}

/**
 * An IcapResponse: the same fields as the object literal it replaces, `completeBodySent` a
 * getter on the class (a literal with a getter is built on V8's slow path: about 0.8 µs per
 * transaction, against a few ns for a class), and `body` one too: its Readable is made when
 * first read, and not at all when the body goes to a BodySink (takeBody).
 */
class FinalResponse implements IcapResponse {
  status: number;
  reason: string;
  version: string;
  headers: IcapResponse['headers'];
  rawHeaders: string;
  istag: string | undefined;
  encapsulated: EncapsulatedEntry[] | null;
  httpRequest: IcapResponse['httpRequest'];
  httpResponse: IcapResponse['httpResponse'];
  method: IcapRequestMethod;
  requestHeaders: string;
  previewSent: boolean;
  answeredInPreview: boolean;
  connection: ConnectionInfo;
  done: Promise<TransactionSummary>;
  continueHead: IcapReceivedHead | null;
  readonly #sent: { readonly completeBodySent: boolean };
  readonly #body: AnswerBody | null;

  constructor(
    head: IcapResponseHead,
    req: TransactionRequest,
    body: AnswerBody | null,
    sent: { readonly completeBodySent: boolean },
    answeredInPreview: boolean,
    connection: ConnectionInfo,
    done: Promise<TransactionSummary>,
    continueHead: IcapReceivedHead | null,
  ) {
    const istag = head.headers.get('istag');
    this.status = head.status;
    this.reason = head.reason;
    this.version = head.version;
    this.headers = head.headers;
    this.rawHeaders = head.rawHeaders;
    this.istag = istag === undefined ? undefined : unquote(istag);
    this.encapsulated = head.encapsulated;
    this.httpRequest = head.httpRequest;
    this.httpResponse = head.httpResponse;
    this.#body = body;
    this.method = req.method;
    this.requestHeaders = req.icapHeaders;
    this.previewSent = req.preview !== undefined;
    this.answeredInPreview = answeredInPreview;
    this.connection = connection;
    this.done = done;
    this.continueHead = continueHead;
    this.#sent = sent;
  }

  /** Whether the whole HTTP body had been sent, read when asked (the sending may go on after the head). */
  get completeBodySent(): boolean {
    return this.#sent.completeBodySent;
  }

  /** The encapsulated body (see IcapResponse); null when there is none, or a BodySink took it. */
  get body(): Readable | null {
    return this.#body === null ? null : this.#body.readable();
  }

  /** See takeBody. */
  takeBody(sink: BodySink): boolean {
    return this.#body?.take(sink) === true;
  }
}

/** What a response says about the connection it came on. */
export function connectionInfo(conn: Connection, reused: boolean): ConnectionInfo {
  return {
    id: conn.id,
    reused,
    remoteAddress: conn.remoteAddress,
    remotePort: conn.remotePort,
    localPort: conn.localPort,
  };
}

/** Interim heads (100 Continue, any 1xx but 101) before an answer, one with fields counting 8 (campaign-an AN2: a flood). */
const MAX_INTERIM = 64;

/** The count of 100 Continue heads with one more; past the bound, a protocol error. */
export function countInterim(count: number, fielded: boolean): number {
  const n = count + (fielded ? 8 : 1);
  if (n > MAX_INTERIM) throw new IcapError(IcapErrorCodes.PROTOCOL, 'too many 100 Continue heads');
  return n;
}

/**
 * The 100 Continue heads with fields read so far, with `head` (kept for a threat, read as one).
 * Two that both carry encapsulated HTTP heads fail the exchange: one head can keep the heads of
 * one only (campaign-aq AQ2), and no server sends a 100 with any; the error carries both
 * (campaign-ar AR5), read for a threat.
 */
export function keepInterim(head: IcapResponseHead, kept: IcapReceivedHead | null): IcapReceivedHead | null {
  const encapsulated = (h: IcapReceivedHead | null) =>
    h != null && (h.httpResponse != null || h.httpRequest != null);
  if (encapsulated(head) && encapsulated(kept))
    throw new IcapError(IcapErrorCodes.PROTOCOL, 'a second 100 Continue with encapsulated HTTP heads', {
      head: kept!,
      stray: [head],
    });
  return receivedAnswer(head, kept) ?? null;
}
