import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import type { Part } from './parse.js';

/**
 * The form the application receives: serialised from what was parsed and scanned (see parse.ts),
 * never the bytes the client sent.
 */

/** What a rebuilt form holds in place of a part. */
export interface RebuiltPart {
  part: Part;
  /** Replacement content (a rewritten file), or the part's own. */
  content?: { stream(): Readable; length: number } | undefined;
}

export interface CanonicalForm {
  body: Readable;
  length: number;
  boundary: string;
  /** `multipart/form-data; boundary=...` for the request the application gets. */
  contentType: string;
}

/** A fresh boundary no client can predict (so no part content can contain it on purpose). */
export function freshBoundary(): string {
  return `----icapkit${randomBytes(16).toString('hex')}`;
}

/**
 * The form the application gets: `parts` in order, each with regenerated part headers
 * (Content-Disposition form-data with name and filename; for a file the Content-Type as sent, or
 * application/octet-stream when it had none; for a field none) and its
 * own or replacement content, under a fresh boundary. Its length is known in advance.
 */
export function canonicalForm(parts: RebuiltPart[], boundary = freshBoundary()): CanonicalForm {
  const pieces: Array<Buffer | (() => Readable)> = [];
  let length = 0;
  const add = (b: Buffer) => {
    pieces.push(b);
    length += b.length;
  };
  for (const { part, content } of parts) {
    let head = `--${boundary}\r\nContent-Disposition: form-data; name="${escapeQuoted(part.head.nameBytes)}"`;
    if (part.head.fileNameBytes !== undefined)
      head += `; filename="${escapeQuoted(part.head.fileNameBytes)}"`;
    head += '\r\n';
    // A file without a Content-Type is a field to formidable: give it one, so every parser agrees.
    // A field goes without one: its bytes are what was scanned, and a charset label would make
    // parsers decode them into other text (UTF-16, say), so every parser reads them as UTF-8.
    if (part.kind === 'file')
      head += `Content-Type: ${part.head.contentType ?? 'application/octet-stream'}\r\n`;
    // Byte strings: latin1 writes each char back as the byte it was read from.
    add(Buffer.from(`${head}\r\n`, 'latin1'));
    if (content !== undefined) {
      pieces.push(() => content.stream());
      length += content.length;
    } else {
      const store = part.store;
      pieces.push(() => store.stream());
      length += store.received;
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
  return { body, length, boundary, contentType: `multipart/form-data; boundary=${boundary}` };
}

/** How browsers escape names in multipart part headers (WHATWG HTML, "multipart/form-data encoding"). */
function escapeQuoted(s: string): string {
  return s.replace(/\r/g, '%0D').replace(/\n/g, '%0A').replace(/"/g, '%22');
}
