import { IcapError, IcapErrorCodes } from '../errors.js';

/**
 * `promise`, or the signal's reason as soon as the signal aborts (whichever comes first); the
 * listener is removed once either settles. Without a signal, `promise` itself.
 */
export function untilAborted<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (signal === undefined) return promise;
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(e);
      },
    );
  });
}

/** An abort's reason as the error a request fails with: itself when an IcapError, else ICAP_ERR_ABORTED. */
export function abortError(reason: unknown, what: string): IcapError {
  return reason instanceof IcapError
    ? reason
    : new IcapError(IcapErrorCodes.ABORTED, `${what} was aborted`, { cause: reason });
}

/** The error an aborted signal fails a transaction with: its reason, wrapped when `what` is given. */
export function abortReason(signal: AbortSignal, what: string | undefined): unknown {
  return what === undefined ? signal.reason : abortError(signal.reason, what);
}

export { LightAbortController } from '../light-signal.js';
