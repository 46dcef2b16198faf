/**
 * redactHeaderBlock: the values of the named fields are replaced in a raw header block; a block
 * naming none of them comes back as it was (the fast path must never skip a field to redact).
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { redactHeaderBlock } from '../../src/engine/log.js';

const NAMES = new Set(['authorization', 'proxy-authorization', 'cookie', 'x-api-key']);

/** The slow path: every line looked at (what the function did before its fast path). */
function reference(raw: string, names: ReadonlySet<string>): string {
  return raw.replace(/^([^:\r\n]+):[ \t]*([^\r\n]*)/gm, (line, name: string) =>
    names.has(name.trim().toLowerCase()) ? `${name}: [REDACTED]` : line,
  );
}

describe('redactHeaderBlock', () => {
  it('redacts the named fields whatever their case or spacing, and keeps the rest', () => {
    const raw = 'Host: icap\r\nAUTHORIZATION: Basic abc\r\nX-Api-Key :k1\r\nISTag: "x"\r\nCookie:\ta=b\r\n';
    expect(redactHeaderBlock(raw, NAMES)).toBe(
      'Host: icap\r\nAUTHORIZATION: [REDACTED]\r\nX-Api-Key : [REDACTED]\r\nISTag: "x"\r\nCookie: [REDACTED]\r\n',
    );
  });

  it('returns a block naming none of them unchanged, and an empty set redacts nothing', () => {
    const raw = 'Host: icap\r\nISTag: "x"\r\nEncapsulated: null-body=0\r\n';
    expect(redactHeaderBlock(raw, NAMES)).toBe(raw);
    expect(redactHeaderBlock('Authorization: x\r\n', new Set())).toBe('Authorization: x\r\n');
  });

  it('agrees with the line-by-line reading on any block', () => {
    const name = fc.constantFrom(
      'Host',
      'Authorization',
      'cookie',
      'X-API-KEY',
      'X-Cookie',
      'Authorizations',
      'ISTag',
    );
    const line = fc.tuple(name, fc.constantFrom('', ' ', '\t', ' \t'), fc.string({ maxLength: 12 }));
    fc.assert(
      fc.property(fc.array(line, { maxLength: 8 }), (lines) => {
        const raw = lines.map(([n, sp, v]) => `${n}:${sp}${v.replace(/[\r\n]/g, '')}\r\n`).join('');
        expect(redactHeaderBlock(raw, NAMES)).toBe(reference(raw, NAMES));
      }),
      { numRuns: 300 },
    );
  });
});
