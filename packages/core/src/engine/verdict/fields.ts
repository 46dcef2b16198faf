import type { Resolution, Violation } from './types.js';

/**
 * Readers for the vendor header values that carry verdicts. Every function here is total: odd
 * input gives `undefined` or an empty result, never an exception.
 */

/** Longest text kept from a header value for a reason, a threat name or a violation field. */
const MAX_TEXT = 1024;

/**
 * Control characters (C0 and DEL), replaced by spaces so log lines and header values stay one
 * line; and the invisible marks that reorder or break text (bidi overrides and isolates, U+2028
 * and U+2029: a threat or file name shown reversed on the block page, campaign-bl BL7). C1 stays:
 * a UTF-8 name read byte for byte has its continuation bytes there.
 */
const CONTROL = /[\u0000-\u001f\u007f\u200e\u200f\u2028-\u202e\u2066-\u2069]+/g;

/** Trimmed, control characters replaced by a space, bounded; undefined when nothing is left. */
export function cleanText(value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  let s = value.replace(CONTROL, ' ').trim();
  if (s.length > MAX_TEXT) s = s.slice(0, MAX_TEXT).trimEnd();
  return s === '' ? undefined : s;
}

/**
 * Splits `a=1; b=2; c=x(y=1;z=2)` into lower-cased keys and trimmed values. A `;` inside
 * parentheses does not separate (NSX Defender's `Threat=LastlineArtifact(score=..;md5=..;uuid=..)`);
 * when the parentheses do not balance, every `;` separates. Spaces around `=` are allowed, the
 * trailing `;` is optional, and an item without `=` is kept with an empty key.
 */
export function splitParams(value: string): Array<[key: string, value: string]> {
  let parts = splitTopLevel(value);
  if (parts === undefined) parts = value.split(';');
  const out: Array<[string, string]> = [];
  for (const part of parts) {
    if (part.trim() === '') continue;
    const eq = part.indexOf('=');
    if (eq === -1) out.push(['', part.trim()]);
    else out.push([part.slice(0, eq).trim().toLowerCase(), part.slice(eq + 1).trim()]);
  }
  return out;
}

/** Splits on `;` outside parentheses; undefined when the parentheses do not balance. */
function splitTopLevel(value: string): string[] | undefined {
  const parts: string[] = [];
  let depth = 0;
  let start = 0;
  for (let i = 0; i < value.length; i++) {
    const c = value[i];
    if (c === '(') depth++;
    else if (c === ')') {
      if (depth === 0) return undefined;
      depth--;
    } else if (c === ';' && depth === 0) {
      parts.push(value.slice(start, i));
      start = i + 1;
    }
  }
  if (depth !== 0) return undefined;
  parts.push(value.slice(start));
  return parts;
}

function param(params: Array<[string, string]>, key: string): string | undefined {
  for (const [k, v] of params) if (k === key) return v;
  return undefined;
}

/** A small non-negative integer, or undefined. */
export function parseSmallInt(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const m = /^\s*(\d{1,9})\b/.exec(value);
  return m === null ? undefined : Number(m[1]);
}

export interface InfectionFound {
  /** 0 infection, 1 policy violation, 2 container violation / scan problem. */
  type: number | undefined;
  /** 0 not repaired, 1 repaired, 2 deleted/blocked. */
  resolution: number | undefined;
  threat: string | undefined;
}

/** `X-Infection-Found: Type=0; Resolution=2; Threat=Eicar-Test-Signature;` (draft-stecher-icap-subid). */
export function parseInfectionFound(value: string): InfectionFound {
  const params = splitParams(value);
  return {
    type: parseSmallInt(param(params, 'type')),
    resolution: parseSmallInt(param(params, 'resolution')),
    threat: cleanText(param(params, 'threat')),
  };
}

/** Resolution codes of `X-Violations-Found` lines. */
export function violationResolution(code: string | undefined): Resolution {
  const n = parseSmallInt(code);
  if (n === 1) return 'ICAP_FILE_REPAIRED';
  if (n === 2) return 'ICAP_VIOLATING_SECTION_REMOVED';
  return 'ICAP_FILE_NOT_REPAIRED';
}

/** Resolution codes of `X-Infection-Found`: 2 (deleted/blocked) means the file was not repaired. */
export function infectionResolution(code: number | undefined): Resolution {
  return code === 1 ? 'ICAP_FILE_REPAIRED' : 'ICAP_FILE_NOT_REPAIRED';
}

export interface ViolationsFound {
  /** The announced count, undefined when the first line is not a number. */
  count: number | undefined;
  violations: Violation[];
}

/**
 * `X-Violations-Found`: the count on the first line, then 4 folded lines per violation (file
 * name, threat name, problem id, resolution). Takes what parses: never more violations than the
 * count (when there is one) or than the lines; a last incomplete group is kept when it has at
 * least a file name and a threat name.
 */
export function parseViolations(lines: readonly string[]): ViolationsFound {
  // A count is the whole first line (`0.9`, `0-1` or `0 (1)` are no count of 0: text).
  const count = /^\s*\d{1,9}\s*$/.test(lines[0] ?? '') ? parseSmallInt(lines[0]) : undefined;
  const rest = lines.slice(1);
  const available = Math.ceil(rest.length / 4);
  const n = count === undefined ? available : Math.min(count, available);
  const violations: Violation[] = [];
  for (let i = 0; i < n; i++) {
    const group = rest.slice(i * 4, i * 4 + 4);
    if (group.length < 2) break;
    const v: Violation = {
      file_name: cleanText(group[0]) ?? '',
      threat_name: cleanText(group[1]) ?? '',
      resolution: violationResolution(group[3]),
    };
    const problemId = cleanText(group[2]);
    if (problemId !== undefined) v.problem_id = problemId;
    violations.push(v);
  }
  return { count, violations };
}

/**
 * The file name of a `Content-Disposition` value: `filename*=UTF-8''...` (RFC 8187) first,
 * then `filename=` (quoted or token). Undefined when there is none.
 */
export function contentDispositionFilename(value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  const ext = /(?:^|;)\s*filename\*\s*=\s*([^']*)'[^']*'([^;\s]*)/i.exec(value);
  if (ext !== null) {
    const decoded = percentDecode(ext[2]!, ext[1]!);
    if (decoded !== undefined) return baseName(decoded);
  }
  const quoted = /(?:^|;)\s*filename\s*=\s*"((?:[^"\\]|\\.)*)"/i.exec(value);
  if (quoted !== null) return baseName(utf8FromLatin1(quoted[1]!.replace(/\\(.)/g, '$1')));
  const token = /(?:^|;)\s*filename\s*=\s*([^;\s]+)/i.exec(value);
  if (token !== null) return baseName(utf8FromLatin1(token[1]!));
  return undefined;
}

/** The last segment of a request target's path (query and fragment removed), percent-decoded. */
export function lastPathSegment(target: string | undefined): string | undefined {
  if (target === undefined) return undefined;
  let path = target.replace(/^[a-z][a-z0-9+.-]*:\/\/[^/?#]*/i, '');
  const q = path.search(/[?#]/);
  if (q !== -1) path = path.slice(0, q);
  const segment = path.slice(path.lastIndexOf('/') + 1);
  if (segment === '') return undefined;
  return cleanText(percentDecode(segment, 'utf-8') ?? segment);
}

function baseName(name: string): string | undefined {
  return cleanText(name.slice(Math.max(name.lastIndexOf('/'), name.lastIndexOf('\\')) + 1));
}

function percentDecode(s: string, charset: string): string | undefined {
  try {
    if (/^(?:iso-8859-1|latin1)$/i.test(charset)) {
      return s.replace(/%([0-9a-f]{2})/gi, (_, h: string) => String.fromCharCode(Number.parseInt(h, 16)));
    }
    return decodeURIComponent(s);
  } catch {
    return undefined;
  }
}

/**
 * Encapsulated HTTP headers reach us decoded as Latin-1; a file name sent as raw UTF-8 bytes
 * reads back as UTF-8 when the bytes are valid UTF-8.
 */
function utf8FromLatin1(s: string): string {
  if (!/[^\u0000-\u007f]/.test(s) || /[^\u0000-\u00ff]/.test(s)) return s;
  const bytes = Buffer.from(s, 'latin1');
  const text = bytes.toString('utf8');
  return text.includes('\ufffd') ? s : text;
}

export interface LastlineArtifact {
  score: number | undefined;
  md5: string | undefined;
  /** `uuid=` (X-Infection-Found) or `task_uuid=` (X-Virus-ID). */
  uuid: string | undefined;
}

/** `LastlineArtifact(score=100;md5=...;uuid=...)` anywhere in a value; undefined when absent. */
export function parseLastlineArtifact(value: string | undefined): LastlineArtifact | undefined {
  if (value === undefined) return undefined;
  const m = /LastlineArtifact\s*\(([^()]*)\)/i.exec(value);
  if (m === null) return undefined;
  const params = splitParams(m[1]!);
  const md5 = param(params, 'md5')?.trim();
  return {
    score: parseScore(param(params, 'score')),
    md5: md5 !== undefined && /^[0-9a-f]{32}$/i.test(md5) ? md5.toLowerCase() : undefined,
    uuid: parseTaskUuid(param(params, 'task_uuid') ?? param(params, 'uuid')),
  };
}

/** An NSX Defender score: an integer 0-100. */
export function parseScore(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const s = value.trim();
  if (!/^\d{1,3}$/.test(s)) return undefined;
  const n = Number(s);
  return n <= 100 ? n : undefined;
}

/**
 * An NSX Defender task UUID: hex digits, optionally grouped by dashes (Lastline uses 32 plain hex
 * digits; the dashed 8-4-4-4-12 form is accepted too). Anything else is refused, because the value
 * goes into a URL and into HTTP headers sent to the client.
 */
export function parseTaskUuid(value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  const s = value.trim();
  if (!/^[0-9a-f]+(?:-[0-9a-f]+)*$/i.test(s)) return undefined;
  const digits = s.replace(/-/g, '').length;
  return digits >= 16 && digits <= 64 ? s : undefined;
}

export const LASTLINE_STATUSES: ReadonlySet<string> = new Set([
  'new',
  'known',
  'blacklist',
  'timeout',
  'error',
]);

/** An `X-Lastline-Status` value, lower-cased, or undefined when it is not one of the documented ones. */
export function parseLastlineStatus(value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  const s = value.trim().toLowerCase();
  return LASTLINE_STATUSES.has(s) ? s : undefined;
}
