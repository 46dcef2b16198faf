/**
 * The scan's light abort controller against a real AbortController: the same listeners called,
 * in the same order, with the same reason, for any sequence of adds, removes (some from inside
 * a listener) and aborts.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { LightAbortController } from '../../src/client/abort.js';

type Op =
  | { op: 'add'; id: number; once: boolean }
  | { op: 'remove'; id: number }
  | { op: 'abort'; reason: string | undefined }
  | { op: 'removeOnCall'; id: number; other: number };

const ops = fc.array(
  fc.oneof(
    fc.record({ op: fc.constant('add' as const), id: fc.nat(5), once: fc.boolean() }),
    fc.record({ op: fc.constant('remove' as const), id: fc.nat(5) }),
    fc.record({ op: fc.constant('abort' as const), reason: fc.option(fc.string(), { nil: undefined }) }),
    fc.record({ op: fc.constant('removeOnCall' as const), id: fc.nat(5), other: fc.nat(5) }),
  ),
  { maxLength: 30 },
);

interface SignalLike {
  aborted: boolean;
  reason: unknown;
  addEventListener(type: string, fn: () => void, opts?: { once: boolean }): void;
  removeEventListener(type: string, fn: () => void): void;
}

function run(make: () => { signal: SignalLike; abort(reason?: unknown): void }, program: Op[]): unknown[] {
  const c = make();
  const s = c.signal;
  const calls: unknown[] = [];
  const removes = new Map<number, number>();
  const listeners: Array<() => void> = [];
  for (let id = 0; id < 6; id++) {
    listeners.push(() => {
      calls.push(['call', id, s.aborted, s.reason instanceof DOMException ? 'AbortError' : s.reason]);
      const other = removes.get(id);
      if (other !== undefined) s.removeEventListener('abort', listeners[other]!);
    });
  }
  for (const o of program) {
    if (o.op === 'add') s.addEventListener('abort', listeners[o.id]!, o.once ? { once: true } : undefined);
    else if (o.op === 'remove') s.removeEventListener('abort', listeners[o.id]!);
    else if (o.op === 'removeOnCall') removes.set(o.id, o.other);
    else {
      c.abort(o.reason);
      calls.push(['aborted', s.aborted, s.reason instanceof DOMException ? s.reason.name : s.reason]);
    }
  }
  return calls;
}

describe('LightAbortController', () => {
  it('calls the listeners a real AbortController calls, in its order, with its reason', () => {
    fc.assert(
      fc.property(ops, (program) => {
        const light = run(() => new LightAbortController() as never, program);
        const real = run(() => new AbortController() as never, program);
        expect(light).toEqual(real);
      }),
      { numRuns: 500 },
    );
  });

  it('throwIfAborted as a signal does', () => {
    const c = new LightAbortController();
    expect(() => c.signal.throwIfAborted()).not.toThrow();
    const reason = new Error('r');
    c.abort(reason);
    expect(() => c.signal.throwIfAborted()).toThrow(reason);
    expect(c.signal.aborted).toBe(true);
    expect(c.signal.reason).toBe(reason);
  });
});
