import { EventEmitter } from 'node:events';
import { describe, expect, it } from 'vitest';
import { watchResponse } from '../../src/node/response-watch.js';

/** A response: an emitter that closes once, finished or not. */
function response(): EventEmitter & { writableFinished: boolean; close(finished: boolean): void } {
  const res = Object.assign(new EventEmitter(), {
    writableFinished: false,
    close(finished: boolean) {
      res.writableFinished = finished;
      res.emit('close');
    },
  });
  return res;
}

/** What the engine does with its caller's signal (scan.ts): reads, listens once, removes. */
function listen(signal: AbortSignal, calls: string[], name: string): () => void {
  const listener = function (this: unknown, event: Event) {
    calls.push(`${name}:${event.type}:${this === signal}:${signal.aborted}`);
  };
  signal.addEventListener('abort', listener, { once: true });
  return () => signal.removeEventListener('abort', listener);
}

describe('watchResponse: the light scan signal behaves as the AbortSignal it stands for', () => {
  it('closed before finishing while scanning: both abort, listeners called once, in order, with an abort event', () => {
    const res = response();
    const watch = watchResponse(res);
    const real = new AbortController();
    const calls: string[] = [];
    for (const [name, signal] of [
      ['light', watch.scanSignal],
      ['real', real.signal],
    ] as const) {
      expect(signal.aborted).toBe(false);
      expect(signal.reason).toBeUndefined();
      listen(signal, calls, `${name}1`);
      const removed = listen(signal, calls, `${name}-removed`);
      listen(signal, calls, `${name}2`);
      removed();
    }
    res.close(false);
    real.abort();
    const light = watch.scanSignal;
    expect(light.aborted).toBe(true);
    expect(light.reason).toBeInstanceOf(DOMException);
    expect((light.reason as DOMException).name).toBe((real.signal.reason as DOMException).name);
    expect((light.reason as DOMException).message).toBe((real.signal.reason as DOMException).message);
    expect(calls.filter((c) => c.startsWith('light')).map((c) => c.slice(5))).toEqual(
      calls.filter((c) => c.startsWith('real')).map((c) => c.slice(4)),
    );
    expect(calls).toEqual([
      'light1:abort:true:true',
      'light2:abort:true:true',
      'real1:abort:true:true',
      'real2:abort:true:true',
    ]);
    // A listener added after the abort is never called (as on an aborted AbortSignal); a second close changes nothing.
    listen(light, calls, 'late');
    res.close(false);
    expect(calls).toHaveLength(4);
    // The public signal, made after the fact, is a real AbortSignal, already aborted with the same reason.
    expect(watch.signal).toBeInstanceOf(AbortSignal);
    expect(watch.signal.aborted).toBe(true);
    expect(watch.signal.reason).toBe(light.reason);
  });

  it('the public signal made before the close aborts with the light one', () => {
    const res = response();
    const watch = watchResponse(res);
    const signal = watch.signal;
    expect(signal).toBeInstanceOf(AbortSignal);
    expect(signal.aborted).toBe(false);
    res.close(false);
    expect(signal.aborted).toBe(true);
    expect(watch.scanSignal.aborted).toBe(true);
    expect(signal.reason).toBe(watch.scanSignal.reason);
  });

  it('closed after finishing, or after the scan: no abort; the held outcome is disposed once', () => {
    const finished = response();
    const a = watchResponse(finished);
    const calls: string[] = [];
    listen(a.scanSignal, calls, 'a');
    finished.close(true);
    expect(a.scanSignal.aborted).toBe(false);
    expect(a.signal.aborted).toBe(false);

    const held = response();
    const b = watchResponse(held);
    listen(b.scanSignal, calls, 'b');
    let disposed = 0;
    b.hold({ dispose: () => disposed++ });
    held.close(false);
    held.close(false);
    expect(disposed).toBe(1);
    expect(b.scanSignal.aborted).toBe(false);
    expect(calls).toEqual([]);
  });

  it('an outcome held after the close (finished or not) is disposed at once, and once', () => {
    for (const finished of [false, true]) {
      const res = response();
      const watch = watchResponse(res);
      res.close(finished);
      let disposed = 0;
      watch.hold({ dispose: () => disposed++ });
      expect(disposed).toBe(1);
      res.close(finished);
      expect(disposed).toBe(1);
    }
  });

  it('one close listener per request, nothing else on the response', () => {
    const res = response();
    watchResponse(res);
    expect(res.eventNames()).toEqual(['close']);
    expect(res.listenerCount('close')).toBe(1);
  });
});
