import { LightAbortController } from '../light-signal.js';

/**
 * One request's tie to its response's `'close'`, for the framework adapters: while the scan
 * runs, a close before the response finished is the client going away (the scan's signal
 * aborts); once the scan is over, the close frees what its outcome holds (a spooled body, a
 * decoded copy). An outcome that comes after the close is freed as it comes: the scan can
 * finish before its abort is seen, and a response can finish before the scan does (a timeout
 * middleware mounted before the scan answered): nothing would free it later, and a spooled
 * body would keep its temp file and descriptor.
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
  /**
   * The scan is over: its outcome is disposed when the response closes, or at once when it
   * already has (whatever reads the body after that gets no bytes).
   */
  hold(outcome: { dispose(): void }): void;
  /**
   * Once the response has finished, `engine.responded(log, statusCode)` (the application's
   * status for the record), from the watch's one listener: when the response closes after
   * finishing, as Node's HTTP server does on the tick after 'finish', before the held outcome
   * is disposed. No 'finish' listener and no closure per request.
   */
  respondedOnFinish(engine: Responded, log: object): void;
}

/** What {@link ResponseWatch.respondedOnFinish} tells (an engine). */
export interface Responded {
  /** (A method: the engine's takes its record type, which lives above this layer.) */
  responded(log: object, status: number): void;
}

type WatchedResponse = {
  readonly writableFinished: boolean;
  readonly headersSent?: boolean;
  readonly statusCode?: number;
  on(event: 'close', listener: () => void): unknown;
};

class Watch implements ResponseWatch {
  readonly #res: WatchedResponse;
  readonly #scan = new LightAbortController();
  #controller: AbortController | undefined = undefined;
  #outcome: { dispose(): void } | undefined = undefined;
  #closed = false;
  #engine: Responded | undefined = undefined;
  #log: object | undefined = undefined;

  constructor(res: WatchedResponse) {
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
    return this.#scan.signal;
  }

  hold(outcome: { dispose(): void }): void {
    if (this.#closed) outcome.dispose();
    else this.#outcome = outcome;
  }

  respondedOnFinish(engine: Responded, log: object): void {
    if (this.#closed) return;
    this.#engine = engine;
    this.#log = log;
  }

  readonly #onClose = (): void => {
    if (this.#closed) return;
    this.#closed = true;
    // Finished, and sent: Node's HTTP/2 compatibility layer says a response finished when the
    // client reset its stream (RST_STREAM), with nothing sent (campaign-ak AK2).
    const res = this.#res;
    const finished = res.writableFinished && res.headersSent !== false;
    const engine = this.#engine;
    if (engine !== undefined && finished) engine.responded(this.#log as object, res.statusCode as number);
    const outcome = this.#outcome;
    if (outcome !== undefined) {
      outcome.dispose();
      return;
    }
    if (finished) return;
    this.#scan.abort();
    this.#controller?.abort(this.#scan.reason);
  };
}

export function watchResponse(res: WatchedResponse): ResponseWatch {
  return new Watch(res);
}
