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
 * still applies then (`moot`). A deadline an answer settles reads on while that answer's bytes
 * still come (`count`, of them as they are read: an answer larger than one turn reads): it
 * looks again every QUIET_MS while the count moves, for at most min(the deadline's own length,
 * GRACE_MAX_MS) after its first look. A server that keeps trickling cannot hold a deadline off
 * for longer than that; other servers' traffic does not hold it at all (campaign-be BE1).
 */

/** ms without a byte of the answer after which it is no longer arriving. */
const QUIET_MS = 20;
/** The most a deadline waits for what is still arriving, after its first look (ms). */
const GRACE_MAX_MS = 1_000;

/**
 * Bytes of an answer that count as one step of progress for a watch of the server's (a trickle
 * of single bytes does not): the stall watch's; a kept-alive connection the server closed, which
 * the client replaces, counts as one step too (client.ts).
 */
export const PROGRESS_STEP = 16 * 1024;

/** A count that moves while what a deadline waits for is read (bytes of an ICAP answer). */
export interface Heard {
  heard: number;
  /** The answer waits in its paused socket for the caller's reader (the count holds still meanwhile). */
  held?: boolean | undefined;
}

/** Adds `n` to `h`'s count; a count the caller made unwritable is not counted (never a throw). */
export function addHeard(h: Heard | undefined, n: number): void {
  if (h === undefined) return;
  try {
    h.heard += n;
  } catch {
    // (a frozen object, a getter alone, a throwing setter: IcapRequestOptions.heard is the caller's)
  }
}

/** Whether the answer waits for the caller's reader (see Heard.held); never a throw. */
export function holdHeard(h: Heard | undefined, held: boolean): void {
  if (h === undefined) return;
  try {
    h.held = held;
  } catch {
    // (the caller's object: see addHeard)
  }
}

/** `h`'s count for actAfterReading: it moves at every look while the answer waits for its reader. */
export function countOf(h: Heard): () => number {
  let tick = 0;
  return () => {
    try {
      return h.held === true ? h.heard + ++tick : h.heard;
    } catch {
      return 0;
    }
  };
}

/**
 * Acts on a deadline of `ms` that came due: once the process has read what came meanwhile (see
 * above), unless `moot()` says by then that it no longer applies. Without `count`, one look (what
 * it waits for comes in one turn: a connection made). Leaves no timer or immediate behind once
 * it has acted or found it moot.
 */
export function actAfterReading(
  ms: number,
  moot: () => boolean,
  act: () => void,
  count?: () => number,
): void {
  if (count === undefined) {
    setImmediate(() => moot() || act());
    return;
  }
  let seen = count();
  let graceEnd = 0;
  const look = (): void => {
    if (moot()) return;
    if (count() !== seen) {
      const now = performance.now();
      if (graceEnd === 0) graceEnd = now + Math.min(ms, GRACE_MAX_MS);
      if (now < graceEnd) {
        seen = count();
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
