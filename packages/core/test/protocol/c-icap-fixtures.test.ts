import { readdirSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { IcapParser, type IcapRequestHead, type IcapResponseHead } from '../../src/protocol/parser.js';

/** Real c-icap 0.5.10 wire captures (see fixtures/c-icap/README.md): the parser frames every one. */
const dir = new URL('../fixtures/c-icap/', import.meta.url);
const files = readdirSync(dir).filter((f) => f.endsWith('.bin'));

function parseAll(kind: 'response' | 'request', bytes: Buffer) {
  const heads: Array<IcapResponseHead | IcapRequestHead> = [];
  const ends: boolean[] = [];
  let bodyBytes = 0;
  const parser = new IcapParser(kind, {
    onHead: (h) => heads.push(h),
    onBody: (d) => {
      bodyBytes += d.length;
    },
    onEnd: (ieof) => ends.push(ieof),
  });
  // Feed in odd-sized slices, as a socket would.
  for (let i = 0; i < bytes.length; i += 7) {
    parser.execute(bytes.subarray(i, i + 7));
    if (
      parser.done &&
      kind === 'request' &&
      heads.at(-1)?.body !== null &&
      !ends.at(-1) &&
      parser.leftover > 0
    ) {
      parser.continueBody();
    }
  }
  if (kind === 'request' && parser.done && parser.leftover > 0) parser.continueBody();
  return { heads, ends, bodyBytes, parser };
}

describe('c-icap wire captures', () => {
  it('has the captures', () => {
    expect(files.length).toBeGreaterThan(20);
  });

  for (const file of files.filter((f) => f.endsWith('.response.bin'))) {
    it(`frames ${file} completely`, () => {
      const bytes = readFileSync(new URL(file, dir));
      const { heads, parser } = parseAll('response', bytes);
      expect(heads.length).toBeGreaterThan(0);
      expect(parser.done).toBe(true);
      expect(parser.leftover).toBe(0);
      const final = heads.at(-1) as IcapResponseHead;
      if (file.includes('eicar')) {
        expect(final.status).toBe(200);
        expect(final.headers.get('x-infection-found')).toContain('Threat=Eicar-Test-Signature.UNOFFICIAL;');
        expect(final.headers.lines('x-violations-found')).toHaveLength(5);
        expect(final.httpResponse?.status).toBe(403);
      } else if (file.startsWith('reqmod-avscan-clean') && !file.includes('no204')) {
        expect(final.status).toBe(204);
        expect(final.encapsulated).toBeNull();
      } else if (file.startsWith('options-avscan')) {
        expect(final.headers.get('preview')).toBe('1024');
        expect(final.headers.get('methods')).toBe('RESPMOD, REQMOD');
      }
    });
  }

  for (const file of files.filter((f) => f.endsWith('.request.bin') && !f.includes('bad-'))) {
    it(`frames our request ${file}`, () => {
      const bytes = readFileSync(new URL(file, dir));
      const { heads, ends } = parseAll('request', bytes);
      expect(heads).toHaveLength(1);
      expect(ends.length).toBeGreaterThan(0);
    });
  }
});
