/**
 * AttemptWatch.wrap's body (a class now, not an object literal with a getter): still a
 * replayable body whose length is read through when asked, and whose reads tell the watch
 * whose turn it is (the client's while a chunk is awaited, the server's after it came).
 */
import { describe, expect, it } from 'vitest';
import { isReplayableBody, type ReplayableBody, toBodySource } from '../../src/client/source.js';
import { AttemptWatch } from '../../src/engine/scan/attempt-watch.js';

function body(): ReplayableBody & { setLength(n: number | undefined): void; release(): void } {
  let length: number | undefined;
  let release: () => void = () => {};
  return {
    replayable: true,
    get length() {
      return length;
    },
    setLength(n) {
      length = n;
    },
    release: () => release(),
    open() {
      let sent = false;
      return {
        next: () =>
          new Promise<IteratorResult<Uint8Array>>((resolve) => {
            release = () => {
              if (sent) resolve({ done: true, value: undefined });
              else {
                sent = true;
                resolve({ done: false, value: Buffer.from('x') });
              }
            };
          }),
      };
    },
  };
}

describe('AttemptWatch.wrap', () => {
  it('reads the length through, when asked', () => {
    const b = body();
    const watch = new AttemptWatch(new AbortController().signal, 1000, 'x', { stallPossible: false });
    const w = watch.wrap(b);
    expect(isReplayableBody(w)).toBe(true);
    expect(w.replayable).toBe(true);
    expect(w.length).toBeUndefined();
    b.setLength(42);
    expect(w.length).toBe(42);
    expect(toBodySource(w).length).toBe(42);
    watch.dispose();
  });

  it("tells the watch whose turn it is: the client's while a chunk is awaited", async () => {
    const b = body();
    const watch = new AttemptWatch(new AbortController().signal, 1000, 'x', { stallPossible: false });
    const it = watch.wrap(b).open();
    expect(watch.waitingForServer).toBe(true);
    const first = it.next();
    expect(watch.waitingForServer).toBe(false);
    b.release();
    expect(await first).toEqual({ done: false, value: Buffer.from('x') });
    await Promise.resolve();
    expect(watch.waitingForServer).toBe(true);
    const second = it.next();
    expect(watch.waitingForServer).toBe(false);
    await it.return?.();
    expect(watch.waitingForServer).toBe(true);
    b.release();
    await second;
    watch.dispose();
  });
});
