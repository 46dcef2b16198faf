/**
 * The lexers of engine/decoded/readings.ts on their own: what they emit does not depend on how
 * the body is split into chunks, every string JSON.parse finds in a JSON text is either its own
 * bytes in the text or emitted, every value the standard urlencoded decoders make of a field is
 * either in the raw body or emitted, and the work stays linear for the worst layouts.
 */
import { isUtf8 } from 'node:buffer';
import { createRequire } from 'node:module';
import { parse as querystringParse } from 'node:querystring';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import fc from 'fast-check';
import { describe, expect, it, vi } from 'vitest';
import { fieldReadings, formReadings } from '../../src/engine/decoded/form-readings.js';
import {
  FormStrings,
  JsonStrings,
  jsonStringAccepted,
  type StringLexer,
} from '../../src/engine/decoded/readings.js';

type EmitFn = (b: Buffer, more?: boolean) => void;

/** An emit that joins a reading's parts (as the decoded strings' store does); `out` the readings. */
function collector(): { emit: EmitFn; out: Buffer[]; pending: () => number } {
  const out: Buffer[] = [];
  let parts: Buffer[] = [];
  const emit: EmitFn = (b, more) => {
    parts.push(Buffer.from(b));
    if (more === true) return;
    out.push(Buffer.concat(parts));
    parts = [];
  };
  return { emit, out, pending: () => parts.length };
}

/** What a lexer emits for these chunks, each reading whole. */
function lex(make: (emit: EmitFn) => StringLexer, chunks: Buffer[]): Buffer[] {
  const { emit, out, pending } = collector();
  const lexer = make(emit);
  for (const c of chunks) lexer.write(c);
  lexer.end();
  expect(pending()).toBe(0);
  return out;
}

function splitAt(data: Buffer, cuts: number[]): Buffer[] {
  const points = [...new Set(cuts.map((c) => c % (data.length + 1)))].sort((a, b) => a - b);
  const chunks: Buffer[] = [];
  let at = 0;
  for (const p of points) {
    chunks.push(data.subarray(at, p));
    at = p;
  }
  chunks.push(data.subarray(at));
  return chunks;
}

function stringsOf(value: unknown, out: string[] = []): string[] {
  if (typeof value === 'string') out.push(value);
  else if (Array.isArray(value)) for (const v of value) stringsOf(v, out);
  else if (value !== null && typeof value === 'object')
    for (const [k, v] of Object.entries(value)) {
      out.push(k);
      stringsOf(v, out);
    }
  return out;
}

/** JSON texts with escapes of every kind: JSON.stringify of random values, some characters \u-escaped. */
const jsonTextArb = fc
  .tuple(fc.jsonValue({ maxDepth: 3 }), fc.array(fc.nat(), { maxLength: 8 }))
  .map(([value, picks]) => {
    let text = JSON.stringify(value);
    // \u-escape a few characters inside strings (a letter stays a letter to JSON.parse).
    for (const p of picks) {
      const at = text.indexOf('"', p % Math.max(1, text.length));
      if (at === -1 || at + 1 >= text.length) continue;
      const c = text[at + 1]!;
      if (c === '"' || c === '\\') continue;
      text = `${text.slice(0, at + 1)}\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}${text.slice(at + 2)}`;
    }
    return Buffer.from(text);
  })
  .filter((b) => {
    try {
      JSON.parse(b.toString());
      return true;
    } catch {
      return false;
    }
  });

describe('JsonStrings', () => {
  it('emits the same readings however the text is chunked', () => {
    fc.assert(
      fc.property(jsonTextArb, fc.array(fc.nat(), { maxLength: 12 }), (text, cuts) => {
        const whole = lex((e) => new JsonStrings(e), [text]);
        expect(lex((e) => new JsonStrings(e), splitAt(text, cuts))).toEqual(whole);
        expect(
          lex(
            (e) => new JsonStrings(e),
            [...text].map((b) => Buffer.from([b])),
          ),
        ).toEqual(whole);
      }),
      { numRuns: 300 },
    );
  });

  it('every string JSON.parse finds is in the text as it is, or emitted', () => {
    fc.assert(
      fc.property(jsonTextArb, (text) => {
        const emitted = lex((e) => new JsonStrings(e), [text]);
        for (const s of stringsOf(JSON.parse(text.toString()))) {
          const bytes = Buffer.from(s);
          const found = text.includes(bytes) || emitted.some((r) => r.includes(bytes));
          if (!found) throw new Error(`${JSON.stringify(s)} is neither in ${text} nor emitted`);
        }
      }),
      { numRuns: 500 },
    );
  });

  it('emits nothing for a text without escapes, and the Latin-1 bytes of \\u00XX', () => {
    expect(lex((e) => new JsonStrings(e), [Buffer.from('{"a":"café","b":["x",1,{"c":"d"}]}')])).toEqual([]);
    expect(lex((e) => new JsonStrings(e), [Buffer.from('["\\u00de\\u00ad"]')])).toEqual([
      Buffer.from('Þ\u00ad'),
      Buffer.from([0xde, 0xad]),
    ]);
  });

  it('an escape split across chunks does not end the literal (\\" at a chunk boundary)', () => {
    const text = Buffer.from('{"k":"a\\"b\\u0041"}');
    const at = text.indexOf('\\');
    expect(lex((e) => new JsonStrings(e), [text.subarray(0, at + 1), text.subarray(at + 1)])).toEqual([
      Buffer.from('a"bA'),
    ]);
  });

  it('stays linear: a megabyte of escapes in one literal, and many literals, lex in well under a second', () => {
    const escapes = Buffer.from(`"${'\\n'.repeat(500_000)}"`);
    const literals = Buffer.from(`[${'"a",'.repeat(250_000)}"\\u0041"]`);
    const t0 = performance.now();
    expect(lex((e) => new JsonStrings(e), [escapes])).toHaveLength(1);
    expect(lex((e) => new JsonStrings(e), [literals])).toEqual([Buffer.from('A')]);
    // A bound far above what linear work needs (a few ms), far below quadratic (minutes).
    expect(performance.now() - t0).toBeLessThan(5_000);
  });
});

/**
 * The bytes between a literal's quotes as the lexer finds them: any byte but a quote or a
 * backslash, or an escape (a backslash and the byte it takes, a quote included), with `\u` and
 * four characters that may or may not be hex digits. Control bytes, bytes that are not UTF-8
 * and unknown escapes are frequent.
 */
const literalArb = fc
  .array(
    fc.oneof(
      fc
        .integer({ min: 0, max: 255 })
        .filter((c) => c !== 0x22 && c !== 0x5c)
        .map((c) => [c]),
      fc.constantFrom(0x00, 0x01, 0x1f, 0x20, 0x41, 0x7f, 0x80, 0xc3, 0xa9, 0xe2, 0xff).map((c) => [c]),
      fc.integer({ min: 0, max: 255 }).map((c) => [0x5c, c]),
      fc.constantFrom(...'"\\/bfnrtu'.split('')).map((c) => [0x5c, c.charCodeAt(0)]),
      fc
        .array(fc.constantFrom(...'0aF9gG "\\'.split('')), { minLength: 0, maxLength: 4 })
        .map((cs) => [0x5c, 0x75, ...cs.map((c) => c.charCodeAt(0))]),
    ),
    { maxLength: 12 },
  )
  .map((tokens) => Buffer.from(tokens.flat()))
  // A backslash last takes the closing quote: not a literal the lexer ends there.
  .filter((b) => lexedWhole(b));

/** Whether the lexer reads `"` + b + `"` as one literal ending at the last quote. */
function lexedWhole(b: Buffer): boolean {
  for (let i = 0; i < b.length; i++) {
    if (b[i] === 0x5c) {
      // A backslash last would take the closing quote.
      if (++i === b.length) return false;
    } else if (b[i] === 0x22) return false;
  }
  return true;
}

function parsesAlone(b: Buffer): boolean {
  try {
    JSON.parse(`"${b.toString('utf8')}"`);
    return true;
  } catch {
    return false;
  }
}

describe('JsonStrings: literals JSON.parse refuses', () => {
  it("jsonStringAccepted is JSON.parse's rule for a literal (property)", () => {
    fc.assert(
      fc.property(literalArb, (b) => {
        expect(jsonStringAccepted(b, 0, b.length)).toBe(parsesAlone(b));
      }),
      { numRuns: 5000 },
    );
  });

  it('emits the decoded strings of exactly the literals JSON.parse accepts one by one (property)', () => {
    fc.assert(
      fc.property(fc.array(literalArb, { maxLength: 10 }), (literals) => {
        const text = Buffer.concat([
          Buffer.from('['),
          ...literals.flatMap((l, i) => [Buffer.from(i === 0 ? '"' : ',"'), l, Buffer.from('"')]),
          Buffer.from(']'),
        ]);
        // Decoded: those with an escape or with bytes that are not UTF-8 (the others were scanned as they are).
        const expected = literals
          .filter((l) => (l.includes(0x5c) || !isUtf8(l)) && parsesAlone(l))
          .map((l) => JSON.parse(`"${l.toString('utf8')}"`) as string);
        const emitted = lex((e) => new JsonStrings(e), [text]);
        if (expected.length === 0) expect(emitted).toEqual([]);
        else expect(emitted[0]!.toString('utf8')).toBe(expected.join('\n'));
      }),
      { numRuns: 2000 },
    );
  });

  it('still decodes the good lines of NDJSON whose other lines JSON.parse refuses', () => {
    const text = Buffer.from('{"a":"\\x41"}\n{"b":"\\u0045ICAR"}\n{"c":"\u0001\\n"}\n');
    expect(lex((e) => new JsonStrings(e), [text]).map((b) => b.toString())).toEqual(['EICAR']);
  });

  it('finds the refused literals without a throw each: a megabyte of them, two parses per batch', () => {
    // A control byte in every literal: the whole batch is refused, and so is each literal.
    const body = Buffer.from(`[${'"\\n\u0001",'.repeat(150_000)}"\\u0041"]`);
    const parse = vi.spyOn(JSON, 'parse');
    try {
      expect(lex((e) => new JsonStrings(e), [body]).map((b) => b.toString())).toEqual(['A']);
      // 16 batches of 64 KiB: the batch, then the accepted literals of it (none but the last).
      expect(parse.mock.calls.length).toBeLessThanOrEqual(2 * Math.ceil(body.length / (64 * 1024)) + 2);
    } finally {
      parse.mockRestore();
    }
  });
});

/** A full garbage collection (V8's gc, exposed for this call). */
function collect(): void {
  setFlagsFromString('--expose-gc');
  (runInNewContext('gc') as () => void)();
}

describe('a literal or field sent one byte at a time', () => {
  // The reader gets each piece as the client sends it: a Buffer kept per piece cost ~140x the bytes.
  for (const [kind, make, head] of [
    ['a JSON literal', (e: EmitFn) => new JsonStrings(e), '"'],
    ['an urlencoded field', (e: EmitFn) => new FormStrings(e), 'a='],
  ] as const) {
    it(`${kind}: the heap holds about its bytes, not an object per piece, and the reading is whole`, () => {
      const n = 256 * 1024;
      // A long field's reading comes in parts (fieldReadings): joined.
      const { emit, out } = collector();
      const lexer = make(emit);
      const piece = Buffer.from('a');
      collect();
      const before = process.memoryUsage().heapUsed;
      lexer.write(Buffer.from(head));
      for (let i = 0; i < n; i++) lexer.write(piece);
      collect();
      const grown = process.memoryUsage().heapUsed - before;
      // One growing Buffer (outside the heap). A Buffer per piece: about 30 MiB of heap here.
      expect(grown).toBeLessThan(4 * 1024 * 1024);
      // The end makes it a literal (or field) that decodes differently, so it is emitted whole.
      lexer.write(Buffer.from(kind === 'a JSON literal' ? '\\n"' : '%41'));
      lexer.end();
      const expected = kind === 'a JSON literal' ? `${'a'.repeat(n)}\n` : `a=${'a'.repeat(n)}A`;
      expect(out[0]!.toString()).toBe(expected);
    });
  }
});

/** Fields written with every escape: %XX either case, +, raw UTF-8, %uXXXX, malformed %. */
const fieldArb = fc
  .array(
    fc.oneof(
      fc.constantFrom('a', 'Z', '0', '-', '.', '~', '+', '%20', '%2B', '%26', '%3D', '%25', '%zz', '%4'),
      fc.constantFrom('%C3%A9', '%c3%a9', 'é', '€', '%E2%82%AC', '%FF', '%u0041', '%80'),
    ),
    { maxLength: 12 },
  )
  .map((parts) => parts.join(''));

describe('FormStrings', () => {
  it('emits the same readings however the body is chunked', () => {
    fc.assert(
      fc.property(
        fc.array(fieldArb, { minLength: 1, maxLength: 5 }),
        fc.array(fc.nat(), { maxLength: 12 }),
        (fields, cuts) => {
          const body = Buffer.from(fields.map((f, i) => `${f}${i}=${f}`).join('&'));
          const whole = lex((e) => new FormStrings(e), [body]);
          expect(lex((e) => new FormStrings(e), splitAt(body, cuts))).toEqual(whole);
        },
      ),
      { numRuns: 300 },
    );
  });

  it("every value Node's querystring, URLSearchParams and decodeURIComponent make of a field is in the body or emitted", () => {
    fc.assert(
      fc.property(fieldArb, (field) => {
        const raw = Buffer.from(`k=${field}`);
        const emitted = formReadings(raw);
        const values: string[] = [
          ...Object.values(querystringParse(raw.toString())).flat(),
          ...new URLSearchParams(raw.toString()).values(),
          ...new URLSearchParams(raw.toString('ascii')).values(),
        ].filter((v): v is string => typeof v === 'string');
        try {
          values.push(decodeURIComponent(field.replace(/\+/g, ' ')));
        } catch {
          values.push(field.replace(/\+/g, ' '));
        }
        for (const v of values) {
          const bytes = Buffer.from(v);
          if (!raw.includes(bytes) && !emitted.some((r) => r.includes(bytes)))
            throw new Error(
              `${JSON.stringify(v)} of ${JSON.stringify(field)} is neither in the body nor emitted`,
            );
        }
      }),
      { numRuns: 1000 },
    );
  });

  it('a field without %, + or a byte above 0x7F emits nothing', () => {
    expect(lex((e) => new FormStrings(e), [Buffer.from('a=b&c=d-e.f~g')])).toEqual([]);
  });

  it("a field's Latin-1 bytes are emitted beside a field with a character above U+00FF", () => {
    // Þ and a soft hyphen (U+00DE U+00AD) in UTF-8 escapes, then ā (U+0101) in another field.
    const readings = formReadings(Buffer.from('a=%C3%9E%C2%AD&b=%C4%81'));
    expect(readings.some((r) => r.includes(Buffer.from([0xde, 0xad])))).toBe(true);
    expect(
      formReadings(Buffer.from('b=%C4%81&a=%C3%9E%C2%AD')).some((r) => r.includes(Buffer.from([0xde, 0xad]))),
    ).toBe(true);
  });

  it('every value within U+00FF a parser makes of any field is in the body or emitted in Latin-1 too, whatever its batch holds (property)', () => {
    const wide = fc.constantFrom('%C4%81', 'ā', '%E2%82%AC', '€', '%F0%9F%98%80');
    fc.assert(
      fc.property(
        fc.array(
          fc.oneof(
            fieldArb,
            fc.tuple(fieldArb, wide, fieldArb).map((p) => p.join('')),
          ),
          {
            minLength: 1,
            maxLength: 5,
          },
        ),
        fc.array(fc.nat(), { maxLength: 8 }),
        (fields, cuts) => {
          const raw = Buffer.from(fields.map((f, i) => `k${i}=${f}`).join('&'));
          const emitted = lex((e) => new FormStrings(e), splitAt(raw, cuts));
          const values: string[] = [
            ...Object.values(querystringParse(raw.toString())).flat(),
            ...new URLSearchParams(raw.toString()).values(),
          ].filter((v): v is string => typeof v === 'string');
          for (const v of values) {
            if (!/[\x80-\xff]/.test(v) || /[^\x00-\xff]/.test(v)) continue;
            const bytes = Buffer.from(v, 'latin1');
            if (!raw.includes(bytes) && !emitted.some((r) => r.includes(bytes)))
              throw new Error(
                `the Latin-1 bytes of ${JSON.stringify(v)} are neither in the body nor emitted`,
              );
          }
        },
      ),
      { numRuns: 500 },
    );
  });
});

/**
 * One field longer than a batch is read piece by piece (fieldReadings): the same readings as
 * formReadings of the whole field, byte for byte and in the same order, wherever the pieces end
 * and however the body is chunked. The bytes are the ones where pieces could go wrong: `%` and
 * `%u` escapes (cut before a `%` or five bytes after one), UTF-8 split across pieces (raw and
 * decoded), surrogate pairs from two `%uXXXX`, bytes that become `%` or `+` once formidable
 * clears their high bit (0xA5, 0xAB).
 */
describe('fieldReadings: one long field, piece by piece', () => {
  const tokenArb = fc.oneof(
    fc.constantFrom(
      'a',
      'Z',
      '0',
      'F',
      'u',
      '+',
      '%',
      '%4',
      '%41',
      '%zz',
      '%C3',
      '%A9',
      '%C3%A9',
      '%E2%82%AC',
    ),
    fc.constantFrom('%F0%9F%98%80', '%FF', '%80', '%u0041', '%uD83D', '%uDE00', '%u00e9', '%uZZ', '%25'),
    fc.constantFrom('é', '€', '😀', '\xff', '\xa5', '\xab', '\xc3', '\xa9', '\xe2\x82', '\xf0'),
    // Numeric entities (qs's interpretNumericEntities): `&` is `%26` in a field, the rest raw or
    // escaped; leading zeros, a code point above U+FFFF (65624: X by the old rule), a lone surrogate.
    fc.constantFrom('%26', '%26#', '%26%23', '#', '88', '0000', '65624', '55357', ';', '%3B', '%26#0088;'),
  );
  const rawArb = fc.array(tokenArb, { minLength: 1, maxLength: 40 }).map((t) =>
    Buffer.from(
      t.join('').replace(/\\x([0-9a-f]{2})/g, (_m, h: string) => String.fromCharCode(parseInt(h, 16))),
      'latin1',
    ),
  );
  /** Readings as fieldReadings emits them, each's parts joined. */
  function streamed(raw: Buffer, latin1: boolean, piece: number): Buffer[] {
    return lex(
      (emit) => ({
        write: () => undefined,
        end: () => fieldReadings(raw, latin1, emit, piece),
      }),
      [],
    );
  }

  it('emits what formReadings gives for the whole field (property)', () => {
    fc.assert(
      fc.property(rawArb, fc.boolean(), fc.integer({ min: 8, max: 24 }), (raw, latin1, piece) => {
        expect(streamed(raw, latin1, piece)).toEqual(formReadings(raw, latin1));
      }),
      { numRuns: 3000 },
    );
  });

  it('FormStrings reads a long field so, whatever the chunks, and the fields around it as before (property)', () => {
    fc.assert(
      fc.property(
        rawArb.filter((r) => !r.includes(0x26)),
        fc.array(fc.nat(), { maxLength: 10 }),
        fc.boolean(),
        (field, cuts, latin1) => {
          const body = Buffer.concat([Buffer.from('a=%41&long='), field, Buffer.from('&b=%42')]);
          const long = Buffer.concat([Buffer.from('long='), field]);
          const expected = [
            ...formReadings(Buffer.from('a=%41'), latin1),
            ...formReadings(long, latin1),
            ...formReadings(Buffer.from('b=%42'), latin1),
          ];
          const got = lex((e) => new FormStrings(e, latin1, 16, 8), splitAt(body, cuts));
          // A field with `%`, `+` or a high byte, longer than 16 bytes, is read on its own; any
          // other is read as a batch's field (and one without those is not read at all).
          const special = /[%+\x80-\xff]/.test(long.toString('latin1'));
          if (special && long.length > 16) expect(got).toEqual(expected);
          else expect(got).toEqual(lex((e) => new FormStrings(e, latin1), [body]));
        },
      ),
      { numRuns: 1000 },
    );
  });

  it('holds a piece per reading, not each reading whole: 8 MiB of \\xff%41 in one field', () => {
    const field = Buffer.from('\xff%41'.repeat(2 * 1024 * 1024), 'latin1');
    const body = Buffer.concat([Buffer.from('f='), field]);
    let emitted = 0;
    let parts = 0;
    let largest = 0;
    const lexer = new FormStrings((b) => {
      emitted += b.length;
      parts++;
      largest = Math.max(largest, b.length);
    });
    for (let at = 0; at < body.length; at += 65536) lexer.write(body.subarray(at, at + 65536));
    lexer.end();
    // Its readings, each with the field's name: the bytes (\xff A), their UTF-8 (U+FFFD A),
    // formidable's (\x7f A), qs's Latin-1 (ÿA in UTF-8), the field read as Latin-1 text (ÿ%41)
    // and as UTF-8 text (U+FFFD%41) in UTF-8, for qs's fall-backs: 22 bytes per 4.
    expect(emitted).toBe((22 * field.length) / 4 + 6 * 2);
    // Each part is a piece's reading (about 64 KiB of the field), not a reading of all of it.
    expect(largest).toBeLessThan(256 * 1024);
    expect(parts).toBeGreaterThan(100);
  });
});

/**
 * qs's options an application may turn on through body-parser (`defaultCharset`,
 * `charsetSentinel`, `interpretNumericEntities`) or koa-body (`queryString`): qs then reads a
 * field as Latin-1 (`%XX` as U+00XX) whatever the Content-Type says, and `&#NNN;` as a
 * character. Every value of both qs versions installed (6.17 through body-parser 2, 6.16 through
 * Express 4's body-parser 1, whose entities above U+FFFF keep their low 16 bits) is in the body
 * or emitted, for a body without a charset in its Content-Type.
 */
describe("FormStrings: qs's charset and entity options", () => {
  const qsOf = (app: string) => {
    const bodyParser = createRequire(createRequire(import.meta.url).resolve(app)).resolve('body-parser');
    return createRequire(bodyParser)('qs') as { parse(s: string, o: object): Record<string, unknown> };
  };
  const QS = [qsOf('express'), qsOf('express4')];
  const OPTIONS = [
    { charset: 'iso-8859-1' },
    { charset: 'iso-8859-1', interpretNumericEntities: true },
    { charsetSentinel: true, interpretNumericEntities: true },
    { charsetSentinel: true, charset: 'iso-8859-1', interpretNumericEntities: true, comma: true },
  ];
  const SENTINEL = 'utf8=%26%2310003%3B';
  const entityFieldArb = fc
    .array(
      fc.oneof(
        fieldArb,
        fc.constantFrom(
          '%26',
          '%26#',
          '%26%23',
          '#',
          '88',
          '0000',
          '65624',
          '55357',
          ';',
          '%3B',
          '%26#0088;',
        ),
        fc.constantFrom('%F6', '%E9', 'ö', '\xf6', ','),
      ),
      { maxLength: 8 },
    )
    .map((parts) => Buffer.from(parts.join(''), 'utf8'))
    .chain((b) => fc.constantFrom(b, Buffer.from(b.toString('utf8').replace('\xf6', ''), 'latin1')));

  /** Every string qs hands over for `raw`, read as a body-parser reads it (UTF-8 or Latin-1). */
  function qsValues(raw: Buffer): string[] {
    const out: string[] = [];
    for (const qs of QS)
      for (const options of OPTIONS)
        for (const text of [raw.toString('utf8'), raw.toString('latin1')])
          out.push(...stringsOf(qs.parse(text, { ...options, allowPrototypes: true, depth: 0 })));
    return out;
  }

  it('every value is in the body or emitted, in a batch or piece by piece (property)', () => {
    fc.assert(
      fc.property(
        fc.array(entityFieldArb, { minLength: 1, maxLength: 3 }),
        fc.boolean(),
        (fields, sentinel) => {
          const raw = Buffer.concat([
            Buffer.from(sentinel ? `${SENTINEL}&` : ''),
            ...fields.flatMap((f, i) => [Buffer.from(`${i > 0 ? '&' : ''}k${i}=`), f]),
          ]);
          const batch = lex((e) => new FormStrings(e), [raw]);
          const pieces = lex((e) => new FormStrings(e, false, 16, 8), [raw]);
          for (const v of qsValues(raw)) {
            const bytes = Buffer.from(v);
            for (const emitted of [batch, pieces])
              if (!raw.includes(bytes) && !emitted.some((r) => r.includes(bytes)))
                throw new Error(
                  `${JSON.stringify(v)} of ${JSON.stringify(raw.toString('latin1'))} is not emitted`,
                );
          }
        },
      ),
      { numRuns: 1500 },
    );
  });

  it.each([
    ['an entity, escaped', 'f=%26%2388%3B5O', 'X5O'],
    ['an entity, leading zeros and a raw #', 'f=%26#00000088;5O', 'X5O'],
    ['an entity above U+FFFF by qs 6.16 (its low 16 bits)', 'f=%26%2365624%3BY', 'XY'],
    ['an entity above U+FFFF by qs 6.17 (a surrogate pair)', 'f=%26%2365624%3BY', '\u{10058}Y'],
    ['Latin-1 chosen by the sentinel or defaultCharset', 'utf8=%26%2310003%3B&f=B%F6sartig!', 'Bösartig!'],
    ['a raw byte read as Latin-1 (defaultCharset)', 'f=B\xf6sartig!', 'Bösartig!'],
    ['raw UTF-8 beside a Latin-1 escape (the sentinel in a UTF-8 body)', 'f=\xc3\xb6%E9', 'öé'],
    ['an entity of Latin-1 escapes', 'f=%26%23246%3B%F6', 'öö'],
    // Found by the property above (CI seed 1726618969): the escapes and the raw byte decode as
    // UTF-8 (U+9B00), but the body read as UTF-8 text first has U+FFFD between the escapes,
    // decodeURIComponent throws on it, and qs hands the text over as it is.
    ['a raw byte between escapes, the text as qs falls back to it', 'f=%E9\xac%80', '%E9\ufffd%80'],
  ])('%s: %s reads %s (UTF-8)', (_c, body, expected) => {
    const want = Buffer.from(expected, 'utf8');
    const raw = Buffer.from(body, 'latin1');
    expect(formReadings(raw).some((r) => r.includes(want))).toBe(true);
    expect(lex((e) => new FormStrings(e, false, 8, 8), [raw]).some((r) => r.includes(want))).toBe(true);
  });

  it('a field without an escape above 0x7F, a raw high byte or %26 has no reading more', () => {
    // The readings of an ordinary form: its bytes and their UTF-8, nothing else.
    expect(formReadings(Buffer.from('a=%41%42+c&b=%C3%A9'))).toHaveLength(3);
    expect(formReadings(Buffer.from('a=%41%42+c&b=x%23y'))).toHaveLength(1);
  });
});
