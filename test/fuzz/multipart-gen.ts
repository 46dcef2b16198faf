/**
 * A structure-aware generator of multipart request bodies for the differential fuzz: each case
 * is a model (Content-Type parameters, preamble, parts with their delimiter lines, headers and
 * content, close delimiter, epilogue, truncation, chunking) made into bytes by {@link render}.
 * The model is what fast-check shrinks, so a counterexample comes out as a small form with
 * readable pieces rather than a random byte string.
 *
 * It aims at what parsers read differently (see issue 11 and the parser differentials of
 * /work/shared/reference): boundary quoting, `boundary*=`, duplicate boundaries and other
 * parameters containing `boundary=`; delimiters with trailing junk, spaces, `-X`, LF only or no
 * line end; dispositions form-data / attachment / inline / none with name and filename spelt
 * with and without quotes, a trailing `;`, `filename*=`, junk, duplicate and folded headers;
 * charsets utf-8, latin1, x-unknown, utf-16be; Content-Transfer-Encoding base64,
 * quoted-printable, 7bit, binary; a preamble and an epilogue; the close delimiter early, late or
 * missing, parts after it; truncation; and random chunkings on the wire. Content is a unique
 * clean text or EICAR, possibly base64, quoted-printable or UTF-16 encoded, possibly behind a
 * line that looks like a delimiter.
 */
import { eicar } from '@icapkit/testing';
import fc from 'fast-check';

export const MAIN = 'AaB03x';
export const OTHER = 'Zq9';

export type Content =
  | { kind: 'text' }
  | { kind: 'empty' }
  | { kind: 'eicar' }
  | { kind: 'eicar-in-text' }
  | { kind: 'base64'; of: 'text' | 'eicar' }
  | { kind: 'qp'; of: 'text' | 'eicar' }
  | { kind: 'utf16be'; of: 'text' | 'eicar' }
  | { kind: 'latin1' }
  | { kind: 'crlf-text' }
  /** A line that starts like a delimiter inside the content, then EICAR as a part of its own. */
  | { kind: 'lookalike'; suffix: string; boundary: 'main' | 'other'; eicar: boolean };

export interface PartModel {
  boundary: 'main' | 'other';
  /** Text between the delimiter and its line end. */
  suffix: string;
  eol: string;
  headers: string[];
  headerEol: string;
  content: Content;
  /** What ends the content before the next delimiter (RFC: CRLF). */
  tail: string;
}

export interface BodyModel {
  media: string;
  params: string[];
  preamble: string;
  parts: PartModel[];
  /** Where the close delimiter goes: after this many parts (null: none). */
  closeAfter: number | null;
  closeSuffix: string;
  closeEol: string;
  epilogue: string;
  /** Keep this fraction (per mille) of the bytes; null: all. */
  truncate: number | null;
  /** Sizes of the writes on the wire (cycled). */
  pieces: number[];
  /** ms between writes (cycled). */
  pauses: number[];
  /** Makes every text unique across cases. */
  tag: string;
}

/**
 * `valid` or, with probability `wild` (per cent), `anomalous`: each input draws one rate, so
 * some inputs are well-formed forms with one odd piece and others are chaos throughout.
 */
function maybe<T>(wild: number, valid: fc.Arbitrary<T>, anomalous: fc.Arbitrary<T>): fc.Arbitrary<T> {
  if (wild <= 0) return valid;
  return fc.oneof({ weight: 100 - wild, arbitrary: valid }, { weight: wild, arbitrary: anomalous });
}

const nameSpellings: Record<string, (n: string) => string> = {
  quoted: (n) => `name="${n}"`,
  bare: (n) => `name=${n}`,
  upper: (n) => `NAME="${n}"`,
  spaced: (n) => `name = "${n}"`,
  duplicate: (n) => `name="${n}"; name="dup"`,
};

function headersArb(wild: number): fc.Arbitrary<string[]> {
  return fc
    .record({
      type: maybe(
        wild,
        fc.constant<string | null>('form-data'),
        fc.constantFrom<string | null>('FORM-DATA', 'attachment', 'inline', null),
      ),
      name: maybe(
        wild,
        fc.constant<string | null>('quoted'),
        fc.constantFrom<string | null>('bare', 'upper', 'spaced', 'duplicate', null),
      ),
      fileName: maybe(
        wild,
        fc.constantFrom<string | null>(null, 'filename="a.txt"', 'filename="e.com"'),
        fc.constantFrom<string | null>(
          'filename=a.txt',
          'filename = "x.bin"',
          'filename="m.bin";',
          'filename=m[1].bin',
          'filename="x" junk',
          `filename*=utf-8''e%C3%A9.txt`,
          `filename="a.txt"; filename*=utf-8''b.com`,
          'filename=""',
          'filename="a\\"b.txt"',
        ),
      ),
      sep: maybe(wild, fc.constant('; '), fc.constantFrom(';', ' ; ', ';\r\n ')),
      trailing: maybe(wild, fc.constant(''), fc.constantFrom(';', ' junk')),
      contentType: maybe(
        wild,
        fc.constantFrom<string | null>(
          null,
          null,
          'text/plain',
          'text/plain; charset=utf-8',
          'text/plain; charset=latin1',
          'application/octet-stream',
        ),
        fc.constantFrom<string | null>(
          'text/plain; charset=x-unknown-42',
          'text/plain; charset=utf-16be',
          'multipart/mixed; boundary=Zq9',
        ),
      ),
      // 7bit, 8bit and binary are identity encodings (RFC 2045), legal where any is.
      cte: maybe(
        wild,
        fc.constantFrom<string | null>(null, null, null, null, null, null, null, '7bit', '8bit', 'binary'),
        fc.constantFrom<string | null>('base64', 'BASE64', 'quoted-printable', '7BIT', 'x-custom'),
      ),
      extras: maybe(
        wild,
        fc.constant<string[]>([]),
        fc.array(
          fc.constantFrom(
            'X-Junk: 1',
            'Content-Disposition: form-data; name="dup"',
            'junk without colon',
            ' folded: continuation',
            'Content-Type: application/x-evil',
            'Content-Length: 3',
          ),
          { minLength: 1, maxLength: 2 },
        ),
      ),
      dispositionFirst: maybe(wild, fc.constant(true), fc.constant(false)),
      fieldIndex: fc.integer({ min: 0, max: 3 }),
    })
    .map((h) => {
      const lines: string[] = [];
      if (h.type !== null) {
        const params = [
          h.name === null ? null : nameSpellings[h.name]!(`f${h.fieldIndex}`),
          h.fileName,
        ].filter((x): x is string => x !== null);
        lines.push(`Content-Disposition: ${[h.type, ...params].join(h.sep)}${h.trailing}`);
      }
      if (h.contentType !== null) lines.push(`Content-Type: ${h.contentType}`);
      if (h.cte !== null) lines.push(`Content-Transfer-Encoding: ${h.cte}`);
      if (!h.dispositionFirst) lines.reverse();
      return [...lines, ...h.extras];
    });
}

const ofArb = fc.constantFrom<'text' | 'eicar'>('text', 'eicar');
const contentArb: fc.Arbitrary<Content> = fc.oneof(
  { weight: 4, arbitrary: fc.constant<Content>({ kind: 'text' }) },
  { weight: 4, arbitrary: fc.constant<Content>({ kind: 'eicar' }) },
  { weight: 1, arbitrary: fc.constant<Content>({ kind: 'empty' }) },
  { weight: 1, arbitrary: fc.constant<Content>({ kind: 'eicar-in-text' }) },
  { weight: 2, arbitrary: ofArb.map((of): Content => ({ kind: 'base64', of })) },
  { weight: 2, arbitrary: ofArb.map((of): Content => ({ kind: 'qp', of })) },
  { weight: 1, arbitrary: ofArb.map((of): Content => ({ kind: 'utf16be', of })) },
  { weight: 1, arbitrary: fc.constant<Content>({ kind: 'latin1' }) },
  { weight: 1, arbitrary: fc.constant<Content>({ kind: 'crlf-text' }) },
  {
    weight: 2,
    arbitrary: fc
      .record({
        suffix: fc.constantFrom('Q', 'X', ' ', '-X', '--', ''),
        boundary: fc.constantFrom<'main' | 'other'>('main', 'other'),
        eicar: fc.boolean(),
      })
      .map((l): Content => ({ kind: 'lookalike', ...l })),
  },
);

function partArb(wild: number): fc.Arbitrary<PartModel> {
  const eol = maybe(wild, fc.constant('\r\n'), fc.constantFrom('\n', ''));
  return fc.record({
    boundary: maybe(wild, fc.constant<'main' | 'other'>('main'), fc.constant<'main' | 'other'>('other')),
    suffix: maybe(
      wild,
      fc.constant(''),
      fc.constantFrom(' ', '\t', '  ', 'X', '-X', ' junk', 'Q', '-', '--x', ' X-Pad: 1'),
    ),
    eol,
    headers: headersArb(wild),
    headerEol: maybe(wild, fc.constant('\r\n'), fc.constant('\n')),
    content: contentArb,
    tail: eol,
  });
}

function modelArb(wild: number): fc.Arbitrary<BodyModel> {
  return fc
    .record({
      media: maybe(
        wild,
        fc.constant('multipart/form-data'),
        fc.constantFrom('Multipart/Form-Data', 'multipart/mixed', 'multipart/related'),
      ),
      main: maybe<string[]>(
        wild,
        fc.constantFrom([`boundary=${MAIN}`], [`boundary="${MAIN}"`]),
        fc.constantFrom([`boundary = ${MAIN}`], [`BOUNDARY=${MAIN}`], [`boundary="${MAIN}" `], []),
      ),
      extra: maybe(
        wild,
        fc.constant<string[]>([]),
        fc.array(
          fc.constantFrom(
            `boundary*=utf-8''${OTHER}`,
            `boundary=${OTHER}`,
            `xboundary=${OTHER}`,
            `x="boundary=${OTHER}"`,
            'charset=utf-8',
            `boundary="${OTHER}"`,
          ),
          { minLength: 1, maxLength: 2 },
        ),
      ),
      extraFirst: fc.boolean(),
      preamble: maybe(wild, fc.constant(''), fc.constantFrom('\r\n', 'preamble text\r\n', `--${OTHER}\r\n`)),
      parts: fc.array(partArb(wild), { minLength: 0, maxLength: 4 }),
      closeAt: maybe(
        wild,
        fc.constant<'end' | 'none' | number>('end'),
        fc.oneof(fc.constant<'end' | 'none' | number>('none'), fc.integer({ min: 0, max: 3 })),
      ),
      closeSuffix: maybe(wild, fc.constant(''), fc.constantFrom(' ', 'junk', '--')),
      closeEol: maybe(wild, fc.constant('\r\n'), fc.constantFrom('', '\n')),
      epilogue: maybe(
        wild,
        fc.constant(''),
        fc.constantFrom(
          '\r\n',
          'epilogue',
          `--${MAIN}\r\nContent-Disposition: form-data; name="late"; filename="late.com"\r\n\r\n${eicar().toString('latin1')}\r\n--${MAIN}--\r\n`,
        ),
      ),
      truncate: maybe(wild, fc.constant(null), fc.integer({ min: 0, max: 999 })),
      pieces: fc.array(fc.integer({ min: 1, max: 400 }), { minLength: 1, maxLength: 4 }),
      pauses: fc.array(fc.integer({ min: 0, max: 2 }), { minLength: 1, maxLength: 3 }),
      tag: fc.integer({ min: 0, max: 2 ** 31 - 1 }).map((n) => n.toString(36)),
    })
    .map(
      (m): BodyModel => ({
        media: m.media,
        params: m.extraFirst ? [...m.extra, ...m.main] : [...m.main, ...m.extra],
        preamble: m.preamble,
        parts: m.parts,
        closeAfter:
          m.closeAt === 'none'
            ? null
            : m.closeAt === 'end'
              ? m.parts.length
              : Math.min(m.closeAt, m.parts.length),
        closeSuffix: m.closeSuffix,
        closeEol: m.closeEol,
        epilogue: m.epilogue,
        truncate: m.truncate,
        pieces: m.pieces,
        pauses: m.pauses,
        tag: m.tag,
      }),
    );
}

/**
 * The generator: per input a rate of anomalies (none: a well-formed form with clean, EICAR or
 * encoded contents; 3 %: about one odd piece; 40 %: chaos), then the model.
 */
export const bodyModelArb: fc.Arbitrary<BodyModel> = fc.constantFrom(0, 3, 3, 10, 40).chain(modelArb);

// ---------------------------------------------------------------- rendering

function qp(data: Buffer): Buffer {
  // Every byte as =XX but for letters, with a soft line break in the middle: a scanner that
  // reads the wire bytes never sees the decoded text.
  let out = '';
  for (const [i, b] of [...data].entries()) {
    if (i === Math.floor(data.length / 2)) out += '=\r\n';
    out +=
      /[a-z]/i.test(String.fromCharCode(b)) && i % 3 !== 0
        ? String.fromCharCode(b)
        : `=${b.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return Buffer.from(out, 'latin1');
}

function utf16be(data: Buffer): Buffer {
  const out = Buffer.alloc(data.length * 2);
  for (let i = 0; i < data.length; i++) out[2 * i + 1] = data[i]!;
  return out;
}

function boundaryName(b: 'main' | 'other'): string {
  return b === 'main' ? MAIN : OTHER;
}

export function renderContent(c: Content, text: string): Buffer {
  const plain = Buffer.from(text, 'utf8');
  const pick = (of: 'text' | 'eicar') => (of === 'eicar' ? eicar() : plain);
  switch (c.kind) {
    case 'text':
      return plain;
    case 'empty':
      return Buffer.alloc(0);
    case 'eicar':
      return eicar();
    case 'eicar-in-text':
      return Buffer.concat([plain, Buffer.from(' '), eicar(), Buffer.from(' '), plain]);
    case 'base64':
      return Buffer.from(pick(c.of).toString('base64'));
    case 'qp':
      return qp(pick(c.of));
    case 'utf16be':
      return utf16be(pick(c.of));
    case 'latin1':
      return Buffer.from(`${text} caf\u00e9 \u00ff`, 'latin1');
    case 'crlf-text':
      return Buffer.from(`${text}\r\n\r\n--\r\n-${text}\n\r`);
    case 'lookalike': {
      const hidden = c.eicar ? eicar().toString('latin1') : `${text}-hidden`;
      return Buffer.from(
        `${text}\r\n--${boundaryName(c.boundary)}${c.suffix}\r\nContent-Disposition: form-data; name="hidden"; filename="h.com"\r\n\r\n${hidden}`,
        'latin1',
      );
    }
  }
}

export interface Rendered {
  contentType: string;
  body: Buffer;
}

export function render(m: BodyModel): Rendered {
  const contentType = [m.media, ...m.params].join('; ');
  const chunks: Buffer[] = [Buffer.from(m.preamble, 'latin1')];
  const close = () => Buffer.from(`--${MAIN}--${m.closeSuffix}${m.closeEol}`, 'latin1');
  m.parts.forEach((p, i) => {
    if (m.closeAfter === i) chunks.push(close());
    const head = `--${boundaryName(p.boundary)}${p.suffix}${p.eol}${p.headers.map((h) => h + p.headerEol).join('')}${p.headerEol}`;
    chunks.push(Buffer.from(head, 'latin1'));
    chunks.push(renderContent(p.content, `clean-${m.tag}-${i}`));
    chunks.push(Buffer.from(p.tail, 'latin1'));
  });
  if (m.closeAfter === m.parts.length) chunks.push(close());
  chunks.push(Buffer.from(m.epilogue, 'latin1'));
  let body = Buffer.concat(chunks);
  if (m.truncate !== null) body = body.subarray(0, Math.floor((body.length * m.truncate) / 1000));
  return { contentType, body };
}

/** A readable one-line form of a rendered case, for counterexamples. */
export function showBody(r: Rendered): string {
  return `Content-Type: ${r.contentType}\nbody (${r.body.length} bytes): ${JSON.stringify(r.body.toString('latin1'))}`;
}
