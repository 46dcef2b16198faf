import { isSkipped } from '../../client/client.js';
import type { IcapResponse } from '../../client/transaction-types.js';
import { escapeControls, IcapError, IcapErrorCodes, type IcapReceivedHead } from '../../errors.js';
import { threatAfterHead, threatInError, threatInHead } from '../beyond-head.js';
import type { BodyStore } from '../body.js';
import { httpMethodEnum, type IcapRequestLog, poolIdentity, redactHeaderBlock, vendorEnum } from '../log.js';
import type { ServerHandle, TriedServers } from '../pool-group.js';
import type { ResolvedProfile } from '../profile.js';
import { absoluteTarget, type HttpRequestFacts } from '../request.js';
import type { ClientResponse } from '../respond.js';
import type { AttemptResult, ExchangeContext } from '../types.js';
import type { Verdict } from '../verdict/index.js';
import {
  drain,
  drainToEnd,
  fillVerdict,
  latencyOf,
  readingOf,
  readRelay,
  unscannableBlock,
  verdictOf,
} from './answer.js';
import { AttemptWatch, type WatchHooks } from './attempt-watch.js';
import { allArrived } from './intake.js';
import {
  classifyFailure,
  clientHeld,
  clientTurn,
  isRefusal,
  judged,
  markRefusal,
  QUEUED,
  waitedForConnection,
} from './retry.js';
import { type ReturnedAttempt, readReturned } from './returned.js';

/**
 * The exchange stage: one body (a whole request, or one multipart part) sent to ICAP as a
 * REQMOD, one attempt per server, on to the next healthy server or pool after a failure, all
 * within the request's responseTimeout (its signal); see retry.ts for what is retried and
 * attempt-watch.ts for stalls. The result is what ICAP said (clean, blocked, adapted); an
 * IcapError when no server could say it.
 */

/** setTimeout's largest delay: the engine bounds transactions with its own signal. */
const NO_CLIENT_TIMEOUT = 2_147_483_647;

/**
 * Sends one body to ICAP, failing over across servers and pools: see `exchange()`. It is also its
 * attempts' watch hooks and the set of servers tried (the first in a field, a Set only from a
 * second attempt on): no closures, hook object or Set per request.
 */
class Exchange implements WatchHooks, TriedServers, ReturnedAttempt {
  readonly #ctx: ExchangeContext;
  readonly facts: HttpRequestFacts;
  readonly store: BodyStore | null;
  readonly signal: AbortSignal;
  /** Where each attempt's log entry goes besides the request's record (a part names its own). */
  readonly #entries: IcapRequestLog[] | undefined;
  /** WatchHooks: with one server a stall can never be acted on. */
  readonly stallPossible: boolean;
  /** The server of the attempt under way. */
  #handle: ServerHandle | null = null;
  /** Every server tried once at most: the first, and the others (from a second attempt on). */
  #first: ServerHandle | null = null;
  #more: Set<ServerHandle> | null = null;
  /** A server that failed an attempt the HTTP client fed: it may be tried once more (see run), once. */
  #again: ServerHandle | null = null;
  #againGiven = false;
  /** Servers whose attempt failed in a way the upload may have provoked (retry.ts, judged). */
  #provoked: ServerHandle[] | undefined;
  #read = 0; // (see heard)

  constructor(
    ctx: ExchangeContext,
    facts: HttpRequestFacts,
    store: BodyStore | null,
    signal: AbortSignal,
    entries: IcapRequestLog[] | undefined,
  ) {
    this.#ctx = ctx;
    this.facts = facts;
    this.store = store;
    this.signal = signal;
    this.#entries = entries;
    this.stallPossible = ctx.group.serverCount > 1;
  }

  /** TriedServers: whether `server` was tried by this exchange (and is not to be tried again). */
  has(server: ServerHandle): boolean {
    return server !== this.#again && (server === this.#first || this.#more?.has(server) === true);
  }

  /** TriedServers: how many servers were tried. */
  get size(): number {
    return this.#first === null ? 0 : 1 + (this.#more?.size ?? 0);
  }

  #tried(server: ServerHandle): void {
    if (this.#first === null) this.#first = server;
    else {
      this.#more ??= new Set();
      this.#more.add(server);
    }
  }

  /** WatchHooks: the server in use has requests waiting for a connection or connecting. */
  busy(): boolean {
    const stats = this.#handle?.client.stats;
    return stats !== undefined && (stats.pending > 0 || stats.connecting > 0);
  }

  /** WatchHooks: the HTTP client is still sending the body. */
  bodyArriving(): boolean {
    return this.store !== null && !this.store.ended;
  }

  /** WatchHooks: the attempt holds its connection while the HTTP client still sends (see clientHeldSince). */
  clientFed(on: boolean): void {
    on ? this.#handle?.clientFedStart() : this.#handle?.clientFedEnd();
  }

  /** Heard and WatchHooks: bytes read for this body, added to the scan's count too (campaign-bh BH2). */
  get heard(): number {
    return this.#read;
  }
  set heard(n: number) {
    this.#ctx.heard += n - this.#read;
    this.#read = n;
  }

  /** WatchHooks: bytes of OPTIONS answers the server in use has sent. */
  get optionsRead(): number {
    return this.#handle?.client.optionsRead ?? 0;
  }

  /** WatchHooks: the body is still held and another server is available. */
  canRetry(): boolean {
    return this.replayable && this.#ctx.group.hasAlternative(this);
  }

  /** Whether the body can still be sent again from its first byte. */
  get replayable(): boolean {
    return this.store === null || this.store.complete;
  }

  async run(): Promise<AttemptResult> {
    try {
      return await this.#run();
    } catch (err) {
      throw await judged(err, this.#provoked, this.#ctx.profile.failAction);
    }
  }

  async #run(): Promise<AttemptResult> {
    const ctx = this.#ctx;
    const p = ctx.profile;
    let lastError: unknown;
    // A server that refused the request (ICAP 4xx) decides, whatever the next one does.
    let refusal: IcapError | undefined;
    for (;;) {
      // A second chance (below): the HTTP client sends the rest first. Its failure to (it went
      // away, the body outgrew bufferSize, bodyDeadline) is the client's, never the failure action.
      if (this.#again !== null) await allArrived(this.store, this.signal, p.bufferSize);
      let handle: ServerHandle;
      try {
        handle = ctx.group.pick(this);
      } catch (err) {
        throw refusal ?? lastError ?? err;
      }
      if (handle === this.#again) this.#again = null;
      const ticket = handle.begin();
      this.#tried(handle);
      this.#handle = handle;
      const entry = newEntry(handle, this.facts, p);
      ctx.log.request_logs.push(entry);
      this.#entries?.push(entry);
      handle.outstanding++;
      const watch = new AttemptWatch(this.signal, p.stallTimeout, handle.server.url, this);
      const attemptStart = performance.now();
      try {
        ctx.telemetry.transactionStart(ctx.scope, handle, p.serviceUri);
        const result = await this.#attempt(handle, entry, watch);
        handle.succeeded(ticket);
        ctx.telemetry.transactionVerdict(
          ctx.scope,
          handle,
          p.serviceUri,
          entry.icap_response_code ?? 0,
          // An unscannable answer (an error verdict) is a block too.
          result.type === 'blocked' ? 'blocked' : (result.verdict?.kind ?? 'clean'),
          result.verdict?.threat_id,
          Number(entry.latency),
        );
        return result;
      } catch (err) {
        const raw =
          err instanceof IcapError
            ? err
            : new IcapError(IcapErrorCodes.INTERNAL, String(err), { cause: err });
        // It waited for a connection and never got one: busy is not broken (no health failure),
        // and not the ICAP side's failure at all when HTTP clients held those connections.
        const queued = waitedForConnection(raw, this.signal, watch, handle);
        const slowClient = watch.slowClient(p.minBodyRate);
        const clientPaced = slowClient || watch.fedByClient;
        const error =
          queued && handle.clientHeldSince(attemptStart)
            ? clientHeld(raw, handle)
            : clientTurn(raw, slowClient);
        if (isRefusal(error)) refusal ??= error;
        entry.action = 'ICAP_FAILED';
        // An ICAP error status stays in the record, whatever else was wrong with the answer.
        if (error.status !== undefined) entry.icap_response_code ??= error.status;
        entry.error_code = error.code;
        entry.error_message = error.message;
        ctx.telemetry.transactionError(ctx.scope, handle, p.serviceUri, error);
        const failure = queued
          ? classifyFailure(error, this.signal, QUEUED, false)
          : classifyFailure(error, this.signal, watch, clientPaced, this.store === null);
        // A refusal (ICAP 4xx) is about the request, not the server: it must not let clients
        // suspend a healthy server (and so switch fail-open on for everyone).
        // One the HTTP client's content can provoke (a 5xx answer, a slow scan) suspends the
        // server only once a health check of its own fails too (pool-group.ts).
        if (failure.health && !isRefusal(error)) handle.failed(error, ticket, failure.provokable);
        else handle.abandoned(ticket);
        // Provokable, or a wait for a connection the server's scans never freed (they may be
        // slow on what other uploads carry): the failure action only if the server fails a check.
        if ((failure.provokable || queued) && !isRefusal(error)) {
          this.#provoked ??= [];
          this.#provoked.push(handle);
        }
        if (!failure.retry || !this.replayable) throw error;
        lastError = error;
        // The HTTP client fed this attempt as it sent: the scanner may have given up on its pace
        // (an idle or total time limit of its own), which a client can choose. The body is held
        // from its first byte, so once all of it is here the same server gets it once more, at
        // full speed: only a failure no client paced can take the failure action.
        if (watch.fedByClient && !this.#againGiven && !isRefusal(error)) {
          this.#againGiven = true;
          this.#again = handle;
        }
      } finally {
        watch.dispose();
        handle.abandoned(ticket);
        handle.outstanding--;
      }
    }
  }

  /** One ICAP attempt on one server: its verdict, its log entry filled. */
  async #attempt(handle: ServerHandle, entry: IcapRequestLog, watch: AttemptWatch): Promise<AttemptResult> {
    const { facts, store } = this;
    // The attempt's own signal: the request's, and the watch's (a stall ends this attempt only).
    const signal = watch.signal;
    const p = this.#ctx.profile;
    const started = performance.now();
    watch.start();
    const ip = facts.clientIp;
    const extraHeaders: Array<[string, string]> =
      p.sendClientIp && ip !== undefined
        ? [['X-Client-IP', ip.startsWith('::ffff:') ? ip.slice(7) : ip]]
        : NO_HEADERS;
    // A body above previewMinBodySize is previewed unless this service on this server asks for
    // the rest of every preview (adaptivePreview, preview-advice.ts).
    const previewable = p.enablePreview && !smallBody(facts, p.previewMinBodySize);
    const advice = previewable && p.adaptivePreview ? handle.previewAdvice(p.serviceUri) : undefined;
    const preview = previewable && (advice === undefined || advice.preview()) ? p.previewSize : false;
    const pending = handle.client.request({
      method: 'REQMOD',
      service: p.serviceUri,
      httpRequest: {
        method: facts.method,
        target: p.absoluteUri ? absoluteTarget(facts) : facts.target,
        httpVersion: facts.httpVersion,
        headers: facts.headerPairs,
      },
      body: store !== null ? watch.wrap(store) : store,
      bodyLength: facts.chunked ? undefined : facts.contentLength,
      preview,
      allow204: p.allow204,
      honourTransferIgnore: p.transferIgnore === 'extension',
      headers: extraHeaders,
      signal,
      timeout: NO_CLIENT_TIMEOUT,
      // Waiting for a busy server's connection is bounded only when the request can go elsewhere.
      queueTimeout: watch.canRetry() ? p.queueTimeout : Number.POSITIVE_INFINITY,
      // What a server sends after a broken answer is progress: its real answer may follow (AT7).
      onStray: () => watch.progress(),
      heard: this, // read on by responseTimeout and the watch (client/deadline.ts)
      // What follows is kept by the verdict's own reading (campaign-at AT6).
      strayBlocks: (h) => threatInHead(readingOf(p, this.facts.fileName), h) !== null,
      waitAfterServerError: p.failAction === 'fail-open', // a 5xx's real verdict may follow (BS5)
      // A body spooled to disk is not held in memory to compare with an echo (campaign-ax AX4).
      echoHold: p.memoryThreshold,
      // Only a preview can be answered with 100 Continue (none without: no closure then).
      onContinue:
        preview === false
          ? undefined
          : () => {
              watch.progress();
              store?.stopHolding();
              this.#ctx.telemetry.transactionPreview(this.#ctx.scope, handle, p.serviceUri);
            },
    });
    let r: Awaited<typeof pending>;
    try {
      r = await pending;
    } catch (err) {
      // A head received whole that then broke a framing rule still names its verdict, as does
      // an answer right after it: a threat there blocks (a threat verdict is never lost);
      // anything else stays the error it was.
      const named =
        err instanceof IcapError
          ? threatInError(readingOf(this.#ctx.profile, this.facts.fileName), err)
          : null;
      if (named !== null) return this.#blocked(named.verdict, named.head, entry, started, err as IcapError);
      // An ICAP 4xx that then broke off is still the server refusing what it was sent (the
      // client's content): never the failure action, as when it comes whole (below).
      const status = err instanceof IcapError ? (err.head?.status ?? 0) : 0;
      if (status >= 400 && status < 500) markRefusal(err as IcapError);
      throw err;
    }
    if (isSkipped(r)) {
      entry.action = 'ICAP_PASSED';
      entry.reason = `Transfer-Ignore: ${r.extension}`;
      return { type: 'clean', res: null, verdict: null, skipped: r.extension };
    }
    const res = r;
    // A threat named in the server's 100 Continue blocks, whatever its final answer says.
    const continued = res.continueHead == null ? null : this.#blockedByHead(res.continueHead, entry, started);
    if (continued !== null) {
      watch.stop();
      res.body?.destroy();
      return continued;
    }
    // What the preview was worth: the server asked for the rest, or decided from it. (A preview
    // that held the whole body tells nothing: the server had it all.)
    if (advice !== undefined && res.previewSent) {
      if (!res.answeredInPreview) advice.record('continued');
      else if (!res.completeBodySent) advice.record('decided');
    }
    watch.progress();
    fillEntry(entry, res, p.redactHeaders);
    const verdict = verdictOf(p, res, res.httpRequest, facts.fileName, facts.headers);
    fillVerdict(entry, verdict, p.vendor);
    switch (verdict.kind) {
      case 'error': {
        if (verdict.unscannable) {
          // The file could not be scanned (encrypted archive, decode error, Symantec 539): a
          // statement about what the client sent, whatever the status, not a failure of the
          // server. Blocked, as a threat is: never retried, never the failure action.
          watch.stop();
          await drain(res).catch(() => res.body?.destroy());
          entry.latency = await latencyOf(res, started).catch(() =>
            String(Math.round(performance.now() - started)),
          );
          return unscannableBlock(entry, res, verdict);
        }
        // Read to its end: a threat named after the page (its trailer, a second answer) blocks.
        const late =
          (await this.#toEnd(res, entry, started, watch)) ??
          (await this.#blockedAfterHead(res, entry, started));
        if (late !== null) return late;
        const error = new IcapError(
          IcapErrorCodes.SERVER_STATUS,
          `ICAP server ${handle.server.url} answered ${res.status} ${escapeControls(res.reason)}`.trim(),
          { status: res.status },
        );
        if (res.status < 500) markRefusal(error);
        throw error;
      }
      case 'clean': {
        // Read to its end, however long (bounded in time by the attempt's signal): a threat named
        // after the body (its trailer, a second answer) blocks, and an answer that never ends fails.
        const cut = await this.#toEnd(res, entry, started, watch);
        if (cut !== null) return cut;
        // No body: the exchange's own latency (what latencyOf reads then, without its promise).
        const summary = res.body === null ? await res.done : undefined;
        entry.latency =
          summary !== undefined ? String(Math.round(summary.latencyMs)) : await latencyOf(res, started);
        // (Only when something came after the head: a bare answer's done said so already.)
        if (summary === undefined || summary.trailer !== undefined || summary.stray !== undefined) {
          const late = await this.#blockedAfterHead(res, entry, started);
          if (late !== null) return late;
        }
        entry.action = 'ICAP_PASSED';
        return { type: 'clean', res, verdict, skipped: undefined };
      }
      case 'blocked': {
        // The threat is named in the head: the block stands even when the block page cannot be
        // read to its end (the server closes or resets after its answer). Our own page then.
        // Nothing may turn this verdict into a failure now.
        watch.stop();
        let relay: ClientResponse | undefined;
        try {
          if (p.blockResponse === 'relay' && res.httpResponse !== null) {
            relay = await readRelay(res);
          } else {
            await drain(res);
          }
        } catch {
          // The page broke off (reset, stall): the verdict read from the head still blocks,
          // with our own page; it is never retried elsewhere or turned into a failure.
          relay = undefined;
          res.body?.destroy();
        }
        entry.latency = await latencyOf(res, started).catch(() =>
          String(Math.round(performance.now() - started)),
        );
        entry.action = 'ICAP_BLOCKED';
        entry.http_response_code = relay?.status ?? 403;
        return { type: 'blocked', res, verdict, relay };
      }
      case 'adapted':
        // Read to its end and judged before any of it can reach the application (returned.ts).
        return readReturned(this, watch, res, verdict, entry, started);
    }
  }

  /** ReturnedAttempt: the profile. */
  get profile(): ResolvedProfile {
    return this.#ctx.profile;
  }

  /** ReturnedAttempt: a threat named after the answer's head (#blockedAfterHead). */
  blockedAfterHead(res: IcapResponse, entry: IcapRequestLog, started: number): Promise<AttemptResult | null> {
    return this.#blockedAfterHead(res, entry, started);
  }

  /** The body read to its end: null, or when it broke off in its trailer, a threat named there. */
  async #toEnd(
    res: IcapResponse,
    entry: IcapRequestLog,
    started: number,
    watch: AttemptWatch,
  ): Promise<AttemptResult | null> {
    if (res.body === null) return null;
    try {
      await drainToEnd(res, watch);
      return null;
    } catch (err) {
      const late = await this.#blockedAfterHead(res, entry, started);
      if (late === null) throw err;
      return late;
    }
  }

  /** A threat named after the answer's head (its trailer, a second answer), as a block, once over; else null. */
  async #blockedAfterHead(
    res: IcapResponse,
    entry: IcapRequestLog,
    started: number,
  ): Promise<AttemptResult | null> {
    const named = await threatAfterHead(readingOf(this.#ctx.profile, this.facts.fileName), res);
    if (named === null) return null;
    const latency = entry.latency;
    const blocked = this.#blocked(named.verdict, named.head, entry, started, undefined);
    entry.latency = latency;
    return blocked;
  }

  /** A threat (or unscannable) named in `head` (a 100 Continue before the final answer), as a block; else null. */
  #blockedByHead(head: IcapReceivedHead, entry: IcapRequestLog, started: number): AttemptResult | null {
    const verdict = threatInHead(readingOf(this.#ctx.profile, this.facts.fileName), head);
    return verdict === null ? null : this.#blocked(verdict, head, entry, started, undefined);
  }

  /** The block of a threat named outside the final head (`head`), in the log record too. */
  #blocked(
    verdict: Verdict,
    head: IcapReceivedHead,
    entry: IcapRequestLog,
    started: number,
    err: IcapError | undefined,
  ): AttemptResult {
    const p = this.#ctx.profile;
    fillVerdict(entry, verdict, p.vendor);
    entry.icap_response_code = head.status;
    entry.icap_headers_received_from_server = redactHeaderBlock(head.rawHeaders, p.redactHeaders);
    if (err !== undefined) {
      entry.error_code = err.code;
      entry.error_message = err.message;
    }
    entry.latency = String(Math.round(performance.now() - started));
    entry.action = 'ICAP_BLOCKED';
    entry.http_response_code = 403;
    return { type: 'blocked', res: null, verdict, relay: undefined };
  }
}

/**
 * Sends `facts` and `store` (null: no body) to ICAP and returns its verdict, failing over
 * while the body can be replayed. Every attempt adds an entry to `ctx.log` (and to `entries`).
 */
export function exchange(
  ctx: ExchangeContext,
  facts: HttpRequestFacts,
  store: BodyStore | null,
  signal: AbortSignal,
  entries?: IcapRequestLog[],
): Promise<AttemptResult> {
  return new Exchange(ctx, facts, store, signal, entries).run();
}

// ---------------------------------------------------------------- log entries

function newEntry(handle: ServerHandle, facts: HttpRequestFacts, p: ResolvedProfile): IcapRequestLog {
  const pool = poolIdentity(handle.pool.name);
  return {
    action: 'ICAP_FAILED',
    icap_method: 'ICAP_METHOD_REQMOD',
    http_method: httpMethodEnum(facts.method),
    icap_absolute_uri: handle.uriOf(p.serviceUri),
    complete_body_sent: false,
    pool_name: pool.name,
    pool_uuid: pool.uuid,
    icap_server_ip: handle.server.host,
    icap_server_port: handle.server.port,
    latency: '0',
    icap_headers_sent_to_server: '',
    vendor: vendorEnum(p.vendor),
  };
}

function fillEntry(entry: IcapRequestLog, res: IcapResponse, redact: ReadonlySet<string>): void {
  entry.icap_response_code = res.status;
  entry.complete_body_sent = res.completeBodySent;
  if (res.connection.remoteAddress !== undefined) entry.icap_server_ip = res.connection.remoteAddress;
  if (res.connection.remotePort !== undefined) entry.icap_server_port = res.connection.remotePort;
  if (res.connection.localPort !== undefined) entry.source_port = res.connection.localPort;
  entry.icap_headers_sent_to_server = redactHeaderBlock(res.requestHeaders, redact);
  entry.icap_headers_received_from_server = redactHeaderBlock(res.rawHeaders, redact);
  if (res.istag !== undefined) entry.istag = res.istag;
  const preview = previewOf(res.requestHeaders);
  if (preview !== undefined) entry.preview_size = preview;
  entry.connection_reused = res.connection.reused;
}

/**
 * The `Preview` value in the ICAP head sent (what `/(?:^|\n)Preview: (\d+)/` finds: the first
 * line starting with `Preview: ` followed by a digit), without a regular expression.
 */
export function previewOf(head: string): number | undefined {
  const FIELD = 'Preview: ';
  let at = head.startsWith(FIELD) ? 0 : head.indexOf(`\n${FIELD}`);
  while (at !== -1) {
    const start = at === 0 && head.startsWith(FIELD) ? FIELD.length : at + 1 + FIELD.length;
    let end = start;
    while (end < head.length && head.charCodeAt(end) >= 0x30 && head.charCodeAt(end) <= 0x39) end++;
    if (end > start) return Number(head.slice(start, end));
    at = head.indexOf(`\n${FIELD}`, start);
  }
  return undefined;
}

const NO_HEADERS: Array<[string, string]> = []; // no extra ICAP header (shared, never written to)

/** A body small enough to send whole: a preview would cost a round trip to spare a few bytes. */
function smallBody(facts: HttpRequestFacts, limit: number): boolean {
  return !facts.chunked && facts.contentLength !== undefined && facts.contentLength <= limit;
}
