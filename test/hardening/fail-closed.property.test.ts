/**
 * The fail-closed invariant, property-based: in fail-closed mode the handler never receives a
 * byte the ICAP server did not approve.
 *
 * Each run is an interleaving of one to four uploads, started a few ms apart, against the real
 * middleware of Express 5, Fastify and Koa 3 (the conformance apps, with `failAction` and
 * `bufferSizeExceedAction` both 'fail-closed', in Allow: 204 mode and in streaming mode), and
 * the embedded ICAP server scripted per upload: a clean 204 or identical echo, an EICAR block,
 * a `/modify` rewrite, or a fault (delay, hang, close or reset at each moment, garbage, 4xx/5xx,
 * oversized headers, an endless chunk, 100 after ieof, an early response, a stall after 100,
 * hand-made responses: a truncated or misframed rewrite, a 200 without Encapsulated, a
 * bodiless rewrite). Clients send bodies around the preview and buffer limits, with
 * Content-Length or chunked, in random pieces with pauses, with or without
 * `Expect: 100-continue`, and some go away at a random point.
 *
 * Every body carries a unique marker. For every upload the handler got either nothing, or
 * exactly the original body when the server approved it (204 or an identical echo), or exactly
 * the server's rewritten body; the client saw a response or a closed socket in bounded time,
 * and only the statuses icapkit answers with. Uploads whose outcome does not depend on timing
 * must also end as they should (clean: 200, blocked: 403, too large: 413, broken server: 503).
 * After each run no ICAP transaction is left on any engine; at the end no ICAP connection is
 * left open on the server and no socket, server or timer of the test is left behind.
 *
 * `ICAPKIT_FAIL_CLOSED_RUNS` raises the number of interleavings (default 60).
 */
import { request } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  CRLF,
  chunkHeader,
  encodeHttpRequestHead,
  headBytes,
  IcapEngine,
  type IcapLog,
  type IcapProfile,
  LAST_CHUNK,
} from '@icapkit/core';
import {
  eicar,
  type Fault,
  type IcapTestServer,
  type RecordedRequest,
  startIcapServer,
} from '@icapkit/testing';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type App, type Framework, startApp } from '../conformance/apps.js';
import { checkAsyncProperty, runsFromEnv } from '../fuzz/support.js';

const RUNS = runsFromEnv('ICAPKIT_FAIL_CLOSED_RUNS', 60);
const FRAMEWORKS: Framework[] = ['express5', 'fastify', 'koa3'];
const BUFFER_SIZE = 64 * 1024;
/** The server's OPTIONS Preview and the profile's previewSize. */
const PREVIEW = 1024;
/** Short, so that hangs end fast; long enough that a loaded machine does not turn a clean upload into a 503. */
const RESPONSE_TIMEOUT = 600;
/** Time an upload may take beyond its own sending, whatever the fault. */
const END_BOUND_MS = 6_000;
/** Statuses icapkit answers with instead of the application. */
const REFUSALS = [403, 408, 413, 503];
/** Writes per upload at most (pieces grow for large bodies). */
const MAX_WRITES = 40;

// ---------------------------------------------------------------- cases

type RawKind =
  | 'raw-204'
  | 'raw-rewrite'
  | 'raw-truncated'
  | 'raw-bad-chunk'
  | 'raw-no-encapsulated'
  | 'raw-empty-rewrite';

type Scripted = { kind: 'clean' } | { kind: 'modify' } | { kind: 'fault'; fault: Fault } | { kind: RawKind };

interface CaseSpec {
  framework: Framework;
  allow204: boolean;
  size: number;
  eicar: 'none' | 'in-preview' | 'after-preview';
  scripted: Scripted;
  chunked: boolean;
  expect100: boolean;
  pieces: number[];
  pauses: number[];
  abort: { at: 'mid-body'; fraction: number } | { at: 'after-body'; ms: number } | null;
  startDelay: number;
}

const FAULTS: Fault[] = [
  { kind: 'hang' },
  { kind: 'status', status: 500 },
  { kind: 'status', status: 503 },
  { kind: 'status', status: 400 },
  { kind: 'garbage' },
  { kind: 'garbage', bytes: 'ICAP/1.0 200 OK\r\nEncapsulated: req-hdr=0, req-body=5\r\n\r\nHTTP/' },
  { kind: 'continue-after-ieof' },
  { kind: 'oversized-headers', bytes: 70_000 },
  { kind: 'endless-chunk' },
  { kind: 'stall-after-continue' },
  { kind: 'early-response' },
  { kind: 'connection-close' },
  { kind: 'no-istag' },
  ...(['on-head', 'after-preview', 'mid-body', 'mid-response'] as const).flatMap((when): Fault[] => [
    { kind: 'close', when },
    { kind: 'reset', when },
  ]),
];

const sizeArb = fc.oneof(
  {
    weight: 3,
    arbitrary: fc.constantFrom(
      1,
      PREVIEW - 1,
      PREVIEW,
      PREVIEW + 1,
      2 * PREVIEW,
      BUFFER_SIZE - 1,
      BUFFER_SIZE,
      BUFFER_SIZE + 1,
      2 * BUFFER_SIZE,
    ),
  },
  { weight: 2, arbitrary: fc.integer({ min: 1, max: 3 * PREVIEW }) },
  { weight: 1, arbitrary: fc.integer({ min: 1, max: 2 * BUFFER_SIZE + 5000 }) },
);

const scriptedArb: fc.Arbitrary<Scripted> = fc.oneof(
  { weight: 4, arbitrary: fc.constant<Scripted>({ kind: 'clean' }) },
  { weight: 3, arbitrary: fc.constant<Scripted>({ kind: 'modify' }) },
  { weight: 8, arbitrary: fc.constantFrom(...FAULTS).map((fault): Scripted => ({ kind: 'fault', fault })) },
  {
    weight: 2,
    arbitrary: fc
      .oneof(
        fc.integer({ min: 0, max: 80 }),
        fc.integer({ min: 2 * RESPONSE_TIMEOUT, max: 3 * RESPONSE_TIMEOUT }),
      )
      .map((ms): Scripted => ({ kind: 'fault', fault: { kind: 'delay', ms } })),
  },
  {
    weight: 4,
    arbitrary: fc.constantFrom<Scripted>(
      { kind: 'raw-204' },
      { kind: 'raw-rewrite' },
      { kind: 'raw-truncated' },
      { kind: 'raw-bad-chunk' },
      { kind: 'raw-no-encapsulated' },
      { kind: 'raw-empty-rewrite' },
    ),
  },
);

const caseArb: fc.Arbitrary<CaseSpec> = fc.record({
  framework: fc.constantFrom(...FRAMEWORKS),
  allow204: fc.boolean(),
  size: sizeArb,
  eicar: fc.constantFrom<CaseSpec['eicar']>('none', 'none', 'none', 'in-preview', 'after-preview'),
  scripted: scriptedArb,
  chunked: fc.boolean(),
  expect100: fc.boolean(),
  pieces: fc.array(fc.oneof(fc.integer({ min: 1, max: 600 }), fc.integer({ min: 601, max: 70_000 })), {
    minLength: 1,
    maxLength: 6,
  }),
  pauses: fc.array(fc.integer({ min: 0, max: 12 }), { minLength: 1, maxLength: 4 }),
  abort: fc.oneof(
    { weight: 6, arbitrary: fc.constant(null) },
    {
      weight: 1,
      arbitrary: fc.record({
        at: fc.constant('mid-body' as const),
        fraction: fc.integer({ min: 0, max: 999 }).map((n) => n / 1000),
      }),
    },
    {
      weight: 1,
      arbitrary: fc.record({ at: fc.constant('after-body' as const), ms: fc.integer({ min: 0, max: 300 }) }),
    },
  ),
  startDelay: fc.integer({ min: 0, max: 40 }),
});

const batchArb = fc.array(caseArb, { minLength: 1, maxLength: 4 });

/** A case made concrete: its id, its bytes, what the server answers. */
interface Case extends CaseSpec {
  id: string;
  body: Buffer;
  /** The rewritten body the server sends (modify and raw rewrites), else null. */
  rewritten: Buffer | null;
  /** The raw answer (raw kinds). */
  raw: Buffer | null;
}

let nextId = 1;

function makeCase(spec: CaseSpec): Case {
  const id = `c${nextId++}`;
  const marker = Buffer.from(`<<${id}:${Math.random().toString(36).slice(2)}>>`);
  const body = Buffer.alloc(spec.size);
  for (let at = 0; at < body.length; at += marker.length) marker.copy(body, at);
  const virus = eicar();
  let withEicar: CaseSpec['eicar'] = spec.eicar;
  // The embedded server answers EICAR in the preview with a block and then, for these two
  // faults, never reads the connection again although it looks reusable (a bug of the test
  // server, see the report): the next upload on it would hang. Not combined here.
  const s = spec.scripted;
  if (
    withEicar === 'in-preview' &&
    s.kind === 'fault' &&
    (s.fault.kind === 'garbage' || s.fault.kind === 'endless-chunk')
  )
    withEicar = 'none';
  if (withEicar === 'in-preview' && body.length >= virus.length) virus.copy(body, 0);
  else if (withEicar === 'after-preview' && body.length >= PREVIEW + 100 + virus.length)
    virus.copy(body, PREVIEW + 100);
  else withEicar = 'none';
  const kind = s.kind;
  const rewritten =
    kind === 'modify' || kind === 'raw-rewrite' || kind === 'raw-truncated' || kind === 'raw-bad-chunk'
      ? Buffer.from(`<<rewritten ${id}>>${'r'.repeat(spec.size % 3000)}`)
      : kind === 'raw-empty-rewrite'
        ? Buffer.alloc(0)
        : null;
  const c: Case = { ...spec, eicar: withEicar, id, body, rewritten, raw: null };
  c.raw = rawAnswer(c);
  return c;
}

/** Hand-made ICAP answers, written after the request was read. */
function rawAnswer(c: Case): Buffer | null {
  const kind = c.scripted.kind;
  if (!kind.startsWith('raw-')) return null;
  if (kind === 'raw-204') return Buffer.from('ICAP/1.0 204 No Content\r\nISTag: "raw"\r\n\r\n');
  if (kind === 'raw-no-encapsulated') return Buffer.from('ICAP/1.0 200 OK\r\nISTag: "raw"\r\n\r\n');
  const body = c.rewritten!;
  const http = encodeHttpRequestHead(
    {
      method: 'POST',
      target: '/raw',
      headers: [
        ['Host', '127.0.0.1'],
        ['Content-Type', 'application/octet-stream'],
        ['X-Case', c.id],
      ],
    },
    { contentLength: body.length },
  );
  if (kind === 'raw-empty-rewrite') {
    return Buffer.concat([
      headBytes('ICAP/1.0 200 OK', [
        ['ISTag', '"raw"'],
        ['Encapsulated', `req-hdr=0, null-body=${http.length}`],
      ]),
      http,
    ]);
  }
  const icap = headBytes('ICAP/1.0 200 OK', [
    ['ISTag', '"raw"'],
    ['Encapsulated', `req-hdr=0, req-body=${http.length}`],
  ]);
  if (kind === 'raw-rewrite')
    return Buffer.concat([icap, http, chunkHeader(body.length), body, CRLF, LAST_CHUNK]);
  // Declared longer than sent, and the connection stays open: the client must time out.
  if (kind === 'raw-truncated') return Buffer.concat([icap, http, chunkHeader(body.length + 10), body]);
  // The chunk is followed by garbage instead of CRLF: a framing error after the data.
  return Buffer.concat([icap, http, chunkHeader(body.length), body, Buffer.from('XX0\r\n\r\n')]);
}

// ---------------------------------------------------------------- what may happen

interface Allowed {
  /** The original body may reach the handler (the server may have approved it). */
  original: boolean;
  /** The rewritten body may reach the handler. */
  rewritten: boolean;
  /** The outcome that must happen when it does not depend on timing (null: it may). */
  expected: { status: number; body: 'original' | 'rewritten' | null } | { statuses: number[] } | null;
}

function allowed(c: Case): Allowed {
  const ieof = c.size <= PREVIEW;
  const tooLarge = c.size > BUFFER_SIZE;
  const infected = c.eicar !== 'none';
  const midBodyAbort = c.abort?.at === 'mid-body';
  const aborted = c.abort !== null;
  const s = c.scripted;
  // Whether the server's answer (for this size) approves: a verdict, not a fault.
  let approves: boolean;
  let deterministic = true;
  switch (s.kind) {
    case 'clean':
    case 'modify':
      approves = true;
      break;
    case 'raw-rewrite':
    case 'raw-empty-rewrite':
      approves = true;
      break;
    case 'raw-204':
      // Legal in the preview, or with Allow: 204; otherwise the client refuses it.
      approves = c.allow204 || ieof;
      break;
    case 'raw-truncated':
    case 'raw-bad-chunk':
    case 'raw-no-encapsulated':
      approves = false;
      break;
    case 'fault': {
      const f = s.fault;
      switch (f.kind) {
        case 'delay':
          approves = f.ms < RESPONSE_TIMEOUT;
          break;
        case 'connection-close':
          approves = true;
          break;
        case 'no-istag':
          // RFC 3507 says MUST; whether a client insists is its choice.
          approves = true;
          deterministic = false;
          break;
        case 'continue-after-ieof':
          // The 100 nobody waits for is read past: the server's answer after it decides.
          approves = true;
          break;
        case 'stall-after-continue':
          approves = ieof;
          break;
        case 'close':
        case 'reset':
          // Past the preview, or while the body arrives: nothing happens when the preview held all of it.
          approves = (f.when === 'after-preview' || f.when === 'mid-body') && ieof;
          break;
        default:
          approves = false;
      }
      break;
    }
  }
  const modifies = s.kind === 'modify' || s.kind === 'raw-rewrite' || s.kind === 'raw-empty-rewrite';
  const f = s.kind === 'fault' ? s.fault : null;
  // EICAR in a preview is answered with a block at the end of the preview, whatever answer was
  // scripted for later, unless the fault strikes first.
  const preempts =
    f !== null &&
    (((f.kind === 'close' || f.kind === 'reset') && (f.when === 'on-head' || f.when === 'after-preview')) ||
      f.kind === 'hang' ||
      f.kind === 'early-response');
  const previewBlock = c.eicar === 'in-preview' && c.size > PREVIEW && !preempts;
  const midResponse = f !== null && (f.kind === 'close' || f.kind === 'reset') && f.when === 'mid-response';
  // Otherwise EICAR is found when the answer is a verdict (a scripted answer replaces the verdict).
  const scans =
    s.kind === 'clean' ||
    s.kind === 'modify' ||
    (f !== null &&
      !['status', 'raw', 'garbage', 'oversized-headers', 'endless-chunk', 'hang', 'early-response'].includes(
        f.kind,
      ));
  const blocked = infected && (scans || previewBlock);
  const mayApprove = approves && !tooLarge && !blocked && !midBodyAbort;
  const result: Allowed = {
    original: mayApprove && !modifies,
    rewritten: mayApprove && modifies,
    expected: null,
  };
  if (aborted || !deterministic) return result;
  if (
    c.scripted.kind === 'fault' &&
    c.scripted.fault.kind === 'delay' &&
    Math.abs(c.scripted.fault.ms - RESPONSE_TIMEOUT) < 200
  )
    return result;
  if (tooLarge) {
    // A declared length over the limit is refused before anything is read; a chunked body
    // when it crosses the limit, unless the server failed first.
    result.expected = c.chunked ? { statuses: [403, 413, 503] } : { status: 413, body: null };
  } else if (blocked && ((previewBlock && !midResponse) || s.kind === 'clean' || s.kind === 'modify')) {
    result.expected = { status: 403, body: null };
  } else if (result.original) {
    result.expected = { status: 200, body: 'original' };
  } else if (result.rewritten) {
    result.expected = { status: 200, body: 'rewritten' };
  } else {
    result.expected = { statuses: [403, 503] };
  }
  return result;
}

// ---------------------------------------------------------------- the client

interface Ended {
  kind: 'response' | 'closed' | 'aborted' | 'unfinished';
  status?: number;
  body?: Buffer;
  error?: string;
  ms: number;
}

function drive(app: App, c: Case): Promise<Ended> {
  const t0 = performance.now();
  const headers: Record<string, string> = { 'content-type': 'application/octet-stream', 'x-case': c.id };
  if (!c.chunked) headers['content-length'] = String(c.body.length);
  if (c.expect100) headers.expect = '100-continue';
  const abortAt =
    c.abort?.at === 'mid-body'
      ? Math.min(c.body.length - 1, Math.floor(c.abort.fraction * c.body.length))
      : null;
  return new Promise<Ended>((resolve) => {
    let settled = false;
    let stop = false;
    const finish = (e: Omit<Ended, 'ms'>) => {
      if (settled) return;
      settled = true;
      stop = true;
      clearTimeout(deadline);
      resolve({ ...e, ms: performance.now() - t0 });
    };
    const req = request(`${app.url}/raw`, { method: 'POST', headers, agent: false });
    // At most MAX_WRITES writes (a slow client, not an endless one); the bound is the time the
    // client itself takes to send, plus END_BOUND_MS.
    const least = Math.ceil(c.body.length / MAX_WRITES);
    const pieces = c.pieces.map((n) => Math.max(n, least));
    const sendTime = MAX_WRITES * (Math.max(...c.pauses) + 5);
    const deadline = setTimeout(
      () => {
        req.destroy();
        finish({ kind: 'unfinished' });
      },
      END_BOUND_MS + sendTime + (c.expect100 ? 1000 : 0),
    );
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (d: Buffer) => chunks.push(d));
      res.on('end', () => finish({ kind: 'response', status: res.statusCode!, body: Buffer.concat(chunks) }));
      res.on('error', (err) => finish({ kind: 'closed', error: String(err) }));
    });
    req.on('error', (err: NodeJS.ErrnoException) =>
      finish({ kind: stop ? 'aborted' : 'closed', error: err.code ?? String(err) }),
    );
    req.on('close', () => setTimeout(() => finish({ kind: stop ? 'aborted' : 'closed' }), 50));
    const write = async () => {
      let sent = 0;
      let k = 0;
      while (sent < c.body.length && !stop) {
        let n = pieces[k % pieces.length]!;
        if (abortAt !== null) n = Math.min(n, abortAt - sent);
        if (n > 0) {
          const piece = c.body.subarray(sent, sent + n);
          await new Promise<void>((r) => req.write(piece, () => r()));
          sent += n;
        }
        if (abortAt !== null && sent >= abortAt) {
          // Going away mid-upload: what was written has left, the rest never comes.
          await sleep(20);
          stop = true;
          req.destroy();
          return;
        }
        const pause = c.pauses[k++ % c.pauses.length]!;
        if (pause > 0) await sleep(pause);
      }
      if (stop) return;
      req.end();
      if (c.abort?.at === 'after-body') {
        await sleep(c.abort.ms);
        if (!settled) {
          stop = true;
          req.destroy();
        }
      }
    };
    if (c.expect100) {
      let started = false;
      const start = () => {
        if (started) return;
        started = true;
        void write();
      };
      req.once('continue', start);
      // As curl does: send anyway when no 100 Continue comes.
      setTimeout(start, 1000).unref();
      req.flushHeaders();
    } else {
      void write();
    }
  });
}

// ---------------------------------------------------------------- the test

const cases = new Map<string, Case>();
const logs: IcapLog[] = [];

function scriptFor(rec: RecordedRequest): Fault | undefined {
  if (rec.method === 'OPTIONS') return undefined;
  const c = cases.get(rec.httpRequest?.headers.get('x-case') ?? '');
  if (c === undefined) return undefined;
  const s = c.scripted;
  if (s.kind === 'fault') return s.fault;
  if (c.raw !== null) return { kind: 'raw', response: c.raw };
  return undefined;
}

function rewriteFor(_body: Buffer, rec: RecordedRequest): Buffer | null {
  const c = cases.get(rec.httpRequest?.headers.get('x-case') ?? '');
  return c?.scripted.kind === 'modify' ? c.rewritten : null;
}

function profile(allow204: boolean): IcapProfile {
  return {
    name: `fail-closed-${allow204 ? '204' : 'streaming'}`,
    poolGroup: 'icap://127.0.0.1:1', // replaced once the server runs
    serviceUri: '/modify',
    failAction: 'fail-closed',
    bufferSizeExceedAction: 'fail-closed',
    allow204,
    bufferSize: BUFFER_SIZE,
    previewSize: PREVIEW,
    // Every body previewed, small ones included: the model below is about preview and 100 Continue
    // (so previews never stop after a run of 100 Continue: adaptive-preview.property.test.ts covers that).
    previewMinBodySize: 0,
    adaptivePreview: false,
    responseTimeout: RESPONSE_TIMEOUT,
    connection: { ioTimeout: RESPONSE_TIMEOUT, connectTimeout: 1000, keepAliveTimeout: 3000 },
    // Never suspend the server: every upload must meet its own fault.
    health: { failureLimit: 1000, probeInterval: 1000 },
    onLog: (l) => logs.push(l),
  };
}

/** Counts of what keeps the event loop alive. */
function resources(): Record<string, number> {
  const out: Record<string, number> = {};
  for (const r of process.getActiveResourcesInfo()) out[r] = (out[r] ?? 0) + 1;
  return out;
}

async function until(what: string, ok: () => boolean, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > end) throw new Error(`${what} (waited ${ms} ms)`);
    await sleep(25);
  }
}

/** The engines of the apps (captured as they scan: the apps do not expose them). */
const engines = new Set<IcapEngine>();
const realScan = IcapEngine.prototype.scan;
/** Each upload's icap_log, for the report of a failure. */
const scanLogs = new Map<string, IcapLog>();

function verdictProblems(c: Case, result: Ended, seen: Buffer[], action: string | undefined): string[] {
  const problems: string[] = [];
  const may = allowed(c);
  if (seen.length > 1) problems.push(`the handler ran ${seen.length} times`);
  const got = seen[0];
  if (got !== undefined) {
    const isOriginal = got.equals(c.body);
    const isRewritten = c.rewritten !== null && got.equals(c.rewritten);
    if (!(isOriginal && may.original) && !(isRewritten && may.rewritten)) {
      problems.push(
        `the handler received ${got.length} bytes (${isOriginal ? 'the original' : isRewritten ? 'the rewritten body' : 'neither the original nor the rewritten body'}) the server did not approve`,
      );
    }
    if (isOriginal && action !== 'ICAP_PASSED') problems.push(`original body with action ${action}`);
    if (!isOriginal && isRewritten && action !== 'ICAP_MODIFIED')
      problems.push(`rewritten body with action ${action}`);
  }
  if (result.kind === 'unfinished')
    problems.push(`no response and no close within the bound (${result.ms.toFixed(0)} ms)`);
  if (result.kind === 'response') {
    const status = result.status!;
    if (status === 200) {
      if (got === undefined) problems.push('200 without the handler');
      else if (JSON.parse(result.body!.toString()).length !== got.length)
        problems.push('the handler saw another length');
    } else if (!REFUSALS.includes(status)) {
      problems.push(`status ${status}: not the application, not a refusal of icapkit`);
    } else if (got !== undefined) {
      problems.push(`status ${status} although the handler ran`);
    }
  }
  const want = may.expected;
  // A refusal may also come as a closed connection (the server stops reading a refused body).
  const refusalAsClose =
    result.kind === 'closed' && want !== null && !('status' in want && want.status === 200);
  if (want !== null && problems.length === 0 && !refusalAsClose) {
    const status = result.kind === 'response' ? result.status : undefined;
    if ('status' in want) {
      if (status !== want.status) problems.push(`expected ${want.status}, got ${status ?? result.kind}`);
      else if (want.body === 'original' && !got?.equals(c.body)) problems.push('expected the original body');
      else if (want.body === 'rewritten' && !got?.equals(c.rewritten!))
        problems.push('expected the rewritten body');
    } else if (status === undefined || !want.statuses.includes(status)) {
      problems.push(`expected one of ${want.statuses.join('/')}, got ${status ?? result.kind}`);
    }
  }
  return problems;
}

describe('fail-closed invariant (property-based)', () => {
  let server: IcapTestServer;
  const apps = new Map<string, App>();
  let baseline: Record<string, number> = {};

  // A misbehaving ICAP server must never crash the process hosting the application.
  const crashes: unknown[] = [];
  const onCrash = (err: unknown) => crashes.push(err);

  beforeAll(async () => {
    process.on('uncaughtException', onCrash);
    process.on('unhandledRejection', onCrash);
    IcapEngine.prototype.scan = function (this: IcapEngine, ...args: Parameters<IcapEngine['scan']>) {
      engines.add(this);
      const id = String(args[0].headers['x-case']);
      return realScan.apply(this, args).then((outcome) => {
        scanLogs.set(id, outcome.log);
        return outcome;
      });
    };
    baseline = resources();
    server = await startIcapServer({
      preview: PREVIEW,
      recordBodies: false,
      keepAliveTimeout: 1500,
      script: scriptFor,
      rewrite: rewriteFor,
    });
    for (const framework of FRAMEWORKS) {
      for (const allow204 of [true, false]) {
        apps.set(
          `${framework}/${allow204}`,
          await startApp(framework, { ...profile(allow204), poolGroup: server.url() }),
        );
      }
    }
  });

  afterAll(async () => {
    process.off('uncaughtException', onCrash);
    process.off('unhandledRejection', onCrash);
    IcapEngine.prototype.scan = realScan;
    await Promise.all([...apps.values()].map((a) => a.close()));
    await server?.close();
  });

  it(
    `the handler never receives a byte the ICAP server did not approve (${RUNS} interleavings)`,
    async () => {
      await checkAsyncProperty(
        'fail-closed interleavings',
        fc.asyncProperty(batchArb, async (specs) => {
          const batch = specs.map(makeCase);
          for (const c of batch) cases.set(c.id, c);
          const results = await Promise.all(
            batch.map(async (c) => {
              await sleep(c.startDelay);
              return drive(apps.get(`${c.framework}/${c.allow204}`)!, c);
            }),
          );
          // No ICAP transaction is left behind on any engine once every upload has ended.
          await until(
            `an ICAP transaction is still under way: ${JSON.stringify([...engines].map((e) => e.status()))}`,
            () =>
              [...engines].every((e) =>
                e
                  .status()
                  .every(
                    (s) =>
                      s.outstanding === 0 &&
                      s.connections.busy === 0 &&
                      s.connections.pending === 0 &&
                      s.connections.connecting === 0,
                  ),
              ),
            3_000,
          );
          const problems: string[] = [];
          batch.forEach((c, k) => {
            const app = apps.get(`${c.framework}/${c.allow204}`)!;
            const seen = app.seen.filter((s) => s.headers['x-case'] === c.id);
            const found = verdictProblems(
              c,
              results[k]!,
              seen.map((s) => s.raw ?? Buffer.alloc(0)),
              seen[0]?.icap?.action,
            );
            const log = scanLogs.get(c.id);
            const why =
              log === undefined
                ? 'no log'
                : `${log.action} ${log.error_code ?? ''} ${log.error_message ?? ''}`;
            const icap = server.requests
              .filter((r) => r.httpRequest?.headers.get('x-case') === c.id)
              .map(
                (r) =>
                  `#${r.connectionId} status=${r.status} preview=${r.preview} continued=${r.continued} ieof=${r.ieof} body=${r.bodyLength} complete=${r.complete}`,
              );
            for (const p of found)
              problems.push(
                `${c.id} ${describeCase(c)}: ${p} (${why.trim()}; server saw: ${icap.join(' | ') || 'nothing'})`,
              );
          });
          if (problems.length > 0) throw new Error(problems.join('\n'));
        }),
        RUNS,
        // Shrinking reruns timing-dependent interleavings: report the first failing one instead.
        { endOnFailure: process.env.ICAPKIT_FUZZ_SHRINK === undefined },
      );
      // Late arrivals: every body any handler ever got belongs to an upload allowed to deliver it.
      for (const app of apps.values()) {
        for (const s of app.seen) {
          const c = cases.get(String(s.headers['x-case']));
          expect(c, 'a handler ran for an unknown upload').toBeDefined();
          const may = allowed(c!);
          const raw = s.raw ?? Buffer.alloc(0);
          expect((may.original && raw.equals(c!.body)) || (may.rewritten && raw.equals(c!.rewritten!))).toBe(
            true,
          );
        }
      }
      expect(crashes, 'uncaught exceptions or unhandled rejections').toEqual([]);
      // fail-closed means no log says it let something through unscanned.
      expect(
        logs.filter((l) => l.fail_action === 'fail-open' || l.significance.includes('FAIL_OPEN')),
      ).toEqual([]);
    },
    60_000 + RUNS * 2_000,
  );

  it('closes everything: no ICAP connection left on the server, no socket or timer of the test left', async () => {
    const before = server.connections.open;
    await Promise.all([...apps.values()].map((a) => a.close()));
    apps.clear();
    // The client side first (the server's idle timeout would hide a connection the client kept).
    await until(
      `engines still hold ICAP connections: ${JSON.stringify([...engines].map((e) => e.status()))}`,
      () =>
        [...engines].every((e) =>
          e.status().every((st) => st.connections.open === 0 && st.connections.connecting === 0),
        ),
      1_000,
    );
    // Stalled sessions notice the client's close when they read again; the server's own idle
    // timeout (1.5 s) ends those that never read.
    await until(
      `ICAP connections still open on the server: ${server.connections.open}`,
      () => server.connections.open === 0,
      5_000,
    );
    await server.close();
    const leaked = () => {
      const now = resources();
      return Object.entries(now)
        .filter(([k, n]) => n > (baseline[k] ?? 0) && k !== 'Timeout')
        .map(([k, n]) => `${k}: ${n} (was ${baseline[k] ?? 0})`);
    };
    await until(`resources left: ${leaked().join(', ')}`, () => leaked().length === 0, 5_000);
    // Timers: none of the engines' or the server's are left (vitest's own come and go).
    await until(
      `timers left: ${resources().Timeout ?? 0} (was ${baseline.Timeout ?? 0})`,
      () => (resources().Timeout ?? 0) <= (baseline.Timeout ?? 0) + 1,
      5_000,
    );
    expect(before).toBeGreaterThanOrEqual(0);
  });
});

function describeCase(c: Case): string {
  const s = c.scripted;
  const what =
    s.kind === 'fault'
      ? `${s.fault.kind}${'when' in s.fault ? `@${s.fault.when}` : ''}${'ms' in s.fault ? `(${s.fault.ms}ms)` : ''}`
      : s.kind;
  return `[${c.framework} ${c.allow204 ? 'allow204' : 'streaming'} ${c.size}B ${c.chunked ? 'chunked' : 'length'}${c.expect100 ? ' expect100' : ''} eicar=${c.eicar} ${what} abort=${c.abort === null ? 'no' : JSON.stringify(c.abort)}]`;
}

// ---------------------------------------------------------------- regressions

/** An ICAP 200 whose encapsulated HTTP response (a block page) has a body of `size` bytes. */
function bigBlockPage(size: number): Buffer {
  const http = Buffer.from('HTTP/1.1 403 Forbidden\r\nContent-Type: text/html\r\n\r\n');
  return Buffer.concat([
    headBytes('ICAP/1.0 200 OK', [
      ['ISTag', '"big"'],
      ['X-Infection-Found', 'Type=0; Resolution=2; Threat=Big-Page;'],
      ['Encapsulated', `res-hdr=0, res-body=${http.length}`],
    ]),
    http,
    chunkHeader(size),
    Buffer.alloc(size, 0x3c),
    CRLF,
    LAST_CHUNK,
  ]);
}

describe('fail-closed regressions found by the property', () => {
  // Minimal counterexample: [fastify allow204 630B length endless-chunk]. The engine reads at
  // most 64 KiB of a block page it does not relay (1 MiB of one it relays) and then destroys
  // the rest; the transaction then ended with ICAP_ERR_ABORTED, which the engine took for the
  // client going away: 'aborted', so no 403 was sent. Express and Koa closed the client's
  // connection; Fastify's adapter destroys the request, which does not close a socket whose
  // request was complete: the client waited until its own timeout.
  for (const [what, fault, blockResponse] of [
    ['an endless block page', { kind: 'endless-chunk' }, 'page'],
    ['a 200 KiB block page', { kind: 'raw', response: bigBlockPage(200 * 1024) }, 'page'],
    ['a 1.2 MiB block page to relay', { kind: 'raw', response: bigBlockPage(1200 * 1024) }, 'relay'],
  ] as Array<[string, Fault, 'page' | 'relay']>) {
    it.each(FRAMEWORKS)(
      `%s: ${what} is still a block: 403, logged as blocked, within bounds`,
      async (framework) => {
        const srv = await startIcapServer({ script: (r) => (r.method === 'OPTIONS' ? undefined : fault) });
        const seenLogs: IcapLog[] = [];
        const app = await startApp(framework, {
          ...profile(true),
          poolGroup: srv.url(),
          serviceUri: '/avscan',
          blockResponse,
          onLog: (l) => seenLogs.push(l),
        });
        try {
          const c = makeCase({
            framework,
            allow204: true,
            size: 630,
            eicar: 'none',
            scripted: { kind: 'clean' },
            chunked: false,
            expect100: false,
            pieces: [630],
            pauses: [0],
            abort: null,
            startDelay: 0,
          });
          const r = await drive(app, c);
          expect({ kind: r.kind, status: r.status }).toEqual({ kind: 'response', status: 403 });
          expect(app.seen).toHaveLength(0);
          await until('no log', () => seenLogs.length > 0, 2_000);
          expect(seenLogs[0]).toMatchObject({ action: 'ICAP_BLOCKED' });
          expect(seenLogs[0]!.significance).not.toContain('CLIENT_ABORTED');
        } finally {
          await app.close();
          await srv.close();
        }
      },
    );
  }
});

describe('fail-closed regressions found by the property: a misframed rewrite', () => {
  // Found as an uncaught exception while the property ran (raw-bad-chunk): an ICAP 200 with a
  // modified request whose chunk is followed by garbage, all in one TCP read. The parser fails
  // in the same tick as the head arrives; the transaction destroyed the response body with the
  // error before the engine had started reading it, so the stream's 'error' had no listener:
  // an uncaught exception, which ends a Node process that has no handler for it.
  it.each(FRAMEWORKS)('%s: 503, and no uncaught exception', async (framework) => {
    const uncaught: unknown[] = [];
    const onUncaught = (err: unknown) => uncaught.push(err);
    process.on('uncaughtException', onUncaught);
    const c = makeCase({
      framework,
      allow204: true,
      size: 500,
      eicar: 'none',
      scripted: { kind: 'raw-bad-chunk' },
      chunked: false,
      expect100: false,
      pieces: [500],
      pauses: [0],
      abort: null,
      startDelay: 0,
    });
    const srv = await startIcapServer({
      script: (r) => (r.method === 'OPTIONS' ? undefined : { kind: 'raw', response: c.raw! }),
    });
    const app = await startApp(framework, { ...profile(true), poolGroup: srv.url(), onLog: () => {} });
    try {
      const r = await drive(app, c);
      await sleep(50);
      expect({ kind: r.kind, status: r.status, handler: app.seen.length }).toEqual({
        kind: 'response',
        status: 503,
        handler: 0,
      });
      expect(uncaught).toEqual([]);
    } finally {
      process.off('uncaughtException', onUncaught);
      await app.close();
      await srv.close();
    }
  });
});
