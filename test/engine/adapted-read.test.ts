/**
 * AdaptedBody.readAll reads an ICAP response body as `for await` did (the general path it
 * replaced): the same chunks taken, the same error for a stream that fails or closes early,
 * the stream destroyed at the end, the limit enforced. Each case is run both ways.
 */
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { AdaptedBody, BodyStore } from '../../packages/core/src/engine/body.js';

function original(bytes: Buffer): BodyStore {
  const s = new BodyStore({ limit: 1 << 20, retainAll: true });
  s.push(bytes);
  s.end();
  return s;
}

type Script = (body: Readable) => void;

/** A response body fed by `script` (as the transaction pushes it), read one way or the other. */
async function read(way: 'readAll' | 'for-await', bytes: Buffer, script: Script, limit = 1 << 20) {
  const body = new Readable({ read() {}, highWaterMark: 64 * 1024 });
  body.on('error', () => {});
  const adapted = new AdaptedBody(original(bytes), limit);
  const sizes: number[] = [];
  let error: unknown;
  const tooLarge = () => new Error('too large');
  setImmediate(() => script(body));
  try {
    if (way === 'readAll') await adapted.readAll(body, (n) => sizes.push(n), tooLarge);
    else {
      for await (const chunk of body as AsyncIterable<Buffer>) {
        sizes.push(chunk.length);
        if (!adapted.write(chunk)) {
          body.destroy();
          throw tooLarge();
        }
      }
    }
  } catch (err) {
    error = err;
  }
  const identical = error === undefined ? await adapted.identical() : undefined;
  adapted.dispose();
  return {
    total: sizes.reduce((a, b) => a + b, 0),
    length: adapted.length,
    identical,
    error:
      error === undefined
        ? undefined
        : `${(error as { code?: string }).code ?? ''} ${(error as Error).message}`,
    destroyed: body.destroyed,
  };
}

const BYTES = Buffer.from('0123456789abcdef'.repeat(1000));

/** Pushes these in one turn (null ends the body). */
const pushes =
  (...parts: Array<Buffer | null>): Script =>
  (b) => {
    for (const part of parts) b.push(part);
  };

const cases: Array<[string, Script, number?]> = [
  ['the whole body in one push', pushes(BYTES, null)],
  [
    'in many pushes across ticks',
    (b) => {
      let at = 0;
      const next = () => {
        if (at >= BYTES.length) return void b.push(null);
        b.push(BYTES.subarray(at, at + 333));
        at += 333;
        setImmediate(next);
      };
      next();
    },
  ],
  [
    'many pushes in one turn',
    (b) => {
      for (let at = 0; at < BYTES.length; at += 100) b.push(BYTES.subarray(at, at + 100));
      b.push(null);
    },
  ],
  ['a last byte that differs', pushes(BYTES.subarray(0, -1), Buffer.from('!'), null)],
  ['a longer body', pushes(BYTES, Buffer.from('more'), null)],
  ['empty', (b) => b.push(null)],
  [
    'destroyed with an error mid-way',
    (b) => {
      b.push(BYTES.subarray(0, 500));
      setImmediate(() => b.destroy(Object.assign(new Error('reset by peer'), { code: 'ICAP_ERR_RESET' })));
    },
  ],
  [
    'destroyed without an error before its end (premature close)',
    (b) => {
      b.push(BYTES.subarray(0, 500));
      setImmediate(() => b.destroy());
    },
  ],
  ['above the limit', pushes(BYTES, null), 1000],
  [
    'above the limit in small pieces',
    (b) => {
      for (let at = 0; at < BYTES.length; at += 100) b.push(BYTES.subarray(at, at + 100));
      b.push(null);
    },
    1000,
  ],
];

describe('AdaptedBody.readAll reads as for await did', () => {
  for (const [name, script, limit] of cases) {
    it(name, async () => {
      const general = await read('for-await', BYTES, script, limit);
      const fast = await read('readAll', BYTES, script, limit);
      expect(fast).toEqual(general);
      expect(fast.destroyed).toBe(true);
    });
  }
});
