/**
 * What is read of an ICAP response head that cannot be used as an answer (it broke a rule, or
 * the connection closed in it), for one purpose: a threat named there must not be lost. The
 * fields are read leniently; nothing read here ever passes a request.
 */
import { IcapError, type IcapReceivedHead } from '../errors.js';
import type { EncapsulatedEntry } from './encapsulated.js';
import { Headers, trimOws } from './headers.js';

/**
 * `err` with `head` attached (what was received of an answer, so a verdict in it is not lost),
 * when it is an IcapError without one (or `replace`) and there is a head.
 */
export function withReceivedHead<E>(err: E, head: IcapReceivedHead | undefined, replace = false): E {
  if (head === undefined || !(err instanceof IcapError) || (err.head !== undefined && !replace)) return err;
  // The fields an error carries, not the whole head (its body kind, its Encapsulated entries).
  return remade(err, {
    status: head.status,
    reason: head.reason,
    headers: head.headers,
    rawHeaders: head.rawHeaders,
    httpResponse: head.httpResponse,
    httpRequest: head.httpRequest ?? null,
  }) as E;
}

/** `err` with `stray` attached (what the server sent right after a head that broke a rule), when there is some. */
export function withStray<E>(err: E, stray: IcapReceivedHead[]): E {
  if (!(err instanceof IcapError) || stray.length === 0) return err;
  // After what the error carried already (a second 100 Continue's heads, answer.ts keepInterim).
  return remade(err, err.head, [...(err.stray ?? []), ...stray]) as E;
}

function remade(err: IcapError, head: IcapReceivedHead | undefined, stray = err.stray): IcapError {
  return new IcapError(err.code, err.message, {
    cause: err.cause,
    ...(err.rfcCode === undefined ? {} : { rfcCode: err.rfcCode }),
    ...(err.status === undefined ? {} : { status: err.status }),
    ...(head === undefined ? {} : { head }),
    ...(stray === undefined ? {} : { stray }),
  });
}

/**
 * The fields of a response head that the strict parser refused (a line without a colon, a name
 * that is not a token, an odd status line, a bad Encapsulated value) or that was cut off, read
 * leniently: each line with a colon is a field (its name and value trimmed), a line starting
 * with whitespace continues the field before it, anything else is skipped. The status is the
 * number after the version when it is a valid code, else 0. Only ever read for a threat.
 */
export function salvageResponseHead(block: Buffer): IcapReceivedHead {
  return salvageText(lenientText(block));
}

/**
 * `b` as text whose line ends are LF, for the lenient readings here only, never for framing. A
 * blank line is one the strict parser takes for one (a LF, or a CR and a LF, alone on a line);
 * bare CRs elsewhere (some servers end lines with them, or with `\r\r\n` through a text-mode
 * stream) break a line but never make a blank one: a line the strict parser reads as a field
 * line (`\r\r\n`, `\rX-Infection-Found: ...`, `a\r\rb` in a value) must not end the fields
 * read for a threat before the ones after it (campaign-aq AQ5, campaign-ar AR2).
 */
export function lenientText(b: Buffer): string {
  const lines = b.toString('latin1').split('\n');
  const out: string[] = [];
  for (let k = 0; k < lines.length; k++) {
    let line = lines[k]!;
    if (k < lines.length - 1 && line.endsWith('\r')) line = line.slice(0, -1);
    if (line === '') {
      out.push('');
      continue;
    }
    for (const part of line.split(/\r+/)) if (part !== '') out.push(part);
  }
  return out.join('\n');
}

/** salvageResponseHead of text whose line ends are LF. */
function salvageText(text: string): IcapReceivedHead {
  const lines = text.split('\n');
  const startLine = lines[0] ?? '';
  const m = /^\s*ICAP\/\d+(?:\.\d+)?[ \t]+(\d{3})(?![0-9])(?:[ \t]+(.*))?/i.exec(startLine);
  const code = m === null ? 0 : Number(m[1]);
  const status = code >= 100 && code <= 599 ? code : 0;
  const { headers, raw } = lenientFields(lines);
  return {
    status,
    reason: status === 0 ? '' : (m?.[2] ?? ''),
    headers,
    rawHeaders: raw.length === 0 ? '' : `${raw.join('\r\n')}\r\n`,
    httpResponse: null,
  };
}

/**
 * The fields of `lines` after the first (a start line), up to the first empty line, read
 * leniently as salvageResponseHead says; `raw`: the lines read, without their line ends.
 */
function lenientFields(lines: readonly string[]): { headers: Headers; raw: string[] } {
  const headers = new Headers();
  let name: string | undefined;
  let value: string[] = [];
  const flush = () => {
    if (name !== undefined && name !== '') {
      if (value.length === 1) headers.append(name, value[0]!);
      else headers.append(name, value.join(' '), value);
    }
    name = undefined;
    value = [];
  };
  const raw: string[] = [];
  for (let k = 1; k < lines.length; k++) {
    const line = lines[k]!;
    if (line === '') break;
    raw.push(line);
    if ((line.charCodeAt(0) === 0x20 || line.charCodeAt(0) === 0x09) && name !== undefined) {
      value.push(trimOws(line));
      continue;
    }
    flush();
    const colon = line.indexOf(':');
    if (colon <= 0) continue;
    name = trimOws(line.slice(0, colon));
    value = [trimOws(line.slice(colon + 1))];
  }
  flush();
  return { headers, raw };
}

type HttpRequestHead = NonNullable<IcapReceivedHead['httpRequest']>;
type HttpResponseHead = NonNullable<IcapReceivedHead['httpResponse']>;

/**
 * `head` (an ICAP head read whole) with its encapsulated HTTP heads read leniently from `area`
 * (the bytes its `Encapsulated` entries size), for a section the strict parser refused (a line
 * without a colon, an odd start line, an offset off by a byte): a threat field in the request
 * head a 200 echoes, or in a page, is still a threat. Only ever read for a threat.
 */
export function salvageEncapsulated(
  head: IcapReceivedHead,
  entries: readonly EncapsulatedEntry[],
  area: Buffer,
): IcapReceivedHead {
  let httpRequest: HttpRequestHead | null = head.httpRequest ?? null;
  let httpResponse: HttpResponseHead | null = head.httpResponse;
  for (let k = 0; k < entries.length - 1; k++) {
    const entry = entries[k]!;
    if (entry.name !== 'req-hdr' && entry.name !== 'res-hdr') continue;
    const section = area.subarray(entry.offset, Math.max(entry.offset, entries[k + 1]!.offset));
    const lines = lenientText(section).split('\n');
    const startLine = lines[0] ?? '';
    const { headers } = lenientFields(lines);
    if (entry.name === 'req-hdr') {
      const m = /^\s*(\S+)\s+(\S+)(?:\s+(\S+))?/.exec(startLine);
      httpRequest = {
        startLine,
        headers,
        raw: section,
        method: m?.[1] ?? '',
        target: m?.[2] ?? '',
        version: m?.[3] ?? '',
      };
    } else {
      httpResponse = lenientPage(startLine, headers, section);
    }
  }
  return {
    status: head.status,
    reason: head.reason,
    headers: head.headers,
    rawHeaders: head.rawHeaders,
    httpResponse,
    httpRequest,
  };
}

/** An encapsulated HTTP response head read leniently (status 0 when its start line is odd). */
function lenientPage(startLine: string, headers: Headers, raw: Buffer): HttpResponseHead {
  const m = /^\s*(HTTP\/\S+)[ \t]+(\d{3})(?![0-9])(?:[ \t]+(.*))?/i.exec(startLine);
  return {
    startLine,
    headers,
    raw,
    status: m === null ? 0 : Number(m[2]),
    reason: m?.[3] ?? '',
    version: m?.[1] ?? '',
  };
}

/**
 * The lines of a head cut off (the connection closed in it, or a second answer's head never
 * ended), the last one too when it was cut short: a threat field whose line breaks off
 * (`X-Infection-Found: Type=0; Resolution=2; Threat=EIC`) still names a threat. Read only ever
 * to block, a field more can only add a block (a clean-sounding value cut short, such as
 * `X-Virus-ID: no thr`, blocks: the conservative reading of an answer that broke off). A start
 * line alone is read when its status code is whole (some vendors block by the status line alone:
 * ESET's `405 Forbidden`, Symantec's `539`, closed before their line end: campaign-ba BA2), and
 * counts as that status would with its line end (an ICAP 4xx is the server refusing the upload:
 * the engine's 503, never the failure action; campaign-bb BB1); undefined otherwise.
 */
export function salvageLines(pending: Buffer): IcapReceivedHead | undefined {
  return pending.indexOf(0x0a) === -1 &&
    pending.indexOf(0x0d) === -1 &&
    !WHOLE_STATUS.test(pending.toString('latin1'))
    ? undefined
    : salvageResponseHead(pending);
}

/** An ICAP start line whose status code is whole (salvageResponseHead's reading of one). */
const WHOLE_STATUS = /^\s*ICAP\/\d+(?:\.\d+)?[ \t]+\d{3}(?![0-9])/i;

/**
 * Every head in what followed an answer on its connection (a second answer; a 100 Continue,
 * then an answer; one answer after another), each read leniently as salvageResponseHead says,
 * the last one cut short too, the blank lines before and between them skipped; an encapsulated
 * HTTP head counts as one head more. An HTTP response head after an ICAP head whose
 * `Encapsulated` names `res-hdr` (an HTTP request head between them or not) is also read as that
 * head's page, so that a block page under any status blocks (campaign-at AT10, campaign-au AU2);
 * its fields stay a head of their own too (AU3). When an ICAP status line comes inside a block
 * (an answer glued to the bytes before it, a client's header echoed in one: campaign-aw AW1,
 * AW2; or at a line's start after other lines: campaign-ax AX2, AX3), the heads are read a
 * second time with a head starting at each such status line too;
 * one that names no page does not come between a head and its page. Only ever read for a threat:
 * the second reading only adds heads.
 */
export function salvageHeads(stray: Buffer): IcapReceivedHead[] {
  return salvageReading(stray).heads;
}

/**
 * salvageHeads' heads, and whether the bytes end with an ICAP head naming a page that has not
 * come (in either reading): what follows them may be that page (client/stray.ts, HeadSieve).
 */
export function salvageReading(stray: Buffer): { heads: IcapReceivedHead[]; awaiting: boolean } {
  const text = lenientText(stray);
  const first = readHeads(text, false);
  const heads = first.heads;
  let awaiting = first.awaiting;
  GLUED.lastIndex = 0;
  if (GLUED.test(text)) {
    const second = readHeads(text, true);
    // (A loop, not a spread: the heads may be more than a call's arguments can be.)
    for (const head of second.heads) heads.push(head);
    awaiting ||= second.awaiting;
  }
  return { heads, awaiting };
}

/**
 * An ICAP status line that does not start a block: after other bytes on its line, or at the
 * start of a line after another (no blank line between: an answer after the upload written back
 * with a line end; campaign-ax AX2, AX3).
 */
const GLUED = /(?<=[^\n]\n?)icap\/\d{1,3}(?:\.\d{1,3})?[ \t]{1,8}\d{3}/gi;

/** salvageHeads' reading of `text` (its lines ended by LF), `glued`: a status line inside a block starts a head too. */
function readHeads(text: string, glued: boolean): { heads: IcapReceivedHead[]; awaiting: boolean } {
  const heads: IcapReceivedHead[] = [];
  /** The last ICAP head whose page has not come yet. */
  let awaiting: IcapReceivedHead | null = null;
  for (const whole of text.split(/\n{2,}/)) {
    const block = whole.replace(/^\n+/, '');
    let from = 0;
    GLUED.lastIndex = 0;
    // Every piece (interim heads too, however many): what is read here is bounded by its bytes.
    for (let inside = false; ; inside = true) {
      const m = glued ? GLUED.exec(block) : null;
      const piece = block.slice(from, m === null ? block.length : m.index);
      if (piece !== '') {
        const head = salvageText(piece);
        heads.push(head);
        if (awaiting !== null && /^\s*HTTP\//i.test(piece)) {
          const eol = piece.indexOf('\n');
          const startLine = eol === -1 ? piece : piece.slice(0, eol);
          awaiting.httpResponse = lenientPage(startLine, head.headers, Buffer.from(piece, 'latin1'));
          awaiting = null;
        } else if (namesPage(head)) awaiting = head;
        else if (!inside && (awaiting === null || !REQUEST_LINE.test(piece))) awaiting = null;
      }
      if (m === null) break;
      from = m.index;
    }
  }
  return { heads, awaiting: awaiting !== null };
}

/** Whether a salvaged ICAP head's `Encapsulated` names an HTTP response head. */
function namesPage(h: IcapReceivedHead): boolean {
  return h.status !== 0 && h.headers.getAll('encapsulated').some((v) => /res-hdr/i.test(v));
}

/** The start line of an HTTP request head (what may sit between an ICAP head and its page). */
const REQUEST_LINE = /^\s*\S+[ \t]+\S+[ \t]+HTTP\//i;

/**
 * What a failed transaction received of an answer as one head: the head cut off (or refused),
 * and the 100 Continue before it (the lines of both), or whichever there is.
 */
export function receivedAnswer(
  cut: IcapReceivedHead | undefined,
  interim: IcapReceivedHead | null,
): IcapReceivedHead | undefined {
  if (interim === null) return cut;
  if (cut === undefined) return interim;
  // The lines of both (a bare head's rawHeaders is an empty line, which would end the block).
  const fields = `${interim.rawHeaders}${cut.rawHeaders}`
    .split('\n')
    .filter((line) => line !== '' && line !== '\r')
    .map((line) => (line.endsWith('\r') ? `${line}\n` : `${line}\r\n`))
    .join('');
  // As UTF-8: a character the head was decoded to above U+00FF must not become a LF or a CR
  // (latin1 keeps its low byte: U+010A would end a line; campaign-aq AQ5).
  const head = salvageResponseHead(
    Buffer.from(`ICAP/1.0 ${cut.status || 100} ${cut.reason}\r\n${fields}\r\n`, 'utf8'),
  );
  // The encapsulated heads of either (a 100's are read for a threat too; campaign-aq AQ2).
  head.httpResponse = cut.httpResponse ?? interim.httpResponse ?? null;
  head.httpRequest = cut.httpRequest ?? interim.httpRequest ?? null;
  return head;
}

/**
 * An answer's trailer fields (`lines`, as the parser kept them) read leniently as a head with
 * the answer's status and reason, so that the verdict rules apply to them as to a head.
 */
export function trailerHead(status: number, reason: string, lines: string): IcapReceivedHead {
  return salvageResponseHead(Buffer.from(`ICAP/1.0 ${status} ${reason}\r\n${lines}\r\n`, 'latin1'));
}
