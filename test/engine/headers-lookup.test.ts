/**
 * Headers lookups (get, getAll, has, lines) lower-case the name asked for only when it has an
 * upper-case or non-ASCII letter: for any fields and any name asked for, they find what a
 * lookup by `name.toLowerCase()` over the fields finds.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { Headers } from '../../packages/core/src/protocol/headers.js';

const NAMES = [
  'content-type',
  'Content-Type',
  'CONTENT-TYPE',
  'host',
  'Host',
  'x-é',
  'X-É',
  'x-\u0130',
  'istag',
  'ISTag',
  'k',
  'K',
  '',
];

describe('Headers lookups by name', () => {
  it('find what a lookup by the lower-cased name finds', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.constantFrom(...NAMES), fc.string({ maxLength: 6 })), { maxLength: 8 }),
        fc.constantFrom(...NAMES),
        (fields, asked) => {
          const h = new Headers();
          for (const [n, v] of fields) h.append(n, v);
          const key = asked.toLowerCase();
          const values = fields.filter(([n]) => n.toLowerCase() === key).map(([, v]) => v);
          expect(h.get(asked)).toBe(values[0]);
          expect(h.getAll(asked)).toEqual(values);
          expect(h.has(asked)).toBe(values.length > 0);
          expect(h.lines(asked)).toEqual(values.length > 0 ? [values[0]] : undefined);
        },
      ),
      { numRuns: 1000 },
    );
  });
});
