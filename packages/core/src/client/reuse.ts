/**
 * Whether the connection an answer came on may serve another exchange. ICAP answers carry no
 * request id: a server that sends a second, late answer (a stray 204 after its block) would
 * have it read as the verdict of the next exchange on the connection, and that exchange's own
 * verdict thrown away as idle junk. So a connection is kept only after an answer that lets the
 * message through by its shape and names nothing the verdict could read as a threat or a
 * refusal, anywhere it is read: the ICAP head, the encapsulated HTTP heads, a trailer, a 100
 * Continue. The reading here is the verdict's (engine/verdict/generic.ts) made wider, never
 * narrower: every value of a repeated field, and fields that block by their presence. A
 * connection closed too often costs a handshake; one kept after a block can cost the next
 * upload's verdict.
 */
import type { IcapReceivedHead } from '../errors.js';
import type { Headers } from '../protocol/headers.js';
import { namesBlocked, pageBlocks } from '../protocol/headers.js';
import type { IcapResponseHead } from '../protocol/parser.js';
import { trailerHead } from '../protocol/salvage.js';
import { PRESENCE_FIELDS } from '../protocol/threat-fields.js';
import type { TransactionRequest } from './transaction-types.js';

/**
 * Fields whose clean values are known: any other value closes the connection (their names are
 * protocol/threat-fields.ts VALUE_FIELD_NAMES; the fields blocking by presence, PRESENCE_FIELDS).
 */
const VALUE_FIELDS: ReadonlyArray<readonly [string, (v: string) => boolean]> = [
  ['x-virus-id', (v) => v === '' || v === 'no threats'],
  ['x-virus-name', (v) => v === '' || v === 'no threats'],
  // Folded lines read as one value: `0` and a violation group after it is not clean.
  ['x-violations-found', (v) => v === '' || v === '0'],
  ['x-fsecure-scan-result', (v) => v === 'clean'],
  ['x-response-info', (v) => !namesBlocked(v)],
];

/** Statuses that pass a message or go on with it; any other may be some vendor's block. */
const PASSING_STATUSES: ReadonlySet<number> = new Set([100, 200, 201, 204]);

/** More than one Encapsulated field, or one naming an encapsulated response. */
function announcesPage(h: Headers): boolean {
  const values = h.getAll('encapsulated');
  return values.length > 1 || values.some((v) => /res-hdr/i.test(v));
}

const PRESENCE: ReadonlySet<string> = new Set(PRESENCE_FIELDS);
const VALUES: ReadonlyMap<string, (v: string) => boolean> = new Map(VALUE_FIELDS);

/** A field that names a threat or a refusal: one of PRESENCE_FIELDS, or a value not known clean. */
function naming(key: string, value: string): boolean {
  if (PRESENCE.has(key)) return true;
  const clean = VALUES.get(key);
  return clean !== undefined && !clean(value.trim().toLowerCase());
}

/** No field of `h` names a threat or a refusal (see the file's comment); one pass over the fields. */
function namesNothing(h: Headers): boolean {
  return !h.some(naming);
}

/**
 * Whether a head read for a threat only (what followed an answer or a failure) may name one or a
 * refusal, by the reading above: a head for which this is false never blocks, for any vendor, so
 * it can be dropped unread (client/stray.ts).
 */
export function mayName(h: IcapReceivedHead): boolean {
  return (
    // A status some vendor's reading blocks by (ESET's 405, Symantec's 539; campaign-at AT1b).
    (h.status !== 0 && !PASSING_STATUSES.has(h.status)) ||
    !namesNothing(h.headers) ||
    announcesPage(h.headers) ||
    h.httpResponse != null ||
    (h.httpRequest != null && !namesNothing(h.httpRequest.headers))
  );
}

/**
 * Whether the connection may be kept after this answer, as far as the request and the answer
 * go: not when either asked to close it, and only after an answer that lets the message through
 * by its shape (OPTIONS 200; a 204; a 200/201 returning the message, which for a REQMOD means no
 * encapsulated response, for a RESPMOD a response the verdict does not read as a block page)
 * that names nothing (`trailer`: the answer's trailer section; `interim`: the 100 Continue heads
 * with fields before it, read as one, or null). After a block or an error the connection is
 * closed (c-icap closes it after a block page too).
 */
export function keepsConnection(
  req: TransactionRequest,
  head: IcapResponseHead,
  trailer: string | null,
  interim: IcapReceivedHead | null,
): boolean {
  const h = head.headers;
  if (/\bclose\b/i.test(h.get('connection') ?? '')) return false;
  if (req.closeAsked ?? req.head.includes('\r\nConnection: close\r\n')) return false;
  // An answer announcing an ICAP trailer (parser.ts): where its message ends is the server's word.
  if (h.has('trailer')) return false;
  const method = req.method;
  const status = head.status;
  if (method === 'OPTIONS') return status === 200;
  const res = head.httpResponse;
  if (status !== 204 && status !== 200 && status !== 201) return false;
  if (res !== null && (status === 204 || method !== 'RESPMOD')) return false;
  // A RESPMOD response the verdict reads as a block page.
  if (res !== null && pageBlocks(res)) return false;
  // Encapsulated heads the parser did not read (a second Encapsulated field naming res-hdr) are
  // read by the verdict as a block page (campaign-aq AQ1).
  if (!namesNothing(h) || (res === null && announcesPage(h))) return false;
  // A 100 Continue's fields, and encapsulated heads at all (no server sends them on a 100).
  if (
    interim !== null &&
    (!namesNothing(interim.headers) || interim.httpResponse != null || interim.httpRequest != null)
  )
    return false;
  // The trailer read as the engine reads it for a threat (a head of its own, with the answer's status).
  if (trailer !== null) {
    const t = trailerHead(status, head.reason, trailer).headers;
    if (!namesNothing(t) || t.has('encapsulated')) return false;
  }
  if (res !== null && !namesNothing(res.headers)) return false;
  return head.httpRequest === null || namesNothing(head.httpRequest.headers);
}
