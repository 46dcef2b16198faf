/**
 * One request's tie to its response's `'close'`, for the framework adapters: while the scan
 * runs, a close before the response finished is the client going away (the scan's signal
 * aborts); once the scan is over, the close frees what its outcome holds (a spooled body, a
 * decoded copy). A close while scanning frees nothing later: that outcome is an abort's.
 *
 * One listener added with `on` (the response closes once): no once-wrapper, nothing to remove.
 */
export interface ResponseWatch {
  /** Aborts when the client goes away while the scan runs (a real AbortSignal, made when first read). */
  readonly signal: AbortSignal;
  /**
   * The same abort for `engine.scan` alone: the part of AbortSignal the engine uses (`aborted`,
   * `reason`, `addEventListener`/`removeEventListener` of 'abort'), without an EventTarget. A
   * Node AbortSignal costs several microseconds to make and listen to (each one gets a map of
   * its own); the adapters pass this one to `engine.scan`. Anything else wants `signal`.
   */
  readonly scanSignal: AbortSignal;
  /** The scan is over: its outcome is disposed when the response closes. */
  hold(outcome: { dispose(): void }): void;
}

type AbortListener = (event: Event) => void;

/** What a Node AbortSignal's `reason` is after `abort()` without one. */
function abortError(): DOMException {
  return new DOMException('This operation was aborted', 'AbortError');
}

/**
 * The subset of AbortSignal that `engine.scan` uses, as one plain object of a fixed shape.
 * Listeners are called once, in the order they were added, with an 'abort' Event, as by an
 * AbortSignal; a listener that throws does not keep the others from running.
 */
class ScanSignal {
  aborted = false;
  reason: unknown = undefined;
  onabort: AbortListener | null = null;
  #listeners: AbortListener[] | null = null;

  addEventListener(type: string, listener: AbortListener | null): void {
    if (type !== 'abort' || typeof listener !== 'function' || this.aborted) return;
    const list = this.#listeners;
    if (list === null) this.#listeners = [listener];
    else if (!list.includes(listener)) list.push(listener);
  }

  removeEventListener(type: string, listener: AbortListener | null): void {
    const list = this.#listeners;
    if (type !== 'abort' || list === null) return;
    const at = list.indexOf(listener as AbortListener);
    if (at !== -1) list.splice(at, 1);
  }

  dispatchEvent(_event: Event): boolean {
    return true;
  }

  throwIfAborted(): void {
    if (this.aborted) throw this.reason;
  }

  abort(reason: unknown): void {
    if (this.aborted) return;
    this.aborted = true;
    this.reason = reason;
    const list = this.#listeners;
    this.#listeners = null;
    const handler = this.onabort;
    if (list === null && handler === null) return;
    const event = new Event('abort');
    if (handler !== null) call(handler, this, event);
    if (list !== null) for (const listener of list) call(listener, this, event);
  }
}

function call(listener: AbortListener, self: object, event: Event): void {
  try {
    listener.call(self, event);
  } catch {
    // Never thrown into the response's 'close' (the engine's listener does not throw).
  }
}

class Watch implements ResponseWatch {
  readonly #res: { readonly writableFinished: boolean };
  readonly #scan = new ScanSignal();
  #controller: AbortController | undefined = undefined;
  #outcome: { dispose(): void } | undefined = undefined;
  #closed = false;

  constructor(res: {
    readonly writableFinished: boolean;
    on(event: 'close', listener: () => void): unknown;
  }) {
    this.#res = res;
    res.on('close', this.#onClose);
  }

  get signal(): AbortSignal {
    if (this.#controller === undefined) {
      const controller = new AbortController();
      this.#controller = controller;
      if (this.#scan.aborted) controller.abort(this.#scan.reason);
    }
    return this.#controller.signal;
  }

  get scanSignal(): AbortSignal {
    return this.#scan as unknown as AbortSignal;
  }

  hold(outcome: { dispose(): void }): void {
    if (!this.#closed) this.#outcome = outcome;
  }

  readonly #onClose = (): void => {
    if (this.#closed) return;
    this.#closed = true;
    const outcome = this.#outcome;
    if (outcome !== undefined) {
      outcome.dispose();
      return;
    }
    if (this.#res.writableFinished) return;
    const reason = abortError();
    this.#scan.abort(reason);
    this.#controller?.abort(reason);
  };
}

export function watchResponse(res: {
  readonly writableFinished: boolean;
  on(event: 'close', listener: () => void): unknown;
}): ResponseWatch {
  return new Watch(res);
}
