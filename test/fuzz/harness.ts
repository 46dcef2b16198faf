/**
 * Runs {@link IcapParser} over a list of feeds the way its two users do, and reduces what it
 * reported to plain data that can be compared across different splits of the same bytes:
 *
 * - `single` (the client's transaction): one message; whatever follows it stays unparsed;
 * - `multi` (the embedded server's session): `reset()` at the end of each message, and in
 *   request mode `continueBody()` after a preview that did not end with ieof (as after a
 *   `100 Continue`), so a connection carries any number of messages.
 *
 * It also measures what the parser holds: the only way it keeps bytes across feeds is
 * `Buffer.concat([pending, chunk])`, so while a feed runs, `Buffer.concat` is wrapped to
 * record the largest buffer it builds.
 */
import { IcapError, type IcapHead, IcapParser, type ParserOptions } from '@icapkit/core';

export interface HttpHeadSummary {
  startLine: string;
  line: Array<string | number>;
  headers: Array<[string, string]>;
  raw: string;
}

export interface HeadSummary {
  kind: 'response' | 'request';
  line: Array<string | number>;
  headers: Array<[string, string]>;
  encapsulated: Array<[string, number]> | null;
  body: string | null;
  httpRequest: HttpHeadSummary | null;
  httpResponse: HttpHeadSummary | null;
}

export type ParseEvent =
  | { type: 'head'; head: HeadSummary }
  | { type: 'body'; hex: string }
  | { type: 'end'; ieof: boolean };

export interface ParseOutcome {
  events: ParseEvent[];
  /** The IcapError code thrown, or a description of anything else that was thrown. */
  error: string | null;
  done: boolean;
  leftover: number;
}

export interface ParseRun extends ParseOutcome {
  /** Largest buffer the parser assembled while a message was being read. */
  held: number;
  /** Longest single feed, in ms. */
  slowestFeedMs: number;
  /** Body bytes handed out so far, after each feed. */
  bodyAfterFeed: number[];
  totalMs: number;
  /** CPU time the process spent on the whole run, in ms: unlike wall time, not stretched by a busy machine. */
  cpuMs: number;
}

/** CPU time (user + system) of this process since `start`, in ms. */
export function cpuMsSince(start: NodeJS.CpuUsage): number {
  const d = process.cpuUsage(start);
  return (d.user + d.system) / 1000;
}

export function summarize(h: IcapHead): HeadSummary {
  return {
    kind: h.kind,
    line: h.kind === 'response' ? [h.version, h.status, h.reason] : [h.method, h.uri, h.version],
    headers: [...h.headers],
    encapsulated: h.encapsulated?.map((e) => [e.name, e.offset]) ?? null,
    body: h.body,
    httpRequest:
      h.httpRequest === null
        ? null
        : {
            startLine: h.httpRequest.startLine,
            line: [h.httpRequest.method, h.httpRequest.target, h.httpRequest.version],
            headers: [...h.httpRequest.headers],
            raw: h.httpRequest.raw.toString('hex'),
          },
    httpResponse:
      h.httpResponse === null
        ? null
        : {
            startLine: h.httpResponse.startLine,
            line: [h.httpResponse.version, h.httpResponse.status, h.httpResponse.reason],
            headers: [...h.httpResponse.headers],
            raw: h.httpResponse.raw.toString('hex'),
          },
  };
}

const realConcat = Buffer.concat;
let tracking = false;
let largestConcat = 0;

function trackedConcat(list: readonly Uint8Array[], totalLength?: number): Buffer {
  const out = realConcat.call(Buffer, list, totalLength);
  if (tracking && out.length > largestConcat) largestConcat = out.length;
  return out;
}

/** Wraps Buffer.concat (call in beforeAll; undo with {@link untrackConcat} in afterAll). */
export function trackConcat(): void {
  (Buffer as { concat: typeof Buffer.concat }).concat = trackedConcat as typeof Buffer.concat;
}

export function untrackConcat(): void {
  (Buffer as { concat: typeof Buffer.concat }).concat = realConcat;
}

export function runParser(
  kind: 'response' | 'request',
  feeds: readonly Buffer[],
  mode: 'single' | 'multi',
  options: ParserOptions = {},
): ParseRun {
  const events: ParseEvent[] = [];
  let parser!: IcapParser;
  let current: IcapHead | null = null;
  let continued = false;
  let bodyBytes = 0;
  const bodyAfterFeed: number[] = [];
  const pushBody = (data: Buffer) => {
    bodyBytes += data.length;
    if (data.length === 0) return;
    const last = events.at(-1);
    if (last?.type === 'body') last.hex += data.toString('hex');
    else events.push({ type: 'body', hex: data.toString('hex') });
  };
  parser = new IcapParser(
    kind,
    {
      onHead: (h) => {
        events.push({ type: 'head', head: summarize(h) });
        if (!(h.kind === 'response' && h.status < 200 && h.status !== 101)) {
          current = h;
          continued = false;
        }
      },
      onBody: pushBody,
      onEnd: (ieof) => {
        events.push({ type: 'end', ieof });
        if (mode !== 'multi') return;
        const previewed =
          kind === 'request' && current?.body != null && current.headers.has('preview') && !ieof;
        if (previewed && !continued) {
          continued = true;
          parser.continueBody();
        } else {
          parser.reset();
        }
      },
    },
    options,
  );
  let error: string | null = null;
  let held = 0;
  let slowest = 0;
  const t0 = performance.now();
  const cpu0 = process.cpuUsage();
  for (const feed of feeds) {
    const measuring = !parser.done;
    const f0 = performance.now();
    largestConcat = 0;
    tracking = measuring;
    try {
      parser.execute(feed);
    } catch (err) {
      error = err instanceof IcapError ? err.code : `not an IcapError: ${String(err)}`;
    } finally {
      tracking = false;
    }
    if (measuring) held = Math.max(held, largestConcat);
    slowest = Math.max(slowest, performance.now() - f0);
    bodyAfterFeed.push(bodyBytes);
    if (error !== null) break;
  }
  return {
    events,
    error,
    done: parser.done,
    leftover: parser.leftover,
    held,
    slowestFeedMs: slowest,
    bodyAfterFeed,
    totalMs: performance.now() - t0,
    cpuMs: cpuMsSince(cpu0),
  };
}

/** The comparable part of a run. */
export function outcome(run: ParseRun): ParseOutcome {
  return { events: run.events, error: run.error, done: run.done, leftover: run.leftover };
}
