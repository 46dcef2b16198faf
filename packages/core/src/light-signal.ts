/**
 * LightAbortController: an abort signal of our own for the per-request paths (the scan's own
 * signal, and the one the framework adapters give `engine.scan`). Imports nothing, like
 * errors.ts, so client/, engine/ and node/ can all use it.
 */

/** An 'abort' listener as the engine and the client add them (a function; its argument unused). */
type AbortListener = (this: unknown, event: unknown) => void;

/**
 * An AbortController and its signal in one small object, for code of our own (one per scan, one per adapter request):
 * without the EventTarget behind a real AbortSignal (a listener map, a record per listener, an
 * Event per abort), which cost about 3 KiB per request with the listeners the client adds. It
 * has what the engine and the client use of a signal, with the same semantics: `aborted`,
 * `reason` (a DOMException AbortError when none is given), `throwIfAborted()`, and 'abort'
 * listeners called once each, synchronously, in the order added, when it aborts (a function
 * added twice is called once; one removed by an earlier listener is not called; one added
 * after the abort is never called, as the event is not dispatched again). `signal` is typed
 * as an AbortSignal for those uses only: never hand it to Node's own APIs (`AbortSignal.any`,
 * streams, `events.once`), which want a real one.
 */
export class LightAbortController {
  aborted = false;
  reason: unknown = undefined;
  onabort: null = null;
  #listeners: AbortListener[] | null = null;

  /** This object, as the AbortSignal the engine and the client take. */
  get signal(): AbortSignal {
    return this as unknown as AbortSignal;
  }

  addEventListener(type: string, listener: AbortListener | null, _options?: unknown): void {
    if (type !== 'abort' || typeof listener !== 'function' || this.aborted) return;
    const list = this.#listeners;
    if (list === null) this.#listeners = [listener];
    else if (!list.includes(listener)) list.push(listener);
  }

  removeEventListener(type: string, listener: AbortListener | null, _options?: unknown): void {
    const list = this.#listeners;
    if (type !== 'abort' || list === null) return;
    const at = list.indexOf(listener as AbortListener);
    if (at !== -1) list.splice(at, 1);
  }

  throwIfAborted(): void {
    if (this.aborted) throw this.reason;
  }

  abort(reason?: unknown): void {
    if (this.aborted) return;
    this.aborted = true;
    this.reason =
      reason === undefined ? new DOMException('This operation was aborted', 'AbortError') : reason;
    const list = this.#listeners;
    if (list === null) return;
    const event = { type: 'abort', target: this };
    for (const listener of list.slice()) {
      // Removed by an earlier listener: not called (as an EventTarget does).
      if (!list.includes(listener)) continue;
      try {
        listener.call(this, event);
      } catch (err) {
        // What an EventTarget does with a listener's exception: reported, the others still called.
        process.nextTick(() => {
          throw err;
        });
      }
    }
    this.#listeners = null;
  }
}
