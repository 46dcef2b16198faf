/**
 * Byte scans of the ICAP framing the parser (parser.ts) makes: where a header section ends,
 * the size on a chunk-size line. Each accepts what the parser accepts (CRLF or bare LF).
 */
import { IcapError, IcapErrorCodes } from '../errors.js';
import { trimOws } from './headers.js';

const LF = 0x0a;
const CR = 0x0d;

/**
 * The size on a chunk-size line `data[from, to)` of 1 to 13 hex digits alone, as chunkSizeLine reads it
 * (#run takes a size above 0 so; 0, the last chunk, goes to chunkSizeLine), or -1 for any other line.
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

/**
 * A chunk-size line (its line end removed) that plainHexSize did not take: its size, and
 * whether it carries the `ieof` extension (the last chunk only). Throws a PROTOCOL IcapError
 * for anything else.
 */
export function chunkSizeLine(line: string): { size: number; ieof: boolean } {
  const semi = line.indexOf(';');
  // SP and HTAB around the size are tolerated (BWS); String#trim would also take \v, \f and
  // U+00A0 (the byte 0xA0) for whitespace and accept `\v5` as a size.
  const sizeText = trimOws(semi === -1 ? line : line.slice(0, semi));
  if (!/^[0-9a-fA-F]{1,13}$/.test(sizeText))
    throw new IcapError(IcapErrorCodes.PROTOCOL, `invalid chunk size ${JSON.stringify(line.slice(0, 40))}`);
  const size = Number.parseInt(sizeText, 16);
  let ieof = false;
  if (semi !== -1) {
    for (const ext of line.slice(semi + 1).split(';')) {
      if (ext.trim().toLowerCase() === 'ieof') ieof = true;
    }
  }
  if (ieof && size !== 0) throw new IcapError(IcapErrorCodes.PROTOCOL, 'ieof extension on a non-zero chunk');
  return { size, ieof };
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
