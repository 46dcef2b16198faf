/**
 * The parser's cheap readings decide as the general ones: an `Encapsulated` value written as
 * servers write it (read without split and patterns) gives the entries, or the error, that the
 * general reading gives (a frozen copy of it below); a chunk-size line of hex digits alone (read
 * from the bytes) gives the size the text reading gives, and any other line goes that way.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  IcapParser,
  type IcapResponseHead,
  parseEncapsulated,
} from '../../packages/core/src/protocol/parser.js';

/** parseEncapsulated as it was (before the canonical reading), frozen. */
function referenceEncapsulated(value: string): Array<{ name: string; offset: number }> {
  const protocol = (m: string) => new Error(m);
  const NAMES = new Set(['req-hdr', 'res-hdr', 'req-body', 'res-body', 'opt-body', 'null-body']);
  if (value === 'null-body=0') return [{ name: 'null-body', offset: 0 }];
  const entries: Array<{ name: string; offset: number }> = [];
  const seen = new Set<string>();
  for (const part of value.split(',')) {
    const m = /^\s*([A-Za-z-]+)\s*=\s*(\d{1,10})\s*$/.exec(part);
    if (m === null) throw protocol(`invalid Encapsulated header ${JSON.stringify(value.slice(0, 120))}`);
    const name = m[1]!.toLowerCase();
    if (!NAMES.has(name)) throw protocol(`unknown Encapsulated entity ${JSON.stringify(name)}`);
    if (seen.has(name)) throw protocol(`duplicate Encapsulated entity ${name}`);
    seen.add(name);
    entries.push({ name, offset: Number(m[2]) });
  }
  if (entries.length === 0) throw protocol('empty Encapsulated header');
  const bodyAt = entries.findIndex((e) => e.name.endsWith('-body'));
  if (bodyAt !== entries.length - 1)
    throw protocol(`Encapsulated must end with exactly one body entry: ${value}`);
  if (entries[0]!.offset !== 0) throw protocol(`Encapsulated offsets must start at 0: ${value}`);
  for (let k = 1; k < entries.length; k++) {
    if (entries[k]!.offset <= entries[k - 1]!.offset)
      throw protocol(`Encapsulated offsets must increase: ${value}`);
  }
  if (seen.has('req-hdr') && seen.has('res-hdr') && entries[0]!.name !== 'req-hdr') {
    throw protocol(`Encapsulated req-hdr must come before res-hdr: ${value}`);
  }
  return entries;
}

function outcome(f: () => unknown): unknown {
  try {
    return { ok: f() };
  } catch (err) {
    return { error: (err as Error).message };
  }
}

const names = fc.constantFrom(
  'req-hdr',
  'res-hdr',
  'req-body',
  'res-body',
  'opt-body',
  'null-body',
  'Req-Hdr',
  'req-bdy',
  'x',
  '',
);
const offsets = fc.oneof(
  fc.constantFrom('0', '1', '00', '123', '9999999999', '12345678901', '', '1a', '-1', ' 5'),
  fc.integer({ min: 0, max: 100_000 }).map(String),
);
const separators = fc.constantFrom(', ', ',', ' , ', ',  ', ', ');
const value = fc
  .array(fc.tuple(names, fc.constantFrom('=', ' = ', '=='), offsets, separators), {
    minLength: 1,
    maxLength: 4,
  })
  .map((parts) =>
    parts.map(([n, eq, o, sep], k) => `${n}${eq}${o}${k < parts.length - 1 ? sep : ''}`).join(''),
  );

describe('Encapsulated: the canonical reading decides as the general one', () => {
  it('on the values servers send', () => {
    for (const v of [
      'req-hdr=0, req-body=412',
      'res-hdr=0, res-body=200',
      'req-hdr=0, res-hdr=120, res-body=300',
      'req-hdr=0, null-body=75',
      'res-body=0',
      'null-body=0',
      'opt-body=0',
      'req-hdr=0, req-hdr=10, req-body=20',
      'res-hdr=0, req-hdr=10, res-body=20',
      'req-hdr=0, req-body=0',
      'req-body=12, req-hdr=0',
      'req-hdr=0, req-body=99999999999',
    ]) {
      expect(
        outcome(() => parseEncapsulated(v)),
        v,
      ).toEqual(outcome(() => referenceEncapsulated(v)));
    }
  });

  it('on generated values (5,000)', () => {
    fc.assert(
      fc.property(value, (v) => {
        expect(outcome(() => parseEncapsulated(v))).toEqual(outcome(() => referenceEncapsulated(v)));
      }),
      { numRuns: 5000 },
    );
  });
});

/** What the parser makes of a 200 whose body is one chunk with this size line (and `data`). */
function readChunk(sizeLine: string, data: Buffer): unknown {
  const got: Buffer[] = [];
  let ended = false;
  const parser = new IcapParser<IcapResponseHead>('response', {
    onHead: () => {},
    onBody: (b) => got.push(Buffer.from(b)),
    onEnd: () => {
      ended = true;
    },
  });
  const msg = Buffer.concat([
    Buffer.from('ICAP/1.0 200 OK\r\nEncapsulated: res-body=0\r\n\r\n'),
    Buffer.from(`${sizeLine}\r\n`, 'latin1'),
    data,
    Buffer.from('\r\n0\r\n\r\n'),
  ]);
  try {
    parser.execute(msg);
    return { body: Buffer.concat(got).toString('latin1'), ended };
  } catch (err) {
    return { error: (err as Error).message, body: Buffer.concat(got).toString('latin1') };
  }
}

/** The same, the size line read by the text path's rules (a frozen copy). */
function referenceChunk(sizeLine: string, data: Buffer): unknown {
  const semi = sizeLine.indexOf(';');
  const text = (semi === -1 ? sizeLine : sizeLine.slice(0, semi)).replace(/^[ \t]+|[ \t]+$/g, '');
  if (!/^[0-9a-fA-F]{1,13}$/.test(text))
    return { error: `invalid chunk size ${JSON.stringify(sizeLine.slice(0, 40))}` };
  return { size: Number.parseInt(text, 16), data };
}

describe('chunk-size lines: hex digits alone read from the bytes as the text path reads them', () => {
  it('on generated lines (3,000)', () => {
    const hex = fc.stringMatching(/^[0-9a-fA-F]{0,15}$/);
    const line = fc.oneof(
      hex,
      hex.map((h) => ` ${h}`),
      hex.map((h) => `${h}\t`),
      hex.map((h) => `${h};ext=1`),
      fc.string({ maxLength: 6 }).filter((s) => !/[\r\n]/.test(s)),
    );
    fc.assert(
      fc.property(line, (l) => {
        const ref = referenceChunk(l, Buffer.alloc(0)) as { size?: number; error?: string };
        // The size the reference reads, with that many bytes of data after it (small sizes only).
        if (ref.size !== undefined && ref.size > 4096) return;
        const data = Buffer.alloc(ref.size ?? 0, 'd');
        const got = readChunk(l, data) as { error?: string; body?: string };
        if (ref.error !== undefined) expect(got.error).toBe(ref.error);
        else if (ref.size === 0) expect(got).toMatchObject({ body: '' });
        else expect(got).toEqual({ body: data.toString('latin1'), ended: true });
      }),
      { numRuns: 3000 },
    );
  });
});
