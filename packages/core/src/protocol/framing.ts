/**
 * Byte scans of the ICAP framing the parser (parser.ts) makes: where a header section ends,
 * the size on a plain chunk-size line. Each accepts what the parser accepts (CRLF or bare LF).
 */

const LF = 0x0a;
const CR = 0x0d;

/**
 * The size on a chunk-size line `data[from, to)` of 1 to 13 hex digits alone, as #readChunkSize reads it
 * (#run takes a size above 0 so; 0, the last chunk, goes to #readChunkSize), or -1 for any other line.
 */
export function plainHexSize(data: Buffer, from: number, to: number): number {
  if (to - from < 1 || to - from > 13) return -1;
  let size = 0;
  for (let k = from; k < to; k++) {
    const d = HEX_DIGIT[data[k]!]!;
    if (d < 0) return -1;
    size = size * 16 + d;
  }
  return size;
}

/** Each byte's value as a hex digit, or -1. */
const HEX_DIGIT = new Int8Array(256).fill(-1);
for (let c = 0; c < 22; c++) HEX_DIGIT['0123456789abcdefABCDEF'.charCodeAt(c)] = c < 16 ? c : c - 6;

export function endsWithEmptyLine(b: Buffer): boolean {
  const n = b.length;
  if (n >= 2 && b[n - 1] === LF && b[n - 2] === LF) return true;
  return n >= 4 && b[n - 1] === LF && b[n - 2] === CR && b[n - 3] === LF;
}

/** Index just past the empty line ending a header section, or -1. Accepts CRLF or bare LF. */
export function findHeadEnd(data: Buffer, from: number): number {
  let i = data.indexOf(LF, from);
  while (i !== -1) {
    const next = data[i + 1];
    if (next === LF) return i + 2;
    if (next === CR) {
      if (i + 2 >= data.length) return -1;
      if (data[i + 2] === LF) return i + 3;
    }
    if (next === undefined) return -1;
    i = data.indexOf(LF, i + 1);
  }
  return -1;
}
