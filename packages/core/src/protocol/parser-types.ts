/**
 * The messages the ICAP parser (parser.ts) reads: heads, encapsulated HTTP heads, the events it
 * reports and its bounds.
 */

import type { EncapsulatedEntry, EncapsulatedName } from './encapsulated.js';
import type { Headers } from './headers.js';

export type { EncapsulatedEntry, EncapsulatedName };

export type BodyKind = 'req-body' | 'res-body' | 'opt-body';

/** An encapsulated HTTP header section (request or response head). */
export interface EncapsulatedHttpHead {
  startLine: string;
  headers: Headers;
  /** The exact bytes of the section, its empty line included. */
  raw: Buffer;
}

export interface EncapsulatedHttpRequestHead extends EncapsulatedHttpHead {
  method: string;
  target: string;
  version: string;
}

export interface EncapsulatedHttpResponseHead extends EncapsulatedHttpHead {
  status: number;
  reason: string;
  version: string;
}

// The parsed parts of the head an IcapError carries (see IcapReceivedHead in errors.ts, which
// declares the rest): declared here so that errors.ts imports nothing from the protocol layer.
declare module '../errors.js' {
  interface IcapReceivedHead {
    headers: Headers;
    httpResponse: EncapsulatedHttpResponseHead | null;
    /** The encapsulated HTTP request head (a 200 echo's), when one was read; only ever read for a threat. */
    httpRequest?: EncapsulatedHttpRequestHead | null;
  }
}

interface IcapHeadBase {
  version: string;
  headers: Headers;
  /** The ICAP header lines as received (start line excluded), for logs. */
  rawHeaders: string;
  /** The parsed `Encapsulated` header, or null when the message has none. */
  encapsulated: EncapsulatedEntry[] | null;
  httpRequest: EncapsulatedHttpRequestHead | null;
  httpResponse: EncapsulatedHttpResponseHead | null;
  /** Which chunked body follows the head, or null when there is none. */
  body: BodyKind | null;
}

export interface IcapResponseHead extends IcapHeadBase {
  kind: 'response';
  status: number;
  reason: string;
}

export interface IcapRequestHead extends IcapHeadBase {
  kind: 'request';
  method: string;
  uri: string;
}

export type IcapHead = IcapResponseHead | IcapRequestHead;

export interface ParserHandler<H extends IcapHead> {
  /** A complete head (ICAP headers and encapsulated HTTP headers) was read. */
  onHead(head: H): void;
  /** A slice of chunked body data (chunk framing removed). */
  onBody(data: Buffer): void;
  /**
   * The message (or, for a preview, the previewed part of its body) is complete. `ieof` is
   * true when the last chunk carried the `ieof` extension.
   */
  onEnd(ieof: boolean): void;
}

export interface ParserOptions {
  /** Largest ICAP header section, and largest encapsulated header area, in bytes. Default 64 KiB. */
  maxHeaderSize?: number;
  /** Longest chunk-size line (with extensions). Default 4096 bytes. */
  maxChunkLineSize?: number;
  /** Largest trailer section. Default maxHeaderSize (a trailer may name a threat as a head does). */
  maxTrailerSize?: number;
}
