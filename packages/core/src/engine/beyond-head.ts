import type { IcapResponse } from '../client/transaction-types.js';
import { IcapError, type IcapReceivedHead } from '../errors.js';
import { readVerdict, type Verdict, type VerdictOptions } from './verdict/index.js';
import type { Vendor } from './verdict/vendors.js';

/*
 * A threat verdict is never lost: the rules of an exchange beyond what its final head says, in
 * one place for every consumer of the client (the engine's attempt, scan/exchange.ts; the
 * `icapkit scan` command). The final head is read by readVerdict (verdict/index.ts). Besides it, a
 * threat can be named
 * - in a 100 Continue the server sent before its final answer (`IcapResponse.continueHead`);
 * - in the head of an answer that then broke a rule or broke off (`IcapError.head`, its
 *   encapsulated request head salvaged when it could be read), and in what the server sent
 *   right after a head that broke a rule (`IcapError.stray`: its real answer after it);
 * - after the answer's head: its trailer fields, and a second answer the server sent after it
 *   on the connection (`TransactionSummary.trailer` / `.stray`), once the answer was read to
 *   its end;
 * and a repair that handed the original body back byte for byte repaired nothing.
 * Each of these is read only ever to block: what comes outside the final head never passes
 * anything. An answer saying the body could not be scanned (unscannable) blocks as a threat
 * does: it is about the file, not a failure of the server.
 */

/** How to read a head: the vendor's conventions and the options of readVerdict. */
export interface HeadReading {
  vendor: Vendor;
  options: VerdictOptions;
  /** The scanned file's name as sent (for violations built without one). */
  fileName?: string | undefined;
}

/** A head of an ICAP REQMOD answer as readVerdict reads it. */
type HeadFields = Pick<IcapResponse, 'status' | 'reason' | 'headers' | 'httpResponse'>;

/** ICAP's verdict on a REQMOD answer's head (or on the head of one that broke off). */
export function verdictOfHead(
  reading: HeadReading,
  head: HeadFields,
  httpRequest: IcapResponse['httpRequest'],
): Verdict {
  return readVerdict(
    reading.vendor,
    {
      method: 'REQMOD',
      fileName: reading.fileName,
      httpRequest,
      status: head.status,
      reasonPhrase: head.reason,
      headers: head.headers,
      httpResponse: head.httpResponse,
    },
    reading.options,
  );
}

/** Whether a verdict read outside the final head blocks: a threat, or a file that could not be scanned. */
export function blocksOutsideFinalHead(v: Verdict): boolean {
  return v.kind === 'blocked' || (v.kind === 'error' && v.unscannable);
}

/**
 * The verdict of a head read for a threat only (a 100 Continue, a broken answer's head, a
 * trailer, a second answer), when it blocks; else null. Its encapsulated request head counts
 * too when one was read.
 */
export function threatInHead(reading: HeadReading, head: IcapReceivedHead): Verdict | null {
  const v = verdictOfHead(reading, head, head.httpRequest ?? null);
  if (blocksOutsideFinalHead(v)) return v;
  // A repair whose answer did not come whole (or came after the answer): the body it returns
  // is not to be had, and the threats it names stand (campaign-bs BS1).
  return v.kind === 'adapted' && namesThreat(v) ? unrepairedVerdict(v) : null;
}

/** Whether a verdict names a threat (an adapted one: a repair, a threat id, a violation). */
export function namesThreat(v: Verdict): boolean {
  return v.repair === true || v.threat_id !== undefined || v.violations.length > 0;
}

/**
 * The first threat named in what a failed exchange's error carries, as the blocking verdict and
 * the head that named it: the head received (refused or cut off, any 100 Continue before it
 * read with it), then what the server sent right after a head that broke a rule (`stray`: its
 * real answer after a broken one); else null.
 */
export function threatInError(
  reading: HeadReading,
  err: IcapError,
): { verdict: Verdict; head: IcapReceivedHead } | null {
  const heads = err.head === undefined ? (err.stray ?? NONE) : [err.head, ...(err.stray ?? NONE)];
  for (const head of heads) {
    const verdict = threatInHead(reading, head);
    if (verdict !== null) return { verdict, head };
  }
  return null;
}

/**
 * What the server sent after the answer's head that may name a threat, once the exchange is
 * over: the trailer fields of its body, then what followed the answer on the connection (a
 * second answer). When the exchange failed, the trailer fields received before it broke off
 * (the error's `head`, client/transaction.ts), if it broke off in them, and what followed the
 * failure (the error's `stray`). Empty when there was none of these.
 */
export async function namedAfterHead(res: IcapResponse): Promise<IcapReceivedHead[]> {
  const s = await res.done.catch((err: unknown) => (err instanceof IcapError ? err : undefined));
  // Failed: the trailer fields received (its head), then what the server sent after the
  // failure (its real answer after a broken body, client/transaction.ts).
  if (s instanceof IcapError) return [...(s.head === undefined ? NONE : [s.head]), ...(s.stray ?? NONE)];
  if (s === undefined || (s.trailer === undefined && s.stray === undefined)) return NONE;
  // (Not push(...stray): the heads may be more than a call's arguments can be.)
  return [...(s.trailer === undefined ? NONE : [s.trailer]), ...(s.stray ?? NONE)];
}

const NONE: IcapReceivedHead[] = [];

/**
 * The first threat named after the answer's head (namedAfterHead), as the blocking verdict and
 * the head that named it; else null. Ask it once the answer's body was read to its end.
 */
export async function threatAfterHead(
  reading: HeadReading,
  res: IcapResponse,
): Promise<{ verdict: Verdict; head: IcapReceivedHead } | null> {
  for (const head of await namedAfterHead(res)) {
    const verdict = threatInHead(reading, head);
    if (verdict !== null) return { verdict, head };
  }
  return null;
}

/** Why a repair that returned the body unchanged blocks (the log record's error_message). */
export const UNREPAIRED_MESSAGE =
  'the ICAP server reported the threat repaired and returned the body unchanged';

/**
 * A threat reported repaired whose returned body is the original byte for byte: nothing was
 * repaired, and the threats it names stand. The blocking verdict it becomes.
 */
export function unrepairedVerdict(v: Verdict): Verdict {
  const blocked: Verdict = { ...v, kind: 'blocked', repair: false };
  blocked.reason = v.reason ?? 'Infected';
  return blocked;
}
