import { Readable } from 'node:stream';
import busboy from 'busboy';
import { IcapError, IcapErrorCodes } from '../client/errors.js';
import { BodyStore } from './body.js';
import type { ResolvedMultipartLimits } from './profile.js';

/**
 * multipart/form-data, part by part: the raw body is parsed with busboy while it arrives and
 * each part is held in a store of its own (memory, then a temp file), so each can be scanned
 * as a separate ICAP request named after its file, and a form can be rebuilt without (or with
 * rewritten) parts.
 *
 * Fail closed: whatever busboy tolerates or truncates silently is refused here, since the
 * application's parser could read bytes that were never scanned (a parser differential):
 * a missing, duplicated or invalid boundary, bytes before the first boundary or after the last
 * one, a malformed part header, a truncated body, and every limit (files, fields, parts, file
 * size, field size, field name size, header lines). Limits give 413, malformed bodies 400.
 */

export interface Part {
  index: number;
  kind: 'file' | 'field';
  /** The form field name. */
  field: string;
  fileName: string | undefined;
  mimeType: string;
  /** File parts: the content (ends when the part ends). Field parts: null. */
  store: BodyStore | null;
  /** Field parts: the value. */
  value: string | undefined;
  /** Resolves when the part's content is complete. */
  done: Promise<void>;
}

export interface MultipartOptions {
  limits: ResolvedMultipartLimits;
  storage: { memoryThreshold: number; spoolDir: string };
}

export type AnomalyStatus = 400 | 413;

export function multipartError(status: AnomalyStatus, message: string): IcapError {
  return new IcapError(IcapErrorCodes.MULTIPART, message, { status });
}

/** The boundary of a multipart/form-data Content-Type, or an ICAP_ERR_MULTIPART error. */
export function boundaryOf(contentType: string): string {
  const params = splitParams(contentType);
  const boundaries = params.filter(([k]) => k === 'boundary');
  if (boundaries.length === 0) throw multipartError(400, 'multipart body without a boundary parameter');
  if (boundaries.length > 1)
    throw multipartError(400, 'multipart Content-Type with more than one boundary parameter');
  const b = boundaries[0]![1];
  // RFC 2046 §5.1.1: 1 to 70 characters from a restricted set, not ending in a space.
  if (!/^[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]$/.test(b)) {
    throw multipartError(400, 'multipart boundary is not valid (RFC 2046)');
  }
  return b;
}

function splitParams(contentType: string): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  const re = /;\s*([^=;\s]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;]*))/g;
  for (let m = re.exec(contentType); m !== null; m = re.exec(contentType)) {
    out.push([m[1]!.toLowerCase(), (m[2] ?? m[3] ?? '').replace(/\\(.)/g, '$1').trim()]);
  }
  return out;
}

export function isMultipartFormData(contentType: string | undefined): boolean {
  return contentType !== undefined && /^\s*multipart\/form-data\s*(?:;|$)/i.test(contentType);
}

/**
 * Reads the body from `source` and hands each part to `onPart` when it starts. Resolves with
 * all parts once the body is parsed; rejects with ICAP_ERR_MULTIPART (status 400 or 413) on
 * an anomaly, or with the source's error.
 */
export async function parseMultipart(
  contentType: string,
  source: AsyncIterator<Buffer>,
  options: MultipartOptions,
  onPart: (part: Part) => void,
): Promise<Part[]> {
  const boundary = boundaryOf(contentType);
  const limits = options.limits;
  const parts: Part[] = [];
  let anomaly: IcapError | undefined;
  const fail = (e: IcapError) => {
    anomaly ??= e;
  };
  let bb: busboy.Busboy;
  try {
    bb = busboy({
      headers: { 'content-type': contentType },
      defParamCharset: 'utf8',
      limits: {
        files: limits.files,
        fields: limits.fields,
        parts: limits.parts,
        fileSize: limits.fileSize,
        fieldSize: limits.fieldSize,
        fieldNameSize: limits.fieldNameSize,
        headerPairs: limits.headerPairs,
      },
    });
  } catch (err) {
    throw multipartError(400, `multipart body cannot be parsed: ${(err as Error).message}`);
  }
  const nameTooLong = (field: string) => {
    if (Buffer.byteLength(field) > limits.fieldNameSize) {
      fail(multipartError(413, `a field name is longer than the allowed ${limits.fieldNameSize} bytes`));
    }
  };
  bb.on('file', (field, stream, info) => {
    nameTooLong(field);
    const store = new BodyStore({ limit: Number.POSITIVE_INFINITY, retainAll: true, ...options.storage });
    // attach(): the file stream is paused while the store's temp file is behind, and busboy
    // (hence the parse loop) with it: memory stays bounded however fast the body is read.
    store.attach(stream);
    stream.on('limit', () =>
      fail(
        multipartError(413, `file "${info.filename}" is larger than the allowed ${limits.fileSize} bytes`),
      ),
    );
    stream.on('error', (err: Error) =>
      fail(multipartError(400, `multipart body is malformed: ${err.message}`)),
    );
    const done = store.whenEnded();
    const part: Part = {
      index: parts.length,
      kind: 'file',
      field,
      fileName: info.filename,
      mimeType: info.mimeType,
      store,
      value: undefined,
      done,
    };
    parts.push(part);
    onPart(part);
  });
  bb.on('field', (field, value, info) => {
    nameTooLong(field);
    if (info.nameTruncated)
      fail(multipartError(413, `a field name is longer than the allowed ${limits.fieldNameSize} bytes`));
    if (info.valueTruncated)
      fail(multipartError(413, `field "${field}" is larger than the allowed ${limits.fieldSize} bytes`));
    const part: Part = {
      index: parts.length,
      kind: 'field',
      field,
      fileName: undefined,
      mimeType: info.mimeType,
      store: null,
      value,
      done: Promise.resolve(),
    };
    parts.push(part);
    onPart(part);
  });
  bb.on('partsLimit', () => fail(multipartError(413, `more than ${limits.parts} parts`)));
  bb.on('filesLimit', () => fail(multipartError(413, `more than ${limits.files} files`)));
  bb.on('fieldsLimit', () => fail(multipartError(413, `more than ${limits.fields} fields`)));
  const closed = new Promise<void>((resolve) => {
    bb.on('close', resolve);
    bb.on('error', (err: Error) => {
      fail(multipartError(400, `multipart body is malformed: ${err.message}`));
      resolve();
    });
  });

  const delimiter = Buffer.from(`--${boundary}`, 'latin1');
  const headerLimits = new PartHeaderLimits(boundary, limits.headerPairs, limits.headerSize);
  let head = Buffer.alloc(0);
  let headChecked = false;
  let tail = Buffer.alloc(0);
  const keep = delimiter.length + 8;
  try {
    for (;;) {
      const r = await source.next();
      if (r.done) break;
      const chunk = r.value;
      if (!headChecked) {
        head = Buffer.concat([head, chunk]);
        if (head.length >= delimiter.length + 2) {
          headChecked = true;
          // No preamble: the body starts with the first delimiter (a leading CRLF is tolerated).
          const start = head[0] === 0x0d && head[1] === 0x0a ? 2 : 0;
          if (!head.subarray(start, start + delimiter.length).equals(delimiter)) {
            fail(
              multipartError(
                400,
                'multipart body does not start with its boundary (data before the first part)',
              ),
            );
          }
        }
      }
      const headerProblem = headerLimits.feed(chunk);
      if (headerProblem !== undefined) fail(multipartError(413, headerProblem));
      tail = Buffer.concat([tail, chunk]);
      if (tail.length > keep * 4) tail = tail.subarray(tail.length - keep);
      if (anomaly !== undefined) break;
      if (!bb.write(chunk)) await drainOrClose(bb);
    }
  } catch (err) {
    bb.destroy();
    for (const p of parts) p.store?.dispose();
    throw err;
  }
  if (anomaly === undefined) {
    if (!headChecked) fail(multipartError(400, 'multipart body is too short to hold a part'));
    else if (!endsWithCloseDelimiter(tail, delimiter)) {
      fail(
        multipartError(
          400,
          'multipart body does not end with its closing boundary (truncated, or data after the last part)',
        ),
      );
    }
  }
  if (anomaly !== undefined) {
    bb.destroy();
    for (const p of parts) p.store?.dispose();
    void source.return?.();
    throw anomaly;
  }
  bb.end();
  await closed;
  await Promise.all(parts.map((p) => p.done));
  if (anomaly !== undefined) {
    for (const p of parts) p.store?.dispose();
    throw anomaly;
  }
  return parts;
}

/**
 * Counts the header lines and bytes of each part as the raw body goes by (busboy 1.6 fixes its
 * own limits at 2000 lines and 16 KiB and drops extra lines silently). Skips part bodies with
 * indexOf, so it costs little.
 */
class PartHeaderLimits {
  readonly #delimiter: Buffer;
  readonly #maxLines: number;
  readonly #maxBytes: number;
  #state: 'body' | 'delimiter-line' | 'headers' | 'done' = 'body';
  #carry: Buffer;
  #lines = 0;
  #bytes = 0;
  #lineLength = 0;

  constructor(boundary: string, maxLines: number, maxBytes: number) {
    this.#delimiter = Buffer.from(`\r\n--${boundary}`, 'latin1');
    this.#maxLines = maxLines;
    this.#maxBytes = maxBytes;
    // The body starts with the first delimiter without its line break.
    this.#carry = Buffer.from('\r\n');
  }

  /** An error message when a part's headers break a limit. */
  feed(chunk: Buffer): string | undefined {
    let data = this.#carry.length > 0 ? Buffer.concat([this.#carry, chunk]) : chunk;
    this.#carry = Buffer.alloc(0);
    let i = 0;
    while (i < data.length) {
      if (this.#state === 'done') return undefined;
      if (this.#state === 'body') {
        const j = data.indexOf(this.#delimiter, i);
        if (j === -1) {
          this.#carry = Buffer.from(data.subarray(Math.max(i, data.length - this.#delimiter.length + 1)));
          return undefined;
        }
        i = j + this.#delimiter.length;
        this.#state = 'delimiter-line';
      }
      if (this.#state === 'delimiter-line') {
        if (data.length - i < 2) {
          this.#carry = Buffer.from(data.subarray(i));
          return undefined;
        }
        if (data[i] === 0x2d && data[i + 1] === 0x2d) {
          this.#state = 'done';
          return undefined;
        }
        const nl = data.indexOf(0x0a, i);
        if (nl === -1) {
          this.#carry = Buffer.from(data.subarray(i));
          return undefined;
        }
        i = nl + 1;
        this.#state = 'headers';
        this.#lines = 0;
        this.#bytes = 0;
        this.#lineLength = 0;
      }
      if (this.#state === 'headers') {
        for (; i < data.length; i++) {
          const b = data[i]!;
          if (++this.#bytes > this.#maxBytes) return `part headers larger than ${this.#maxBytes} bytes`;
          if (b === 0x0a) {
            if (this.#lineLength === 0) {
              this.#state = 'body';
              i++;
              // The part body begins here; its delimiter search must see a CRLF before `--`.
              data = data.subarray(i);
              i = 0;
              break;
            }
            if (++this.#lines > this.#maxLines) return `a part has more than ${this.#maxLines} header lines`;
            this.#lineLength = 0;
          } else if (b !== 0x0d) {
            this.#lineLength++;
          }
        }
      }
    }
    return undefined;
  }
}

/** Waits for busboy to take more, or to close (an error), leaving no listener behind. */
function drainOrClose(bb: busboy.Busboy): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      bb.removeListener('drain', done);
      bb.removeListener('close', done);
      bb.removeListener('error', done);
      resolve();
    };
    bb.on('drain', done);
    bb.on('close', done);
    bb.on('error', done);
  });
}

/** The body ends with `--boundary--`, then at most a line break (no epilogue). */
function endsWithCloseDelimiter(tail: Buffer, delimiter: Buffer): boolean {
  let end = tail.length;
  while (end > 0 && (tail[end - 1] === 0x0a || tail[end - 1] === 0x0d)) end--;
  if (tail.length - end > 2) return false;
  const close = Buffer.concat([delimiter, Buffer.from('--')]);
  return end >= close.length && tail.subarray(end - close.length, end).equals(close);
}

/** What a rebuilt form holds in place of a part. */
export interface RebuiltPart {
  part: Part;
  /** Replacement content (a rewritten file), or the part's own. */
  content?: { stream(): Readable; length: number } | undefined;
}

/**
 * A valid multipart/form-data body, with the same boundary, holding `parts` in order (each
 * with regenerated part headers and its own or replacement content). Its length is known.
 */
export function rebuildMultipart(boundary: string, parts: RebuiltPart[]): { body: Readable; length: number } {
  const pieces: Array<Buffer | (() => Readable)> = [];
  let length = 0;
  const add = (b: Buffer) => {
    pieces.push(b);
    length += b.length;
  };
  for (const { part, content } of parts) {
    let head = `--${boundary}\r\nContent-Disposition: form-data; name="${escapeQuoted(part.field)}"`;
    if (part.kind === 'file') head += `; filename="${escapeQuoted(part.fileName ?? '')}"`;
    head += '\r\n';
    if (part.kind === 'file' || part.mimeType !== 'text/plain') head += `Content-Type: ${part.mimeType}\r\n`;
    add(Buffer.from(`${head}\r\n`, 'utf8'));
    if (content !== undefined) {
      pieces.push(() => content.stream());
      length += content.length;
    } else if (part.kind === 'file') {
      const store = part.store!;
      pieces.push(() => store.stream());
      length += store.received;
    } else {
      add(Buffer.from(part.value ?? '', 'utf8'));
    }
    add(Buffer.from('\r\n'));
  }
  add(Buffer.from(`--${boundary}--\r\n`, 'latin1'));
  const body = Readable.from(
    (async function* () {
      for (const p of pieces) {
        if (Buffer.isBuffer(p)) yield p;
        else for await (const c of p()) yield c as Buffer;
      }
    })(),
    { objectMode: false },
  );
  return { body, length };
}

/** How browsers escape names in multipart part headers (WHATWG HTML, "multipart/form-data encoding"). */
function escapeQuoted(s: string): string {
  return s.replace(/\r/g, '%0D').replace(/\n/g, '%0A').replace(/"/g, '%22');
}
