import { createHash } from 'node:crypto';

/**
 * Signature matching over a stream: each signature is searched across chunk boundaries while
 * only the last (longest signature - 1) bytes are kept, so a 64 MiB upload is scanned in
 * constant memory.
 */

export interface Signature {
  name: string;
  pattern: string | Buffer;
}

/** Name ClamAV gives EICAR; the embedded server reports the same. */
export const EICAR_NAME = 'Eicar-Test-Signature';

/**
 * The EICAR anti-malware test file. Assembled at run time from two reversed halves, so the
 * repository never contains the string itself (scanners on developer machines would flag it).
 */
export function eicar(): Buffer {
  const reversed = ['$}7)CC7)^P(45XZP\\4[PA@%P!O5X', '*H+H$!ELIF-TSET-SURIVITNA-DRADNATS-RACIE'];
  return Buffer.from(reversed.map((part) => [...part].reverse().join('')).join(''), 'latin1');
}

export class StreamScanner {
  readonly #signatures: Array<{ name: string; bytes: Buffer }>;
  readonly #keep: number;
  #tail: Buffer = Buffer.alloc(0);
  #found: string | undefined;
  #length = 0;
  readonly #md5 = createHash('md5');

  constructor(signatures: readonly Signature[]) {
    this.#signatures = signatures.map((s) => ({
      name: s.name,
      bytes: Buffer.isBuffer(s.pattern) ? s.pattern : Buffer.from(s.pattern, 'latin1'),
    }));
    this.#keep = Math.max(0, ...this.#signatures.map((s) => s.bytes.length - 1));
  }

  /** Name of the first signature found so far. */
  get found(): string | undefined {
    return this.#found;
  }

  get length(): number {
    return this.#length;
  }

  feed(chunk: Buffer): void {
    this.#length += chunk.length;
    this.#md5.update(chunk);
    if (this.#found !== undefined || this.#signatures.length === 0) return;
    const window = this.#tail.length === 0 ? chunk : Buffer.concat([this.#tail, chunk]);
    for (const s of this.#signatures) {
      if (window.indexOf(s.bytes) !== -1) {
        this.#found = s.name;
        return;
      }
    }
    this.#tail = Buffer.from(window.subarray(Math.max(0, window.length - this.#keep)));
  }

  md5(): string {
    return this.#md5.copy().digest('hex');
  }
}
