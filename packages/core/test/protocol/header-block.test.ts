/**
 * parseHeaderBlock reads a header block in place (index ranges, no array of line strings, the
 * received lines' end found without a regular expression). It must read every block as the
 * split-based reading it replaces did (kept below as the reference): the same start line,
 * fields (names, values, folded lines), raw header lines, and the same error for a block it
 * refuses, whatever the line ends (CRLF, LF, CR alone, cut), folds and empty lines.
 */
import { isUtf8 } from 'node:buffer';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { IcapError } from '../../src/errors.js';
import { Headers, parseHeaderBlock, trimOws } from '../../src/protocol/headers.js';

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

/** The split-based reading, as it was. */
function reference(block: Buffer, what: string, charset: 'utf8-or-latin1' | 'latin1', maxFields: number) {
  const text = charset === 'latin1' || !isUtf8(block) ? block.toString('latin1') : block.toString('utf8');
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const l = lines[i]!;
    if (l.endsWith('\r')) lines[i] = l.slice(0, -1);
  }
  while (lines.length > 0 && lines[lines.length - 1] === '') lines.pop();
  const startLine = lines[0] ?? '';
  const headers = new Headers();
  let pendingName: string | undefined;
  let pendingValue = '';
  let pendingLines: string[] | undefined;
  let count = 0;
  const append = () => {
    if (pendingLines === undefined) headers.append(pendingName!, pendingValue);
    else headers.append(pendingName!, pendingLines.join(' '), pendingLines);
  };
  const truncate = (s: string) => (s.length > 80 ? `${s.slice(0, 80)}…` : s);
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i]!;
    if (line === '')
      throw new IcapError('ICAP_ERR_PROTOCOL', `${what}: empty line inside the header section`);
    const first = line.charCodeAt(0);
    if (first === 0x20 || first === 0x09) {
      if (pendingName === undefined)
        throw new IcapError('ICAP_ERR_PROTOCOL', `${what}: continuation line before any header`);
      pendingLines ??= [pendingValue];
      pendingLines.push(trimOws(line));
      continue;
    }
    if (pendingName !== undefined) append();
    pendingName = undefined;
    pendingLines = undefined;
    const colon = line.indexOf(':');
    if (colon <= 0)
      throw new IcapError(
        'ICAP_ERR_PROTOCOL',
        `${what}: malformed header line ${JSON.stringify(truncate(line))}`,
      );
    const name = line.slice(0, colon);
    if (!TOKEN.test(name))
      throw new IcapError(
        'ICAP_ERR_PROTOCOL',
        `${what}: invalid header name ${JSON.stringify(truncate(name))}`,
      );
    if (++count > maxFields)
      throw new IcapError('ICAP_ERR_HEADERS_TOO_LARGE', `${what}: more than ${maxFields} header fields`);
    pendingName = name;
    pendingValue = trimOws(line.slice(colon + 1));
  }
  if (pendingName !== undefined) append();
  const firstLineEnd = text.indexOf('\n');
  const rawHeaders = firstLineEnd === -1 ? '' : text.slice(firstLineEnd + 1).replace(/\r?\n\r?\n?$/, '\r\n');
  return { startLine, headers, rawHeaders };
}

function view(f: () => { startLine: string; headers: Headers; rawHeaders: string }) {
  try {
    const r = f();
    const fields = [...r.headers].map(([n, v]) => [n, v, r.headers.lines(n)]);
    return { startLine: r.startLine, fields, rawHeaders: r.rawHeaders };
  } catch (err) {
    return { error: err instanceof IcapError ? `${err.code} ${err.message}` : String(err) };
  }
}

const pieces = fc.constantFrom(
  'ICAP/1.0 204 No Content',
  'ISTag: "x"',
  'Encapsulated: null-body=0',
  'X-Infection-Found: Type=0; Resolution=2; Threat=EICAR;',
  'Server',
  ': v',
  'Bad Name: v',
  ' folded',
  '\tmore',
  'X:',
  'X:  a  ',
  'é: v',
  'Y: é',
  'a'.repeat(90),
  '',
  ':',
  'Z: 中文',
);
const ends = fc.constantFrom('\r\n', '\n', '\r', '\r\r\n', '', '\n\r');

describe('parseHeaderBlock', () => {
  it('reads every block as the split-based reading did', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(pieces, ends), { maxLength: 8 }),
        fc.constantFrom<'utf8-or-latin1' | 'latin1'>('utf8-or-latin1', 'latin1'),
        fc.constantFrom(1000, 2),
        fc.boolean(),
        (parts, charset, maxFields, latin1Byte) => {
          let text = parts.map(([p, e]) => p + e).join('');
          let block = Buffer.from(text, 'utf8');
          if (latin1Byte) {
            text += 'X: \xe9';
            block = Buffer.concat([block, Buffer.from('X: \xe9', 'latin1')]);
          }
          expect(view(() => parseHeaderBlock(block, 'what', charset, maxFields))).toEqual(
            view(() => reference(block, 'what', charset, maxFields)),
          );
        },
      ),
      { numRuns: 5000 },
    );
  });

  it('reads the usual answers as before', () => {
    for (const s of [
      'ICAP/1.0 204 No Content\r\nISTag: "a"\r\nEncapsulated: null-body=0\r\n\r\n',
      'ICAP/1.0 200 OK\nISTag: a\nX-Violations-Found: 1\n\tfile\n\tvirus\n\n',
      '',
      '\r\n',
      'ICAP/1.0 204',
      'ICAP/1.0 204\r\n',
      'ICAP/1.0 204\r\nA: b\r\n\r\n\r\n',
      'ICAP/1.0 204\r\nA: b\r\n\r\nB: c\r\n\r\n',
    ]) {
      const b = Buffer.from(s, 'latin1');
      expect(view(() => parseHeaderBlock(b, 'w'))).toEqual(
        view(() => reference(b, 'w', 'utf8-or-latin1', 1000)),
      );
    }
  });
});

describe('Headers.toObject (campaign-bl BL8)', () => {
  it('a field named constructor or __proto__ is a field like any other', () => {
    const o = new Headers([
      ['constructor', 'c1'],
      ['__proto__', 'p1'],
      ['__proto__', 'p2'],
      ['X-A', '1'],
    ]).toObject();
    expect(Object.getPrototypeOf(o)).toBeNull();
    expect(Object.keys(o)).toEqual(['constructor', '__proto__', 'x-a']);
    expect(o.constructor).toBe('c1');
    expect(Object.getOwnPropertyDescriptor(o, '__proto__')?.value).toEqual(['p1', 'p2']);
    expect(JSON.parse(JSON.stringify(o))).toEqual({
      constructor: 'c1',
      ['__proto__']: ['p1', 'p2'],
      'x-a': '1',
    });
  });
});
