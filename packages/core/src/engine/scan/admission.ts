import { escapeControls, type IcapError, IcapErrorCodes } from '../../errors.js';
import { boundaryOf, isMultipart, isMultipartFormData } from '../multipart/parse.js';
import { CHARSET_VALUE, encapsulationProblem, mediaTypeOf } from '../request.js';
import type { RequestContext, ScanOutcome } from '../types.js';
import { canDecode } from './intake.js';
import { refuse, tooLarge } from './outcome.js';

/**
 * The admission stage: what can be answered from the request head alone, before a byte of the
 * body is read (and before `Expect: 100-continue` is answered, see `engine.preflight`). The
 * policy has selected the request for scanning; this refuses what icapkit will not pass whatever
 * the scanner says: a head the ICAP server would not see as the application does (400), a
 * transfer coding other than chunked (501), a content coding it cannot decode (415), a content
 * type the profile does not allow (415), a multipart body every parser would not read alike
 * (400/415), a Content-Type that mentions multipart but is not a multipart type (415), a charset
 * whose decoding could turn bytes the scanner saw into other ASCII text (415), a declared length
 * above bufferSize (413, or untouched with fail-open).
 */

/**
 * Decides what needs no body: for a request the rules select, a declared length above
 * bufferSize (413, or the untouched request with fail-open) and a content type the profile
 * does not allow (415). Null: the body must be scanned. (A promise only for what needs one: the
 * common case, nothing to refuse, costs none.)
 */
export function admit(ctx: RequestContext): ScanOutcome | Promise<ScanOutcome> | null {
  const { profile: p, facts } = ctx;
  const unconditional = refusedWhateverTheRules(ctx);
  if (unconditional !== null) return unconditional;
  // What the ICAP server would be sent must be what the application reads: else 400, never failAction.
  const problem = ctx.options.badRequest ?? encapsulationProblem(facts, p.absoluteUri);
  if (problem !== undefined) return refuse(ctx, 'bad-request', IcapErrorCodes.BAD_REQUEST, problem, null);
  const transfer = facts.transferCoding;
  if (transfer !== 'chunked' && transfer !== undefined) {
    // Node only removes the chunked framing: the body would reach the application still coded.
    const reason = `Transfer-Encoding ${JSON.stringify(transfer)} is not supported (only chunked)`;
    return refuse(ctx, 'unsupported-transfer-coding', IcapErrorCodes.CONTENT_ENCODING, reason, null);
  }
  const coding = facts.contentCoding;
  if (facts.hasBody && coding !== 'identity' && (p.contentEncoding === 'refuse' || !canDecode(coding))) {
    const reason =
      p.contentEncoding === 'refuse'
        ? `compressed uploads (Content-Encoding: ${coding}) are not accepted`
        : `Content-Encoding ${JSON.stringify(coding)} is not supported`;
    return refuse(ctx, 'unsupported-type', IcapErrorCodes.CONTENT_ENCODING, reason, null);
  }
  const contentType = facts.headers.get('content-type');
  if (
    facts.hasBody &&
    p.allowedContentTypes !== undefined &&
    !mediaTypeAllowed(contentType, p.allowedContentTypes)
  ) {
    const reason = `content type ${JSON.stringify(contentType ?? '(none)')} is not allowed`;
    return refuse(ctx, 'unsupported-type', IcapErrorCodes.CONTENT_TYPE, reason, null);
  }
  const multipart = multipartAdmission(ctx, contentType);
  if (multipart !== null) return multipart;
  const charset = facts.hasBody ? charsetProblem(ctx, contentType) : undefined;
  if (charset !== undefined)
    return refuse(ctx, 'unsupported-type', IcapErrorCodes.CONTENT_TYPE, charset, null);
  if (facts.contentLength !== undefined && facts.contentLength > p.bufferSize) {
    return tooLarge(ctx, null);
  }
  return null;
}

const UNSCANNED_ROUTE = 'this request may reach routes scanned with different settings';

/**
 * What is refused before the rules are asked: header fields Node dropped may have framed a body
 * (400), a request its adapter cannot read as the client sent it (400: the rules would judge
 * another request than the one the application may read), and a request with a body that may
 * reach routes scanned with different settings (403,
 * the framework integration says why; at most 300 characters of it, control characters
 * escaped, are kept for the log and the refusal's message). Null: the rules decide.
 */
export function refusedWhateverTheRules(ctx: RequestContext): ScanOutcome | null {
  const { facts, options } = ctx;
  if (facts.tooManyFields !== undefined)
    return refuse(ctx, 'bad-request', IcapErrorCodes.BAD_REQUEST, facts.tooManyFields, null);
  if (options.unreadable !== undefined)
    return refuse(ctx, 'bad-request', IcapErrorCodes.BAD_REQUEST, options.unreadable, null);
  // A request without a body has nothing to scan: the rules decide, as for any other.
  if (options.unscannedRoute !== undefined && facts.hasBody) {
    const reason = escapeControls(options.unscannedRoute.trim()).slice(0, 300) || UNSCANNED_ROUTE;
    return refuse(ctx, 'unscanned-route', IcapErrorCodes.UNSCANNED_ROUTE, reason, null);
  }
  return null;
}

/**
 * A multipart body, from its head: multipart/form-data needs a Content-Type every parser
 * reads the same boundary from (400 otherwise); other multipart types are refused (415)
 * unless the profile scans them as raw bytes.
 */
function multipartAdmission(ctx: RequestContext, contentType: string | undefined): ScanOutcome | null {
  const facts = ctx.facts;
  if (!facts.hasBody) return null;
  // formidable reads any Content-Type that contains "multipart" (`/multipart/i`) as a form, with
  // the first `boundary=` it finds (and decodes base64 parts): `text/plain; boundary=x; y=multipart`
  // or `application/x-multipart` would be a form to it and one opaque body to the scanner.
  for (const value of facts.headers.getAll('content-type')) {
    if (/multipart/i.test(value) && !isMultipart(value)) {
      const reason = `content type ${JSON.stringify(value)} mentions multipart but is not a multipart type (some parsers read it as a form)`;
      return refuse(ctx, 'unsupported-type', IcapErrorCodes.MULTIPART, reason, null);
    }
  }
  if (!isMultipart(contentType)) return null;
  if (!isMultipartFormData(contentType)) {
    if (ctx.profile.otherMultipart === 'whole') return null;
    const reason = `${mediaTypeOf(contentType)} bodies are not accepted (multipart/form-data is)`;
    return refuse(ctx, 'unsupported-type', IcapErrorCodes.MULTIPART, reason, null);
  }
  try {
    boundaryOf(contentType!);
  } catch (err) {
    const e = err as IcapError;
    return refuse(ctx, 'bad-request', e.code, e.message, null);
  }
  return null;
}

function mediaTypeAllowed(contentType: string | undefined, allowed: readonly string[]): boolean {
  if (contentType === undefined) return false;
  const media = mediaTypeOf(contentType);
  const major = media.split('/')[0];
  return allowed.some((t) => t === media || (t.endsWith('/*') && t.slice(0, -2) === major));
}

/**
 * Charsets in which every byte below 0x80 is the same ASCII character and no byte from 0x80 is an
 * ASCII character: text in them holds the same ASCII the scanner saw in the bytes. Any other
 * (UTF-16, UTF-7, UTF-32, EBCDIC...) would let a body parser or handler that decodes by charset
 * (body-parser with iconv-lite, say) read a signature the scanner never saw in that form.
 * Bare `ascii` is not accepted: it is a Node.js Buffer encoding that clears the high bit of each
 * byte (`Buffer.from([0xd8]).toString('ascii')` is `X`), so a handler decoding with the label
 * as given would read ASCII the scanner saw as bytes from 0x80 (`us-ascii` is no Buffer encoding).
 */
const ASCII_SAFE_CHARSETS = new Set(['utf-8', 'utf8', 'us-ascii', 'iso-8859-1', 'latin1', 'windows-1252']);

/**
 * Why the body's charset is refused (415), or undefined. Every `charset` in every Content-Type
 * value counts, wherever a lenient parser might find it (a `charset=` inside another parameter's
 * quoted value too): each must be `charset=` with an allowed value (quoted or not, any case), and
 * there may be only one. A multipart/form-data body in per-file mode is exempt: the application
 * gets a form serialised under a new Content-Type without the charset, and each field's own
 * charset is dropped there (multipart/canonical.ts); in whole mode the form goes as sent, so
 * its charset is checked like any other.
 */
function charsetProblem(ctx: RequestContext, contentType: string | undefined): string | undefined {
  const values = ctx.facts.headers.getAll('content-type');
  if (values.length === 0) return undefined;
  if (values.length === 1 && ctx.profile.multipart === 'per-file' && isMultipartFormData(contentType))
    return undefined;
  let found: string | undefined;
  for (const value of values) {
    const re = /charset/gi;
    for (let m = re.exec(value); m !== null; m = re.exec(value)) {
      const rest = CHARSET_VALUE.exec(value.slice(m.index + m[0].length));
      const charset = rest === null ? undefined : (rest[1] ?? rest[2])!.trim().toLowerCase();
      if (charset === undefined)
        return `content type ${JSON.stringify(value)} has a charset that cannot be read (send charset=utf-8)`;
      if (!ASCII_SAFE_CHARSETS.has(charset))
        return `charset ${JSON.stringify(charset)} is not accepted (${ACCEPTED_CHARSETS} are)`;
      if (found !== undefined) return 'a Content-Type with more than one charset parameter is not accepted';
      found = charset;
    }
  }
  return undefined;
}

const ACCEPTED_CHARSETS = 'UTF-8, US-ASCII, ISO-8859-1 and windows-1252';
