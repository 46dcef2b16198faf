import type { IcapResponse } from '../../client/transaction-types.js';
import { IcapError, IcapErrorCodes } from '../../errors.js';
import type { Headers } from '../../protocol/headers.js';
import { namesThreat } from '../beyond-head.js';
import { AdaptedBody, type BodyStore } from '../body.js';
import type { IcapRequestLog } from '../log.js';
import type { ResolvedProfile } from '../profile.js';
import type { HttpRequestFacts } from '../request.js';
import type { AttemptResult } from '../types.js';
import type { Verdict } from '../verdict/index.js';
import { fillVerdict, unrepairedBlock } from './answer.js';
import { bodyComplete } from './intake.js';
import { sameRequestHead } from './returned-head.js';

/**
 * An answer that returns the request (an adapted verdict: a 200/201 with a request head, an echo,
 * a modification or a repair) read to its end by an attempt (exchange.ts), and judged before
 * anything of it can reach the application:
 * - a repair (the head named a threat) whose returned body cannot be had blocks: read error,
 *   reset, broken framing, a stall or responseTimeout, the returned body or the upload past
 *   bufferSize. The threat named is a verdict: never the failure action, never retried elsewhere
 *   (campaign-bs BS1);
 * - a returned body cut short blocks: its head declares a Content-Length the body does not have,
 *   or it is a strict prefix of the original under the head sent (or, the original streamed and
 *   not kept, shorter than it under the head sent: it cannot be told from a prefix). c-icap's
 *   virus_scan with data trickling (SendPercentData) ends its echo so when it finds a virus
 *   after it began sending: what it sent is an unscanned prefix, never a modification
 *   (campaign-bs BS6).
 */

/** What reading a returned body needs of the exchange. */
export interface ReturnedAttempt {
  readonly profile: ResolvedProfile;
  /** The request as it was sent to ICAP (a returned head is compared with it). */
  readonly facts: HttpRequestFacts;
  /** The original body (null: none). */
  readonly store: BodyStore | null;
  /** A threat named after the answer's head (trailer, a second answer), as a block; else null. */
  blockedAfterHead(res: IcapResponse, entry: IcapRequestLog, started: number): Promise<AttemptResult | null>;
}

/** The attempt's watch: told each byte received, stopped once the answer is read. */
interface Watch {
  received(bytes: number): void;
  stop(): void;
}

/** Why a returned body cut short blocks (the log record's error_message). */
export const PARTIAL_MESSAGE = 'the ICAP server returned the request with a partial body';

/** Reads and judges the body an adapted answer returns: the adapted result, or a block. */
export async function readReturned(
  a: ReturnedAttempt,
  watch: Watch,
  res: IcapResponse,
  verdict: Verdict,
  entry: IcapRequestLog,
  started: number,
): Promise<AttemptResult> {
  const p = a.profile;
  const adapted = new AdaptedBody(a.store, p.bufferSize, {
    memoryThreshold: p.memoryThreshold,
    spoolDir: p.spoolDir,
  });
  try {
    // The returned body as the transaction reads it (no Readable), when it has one;
    // nothing to wait for when it came whole with the head.
    const reading = adapted.readAnswer(
      res,
      (bytes) => watch.received(bytes),
      () =>
        new IcapError(
          IcapErrorCodes.BODY_TOO_LARGE,
          `the body returned by the ICAP server is larger than bufferSize (${p.bufferSize} bytes)`,
        ),
    );
    if (reading !== undefined) {
      try {
        await reading;
      } catch (err) {
        // Over bufferSize: the rest of the answer was still read (and discarded) to its
        // end, so a threat named after the body blocks; else the over-size failure stands.
        // Broken off in its trailer: the fields that came name a threat just as well.
        const late = err instanceof IcapError ? await a.blockedAfterHead(res, entry, started) : null;
        if (late === null) throw err;
        adapted.dispose();
        return late;
      }
    }
    entry.latency = String(Math.round((await res.done).latencyMs));
    watch.stop();
    const late = await a.blockedAfterHead(res, entry, started);
    if (late !== null) {
      adapted.dispose();
      return late;
    }
    // Whether the returned body equals the original can only be said once the original is complete.
    await bodyComplete(a.store, p.bufferSize);
    // A threat reported repaired, and the body handed back as it was: nothing was repaired.
    if (verdict.repair === true && (await adapted.identical())) {
      adapted.dispose();
      return unrepairedBlock(entry, res, verdict, p.vendor);
    }
    const partial = await partialReturn(a, res, adapted);
    if (partial !== null) {
      adapted.dispose();
      return partialBlock(entry, res, verdict, p.vendor, partial);
    }
  } catch (err) {
    // What was stored of the returned body (in memory or a temp file) goes with the attempt.
    adapted.dispose();
    // A threat was named: the returned body that was to replace the upload cannot be had, so
    // the threat stands (a block), whatever broke and whoever broke it.
    if (namesThreat(verdict)) return uncollectedBlock(entry, res, verdict, p.vendor, err, started);
    throw err;
  }
  return { type: 'adapted', res, verdict, adapted };
}

/**
 * Why a returned body is cut short, else null: it is not the original byte for byte and its
 * head declares another length (without a Transfer-Encoding), or, under the head sent, it is a
 * strict prefix of the original (or cannot be told from one).
 */
async function partialReturn(
  a: ReturnedAttempt,
  res: IcapResponse,
  adapted: AdaptedBody,
): Promise<string | null> {
  const head = res.httpRequest;
  if (head === null) return null;
  const length = adapted.length;
  // With a body: a null-body is the server saying there is none (what rewriteHead then says).
  // (The original byte for byte under a wrong length is an echo: the original passes.)
  const declared =
    withBody(res) && !head.headers.has('transfer-encoding') ? otherLength(head.headers, length) : null;
  if (declared !== null && !(await adapted.identical()))
    return `${PARTIAL_MESSAGE}: its head declares Content-Length ${declared.slice(0, 20)}, the body has ${length} bytes`;
  const store = a.store;
  if (store === null || length >= store.received) return null;
  if (!sameRequestHead(head, a.facts, a.profile.absoluteUri)) return null;
  const kept = store.complete;
  // Streamed and not kept, the original cannot be compared: a shorter body under the head sent
  // cannot be told from c-icap's cut echo of a chunked upload, whose head declares no length;
  // one whose head declares the length it has is a modification (a cut echo of a body sent with
  // a length keeps that length: the check above).
  if (!kept && head.headers.has('content-length')) return null;
  if (!(await adapted.mayBePrefix())) return null;
  return `${PARTIAL_MESSAGE}: ${length} of the ${store.received} bytes sent, under the head sent (${kept ? 'their first bytes' : 'the original was not kept to compare'})`;
}

/** Whether the answer encapsulates a request body. */
function withBody(res: IcapResponse): boolean {
  const entries = res.encapsulated;
  if (entries === null) return false;
  for (const e of entries) if (e.name === 'req-body') return true;
  return false;
}

/** The first Content-Length value (of any field, in a comma list too) that is not `length`; else null. */
function otherLength(headers: Headers, length: number): string | null {
  const expected = String(length);
  for (const value of headers.getAll('content-length')) {
    for (const token of value.split(',')) {
      const declared = token.trim();
      if (declared !== expected) return declared;
    }
  }
  return null;
}

/** A returned body cut short: never a modification (no threat need be named). */
function partialBlock(
  entry: IcapRequestLog,
  res: IcapResponse,
  verdict: Verdict,
  vendor: ResolvedProfile['vendor'],
  why: string,
): AttemptResult {
  const blocked: Verdict = { ...verdict, kind: 'blocked', repair: false };
  blocked.reason = verdict.reason ?? 'Partial answer';
  fillVerdict(entry, blocked, vendor);
  entry.action = 'ICAP_BLOCKED';
  entry.http_response_code = 403;
  entry.error_message = why;
  return { type: 'blocked', res, verdict: blocked, relay: undefined };
}

/** A threat named, and the returned body could not be had (`err`): the threat stands. */
function uncollectedBlock(
  entry: IcapRequestLog,
  res: IcapResponse,
  verdict: Verdict,
  vendor: ResolvedProfile['vendor'],
  err: unknown,
  started: number,
): AttemptResult {
  res.done.catch(() => undefined);
  const blocked = unrepairedBlock(entry, res, verdict, vendor);
  if (entry.latency === '0') entry.latency = String(Math.round(performance.now() - started));
  const e = err instanceof IcapError ? err : undefined;
  if (e !== undefined) entry.error_code = e.code;
  entry.error_message = `the ICAP server named a threat and its returned body could not be had: ${e?.message ?? String(err)}`;
  return blocked;
}
