/**
 * One request's tie to its response's `'close'`, for the framework adapters: while the scan
 * runs, a close before the response finished is the client going away (the scan's signal
 * aborts); once the scan is over, the close frees what its outcome holds (a spooled body, a
 * decoded copy). A close while scanning frees nothing later: that outcome is an abort's.
 *
 * One listener added with `on` (the response closes once): no once-wrapper, nothing to remove.
 */
export interface ResponseWatch {
  /** Aborts when the client goes away while the scan runs. */
  readonly signal: AbortSignal;
  /** The scan is over: its outcome is disposed when the response closes. */
  hold(outcome: { dispose(): void }): void;
}

export function watchResponse(res: {
  readonly writableFinished: boolean;
  on(event: 'close', listener: () => void): unknown;
}): ResponseWatch {
  const ac = new AbortController();
  let outcome: { dispose(): void } | undefined;
  let closed = false;
  res.on('close', () => {
    if (closed) return;
    closed = true;
    if (outcome === undefined) {
      if (!res.writableFinished) ac.abort();
    } else outcome.dispose();
  });
  return {
    signal: ac.signal,
    hold(scanned) {
      if (!closed) outcome = scanned;
    },
  };
}
