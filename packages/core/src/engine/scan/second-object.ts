import { Headers } from '../../protocol/headers.js';
import { BodyStore } from '../body.js';
import type { IcapLog, IcapRequestLog } from '../log.js';
import type { ResolvedProfile } from '../profile.js';
import type { HttpRequestFacts } from '../request.js';
import type { AttemptResult } from '../types.js';

/**
 * The objects the ICAP server is sent besides the body, once the body itself passed: the
 * decoded strings of a JSON or urlencoded body (decoded/view.ts), a compressed body as it was
 * sent, and a body without its leading UTF-8 BOM (below). Each is an ICAP request of its own.
 */

/**
 * One more ICAP object for a request whose body passed (`first`): `send` runs its exchange
 * (null: nothing to send), its log entries are named `name`. Null when it is clean (or an
 * identical echo), else the block to answer with; a rewrite blocks (`rewrote` says why).
 * Throws what the exchange throws (an ICAP failure takes the failure action).
 */
export async function secondObject(
  log: IcapLog,
  first: AttemptResult,
  name: string,
  rewrote: string,
  send: (entries: IcapRequestLog[]) => Promise<AttemptResult | null>,
): Promise<AttemptResult | null> {
  // What the request becomes instead of `first`: a block (or a failure) frees its adapted body.
  const instead = () => {
    if (first.type === 'adapted') first.adapted.dispose();
  };
  try {
    const entries: IcapRequestLog[] = [];
    const second = await send(entries);
    if (second === null) return null;
    for (const entry of entries) entry.file_name = name;
    if (second.verdict?.unscannable) log.significance.push('UNSCANNABLE');
    if (second.type === 'clean') return null;
    if (second.type === 'blocked') {
      instead();
      return second;
    }
    const identical = await second.adapted.identical();
    second.adapted.dispose();
    const entry = entries.at(-1);
    if (entry !== undefined) entry.action = identical ? 'ICAP_PASSED' : 'ICAP_BLOCKED';
    if (identical) return null;
    log.error_message ??= rewrote;
    instead();
    return { type: 'blocked', res: second.res, verdict: second.verdict, relay: undefined };
  } catch (err) {
    instead();
    throw err;
  }
}

/** The name the decoded strings' log entries carry (`file_name`). */
export const DECODED_NAME = '(decoded strings)';
export const REWROTE_DECODED =
  'the ICAP server rewrote the decoded strings of the request body, which cannot be put back into it';

/** The name the log entries of a compressed body as sent carry (its decoded copy is the body's). */
export const ENCODED_NAME = '(body as sent, compressed)';
export const REWROTE_ENCODED =
  'the ICAP server rewrote the compressed request body as sent, while its decoded copy was scanned apart';

/** The name the log entries of a body without its leading UTF-8 BOM carry. */
export const NO_BOM_NAME = '(body without its UTF-8 BOM)';
export const REWROTE_NO_BOM =
  'the ICAP server rewrote the request body without its UTF-8 BOM, while the body was scanned with it';

const BOM = Buffer.from([0xef, 0xbb, 0xbf]);

/**
 * Whether a body that has ended may start with a UTF-8 BOM: a body held in memory is looked at
 * (three bytes compared, no copy, no promise: what every body pays); one spooled to disk, whose
 * start is not at hand, is read by {@link withoutBom}, which gives null when it has none.
 *
 * Why: the text readers applications use drop a leading BOM (TextDecoder, so @hono/node-server's
 * `text()` and `json()`; undici's `request.text()` and form fields; iconv-lite, so body-parser's
 * text, json and urlencoded parsers and raw-body with an encoding). The handler then holds text
 * that starts three bytes later than the object the ICAP server was sent: a signature anchored
 * at the start of the object (EICAR's own rule, ClamAV's offset-0 body signatures) or a hash of
 * the whole object (ClamAV .hdb) never sees it. So such a body is sent a second time, without
 * its BOM, and must pass in both forms.
 */
export function mayStartWithBom(store: BodyStore): boolean {
  if (store.received < BOM.length) return false;
  return store.spooled || store.equalsAt(0, BOM);
}

/**
 * A copy of `store` (which has ended, whole) without its first three bytes, when they are a
 * UTF-8 BOM; null otherwise. Held like a body (memory up to memoryThreshold, then a temp file);
 * the caller disposes it.
 */
export async function withoutBom(p: ResolvedProfile, store: BodyStore): Promise<BodyStore | null> {
  const cursor = store.open();
  // Made once the BOM is seen: a spooled body without one costs its first read only.
  let copy: BodyStore | null = null;
  let head = 0;
  try {
    for (;;) {
      const step = await cursor.next();
      if (step.done) break;
      let chunk = step.value;
      while (head < BOM.length && chunk.length > 0) {
        if (chunk[0] !== BOM[head]) return null;
        chunk = chunk.subarray(1);
        head++;
      }
      if (head < BOM.length) continue;
      copy ??= new BodyStore({
        limit: p.bufferSize,
        retainAll: true,
        memoryThreshold: p.memoryThreshold,
        spoolDir: p.spoolDir,
      });
      if (chunk.length > 0) copy.push(chunk);
    }
  } catch (err) {
    copy?.dispose();
    throw err;
  } finally {
    void cursor.return?.();
  }
  if (copy === null) return null;
  copy.end();
  return copy;
}

/** The request as sent for a copy of its body `length` bytes long (its framing made a length). */
export function withLength(facts: HttpRequestFacts, length: number): HttpRequestFacts {
  const pairs: Array<[string, string]> = [];
  for (const pair of facts.headerPairs) {
    const name = pair[0].toLowerCase();
    if (name !== 'content-length' && name !== 'transfer-encoding') pairs.push(pair);
  }
  pairs.push(['Content-Length', String(length)]);
  return {
    ...facts,
    headerPairs: pairs,
    headers: new Headers(pairs),
    contentLength: length,
    chunked: false,
    transferCoding: undefined,
  };
}
