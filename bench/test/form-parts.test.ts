/**
 * The raw client's part-by-part form (rawload.js --parts) must send what icapkit's per-file scan
 * sends: each part's bytes exactly, named as parts.ts names them, empty parts left out.
 */
import { randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { formParts, multipart } from '../src/bodies.js';

describe('formParts', () => {
  it("splits the bench's form into its field and files, bytes exact", () => {
    const files = [randomBytes(1000), randomBytes(5), Buffer.from('\r\n--not-a-boundary\r\n')];
    const parts = formParts(multipart(files, 'XyZ123'), 'multipart/form-data; boundary=XyZ123');
    expect(parts.map((p) => p.body.toString('latin1'))).toEqual([
      'bench upload',
      ...files.map((f) => f.toString('latin1')),
    ]);
    expect(parts[0]!.headers).toEqual([
      ['Host', 'app'],
      ['Content-Type', 'text/plain'],
      ['Content-Disposition', 'form-data; filename="title"'],
      ['Content-Length', '12'],
    ]);
    expect(parts[2]!.headers).toEqual([
      ['Host', 'app'],
      ['Content-Type', 'application/octet-stream'],
      ['Content-Disposition', 'attachment; filename="doc2.bin"'],
      ['Content-Length', '5'],
    ]);
  });

  it('keeps every file whatever its bytes, and leaves empty ones out', () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 300 }), { minLength: 1, maxLength: 6 }), (arrays) => {
        const files = arrays.map((a) => Buffer.from(a));
        const boundary = 'b0undary-7MA4YWxkTrZu0gW';
        const parts = formParts(multipart(files, boundary), `multipart/form-data; boundary="${boundary}"`);
        expect(parts.slice(1).map((p) => p.body)).toEqual(files.filter((f) => f.length > 0));
      }),
      { numRuns: 300 },
    );
  });

  it('refuses a body that is not a form', () => {
    expect(() => formParts(Buffer.from('x'), 'application/octet-stream')).toThrow(/multipart/);
  });
});
