import { IcapError, IcapErrorCodes } from '../../errors.js';
import type { ResolvedMultipartLimits } from '../profile.js';
import {
  type Disposition,
  IDENTITY_TRANSFER_ENCODINGS,
  type MediaType,
  parseDisposition,
  parseMediaType,
  partCharsetOf,
} from './syntax.js';

/**
 * A strict, streaming multipart/form-data parser: one pass over the raw bytes that both
 * validates the structure and extracts the parts. It replaces busboy, which skips silently
 * what it cannot parse (a part without a name, a disposition it does not understand, text after
 * a delimiter), so the application's parser (multer, @fastify/busboy, formidable) could read
 * parts the scanner never saw. Here every deviation is an error naming it (400; limits 413),
 * never a skip:
 *
 * - the body starts with `--B` CRLF (no preamble, no padding or text after any delimiter) and
 *   ends with `--B--` and at most one CRLF (no epilogue, nothing after the first close);
 * - lines end with CRLF (a bare LF or CR is refused), no header folding, every part header is
 *   `token ":" value`, none twice; Content-Disposition is `form-data` with a name (strict
 *   parameter syntax, see syntax.ts); Content-Type parses, without a charset-like parameter
 *   other than `charset`, and a file's charset keeps ASCII as is; Content-Transfer-Encoding
 *   is 7bit, 8bit or binary (others refused: formidable decodes base64, busboy does not);
 * - inside a part's content, `--B` after a CR or an LF is refused unless it is a real
 *   delimiter (CRLF `--B` then CRLF or `--`): `--BQ...`, `--B X-Pad`, LF-only delimiters are
 *   what some parser reads as structure and another as content. The same at the very start of a
 *   part's content (its CRLF would be shared with the end of the headers);
 * - every limit (parts, files, fields, sizes, header lines and bytes) is enforced.
 *
 * CPU and memory are bounded per body byte whatever the chunking: content is searched with
 * indexOf and emitted as slices of the input; at most a delimiter's length (plus 3) is carried
 * between chunks, and at most `headerSize` bytes of one part's headers are held. The result does
 * not depend on how the body is split (a property test checks every split).
 *
 * Fields are not decoded (whatever their charset): the bytes are the value, scanned and
 * delivered as they are.
 */

export type AnomalyStatus = 400 | 413;

export function multipartError(status: AnomalyStatus, message: string): IcapError {
  return new IcapError(IcapErrorCodes.MULTIPART, message, { status });
}

export interface PartHead {
  /** 0-based position in the form. */
  index: number;
  kind: 'file' | 'field';
  /** Field name and file name as byte strings (latin1), exactly as sent. */
  nameBytes: string;
  fileNameBytes: string | undefined;
  /** The part's Content-Type value as sent (byte string), if it had one. */
  contentType: string | undefined;
  media: MediaType | undefined;
  /** Part headers other than Content-Disposition, Content-Type, Content-Transfer-Encoding. */
  otherHeaders: string[];
}

export type ParseEvent =
  | { type: 'part'; head: PartHead }
  | { type: 'data'; data: Buffer }
  | { type: 'end-part' }
  | { type: 'end' };

type State = 'start' | 'headers' | 'content' | 'close' | 'done';

/** Where a header line's name ends (its ":"), when the name is one or more tchars; else -1. */
function headerNameEnd(line: string): number {
  let i = 0;
  for (; i < line.length; i++) {
    const code = line.charCodeAt(i);
    if (code >= 128 || TCHAR[code] !== 1) break;
  }
  return i > 0 && line.charCodeAt(i) === 0x3a ? i : -1;
}

/** A control character other than HTAB (what `/[\x00-\x08\x0a-\x1f\x7f]/` finds). */
export function hasControl(value: string): boolean {
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    if (c < 0x20 ? c !== 0x09 : c === 0x7f) return true;
  }
  return false;
}

function isOwsCode(code: number): boolean {
  return code === 0x20 || code === 0x09;
}

/** RFC 9110 tchar, by char code. */
const TCHAR = new Uint8Array(128);
for (const c of "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
  TCHAR[c.charCodeAt(0)] = 1;

/**
 * Part charsets in which every byte below 0x80 is that ASCII character and no byte from 0x80
 * decodes to one (in busboy, @fastify/busboy, iconv-lite and TextDecoder alike): text decoded by
 * them holds the ASCII the scanner saw in the bytes. An allow-list: any other label (UTF-16,
 * UCS-2, UTF-7, ISO-2022-JP, whose escapes vanish when decoded, `base64`, an unknown name a later
 * decoder may learn) is refused. Bare `ascii` is not in it: Node's `ascii` clears the high bit.
 */
const ASCII_SAFE_PART_CHARSET =
  /^(?:utf-?8|us-ascii|latin1|iso[-_]?8859-(?:[1-9]|1[013-6])|windows-125[0-8]|cp125[0-8])$/;

const CR = 0x0d;
const LF = 0x0a;
const DASH = 0x2d;
const EMPTY = Buffer.alloc(0);

export class MultipartParser {
  readonly #limits: ResolvedMultipartLimits;
  /** `--B`: what a delimiter looks like after its CRLF. */
  readonly #dash: Buffer;
  /** CR `--B` and LF `--B`: where `--B` inside a part's content matters (see #delimiterAt). */
  readonly #crDash: Buffer;
  readonly #lfDash: Buffer;
  #state: State = 'start';
  /** Unconsumed bytes (carried over from the previous chunk, then the new chunk). */
  #buf: Buffer = EMPTY;
  // the part being read
  #headerBytes = 0;
  #headerLines: string[] = [];
  #contentLength = 0;
  #kind: 'file' | 'field' = 'field';
  #fileName = '';
  /** Content bytes already seen of the current part (to know when `--B` is at its very start). */
  #contentSeen = 0;
  #parts = 0;
  #files = 0;
  #fields = 0;

  /**
   * Whole mode: the application gets the bytes as sent, so part headers that make parsers
   * transform content are refused too: any Content-Transfer-Encoding (RFC 7578 §4.7: senders
   * must not; formidable crashes on `7bit`), and a field charset other than UTF-8/US-ASCII
   * (busboy and @fastify/busboy decode it into text the scanner never saw as such), also on a
   * part with `filename=""` (a field to busboy).
   */
  readonly #asSent: boolean;

  constructor(boundary: string, limits: ResolvedMultipartLimits, options: { asSent?: boolean } = {}) {
    this.#dash = Buffer.from(`--${boundary}`, 'latin1');
    this.#crDash = Buffer.from(`\r--${boundary}`, 'latin1');
    this.#lfDash = Buffer.from(`\n--${boundary}`, 'latin1');
    this.#limits = limits;
    this.#asSent = options.asSent ?? false;
  }

  /** Parses a chunk; returns what it found. Throws ICAP_ERR_MULTIPART on an anomaly. */
  write(chunk: Buffer): ParseEvent[] {
    const out: ParseEvent[] = [];
    if (this.#state === 'done') throw multipartError(400, 'multipart body continues after its end');
    if (this.#buf.length === 0) {
      this.#buf = chunk;
      this.#run(out, false);
      return out;
    }
    // Bytes carried over from the last chunk (a possible delimiter's start, a header line in
    // progress): parse them with only the first bytes of this chunk (a seam), not a copy of the
    // whole chunk. Once what is left unparsed lies within this chunk, the rest is parsed in
    // place. The same parse as one concatenated buffer: any split gives the same result.
    let pos = 0;
    let step = this.#dash.length + 3;
    for (;;) {
      const take = Math.min(step, chunk.length - pos);
      this.#buf = Buffer.concat([this.#buf, chunk.subarray(pos, pos + take)]);
      pos += take;
      this.#run(out, false);
      if (pos === chunk.length) return out;
      const left = this.#buf.length;
      if (left <= take) break;
      // Still parsing carried bytes (a long header line): a larger seam (bounded by headerSize).
      step *= 2;
    }
    // What is left unparsed is the seam's tail, so the same bytes as this chunk's before `pos`.
    this.#buf = chunk.subarray(pos - this.#buf.length);
    this.#run(out, false);
    return out;
  }

  /** The body ended: returns the last events, or throws when the form is incomplete. */
  end(): ParseEvent[] {
    const out: ParseEvent[] = [];
    this.#run(out, true);
    if (this.#state === 'close' || this.#state === 'done') {
      this.#state = 'done';
      out.push({ type: 'end' });
      return out;
    }
    if (this.#state === 'start' && this.#buf.length === 0)
      throw multipartError(400, 'multipart body is empty');
    throw multipartError(
      400,
      'multipart body does not end with its closing boundary (truncated, or not a complete form)',
    );
  }

  #run(out: ParseEvent[], atEnd: boolean): void {
    let progress = true;
    while (progress) {
      switch (this.#state) {
        case 'start':
          progress = this.#start(out, atEnd);
          break;
        case 'headers':
          progress = this.#headers(out, atEnd);
          break;
        case 'content':
          progress = this.#content(out, atEnd);
          break;
        case 'close':
          this.#close(atEnd);
          progress = false;
          break;
        case 'done':
          progress = false;
          break;
      }
    }
  }

  /** The first delimiter, at the very first byte. */
  #start(out: ParseEvent[], atEnd: boolean): boolean {
    const d = this.#dash;
    const buf = this.#buf;
    const have = Math.min(buf.length, d.length);
    if (!buf.subarray(0, have).equals(d.subarray(0, have)))
      throw multipartError(
        400,
        'multipart body does not start with its boundary (data before the first part)',
      );
    if (buf.length < d.length + 2) {
      if (atEnd && buf.length > 0)
        throw multipartError(400, 'multipart body does not end with its closing boundary (truncated)');
      return false;
    }
    this.#buf = buf.subarray(d.length);
    return this.#afterDelimiter(out);
  }

  /** Right after `--B`: CRLF (a part follows) or `--` (the end); anything else is refused. */
  #afterDelimiter(_out: ParseEvent[]): boolean {
    const buf = this.#buf;
    if (buf[0] === CR && buf[1] === LF) {
      this.#buf = buf.subarray(2);
      this.#beginPart();
      return true;
    }
    if (buf[0] === DASH && buf[1] === DASH) {
      this.#buf = buf.subarray(2);
      this.#state = 'close';
      return true;
    }
    throw multipartError(
      400,
      'multipart boundary delimiter is followed by text other than CRLF or "--" (padding or a header on the delimiter line)',
    );
  }

  #beginPart(): void {
    if (++this.#parts > this.#limits.parts)
      throw multipartError(413, `more than ${this.#limits.parts} parts`);
    this.#state = 'headers';
    this.#headerBytes = 0;
    this.#headerLines = [];
  }

  #headers(out: ParseEvent[], atEnd: boolean): boolean {
    const limits = this.#limits;
    const buf = this.#buf;
    // Lines are read at offsets into the buffer (no view per line); it is cut once, at the end.
    let at = 0;
    for (;;) {
      const lf = buf.indexOf(LF, at);
      if (lf === -1) {
        if (at !== 0) this.#buf = buf.subarray(at);
        if (this.#headerBytes + (buf.length - at) > limits.headerSize)
          throw multipartError(413, `part headers larger than ${limits.headerSize} bytes`);
        if (atEnd)
          throw multipartError(
            400,
            'multipart body does not end with its closing boundary (truncated in part headers)',
          );
        return false;
      }
      this.#headerBytes += lf - at + 1;
      if (this.#headerBytes > limits.headerSize)
        throw multipartError(413, `part headers larger than ${limits.headerSize} bytes`);
      if (lf === at || buf[lf - 1] !== CR)
        throw multipartError(400, 'a part header line ends with a bare LF (CRLF is required)');
      // The line is [at, lf - 1); its first CR must be the one before the LF.
      if (buf.indexOf(CR, at) < lf - 1) throw multipartError(400, 'a part header line contains a bare CR');
      const lineStart = at;
      at = lf + 1;
      if (lf - 1 === lineStart) {
        this.#buf = buf.subarray(at);
        this.#endHeaders(out);
        return true;
      }
      if (this.#headerLines.length >= limits.headerPairs)
        throw multipartError(413, `a part has more than ${limits.headerPairs} header lines`);
      this.#headerLines.push(buf.toString('latin1', lineStart, lf - 1));
    }
  }

  #endHeaders(out: ParseEvent[]): void {
    const limits = this.#limits;
    // The three headers read here, and the names of the others (to refuse any header twice).
    let dispValue: string | undefined;
    let contentType: string | undefined;
    let cte: string | undefined;
    let othersSeen: Set<string> | undefined;
    const otherHeaders: string[] = [];
    for (const line of this.#headerLines) {
      if (line[0] === ' ' || line[0] === '\t')
        throw multipartError(400, 'a part header is folded over more than one line (obsolete line folding)');
      // `token ":" OWS value OWS`: the name is the tchars before the first ":".
      const colon = headerNameEnd(line);
      if (colon === -1)
        throw multipartError(400, `a part header is malformed: ${JSON.stringify(line.slice(0, 60))}`);
      const rawName = line.slice(0, colon);
      let vs = colon + 1;
      let ve = line.length;
      while (vs < ve && isOwsCode(line.charCodeAt(vs))) vs++;
      while (ve > vs && isOwsCode(line.charCodeAt(ve - 1))) ve--;
      const name = rawName.toLowerCase();
      const value = line.slice(vs, ve);
      // Control characters (NUL, DEL...) other than HTAB have no business in a header value.
      if (hasControl(value)) throw multipartError(400, `part header "${rawName}" has a control character`);
      let twice: boolean;
      if (name === 'content-disposition') {
        twice = dispValue !== undefined;
        dispValue = value;
      } else if (name === 'content-type') {
        twice = contentType !== undefined;
        contentType = value;
      } else if (name === 'content-transfer-encoding') {
        twice = cte !== undefined;
        cte = value;
      } else {
        othersSeen ??= new Set();
        twice = othersSeen.has(name);
        othersSeen.add(name);
        if (!twice) otherHeaders.push(line);
      }
      if (twice) throw multipartError(400, `a part has the header "${rawName}" more than once`);
    }
    if (dispValue === undefined) throw multipartError(400, 'a part has no Content-Disposition header');
    const disp: Disposition | string = parseDisposition(dispValue);
    if (typeof disp === 'string') throw multipartError(400, `a part header is malformed: ${disp}`);
    if (disp.name === undefined)
      throw multipartError(400, 'a part has no name (Content-Disposition without name=)');
    if (disp.name.length > limits.fieldNameSize)
      throw multipartError(413, `a field name is longer than the allowed ${limits.fieldNameSize} bytes`);
    let media: MediaType | undefined;
    if (contentType !== undefined) {
      const parsed = parseMediaType(contentType, "a part's Content-Type");
      if (typeof parsed === 'string') throw multipartError(400, `a part header is malformed: ${parsed}`);
      media = parsed;
    }
    if (cte !== undefined && !IDENTITY_TRANSFER_ENCODINGS.has(cte.toLowerCase()))
      throw multipartError(
        400,
        `a part has Content-Transfer-Encoding ${JSON.stringify(cte)} (only 7bit, 8bit and binary are accepted)`,
      );
    const kind = disp.filename !== undefined ? 'file' : 'field';
    const charset = media === undefined ? undefined : partCharsetOf(media);
    if (typeof charset === 'object')
      throw multipartError(400, `a part header is malformed: ${charset.problem}`);
    // busboy (multer) reads a part as a file only when its filename is not empty
    // (`if (disp.params.filename)`): `filename=""` is a field to it, decoded by the part's charset,
    // while @fastify/busboy, formidable and undici keep it a file of raw bytes. Such a part gets
    // the rules of both.
    const readAsField = kind === 'field' || disp.filename === '';
    if (this.#asSent) {
      if (cte !== undefined)
        throw multipartError(
          400,
          'a part has a Content-Transfer-Encoding header (not accepted when the form is passed as sent)',
        );
      if (readAsField && charset !== undefined && charset !== 'utf-8' && charset !== 'us-ascii')
        throw multipartError(
          400,
          `a field has charset ${JSON.stringify(charset)} (parsers would decode it; only UTF-8 is accepted when the form is passed as sent)`,
        );
      // @fastify/multipart JSON.parses a field labelled application/json (its escapes decoded into
      // a value the scanner never saw as such: campaign-bj BJ1).
      if (readAsField && media?.type.includes('json'))
        throw multipartError(
          400,
          `a field has Content-Type ${JSON.stringify(media.type)} (parsers would decode it as JSON; not accepted when the form is passed as sent: send the field without a Content-Type)`,
        );
    }
    // A file's Content-Type reaches the application as sent in both modes (a field's is dropped
    // in per-file mode, see canonical.ts, and checked above in whole mode): busboy decodes an
    // empty-filename file by it, and a handler may decode a text upload by its label. Only
    // charsets that keep ASCII as the bytes the scanner saw are accepted (UTF-16/32, UCS-2,
    // UTF-7, ISO-2022-*, base64... are refused, whatever the filename).
    if (kind === 'file' && charset !== undefined && !ASCII_SAFE_PART_CHARSET.test(charset))
      throw multipartError(
        400,
        `a file part has charset ${JSON.stringify(charset)} (parsers would decode it into text the scanner never saw; only UTF-8, US-ASCII, ISO-8859-* and windows-125* are accepted)`,
      );
    if (kind === 'file' && ++this.#files > limits.files)
      throw multipartError(413, `more than ${limits.files} files`);
    if (kind === 'field' && ++this.#fields > limits.fields)
      throw multipartError(413, `more than ${limits.fields} fields`);
    this.#kind = kind;
    this.#fileName = disp.filename ?? '';
    this.#contentLength = 0;
    this.#contentSeen = 0;
    out.push({
      type: 'part',
      head: {
        index: this.#parts - 1,
        kind,
        nameBytes: disp.name,
        fileNameBytes: disp.filename,
        contentType,
        media,
        otherHeaders,
      },
    });
    this.#state = 'content';
  }

  #emit(out: ParseEvent[], data: Buffer): void {
    if (data.length === 0) return;
    this.#contentLength += data.length;
    this.#contentSeen += data.length;
    const limits = this.#limits;
    if (this.#kind === 'file' && this.#contentLength > limits.fileSize)
      throw multipartError(
        413,
        `file "${Buffer.from(this.#fileName, 'latin1').toString('utf8')}" is larger than the allowed ${limits.fileSize} bytes`,
      );
    if (this.#kind === 'field' && this.#contentLength > limits.fieldSize)
      throw multipartError(413, `a field is larger than the allowed ${limits.fieldSize} bytes`);
    out.push({ type: 'data', data });
  }

  /**
   * A part's content, up to its delimiter (CRLF `--B` CRLF or CRLF `--B--`). `--B` anywhere
   * after a CR or LF (or at the start of the content) that is not such a delimiter is refused.
   */
  #content(out: ParseEvent[], atEnd: boolean): boolean {
    const d = this.#dash;
    const buf = this.#buf;
    const j = this.#delimiterAt(buf);
    if (j !== -1) {
      // Position of `--B` within this part's content.
      const at = this.#contentSeen + j;
      if (at === 0)
        throw multipartError(400, "a part's content starts with its boundary (ambiguous delimiter)");
      // Past the start, `--B` was found right after a CR or an LF (buf[j - 1]).
      const b1 = buf[j - 1];
      const b2 = j >= 2 ? buf[j - 2] : undefined;
      if (!(at >= 2 && b2 === CR && b1 === LF))
        throw multipartError(
          400,
          "a line in a part's content starts with the boundary after a bare CR or LF (read as a delimiter by some parsers)",
        );
      if (buf.length < j + d.length + 2) {
        if (atEnd)
          throw multipartError(400, 'multipart body does not end with its closing boundary (truncated)');
        // Wait for the two bytes after `--B`; emit what is surely content.
        this.#emit(out, buf.subarray(0, j - 2));
        this.#buf = buf.subarray(j - 2);
        return false;
      }
      this.#emit(out, buf.subarray(0, j - 2));
      out.push({ type: 'end-part' });
      this.#buf = buf.subarray(j + d.length);
      return this.#afterDelimiter(out);
    }
    if (atEnd) throw multipartError(400, 'multipart body does not end with its closing boundary (truncated)');
    // Keep what a delimiter starting in the next chunk could still need: its CRLF and a partial `--B`.
    const keep = this.#keep(buf);
    // All of it content (the usual middle of a file): the buffer itself, no view of it.
    this.#emit(out, keep === 0 ? buf : buf.subarray(0, buf.length - keep));
    this.#buf = keep === 0 ? EMPTY : Buffer.from(buf.subarray(buf.length - keep));
    return false;
  }

  /**
   * Where the first `--B` that matters starts in `buf` (content from #contentSeen on), or -1.
   * It matters at the very start of the content, or right after a CR or an LF; anywhere else it
   * is content whatever follows. Usually the first `--B` is the delimiter (or there is none): one
   * search. Past a `--B` that is content, only LF `--B` and CR `--B` are searched for, not every
   * `--B`: one search per `--B` was a call per byte for content `---...` and boundary `-`.
   * CR `--B` is only searched for before the first LF `--B` (which ends the part, waits for its
   * next two bytes, or is refused): with many parts in one chunk, no search runs past its own
   * part's end. So each byte is searched at most three times, whatever the content and boundary.
   * A CR or LF at the end of the previous chunk is still in `buf` (#keep carries it).
   */
  #delimiterAt(buf: Buffer): number {
    const d = this.#dash;
    const first = buf.indexOf(d);
    if (first === -1) return -1;
    if (first === 0 ? this.#contentSeen === 0 : buf[first - 1] === CR || buf[first - 1] === LF) return first;
    const lf = buf.indexOf(this.#lfDash, first);
    // A CR `--B` that starts before `lf` lies within the first `lf + d.length` bytes.
    const cr = (lf === -1 ? buf : buf.subarray(0, lf + d.length)).indexOf(this.#crDash, first);
    if (cr !== -1) return cr + 1;
    return lf === -1 ? -1 : lf + 1;
  }

  /**
   * How many of the last bytes of content (in which no delimiter was found) to carry over: from
   * two bytes before the first place where `--B` could start and still matter (the content's
   * start, or after a CR or LF, with the rest of the buffer a prefix of `--B`), at most the
   * delimiter's length plus one. `--B` anywhere else is content whatever follows, so the bytes
   * before such a place are content now (usually nothing is carried: no copy, no seam).
   */
  #keep(buf: Buffer): number {
    const d = this.#dash;
    const len = buf.length;
    for (let j = Math.max(0, len - d.length + 1); j <= len; j++) {
      if (j === 0 ? this.#contentSeen !== 0 : buf[j - 1] !== CR && buf[j - 1] !== LF) continue;
      let prefix = true;
      for (let i = j; i < len; i++) {
        if (buf[i] !== d[i - j]) {
          prefix = false;
          break;
        }
      }
      if (prefix) return len - Math.max(0, j - 2);
    }
    return 0;
  }

  /** After `--B--`: at most one CRLF, then nothing. */
  #close(atEnd: boolean): void {
    const buf = this.#buf;
    // Nothing, CR, or CRLF (a prefix of the one CRLF allowed); no Buffer to compare with.
    if (buf.length > 2 || (buf.length >= 1 && buf[0] !== CR) || (buf.length === 2 && buf[1] !== LF))
      throw multipartError(
        400,
        'multipart body does not end with its closing boundary (data after the last part)',
      );
    if (atEnd && buf.length === 1)
      throw multipartError(400, 'multipart body does not end with its closing boundary (a lone CR)');
  }
}
