/**
 * The rules RFC 3507 sets on a final ICAP answer's head, checked when it arrives, and the
 * errors a Transaction reports about an answer (one that broke a rule, one that never came).
 */
import { IcapError, type IcapErrorCode, IcapErrorCodes, RfcErrorCodes } from '../errors.js';
import type { IcapRequestMethod } from '../protocol/encoder.js';
import type { EncapsulatedEntry, IcapResponseHead } from '../protocol/parser.js';
import type { TransactionRequest } from './transaction-types.js';

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
export function withReceivedHead(err: unknown, head: IcapResponseHead): unknown {
  if (err instanceof IcapError && err.head === undefined) {
    return new IcapError(err.code, err.message, {
      cause: err.cause,
      ...(err.rfcCode === undefined ? {} : { rfcCode: err.rfcCode }),
      ...(err.status === undefined ? {} : { status: err.status }),
      head: {
        status: head.status,
        reason: head.reason,
        headers: head.headers,
        rawHeaders: head.rawHeaders,
        httpResponse: head.httpResponse,
      },
    });
  }
  return err;
}

/** `err` as it is when an IcapError, else as an IcapError of `code` whose message starts with `what`. */
export function asIcapError(err: unknown, code: IcapErrorCode, what: string): IcapError {
  if (err instanceof IcapError) return err;
  return new IcapError(code, `${what}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
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
