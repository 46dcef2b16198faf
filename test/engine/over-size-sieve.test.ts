/**
 * protocol/over-size.ts FieldSieve (campaign-bs BS2): a field section read past its bound keeps
 * only the fields that may name a threat (and their continuation lines), however the bytes are
 * split, ends at the blank line the strict parser ends a section at, and stops at OVER_SIZE_CAP.
 */
import { describe, expect, it } from 'vitest';
import { FieldSieve, OVER_SIZE_CAP } from '../../packages/core/src/protocol/over-size.js';

const SECTION =
  'X-Pad: aaaa\r\nX-Infection-Found: Type=0; Resolution=2; Threat=EICAR;\r\nX-Other: b\rX-Virus-ID: EICAR\r\n' +
  'X-Violations-Found: 1\r\n\tf.bin\r\n\tEICAR\r\nX-Last: c\r\n\tnot kept\r\n\r\nAFTER';
const KEPT =
  'X-Infection-Found: Type=0; Resolution=2; Threat=EICAR;\r\nX-Virus-ID: EICAR\r\nX-Violations-Found: 1\r\n\tf.bin\r\n\tEICAR\r\n';

function feed(sieve: FieldSieve, bytes: Buffer, size: number): number {
  for (let at = 0; at < bytes.length; at += size) {
    const piece = bytes.subarray(at, at + size);
    const end = sieve.read(piece, 0);
    if (end !== -1) return at + end;
  }
  return -1;
}

describe('FieldSieve', () => {
  it.each([1, 2, 3, 7, 64, 4096])('keeps only the naming fields, read %i bytes at a time', (size) => {
    const sieve = new FieldSieve(65536, false);
    const bytes = Buffer.from(SECTION, 'latin1');
    expect(feed(sieve, bytes, size)).toBe(SECTION.indexOf('AFTER'));
    expect(sieve.kept()).toBe(KEPT);
  });
  it('a line begun before (midLine) is dropped, whatever it holds', () => {
    const sieve = new FieldSieve(65536, true);
    const s = 'X-Infection-Found: cut\r\nX-Blocked: yes\r\n\r\n';
    expect(sieve.read(Buffer.from(s), 0)).toBe(s.length);
    expect(sieve.kept()).toBe('X-Blocked: yes\r\n');
  });
  it('a bare LF line ends the section; a lone CR line does not', () => {
    const a = new FieldSieve(100, false);
    expect(a.read(Buffer.from('X-A: 1\n\nrest'), 0)).toBe(8);
    const b = new FieldSieve(100, false);
    expect(b.read(Buffer.from('X-A: 1\r\n\r\r\nX-Blocked: 1\r\n\r\n'), 0)).toBe(27);
    expect(b.kept()).toBe('X-Blocked: 1\r\n');
  });
  it('keeps at most keepMax characters', () => {
    const sieve = new FieldSieve(40, false);
    sieve.read(Buffer.from(`X-Virus-ID: ${'v'.repeat(100)}\r\nX-Blocked: 1\r\n`), 0);
    expect(sieve.kept().length).toBeLessThanOrEqual(42);
  });
  it('stops at OVER_SIZE_CAP bytes without an end', () => {
    const sieve = new FieldSieve(100, false);
    const line = Buffer.from(`X-Pad: ${'p'.repeat(1000)}\r\n`);
    let n = 0;
    while (!sieve.full && n < OVER_SIZE_CAP * 2) {
      expect(sieve.read(line, 0)).toBe(-1);
      n += line.length;
    }
    expect(sieve.full).toBe(true);
    expect(n).toBeLessThanOrEqual(OVER_SIZE_CAP + line.length);
  });
});
