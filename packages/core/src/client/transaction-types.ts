/** What a Transaction is asked (TransactionRequest, TransactionOptions) and what it answers. */

import type { Readable } from 'node:stream';
import type { IcapReceivedHead } from '../errors.js';
import type { IcapRequestMethod } from '../protocol/encoder.js';
import type { Headers } from '../protocol/headers.js';
import type {
  EncapsulatedEntry,
  EncapsulatedHttpRequestHead,
  EncapsulatedHttpResponseHead,
} from '../protocol/parser.js';
import type { Heard } from './deadline.js';
import type { BodySource } from './source.js';

export interface TransactionRequest {
  method: IcapRequestMethod;
  /** ICAP head plus encapsulated HTTP headers. */
  head: Buffer;
  /** The ICAP header lines sent, for logs. */
  icapHeaders: string;
  body: BodySource | null;
  /** Preview size in bytes; undefined sends no preview. */
  preview: number | undefined;
  allow204: boolean;
  onContinue: (() => void) | undefined;
  /** See IcapRequestOptions.onStray, .strayBlocks, .heard. */
  onStray?: ((bytes: number) => void) | undefined;
  heard?: Heard | undefined;
  strayBlocks?: ((head: IcapReceivedHead) => boolean) | undefined;
  /** See IcapRequestOptions.waitAfterServerError. */
  waitAfterServerError?: boolean | undefined;
  /** See IcapRequestOptions.echoHold. */
  echoHold?: number | undefined;
  /**
   * The head asks the server to close the connection after this exchange (a `Connection:
   * close` line): computed from the header pairs when given, else looked up in `head`.
   */
  closeAsked?: boolean | undefined;
}

export interface TransactionOptions {
  ioTimeout: number;
  maxHeaderSize: number;
  /** Aborts the transaction; its reason (an IcapError) is what the caller sees. */
  signal: AbortSignal;
  /** Bytes came after a failure or an answer, while the exchange waited for more (progress). */
  onStray?: ((bytes: number) => void) | undefined;
  /** A head that followed blocks (IcapRequestOptions.strayBlocks). */
  strayBlocks?: ((head: IcapReceivedHead) => boolean) | undefined;
  /** Where the bytes read are counted (IcapRequestOptions.heard). */
  heard?: Heard | undefined;
  /**
   * Set when `signal` is the caller's own: a reason that is not an IcapError becomes
   * ICAP_ERR_ABORTED "<abortWhat> was aborted".
   */
  abortWhat?: string | undefined;
}

/** Facts about a finished exchange. */
export interface TransactionSummary {
  bytesSent: number;
  bytesReceived: number;
  /** Epoch ms when the first ICAP byte was written. */
  startedAt: number;
  /** ms from the first ICAP byte sent to the last ICAP byte received. */
  latencyMs: number;
  /** Whether the connection went back to the pool. */
  reused: boolean;
  /**
   * The trailer fields of the answer's chunked body, read leniently as a head with the
   * answer's status, when it had any: a threat named there is still a threat.
   */
  trailer?: IcapReceivedHead | undefined;
  /**
   * What was received after the answer ended (another answer on the same connection, or
   * several), each head read leniently: a threat named there is not lost either. Only the heads
   * that may name a threat are kept (client/stray.ts), or, with `strayBlocks`, the first one it
   * blocks by, and what was still open when the wait ended; present whenever bytes followed.
   */
  stray?: IcapReceivedHead[] | undefined;
}

export interface ConnectionInfo {
  id: number;
  /** The connection had served earlier transactions. */
  reused: boolean;
  remoteAddress: string | undefined;
  remotePort: number | undefined;
  localPort: number | undefined;
}

/** A final ICAP response. Its body, if any, streams in `body`. */
export interface IcapResponse {
  status: number;
  reason: string;
  version: string;
  headers: Headers;
  /** The ICAP header lines received, for logs. */
  rawHeaders: string;
  /** ISTag without its quotes, when present. */
  istag: string | undefined;
  encapsulated: EncapsulatedEntry[] | null;
  /** Encapsulated HTTP request head (a modified request), if any. */
  httpRequest: EncapsulatedHttpRequestHead | null;
  /** Encapsulated HTTP response head (request satisfaction, a block page), if any. */
  httpResponse: EncapsulatedHttpResponseHead | null;
  /**
   * The encapsulated body, chunk framing removed. Read it to its end (or destroy it) to
   * finish the transaction; the connection is reused only if it is read to its end.
   */
  body: Readable | null;
  method: IcapRequestMethod;
  /** The ICAP header lines sent, for logs. */
  requestHeaders: string;
  /** A preview was sent. */
  previewSent: boolean;
  /** The server answered before asking for more than the preview (a verdict inside the preview). */
  answeredInPreview: boolean;
  /** The whole HTTP body had been sent to the server when it answered. */
  completeBodySent: boolean;
  connection: ConnectionInfo;
  /** Settles when the exchange is over: the response read to its end, or a failure. */
  done: Promise<TransactionSummary>;
  /**
   * The `100 Continue` head(s) the server sent, when it sent one (their fields as one): a threat
   * named there counts as much as one in the final head (optional for objects built by hand).
   */
  continueHead?: IcapReceivedHead | null;
}
