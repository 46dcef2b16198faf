/**
 * Whether a body goes to one ICAP service on one server with a preview (`adaptivePreview`).
 *
 * A preview is a bet that the server decides from the first bytes (a 204 for a file type it
 * does not scan) and never needs the rest. A server that reads every body whole (c-icap's
 * virus_scan, most antivirus services) asks for the rest of each one with `100 Continue`, and
 * then the preview only costs a round trip per body and per multipart part. So the outcomes of
 * the previews are counted, per server and service:
 *
 * - `LEARN_AFTER` previews in a row answered `100 Continue`: the next bodies go whole, without
 *   a preview, except one in `PROBE_EVERY`, still previewed to notice a change;
 * - a preview the server answered without asking for the rest (it decided from the preview):
 *   previews again for every body, and the count starts over.
 *
 * A body sent whole is always a correct request (RFC 3507 §4.5: the client chooses whether to
 * preview); the server sees every byte in both cases, so this changes what a request costs,
 * never what is scanned. Counters, not randomness: the same sequence of answers gives the same
 * choices. Answers arrive out of order under concurrency; a count off by one changes nothing.
 */

/** Previews in a row the server asked the rest of before the bodies go whole. */
export const LEARN_AFTER = 32;
/** Once learned, one body in this many is still previewed. */
export const PROBE_EVERY = 16;

/** What became of one preview that did not hold the whole body. */
export type PreviewResult = 'continued' | 'decided';

export class PreviewAdvice {
  /** Previews in a row answered `100 Continue`. */
  #streak = 0;
  /** Bodies sent whole since the last probe (once learned). */
  #sinceProbe = 0;

  /** True when the next body should be previewed. */
  preview(): boolean {
    if (this.#streak < LEARN_AFTER) return true;
    if (++this.#sinceProbe < PROBE_EVERY) return false;
    this.#sinceProbe = 0;
    return true;
  }

  /** A preview's outcome (not one that carried the whole body: the server decided nothing then). */
  record(result: PreviewResult): void {
    if (result === 'continued') this.#streak++;
    else {
      this.#streak = 0;
      this.#sinceProbe = 0;
    }
  }

  /** Whether bodies currently go whole (for `status()`). */
  get skipping(): boolean {
    return this.#streak >= LEARN_AFTER;
  }
}
