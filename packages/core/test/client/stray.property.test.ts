/**
 * What follows a body that broke its framing (client/stray.ts, HeadSieve): the bytes may be the
 * upload's own, echoed, with heads shaped like a clean answer in them, before or after the
 * server's real answer, split anywhere by TCP. Whatever they hold and however they are split,
 * the real answer's head is among the heads the sieve hands on (read for a threat), and what it
 * keeps stays bounded (campaign-ar AR1, AR3, AR4).
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { HeadSieve } from '../../src/client/stray.js';
import { salvageHeads } from '../../src/protocol/salvage.js';

const MAX = 4096;
const THREAT = 'X-Infection-Found: Type=0; Resolution=2; Threat=EICAR;';
const CLEAN = 'ICAP/1.0 204 No Content\r\nISTag: "x1"\r\nEncapsulated: null-body=0\r\n\r\n';

/** The real answer, with one of the line ends servers send. */
const answer = fc
  .constantFrom('\r\n', '\n', '\r')
  .map((eol) => `ICAP/1.0 200 OK${eol}ISTag: "x1"${eol}${THREAT}${eol}Encapsulated: null-body=0${eol}${eol}`);

/** Bytes an upload may hold: junk, line ends, clean heads, `ICAP/` where it starts no line. */
const piece = fc.oneof(
  fc.string({ maxLength: 40 }),
  fc.constantFrom('\r\n', '\n', '\r', '\r\n\r\n', 'ICAP/', 'xICAP/1.0 200 OK\r\n', CLEAN, `\n${CLEAN}`),
  fc.constant(CLEAN.repeat(200)),
  fc.constant('a'.repeat(MAX * 2)),
);
const upload = fc.array(piece, { maxLength: 30 }).map((p) => p.join(''));
/** The same without the long pieces, to be fed a byte at a time. */
const shortUpload = fc
  .array(
    fc.oneof(
      fc.string({ maxLength: 40 }),
      fc.constantFrom('\r\n', '\n', '\r', 'ICAP/', 'xICAP/1.0 200 OK\r\n', CLEAN, `\n${CLEAN}`),
    ),
    { maxLength: 20 },
  )
  .map((p) => p.join(''));

/** `bytes` cut at random points. */
function split(bytes: Buffer, cuts: number[]): Buffer[] {
  const at = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
  const parts: Buffer[] = [];
  let from = 0;
  for (const c of [...at, bytes.length]) {
    parts.push(bytes.subarray(from, c));
    from = c;
  }
  return parts;
}

function sieved(parts: Buffer[]): Buffer {
  const sieve = new HeadSieve(MAX);
  for (const p of parts) expect(sieve.add(p)).toBe(false);
  return sieve.all();
}

const namesThreat = (all: Buffer) => salvageHeads(all).some((h) => h.headers.has('x-infection-found'));

describe('HeadSieve', () => {
  it('keeps the real answer after the echoed rest of an upload, whatever it holds and however it is split', () => {
    fc.assert(
      fc.property(upload, answer, fc.array(fc.nat(), { maxLength: 20 }), (body, real, cuts) => {
        // The body broke off at a line start: then the rest of the echo, a line end, the answer.
        const bytes = Buffer.from(`${body}\r\n${real}`, 'latin1');
        const all = sieved(split(bytes, cuts));
        expect(namesThreat(all)).toBe(true);
        expect(all.length).toBeLessThanOrEqual(3 * MAX + 4 * (2 * MAX));
      }),
      { numRuns: 300 },
    );
  });

  it('keeps the real answer sent before the server echoed on', () => {
    fc.assert(
      fc.property(answer, upload, fc.array(fc.nat(), { maxLength: 20 }), (real, body, cuts) => {
        const all = sieved(split(Buffer.from(`${real}${body}`, 'latin1'), cuts));
        expect(namesThreat(all)).toBe(true);
      }),
      { numRuns: 300 },
    );
  });

  it('fed one byte at a time, keeps what it keeps fed at once', () => {
    fc.assert(
      fc.property(shortUpload, answer, (body, real) => {
        const bytes = Buffer.from(`${body}\n${real}${body}`, 'latin1');
        const ones = [...bytes].map((b) => Buffer.from([b]));
        expect(sieved(ones).equals(sieved([bytes]))).toBe(true);
      }),
      { numRuns: 100 },
    );
  });

  it('keeps no bytes that are not in a head: megabytes of body cost nothing', () => {
    const sieve = new HeadSieve(MAX);
    const junk = Buffer.alloc(64 * 1024, 0x61);
    for (let k = 0; k < 64; k++) sieve.add(junk);
    expect(sieve.all().length).toBe(0);
    sieve.add(Buffer.from(`\n${CLEAN}`));
    expect(salvageHeads(sieve.all()).map((h) => h.status)).toEqual([204]);
  });

  it('an `ICAP/` inside a line starts no head; one at the very start does', () => {
    const inLine = new HeadSieve(MAX);
    inLine.add(Buffer.from(`x${CLEAN}`));
    expect(inLine.all().length).toBe(0);
    const atStart = new HeadSieve(MAX);
    atStart.add(Buffer.from(CLEAN));
    expect(salvageHeads(atStart.all()).map((h) => h.status)).toEqual([204]);
  });
});
