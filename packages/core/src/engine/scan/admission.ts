import { type IcapError, IcapErrorCodes } from '../../errors.js';
import { boundaryOf, isMultipart, isMultipartFormData } from '../multipart/parse.js';
import { encapsulationProblem } from '../request.js';
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
 * (400/415), a declared length above bufferSize (413, or untouched with fail-open).
 */

/**
 * Decides what needs no body: for a request the rules select, a declared length above
 * bufferSize (413, or the untouched request with fail-open) and a content type the profile
 * does not allow (415). Null: the body must be scanned. (A promise only for what needs one: the
 * common case, nothing to refuse, costs none.)
 */
export function admit(ctx: RequestContext): ScanOutcome | Promise<ScanOutcome> | null {
  const { profile: p, facts } = ctx;
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
  if (facts.contentLength !== undefined && facts.contentLength > p.bufferSize) {
    return tooLarge(ctx, null);
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
  if (!facts.hasBody || !isMultipart(contentType)) return null;
  if (!isMultipartFormData(contentType)) {
    if (ctx.profile.otherMultipart === 'whole') return null;
    const media = contentType!.split(';')[0]!.trim().toLowerCase();
    const reason = `${media} bodies are not accepted (multipart/form-data is)`;
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
  const media = contentType.split(';')[0]!.trim().toLowerCase();
  const major = media.split('/')[0];
  return allowed.some((t) => t === media || (t.endsWith('/*') && t.slice(0, -2) === major));
}
