/**
 * The bench's bodies must all take the path a binary upload takes: a random body that opened a
 * JSON text (white space, `"`, `[` or `{` first) made icapkit lex it and scan its strings as a
 * second ICAP request, so the runs that drew one measured 3-5x the CPU (eighteenth round).
 */
import { readFile, rm } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { binaryBody, makeBodies } from '../src/bodies.js';

const OPENERS = [0x20, 0x09, 0x0a, 0x0d, 0x22, 0x5b, 0x7b, 0xef];

describe('binaryBody', () => {
  it('draws the first byte again while it could open a JSON text, and keeps the rest', () => {
    for (const first of OPENERS) {
      // The random source: the body, then two more openers, then a binary byte.
      const draws = [
        Buffer.from([first, 1, 2, 3]),
        Buffer.from([0x7b]),
        Buffer.from([0x20]),
        Buffer.from([0x00]),
      ];
      const body = binaryBody(4, () => draws.shift()!);
      expect([...body]).toEqual([0x00, 1, 2, 3]);
      expect(draws).toEqual([]);
    }
  });

  it('leaves a body that starts with a binary byte as drawn', () => {
    const body = binaryBody(3, () => Buffer.from([0x89, 0x22, 0x7b]));
    expect([...body]).toEqual([0x89, 0x22, 0x7b]);
  });

  it('never starts a body with an opener over many draws', () => {
    for (let i = 0; i < 5000; i++) expect(OPENERS).not.toContain(binaryBody(8)[0]);
  });
});

describe('makeBodies', () => {
  it('writes bodies that do not open a JSON text', async () => {
    const { dir, bodies } = await makeBodies(['10k', '1m']);
    try {
      for (const b of bodies.values()) {
        const data = await readFile(b.file);
        expect(data.length).toBe(b.size);
        expect(OPENERS).not.toContain(data[0]);
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
