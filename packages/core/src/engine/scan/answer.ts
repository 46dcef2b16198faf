import type { IcapResponse } from '../../client/transaction-types.js';
import { endToEndHeaders, type Headers, isSafeFieldValue, isToken } from '../../protocol/headers.js';
import { type HeadReading, UNREPAIRED_MESSAGE, unrepairedVerdict, verdictOfHead } from '../beyond-head.js';
import type { IcapRequestLog } from '../log.js';
import type { ResolvedProfile } from '../profile.js';
import type { ClientResponse } from '../respond.js';
import type { AttemptResult } from '../types.js';
import type { Verdict } from '../verdict/index.js';

/**
 * What an attempt reads of an ICAP answer besides its head's fields (exchange.ts): the verdict,
 * the body drained or relayed as a block page, the latency for the log. What the server named
 * outside the final head is read by ../beyond-head.ts.
 */

/** Largest ICAP block page relayed to the client. */
const MAX_RELAY_BODY = 1024 * 1024;
/**
 * A response body we do not need, after a verdict that blocks already, is read up to this size to
 * keep the connection; larger ones are dropped (one that may still name a threat is read to its
 * end: drainToEnd).
 */
const MAX_DRAIN = 64 * 1024;

/** ICAP's verdict on a REQMOD answer, or on the head of one that broke off (no request head then). */
export function verdictOf(
  p: ResolvedProfile,
  answer: Pick<IcapResponse, 'status' | 'reason' | 'headers' | 'httpResponse'>,
  httpRequest: IcapResponse['httpRequest'],
  fileName: string | undefined,
  sentHeaders?: Headers,
): Verdict {
  return verdictOfHead(readingOf(p, fileName, sentHeaders), answer, httpRequest);
}

/** How the profile reads a head (beyond-head.ts); `sentHeaders`, the request's own fields. */
export function readingOf(
  p: ResolvedProfile,
  fileName: string | undefined,
  sentHeaders?: Headers,
): HeadReading {
  return {
    vendor: p.vendor,
    options: { nsxStatusUrl: p.nsxStatusUrl, forwardLastlineHeaders: p.forwardLastlineHeaders, sentHeaders },
    fileName,
  };
}

export function fillVerdict(entry: IcapRequestLog, v: Verdict, vendor: string): void {
  if (v.reason !== undefined) entry.reason = v.reason;
  if (v.threat_id !== undefined) entry.threat_id = v.threat_id;
  if (v.violations.length > 0) entry.violations = v.violations;
  if (vendor === 'opswat' && v.opswat_log !== undefined) entry.opswat_log = v.opswat_log;
  if (vendor === 'nsx-defender' && v.nsx_defender_log !== undefined)
    entry.nsx_defender_log = v.nsx_defender_log;
}

/**
 * Reads and discards a response body we do not need once the verdict blocks (small ones keep the
 * connection alive). Never for an answer that may still name a threat after it: drainToEnd.
 */
export async function drain(res: IcapResponse): Promise<void> {
  const body = res.body;
  if (body === null) return;
  let n = 0;
  for await (const chunk of body as AsyncIterable<Buffer>) {
    n += chunk.length;
    if (n > MAX_DRAIN) {
      body.destroy();
      return;
    }
  }
}

/**
 * Reads and discards a response body to its end, however large (nothing is kept): what follows
 * it (its trailer, a second answer) is read for a threat only once it ends, and an answer whose
 * body is cut short names nothing. No byte limit: the attempt's signal (responseTimeout, a stall)
 * bounds it in time, and an answer that never ends fails as any other. `progress` is told each
 * chunk's length (the stall watch's progress).
 */
export async function drainToEnd(
  res: IcapResponse,
  progress: { received(bytes: number): void },
): Promise<void> {
  const body = res.body;
  if (body === null) return;
  for await (const chunk of body as AsyncIterable<Buffer>) progress.received(chunk.length);
}

/**
 * The exchange's latency for the log, once it is over. A response body we stopped reading
 * ourselves (drain and relay stop at their limits) ends the exchange with an abort of our own
 * making: the verdict read from the head stands; it is neither a server failure nor the client
 * going away.
 */
export async function latencyOf(res: IcapResponse, started: number): Promise<string> {
  if (res.body !== null && !res.body.readableEnded) {
    await res.done.catch(() => undefined);
    return String(Math.round(performance.now() - started));
  }
  return String(Math.round((await res.done).latencyMs));
}

/**
 * The ICAP server's own block response, relayed with a bounded body and only the fields a block
 * page needs (campaign-bl BL1): a scanner, if compromised, must not set policy on the
 * application's origin (a credential prompt, Clear-Site-Data, HSTS, NEL reporting, CORS, a
 * download, a front proxy's X-Accel-Redirect), nor run script there: the page goes out as text
 * (HTML or plain), sandboxed and never sniffed.
 */
export async function readRelay(res: IcapResponse): Promise<ClientResponse> {
  const http = res.httpResponse!;
  const chunks: Buffer[] = [];
  let n = 0;
  if (res.body !== null) {
    for await (const chunk of res.body as AsyncIterable<Buffer>) {
      n += chunk.length;
      if (n > MAX_RELAY_BODY) {
        res.body.destroy();
        break;
      }
      chunks.push(chunk);
    }
  }
  const body = n > MAX_RELAY_BODY ? Buffer.from('Blocked\n') : Buffer.concat(chunks, n);
  // A blocked upload never looks accepted: a 2xx (or odd) page goes out as 403; a redirect stays.
  const status = http.status >= 300 && http.status <= 599 ? http.status : 403;
  let type = 'text/plain; charset=utf-8';
  const headers: Array<[string, string]> = [];
  for (const [name, value] of endToEndHeaders(http.headers)) {
    const key = name.toLowerCase();
    if (!RELAY_KEEP.has(key) || !isToken(name) || !sendable(value)) continue;
    if (key === 'content-type') {
      if (TEXT_PAGE.test(value)) type = value;
    } else if (key !== 'location' || (status >= 300 && status < 400)) headers.push([name, value]);
  }
  headers.push(
    ['Content-Type', type],
    ['Content-Length', String(body.length)],
    ['Cache-Control', 'no-store'],
    ['X-Content-Type-Options', 'nosniff'],
    ['Content-Security-Policy', "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:"],
  );
  return { status, headers, body };
}

/** The fields of a relayed block page that go out (Location with a redirect only). */
const RELAY_KEEP = new Set(['content-type', 'content-language', 'retry-after', 'location']);
/** A Content-Type kept as the server sent it: HTML or plain text (anything else goes out as text/plain). */
const TEXT_PAGE = /^\s*text\/(?:html|plain)\s*(?:;|$)/i;

/** A value Node sends as it is: HTAB, visible ASCII and bytes 0x80-0xFF (others make it throw, BL2). */
function sendable(v: string): boolean {
  for (let i = 0; i < v.length; i++) {
    const c = v.charCodeAt(i);
    if (c === 0x09) continue;
    if (c < 0x20 || c === 0x7f || c > 0xff) return false;
  }
  return isSafeFieldValue(v);
}

/**
 * An answer saying the body could not be scanned (an error verdict marked `unscannable`: an
 * encrypted archive, a decode error, Symantec's 539, whatever the status) is a statement about
 * what the HTTP client sent, not a failure of the server: the request is blocked as for a
 * threat (403, ICAP_BLOCKED; the scan adds UNSCANNABLE to the record's significance). It is
 * never retried elsewhere, never counts against the server's health and never takes the
 * failure action, so no client can choose fail-open (or get a server suspended) by uploading
 * what cannot be scanned.
 */
export function unscannableBlock(
  entry: IcapRequestLog,
  res: IcapResponse | null,
  verdict: Verdict,
): AttemptResult {
  entry.action = 'ICAP_BLOCKED';
  entry.http_response_code = 403;
  return { type: 'blocked', res, verdict, relay: undefined };
}

/** A repair that returned the original body unchanged: the threats it named stand (a block). */
export function unrepairedBlock(
  entry: IcapRequestLog,
  res: IcapResponse,
  verdict: Verdict,
  vendor: ResolvedProfile['vendor'],
): AttemptResult {
  const blocked = unrepairedVerdict(verdict);
  fillVerdict(entry, blocked, vendor);
  entry.action = 'ICAP_BLOCKED';
  entry.http_response_code = 403;
  entry.error_message = UNREPAIRED_MESSAGE;
  return { type: 'blocked', res, verdict: blocked, relay: undefined };
}
