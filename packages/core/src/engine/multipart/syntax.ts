/**
 * Strict syntax of the header values a multipart body depends on: the request's
 * `Content-Type` (media type, boundary) and each part's `Content-Disposition` and
 * `Content-Type`. Strings here are byte strings (latin1: one char per byte), so nothing is lost
 * or reinterpreted before the form is serialised again.
 *
 * The grammar is RFC 9110's (`type/subtype *( OWS ";" OWS token "=" ( token / quoted-string ) )`)
 * with what parsers disagree on taken out, since a value two parsers read differently is a way
 * around the scanner (`filename="x";`, `filename = "x"`, `filename=m[1].bin`, `filename="x" junk`,
 * a duplicated parameter, `boundary*=`, `xboundary=`, `x="boundary=..."`, a quoted-pair `\`):
 * such a value is refused, not repaired. Each function returns the parsed value or a message
 * naming the problem (the caller turns it into a 400).
 */

export interface MediaType {
  /** `type/subtype`, lower-cased. */
  type: string;
  /** Parameters, names lower-cased, values unquoted. */
  params: Map<string, string>;
}

export interface Disposition {
  /** Always `form-data` (lower-cased); anything else is refused. */
  type: string;
  name: string | undefined;
  filename: string | undefined;
}

/** RFC 9110 tchar, by char code: `!#$%&'*+-.^_`|~`, digits, letters. */
const TCHAR = new Uint8Array(128);
for (const c of "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
  TCHAR[c.charCodeAt(0)] = 1;

/** qdtext without the quoted-pair: HTAB, SP, visible ASCII but `"` and `\`, obs-text. */
function isQdtext(code: number): boolean {
  return (
    code === 0x09 ||
    code === 0x20 ||
    code === 0x21 ||
    (code >= 0x23 && code <= 0x5b) ||
    (code >= 0x5d && code <= 0x7e) ||
    code >= 0x80
  );
}

interface ParamList {
  first: string;
  /** Parameter names (lower-cased) and their values (unquoted), in order. */
  names: string[];
  values: string[];
}

/** SP or HTAB. */
function isOws(code: number): boolean {
  return code === 0x20 || code === 0x09;
}

/** A tchar (or, for a media type's first token, `/`) by char code. */
function isTcharCode(code: number): boolean {
  return code < 128 && TCHAR[code] === 1;
}

/**
 * `first *( OWS ";" OWS name "=" value )`. `first` is the leading token run (a media type may
 * contain `/`). Returns a message on any deviation.
 */
function parseParamList(value: string, what: string, firstAllowsSlash: boolean): ParamList | string {
  let i = 0;
  const n = value.length;
  while (i < n && isOws(value.charCodeAt(i))) i++;
  const start = i;
  for (; i < n; i++) {
    const code = value.charCodeAt(i);
    if (!(isTcharCode(code) || (firstAllowsSlash && code === 0x2f))) break;
  }
  const first = value.slice(start, i);
  if (first === '') return `${what} does not start with a token`;
  const names: string[] = [];
  const values: string[] = [];
  // The duplicate check in a set: a header of thousands of parameters stays linear.
  const seen = new Set<string>();
  for (;;) {
    while (i < n && isOws(value.charCodeAt(i))) i++;
    if (i >= n) break;
    if (value[i] !== ';') return `${what} has unexpected text ${JSON.stringify(value.slice(i, i + 20))}`;
    i++;
    while (i < n && isOws(value.charCodeAt(i))) i++;
    if (i >= n) return `${what} ends with a ";" and no parameter`;
    const ns = i;
    while (i < n && isTcharCode(value.charCodeAt(i))) i++;
    const name = value.slice(ns, i).toLowerCase();
    if (name === '') return `${what} has an empty parameter name`;
    if (value[i] !== '=')
      return `${what} parameter "${name}" is not followed directly by "=" (no spaces are allowed)`;
    i++;
    let v: string;
    if (value[i] === '"') {
      i++;
      const vs = i;
      while (i < n && value[i] !== '"') {
        const code = value.charCodeAt(i);
        if (code === 0x5c)
          return `${what} parameter "${name}" uses a backslash escape (parsers read it differently)`;
        if (!isQdtext(code)) return `${what} parameter "${name}" has a control character`;
        i++;
      }
      if (i >= n) return `${what} parameter "${name}" has an unterminated quoted string`;
      v = value.slice(vs, i);
      i++;
    } else {
      const vs = i;
      while (i < n && isTcharCode(value.charCodeAt(i))) i++;
      v = value.slice(vs, i);
      if (v === '') return `${what} parameter "${name}" has no value`;
    }
    // Right after a value only OWS, ";" or the end may come (`filename="x" junk`, `m[1].bin`).
    if (i < n && value[i] !== ';' && !isOws(value.charCodeAt(i)))
      return `${what} parameter "${name}" is followed by unexpected text ${JSON.stringify(value.slice(i, i + 20))}`;
    if (seen.has(name)) return `${what} has the parameter "${name}" more than once`;
    seen.add(name);
    names.push(name);
    values.push(v);
  }
  return { first, names, values };
}

/** A media type with strict parameters (no duplicates, no quoted-pairs). */
export function parseMediaType(value: string, what = 'Content-Type'): MediaType | string {
  const list = parseParamList(value, what, true);
  if (typeof list === 'string') return list;
  if (!/^[^/]+\/[^/]+$/.test(list.first)) return `${what} is not a media type (type/subtype)`;
  const params = new Map<string, string>();
  for (let k = 0; k < list.names.length; k++) params.set(list.names[k]!, list.values[k]!);
  return { type: list.first.toLowerCase(), params };
}

/** RFC 2046 §5.1.1 boundary characters, without the space (ModSecurity refuses spaces too). */
const BOUNDARY = /^[0-9A-Za-z'()+_,\-./:=?]{1,70}$/;

/**
 * The boundary of a multipart request's Content-Type, refusing every shape another parser
 * could read a different boundary from: more than one boundary-like parameter (`boundary*`,
 * `xboundary`, a duplicate), any parameter value that contains `boundary=`, an invalid value.
 */
export function boundaryFrom(media: MediaType): string {
  let boundary: string | undefined;
  for (const [k, v] of media.params) {
    if (k === 'boundary') boundary = v;
    else if (k.includes('boundary'))
      throw new SyntaxProblem(`multipart Content-Type has a boundary-like parameter "${k}"`);
    if (/boundary\s*=/i.test(v))
      throw new SyntaxProblem(`multipart Content-Type parameter "${k}" has a value containing "boundary="`);
  }
  if (boundary === undefined) throw new SyntaxProblem('multipart body without a boundary parameter');
  if (!BOUNDARY.test(boundary)) throw new SyntaxProblem('multipart boundary is not valid (RFC 2046)');
  return boundary;
}

/** A problem with the syntax of a header value (a 400). */
export class SyntaxProblem extends Error {}

/**
 * The charset of a part's Content-Type (lower-cased; undefined without one), or a message when
 * another parser could read a different charset from it, as {@link boundaryFrom} does for the
 * boundary: a charset-like parameter other than `charset` (`charset*=utf-8''utf-16le` is an
 * RFC 2231 value to @fastify/busboy, which decodes the field as UTF-16LE while a strict reader
 * sees no charset at all; `xcharset`, `charset*0`), or any parameter value containing
 * `charset=` (a lenient regex would find it there).
 */
export function partCharsetOf(media: MediaType): string | undefined | { problem: string } {
  let charset: string | undefined;
  for (const [k, v] of media.params) {
    if (k === 'charset') charset = v.toLowerCase();
    else if (k.includes('charset'))
      return { problem: `a part's Content-Type has a charset-like parameter "${k}"` };
    if (/charset\s*\*?\s*=/i.test(v))
      return { problem: `a part's Content-Type parameter "${k}" has a value containing "charset="` };
  }
  return charset;
}

/**
 * A part's Content-Disposition: `form-data`, at most `name` and `filename`, each once, as a
 * token or a quoted string without backslashes or control characters.
 */
export function parseDisposition(value: string): Disposition | string {
  const list = parseParamList(value, 'Content-Disposition', false);
  if (typeof list === 'string') return list;
  const type = list.first.toLowerCase();
  if (type !== 'form-data')
    return `a part's Content-Disposition is "${list.first}", not "form-data" (other parsers make files of it)`;
  let name: string | undefined;
  let filename: string | undefined;
  for (let k = 0; k < list.names.length; k++) {
    const key = list.names[k]!;
    if (key === 'name') name = list.values[k];
    else if (key === 'filename') filename = list.values[k];
    else return `Content-Disposition parameter "${key}" is not supported (only name and filename)`;
  }
  return { type, name, filename };
}

/** The transfer encodings a part may declare: identity ones (any other is refused). */
export const IDENTITY_TRANSFER_ENCODINGS = new Set(['7bit', '8bit', 'binary']);
