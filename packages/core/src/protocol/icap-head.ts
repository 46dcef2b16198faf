/** An ICAP message's own head (start line and fields) read strictly (parser.ts), and the rules on its status. */
import { IcapError, IcapErrorCodes, RfcErrorCodes } from '../errors.js';
import { parseEncapsulated } from './encapsulated.js';
import { parseHeaderBlock } from './headers.js';
import type { BodyKind, IcapHead, IcapRequestHead, IcapResponseHead } from './parser-types.js';

/**
 * An interim status (RFC 9110 §15.2, whose codes ICAP's follow): any 1xx but 101 (Switching
 * Protocols, which ICAP has no use for: a final answer). The final answer comes after it.
 */
export function isInterim(status: number): boolean {
  return status < 200 && status !== 101;
}

/**
 * The head in `block` (start line and fields, its empty line included) of an ICAP `kind`
 * (`what` names it in errors). Throws an IcapError for a head that breaks a rule.
 */
export function parseIcapHead(kind: IcapHead['kind'], block: Buffer, what: string): IcapHead {
  const { startLine, headers, rawHeaders } = parseHeaderBlock(block, what);
  const encapsulatedValue = headers.get('encapsulated');
  const encapsulated = encapsulatedValue === undefined ? null : parseEncapsulated(encapsulatedValue);
  const last = encapsulated?.[encapsulated.length - 1];
  const body = last === undefined || last.name === 'null-body' ? null : (last.name as BodyKind);
  if (kind === 'response') {
    const m = /^(ICAP\/\d\.\d) +(\d{3})(?: (.*))?$/.exec(startLine);
    if (m === null) {
      throw protocol(`invalid ICAP status line ${JSON.stringify(startLine.slice(0, 80))}`);
    }
    const status = Number(m[2]);
    if (status < 100 || status > 599) {
      throw new IcapError(IcapErrorCodes.PROTOCOL, `unknown ICAP status code ${status}`, {
        rfcCode: RfcErrorCodes.ICAP_SERVER_UNKNOWN_CODE,
      });
    }
    const head: IcapResponseHead = {
      kind: 'response',
      version: m[1]!,
      status,
      reason: m[3] ?? '',
      headers,
      rawHeaders,
      encapsulated,
      httpRequest: null,
      httpResponse: null,
      body,
    };
    return head;
  }
  const m = /^([!#$%&'*+\-.^_`|~0-9A-Za-z]+) +(\S+) +(ICAP\/\d\.\d)$/.exec(startLine);
  if (m === null) throw protocol(`invalid ICAP request line ${JSON.stringify(startLine.slice(0, 80))}`);
  const head: IcapRequestHead = {
    kind: 'request',
    method: m[1]!,
    uri: m[2]!,
    version: m[3]!,
    headers,
    rawHeaders,
    encapsulated,
    httpRequest: null,
    httpResponse: null,
    body,
  };
  return head;
}

/**
 * The error of an interim or 204 response that announces a body (thrown once its encapsulated
 * heads are read: a block page there blocks), or null.
 */
export function bodylessError(head: IcapResponseHead): IcapError | null {
  const status = head.status;
  if ((!isInterim(status) && status !== 204) || head.body === null) return null;
  return protocol(
    `ICAP ${status} response must not carry a body (Encapsulated: ${head.headers.get('encapsulated')})`,
  );
}

function protocol(message: string): IcapError {
  return new IcapError(IcapErrorCodes.PROTOCOL, message);
}
