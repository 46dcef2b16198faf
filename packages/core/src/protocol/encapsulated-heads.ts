/** The encapsulated HTTP heads of an ICAP message, read strictly (parser.ts). */
import { IcapError, IcapErrorCodes } from '../errors.js';
import { endsWithEmptyLine } from './framing.js';
import { parseHeaderBlock } from './headers.js';
import type { IcapHead } from './parser-types.js';

/**
 * Reads the HTTP header sections `head.encapsulated` sizes in `area` (the bytes from the end of
 * the ICAP head to the body entry's offset) into `head.httpRequest` / `head.httpResponse`.
 * Throws a PROTOCOL IcapError for a section that breaks a rule.
 */
export function readEncapsulatedHeads(head: IcapHead, area: Buffer): void {
  const entries = head.encapsulated!;
  for (let k = 0; k < entries.length - 1; k++) {
    const entry = entries[k]!;
    const section = area.subarray(entry.offset, entries[k + 1]!.offset);
    // The section must end with its empty line: an offset that is off by a byte would
    // otherwise move bytes between the headers and the body without anyone noticing.
    if (!endsWithEmptyLine(section)) {
      throw protocol(
        `encapsulated ${entry.name} section does not end with an empty line (wrong Encapsulated offset?)`,
      );
    }
    const parsed = parseHeaderBlock(section, `encapsulated ${entry.name}`, 'latin1');
    // Fields named, not spread from `parsed` (engine/scan/outcome.ts disposeOnce says why).
    const { startLine, headers } = parsed;
    if (entry.name === 'req-hdr') {
      const m = /^(\S+) +(\S+) +(HTTP\/\d\.\d)$/.exec(parsed.startLine);
      if (m === null)
        throw protocol(`invalid encapsulated request line ${JSON.stringify(parsed.startLine.slice(0, 80))}`);
      head.httpRequest = { startLine, headers, raw: section, method: m[1]!, target: m[2]!, version: m[3]! };
    } else {
      const m = /^(HTTP\/\d\.\d) +(\d{3})(?: (.*))?$/.exec(parsed.startLine);
      if (m === null)
        throw protocol(`invalid encapsulated status line ${JSON.stringify(parsed.startLine.slice(0, 80))}`);
      head.httpResponse = {
        startLine,
        headers,
        raw: section,
        status: Number(m[2]),
        reason: m[3] ?? '',
        version: m[1]!,
      };
    }
  }
}

function protocol(message: string): IcapError {
  return new IcapError(IcapErrorCodes.PROTOCOL, message);
}
