/** The request bodies, written once to a temp folder (wrk and autocannon read them from files). */
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export type BodyId = '10k' | '1m' | '32m' | 'mp5';

export interface Body {
  id: BodyId;
  label: string;
  file: string;
  size: number;
  contentType: string;
  sha1: string;
}

/**
 * icapkit hands the application a multipart form it serialised again under a fresh random
 * boundary, so the digest of a form is taken with its boundary (read from the Content-Type the
 * application got) replaced by this token: the same bytes, whoever chose the boundary.
 */
const BOUNDARY_TOKEN = Buffer.from('--icapkit-bench-boundary');

/** The boundary of a multipart Content-Type, if any. */
export function boundaryOf(contentType: string | undefined): string | undefined {
  if (contentType === undefined || !/^\s*multipart\//i.test(contentType)) return undefined;
  return /;\s*boundary="?([^";]+)"?/i.exec(contentType)?.[1];
}

/** A SHA-1 fed in chunks, with every `--boundary` replaced by one token (streaming, bounded carry). */
export class BodyDigest {
  readonly #h = createHash('sha1');
  readonly #needle: Buffer | undefined;
  #carry = Buffer.alloc(0);

  constructor(contentType: string | undefined) {
    const b = boundaryOf(contentType);
    this.#needle = b === undefined ? undefined : Buffer.from(`--${b}`, 'latin1');
  }

  update(chunk: Buffer): void {
    const needle = this.#needle;
    if (needle === undefined) {
      this.#h.update(chunk);
      return;
    }
    const carry = this.#carry;
    let from = 0;
    if (carry.length > 0) {
      // A token starting in the carry needs at most needle.length - 1 bytes of this chunk: look
      // for it in that seam alone, so the chunk itself is never copied.
      if (chunk.length < needle.length - 1) {
        this.#scan(Buffer.concat([carry, chunk]));
        return;
      }
      const seam = Buffer.concat([carry, chunk.subarray(0, needle.length - 1)]);
      const j = seam.indexOf(needle);
      if (j === -1) {
        this.#h.update(carry);
      } else {
        this.#h.update(carry.subarray(0, j));
        this.#h.update(BOUNDARY_TOKEN);
        from = j + needle.length - carry.length;
      }
    }
    this.#scan(from === 0 ? chunk : chunk.subarray(from));
  }

  /** Hashes `buf` with every needle replaced, keeping its tail (where a needle may begin) as the carry. */
  #scan(buf: Buffer): void {
    const needle = this.#needle!;
    let i = 0;
    for (let j = buf.indexOf(needle); j !== -1; j = buf.indexOf(needle, i)) {
      this.#h.update(buf.subarray(i, j));
      this.#h.update(BOUNDARY_TOKEN);
      i = j + needle.length;
    }
    const keep = Math.max(i, buf.length - needle.length + 1);
    this.#h.update(buf.subarray(i, keep));
    this.#carry = Buffer.from(buf.subarray(keep));
  }

  digest(): string {
    this.#h.update(this.#carry);
    return this.#h.digest('hex');
  }
}

/** The digest the application answers for `data` sent with `contentType`. */
export function bodyDigest(data: Buffer, contentType: string | undefined): string {
  const d = new BodyDigest(contentType);
  d.update(data);
  return d.digest();
}

const KiB = 1024;
const MiB = 1024 * KiB;
/** Each file of the multipart body. */
export const MULTIPART_FILE_SIZE = 200 * KiB;
export const MULTIPART_FILES = 5;

export function multipart(files: Buffer[], boundary: string): Buffer {
  const parts: Buffer[] = [];
  parts.push(
    Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="title"\r\n\r\nbench upload\r\n`),
  );
  files.forEach((f, i) => {
    parts.push(
      Buffer.from(
        `--${boundary}\r\nContent-Disposition: form-data; name="file${i + 1}"; filename="doc${i + 1}.bin"\r\n` +
          'Content-Type: application/octet-stream\r\n\r\n',
      ),
      f,
      Buffer.from('\r\n'),
    );
  });
  parts.push(Buffer.from(`--${boundary}--\r\n`));
  return Buffer.concat(parts);
}

/** One ICAP request's subject: the encapsulated HTTP request's headers and its body. */
export interface Subject {
  headers: Array<[string, string]>;
  body: Buffer;
}

/**
 * The parts of the bench's own form (bodies.ts writes it: CRLF lines, no preamble), as icapkit's
 * per-file scan sends them (parts.ts: Host, the part's Content-Type, Content-Disposition).
 */
export function formParts(form: Buffer, type: string): Subject[] {
  const boundary = /;\s*boundary="?([^";]+)"?/i.exec(type)?.[1];
  if (boundary === undefined) throw new Error(`--parts needs a multipart Content-Type, not ${type}`);
  const delimiter = Buffer.from(`\r\n--${boundary}`, 'latin1');
  const out: Subject[] = [];
  // The first delimiter has no CRLF before it: start as if one had been read.
  let at = form.indexOf(`--${boundary}\r\n`, 0, 'latin1') + boundary.length + 4;
  for (;;) {
    const headEnd = form.indexOf('\r\n\r\n', at, 'latin1');
    const end = form.indexOf(delimiter, headEnd);
    if (headEnd < 0 || end < 0) throw new Error('the bench form does not parse');
    const head = form.toString('latin1', at, headEnd);
    const name = /filename="([^"]*)"/.exec(head)?.[1] ?? /name="([^"]*)"/.exec(head)?.[1] ?? '';
    const file = /filename="/.test(head);
    const partType = /^content-type:\s*(.*)$/im.exec(head)?.[1]?.trim() ?? 'text/plain';
    const content = form.subarray(headEnd + 4, end);
    if (content.length > 0)
      out.push({
        headers: [
          ['Host', 'app'],
          ['Content-Type', partType],
          ['Content-Disposition', `${file ? 'attachment' : 'form-data'}; filename="${name}"`],
          ['Content-Length', String(content.length)],
        ],
        body: content,
      });
    at = end + delimiter.length;
    if (form.toString('latin1', at, at + 2) === '--') return out;
    at += 2;
  }
}

/**
 * First bytes after which icapkit reads a body that declares no JSON type as a JSON text (its
 * decoded-strings sniff, `engine/decoded/view.ts`): white space, `"`, `[`, `{`, and a UTF-8 BOM's
 * first byte. A random body that began with one of them (about 1 run in 80) was measured on a
 * path no other run took: the lexer over every byte and a second ICAP exchange for the strings,
 * 3-5x the CPU of a binary upload (bench/README.md, eighteenth round).
 */
const TEXT_OPENERS = new Set([0x20, 0x09, 0x0a, 0x0d, 0x22, 0x5b, 0x7b, 0xef]);

/**
 * `size` random bytes that read as binary, not as the start of a JSON text: the first byte is
 * drawn again while it is one of {@link TEXT_OPENERS}. Every run measures the same path.
 */
export function binaryBody(size: number, random: (n: number) => Buffer = randomBytes): Buffer {
  const data = random(size);
  while (data.length > 0 && TEXT_OPENERS.has(data[0]!)) data[0] = random(1)[0]!;
  return data;
}

export async function makeBodies(
  ids: readonly BodyId[],
): Promise<{ dir: string; bodies: Map<BodyId, Body> }> {
  const dir = await mkdtemp(join(tmpdir(), 'icapkit-bench-bodies-'));
  const bodies = new Map<BodyId, Body>();
  for (const id of ids) {
    let data: Buffer;
    let contentType = 'application/octet-stream';
    let label: string;
    if (id === 'mp5') {
      const boundary = '----icapkitbench7MA4YWxkTrZu0gW';
      data = multipart(
        Array.from({ length: MULTIPART_FILES }, () => binaryBody(MULTIPART_FILE_SIZE)),
        boundary,
      );
      contentType = `multipart/form-data; boundary=${boundary}`;
      label = `multipart ${MULTIPART_FILES}x${MULTIPART_FILE_SIZE / KiB} KiB`;
    } else {
      const size = id === '10k' ? 10 * KiB : id === '1m' ? MiB : 32 * MiB;
      data = binaryBody(size);
      label = id === '10k' ? '10 KiB' : id === '1m' ? '1 MiB' : '32 MiB';
    }
    const file = join(dir, `${id}.bin`);
    await writeFile(file, data);
    bodies.set(id, {
      id,
      label,
      file,
      size: data.length,
      contentType,
      sha1: bodyDigest(data, contentType),
    });
  }
  return { dir, bodies };
}
