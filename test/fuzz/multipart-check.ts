/**
 * The differential check of "scanned equals delivered" for multipart bodies: one request sent to
 * an app's POST /raw (see ./multipart-apps.ts), the bytes its handler received run through the
 * five application parsers (./multipart-parsers.ts), and every file and field they extract
 * compared with what the ICAP server recorded for that request.
 *
 * A violation is:
 * - a status other than those icapkit or the app give a client-side anomaly or a verdict
 *   (200, 400, 403, 413, 415): a 5xx means input reached failAction or crashed a handler
 *   (no response at all is allowed when the handler did not run: see below);
 * - a handler that ran although the request was not approved;
 * - an approved request (200) whose handler was not seen;
 * - an item some parser extracted whose content is in no scanned body (as bytes; a string as
 *   its UTF-8 bytes, its Latin-1 bytes when it has no code point above U+00FF, or as a part of
 *   a scanned body decoded as UTF-8, invalid sequences included); empty content needs no scan;
 * - EICAR in any extracted item;
 * - a parser that crashes on the delivered bytes (formidable rejects a promise nobody awaits on
 *   some part headers: the application exits).
 */
import { eicar, type IcapTestServer } from '@icapkit/testing';
import type { App } from '../conformance/apps.js';
import { rawExchange, type Step } from '../support/raw-http.js';
import { type Extracted, type ParseResult, parseAll } from './multipart-parsers.js';

export const OK_STATUSES = [200, 400, 403, 413, 415];

/** What is running now, for attributing an uncaught exception or unhandled rejection. */
export const phase = { now: 'idle' };

export interface Outcome {
  status: number | undefined;
  /** Time to the response. */
  ms: number;
  /** What the handler received (approved requests). */
  delivered: { body: Buffer; contentType: string | undefined } | null;
  /** REQMOD bodies the ICAP server received for this request. */
  scanned: Buffer[];
  parsed: ParseResult[];
  violations: string[];
}

export interface Wire {
  contentType: string;
  body: Buffer;
  pieces?: number[] | undefined;
  pauses?: number[] | undefined;
}

/** The request's steps on the wire: head, then the body in pieces with pauses between them. */
function steps(w: Wire): Step[] {
  const head =
    `POST /raw HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: ${w.contentType}\r\n` +
    `Content-Length: ${w.body.length}\r\n\r\n`;
  const out: Step[] = [head];
  const pieces = w.pieces?.length ? w.pieces : [w.body.length || 1];
  const pauses = w.pauses?.length ? w.pauses : [0];
  let at = 0;
  for (let k = 0; at < w.body.length && k < 10_000; k++) {
    const size = Math.max(1, pieces[k % pieces.length]!);
    out.push(Buffer.from(w.body.subarray(at, at + size)));
    at += size;
    const pause = pauses[k % pauses.length]!;
    if (pause > 0 && at < w.body.length) out.push({ pause });
  }
  return out;
}

function contains(scanned: Buffer[], content: Buffer | string): boolean {
  // Nothing to scan: an empty file or field needs no verdict.
  if (content.length === 0) return true;
  if (Buffer.isBuffer(content)) return scanned.some((s) => s.includes(content));
  // A string: a parser decoded some bytes. Those bytes as UTF-8 or Latin-1, or the same lossy
  // decoding of a scanned body (invalid UTF-8 becomes U+FFFD in both).
  const forms = [Buffer.from(content, 'utf8')];
  if (![...content].some((ch) => ch.codePointAt(0)! > 0xff)) forms.push(Buffer.from(content, 'latin1'));
  return (
    forms.some((f) => scanned.some((s) => s.includes(f))) ||
    scanned.some((s) => s.toString('utf8').includes(content))
  );
}

function hasEicar(content: Buffer | string): boolean {
  return Buffer.isBuffer(content) ? content.includes(eicar()) : content.includes(eicar().toString('latin1'));
}

export function showItem(i: Extracted): string {
  const content = Buffer.isBuffer(i.content) ? i.content.toString('latin1') : i.content;
  const file = i.fileName === undefined ? '' : ` filename=${JSON.stringify(i.fileName)}`;
  return `${i.kind} name=${JSON.stringify(i.name)}${file} content=${JSON.stringify(content.slice(0, 300))}`;
}

/** Sends `w` to `app`, parses what the handler got, and lists the violations. */
export async function exchange(app: App, icap: IcapTestServer, w: Wire): Promise<Outcome> {
  const firstRequest = icap.requests.length;
  const firstSeen = app.seen.length;
  const t0 = performance.now();
  phase.now = `${app.framework} handling the request`;
  const r = await rawExchange(app.url, steps(w), { responses: 1, waitMs: 10_000 });
  const status = r.responses[0]?.status;
  const ms = Math.round(performance.now() - t0);
  phase.now = 'idle';
  const scanned = icap.requests
    .slice(firstRequest)
    .filter((q) => q.method === 'REQMOD')
    .map((q) => q.body ?? Buffer.alloc(0));
  const violations: string[] = [];
  // No response at all: the server answered a refusal while the body was still arriving and
  // closed, and the client's next write got a reset that discarded the answer (the handler did
  // not run: checked below). Not a pass; counted by the caller.
  if (status === undefined && !r.closedByServer)
    violations.push('no answer within 10 s, connection still open');
  if (status !== undefined && !OK_STATUSES.includes(status))
    violations.push(`status ${status}: ${r.responses[0]?.body.toString().slice(0, 200) ?? ''}`);
  let delivered: Outcome['delivered'] = null;
  let parsed: ParseResult[] = [];
  const seen = app.seen.slice(firstSeen).find((s) => s.route === 'raw');
  if (status === 200) {
    if (seen?.raw === undefined) violations.push('approved, but the handler was not seen');
    else {
      const ct = seen.headers['content-type'];
      delivered = { body: seen.raw, contentType: Array.isArray(ct) ? ct.join(', ') : ct };
      parsed = await parseAll(delivered.body, delivered.contentType, phase);
      for (const p of parsed) {
        if (p.crash !== undefined)
          violations.push(`${p.parser} crashed on the delivered bytes (an unhandled rejection): ${p.crash}`);
        for (const item of p.items) {
          if (!Buffer.isBuffer(item.content)) item.content = String(item.content ?? '');
          if (hasEicar(item.content)) violations.push(`${p.parser} extracted EICAR: ${showItem(item)}`);
          else if (!contains(scanned, item.content))
            violations.push(`${p.parser} extracted content nobody scanned: ${showItem(item)}`);
        }
      }
    }
  } else if (seen !== undefined) violations.push(`status ${status ?? 'none'}, yet the handler ran`);
  return { status, ms, delivered, scanned, parsed, violations };
}

/** A readable report of an outcome. */
export function showOutcome(o: Outcome): string {
  const lines = [`status: ${o.status} (${o.ms} ms)`];
  lines.push(
    `scanned (${o.scanned.length}): ${o.scanned.map((s) => JSON.stringify(s.toString('latin1').slice(0, 200))).join(' | ')}`,
  );
  if (o.delivered !== null) {
    lines.push(`delivered Content-Type: ${o.delivered.contentType}`);
    lines.push(`delivered body: ${JSON.stringify(o.delivered.body.toString('latin1').slice(0, 600))}`);
    for (const p of o.parsed)
      lines.push(
        `  ${p.parser}: ${p.items.map(showItem).join('; ') || '(nothing)'}${p.error === null ? '' : ` [error ${p.error}]`}`,
      );
  }
  if (o.violations.length > 0) lines.push(`VIOLATIONS:\n  ${o.violations.join('\n  ')}`);
  return lines.join('\n');
}
