/**
 * The bench application's digest (bodies.ts BodyDigest) must not depend on how the body was
 * chunked: every `--boundary` becomes one token, wherever a chunk edge falls, so a run that
 * checks "the application got the bytes sent" compares like with like.
 */
import { createHash } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { BodyDigest, bodyDigest } from '../src/bodies.js';

const TOKEN = Buffer.from('--icapkit-bench-boundary');

/** The reference: replace every needle in the whole body (left to right, no overlap), then hash. */
function reference(data: Buffer, needle: Buffer): string {
  const h = createHash('sha1');
  let i = 0;
  for (let j = data.indexOf(needle); j !== -1; j = data.indexOf(needle, i)) {
    h.update(data.subarray(i, j));
    h.update(TOKEN);
    i = j + needle.length;
  }
  h.update(data.subarray(i));
  return h.digest('hex');
}

describe('BodyDigest', () => {
  it('gives the one-shot replacement digest for any chunking (property)', () => {
    // A small alphabet so needles, near-needles and overlaps occur often.
    const bytes = fc
      .uint8Array({ maxLength: 200 })
      .map((a) => Buffer.from(a.map((b) => 'ab-'.charCodeAt(b % 3))));
    fc.assert(
      fc.property(
        fc.constantFrom('ab', 'aba', 'b-a-', 'a'),
        bytes,
        fc.array(fc.integer({ min: 1, max: 9 }), { minLength: 1, maxLength: 60 }),
        (boundary, data, sizes) => {
          const ct = `multipart/form-data; boundary=${boundary}`;
          const d = new BodyDigest(ct);
          let off = 0;
          for (let k = 0; off < data.length; k++) {
            const n = sizes[k % sizes.length]!;
            d.update(data.subarray(off, off + n));
            off += n;
          }
          const want = reference(data, Buffer.from(`--${boundary}`, 'latin1'));
          expect(d.digest()).toBe(want);
          expect(bodyDigest(data, ct)).toBe(want);
        },
      ),
      { numRuns: 2000 },
    );
  });

  it('hashes a body without a multipart boundary as it is', () => {
    const data = Buffer.from('--x--x plain body');
    expect(bodyDigest(data, 'application/octet-stream')).toBe(createHash('sha1').update(data).digest('hex'));
  });
});
