import { IcapError, IcapErrorCodes } from '../../errors.js';
import { LightAbortController } from '../../light-signal.js';
import { endToEndHeaders, Headers } from '../../protocol/headers.js';
import type { BodyStore } from '../body.js';
import type { IcapAction, IcapLog, IcapRequestLog } from '../log.js';
import type { HttpRequestFacts } from '../request.js';
import { buildResponse } from '../respond.js';
import { exchange } from '../scan/exchange.js';
import { disposeOnce, ReplayPass } from '../scan/outcome.js';
import { takesFailAction } from '../scan/retry.js';
import { mayStartWithBom, withoutBom } from '../scan/second-object.js';
import type { ExchangeContext, PartResult, RequestContext, ScanOutcome } from '../types.js';
import { type CanonicalForm, canonicalForm } from './canonical.js';
import { type Part, parseMultipart } from './parse.js';

/**
 * multipart/form-data scanned part by part (`multipart: 'per-file'`): the strict parser
 * (parse.ts) splits the form while it arrives, each part is its own ICAP request (exchange),
 * and the application gets the form serialised again from what was scanned (canonical.ts).
 */

/** What the per-file scan of a form reads from the request's scan (scan/scan.ts). */
export interface FormScan extends RequestContext, ExchangeContext {
  /** The request as the ICAP server sees it (decoded when the body was compressed). */
  readonly scanFacts: HttpRequestFacts;
  /** The form's bytes as scanned (the decoded store for a compressed body). */
  readonly scanned: BodyStore;
  /** The request body as it arrived (the same store unless it was decoded). */
  readonly store: BodyStore;
  readonly contentType: string;
  /** Aborts with the request (client gone, responseTimeout, the caller). */
  readonly signal: AbortSignal;
}

/**
 * multipart/form-data scanned per file: the strict parser splits the form (refusing what it
 * cannot read one way only), each part (and each non-empty field, unless skipped) is its own
 * ICAP request named after its file, `multipartConcurrency` at a time. The application always
 * gets a form serialised from this parse (canonicalForm): all clean, every part (pass, with
 * new content-type and content-length headers); a part blocked, 403 naming it, or (strip) the
 * form without it; a part rewritten, the form with the new content.
 */
export async function scanParts(scan: FormScan): Promise<ScanOutcome> {
  const { profile: p, scanFacts: facts, scanned: store, store: replay, signal, log, options } = scan;
  // Our own light signal (no EventTarget): only our code listens (the parse, each part's exchange).
  const local = new LightAbortController();
  const onAbort = () => local.abort(signal.reason);
  if (signal.aborted) onAbort();
  else signal.addEventListener('abort', onAbort, { once: true });
  const run = limiter(p.multipartConcurrency);
  const scans: Array<Promise<PartResult>> = [];
  const scannedParts: Part[] = [];
  // Every part, as soon as it starts: a failed parse must still dispose what was created.
  const parts: Part[] = [];
  const disposeParts = () => {
    for (const part of parts) part.store.dispose();
  };
  /** 403 naming the first infected part. */
  const blockedPart = (first: PartResult, clientHeaders: Array<[string, string]> = []): ScanOutcome => {
    log.significance.push('ICAP_BLOCKED');
    const response = buildResponse('blocked', facts.headers.get('accept'), {
      threat: first.verdict?.threat_id,
      fileName: first.part.fileName ?? first.part.field,
      requestId: options.requestId,
    });
    return {
      action: 'ICAP_BLOCKED',
      log,
      threat: first.verdict?.threat_id,
      responseHeaders: clientHeaders,
      dispose: disposeOnce(() => {
        store.dispose();
        replay.dispose();
      }),
      kind: 'respond',
      status: response.status,
      headers: [...response.headers, ...clientHeaders],
      body: response.body,
      // The rest of a malformed form may not have been read.
      closeConnection: !store.ended,
    };
  };
  try {
    await parseMultipart(
      scan.contentType,
      store.open(),
      {
        limits: p.multipartLimits,
        storage: { memoryThreshold: p.memoryThreshold, spoolDir: p.spoolDir },
        // The whole form already arrived and is held in memory: reading it never waits.
        sourceInMemory: store.ended && !store.spooled && store.complete,
      },
      (part) => {
        parts.push(part);
        if (!mustScanPart(part, p.multipartFields)) return;
        // A scan failing for its own reason must not be an unhandled rejection before it is awaited.
        const task = run(() => scanPart(scan, part, local.signal));
        task.catch(noop);
        scans.push(task);
        scannedParts.push(part);
      },
      local.signal,
    );
  } catch (err) {
    local.abort(err);
    const done = await Promise.allSettled(scans);
    signal.removeEventListener('abort', onAbort);
    disposeParts();
    // A threat already found is not lost to a malformed rest of the form: 403, not 400.
    const threat = done.find(
      (r): r is PromiseFulfilledResult<PartResult> => r.status === 'fulfilled' && r.value.type === 'blocked',
    );
    if (threat !== undefined && err instanceof IcapError && err.code === IcapErrorCodes.MULTIPART) {
      log.file_names = parts.filter((x) => x.kind === 'file').map((x) => loggedName(x.fileName ?? ''));
      log.significance.push('MULTIPART_REFUSED');
      log.error_code = err.code;
      log.error_message = err.message;
      return blockedPart(threat.value);
    }
    throw err;
  }
  // The client going away still stops the part scans once the form is parsed (their outcome
  // would come after the response closed, and nothing would free the parts then).
  const settled = await Promise.allSettled(scans);
  signal.removeEventListener('abort', onAbort);
  const results: PartResult[] = [];
  for (const [i, r] of settled.entries()) {
    if (r.status === 'fulfilled') {
      results.push(r.value);
      continue;
    }
    // The whole form was parsed: a scan stopped by responseTimeout is an ICAP failure of that
    // part (the failure action decides), unless a part's scan was slow for what it carried
    // (marked CONTENT_PROVOKED, retry.ts: the parts share the timeout's error); anything else
    // (that, the client, an abort) ends the scan.
    const e = r.reason;
    if (e instanceof IcapError && e.code === IcapErrorCodes.TIMEOUT && takesFailAction(e)) {
      results.push({ part: scannedParts[i]!, type: 'failed', error: e });
      continue;
    }
    disposeParts();
    throw e;
  }
  log.file_names = parts.filter((x) => x.kind === 'file').map((x) => loggedName(x.fileName ?? ''));
  const clientHeaders = results.flatMap((r) => r.verdict?.client_headers ?? []);
  if (results.some((r) => r.verdict?.unscannable)) log.significance.push('UNSCANNABLE');

  const blocked = results.filter((r) => r.type === 'blocked');
  if (blocked.length > 0 && p.infectedPartAction === 'block') {
    disposeParts();
    return blockedPart(blocked[0]!, clientHeaders);
  }
  const failed = results.filter((r) => r.type === 'failed');
  if (failed.length > 0) {
    if (p.failAction === 'fail-closed') {
      disposeParts();
      throw failed[0]!.error;
    }
    log.significance.push('ICAP_ERROR', 'FAIL_OPEN');
    log.fail_action = 'fail-open';
    log.error_code = failed[0]!.error!.code;
    log.error_message = failed[0]!.error!.message;
  }
  const modified = results.filter((r) => r.type === 'modified');
  // The form for the application: serialised from the parse, without the blocked parts
  // (strip), with the rewritten ones, under a fresh boundary.
  const byIndex = new Map(results.map((r) => [r.part.index, r]));
  const kept = parts
    .filter((part) => byIndex.get(part.index)?.type !== 'blocked')
    .map((part) => {
      const r = byIndex.get(part.index);
      return r?.type === 'modified' && r.adapted !== undefined
        ? { part, content: { stream: () => r.adapted!.stream(), length: r.adapted.length } }
        : { part };
    });
  const form = canonicalForm(kept);
  const headers = endToEndHeaders(facts.headerPairs).filter(
    ([n]) => !FORM_HEADERS_REPLACED.has(n.toLowerCase()),
  );
  headers.push(['content-type', form.contentType], ['content-length', String(form.length)]);
  store.dispose();
  replay.dispose();
  if (blocked.length === 0 && modified.length === 0) {
    const action = failed.length > 0 ? 'ICAP_FAILED' : 'ICAP_PASSED';
    return new FormPass(action, log, form, headers, clientHeaders, disposeParts);
  }
  const disposeForm = () => {
    form.held.destroy();
    disposeParts();
    for (const r of modified) r.adapted?.dispose();
  };
  if (blocked.length > 0) {
    log.significance.push('ICAP_BLOCKED', 'PARTS_REMOVED');
    log.removed_parts = blocked.map((r) => {
      const removed: { field: string; file_name?: string; threat_id?: string } = { field: r.part.field };
      if (r.part.fileName !== undefined) removed.file_name = r.part.fileName;
      if (r.verdict?.threat_id !== undefined) removed.threat_id = r.verdict.threat_id;
      return removed;
    });
  }
  if (modified.length > 0) log.significance.push('ICAP_MODIFIED');
  return {
    action: 'ICAP_MODIFIED',
    log,
    threat: blocked[0]?.verdict?.threat_id,
    responseHeaders: clientHeaders,
    dispose: disposeOnce(disposeForm),
    kind: 'rewrite',
    method: facts.method,
    url: facts.target,
    headers,
    body: form.body,
    contentLength: form.length,
  };
}

/**
 * A form passed as it was scanned: the canonical form's stream made only when read (the
 * adapters take its Buffers through HELD_REPLAY instead, as for a held body). Disposing it
 * destroys the form (its stream, if made) and frees the parts.
 */
class FormPass extends ReplayPass {
  readonly headers: Array<[string, string]>;

  constructor(
    action: IcapAction,
    log: IcapLog,
    form: CanonicalForm,
    headers: Array<[string, string]>,
    responseHeaders: Array<[string, string]>,
    disposeParts: () => void,
  ) {
    const held = form.held;
    super(action, log, held, form.length, responseHeaders, () => {
      held.destroy();
      disposeParts();
    });
    this.headers = headers;
  }
}

/** One part as its own ICAP request. ICAP failures are a result; aborts and client errors throw. */
async function scanPart(scan: FormScan, part: Part, signal: AbortSignal): Promise<PartResult> {
  await part.done;
  // A field is scanned as its raw bytes (whatever its charset): what the application gets.
  const body = part.store;
  if (part.kind === 'field' && body.received === 0) return { part, type: 'clean', verdict: undefined };
  const subject = partFacts(scan.scanFacts, part, body.received);
  const entries: IcapRequestLog[] = [];
  try {
    const result = await exchange(scan, subject, body, signal, entries);
    for (const entry of entries) nameEntry(entry, part);
    if (result.type === 'clean' && result.skipped === undefined && mayStartWithBom(body)) {
      const blocked = await scanWithoutBom(scan, part, body, signal, entries);
      if (blocked !== null) return blocked;
    }
    if (result.type === 'clean') return { part, type: 'clean', verdict: result.verdict ?? undefined };
    if (result.type === 'blocked') return { part, type: 'blocked', verdict: result.verdict };
    const identical = await result.adapted.identical();
    const entry = entries.at(-1);
    if (entry !== undefined) {
      entry.action = identical ? 'ICAP_PASSED' : 'ICAP_MODIFIED';
      if (!identical) entry.modified_content_length = result.adapted.length;
    }
    if (identical && mayStartWithBom(body)) {
      const blocked = await scanWithoutBom(scan, part, body, signal, entries);
      if (blocked !== null) {
        result.adapted.dispose();
        return blocked;
      }
    }
    return identical
      ? { part, type: 'clean', verdict: result.verdict }
      : { part, type: 'modified', verdict: result.verdict, adapted: result.adapted };
  } catch (err) {
    for (const entry of entries) nameEntry(entry, part);
    if (
      err instanceof IcapError &&
      takesFailAction(err) &&
      (!signal.aborted || err.code === IcapErrorCodes.NO_SERVER)
    )
      return { part, type: 'failed', error: err };
    throw err;
  }
}

/**
 * A part that starts with a UTF-8 BOM, once it passed with it: also scanned without it, as
 * undici hands a field's value over (and `File.text()` reads a file): second-object.ts says why.
 * Null when that is clean (or an identical echo), else the part blocked (a rewrite of it
 * cannot be put back into the part the application gets). Throws what the exchange throws.
 */
async function scanWithoutBom(
  scan: FormScan,
  part: Part,
  body: BodyStore,
  signal: AbortSignal,
  entries: IcapRequestLog[],
): Promise<PartResult | null> {
  const copy = await withoutBom(scan.profile, body);
  if (copy === null) return null;
  const start = entries.length;
  try {
    const result = await exchange(
      scan,
      partFacts(scan.scanFacts, part, copy.received),
      copy,
      signal,
      entries,
    );
    for (const entry of entries.slice(start)) nameEntry(entry, part);
    if (result.type === 'clean') return null;
    if (result.type === 'blocked') return { part, type: 'blocked', verdict: result.verdict };
    const identical = await result.adapted.identical();
    result.adapted.dispose();
    const entry = entries.at(-1);
    if (entry !== undefined) entry.action = identical ? 'ICAP_PASSED' : 'ICAP_BLOCKED';
    return identical ? null : { part, type: 'blocked', verdict: result.verdict };
  } finally {
    copy.dispose();
  }
}

function noop(): void {}

/** Request headers a canonical multipart form replaces (or drops: it has no transfer or content coding). */
const FORM_HEADERS_REPLACED = new Set([
  'content-type',
  'content-length',
  'transfer-encoding',
  'content-encoding',
]);

/**
 * Whether a part is scanned: files always; fields unless `multipartFields: 'skip'`, and even
 * then a field whose name holds `filename` (a parser that finds `filename=` with a regex over
 * the whole Content-Disposition value could make a file of it; formidable 3.5 does not, but
 * the cost of scanning such a field is nil).
 */
function mustScanPart(part: Part, fields: 'scan' | 'skip'): boolean {
  if (part.kind === 'file' || fields === 'scan') return true;
  return /filename/i.test(part.head.nameBytes);
}

/**
 * Runs at most `n` tasks at once. A task started at once is returned as it is (no promise
 * around it); one that waits for a free slot gets a promise of its result.
 */
function limiter(n: number): <T>(task: () => Promise<T>) => Promise<T> {
  let active = 0;
  const queue: Array<() => void> = [];
  const done = () => {
    active--;
    queue.shift()?.();
  };
  return <T>(task: () => Promise<T>) => {
    if (active < n) {
      active++;
      const started = task();
      started.then(done, done);
      return started;
    }
    return new Promise<T>((resolve, reject) => {
      queue.push(() => {
        active++;
        const started = task();
        started.then(done, done);
        started.then(resolve, reject);
      });
    });
  };
}

/** The encapsulated request for one part: the original request line, the part's own headers. */
function partFacts(facts: HttpRequestFacts, part: Part, length: number): HttpRequestFacts {
  const name = part.fileName ?? part.field;
  const pairs: Array<[string, string]> = [];
  if (facts.host !== undefined) pairs.push(['Host', facts.host]);
  pairs.push(
    ['Content-Type', part.mimeType],
    ['Content-Disposition', contentDisposition(part.kind === 'file' ? 'attachment' : 'form-data', name)],
  );
  return {
    ...facts,
    method: 'POST',
    headerPairs: pairs,
    headers: new Headers(pairs),
    hasBody: true,
    contentLength: length,
    chunked: false,
    fileName: name,
  };
}

/** A Content-Disposition value safe on the wire, with the UTF-8 name in filename* (RFC 6266). */
export function contentDisposition(type: string, name: string): string {
  if (isPlainName(name)) return `${type}; filename="${name}"`;
  const ascii = name.replace(/[^\x20-\x7e]|["\\]/g, '_');
  const encoded = encodeURIComponent(name).replace(
    /['()*]/g,
    (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`,
  );
  return `${type}; filename="${ascii}"; filename*=UTF-8''${encoded}`;
}

/** Printable ASCII without `"` or `\`: what the replacement above leaves as it is (no regex, no copy). */
function isPlainName(name: string): boolean {
  for (let i = 0; i < name.length; i++) {
    const c = name.charCodeAt(i);
    if (c < 0x20 || c > 0x7e || c === 0x22 || c === 0x5c) return false;
  }
  return true;
}

/**
 * A part's name as the record holds it: at most LOGGED_NAME characters (a form of many parts with
 * long names made a record twice the request's size, one a log pipeline splits or drops:
 * campaign-bl BL5).
 */
function loggedName(name: string): string {
  return name.length > LOGGED_NAME ? `${name.slice(0, LOGGED_NAME)}…` : name;
}
const LOGGED_NAME = 256;

/** Names a part's log entry and its violations after the part. */
function nameEntry(entry: IcapRequestLog, part: Part): void {
  const name = loggedName(part.fileName ?? part.field);
  entry.file_name = name;
  for (const v of entry.violations ?? []) if (v.file_name === '' || v.file_name === '-') v.file_name = name;
}
