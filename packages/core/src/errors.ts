/**
 * Errors with stable codes. Every failure the client or the engine reports is an
 * {@link IcapError} whose `code` is one of {@link IcapErrorCode}; where RFC 3507 §6.2 names an
 * application error for the situation, `rfcCode` carries it (1000-1005).
 *
 * `instanceof IcapError` works across duplicate copies of the package (the dual-package
 * hazard) because it checks a global brand rather than the prototype chain, as undici does.
 */

export const IcapErrorCodes = {
  /** TCP connect refused or failed (RFC 3507 §6.2 ICAP_CANT_CONNECT). */
  CONNECT: 'ICAP_ERR_CONNECT',
  /** TCP/TLS connect did not finish within connectTimeout (ICAP_CANT_CONNECT). */
  CONNECT_TIMEOUT: 'ICAP_ERR_CONNECT_TIMEOUT',
  /** TLS handshake failed or the certificate was rejected (ICAP_CANT_CONNECT). */
  TLS: 'ICAP_ERR_TLS',
  /** The whole transaction took longer than its response timeout; the socket was destroyed. */
  TIMEOUT: 'ICAP_ERR_TIMEOUT',
  /** No byte moved in either direction for ioTimeout while the transaction needed one. */
  IO_TIMEOUT: 'ICAP_ERR_IO_TIMEOUT',
  /**
   * The server made no progress (took no body, sent no answer) for stallTimeout while it was
   * its turn; counts against its health, and the request is retried on another server.
   */
  STALLED: 'ICAP_ERR_STALLED',
  /** Every connection to the server stayed busy for queueTimeout; the request tries another server. */
  SATURATED: 'ICAP_ERR_SATURATED',
  /** The server reset the connection (ICAP_SERVER_RESPONSE_RESET). */
  RESET: 'ICAP_ERR_RESET',
  /** The server closed the connection before a complete response (ICAP_SERVER_RESPONSE_CLOSE / UNEXPECTED_CLOSE). */
  CLOSED: 'ICAP_ERR_CLOSED',
  /** The response broke RFC 3507 framing or rules (ICAP_SERVER_UNKNOWN_CODE for unknown status codes). */
  PROTOCOL: 'ICAP_ERR_PROTOCOL',
  /** A header section of the response exceeded maxHeaderSize. */
  HEADERS_TOO_LARGE: 'ICAP_ERR_HEADERS_TOO_LARGE',
  /** A body returned by the ICAP server exceeded the allowed size. */
  BODY_TOO_LARGE: 'ICAP_ERR_BODY_TOO_LARGE',
  /** The ICAP server answered with a 4xx or 5xx status. */
  SERVER_STATUS: 'ICAP_ERR_SERVER_STATUS',
  /** The service does not support the ICAP method (its OPTIONS `Methods` lacks it). */
  METHOD_NOT_SUPPORTED: 'ICAP_ERR_METHOD_NOT_SUPPORTED',
  /** The transaction was cancelled through its AbortSignal. */
  ABORTED: 'ICAP_ERR_ABORTED',
  /** The HTTP request body is larger than the profile's bufferSize. */
  REQUEST_TOO_LARGE: 'ICAP_ERR_REQUEST_TOO_LARGE',
  /** A multipart/form-data body is malformed or over a limit (status 400 or 413). */
  MULTIPART: 'ICAP_ERR_MULTIPART',
  /**
   * The request's content type is not allowed by the profile, or its charset is one whose decoding
   * could change ASCII text (only UTF-8, US-ASCII, ISO-8859-1 and windows-1252 are accepted) (415).
   */
  CONTENT_TYPE: 'ICAP_ERR_CONTENT_TYPE',
  /** A Content-Encoding the profile does not accept, or a body that cannot be decoded. */
  CONTENT_ENCODING: 'ICAP_ERR_CONTENT_ENCODING',
  /** A temp file for a large body could not be written. */
  SPOOL: 'ICAP_ERR_SPOOL',
  /** Reading the HTTP body to be scanned failed (for example the HTTP client went away). */
  BODY_SOURCE: 'ICAP_ERR_BODY_SOURCE',
  /** The HTTP client sent nothing of its request body for bodyTimeout (408). */
  BODY_TIMEOUT: 'ICAP_ERR_BODY_TIMEOUT',
  /** The HTTP client's address already has maxBodiesPerClient uploads arriving (429). */
  CLIENT_LIMIT: 'ICAP_ERR_CLIENT_LIMIT',
  /** The client or pool was closed. */
  CLOSED_CLIENT: 'ICAP_ERR_CLIENT_CLOSED',
  /** No ICAP server is available (all suspended or none configured). */
  NO_SERVER: 'ICAP_ERR_NO_SERVER',
  /** A profile or option is invalid; the message names the field. */
  INVALID_PROFILE: 'ICAP_ERR_INVALID_PROFILE',
  /** An argument to the client is invalid (for example a header value with CR/LF). */
  INVALID_ARGUMENT: 'ICAP_ERR_INVALID_ARGUMENT',
  /**
   * The HTTP request head cannot be sent to the ICAP server as the application reads it (a Host
   * that is not a host, a target with non-ASCII or whitespace, a control character in a value): 400.
   */
  BAD_REQUEST: 'ICAP_ERR_BAD_REQUEST',
  /** An unexpected failure inside icapkit (a bug): fails closed, whatever the failure action. */
  INTERNAL: 'ICAP_ERR_INTERNAL',
  /** `ready()` with `startupCheck: 'fail'`: a server did not answer OPTIONS (the message names each). */
  STARTUP_CHECK: 'ICAP_ERR_STARTUP_CHECK',
  /** The ICAP server found a threat: the request was refused (403). The code of a refusal error. */
  BLOCKED: 'ICAP_ERR_BLOCKED',
  /**
   * The request body was already read (by a body parser mounted before the middleware): it
   * cannot be scanned, so the request is refused (500). Mount icap() before body parsers.
   */
  BODY_CONSUMED: 'ICAP_ERR_BODY_CONSUMED',
  /**
   * The request may reach routes scanned with different settings, and the framework tells them
   * apart only after the scan (NestJS versions and hosts): refused (403) before its body is read.
   */
  UNSCANNED_ROUTE: 'ICAP_ERR_UNSCANNED_ROUTE',
} as const;

export type IcapErrorCode = (typeof IcapErrorCodes)[keyof typeof IcapErrorCodes];

/**
 * Control characters written as `\xNN`, for text an ICAP server sent that goes into a message
 * (a reason phrase): messages reach terminals, where ESC sequences or backspaces would rewrite
 * the lines around them. The Unicode line separators and the bidirectional overrides and
 * isolates (which reorder what a terminal or log viewer shows after them) as `\uNNNN`.
 */
export function escapeControls(text: string): string {
  return text.replace(/[\x00-\x1f\x7f-\x9f\u200e\u200f\u2028-\u202e\u2066-\u2069]/g, (c) => {
    const code = c.charCodeAt(0);
    return code > 0xff ? `\\u${code.toString(16)}` : `\\x${code.toString(16).padStart(2, '0')}`;
  });
}

/** RFC 3507 §6.2 application error codes. */
export const RfcErrorCodes = {
  ICAP_CANT_CONNECT: 1000,
  ICAP_SERVER_RESPONSE_CLOSE: 1001,
  ICAP_SERVER_RESPONSE_RESET: 1002,
  ICAP_SERVER_UNKNOWN_CODE: 1003,
  ICAP_SERVER_UNEXPECTED_CLOSE_204: 1004,
  ICAP_SERVER_UNEXPECTED_CLOSE: 1005,
} as const;

export type RfcErrorCode = (typeof RfcErrorCodes)[keyof typeof RfcErrorCodes];

const DEFAULT_RFC_CODE: Partial<Record<IcapErrorCode, RfcErrorCode>> = {
  ICAP_ERR_CONNECT: RfcErrorCodes.ICAP_CANT_CONNECT,
  ICAP_ERR_CONNECT_TIMEOUT: RfcErrorCodes.ICAP_CANT_CONNECT,
  ICAP_ERR_TLS: RfcErrorCodes.ICAP_CANT_CONNECT,
  ICAP_ERR_RESET: RfcErrorCodes.ICAP_SERVER_RESPONSE_RESET,
  ICAP_ERR_CLOSED: RfcErrorCodes.ICAP_SERVER_UNEXPECTED_CLOSE,
};

const BRAND = Symbol.for('icapkit.error');

/**
 * A final ICAP response head that was received complete but could not be used as an answer
 * (it broke a framing rule): kept on the error, so a verdict it names (threat headers, an
 * encapsulated 403) is not lost with it.
 */
export interface IcapReceivedHead {
  status: number;
  reason: string;
  rawHeaders: string;
  // `headers` (a Headers) and `httpResponse` (the encapsulated HTTP response head, or null)
  // are declared by protocol/parser.ts, which adds them to this interface (module
  // augmentation): errors sit below the protocol layer and import nothing from it.
}

export interface IcapErrorOptions {
  cause?: unknown;
  rfcCode?: RfcErrorCode;
  /** ICAP status code, for SERVER_STATUS errors. */
  status?: number;
  /** The profile field an INVALID_PROFILE error is about. */
  field?: string;
  /** The final response head received before the error, if any (see {@link IcapReceivedHead}). */
  head?: IcapReceivedHead;
  /** What the server sent right after a head that broke a rule (a second answer?), read leniently. */
  stray?: IcapReceivedHead[];
}

export class IcapError extends Error {
  readonly code: IcapErrorCode;
  readonly rfcCode: RfcErrorCode | undefined;
  readonly status: number | undefined;
  readonly field: string | undefined;
  /** The complete final response head received before the failure, when there was one. */
  readonly head: IcapReceivedHead | undefined;
  /**
   * The heads the server sent right after a head that broke a rule (in the same read, or
   * completed within a short wait): often its real answer, after an interim or broken one. Only
   * ever read for a threat.
   */
  readonly stray: IcapReceivedHead[] | undefined;

  constructor(code: IcapErrorCode, message: string, options: IcapErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'IcapError';
    this.code = code;
    this.rfcCode = options.rfcCode ?? DEFAULT_RFC_CODE[code];
    this.status = options.status;
    this.field = options.field;
    this.head = options.head;
    this.stray = options.stray;
    Object.defineProperty(this, BRAND, { value: true });
  }

  static override [Symbol.hasInstance](value: unknown): boolean {
    return typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[BRAND] === true;
  }
}

export function isIcapError(value: unknown, code?: IcapErrorCode): value is IcapError {
  return value instanceof IcapError && (code === undefined || value.code === code);
}

/** Turns a socket-level error into an IcapError with the right code. */
export function fromSocketError(err: unknown, phase: 'connect' | 'io', target: string): IcapError {
  if (err instanceof IcapError) return err;
  const e = err as NodeJS.ErrnoException & { library?: string; reason?: string };
  const sys = e?.code ?? '';
  const msg = e?.message ?? String(err);
  if (sys === 'ECONNRESET' || sys === 'EPIPE') {
    return new IcapError(IcapErrorCodes.RESET, `ICAP server ${target} reset the connection (${sys})`, {
      cause: err,
    });
  }
  if (
    sys.startsWith('ERR_SSL') ||
    sys.startsWith('ERR_TLS') ||
    sys.includes('CERT') ||
    sys === 'DEPTH_ZERO_SELF_SIGNED_CERT' ||
    sys === 'SELF_SIGNED_CERT_IN_CHAIN' ||
    sys === 'ERR_TLS_CERT_ALTNAME_INVALID' ||
    e?.library === 'SSL routines'
  ) {
    return new IcapError(IcapErrorCodes.TLS, `TLS with ICAP server ${target} failed: ${msg}`, { cause: err });
  }
  if (phase === 'connect') {
    return new IcapError(IcapErrorCodes.CONNECT, `cannot connect to ICAP server ${target}: ${msg}`, {
      cause: err,
    });
  }
  return new IcapError(IcapErrorCodes.RESET, `connection to ICAP server ${target} failed: ${msg}`, {
    cause: err,
  });
}
