import { tmpdir } from 'node:os';
import { Readable } from 'node:stream';
import busboy from 'busboy';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { canonicalForm } from '../../src/engine/multipart/canonical.js';
import { boundaryOf, parseMultipart } from '../../src/engine/multipart/parse.js';
import { MultipartParser } from '../../src/engine/multipart/parser.js';
import { resolveProfile } from '../../src/engine/profile.js';
import { IcapError } from '../../src/errors.js';

const LIMITS = {
  files: 20,
  fields: 20,
  parts: 30,
  fileSize: 10_000,
  fieldSize: 5_000,
  fieldNameSize: 100,
  headerPairs: 10,
  headerSize: 2_000,
};

interface Parsed {
  parts: Array<{ name: string; filename: string | undefined; type: string | undefined; data: string }>;
  error?: { status: number | undefined; message: string };
}

/** Parses `body` fed in pieces cut at `cuts` (sorted offsets). */
function parse(boundary: string, body: Buffer, cuts: number[] = [], limits = LIMITS): Parsed {
  const p = new MultipartParser(boundary, limits);
  const parts: Parsed['parts'] = [];
  let data: Buffer[] = [];
  const take = (events: ReturnType<MultipartParser['write']>) => {
    for (const e of events) {
      if (e.type === 'part') {
        parts.push({
          name: e.head.nameBytes,
          filename: e.head.fileNameBytes,
          type: e.head.contentType,
          data: '',
        });
        data = [];
      } else if (e.type === 'data') data.push(Buffer.from(e.data));
      else if (e.type === 'end-part') parts.at(-1)!.data = Buffer.concat(data).toString('latin1');
    }
  };
  try {
    let last = 0;
    for (const c of [...cuts, body.length]) {
      if (c < last) continue;
      take(p.write(body.subarray(last, c)));
      last = c;
    }
    take(p.end());
    return { parts };
  } catch (err) {
    if (!(err instanceof IcapError)) throw err;
    // Parts already reported before the error do not matter: the request is refused.
    return { parts: [], error: { status: err.status, message: err.message } };
  }
}

const B = 'bnd';
const form = (...parts: string[]) =>
  Buffer.from(`${parts.map((p) => `--${B}\r\n${p}\r\n`).join('')}--${B}--\r\n`, 'latin1');
const file = (headers: string, content = 'hello') => `${headers}\r\n\r\n${content}`;

describe('strict multipart parser: what it accepts', () => {
  it('fields and files, with their raw bytes (no charset decoding)', () => {
    const body = form(
      file('Content-Disposition: form-data; name="a"', 'one'),
      file(
        'Content-Disposition: form-data; name=b; filename="x y.txt"\r\nContent-Type: text/plain',
        'two\r\n--bn',
      ),
      file(
        'Content-Disposition: form-data; name="c"\r\nContent-Type: text/plain; charset=x-unknown-42',
        '\xff\xfe',
      ),
      file('Content-Disposition: form-data; name="e"', ''),
    );
    expect(parse(B, body)).toEqual({
      parts: [
        { name: 'a', filename: undefined, type: undefined, data: 'one' },
        { name: 'b', filename: 'x y.txt', type: 'text/plain', data: 'two\r\n--bn' },
        { name: 'c', filename: undefined, type: 'text/plain; charset=x-unknown-42', data: '\xff\xfe' },
        { name: 'e', filename: undefined, type: undefined, data: '' },
      ],
    });
  });

  it('an empty form, and the close delimiter without a final CRLF', () => {
    expect(parse(B, Buffer.from(`--${B}--\r\n`))).toEqual({ parts: [] });
    expect(parse(B, Buffer.from(`--${B}--`))).toEqual({ parts: [] });
  });

  it('`--bnd` inside content is content when it does not start a line', () => {
    const r = parse(B, form(file('Content-Disposition: form-data; name="a"', 'x--bnd--\r\ny')));
    expect(r.parts[0]!.data).toBe('x--bnd--\r\ny');
  });
});

describe('strict multipart parser: what it refuses', () => {
  const d = 'Content-Disposition: form-data; name="f"; filename="e.com"';
  const cases: Array<[string, Buffer, RegExp, number?]> = [
    ['a file part without a name', form(file('Content-Disposition: form-data; filename="a.txt"')), /no name/],
    ['a field without a name', form(file('Content-Disposition: form-data')), /no name/],
    ['no Content-Disposition', form(file('Content-Type: text/plain')), /no Content-Disposition/],
    [
      'trailing ";"',
      form(file('Content-Disposition: form-data; name="f"; filename="m.bin";')),
      /ends with a ";"/,
    ],
    [
      'spaces around "="',
      form(file('Content-Disposition: form-data; name="f"; filename = "x"')),
      /directly by "="/,
    ],
    [
      'an unquoted non-token',
      form(file('Content-Disposition: form-data; name="f"; filename=m[1].bin')),
      /unexpected text/,
    ],
    [
      'junk after a quoted value',
      form(file('Content-Disposition: form-data; name="f"; filename="x" junk')),
      /unexpected text/,
    ],
    [
      'a backslash escape',
      form(file('Content-Disposition: form-data; name="f"; filename="a\\".exe"')),
      /backslash/,
    ],
    ['attachment', form(file('Content-Disposition: attachment; name="f"; filename="x"')), /not "form-data"/],
    ['inline', form(file('Content-Disposition: inline; name="f"')), /not "form-data"/],
    ['no disposition type', form(file('Content-Disposition: name="f"')), /unexpected text/],
    [
      'a duplicate parameter',
      form(file('Content-Disposition: form-data; name="f"; name="g"')),
      /more than once/,
    ],
    ['filename*', form(file(`${d}; filename*=UTF-8''x.exe`)), /not supported/],
    [
      'a duplicate part header',
      form(file(`${d}\r\nContent-Type: a/b\r\nContent-Type: c/d`)),
      /more than once/,
    ],
    ['a duplicate Content-Disposition', form(file(`${d}\r\n${d}`)), /more than once/],
    ['header folding', form(file(`${d}\r\n X-Fold: 1`)), /folded/],
    ['base64 transfer encoding', form(file(`${d}\r\nContent-Transfer-Encoding: base64`)), /base64/],
    [
      'quoted-printable',
      form(file(`${d}\r\nContent-Transfer-Encoding: quoted-printable`)),
      /quoted-printable/,
    ],
    ['an LF-only header line', Buffer.from(`--${B}\r\n${d}\n\r\nx\r\n--${B}--\r\n`), /bare LF/],
    [
      'an LF-only delimiter',
      Buffer.from(`--${B}\r\n${d}\r\n\r\nx\n--${B}\r\n${d}\r\n\r\ny\r\n--${B}--\r\n`),
      /bare CR or LF/,
    ],
    ['a CR-only delimiter', Buffer.from(`--${B}\r\n${d}\r\n\r\nx\r--${B}--\r\n`), /bare CR or LF/],
    [
      'text after a delimiter',
      Buffer.from(`--${B}\r\n${d}\r\n\r\nx\r\n--${B} X-Pad: 1\r\n${d}\r\n\r\ny\r\n--${B}--\r\n`),
      /followed by text/,
    ],
    [
      '--B-X after a delimiter',
      Buffer.from(`--${B}\r\n${d}\r\n\r\nx\r\n--${B}-X: 1\r\n\r\ny\r\n--${B}--\r\n`),
      /followed by text/,
    ],
    [
      'padding on the first delimiter',
      Buffer.from(`--${B} \r\n${d}\r\n\r\nx\r\n--${B}--\r\n`),
      /followed by text/,
    ],
    [
      'a header on the first delimiter line',
      Buffer.from(`--${B}X-Pad: 1\r\n${d}\r\n\r\nx\r\n--${B}--\r\n`),
      /followed by text/,
    ],
    [
      '--BQ inside content',
      form(file(d, `a\r\n--${B}Q\r\nContent-Disposition: form-data; name="g"\r\n\r\nb`)),
      /followed by text/,
    ],
    [
      'content starting with the boundary',
      Buffer.from(`--${B}\r\n${d}\r\n\r\n--${B}--\r\n`),
      /starts with its boundary/,
    ],
    ['a preamble', Buffer.concat([Buffer.from('preamble\r\n'), form(file(d))]), /data before the first part/],
    ['a leading CRLF', Buffer.concat([Buffer.from('\r\n'), form(file(d))]), /data before the first part/],
    ['an epilogue', Buffer.concat([form(file(d)), Buffer.from('epilogue')]), /data after the last part/],
    [
      'parts after the close delimiter',
      Buffer.concat([form(file(d)), form(file(d))]),
      /data after the last part/,
    ],
    ['a truncated body', Buffer.from(`--${B}\r\n${d}\r\n\r\nhalf`), /truncated/],
    ['truncated in headers', Buffer.from(`--${B}\r\n${d}`), /truncated/],
    ['an empty body', Buffer.alloc(0), /empty/],
    ['a malformed header line', form(file('Content-Disposition form-data')), /malformed/],
    ['a space before the colon', form(file('Content-Disposition : form-data; name="f"')), /malformed/],
    ['a NUL in a header', form(file('Content-Disposition: form-data; name="f\x00"')), /control/],
    ['too many header lines', form(file(`${d}${'\r\nX-A: 1'.repeat(11)}`)), /more than 10 header lines/, 413],
    ['a file over fileSize', form(file(d, 'x'.repeat(10_001))), /larger than the allowed 10000/, 413],
    [
      'a field over fieldSize',
      form(file('Content-Disposition: form-data; name="v"', 'x'.repeat(5_001))),
      /larger than the allowed 5000/,
      413,
    ],
    [
      'a long field name',
      form(file(`Content-Disposition: form-data; name="${'n'.repeat(101)}"`)),
      /field name/,
      413,
    ],
  ];
  it.each(cases)('%s', (_name, body, message, status = 400) => {
    const r = parse(B, body);
    expect(r.error?.message).toMatch(message);
    expect(r.error?.status).toBe(status);
  });

  it.each([
    ['boundary*', `multipart/form-data; boundary*=utf-8''AAA; boundary=${B}`, /boundary-like/],
    ['xboundary', `multipart/form-data; xboundary=AAA; boundary=${B}`, /boundary-like/],
    [
      'a value containing boundary=',
      `multipart/form-data; x="boundary=AAA"; boundary=${B}`,
      /containing "boundary="/,
    ],
    ['a duplicate boundary', `multipart/form-data; boundary=${B}; boundary=${B}`, /more than one boundary/],
    ['no boundary', 'multipart/form-data', /without a boundary/],
    ['a space in the boundary', 'multipart/form-data; boundary="a b"', /not valid/],
    ['a trailing ";"', `multipart/form-data; boundary=${B};`, /ends with a ";"/],
    ['spaces around "="', `multipart/form-data; boundary = ${B}`, /directly by "="/],
    ['a backslash in a quoted boundary', 'multipart/form-data; boundary="a\\b"', /backslash/],
  ])('Content-Type with %s is refused', (_name, contentType, message) => {
    expect(() => boundaryOf(contentType)).toThrow(message);
  });

  it('a quoted boundary, other parameters and OWS are fine', () => {
    expect(boundaryOf(`multipart/form-data ; charset=utf-8; boundary="${B}"`)).toBe(B);
  });
});

describe('strict multipart parser: chunking does not matter', () => {
  const piece = fc.constantFrom(
    '\r\n',
    '\r',
    '\n',
    '--',
    `--${B}`,
    `\r\n--${B}`,
    `\r\n--${B}\r\n`,
    `\r\n--${B}--`,
    `--${B}Q`,
    'Content-Disposition: form-data; name="a"',
    'Content-Disposition: form-data; name="f"; filename="x.bin"',
    'Content-Type: text/plain',
    ' ',
    'data',
    'x'.repeat(40),
  );
  const bodies = fc.oneof(
    // well-formed forms (with awkward contents)
    fc
      .array(
        fc.record({
          filename: fc.option(fc.constantFrom('a.txt', 'b c.bin'), { nil: undefined }),
          content: fc.array(piece, { maxLength: 8 }).map((a) => a.join('')),
        }),
        { maxLength: 4 },
      )
      .map((parts) =>
        form(
          ...parts.map((p, i) =>
            file(
              `Content-Disposition: form-data; name="p${i}"${p.filename ? `; filename="${p.filename}"` : ''}`,
              p.content,
            ),
          ),
        ),
      ),
    // structure soup
    fc.array(piece, { maxLength: 30 }).map((a) => Buffer.from(a.join(''))),
    // a well-formed form with a byte flipped or cut
    fc
      .tuple(fc.array(piece, { maxLength: 6 }), fc.nat(), fc.integer({ min: 0, max: 255 }), fc.boolean())
      .map(([content, at, byte, cut]) => {
        const b = form(file('Content-Disposition: form-data; name="f"; filename="x"', content.join('')));
        const i = at % b.length;
        if (cut) return b.subarray(0, i);
        const c = Buffer.from(b);
        c[i] = byte;
        return c;
      }),
  );

  it('every split of the input gives the same parts, or the same error', () => {
    fc.assert(
      fc.property(bodies, fc.array(fc.nat(), { maxLength: 6 }), (body, rawCuts) => {
        const cuts = [...new Set(rawCuts.map((c) => c % (body.length + 1)))].sort((a, b) => a - b);
        expect(parse(B, body, cuts)).toEqual(parse(B, body));
      }),
      { numRuns: 2000 },
    );
  });

  it('byte by byte gives the same result as all at once', () => {
    fc.assert(
      fc.property(bodies, (body) => {
        const every = Array.from({ length: body.length }, (_, i) => i);
        expect(parse(B, body, every)).toEqual(parse(B, body));
      }),
      { numRuns: 300 },
    );
  });

  it('what it accepts, it accepts whole: each part content holds no line starting with --bnd', () => {
    fc.assert(
      fc.property(bodies, (body) => {
        const r = parse(B, body);
        if (r.error !== undefined) return;
        for (const p of r.parts) expect(p.data).not.toMatch(/(^|[\r\n])--bnd/);
      }),
      { numRuns: 2000 },
    );
  });
});

describe('strict multipart parser: a long boundary, large chunks', () => {
  // A real boundary's length: what is carried between chunks (a partial delimiter, a header line)
  // is parsed with the start of the next chunk only, then the rest of the chunk in place.
  const L = '----WebKitFormBoundary7MA4YWxkTrZu0gW';
  const piece = fc.constantFrom(
    '\r\n',
    '\r',
    '\n',
    '-',
    '--',
    '--',
    `--${L.slice(0, 20)}`,
    `\r\n--${L.slice(0, 30)}`,
    `--${L}`,
    `\r\n--${L}`,
    `\n--${L}`,
    `\r\n--${L}\r\n`,
    `\r\n--${L}--`,
    `--${L}Q`,
    'Content-Disposition: form-data; name="a"',
    'Content-Disposition: form-data; name="f"; filename="a long file name for a long header line.bin"',
    'Content-Type: application/octet-stream',
    'x'.repeat(200),
    'y'.repeat(3000),
  );
  const longForm = (parts: Array<{ headers: string; content: string }>) =>
    Buffer.from(
      `${parts.map((p) => `--${L}\r\n${p.headers}\r\n\r\n${p.content}\r\n`).join('')}--${L}--\r\n`,
      'latin1',
    );
  const bodies = fc.oneof(
    fc
      .array(
        fc.record({
          file: fc.boolean(),
          content: fc.array(piece, { maxLength: 12 }).map((a) => a.join('')),
        }),
        { maxLength: 4 },
      )
      .map((parts) =>
        longForm(
          parts.map((p, i) => ({
            headers: `Content-Disposition: form-data; name="p${i}"${p.file ? '; filename="a.bin"' : ''}`,
            content: p.content,
          })),
        ),
      ),
    fc.array(piece, { maxLength: 30 }).map((a) => Buffer.from(a.join(''), 'latin1')),
    fc
      .tuple(fc.array(piece, { maxLength: 8 }), fc.nat(), fc.integer({ min: 0, max: 255 }))
      .map(([content, at, byte]) => {
        const b = longForm([
          { headers: 'Content-Disposition: form-data; name="f"', content: content.join('') },
        ]);
        const c = Buffer.from(b);
        c[at % c.length] = byte;
        return c;
      }),
  );

  // Sizes below the limits: which of two refusals (a size, a delimiter) comes first may depend
  // on the split, as it always did; both are refusals.
  const limits = { ...LIMITS, fileSize: 1e6, fieldSize: 1e6 };

  it('every split (into pieces of any size) gives the same parts, or the same error', () => {
    fc.assert(
      fc.property(bodies, fc.array(fc.nat(), { maxLength: 8 }), (body, rawCuts) => {
        const cuts = [...new Set(rawCuts.map((c) => c % (body.length + 1)))].sort((a, b) => a - b);
        expect(parse(L, body, cuts, limits)).toEqual(parse(L, body, [], limits));
      }),
      { numRuns: 1500 },
    );
  });

  it('fixed-size chunks (1 to 97 bytes, and 4 KiB) give the same result as all at once', () => {
    fc.assert(
      fc.property(bodies, fc.oneof(fc.integer({ min: 1, max: 97 }), fc.constant(4096)), (body, size) => {
        const cuts = [];
        for (let i = size; i < body.length; i += size) cuts.push(i);
        expect(parse(L, body, cuts, limits)).toEqual(parse(L, body, [], limits));
      }),
      { numRuns: 500 },
    );
  });
});

describe('canonical form', () => {
  const limits = { ...LIMITS };
  async function* chunks(body: Buffer, size: number) {
    for (let i = 0; i < body.length; i += size) yield body.subarray(i, i + size);
  }
  async function readAll(s: NodeJS.ReadableStream): Promise<Buffer> {
    const out: Buffer[] = [];
    for await (const c of s) out.push(c as Buffer);
    return Buffer.concat(out);
  }

  it('re-serialises what was parsed (names, file names, file content types, bytes; fields without a charset label) under a fresh boundary; busboy reads the same', async () => {
    const body = form(
      file(
        'Content-Disposition: form-data; name="t"\r\nContent-Type: text/plain; charset=utf-16be',
        '\xff\x00a',
      ),
      file(
        'Content-Disposition: form-data; name=doc; filename="r\xc3\xa9sum\xc3\xa9 1.pdf"\r\nX-Extra: 1',
        `%PDF\r\n-${B}`,
      ),
      file('Content-Disposition: form-data; name="e"; filename=""\r\nContent-Transfer-Encoding: binary', ''),
    );
    const parts = await parseMultipart(
      `multipart/form-data; boundary=${B}`,
      chunks(body, 7)[Symbol.asyncIterator](),
      {
        limits,
        storage: { memoryThreshold: 1 << 20, spoolDir: tmpdir() },
      },
      () => {},
    );
    try {
      const canon = canonicalForm(parts.map((part) => ({ part })));
      expect(canon.boundary).toMatch(/^----icapkit[0-9a-f]{32}$/);
      expect(canon.contentType).toBe(`multipart/form-data; boundary=${canon.boundary}`);
      const bytes = await readAll(canon.body);
      expect(bytes.length).toBe(canon.length);
      const c = canon.boundary;
      expect(bytes.toString('latin1')).toBe(
        `--${c}\r\nContent-Disposition: form-data; name="t"\r\n\r\n\xff\x00a\r\n` +
          `--${c}\r\nContent-Disposition: form-data; name="doc"; filename="r\xc3\xa9sum\xc3\xa9 1.pdf"\r\nContent-Type: application/octet-stream\r\n\r\n%PDF\r\n-${B}\r\n` +
          `--${c}\r\nContent-Disposition: form-data; name="e"; filename=""\r\nContent-Type: application/octet-stream\r\n\r\n\r\n` +
          `--${c}--\r\n`,
      );
      expect(parse(c, bytes).parts.map((p) => [p.name, p.filename, p.data])).toEqual([
        ['t', undefined, '\xff\x00a'],
        ['doc', 'r\xc3\xa9sum\xc3\xa9 1.pdf', `%PDF\r\n-${B}`],
        ['e', '', ''],
      ]);
      expect(parts.map((p) => [p.field, p.fileName, p.mimeType])).toEqual([
        ['t', undefined, 'text/plain'],
        ['doc', 'résumé 1.pdf', 'application/octet-stream'],
        ['e', '', 'application/octet-stream'],
      ]);
      // busboy (multer's parser) finds the same files with the same bytes.
      const files: Array<[string, string | undefined, string]> = [];
      await new Promise<void>((resolve, reject) => {
        const bb = busboy({ headers: { 'content-type': canon.contentType }, defParamCharset: 'utf8' });
        bb.on('file', (name, stream, info) => {
          const got: Buffer[] = [];
          stream.on('data', (d: Buffer) => got.push(d));
          stream.on('end', () => files.push([name, info.filename, Buffer.concat(got).toString('latin1')]));
        });
        bb.on('close', resolve);
        bb.on('error', reject);
        bb.end(bytes);
      });
      expect(files).toEqual([
        ['doc', 'résumé 1.pdf', `%PDF\r\n-${B}`],
        // (busboy reports an empty file name as undefined, still as a file)
        ['e', undefined, ''],
      ]);
    } finally {
      for (const p of parts) p.store.dispose();
    }
  });

  it('the same bytes whatever each content is: empty, small (joined to the generated bytes), large, in a temp file, or replaced', async () => {
    const big = (n: number, seed: number) =>
      Buffer.from(Array.from({ length: n }, (_, i) => (i * 31 + seed) % 256)).toString('latin1');
    const contents = ['', 'small field', big(5000, 1), big(70_000, 2), 'to be replaced', big(9000, 3)];
    const body = form(
      ...contents.map((c, i) =>
        file(`Content-Disposition: form-data; name="p${i}"${i % 2 === 1 ? `; filename="f${i}"` : ''}`, c),
      ),
    );
    const big5 = { ...limits, fileSize: 1e6, fieldSize: 1e6 };
    const parts = await parseMultipart(
      `multipart/form-data; boundary=${B}`,
      chunks(body, 1000)[Symbol.asyncIterator](),
      // Parts above 4 KiB go to a temp file.
      { limits: big5, storage: { memoryThreshold: 4096, spoolDir: tmpdir() } },
      () => {},
    );
    try {
      expect(parts.map((p) => p.store.spooled)).toEqual([false, false, true, true, false, true]);
      const replacement = Buffer.from('new content');
      const canon = canonicalForm(
        parts.map((part) =>
          part.index === 4
            ? {
                part,
                content: { stream: () => Readable.from([replacement]), length: replacement.length },
              }
            : { part },
        ),
      );
      const bytes = await readAll(canon.body);
      expect(bytes.length).toBe(canon.length);
      const c = canon.boundary;
      const expected = contents
        .map((content, i) => {
          const head =
            i % 2 === 1
              ? `Content-Disposition: form-data; name="p${i}"; filename="f${i}"\r\nContent-Type: application/octet-stream`
              : `Content-Disposition: form-data; name="p${i}"`;
          return `--${c}\r\n${head}\r\n\r\n${i === 4 ? 'new content' : content}\r\n`;
        })
        .join('');
      expect(bytes.toString('latin1')).toBe(`${expected}--${c}--\r\n`);
    } finally {
      for (const p of parts) p.store.dispose();
    }
  });

  it('a source in memory (no abort race per read) gives the same parts; an aborted signal still ends the parse with its reason', async () => {
    const body = form(
      file('Content-Disposition: form-data; name="a"', 'one'),
      file('Content-Disposition: form-data; name="f"; filename="x"', 'y'.repeat(50_000)),
    );
    const opts = (sourceInMemory: boolean) => ({
      limits: { ...limits, fileSize: 1e6 },
      storage: { memoryThreshold: 1 << 20, spoolDir: tmpdir() },
      sourceInMemory,
    });
    const read = async (inMemory: boolean) => {
      const parts = await parseMultipart(
        `multipart/form-data; boundary=${B}`,
        chunks(body, 4096)[Symbol.asyncIterator](),
        opts(inMemory),
        () => {},
        new AbortController().signal,
      );
      const out = [];
      for (const p of parts) {
        out.push([p.field, p.fileName, (await readAll(p.store.stream())).toString('latin1')]);
        p.store.dispose();
      }
      return out;
    };
    expect(await read(true)).toEqual(await read(false));
    for (const inMemory of [true, false]) {
      const ac = new AbortController();
      const seen: Array<{ store: { complete: boolean } }> = [];
      const reason = new Error('gone');
      const parse = parseMultipart(
        `multipart/form-data; boundary=${B}`,
        chunks(body, 4096)[Symbol.asyncIterator](),
        opts(inMemory),
        (part) => {
          seen.push(part);
          ac.abort(reason);
        },
        ac.signal,
      );
      await expect(parse).rejects.toBe(reason);
      // Every part store made before the abort is disposed (its bytes dropped).
      expect(seen.length).toBeGreaterThan(0);
      for (const p of seen) expect(p.store.complete).toBe(false);
    }
  });

  it('a form destroyed while it is read releases its readers (a part store can be disposed at once)', async () => {
    const body = form(file('Content-Disposition: form-data; name="f"; filename="a"', 'x'.repeat(200_000)));
    const parts = await parseMultipart(
      `multipart/form-data; boundary=${B}`,
      chunks(body, 16_384)[Symbol.asyncIterator](),
      { limits: { ...limits, fileSize: 1e6 }, storage: { memoryThreshold: 1 << 20, spoolDir: tmpdir() } },
      () => {},
    );
    const canon = canonicalForm(parts.map((part) => ({ part })));
    const first = await new Promise<Buffer>((resolve) => canon.body.once('data', resolve));
    expect(first.length).toBeGreaterThan(0);
    canon.body.destroy();
    await new Promise((resolve) => canon.body.once('close', resolve));
    for (const p of parts) p.store.dispose();
    expect(parts[0]!.store.held).toBe(0);
  });
});

describe('profile.otherMultipart', () => {
  it("defaults to 'refuse', accepts 'whole', names the field otherwise", () => {
    const base = { name: 'p', poolGroup: 'icap://127.0.0.1', serviceUri: '/avscan' };
    expect(resolveProfile(base).otherMultipart).toBe('refuse');
    expect(resolveProfile({ ...base, otherMultipart: 'whole' }).otherMultipart).toBe('whole');
    expect(() => resolveProfile({ ...base, otherMultipart: 'scan' as never })).toThrow(
      /profile\.otherMultipart.*must be one of 'refuse', 'whole'/,
    );
  });
});
