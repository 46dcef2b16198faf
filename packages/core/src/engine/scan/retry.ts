import { IcapError, type IcapErrorCode, IcapErrorCodes } from '../../errors.js';
import { observe } from '../log.js';
import type { ServerHandle, ServerTransition } from '../pool-group.js';
import type { PinoLike } from '../profile.js';
import { serverStateMessage } from '../telemetry.js';
import type { AttemptWatch } from './attempt-watch.js';

/**
 * The retry rule: what one failed ICAP attempt means for its server's health, and whether the
 * request goes on to the next healthy server or pool.
 *
 * - A failure of the server (cannot connect, TLS, reset, close, garbage, a 5xx answer,
 *   ioTimeout, a stall, OPTIONS not answered in time) counts against its health and the
 *   request is retried on the next server, once per server. An ICAP 4xx is a refusal of the
 *   request (below); an answer saying the body could not be scanned is no failure at all (a
 *   block, exchange.ts).
 * - Of those, the failures the HTTP client's content can provoke (a 5xx answer, a stall or
 *   ioTimeout while the server works on the body, the responseTimeout below) are `provokable`:
 *   they never suspend a server by themselves, only once a health check of the server (a
 *   REQMOD of a fixed harmless body) fails too (pool-group.ts), so a client cannot get a healthy server suspended (and every other
 *   request sent to the failure action) by uploading what is slow or hard to scan.
 * - All connections busy for queueTimeout (saturated; the wait is bounded only when another
 *   server is available) is retried elsewhere but is no failure of the server. When HTTP
 *   clients still sending their bodies held connections of the server during the wait, it
 *   never takes the failure action either (CLIENT_PACED below).
 * - A health fault of an attempt the HTTP client fed as it sent is provokable (the server may
 *   have given up on the client's pace); the exchange sends the body once more, whole, once
 *   it has arrived (exchange.ts). One while a slow client was still sending never takes the
 *   failure action.
 * - The request's own responseTimeout ends the request (no time is left to try another
 *   server); it counts against the server when the server was the one being waited for.
 * - Anything the HTTP client caused (it went away, its body is too large or stalled) is
 *   neither.
 *
 * The caller retries only while the body is still held from its first byte (always in
 * Allow: 204 mode; in streaming mode until the server asked for more than the preview).
 */

/** Errors that say something about the server: they count against its health. */
export const HEALTH_FAULTS: ReadonlySet<IcapErrorCode> = new Set<IcapErrorCode>([
  IcapErrorCodes.CONNECT,
  IcapErrorCodes.CONNECT_TIMEOUT,
  IcapErrorCodes.TLS,
  IcapErrorCodes.RESET,
  IcapErrorCodes.CLOSED,
  IcapErrorCodes.PROTOCOL,
  IcapErrorCodes.HEADERS_TOO_LARGE,
  IcapErrorCodes.BODY_TOO_LARGE,
  IcapErrorCodes.IO_TIMEOUT,
  IcapErrorCodes.SERVER_STATUS,
  IcapErrorCodes.METHOD_NOT_SUPPORTED,
  IcapErrorCodes.STALLED,
  // Only seen with the request still running: its OPTIONS were not answered in time.
  IcapErrorCodes.TIMEOUT,
]);

/**
 * Health faults the HTTP client's content can provoke (see `provokable`): the server went quiet
 * (ioTimeout, a stall) once it had the request (not while connecting or fetching OPTIONS); a
 * 5xx answer always (it answered the request). A dead server fails its health check as well; a
 * server slow on one upload, or failing on one file, answers it.
 */
const QUIET_FAULTS: ReadonlySet<IcapErrorCode> = new Set<IcapErrorCode>([
  IcapErrorCodes.IO_TIMEOUT,
  IcapErrorCodes.STALLED,
]);

/** Failures before a request could go out on a connection. */
const CONNECT_PHASE: ReadonlySet<IcapErrorCode> = new Set<IcapErrorCode>([
  IcapErrorCodes.CONNECT,
  IcapErrorCodes.CONNECT_TIMEOUT,
  IcapErrorCodes.TLS,
]);

export interface FailureClass {
  /** Counts against the server's health. */
  health: boolean;
  /**
   * The HTTP client's content may have caused it: it counts, but the server is suspended for
   * it only when a health check (no client content in it) fails too (ServerHandle.failed).
   */
  provokable: boolean;
  /** The request may go on to the next server (if its body is still held). */
  retry: boolean;
}

export function classifyFailure(
  error: IcapError,
  requestSignal: AbortSignal,
  attempt: { readonly waitingForServer: boolean; readonly bodyOpened: boolean },
  /** The HTTP client fed the attempt as it sent (its pace may explain the failure). */
  clientPaced: boolean,
  /** The request has no body: it went out once it had its connection (no body to open). */
  bodyless = false,
): FailureClass {
  // A request without a body (a rule scans its head) went out on its connection: what went
  // wrong from then on may be what its head carries, as for a body.
  const sent = attempt.bodyOpened || (bodyless && !CONNECT_PHASE.has(error.code));
  if (requestSignal.aborted) {
    const reason = requestSignal.reason;
    const timedOut = reason instanceof IcapError && reason.code === IcapErrorCodes.TIMEOUT;
    // A scan that outlasts responseTimeout may be the content's doing (a slow file).
    return { health: timedOut && attempt.waitingForServer, provokable: sent, retry: false };
  }
  if (HEALTH_FAULTS.has(error.code)) {
    // Or anything that broke while the server worked on what it was sent (its turn): a
    // scanning process that crashed on the file (a reset, a close), an answer it garbled, a
    // CDR rewrite that never ends (a decompression bomb unpacked). A dead or broken server
    // fails its health check as well.
    const provokable =
      error.code === IcapErrorCodes.SERVER_STATUS ||
      (sent && (QUIET_FAULTS.has(error.code) || clientPaced || attempt.waitingForServer));
    return { health: true, provokable, retry: true };
  }
  if (error.code === IcapErrorCodes.SATURATED) return { health: false, provokable: false, retry: true };
  return { health: false, provokable: false, retry: false };
}

/** A server's health transition in the profile's logger: a warning when it leaves `up`, info otherwise. */
export function reportTransition(
  logger: PinoLike | undefined,
  profile: string,
  server: ServerHandle,
  change: ServerTransition,
): void {
  if (logger === undefined) return;
  const record = { icapkit: 'server-state', ...serverStateMessage(profile, server, change) };
  const msg = `icapkit: ICAP server ${server.server.url} ${change.from} -> ${change.to}`;
  // A logger that throws (or rejects) does not change the server's health.
  observe(
    () => (change.to === 'suspended' ? logger.warn(record, msg) : logger.info(record, msg)),
    undefined,
    '',
  );
}

/**
 * Failures of the ICAP side, the only errors the failure action applies to (an allow-list):
 * anything else (the client's doing, a local failure, an unexpected exception) fails closed.
 */
const ICAP_SIDE_FAILURES = new Set<IcapErrorCode>([
  // what counts against a server's health (above), and besides:
  ...HEALTH_FAULTS,
  IcapErrorCodes.SATURATED,
  IcapErrorCodes.NO_SERVER,
  IcapErrorCodes.CLOSED_CLIENT,
]);

/**
 * ICAP 4xx answers to a REQMOD: the server refused what it was sent, which carries what the
 * HTTP client chose (its size, its headers). Never a reason to pass the request unscanned.
 */
const REQMOD_REFUSALS = new WeakSet<IcapError>();

/** Marks an ICAP 4xx answer as a refusal of the request (see REQMOD_REFUSALS). */
export function markRefusal(error: IcapError): void {
  REQMOD_REFUSALS.add(error);
}

/** Whether the ICAP server refused the request itself (an ICAP 4xx answer). */
export function isRefusal(error: IcapError): boolean {
  return REQMOD_REFUSALS.has(error);
}

/**
 * Failures the HTTP clients' pace led to (exchange.ts), never the failure action:
 * - a wait for a connection that ended without one while HTTP clients still sending their
 *   bodies held connections of the server ({@link clientHeld}): busy, not broken. A client
 *   could otherwise hold every connection with uploads it stops sending once their exchange
 *   began, and have its next upload (or anyone's) wait until responseTimeout and pass unscanned;
 * - an attempt that failed while a slow HTTP client was still sending the body
 *   ({@link clientTurn}): the server may have given up on a slow upload (an idle or
 *   transaction time limit of its own), and a client that pauses or trickles long enough
 *   would otherwise choose the failure action for its own upload.
 */
const CLIENT_PACED = new WeakSet<IcapError>();

/**
 * Failures the upload's content may have provoked (a 5xx, a slow scan, a dropped connection:
 * `provokable`) on a server that then answered its health check: the scanner works, what the
 * client uploaded made it fail (a crafted archive, a decompression bomb, a file that crashes a
 * scanning process). Never the failure action, or a client would choose fail-open by uploading
 * what its scanner chokes on (exchange.ts).
 */
const CONTENT_PROVOKED = new WeakSet<IcapError>();

/**
 * Marks `error` as provoked by the upload: `server` answered its health check afterwards
 * (`answered`), or went down on the upload (`went-down`, see `judged`).
 */
export function contentProvoked(
  error: IcapError,
  server: string,
  how: 'answered' | 'went-down' = 'answered',
): IcapError {
  // The parts of a form share one timeout's error: said once.
  if (CONTENT_PROVOKED.has(error)) return error;
  error.message +=
    how === 'answered'
      ? ` (ICAP server ${server} answered its health check afterwards: the upload itself made the scan fail)`
      : ` (ICAP server ${server} failed on the upload, then accepted no connection for its health check: the upload may have taken it down)`;
  CONTENT_PROVOKED.add(error);
  return error;
}

/**
 * The request's last failure, judged: under fail-open, when an attempt's failure was one the
 * upload may have provoked, or a wait for a connection that the server's busy connections
 * never freed (they may be held by scans other uploads made slow), each such server's health
 * check (health-check.ts, on a connection of its own; an answer from the last second will do,
 * a failed check only if it ended after now: one under way is joined) decides:
 * - one that answers it works: the upload made the scan fail, and the error is
 *   {@link contentProvoked} (503, never fail-open);
 * - one that accepts no connection for its check (refused, or not accepted in time) went down
 *   after failing on the upload: a scanner daemon that crashed on the file (or on another
 *   upload sent with it, so that this one's check could not be made). {@link contentProvoked}
 *   too: the outage that follows is one (a later request meets a server that is down before
 *   anything of it was sent, and the failure action applies), but the uploads it was failing
 *   on never pass;
 * - only if every one of them fails the check otherwise (hung, or failing every REQMOD, the
 *   check included) may the failure action apply.
 * Under fail-closed nothing is checked (503 either way).
 */
export async function judged(
  err: unknown,
  provoked: readonly ServerHandle[] | undefined,
  failAction: 'fail-open' | 'fail-closed',
): Promise<unknown> {
  if (provoked === undefined || failAction !== 'fail-open') return err;
  if (!(err instanceof IcapError) || !takesFailAction(err)) return err;
  // All at once: a request waits for one check's bound at most, however many servers failed.
  const servers = [...new Set(provoked)];
  // A check that failed and ended before now says nothing of these failures (health-check.ts, `recent`).
  const since = performance.now();
  const answers = await Promise.all(servers.map((s) => s.answersCheck(since)));
  const working = servers.find((_, i) => answers[i] === 'answered');
  if (working !== undefined) return contentProvoked(err, working.server.url);
  const gone = servers.find((_, i) => answers[i] === 'unreachable');
  return gone === undefined ? err : contentProvoked(err, gone.server.url, 'went-down');
}

/** Whether {@link contentProvoked} marked the error. */
export function isContentProvoked(error: IcapError): boolean {
  return CONTENT_PROVOKED.has(error);
}

/** Whether the failure action (fail-open) may apply to this error. */
export function takesFailAction(error: IcapError): boolean {
  return (
    ICAP_SIDE_FAILURES.has(error.code) &&
    !REQMOD_REFUSALS.has(error) &&
    !CLIENT_PACED.has(error) &&
    !CONTENT_PROVOKED.has(error)
  );
}

/** An attempt that waited for a connection and got none: it never waited for the server. */
export const QUEUED = { waitingForServer: false, bodyOpened: false } as const;

/**
 * The attempt ended waiting for a connection: queueTimeout (SATURATED; also after the body had
 * gone out, when a kept-alive connection dropped it and the client's one retry waited for a new
 * one), or the request's responseTimeout while every connection of the server was in use and it
 * never got one. (The pool has taken the request out of its queue by now, so the watch's `busy`
 * no longer says it.)
 */
export function waitedForConnection(
  error: IcapError,
  signal: AbortSignal,
  watch: AttemptWatch,
  handle: ServerHandle,
): boolean {
  if (error.code === IcapErrorCodes.SATURATED) return true;
  if (watch.bodyOpened) return false;
  if (error.code !== IcapErrorCodes.TIMEOUT || !signal.aborted) return false;
  const s = handle.client.stats;
  return s.idle === 0 && s.busy + s.connecting >= s.limit;
}

/**
 * A wait for a connection that HTTP clients still sending their bodies held (see
 * ServerHandle.clientHeldSince): ICAP_ERR_SATURATED that never takes the failure action
 * (CLIENT_PACED).
 */
export function clientHeld(error: IcapError, handle: ServerHandle): IcapError {
  const held = new IcapError(
    IcapErrorCodes.SATURATED,
    `the connections to ICAP server ${handle.server.url} stayed busy, held by uploads whose HTTP clients were still sending (${error.message})`,
    { cause: error },
  );
  CLIENT_PACED.add(held);
  return held;
}

/**
 * A health fault (a close, a reset, a 5xx, ioTimeout...) while a slow HTTP client was still
 * sending the body (`slowClient`: AttemptWatch.slowClient): the same error, marked
 * CLIENT_PACED and saying so. Any other error is returned as it is. (A body still held from
 * its first byte is sent again whole once it has arrived, exchange.ts; one no longer held
 * cannot pass unscanned anyway, outcome.ts.)
 */
export function clientTurn(error: IcapError, slowClient: boolean): IcapError {
  if (!slowClient || !HEALTH_FAULTS.has(error.code) || REQMOD_REFUSALS.has(error)) return error;
  error.message += ' (the upload was still arriving, slowly: the server may have given up on it)';
  CLIENT_PACED.add(error);
  return error;
}
