/**
 * Fuzzing of the ICAP message parser (the client's response parser, and the same parser in
 * request mode as the embedded server uses it).
 *
 * Inputs are generated three ways:
 * - structured: valid ICAP responses built field by field (status lines, ICAP headers with
 *   obs-fold, non-ASCII values, no space after the colon, `Encapsulated` variants, encapsulated
 *   HTTP heads, chunked bodies with extensions and `ieof`, trailers, a `100 Continue` first, a
 *   204 without `Encapsulated`), each with the fields it was built from;
 * - mutated: those messages truncated, bytes overwritten, ranges inserted, deleted or
 *   duplicated, garbage spliced in, chunk sizes replaced by huge ones, header floods;
 * - random: bytes, and sequences of ICAP-looking tokens.
 *
 * Each input is fed whole and in random splits (empty feeds included), as a response and, for
 * random input, as a request too. Properties: only IcapErrors with a stable code are thrown;
 * every input is processed within a time bound; what the parser holds (the buffers it
 * assembles with Buffer.concat) stays within its largest limit plus one feed; one piece and any
 * split give the same result (heads, body bytes, ieof, error, leftover); valid responses give
 * back exactly the fields they were built from, and every chunk byte is handed out in the feed
 * that brought it (streamed, not accumulated); chunk sizes that are not hex, or smaller than
 * their data, are refused. Deterministic tests below feed a chunk declared as 2^52-1 bytes,
 * floods of headers, chunk lines and trailers. `ICAPKIT_FUZZ_RUNS` sets the inputs per property.
 */
import { isUtf8 } from 'node:buffer';
import { IcapError, IcapErrorCodes, IcapParser, type ParserOptions } from '@icapkit/core';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { OVER_SIZE_CAP } from '../../packages/core/src/protocol/over-size.js';
import {
  cpuMsSince,
  type HeadSummary,
  type HttpHeadSummary,
  outcome,
  type ParseEvent,
  type ParseRun,
  runParser,
  trackConcat,
  untrackConcat,
} from './harness.js';
import { checkProperty, runsFor, split, timeoutFor } from './support.js';

beforeAll(trackConcat);
afterAll(untrackConcat);

const DEFAULT_MAX_HEADER = 64 * 1024;
const MAX_CHUNK_LINE = 4096;
const MAX_TRAILER = 16 * 1024;
/** What the parser may throw: anything else is a bug. */
const PARSER_CODES: readonly string[] = [IcapErrorCodes.PROTOCOL, IcapErrorCodes.HEADERS_TOO_LARGE];
/**
 * A generous bound on the CPU time of one input (they take well under a millisecond): a hang or
 * quadratic work fails it. CPU time of this process, not wall time, so a busy machine doesn't.
 */
const INPUT_MS = 2_000;

// ---------------------------------------------------------------- characters and fields

const TOKEN_CHARS = [..."!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"];
const VCHAR = Array.from({ length: 0x7e - 0x21 + 1 }, (_, i) => String.fromCharCode(0x21 + i));
const LATIN1_HIGH = Array.from({ length: 0x100 - 0x80 }, (_, i) => String.fromCharCode(0x80 + i));
/** Control characters a value may carry (everything but CR, LF and NUL). */
const CONTROLS = [...'\x01\x02\x07\x08\x0b\x0c\x1b\x1f\x7f'];

const tokenArb = fc.string({ unit: fc.constantFrom(...TOKEN_CHARS), minLength: 1, maxLength: 16 });
const headerNameArb = tokenArb.filter((n) => n.toLowerCase() !== 'encapsulated');

type Charset = 'utf8' | 'latin1';

/** One character of a field value (no CR, LF or NUL). */
function valueUnit(charset: Charset): fc.Arbitrary<string> {
  const nonAscii =
    charset === 'latin1'
      ? fc.constantFrom(...LATIN1_HIGH)
      : fc
          .string({ unit: 'binary', minLength: 1, maxLength: 1 })
          .filter((c) => c !== '\r' && c !== '\n' && c !== '\0');
  return fc.oneof(
    { weight: 12, arbitrary: fc.constantFrom(...VCHAR) },
    { weight: 3, arbitrary: fc.constantFrom(' ', '\t') },
    { weight: 3, arbitrary: nonAscii },
    { weight: 1, arbitrary: fc.constantFrom(...CONTROLS) },
  );
}

/** A field value as a sender writes it: no whitespace at either end (RFC 9110 §5.5). */
function valueArb(charset: Charset, maxLength = 40): fc.Arbitrary<string> {
  return fc.string({ unit: valueUnit(charset), maxLength }).map((s) => s.replace(/^[ \t]+|[ \t]+$/g, ''));
}

interface Field {
  name: string;
  /** Between the name and the value: `:`, `: `, `:\t`... */
  sep: string;
  value: string;
  /** obs-fold continuation lines: leading whitespace and text. */
  folds: Array<[string, string]>;
}

function fieldArb(charset: Charset, foldable = true): fc.Arbitrary<Field> {
  return fc.record({
    name: headerNameArb,
    sep: fc.constantFrom(':', ': ', ':  ', ':\t', ': \t'),
    value: valueArb(charset),
    folds: foldable
      ? fc.oneof(
          { weight: 4, arbitrary: fc.constant([] as Array<[string, string]>) },
          {
            weight: 1,
            arbitrary: fc.array(
              fc.tuple(
                fc.constantFrom(' ', '\t', '  ', ' \t'),
                valueArb(charset, 20).filter((s) => s !== ''),
              ),
              { minLength: 1, maxLength: 3 },
            ),
          },
        )
      : fc.constant([] as Array<[string, string]>),
  });
}

function fieldText(f: Field, eol: string): string {
  return `${f.name}${f.sep}${f.value}${eol}${f.folds.map(([ws, t]) => `${ws}${t}${eol}`).join('')}`;
}

/** A folded value reads as its lines joined by single spaces. */
function fieldValue(f: Field): string {
  return [f.value, ...f.folds.map(([, t]) => t)].join(' ');
}

// ---------------------------------------------------------------- encapsulated HTTP heads

interface HttpHeadSpec {
  kind: 'req' | 'res';
  line: [string, string, string];
  fields: Field[];
  eol: string;
  /** How values are written: Latin-1 bytes, or UTF-8 bytes (read back as Latin-1). */
  charset: Charset;
}

const targetArb = fc.oneof(
  fc.webPath().map((p) => (p.startsWith('/') ? p : `/${p}`)),
  fc.webUrl({ withQueryParameters: true }),
  fc.constant('*'),
);

function httpHeadArb(kind: 'req' | 'res'): fc.Arbitrary<HttpHeadSpec> {
  return fc.constantFrom<Charset>('latin1', 'utf8').chain((charset) =>
    fc.record({
      kind: fc.constant(kind),
      line:
        kind === 'req'
          ? fc.tuple(
              tokenArb,
              targetArb.filter((t) => /^\S+$/.test(t)),
              fc.constantFrom('HTTP/1.1', 'HTTP/1.0'),
            )
          : fc.tuple(
              fc.constantFrom('HTTP/1.1', 'HTTP/1.0'),
              fc.integer({ min: 100, max: 599 }).map(String),
              valueArb('latin1', 20),
            ),
      fields: fc.array(fieldArb(charset, false), { maxLength: 6 }),
      eol: fc.constantFrom('\r\n', '\r\n', '\n'),
      charset: fc.constant(charset),
    }),
  );
}

function startLineOf(h: HttpHeadSpec): string {
  if (h.kind === 'req') return h.line.join(' ');
  return h.line[2] === '' ? `${h.line[0]} ${h.line[1]}` : h.line.join(' ');
}

function httpHeadBytes(h: HttpHeadSpec): Buffer {
  const start = startLineOf(h);
  const parts = [Buffer.from(`${start}${h.eol}`, 'latin1')];
  for (const f of h.fields) parts.push(Buffer.from(fieldText(f, h.eol), h.charset));
  parts.push(Buffer.from(h.eol, 'latin1'));
  return Buffer.concat(parts);
}

function httpHeadSummary(h: HttpHeadSpec, raw: Buffer): HttpHeadSummary {
  const latin1 = (s: string) => Buffer.from(s, h.charset).toString('latin1');
  const startLine = startLineOf(h);
  return {
    startLine,
    line: h.kind === 'req' ? [...h.line] : [h.line[0], Number(h.line[1]), h.line[2]],
    headers: h.fields.map((f) => [f.name, latin1(fieldValue(f))]),
    raw: raw.toString('hex'),
  };
}

// ---------------------------------------------------------------- ICAP responses

type Layout =
  | 'none'
  | 'null'
  | 'req'
  | 'req-null'
  | 'res'
  | 'res-null'
  | 'req-res'
  | 'req-res-null'
  | 'body-only'
  | 'opt';

interface ChunkSpec {
  data: Uint8Array;
  upper: boolean;
  zeros: number;
  ext: string;
  /** Replaces the size (a malformed or wrong size). */
  sizeText?: string;
}

interface MessageSpec {
  leading: string;
  interim: Field[] | null;
  version: string;
  status: number;
  spaces: string;
  reason: string | null;
  charset: Charset;
  eol: string;
  fields: Field[];
  encapAt: number;
  encapName: string;
  encapSep: string;
  encapEq: string;
  encapUpper: boolean;
  layout: Layout;
  bodyName: 'req-body' | 'res-body';
  reqHead: HttpHeadSpec;
  resHead: HttpHeadSpec;
  chunks: ChunkSpec[];
  chunkEol: string;
  last: [string, boolean];
  trailers: Field[];
}

/** Last-chunk lines and whether they say ieof. */
const LAST_CHUNKS: Array<[string, boolean]> = [
  ['0', false],
  ['00', false],
  ['000', false],
  ['0; ieof', true],
  ['0;ieof', true],
  ['0; IEOF', true],
  ['0 ; ieof ', true],
  ['0;foo=bar; ieof', true],
  ['0;foo', false],
  ['0; ieof=1', false],
];
const CHUNK_EXTS = ['', ';a=b', '; name="q v"', ' ;x', ';ieofx', ';foo; bar=1'];

const chunkArb: fc.Arbitrary<ChunkSpec> = fc.record({
  data: fc.uint8Array({ minLength: 1, maxLength: 300 }),
  upper: fc.boolean(),
  zeros: fc.integer({ min: 0, max: 4 }),
  ext: fc.constantFrom(...CHUNK_EXTS),
});

const STATUSES = [200, 201, 202, 204, 206, 400, 403, 404, 405, 418, 500, 501, 503, 505, 539];

const messageArb: fc.Arbitrary<MessageSpec> = fc
  .record({
    status: fc.constantFrom(...STATUSES),
    charset: fc.constantFrom<Charset>('utf8', 'latin1'),
  })
  .chain(({ status, charset }) => {
    const noBody = status === 204;
    const layouts: Layout[] = noBody
      ? ['none', 'null']
      : ['none', 'null', 'req', 'req-null', 'res', 'res-null', 'req-res', 'req-res-null', 'body-only', 'opt'];
    return fc.record({
      leading: fc.constantFrom('', '', '', '\r\n', '\n', '\r\n\r\n'),
      interim: fc.option(fc.array(fieldArb(charset), { maxLength: 2 }), { freq: 4 }),
      version: fc.constantFrom('ICAP/1.0', 'ICAP/1.0', 'ICAP/1.1'),
      status: fc.constant(status),
      spaces: fc.constantFrom(' ', ' ', '  '),
      reason: fc.option(valueArb(charset, 30), { freq: 8 }),
      charset: fc.constant(charset),
      eol: fc.constantFrom('\r\n', '\r\n', '\n'),
      fields: fc.array(fieldArb(charset), { maxLength: 8 }),
      encapAt: fc.nat({ max: 8 }),
      encapName: fc.constantFrom('Encapsulated', 'encapsulated', 'ENCAPSULATED'),
      encapSep: fc.constantFrom(', ', ',', ' , ', ',  '),
      encapEq: fc.constantFrom('=', ' = ', '= '),
      encapUpper: fc.boolean(),
      layout: fc.constantFrom(...layouts),
      bodyName: fc.constantFrom<'req-body' | 'res-body'>('req-body', 'res-body'),
      reqHead: httpHeadArb('req'),
      resHead: httpHeadArb('res'),
      chunks: fc.array(chunkArb, { maxLength: 5 }),
      chunkEol: fc.constantFrom('\r\n', '\r\n', '\n'),
      last: fc.constantFrom(...LAST_CHUNKS),
      trailers: fc.option(fc.array(fieldArb('latin1', false), { minLength: 1, maxLength: 3 }), {
        freq: 5,
        nil: [],
      }),
    });
  });

interface Built {
  bytes: Buffer;
  /** The events a correct parser reports for it (before any limit is hit). */
  events: ParseEvent[];
  /**
   * Sizes the limits apply to, in the order the parser meets them, and the error past each
   * (HEADERS_TOO_LARGE for heads; a trailer section over its bound is a PROTOCOL error).
   */
  checks: Array<{ size: number; eventsBefore: number; error?: string }>;
  /** Where chunk data lies in `bytes`: [start, end) ranges. */
  dataRanges: Array<[number, number]>;
}

function sections(spec: MessageSpec): { heads: HttpHeadSpec[]; names: string[]; body: string } {
  const req = [spec.reqHead];
  const res = [spec.resHead];
  switch (spec.layout) {
    case 'none':
      return { heads: [], names: [], body: 'none' };
    case 'null':
      return { heads: [], names: [], body: 'null-body' };
    case 'req':
      return { heads: req, names: ['req-hdr'], body: 'req-body' };
    case 'req-null':
      return { heads: req, names: ['req-hdr'], body: 'null-body' };
    case 'res':
      return { heads: res, names: ['res-hdr'], body: 'res-body' };
    case 'res-null':
      return { heads: res, names: ['res-hdr'], body: 'null-body' };
    case 'req-res':
      return { heads: [...req, ...res], names: ['req-hdr', 'res-hdr'], body: 'res-body' };
    case 'req-res-null':
      return { heads: [...req, ...res], names: ['req-hdr', 'res-hdr'], body: 'null-body' };
    case 'body-only':
      return { heads: [], names: [], body: spec.bodyName };
    case 'opt':
      return { heads: [], names: [], body: 'opt-body' };
  }
}

function encodeHead(text: string, charset: Charset): Buffer {
  return Buffer.from(text, charset);
}

/** Reads a string back the way the parser decodes an ICAP header block. */
function decoder(block: Buffer, charset: Charset): (s: string) => string {
  const utf8 = isUtf8(block);
  return (s) => Buffer.from(s, charset).toString(utf8 ? 'utf8' : 'latin1');
}

function chunkLine(c: ChunkSpec): string {
  if (c.sizeText !== undefined) return `${c.sizeText}${c.ext}`;
  const hex = c.data.length.toString(16);
  return `${'0'.repeat(Math.min(c.zeros, 13 - hex.length))}${c.upper ? hex.toUpperCase() : hex}${c.ext}`;
}

function buildMessage(spec: MessageSpec): Built {
  const events: ParseEvent[] = [];
  const checks: Built['checks'] = [];
  const dataRanges: Array<[number, number]> = [];
  const parts: Buffer[] = [Buffer.from(spec.leading, 'latin1')];
  const eol = spec.eol;

  if (spec.interim !== null) {
    const text = `${spec.version} 100 Continue${eol}${spec.interim.map((f) => fieldText(f, eol)).join('')}${eol}`;
    const block = encodeHead(text, spec.charset);
    const decode = decoder(block, spec.charset);
    checks.push({ size: block.length, eventsBefore: events.length });
    parts.push(block);
    events.push({
      type: 'head',
      head: {
        kind: 'response',
        line: [spec.version, 100, 'Continue'],
        headers: spec.interim.map((f) => [f.name, decode(fieldValue(f))]),
        encapsulated: null,
        body: null,
        httpRequest: null,
        httpResponse: null,
      },
    });
  }

  const { heads, names, body } = sections(spec);
  const headBytes = heads.map(httpHeadBytes);
  const entries: Array<[string, number]> = [];
  let offset = 0;
  names.forEach((n, k) => {
    entries.push([n, offset]);
    offset += headBytes[k]!.length;
  });
  if (body !== 'none') entries.push([body, offset]);
  const encapValue = entries
    .map(([n, o]) => `${spec.encapUpper ? n.toUpperCase() : n}${spec.encapEq}${o}`)
    .join(spec.encapSep);

  const statusLine = `${spec.version}${spec.spaces}${spec.status}${spec.reason === null ? '' : ` ${spec.reason}`}`;
  const fields = [...spec.fields];
  const encapField: Field | null =
    body === 'none' ? null : { name: spec.encapName, sep: ': ', value: encapValue, folds: [] };
  if (encapField !== null) fields.splice(Math.min(spec.encapAt, fields.length), 0, encapField);
  const text = `${statusLine}${eol}${fields.map((f) => fieldText(f, eol)).join('')}${eol}`;
  const block = encodeHead(text, spec.charset);
  const decode = decoder(block, spec.charset);
  checks.push({ size: block.length, eventsBefore: events.length });
  checks.push({ size: offset, eventsBefore: events.length });
  parts.push(block, ...headBytes);

  const bodyKind = body === 'none' || body === 'null-body' ? null : body;
  const head: HeadSummary = {
    kind: 'response',
    line: [spec.version, spec.status, spec.reason === null ? '' : decode(spec.reason)],
    headers: fields.map((f) => [f.name, f === encapField ? encapValue : decode(fieldValue(f))]),
    encapsulated: body === 'none' ? null : entries,
    body: bodyKind,
    httpRequest: null,
    httpResponse: null,
  };
  heads.forEach((h, k) => {
    const summary = httpHeadSummary(h, headBytes[k]!);
    if (h.kind === 'req') head.httpRequest = summary;
    else head.httpResponse = summary;
  });
  events.push({ type: 'head', head });

  if (bodyKind === null) {
    events.push({ type: 'end', ieof: false });
  } else {
    const ce = spec.chunkEol;
    let data = '';
    for (const c of spec.chunks) {
      parts.push(Buffer.from(`${chunkLine(c)}${ce}`, 'latin1'));
      const start = parts.reduce((n, b) => n + b.length, 0);
      dataRanges.push([start, start + c.data.length]);
      parts.push(Buffer.from(c.data), Buffer.from(ce, 'latin1'));
      data += Buffer.from(c.data).toString('hex');
    }
    parts.push(Buffer.from(`${spec.last[0]}${ce}`, 'latin1'));
    let trailerSize = 0;
    for (const t of spec.trailers) {
      const line = Buffer.from(fieldText(t, ce), 'latin1');
      parts.push(line);
      trailerSize += line.length;
    }
    parts.push(Buffer.from(ce, 'latin1'));
    if (data !== '') events.push({ type: 'body', hex: data });
    // The trailer section's bound is maxHeaderSize (maxTrailerSize's default), its last empty line included.
    checks.push({
      size: trailerSize + ce.length,
      eventsBefore: events.length,
      error: IcapErrorCodes.PROTOCOL,
    });
    events.push({ type: 'end', ieof: spec.last[1] });
  }
  return { bytes: Buffer.concat(parts), events, checks, dataRanges };
}

/** What a correct parser reports for the message under `options`: its events, or a limit error. */
function expected(built: Built, options: ParserOptions): { events: ParseEvent[]; error: string | null } {
  const max = options.maxHeaderSize ?? DEFAULT_MAX_HEADER;
  for (const c of built.checks) {
    if (c.size > max)
      return {
        events: built.events.slice(0, c.eventsBefore),
        error: c.error ?? IcapErrorCodes.HEADERS_TOO_LARGE,
      };
  }
  return { events: built.events, error: null };
}

/** Whether the message has a chunked body. */
function bodyOf(spec: MessageSpec): boolean {
  const body = sections(spec).body;
  return body !== 'none' && body !== 'null-body';
}

/**
 * Chunk sizes that are not 1 to 13 hex digits, as Latin-1 bytes (SP and HTAB around a size are
 * tolerated, as BWS; no other whitespace is). `\xd9\xa5` is a UTF-8 Arabic-Indic 5.
 */
const BAD_SIZES = [
  '',
  'g',
  'x1',
  '-1',
  '+5',
  '0x10',
  '1'.repeat(14),
  'f'.repeat(20),
  '5 5',
  '\xd9\xa5',
  '\xa0',
  '\xa05',
  '\x0b5',
  '5\x0c',
  ';',
  '1_0',
];

const optionsArb: fc.Arbitrary<ParserOptions> = fc.oneof(
  { weight: 3, arbitrary: fc.constant({}) },
  { weight: 1, arbitrary: fc.record({ maxHeaderSize: fc.integer({ min: 48, max: 2048 }) }) },
);

/** Feed sizes for a split: small ones (byte by byte, a few bytes, empty feeds) and larger ones. */
const splitArb = fc.array(
  fc.oneof(
    { weight: 4, arbitrary: fc.integer({ min: 1, max: 8 }) },
    { weight: 3, arbitrary: fc.integer({ min: 9, max: 200 }) },
    { weight: 1, arbitrary: fc.constant(0) },
  ),
  { minLength: 1, maxLength: 12 },
);

// ---------------------------------------------------------------- mutations and noise

type Mutation =
  | { op: 'truncate'; at: number }
  | { op: 'set'; at: number; byte: number }
  | { op: 'insert'; at: number; bytes: Uint8Array }
  | { op: 'delete'; at: number; length: number }
  | { op: 'duplicate'; at: number; length: number }
  | { op: 'chunk-size'; which: number; size: string }
  | { op: 'flood'; count: number; line: string };

const HUGE_SIZES = [
  'fffffffffffff',
  'FFFFFFFFFFFFF',
  '7fffffffffff',
  'ffffffffffffffff',
  '10000000000000000000',
  '-1',
  '0x10',
  '+5',
  ' 5',
  '5 ',
  '',
  'g',
  '1'.repeat(40),
  `5;${'x'.repeat(MAX_CHUNK_LINE + 10)}`,
];

const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  { weight: 3, arbitrary: fc.record({ op: fc.constant('truncate' as const), at: fc.nat() }) },
  {
    weight: 3,
    arbitrary: fc.record({
      op: fc.constant('set' as const),
      at: fc.nat(),
      byte: fc.integer({ min: 0, max: 255 }),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      op: fc.constant('insert' as const),
      at: fc.nat(),
      bytes: fc.oneof(
        fc.uint8Array({ minLength: 1, maxLength: 16 }),
        fc.constantFrom(
          ...['\r\n', '\n', '\r', ':', ' ', '\t', '\r\n\r\n', '0\r\n\r\n', ';ieof', ','].map((s) =>
            Buffer.from(s),
          ),
        ),
      ),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      op: fc.constant('delete' as const),
      at: fc.nat(),
      length: fc.integer({ min: 1, max: 32 }),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      op: fc.constant('duplicate' as const),
      at: fc.nat(),
      length: fc.integer({ min: 1, max: 64 }),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      op: fc.constant('chunk-size' as const),
      which: fc.nat(),
      size: fc.constantFrom(...HUGE_SIZES),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      op: fc.constant('flood' as const),
      count: fc.constantFrom(50, 1001, 1400),
      line: fc.constantFrom(
        'X-F: 1\r\n',
        'X-Flood-Header-With-A-Long-Name: some value here\r\n',
        ' folded\r\n',
      ),
    }),
  },
);

function mutate(input: Buffer, mutations: readonly Mutation[]): Buffer {
  let b = input;
  for (const m of mutations) {
    const at = 'at' in m ? m.at % (b.length + 1) : 0;
    switch (m.op) {
      case 'truncate':
        b = b.subarray(0, at);
        break;
      case 'set':
        if (b.length > 0) {
          b = Buffer.from(b);
          b[at % b.length] = m.byte;
        }
        break;
      case 'insert':
        b = Buffer.concat([b.subarray(0, at), m.bytes, b.subarray(at)]);
        break;
      case 'delete':
        b = Buffer.concat([b.subarray(0, at), b.subarray(at + m.length)]);
        break;
      case 'duplicate':
        b = Buffer.concat([
          b.subarray(0, at + m.length),
          b.subarray(at, at + m.length),
          b.subarray(at + m.length),
        ]);
        break;
      case 'chunk-size': {
        // Replace the size of one chunk-size line (a line of hex digits after the head).
        const text = b.toString('latin1');
        const lines = [...text.matchAll(/(?<=\n)[0-9a-fA-F]+(?=[;\r\n ])/g)];
        const hit = lines.length === 0 ? undefined : lines[m.which % lines.length];
        if (hit !== undefined) {
          const i = hit.index;
          b = Buffer.concat([b.subarray(0, i), Buffer.from(m.size, 'latin1'), b.subarray(i + hit[0].length)]);
        }
        break;
      }
      case 'flood': {
        const nl = b.indexOf(0x0a);
        const i = nl === -1 ? b.length : nl + 1;
        b = Buffer.concat([b.subarray(0, i), Buffer.from(m.line.repeat(m.count), 'latin1'), b.subarray(i)]);
        break;
      }
    }
  }
  return b;
}

/** Pieces of ICAP syntax: random sequences of them reach deep parser states. */
const TOKENS = [
  'ICAP/1.0 ',
  'ICAP/1.0 200 OK\r\n',
  'ICAP/1.0 100 Continue\r\n\r\n',
  'ICAP/1.0 204 No Content\r\n',
  'REQMOD icap://h/s ICAP/1.0\r\n',
  'RESPMOD icap://h/s ICAP/1.0\r\n',
  'OPTIONS icap://h/s ICAP/1.0\r\n',
  '200',
  '100',
  '204',
  '999',
  'Encapsulated: ',
  'Encapsulated: null-body=0\r\n',
  'req-hdr=0',
  'res-hdr=0',
  'req-body=',
  'res-body=',
  'opt-body=0',
  'null-body=',
  ', ',
  '=',
  '0',
  '1',
  '12',
  '19',
  '4096',
  '99999999999',
  'HTTP/1.1 200 OK\r\n',
  'POST / HTTP/1.1\r\n',
  'Host: x\r\n',
  'Preview: 4\r\n',
  'ISTag: "x"\r\n',
  'X-A: b\r\n',
  ' fold\r\n',
  '\r\n',
  '\n',
  '\r',
  ':',
  ' ',
  '\t',
  'a',
  'f',
  'fffffffffffff',
  '0; ieof',
  ';ieof',
  '0\r\n\r\n',
  '5\r\nhello\r\n',
  '\u00e9',
  '\u00ff',
  '\0',
];

const tokenStreamArb = fc
  .array(
    fc.oneof(
      { weight: 5, arbitrary: fc.constantFrom(...TOKENS) },
      fc.string({ unit: 'binary-ascii', maxLength: 4 }),
    ),
    {
      maxLength: 80,
    },
  )
  .map((parts) => Buffer.from(parts.join(''), 'latin1'));

// ---------------------------------------------------------------- properties

/** The invariants every input must satisfy, whatever it is. */
function checkInvariants(
  kind: 'response' | 'request',
  input: Buffer,
  sizes: number[],
  options: ParserOptions,
  mode: 'single' | 'multi',
): { whole: ParseRun; pieces: ParseRun; feeds: Buffer[] } {
  // Large inputs (header floods) in pieces of a few bytes would take most of the time budget;
  // byte-by-byte feeding of the largest head is a test of its own below.
  const scale = Math.ceil(input.length / 16_384);
  const feeds = split(
    input,
    sizes.map((n) => n * scale),
  );
  const whole = runParser(kind, [input], mode, options);
  const pieces = runParser(kind, feeds, mode, options);
  for (const run of [whole, pieces]) {
    if (run.error !== null && !PARSER_CODES.includes(run.error))
      throw new Error(`unexpected error: ${run.error}`);
    if (run.cpuMs > INPUT_MS) throw new Error(`input took ${run.cpuMs.toFixed(0)} ms of CPU`);
  }
  // What the parser holds between feeds: at most its largest limit plus the feed being added.
  const limit = Math.max(options.maxHeaderSize ?? DEFAULT_MAX_HEADER, MAX_CHUNK_LINE, MAX_TRAILER);
  const largestFeed = feeds.reduce((m, f) => Math.max(m, f.length), 0);
  if (pieces.held > limit + largestFeed) {
    throw new Error(`the parser held ${pieces.held} bytes (limit ${limit}, largest feed ${largestFeed})`);
  }
  expect(outcome(pieces)).toEqual(outcome(whole));
  return { whole, pieces, feeds };
}

describe('ICAP parser fuzzing', () => {
  const valid = runsFor(1);
  it(
    `valid responses read back as the fields they were built from, whole and split (${valid} runs)`,
    () => {
      checkProperty(
        'parser: valid responses round-trip',
        fc.property(
          messageArb,
          optionsArb,
          splitArb,
          fc.uint8Array({ maxLength: 40 }),
          (spec, options, sizes, tail) => {
            const built = buildMessage(spec);
            const input = Buffer.concat([built.bytes, tail]);
            const { whole, pieces, feeds } = checkInvariants('response', input, sizes, options, 'single');
            const want = expected(built, options);
            expect({ events: whole.events, error: whole.error }).toEqual(want);
            if (want.error === null) {
              expect(whole.done).toBe(true);
              expect(whole.leftover).toBe(tail.length);
              // Streamed: after each feed, every chunk byte fed so far has been handed out.
              let fed = 0;
              feeds.forEach((f, k) => {
                fed += f.length;
                const due = built.dataRanges.reduce((n, [a, b]) => n + Math.max(0, Math.min(b, fed) - a), 0);
                expect(pieces.bodyAfterFeed[k]).toBe(due);
              });
            }
          },
        ),
        valid,
      );
    },
    timeoutFor(valid, 3000),
  );

  const streams = runsFor(0.5);
  it(
    `several messages on one connection (reset between them), whole and split (${streams} runs)`,
    () => {
      checkProperty(
        'parser: message streams',
        fc.property(fc.array(messageArb, { minLength: 1, maxLength: 3 }), splitArb, (specs, sizes) => {
          const built = specs.map(buildMessage);
          const input = Buffer.concat(built.map((b) => b.bytes));
          const { whole } = checkInvariants('response', input, sizes, {}, 'multi');
          expect(whole.error).toBe(null);
          expect(whole.events).toEqual(built.flatMap((b) => b.events));
        }),
        streams,
      );
    },
    timeoutFor(streams, 5000),
  );

  const mutated = runsFor(1);
  it(
    `mutated responses: only IcapErrors, bounded, same result in any split (${mutated} runs)`,
    () => {
      checkProperty(
        'parser: mutated responses',
        fc.property(
          messageArb,
          fc.array(mutationArb, { minLength: 1, maxLength: 4 }),
          optionsArb,
          splitArb,
          fc.constantFrom<'single' | 'multi'>('single', 'multi'),
          (spec, mutations, options, sizes, mode) => {
            const input = mutate(buildMessage(spec).bytes, mutations);
            checkInvariants('response', input, sizes, options, mode);
          },
        ),
        mutated,
      );
    },
    timeoutFor(mutated, 5000),
  );

  const broken = runsFor(0.5);
  it(
    `chunk sizes that are not hex, or smaller than the data, are refused (${broken} runs)`,
    () => {
      checkProperty(
        'parser: malformed chunk sizes',
        fc.property(
          messageArb.filter((m) => bodyOf(m) && m.chunks.length > 0),
          fc.nat(),
          fc.oneof(
            fc.constantFrom(...BAD_SIZES).map((text) => ({ text, declared: -1 })),
            fc.nat().map((n) => ({ text: '', declared: n })),
          ),
          splitArb,
          (spec, which, bad, sizes) => {
            const k = which % spec.chunks.length;
            const chunk = spec.chunks[k]!;
            const built = buildMessage(spec);
            const head = built.events.filter((e) => e.type === 'head');
            const before = Buffer.concat(spec.chunks.slice(0, k).map((c) => Buffer.from(c.data)));
            let broken: MessageSpec;
            let kept: Buffer;
            if (bad.declared < 0) {
              broken = {
                ...spec,
                chunks: spec.chunks.map((c, i) => (i === k ? { ...c, sizeText: bad.text } : c)),
              };
              kept = before;
            } else {
              // Declared shorter than the data: what follows the declared bytes is not CRLF.
              const data = Buffer.from(chunk.data.length > 1 ? chunk.data : [0x61, 0x62]);
              const declared = 1 + (bad.declared % (data.length - 1));
              if (data[declared] === 0x0a || data[declared] === 0x0d) data[declared] = 0x78;
              broken = {
                ...spec,
                chunks: spec.chunks.map((c, i) =>
                  i === k ? { ...c, data, sizeText: declared.toString(16) } : c,
                ),
              };
              kept = Buffer.concat([before, data.subarray(0, declared)]);
            }
            const { whole } = checkInvariants('response', buildMessage(broken).bytes, sizes, {}, 'single');
            const events: ParseEvent[] = [...head];
            if (kept.length > 0) events.push({ type: 'body', hex: kept.toString('hex') });
            expect({ events: whole.events, error: whole.error }).toEqual({
              events,
              error: IcapErrorCodes.PROTOCOL,
            });
          },
        ),
        broken,
      );
    },
    timeoutFor(broken, 3000),
  );

  const random = runsFor(1);
  it(
    `random bytes and token soup, as responses and as requests (${random} runs)`,
    () => {
      checkProperty(
        'parser: random input',
        fc.property(
          fc.oneof(
            fc.uint8Array({ maxLength: 600 }).map((a) => Buffer.from(a)),
            tokenStreamArb,
          ),
          fc.constantFrom<'response' | 'request'>('response', 'request'),
          optionsArb,
          splitArb,
          fc.constantFrom<'single' | 'multi'>('single', 'multi'),
          (input, kind, options, sizes, mode) => {
            checkInvariants(kind, input, sizes, options, mode);
          },
        ),
        random,
      );
    },
    timeoutFor(random, 2000),
  );
});

// ---------------------------------------------------------------- limits, deterministically

/** Counts what the parser reports; keeps nothing. */
function counting(kind: 'response' | 'request' = 'response', options: ParserOptions = {}) {
  const state = { heads: 0, body: 0, ends: 0, views: true, fed: null as Buffer | null };
  const parser = new IcapParser(
    kind,
    {
      onHead: () => {
        state.heads++;
      },
      onBody: (d) => {
        state.body += d.length;
        // Chunk data is handed out as views of the buffer being fed, never copied.
        if (state.fed !== null && d.buffer !== state.fed.buffer) state.views = false;
      },
      onEnd: () => {
        state.ends++;
      },
    },
    options,
  );
  const feed = (b: Buffer) => {
    state.fed = b;
    parser.execute(b);
  };
  return { parser, state, feed };
}

function heapAfterGc(): number {
  (globalThis as { gc?: () => void }).gc?.();
  return process.memoryUsage().heapUsed;
}

/** Feeds `piece` until the parser throws; returns the code and how many bytes it took. */
function feedUntilError(
  feed: (b: Buffer) => void,
  piece: Buffer,
  maxBytes: number,
): { code: string; fed: number } {
  let fed = 0;
  while (fed < maxBytes) {
    try {
      feed(piece);
    } catch (err) {
      return {
        code: err instanceof IcapError ? err.code : `not an IcapError: ${String(err)}`,
        fed: fed + piece.length,
      };
    }
    fed += piece.length;
  }
  return { code: 'none', fed };
}

const BLOCK_HEAD = Buffer.from(
  'ICAP/1.0 200 OK\r\nISTag: "x"\r\nEncapsulated: res-hdr=0, res-body=19\r\n\r\nHTTP/1.1 200 OK\r\n\r\n',
);

describe('ICAP parser limits (deterministic)', () => {
  it('streams a chunk declared as 2^52-1 bytes: 256 MiB through constant memory, nothing held', () => {
    const { state, feed } = counting();
    feed(Buffer.concat([BLOCK_HEAD, Buffer.from('fffffffffffff\r\n')]));
    const piece = Buffer.alloc(64 * 1024, 0x41);
    const before = heapAfterGc();
    const t0 = performance.now();
    let fed = 0;
    let held = 0;
    for (let i = 0; i < 4096; i++) {
      feed(piece);
      fed += piece.length;
      // Every byte fed is handed on at once: the parser holds none of the chunk (stop at the
      // first that it holds: a parser that accumulates would make this loop quadratic).
      held = fed - state.body;
      if (held !== 0) break;
    }
    const ms = performance.now() - t0;
    const grown = heapAfterGc() - before;
    expect({ body: state.body, held, views: state.views, ends: state.ends }).toEqual({
      body: 256 * 1024 * 1024,
      held: 0,
      views: true,
      ends: 0,
    });
    expect(grown).toBeLessThan(16 * 1024 * 1024);
    expect(ms).toBeLessThan(10_000);
  });

  it('streams half a million tiny chunks without holding more than one framing line', () => {
    const { state, feed } = counting();
    feed(BLOCK_HEAD);
    const piece = Buffer.from('1\r\nx\r\n'.repeat(10_000));
    const t0 = performance.now();
    for (let i = 0; i < 50; i++) feed(piece);
    feed(Buffer.from('0\r\n\r\n'));
    expect(state).toMatchObject({ body: 500_000, ends: 1 });
    expect(performance.now() - t0).toBeLessThan(10_000);
  });

  it.each([
    // A response's head and trailer are read on past their bound for a threat, up to OVER_SIZE_CAP
    // more bytes (protocol/over-size.ts, campaign-bs BS2).
    [
      'a header section that never ends',
      Buffer.from('ICAP/1.0 200 OK\r\nX-Pad: '),
      'a',
      64 * 1024 + OVER_SIZE_CAP,
      {},
    ],
    [
      'a header section that never ends (maxHeaderSize 1 KiB)',
      Buffer.from('ICAP/1.0 200 OK\r\nX: '),
      'a',
      1024 + OVER_SIZE_CAP,
      { maxHeaderSize: 1024 },
    ],
    [
      'endless folded lines',
      Buffer.from('ICAP/1.0 200 OK\r\nX: a\r\n'),
      ' fold\r\n',
      64 * 1024 + OVER_SIZE_CAP,
      {},
    ],
    [
      'an encapsulated head declared at 60 000 bytes, sent forever',
      Buffer.from('ICAP/1.0 200 OK\r\nEncapsulated: res-hdr=0, res-body=60000\r\n\r\nHTTP/1.1 200 OK\r\nX: '),
      'a',
      64 * 1024,
      {},
    ],
    ['a chunk-size line that never ends', BLOCK_HEAD, '1', 4096, {}],
    ['chunk extensions that never end', Buffer.concat([BLOCK_HEAD, Buffer.from('5;')]), 'x=y;', 4096, {}],
    [
      // The trailer's bound is maxHeaderSize by default (a trailer may name a threat as a head does).
      'trailers that never end',
      Buffer.concat([BLOCK_HEAD, Buffer.from('0\r\n')]),
      'X-T: 1\r\n',
      64 * 1024 + OVER_SIZE_CAP,
      {},
    ],
  ] as Array<[string, Buffer, string, number, ParserOptions]>)(
    '%s: an IcapError once the limit is passed',
    (_name, start, filler, limit, options) => {
      for (const pieceSize of [1, 7, 4096]) {
        const { feed } = counting('response', options);
        feed(start);
        const unit = Buffer.from(filler);
        const piece = Buffer.from(
          unit.toString('latin1').repeat(Math.max(1, Math.ceil(pieceSize / unit.length))),
          'latin1',
        );
        const cpu0 = process.cpuUsage();
        // Start, the limit, plus one piece, plus one framing line: by then it must have thrown.
        const r = feedUntilError(feed, piece, limit + start.length + piece.length * 2 + 64);
        expect(r.code === IcapErrorCodes.HEADERS_TOO_LARGE || r.code === IcapErrorCodes.PROTOCOL).toBe(true);
        expect(r.fed).toBeLessThanOrEqual(limit + start.length + piece.length * 2 + 64);
        expect(cpuMsSince(cpu0)).toBeLessThan(INPUT_MS);
      }
    },
  );

  it('an Encapsulated offset over maxHeaderSize is refused once maxHeaderSize bytes of it are read, no more', () => {
    const { feed } = counting();
    feed(Buffer.from('ICAP/1.0 200 OK\r\nEncapsulated: res-hdr=0, res-body=9999999999\r\n\r\n'));
    const piece = Buffer.from(`X-Pad: ${'p'.repeat(1000)}\r\n`);
    let fed = 0;
    let thrown: unknown;
    try {
      while (fed < 1024 * 1024) {
        feed(piece);
        fed += piece.length;
      }
    } catch (err) {
      thrown = err;
    }
    expect(thrown).toMatchObject({ code: IcapErrorCodes.HEADERS_TOO_LARGE });
    // Refused at the bound (64 KiB), not after a megabyte.
    expect(fed).toBeLessThanOrEqual(64 * 1024);
  });

  it('a flood of small header fields ends at 1000 fields', () => {
    const { feed } = counting();
    expect(() => feed(Buffer.from(`ICAP/1.0 204 No Content\r\n${'a:b\r\n'.repeat(2000)}\r\n`))).toThrow(
      expect.objectContaining({ code: IcapErrorCodes.HEADERS_TOO_LARGE }),
    );
  });

  it('empty lines before a message are skipped as they arrive, nothing held', () => {
    const { state, feed } = counting();
    const piece = Buffer.from('\r\n'.repeat(32 * 1024));
    for (let i = 0; i < 200; i++) feed(piece);
    feed(Buffer.from('ICAP/1.0 204 No Content\r\n\r\n'));
    expect(state).toMatchObject({ heads: 1, ends: 1 });
  });
});

describe('ICAP parser regressions found by fuzzing', () => {
  it('keeps the bytes of a header value that JavaScript calls whitespace (only SP and HTAB are trimmed)', () => {
    // Found by the round-trip property: `X: \f` read back as an empty value. String#trim strips
    // \v, \f and U+00A0; read as Latin-1, 0xA0 is the last byte of a UTF-8 `à`, so a UTF-8 file
    // name ending in `à` in an encapsulated HTTP header lost its last byte.
    const http = Buffer.concat([
      Buffer.from('POST /up HTTP/1.1\r\nX-File-Name: '),
      Buffer.from('voilà', 'utf8'),
      Buffer.from('\r\nX-Ctl:\f\r\nX-Ows: \t a \t\r\n\r\n'),
    ]);
    const run = runParser(
      'response',
      [
        Buffer.concat([
          Buffer.from(
            `ICAP/1.0 200 OK\r\nX-Nbsp: a\u00a0\r\nEncapsulated: req-hdr=0, null-body=${http.length}\r\n\r\n`,
            'latin1',
          ),
          http,
        ]),
      ],
      'single',
    );
    const head = (run.events[0] as { head: HeadSummary }).head;
    expect(head.headers[0]).toEqual(['X-Nbsp', 'a\u00a0']);
    expect(head.httpRequest?.headers).toEqual([
      ['X-File-Name', Buffer.from('voilà', 'utf8').toString('latin1')],
      ['X-Ctl', '\f'],
      ['X-Ows', 'a'],
    ]);
  });
});

describe('ICAP parser chunk sizes (regression found by fuzzing)', () => {
  it('tolerates SP and HTAB around a chunk size, and no other whitespace', () => {
    // Found: String#trim made `5\f`, `\v5` and `\xa05` (Latin-1) valid chunk sizes.
    const message = (size: string) =>
      Buffer.concat([BLOCK_HEAD, Buffer.from(`${size}\r\nhello\r\n0\r\n\r\n`, 'latin1')]);
    for (const ok of ['5', ' 5', '5 ', '\t5\t', '5 ;x']) {
      expect(runParser('response', [message(ok)], 'single')).toMatchObject({ error: null, done: true });
    }
    for (const bad of ['5\f', '\x0b5', '\xa05', '5\xa0']) {
      expect(runParser('response', [message(bad)], 'single').error).toBe(IcapErrorCodes.PROTOCOL);
    }
  });
});
