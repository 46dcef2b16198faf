import type { Readable } from 'node:stream';
import type { BodyStore } from './body.js';

/**
 * Intake: when a request's ICAP exchange may start. An ICAP connection is a scarce resource
 * (a pool holds `maxConnections` per server), so it is taken only once the body can be fed at
 * the scanner's speed: the body is held (it is held anyway for `Allow: 204`, in memory up to
 * memoryThreshold, then in a temp file) until
 *
 * - it is complete: its length is then known and sent as the encapsulated `Content-Length`
 *   (a chunked upload too; servers that filter content or require a length need it); or
 * - `holdBytes` of it have arrived, at `minRate` bytes per second or faster on average since
 *   the scan started: a fast upload is streamed to the scanner while it arrives.
 *
 * An upload slower than `minRate` is held whole, so a slow or stalling client (a slowloris)
 * holds memory or disk bounded by bufferSize, never a scanner connection, and the upload is
 * bounded in time by bodyTimeout and bodyDeadline. `wholeBody` (a server that requires the
 * length) holds every body to its end.
 */
export interface HoldRule {
  /** Bytes that may start the exchange before the end; 0: start at once (no holding). */
  holdBytes: number;
  /** Bytes per second the body must have arrived at (on average) to be streamed. */
  minRate: number;
  /** Hold every body to its end. */
  wholeBody: boolean;
}

/**
 * Resolves once the exchange may start: the body ended (or failed, or outgrew its limit: the
 * caller finds out from the store), or enough of it arrived fast enough. Rejects with the
 * signal's reason when the signal aborts first. `source` is what the store reads (its 'data'
 * events say when to look again); `startedAt` is performance.now() at the start of the scan.
 */
export function whenReadyToScan(
  store: BodyStore,
  source: Readable | null,
  rule: HoldRule,
  startedAt: number,
  signal: AbortSignal,
): Promise<void> {
  const ready = (): boolean => {
    if (store.ended || store.error !== undefined || store.exceeded) return true;
    if (rule.wholeBody || source === null) return false;
    if (store.received < rule.holdBytes) return false;
    const seconds = Math.max((performance.now() - startedAt) / 1000, 0.001);
    return store.received / seconds >= rule.minRate;
  };
  if (!rule.wholeBody && rule.holdBytes === 0) return Promise.resolve();
  if (signal.aborted) return Promise.reject(signal.reason);
  if (ready()) return Promise.resolve();
  return new Promise<void>((resolve, reject) => {
    let done = false;
    const cleanup = () => {
      done = true;
      source?.removeListener('data', onData);
      signal.removeEventListener('abort', onAbort);
    };
    // The store reads the source first (its listener was added first): received is current.
    const onData = () => {
      if (!done && ready()) {
        cleanup();
        resolve();
      }
    };
    const onAbort = () => {
      if (done) return;
      cleanup();
      reject(signal.reason);
    };
    source?.on('data', onData);
    signal.addEventListener('abort', onAbort, { once: true });
    void store.whenEnded().then(() => {
      if (done) return;
      cleanup();
      resolve();
    });
  });
}

/**
 * Bodies being received per client address (maxBodiesPerClient): one address cannot hold
 * more than `limit` uploads in intake at once.
 */
export class ClientIntake {
  readonly #limit: number | undefined;
  readonly #open = new Map<string, number>();

  constructor(limit: number | undefined) {
    this.#limit = limit;
  }

  /** Takes a place for an upload from `address`; null when the address has no place left. */
  enter(address: string | undefined): (() => void) | null {
    if (this.#limit === undefined || address === undefined) return () => {};
    const n = this.#open.get(address) ?? 0;
    if (n >= this.#limit) return null;
    this.#open.set(address, n + 1);
    let left = false;
    return () => {
      if (left) return;
      left = true;
      const m = (this.#open.get(address) ?? 1) - 1;
      if (m <= 0) this.#open.delete(address);
      else this.#open.set(address, m);
    };
  }

  /** Uploads in intake from `address` now. */
  count(address: string): number {
    return this.#open.get(address) ?? 0;
  }
}
