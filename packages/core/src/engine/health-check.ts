import { connect, type Socket } from 'node:net';
import { IcapClient, type IcapClientOptions, isSkipped, parseServerUrl } from '../client/client.js';
import type { ServerEndpoint } from '../client/connection.js';
import { actAfterReading } from '../client/deadline.js';
import { type ReplayableBody, toBodySource } from '../client/source.js';
import { IcapError, IcapErrorCodes } from '../errors.js';
import { AttemptWatch } from './scan/attempt-watch.js';

/**
 * A server's health check: a REQMOD of a small fixed body no HTTP client has a say in, to the
 * profile's service, on a connection of its own (not one of the pool's, which HTTP clients may
 * all be holding with slow uploads), bounded like any attempt. It tells a server that is
 * broken (no answer, a stall, a 5xx) from one that failed on what an upload carried (slow to
 * scan, or answering a 5xx to that file only). OPTIONS would not do: a server that answers
 * OPTIONS but hangs every REQMOD must fail it. Where the profile previews bodies, so does the
 * check (a preview shorter than its body: the server's 100 Continue, then the rest), so a
 * server that breaks after every preview fails it too.
 *
 * Two users (pool-group.ts): a suspect server about to be suspended (the check decides), and a
 * request under fail-open whose failure its content may have provoked (retry.ts, `judged`:
 * only a server that fails the check lets it pass unscanned). One check per server at a time;
 * an answer reused for {@link FRESH_FOR} ms, so uploads that keep failing on a working scanner
 * cost it at most about one check a second; a failed one only for failures before it ended
 * (`recent`).
 */

/**
 * What a check says of a server: it answered (below 500); it accepted no connection (refused,
 * or not accepted within connectTimeout: down, or gone from the network); or it failed
 * otherwise (a stall, a 5xx, a reset or garbage once connected).
 */
export type CheckAnswer = 'answered' | 'unreachable' | 'failed';

/**
 * The {@link CheckAnswer} of a check's result. A check whose kept-alive connection dropped and
 * whose new one could not be made (the client reports the drop, the refusal as its cause,
 * client.ts) found the server gone too: unreachable.
 */
export function checkAnswer(err: Error | undefined): CheckAnswer {
  if (err === undefined) return 'answered';
  return connectFailure(err) || connectFailure(err.cause) ? 'unreachable' : 'failed';
}

function connectFailure(err: unknown): boolean {
  return (
    err instanceof IcapError &&
    (err.code === IcapErrorCodes.CONNECT || err.code === IcapErrorCodes.CONNECT_TIMEOUT)
  );
}

/** How a check's connection can drop: then whether the server still accepts connections decides. */
const DROPS: ReadonlySet<string> = new Set([IcapErrorCodes.RESET, IcapErrorCodes.CLOSED]);

/** The body of a health check: nothing any scanner objects to. */
const CHECK_BODY = Buffer.from('icapkit health check\n');
/** CHECK_BODY as the check's watch sees it: taken, it is progress (its OPTIONS answered: campaign-bi BI3). */
const CHECK_SOURCE: ReplayableBody = {
  replayable: true,
  length: CHECK_BODY.length,
  open: () => toBodySource(CHECK_BODY).open(),
};

/** The check's preview, at most (a part of CHECK_BODY: its rest follows a 100 Continue). */
const CHECK_PREVIEW = 8;

/** The target of the check's encapsulated request (so a scanner's logs say what it is). */
const CHECK_TARGET = '/icapkit-health-check';

/** How long a request may rely on a check's result (ms). */
const FRESH_FOR = 1_000;

/** A signal that never aborts (the check is bounded by its watch and the client's timeout). */
const NEVER = new AbortController().signal;

export class HealthCheck {
  readonly #options: IcapClientOptions;
  readonly #service: string;
  readonly #stallTimeout: number;
  readonly #preview: number | false;
  #running: Promise<Error | undefined> | undefined;
  #client: IcapClient | undefined;
  /** The connection of `#accepts`, while it is made. */
  #probe: Socket | undefined;
  readonly #endpoint: ServerEndpoint;
  readonly #connectTimeout: number;
  /** The last check's result, and when it ended. */
  #last: { at: number; error: Error | undefined } | undefined;
  #closed = false;

  constructor(
    options: IcapClientOptions,
    service: string,
    stallTimeout: number,
    previewSize: number | false,
  ) {
    this.#options = { ...options, maxConnections: 1 };
    this.#endpoint = parseServerUrl(options.url, options.tls);
    this.#connectTimeout = options.connectTimeout ?? 10_000;
    this.#service = service;
    this.#stallTimeout = stallTimeout;
    this.#preview = previewSize === false ? false : Math.min(previewSize, CHECK_PREVIEW);
  }

  /**
   * The check under way, or a new one. Resolves (never rejects) with undefined when the server
   * answered below 500, or with why it failed.
   */
  run(): Promise<Error | undefined> {
    if (this.#closed) return Promise.resolve(new Error('the engine was closed'));
    this.#running ??= this.#check();
    return this.#running;
  }

  /**
   * What the server says of a failure at `since` (performance.now()): an answer no older than
   * {@link FRESH_FOR} ms will do (the server worked, whenever the check ran); a failed check
   * only if it ended at `since` or later, so that it ran, at least in part, after the failure
   * (one that ended before says nothing of the server since: it may have been down a moment
   * and be back). Else the check under way (joined), or a new one.
   */
  recent(since: number): Promise<Error | undefined> {
    const last = this.#last;
    if (
      last !== undefined &&
      performance.now() - last.at < FRESH_FOR &&
      (last.error === undefined || last.at >= since)
    )
      return Promise.resolve(last.error);
    return this.run();
  }

  destroy(): void {
    this.#closed = true;
    this.#client?.destroy();
    this.#probe?.destroy();
  }

  async #check(): Promise<Error | undefined> {
    let error = await this.#once();
    // Dropped: a server going down (its daemon crashed, on an upload sent meanwhile, say), a
    // scanning process an upload crashed taking this connection with it, or a server that
    // resets every request? Whether it still accepts connections, then a second try (a
    // connection of its own again) tell: only one that drops that too fails.
    if (this.#dropped(error)) {
      let accepted = await this.#accepts();
      if (accepted) {
        error = await this.#once();
        accepted = !this.#dropped(error) || (await this.#accepts());
      }
      if (!accepted)
        error = new IcapError(IcapErrorCodes.CONNECT, `${error!.message}; then no connection was accepted`, {
          cause: error,
        });
    }
    this.#running = undefined;
    this.#last = { at: performance.now(), error };
    return error;
  }

  /** One check's REQMOD, on a client (and so a connection) of its own: its failure, or undefined. */
  async #once(): Promise<Error | undefined> {
    const client = new IcapClient(this.#options);
    this.#client = client;
    const watch = new AttemptWatch(NEVER, this.#stallTimeout, client.label, {
      // Waiting for a connection or connecting is bounded by the client's timeouts.
      busy: () => client.stats.pending > 0 || client.stats.connecting > 0,
      get optionsRead() {
        return client.optionsRead;
      },
      // (The check's client is its own: every connection it made is the check's.)
      get connected() {
        return client.stats.created;
      },
    });
    watch.start();
    try {
      await answer(client, this.#service, this.#preview, watch);
      return undefined;
    } catch (err) {
      return err instanceof Error ? err : new Error(String(err));
    } finally {
      watch.dispose();
      client.destroy();
      this.#client = undefined;
    }
  }

  /** Whether the check's connection dropped (a reset, a close). */
  #dropped(error: Error | undefined): boolean {
    return error instanceof IcapError && !this.#closed && DROPS.has(error.code);
  }

  /** Whether a TCP connection to the server is accepted within connectTimeout. */
  #accepts(): Promise<boolean> {
    const { host, port } = this.#endpoint;
    return new Promise((resolve) => {
      const socket = connect({ host, port });
      this.#probe = socket;
      let settled = false;
      const done = (accepted: boolean) => {
        settled = true;
        clearTimeout(timer);
        socket.destroy();
        this.#probe = undefined;
        resolve(accepted);
      };
      // A connection made while the process stalled past the deadline counts (client/deadline.ts).
      const timer = setTimeout(
        () =>
          actAfterReading(
            0,
            () => settled,
            () => done(false),
          ),
        this.#connectTimeout,
      );
      socket.once('connect', () => done(true));
      socket.once('error', () => done(false));
      socket.once('close', () => done(false));
    });
  }
}

async function answer(
  client: IcapClient,
  service: string,
  preview: number | false,
  watch: AttemptWatch,
): Promise<void> {
  const r = await client.request({
    method: 'REQMOD',
    service,
    httpRequest: {
      method: 'POST',
      target: CHECK_TARGET,
      headers: [
        ['Host', 'icapkit.invalid'],
        ['Content-Type', 'text/plain'],
        ['Content-Length', String(CHECK_BODY.length)],
      ],
    },
    body: watch.wrap(CHECK_SOURCE),
    bodyLength: CHECK_BODY.length,
    preview,
    allow204: true,
    onContinue: () => watch.progress(),
    signal: watch.signal,
  });
  watch.progress();
  if (isSkipped(r)) return;
  r.body?.resume();
  await r.done;
  if (r.status >= 500)
    throw new IcapError(IcapErrorCodes.SERVER_STATUS, `the check was answered ${r.status}`);
}
