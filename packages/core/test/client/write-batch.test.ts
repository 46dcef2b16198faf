/**
 * writeBatch puts a transaction's gathered output on the socket: one copied buffer for a small
 * batch, the body's pieces by reference (framing joined) in one corked writev for a larger one.
 * Whatever the pieces, the bytes written are the batch's, in order, the callback goes with the
 * last write only, and every write of a corked batch is between cork() and uncork().
 */
import type { Socket } from 'node:net';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { writeBatch } from '../../src/client/write-error.js';

interface Call {
  op: 'write' | 'cork' | 'uncork';
  data?: Buffer;
  cb?: unknown;
}

function fakeSocket(calls: Call[]): Socket {
  return {
    cork: () => calls.push({ op: 'cork' }),
    uncork: () => calls.push({ op: 'uncork' }),
    write: (data: Buffer, cb?: unknown) => {
      calls.push({ op: 'write', data: Buffer.from(data), cb });
      return true;
    },
  } as unknown as Socket;
}

describe('writeBatch', () => {
  it('writes the batch bytes in order, the callback with the last write, corked when several', () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.oneof(
            fc.integer({ min: 0, max: 12 }),
            fc.integer({ min: 1000, max: 1100 }),
            fc.integer({ min: 3000, max: 70_000 }),
          ),
          { minLength: 1, maxLength: 12 },
        ),
        (sizes) => {
          const batch = sizes.map((n, i) => Buffer.alloc(n, 97 + (i % 26)));
          const bytes = sizes.reduce((a, b) => a + b, 0);
          const calls: Call[] = [];
          const cb = () => {};
          writeBatch(fakeSocket(calls), batch, bytes, cb);
          const writes = calls.filter((c) => c.op === 'write');
          expect(Buffer.concat(writes.map((w) => w.data!)).equals(Buffer.concat(batch))).toBe(true);
          expect(writes.map((w) => w.cb === cb)).toEqual(writes.map((_, i) => i === writes.length - 1));
          if (writes.length > 1) {
            expect(calls[0]!.op).toBe('cork');
            expect(calls[calls.length - 1]!.op).toBe('uncork');
          } else {
            expect(calls.map((c) => c.op)).toEqual(['write']);
          }
          // A small batch is one write; no two pieces below 1 KiB are written apart in a larger one.
          if (bytes < 4096) expect(writes.length).toBe(1);
          for (let i = 1; i < writes.length; i++)
            expect(writes[i - 1]!.data!.length >= 1024 || writes[i]!.data!.length >= 1024).toBe(true);
        },
      ),
      { numRuns: 500 },
    );
  });
});
