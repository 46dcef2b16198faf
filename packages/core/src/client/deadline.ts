/**
 * Deadlines that read before they act.
 *
 * A timer's callback runs in the event loop's timers phase, before its poll phase reads the
 * sockets. A process stalled past a deadline (a busy machine, a long synchronous task) would act
 * on it without reading what came in time: an ICAP answer already on the socket (a threat taken
 * for a timeout, the upload then delivered under fail-open or sent to another server), a
 * connection already up, the HTTP client's last bytes (campaign-bc, campaign-bd).
 *
 * So a deadline that came due acts in a setImmediate (after the poll phase), and only if it
 * still applies then (`moot`). While ICAP servers' bytes are still being read (an answer larger
 * than one turn reads: `heard` moved since the last look), it looks again every QUIET_MS, for at
 * most min(the deadline's own length, GRACE_MAX_MS) after its first look: a server that keeps
 * trickling cannot hold a deadline off for longer than that.
 */

/** ms without an ICAP server's byte after which an answer is no longer arriving. */
const QUIET_MS = 20;
/** The most a deadline waits for what is still arriving, after its first look (ms). */
const GRACE_MAX_MS = 1_000;

/** Socket reads from ICAP servers in this process (connection.ts counts them). */
let heard = 0;

/** A connection read bytes (or its end) from its ICAP server. */
export function noteHeard(): void {
  heard++;
}

/**
 * Acts on a deadline of `ms` that came due: once the process has read what came meanwhile (see
 * above), unless `moot()` says by then that it no longer applies. Leaves no timer or immediate
 * behind once it has acted or found it moot. `answers` false: what it waits for comes in one
 * turn (a connection made, the HTTP client's bytes): one look, ICAP bytes do not hold it.
 */
export function actAfterReading(ms: number, moot: () => boolean, act: () => void, answers = true): void {
  if (!answers) {
    setImmediate(() => moot() || act());
    return;
  }
  let seen = heard;
  let graceEnd = 0;
  const look = (): void => {
    if (moot()) return;
    if (heard !== seen) {
      const now = performance.now();
      if (graceEnd === 0) graceEnd = now + Math.min(ms, GRACE_MAX_MS);
      if (now < graceEnd) {
        seen = heard;
        setTimeout(again, QUIET_MS);
        return;
      }
    }
    act();
  };
  const again = (): void => {
    setImmediate(look);
  };
  setImmediate(look);
}
