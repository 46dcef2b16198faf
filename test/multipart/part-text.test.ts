/**
 * Two checks of the multipart path done with a loop instead of a regular expression: the
 * control characters refused in a part header's value (parser.ts), and the part name that goes
 * into the Content-Disposition of its own ICAP request as it is (parts.ts). Both give what the
 * patterns gave, for any string.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { hasControl } from '../../packages/core/src/engine/multipart/parser.js';
import { contentDisposition } from '../../packages/core/src/engine/multipart/parts.js';

/** contentDisposition as it was: the ASCII form by replacement, compared with the name. */
function contentDispositionBefore(type: string, name: string): string {
  const ascii = name.replace(/[^\x20-\x7e]|["\\]/g, '_');
  if (ascii === name) return `${type}; filename="${name}"`;
  const encoded = encodeURIComponent(name).replace(
    /['()*]/g,
    (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`,
  );
  return `${type}; filename="${ascii}"; filename*=UTF-8''${encoded}`;
}

/** Strings over every kind of char: controls, DEL, quote, backslash, Latin-1, BMP and astral. */
const text = fc.oneof(
  fc.string({ unit: 'binary', maxLength: 40 }),
  fc.string({
    unit: fc.constantFrom('a', 'Z', ' ', '\t', '"', '\\', '\x7f', '\x00', '\x1f', 'é', '\u20ac', '😀'),
  }),
  fc.string({ maxLength: 40 }),
);

describe('multipart text checks without a regular expression', () => {
  it('hasControl finds what /[\\x00-\\x08\\x0a-\\x1f\\x7f]/ finds', () => {
    fc.assert(
      fc.property(text, (s) => {
        expect(hasControl(s)).toBe(/[\x00-\x08\x0a-\x1f\x7f]/.test(s));
      }),
      { numRuns: 5000 },
    );
    for (let c = 0; c < 0x100; c++) {
      const s = `ab${String.fromCharCode(c)}cd`;
      expect(hasControl(s)).toBe(/[\x00-\x08\x0a-\x1f\x7f]/.test(s));
    }
  });

  it("a part's Content-Disposition is the same as before for any name", () => {
    fc.assert(
      fc.property(fc.constantFrom('attachment', 'form-data'), text, (type, name) => {
        expect(contentDisposition(type, name)).toBe(contentDispositionBefore(type, name));
      }),
      { numRuns: 5000 },
    );
    for (let c = 0; c < 0x100; c++) {
      const name = `x${String.fromCharCode(c)}.bin`;
      expect(contentDisposition('attachment', name)).toBe(contentDispositionBefore('attachment', name));
    }
  });
});
