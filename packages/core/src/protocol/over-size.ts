/**
 * A field section (an ICAP head, a trailer) read past its bound (maxHeaderSize, maxTrailerSize):
 * a threat named after the bound (a long list of other fields first, client-chosen text a server
 * echoed among them) is still a threat (campaign-bs BS2). The rest of the section is read line by
 * line without being stored, up to its blank line or OVER_SIZE_CAP bytes; only the lines of fields
 * that may name a threat or a refusal (threat-fields.ts) are kept, with their continuation lines,
 * up to a bound of their own. Only ever read for a threat: the answer stays a failure.
 */
import { NAMING_FIELDS } from './threat-fields.js';

/** Bytes read past a section's bound, at most: then the answer fails with what was kept. */
export const OVER_SIZE_CAP = 1024 * 1024;
/** The longest field name looked at (longer: not a field that names a threat). */
const NAME_MAX = 64;
const LF = 0x0a;
const CR = 0x0d;

/**
 * Lines are split at LF and, as the lenient readings split them (salvage.ts lenientText), at a
 * bare CR too; the section ends at a blank line as the strict parser finds one (a LF or a CR LF
 * alone on a line).
 */
export class FieldSieve {
  readonly #keepMax: number;
  readonly #kept: string[] = [];
  #keptChars = 0;
  #bytes = 0;
  /** The current part of a line: its text while its name is unknown or it is kept (bounded); null: dropped. */
  #part: string | null = '';
  #partLength = 0;
  #decided = false;
  /** The bytes of the current line (since its LF), and whether the first was a CR. */
  #lineLength = 0;
  #lineStartsCr = false;
  /** The last field line was kept: a continuation line after it goes with it. */
  #lastKept = false;
  /** OVER_SIZE_CAP bytes were read without the section's end. */
  full = false;

  /** `keepMax`: the most characters kept; `midLine`: the first bytes read end a line begun before (dropped). */
  constructor(keepMax: number, midLine: boolean) {
    this.#keepMax = keepMax;
    if (midLine) {
      this.#part = null;
      this.#decided = true;
      this.#lineLength = 1;
    }
  }

  /** Reads `data` from `from`: the index after the blank line that ends the section, or -1 (all read; or `full`). */
  read(data: Buffer, from: number): number {
    let i = from;
    // The next CR (searched again only once passed: linear in the bytes).
    let cr = data.indexOf(CR, i);
    while (i < data.length) {
      const nl = data.indexOf(LF, i);
      const stop = nl === -1 ? data.length : nl;
      // A bare CR ends a part of the line (a lenient reading's line).
      let at = i;
      while (cr !== -1 && cr < stop) {
        this.#take(data, at, cr);
        if (this.#lineLength === 0) this.#lineStartsCr = true;
        this.#lineLength++;
        this.#endPart();
        at = cr + 1;
        cr = data.indexOf(CR, at);
      }
      this.#take(data, at, stop);
      this.#bytes += stop - i + (nl === -1 ? 0 : 1);
      if (this.#bytes > OVER_SIZE_CAP) {
        this.full = true;
        return -1;
      }
      if (nl === -1) return -1;
      i = nl + 1;
      this.#endPart();
      const blank = this.#lineLength === 0 || (this.#lineLength === 1 && this.#lineStartsCr);
      this.#lineLength = 0;
      this.#lineStartsCr = false;
      if (blank) return i;
    }
    return -1;
  }

  /** The lines kept, each ended by CRLF. */
  kept(): string {
    return this.#kept.length === 0 ? '' : `${this.#kept.join('\r\n')}\r\n`;
  }

  /** Bytes `data[from, to)` (no CR or LF among them) to the current part. */
  #take(data: Buffer, from: number, to: number): void {
    if (from >= to) return;
    if (this.#partLength === 0 && (data[from] === 0x20 || data[from] === 0x09)) {
      // A continuation line: kept when the field before it was.
      this.#decided = true;
      if (!this.#lastKept) this.#part = null;
    }
    this.#partLength += to - from;
    this.#lineLength += to - from;
    let at = from;
    if (this.#part !== null && !this.#decided) {
      const end = Math.min(to, at + NAME_MAX + 1 - this.#part.length);
      this.#part += data.toString('latin1', at, end);
      at = end;
      const colon = this.#part.indexOf(':');
      if (colon !== -1 || this.#part.length > NAME_MAX) this.#decide(colon);
    }
    if (this.#part !== null && this.#decided && at < to) {
      const room = this.#keepMax - this.#keptChars - this.#part.length;
      if (room > 0) this.#part += data.toString('latin1', at, Math.min(to, at + room));
    }
  }

  /** The current part's name is known (`colon`: where it ends, -1: none): kept or dropped. */
  #decide(colon: number): void {
    this.#decided = true;
    const name = colon > 0 ? this.#part!.slice(0, colon).trim().toLowerCase() : '';
    this.#lastKept = NAMING_FIELDS.has(name);
    if (!this.#lastKept) this.#part = null;
  }

  /** The current part ends (at a CR or a LF). */
  #endPart(): void {
    if (this.#partLength > 0) {
      if (!this.#decided) this.#decide(this.#part!.indexOf(':'));
      const part = this.#part;
      if (part !== null && this.#keptChars + part.length <= this.#keepMax) {
        this.#kept.push(part);
        this.#keptChars += part.length + 2;
      }
    }
    this.#part = '';
    this.#partLength = 0;
    this.#decided = false;
  }
}
