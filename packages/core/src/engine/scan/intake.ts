import { type Readable, Transform } from 'node:stream';
import { createBrotliDecompress, createGunzip, createInflate, type Zlib } from 'node:zlib';
import { untilAborted } from '../../client/abort.js';
import { IcapError, IcapErrorCodes } from '../../errors.js';
import { Headers } from '../../protocol/headers.js';
import { BodyStore } from '../body.js';
import { validateMultipart } from '../multipart/parse.js';
import type { ResolvedProfile } from '../profile.js';
import type { HttpRequestFacts, ScanRequest } from '../request.js';

/**
 * Intake: when a request's ICAP exchange may start. An ICAP connection is a scarce resource
 * (a pool holds `maxConnections` per server), so it is taken only once the body can be fed at
 * the scanner's speed: the body is held (it is held anyway for `Allow: 204`, in memory up to
 * memoryThreshold, then in a temp file) until
 *
 * - it is complete: its length is then known and sent as the encapsulated `Content-Length`
 *   (a chunked upload too; servers that filter content or require a length need it); or
 * - `holdBytes` of it have arrived, at `minRate` bytes per second or faster on average since
 *   the scan started: a fast upload is streamed to the scanner while it arrives.
 *
 * An upload slower than `minRate` is held whole, so a slow or stalling client (a slowloris)
 * holds memory or disk bounded by bufferSize, never a scanner connection, and the upload is
 * bounded in time by bodyTimeout and bodyDeadline. `wholeBody` (a server that requires the
 * length) holds every body to its end.
 *
 * A fast start proves nothing of the rest: a client can send `holdBytes` at once and then stop.
 * So a body streamed while it arrives also needs a place of the `gate` (maxStreamingUploads,
 * a share of the connections); without one it is held whole too. Uploads whose clients stop
 * sending hold at most that share, and the other connections stay for bodies that are here.
 */
export interface HoldRule {
  /** Bytes that may start the exchange before the end; 0: start at once (no holding). */
  holdBytes: number;
  /** Bytes per second the body must have arrived at (on average) to be streamed. */
  minRate: number;
  /** Hold every body to its end. */
  wholeBody: boolean;
  /** Places for bodies streamed while they arrive (none: no limit). */
  gate?: StreamGate | undefined;
}

/**
 * Bodies streamed to the ICAP servers while their HTTP clients still send them: at most
 * `limit()` at once, across the engine's servers (maxStreamingUploads, see streamingLimit).
 */
export class StreamGate {
  readonly #limit: () => number;
  #open = 0;

  constructor(limit: () => number) {
    this.#limit = limit;
  }

  /** A place for one such body (give it back, once, when the body has arrived); null when none is left. */
  take(): (() => void) | null {
    if (this.#open >= this.#limit()) return null;
    this.#open++;
    let given = false;
    return () => {
      if (given) return;
      given = true;
      this.#open--;
    };
  }
}

/**
 * Hears of the abort of a signal without a listener on it (the scan, which makes every abort
 * of its signal itself): `set(fn)` has `fn` called once with the reason when it aborts,
 * `set(undefined)` takes it back.
 */
export interface AbortHook {
  setAbortWaiter(waiter: ((reason: unknown) => void) | undefined): void;
}

/**
 * Resolves once the exchange may start: the body ended (or failed, or outgrew its limit: the
 * caller finds out from the store), or enough of it arrived fast enough and the gate had a
 * place for it: then with that place's give-back (called once the body has arrived). Rejects with the
 * signal's reason when the signal aborts first (heard through `hook` when given: the signal's
 * owner calls it, no listener is added). `source` is what the store reads (its 'data' events
 * say when to look again; null: only the end matters); `startedAt` is performance.now() at the
 * start of the scan.
 */
export function whenReadyToScan(
  store: BodyStore,
  source: Readable | null,
  rule: HoldRule,
  startedAt: number,
  signal: AbortSignal,
  hook?: AbortHook,
): Promise<(() => void) | undefined> {
  let place: (() => void) | undefined;
  const ready = (): boolean => {
    if (finished(store)) return true;
    if (rule.wholeBody) return false;
    // No holding: the exchange starts with the first byte, if there is a place.
    if (rule.holdBytes === 0) return streamPlace();
    if (source === null || store.received < rule.holdBytes) return false;
    const seconds = Math.max((performance.now() - startedAt) / 1000, 0.001);
    if (store.received / seconds < rule.minRate) return false;
    return streamPlace();
  };
  const streamPlace = (): boolean => {
    if (rule.gate === undefined) return true;
    place = rule.gate.take() ?? undefined;
    return place !== undefined;
  };
  if (signal.aborted) return Promise.reject(signal.reason);
  if (ready()) return Promise.resolve(place);
  return new Promise<(() => void) | undefined>((resolve, reject) => {
    let done = false;
    const cleanup = () => {
      done = true;
      source?.removeListener('data', onData);
      if (hook !== undefined) hook.setAbortWaiter(undefined);
      else signal.removeEventListener('abort', onAbort);
    };
    // The store reads the source first (its listener was added first): received is current.
    const onData = () => {
      if (!done && ready()) {
        cleanup();
        resolve(place);
      }
    };
    const onAbort = () => {
      if (done) return;
      cleanup();
      reject(signal.reason);
    };
    source?.on('data', onData);
    if (hook !== undefined) hook.setAbortWaiter(onAbort);
    else signal.addEventListener('abort', onAbort, { once: true });
    // The end heard from the store itself (no promise of its own): ready() was false, so it is to come.
    const onEnd = () => {
      if (done) return;
      cleanup();
      resolve(undefined);
    };
    if (!store.onEnded(onEnd)) void store.whenEnded().then(onEnd);
  });
}

/**
 * maxStreamingUploads is a share of maxConnections: a server that allows fewer connections
 * (its OPTIONS `Max-Connections`) scales it down, so the smallest server still keeps its share
 * for bodies that have arrived. `smallest`: the smallest of the servers' connection limits now.
 * At least one upload streams, unless that would be every connection of the smallest server
 * (a limit of 1): then every body is held whole first, and a client that stops sending holds
 * no connection.
 */
export function streamingLimit(configured: number, maxConnections: number, smallest: number): number {
  if (configured === 0) return 0;
  const limit = Math.min(smallest, maxConnections);
  const share = Math.max(1, Math.floor((limit * configured) / maxConnections));
  return configured < maxConnections ? Math.min(share, limit - 1) : share;
}

/** Leaving intake when nothing was counted. */
function LEAVE_NOTHING(): void {}

/**
 * Bodies being received per client address (maxBodiesPerClient): one address cannot hold
 * more than `limit` uploads in intake at once.
 */
export class ClientIntake {
  readonly #limit: number | undefined;
  readonly #open = new Map<string, number>();

  constructor(limit: number | undefined) {
    this.#limit = limit;
  }

  /** Takes a place for an upload from `address`; null when the address has no place left. */
  enter(address: string | undefined): (() => void) | null {
    if (this.#limit === undefined || address === undefined) return LEAVE_NOTHING;
    const n = this.#open.get(address) ?? 0;
    if (n >= this.#limit) return null;
    this.#open.set(address, n + 1);
    let left = false;
    return () => {
      if (left) return;
      left = true;
      const m = (this.#open.get(address) ?? 1) - 1;
      if (m <= 0) this.#open.delete(address);
      else this.#open.set(address, m);
    };
  }

  /** Uploads in intake from `address` now. */
  count(address: string): number {
    return this.#open.get(address) ?? 0;
  }
}

// ---------------------------------------------------------------- the body store

/**
 * The request body as it arrives, held in a store (memory, then a temp file) bounded by
 * bufferSize and bodyTimeout: `abort` is called with the error when either is crossed.
 */
export function openStore(
  p: ResolvedProfile,
  facts: HttpRequestFacts,
  req: ScanRequest,
  perFile: boolean,
  abort: (err: IcapError) => void,
): BodyStore {
  // Per-file scanning replays the original form when every part is clean: hold all of it.
  const retainAll = p.allow204 || perFile || facts.contentCoding !== 'identity';
  const store = new BodyStore({
    limit: p.bufferSize,
    retainAll,
    hash: !retainAll,
    memoryThreshold: p.memoryThreshold,
    spoolDir: p.spoolDir,
    onExceeded: tooLargeAbort(p, 'the request body', abort),
    idleTimeout: p.bodyTimeout,
    onIdle: () =>
      abort(
        new IcapError(
          IcapErrorCodes.BODY_TIMEOUT,
          `the HTTP client sent nothing of its request body for bodyTimeout (${p.bodyTimeout} ms)`,
        ),
      ),
  });
  store.attach(req);
  return store;
}

/** The store's onExceeded: aborts the scan with ICAP_ERR_REQUEST_TOO_LARGE naming `what`. */
function tooLargeAbort(p: ResolvedProfile, what: string, abort: (err: IcapError) => void): () => void {
  return () =>
    abort(
      new IcapError(
        IcapErrorCodes.REQUEST_TOO_LARGE,
        `${what} is larger than bufferSize (${p.bufferSize} bytes)`,
      ),
    );
}

/** No more bytes of `store` will come: it ended, failed or outgrew its limit (whenEnded resolves). */
export function finished(store: BodyStore): boolean {
  return store.ended || store.error !== undefined || store.exceeded;
}

/**
 * Waits for the whole body, or the abort of `signal` (rejects with its reason); then as
 * bodyComplete: throws when the body failed or outgrew `limit`.
 */
export async function allArrived(store: BodyStore | null, signal: AbortSignal, limit: number): Promise<void> {
  if (store === null) return;
  if (!finished(store)) await untilAborted(store.whenEnded(), signal);
  await bodyComplete(store, limit);
}

/**
 * Waits for the whole request body. Throws ICAP_ERR_REQUEST_TOO_LARGE when it outgrows the
 * limit, ICAP_ERR_BODY_SOURCE when the client goes away and ICAP_ERR_SPOOL when its temp file failed.
 */
export async function bodyComplete(store: BodyStore | null, limit: number): Promise<void> {
  if (store === null) return;
  await store.whenEnded();
  if (store.exceeded) {
    throw new IcapError(
      IcapErrorCodes.REQUEST_TOO_LARGE,
      `the request body is larger than bufferSize (${limit} bytes)`,
    );
  }
  if (store.error !== undefined) throw bodyFailure(store);
}

/**
 * What a body that cannot be had whole counts as: its temp file failing (ICAP_ERR_SPOOL: a
 * local failure, 503 whatever the failure action, never the ICAP server's health), or else the
 * HTTP client going away before it was complete (ICAP_ERR_BODY_SOURCE).
 */
export function bodyFailure(store: BodyStore): IcapError {
  const e = store.error;
  if (e instanceof IcapError && e.code === IcapErrorCodes.SPOOL) return e;
  return new IcapError(
    IcapErrorCodes.BODY_SOURCE,
    'the HTTP client went away before its request body was complete',
    {
      cause: e,
    },
  );
}

// ---------------------------------------------------------------- content decoding

/** A decoded body and the request as the ICAP server sees it (no Content-Encoding, no length). */
export interface Decoded {
  store: BodyStore;
  facts: HttpRequestFacts;
}

/** Content decoders for the codings a request body may use. */
const DECODERS = new Map<string, () => Transform & Zlib>([
  ['gzip', () => createGunzip()],
  ['x-gzip', () => createGunzip()],
  ['deflate', () => createInflate()],
  ['br', () => createBrotliDecompress()],
]);

/** Whether a content coding can be decoded for the scan. */
export function canDecode(coding: string): boolean {
  return DECODERS.has(coding);
}

/**
 * A compressed body (gzip, deflate, br) decoded for the scan, into a store of its own
 * (bounded by bufferSize, so a zip bomb stops there, and spooled like any body). The
 * encapsulated request loses Content-Encoding and Content-Length, since the ICAP server gets
 * the decoded bytes; the application still gets the original ones, which the scan sends as an
 * object of their own too (scan.ts): what a decoder skips (gzip header fields, brotli metadata)
 * reaches a reader of the raw body.
 *
 * Bytes after the end of the compressed data fail the decoded store (400, like a body that
 * does not decode): zlib and brotli stop at the end of their stream and drop the rest
 * silently, where other decoders fail or read on (another stream, a gzip member), so parsers
 * would disagree about them. Several gzip members are one body (RFC 1952, and Node's gunzip
 * decodes them all, as the scanned copy then holds them); anything after the last member,
 * zero padding included, is refused too (gunzip drops it, Go's reader fails on it).
 */
export function decodeBody(
  p: ResolvedProfile,
  facts: HttpRequestFacts,
  raw: BodyStore,
  abort: (err: IcapError) => void,
): Decoded | null {
  const coding = facts.contentCoding;
  const make = DECODERS.get(coding);
  if (coding === 'identity' || make === undefined) return null;
  const decoded = new BodyStore({
    limit: p.bufferSize,
    retainAll: true,
    memoryThreshold: p.memoryThreshold,
    spoolDir: p.spoolDir,
    onExceeded: tooLargeAbort(p, 'the decoded request body', abort),
  });
  const source = raw.stream();
  const decoder = make();
  decoder.on('error', (err) => {
    decoded.fail(
      new IcapError(IcapErrorCodes.CONTENT_ENCODING, `the ${coding} body cannot be decoded: ${err.message}`, {
        cause: err,
      }),
    );
    source.destroy();
  });
  source.on('error', (err) => decoded.fail(err));
  // The decoder may end (at the end of the compressed data) before the body does: the decoded
  // body ends only once the raw one has, and all of it went into the compressed data.
  const whole = new Transform({
    transform: (chunk, _encoding, done) => done(null, chunk),
    flush: (done) => {
      void raw.whenEnded().then(() => {
        source.destroy();
        if (raw.error !== undefined || raw.exceeded) return done(); // the scan acts on the body's own failure
        const rest = raw.received - decoder.bytesWritten;
        if (rest <= 0) return done();
        done(
          new IcapError(
            IcapErrorCodes.CONTENT_ENCODING,
            `the ${coding} body has ${rest} bytes after the end of its compressed data`,
          ),
        );
      });
    },
  });
  whole.on('error', (err) => decoded.fail(err));
  source.pipe(decoder).pipe(whole);
  decoded.attach(whole);
  const pairs = facts.headerPairs.filter(
    ([n]) => !['content-encoding', 'content-length'].includes(n.toLowerCase()),
  );
  return {
    store: decoded,
    facts: {
      ...facts,
      headerPairs: pairs,
      headers: new Headers(pairs),
      contentLength: undefined,
      chunked: true,
      contentCoding: 'identity',
    },
  };
}

/**
 * Whole mode: the strict multipart parser over the body as it arrives. Resolves with the
 * problem it found (and aborts the scan with it), or undefined.
 */
export function checkForm(
  p: ResolvedProfile,
  contentType: string,
  body: BodyStore,
  abort: (err: IcapError) => void,
): Promise<IcapError | undefined> {
  return validateMultipart(contentType, body.open(), p.multipartLimits).then(
    () => undefined,
    (err: unknown) => {
      if (!(err instanceof IcapError) || err.code !== IcapErrorCodes.MULTIPART) return undefined;
      abort(err);
      return err;
    },
  );
}
