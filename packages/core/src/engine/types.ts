import type { Readable } from 'node:stream';
import type { IcapResponse } from '../client/transaction-types.js';
import type { IcapError } from '../errors.js';
import type { AdaptedBody } from './body.js';
import type { IcapAction, IcapLog } from './log.js';
import type { Part } from './multipart/parse.js';
import type { PoolGroup } from './pool-group.js';
import type { PinoLike, ResolvedProfile } from './profile.js';
import type { HttpRequestFacts } from './request.js';
import type { ClientResponse } from './respond.js';
import type { ClientIntake, StreamGate } from './scan/intake.js';
import type { ScanScope, Telemetry } from './telemetry.js';
import type { Verdict } from './verdict/index.js';

/**
 * Types shared by the engine (engine.ts), one request's scan (scan/scan.ts) and its stages
 * (scan/*, multipart/parts.ts): they import this module, never each other in a circle.
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
   * ICAP_ERR_BODY_CONSUMED; see engine/scan/consumed.ts).
   */
  parsedBody?: unknown;
  /**
   * For adapters: the request the engine is given is not the one the application could read
   * (the reason), e.g. a GET whose Web `Request` has no body while the Node request under it
   * carries one. A request the rules select is refused at admission, before a byte of its
   * body is read: 400, ICAP_ERR_BAD_REQUEST. The client's doing, so never the failure action.
   */
  badRequest?: string | undefined;
  /**
   * For adapters: the request as the client sent it cannot be read (the reason), e.g. a server
   * library that cannot make a Web `Request` of its target or header fields. Refused whatever
   * the rules decide (they would judge a request without what could not be read, while the
   * server may still frame a body by it), before a byte of its body is read: 400,
   * ICAP_ERR_BAD_REQUEST. The client's doing, so never the failure action.
   */
  unreadable?: string | undefined;
  /**
   * For framework integrations that pick the scan's settings by route before the framework
   * routes (@icapkit/nestjs on Express): the request may reach routes scanned with different
   * settings (the reason). With a body, refused whatever the rules decide, before a byte of it
   * is read (and before `Expect: 100-continue` is answered): 403, ICAP_ERR_UNSCANNED_ROUTE.
   * Without one, the rules decide as for any request.
   */
  unscannedRoute?: string | undefined;
}

export interface OutcomeBase {
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

/** What the long-lived engine lends each request's scan (one object per engine, not per request). */
export interface EngineCore {
  readonly profile: ResolvedProfile;
  readonly group: PoolGroup;
  readonly telemetry: Telemetry;
  readonly intake: ClientIntake;
  /** Places for bodies streamed while they arrive (maxStreamingUploads). */
  readonly streams: StreamGate;
  /** Set by `engine.close()`: later scans fail (ICAP_ERR_CLOSED_CLIENT). */
  closed: boolean;
  /** Sends a finished record to `onLog`, the logger and the log listeners. */
  emit(log: IcapLog, logger: PinoLike | undefined): void;
}

/** What an answer to the client is built from: the request, its log record, the caller's options. */
export interface RequestContext {
  readonly profile: ResolvedProfile;
  readonly facts: HttpRequestFacts;
  readonly log: IcapLog;
  readonly options: ScanOptions;
}

/** What ICAP attempts run with: the servers, the telemetry scope and the record they add entries to. */
export interface ExchangeContext {
  /** Bytes of ICAP answers read for the scan (the transactions add them: IcapRequestOptions.heard). */
  heard: number;
  readonly profile: ResolvedProfile;
  readonly group: PoolGroup;
  readonly telemetry: Telemetry;
  readonly scope: ScanScope;
  readonly log: IcapLog;
}

/** What ICAP said about one body (scan/exchange.ts), for outcome.ts or the part it scanned. */
export type AttemptResult =
  | { type: 'clean'; res: IcapResponse | null; verdict: Verdict | null; skipped: string | undefined }
  | { type: 'blocked'; res: IcapResponse | null; verdict: Verdict; relay: ClientResponse | undefined }
  | { type: 'adapted'; res: IcapResponse; verdict: Verdict; adapted: AdaptedBody };

/** One multipart part's scan (multipart/parts.ts). */
export interface PartResult {
  part: Part;
  type: 'clean' | 'blocked' | 'modified' | 'failed';
  verdict?: Verdict | undefined;
  adapted?: AdaptedBody | undefined;
  error?: IcapError | undefined;
}
