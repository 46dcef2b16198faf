import { IcapClient, type IcapClientOptions, isSkipped } from '../client/client.js';
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
 * only a server that fails the check lets it pass unscanned). One check per server at a time,
 * its result reused for {@link FRESH_FOR} ms, so uploads that keep failing cost the scanner at
 * most about one check a second.
 */

/**
 * What a check says of a server: it answered (below 500); it accepted no connection (refused,
 * or not accepted within connectTimeout: down, or gone from the network); or it failed
 * otherwise (a stall, a 5xx, a reset or garbage once connected).
 */
export type CheckAnswer = 'answered' | 'unreachable' | 'failed';

/** The {@link CheckAnswer} of a check's result. */
export function checkAnswer(err: Error | undefined): CheckAnswer {
  if (err === undefined) return 'answered';
  const unreachable =
    err instanceof IcapError &&
    (err.code === IcapErrorCodes.CONNECT || err.code === IcapErrorCodes.CONNECT_TIMEOUT);
  return unreachable ? 'unreachable' : 'failed';
}

/** The body of a health check: nothing any scanner objects to. */
const CHECK_BODY = Buffer.from('icapkit health check\n');

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
  #last: { at: number; error: Error | undefined } | undefined;
  #closed = false;

  constructor(
    options: IcapClientOptions,
    service: string,
    stallTimeout: number,
    previewSize: number | false,
  ) {
    this.#options = { ...options, maxConnections: 1 };
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

  /** A result no older than {@link FRESH_FOR} ms, or {@link run}. */
  recent(): Promise<Error | undefined> {
    const last = this.#last;
    if (last !== undefined && performance.now() - last.at < FRESH_FOR) return Promise.resolve(last.error);
    return this.run();
  }

  destroy(): void {
    this.#closed = true;
    this.#client?.destroy();
  }

  async #check(): Promise<Error | undefined> {
    const client = new IcapClient(this.#options);
    this.#client = client;
    const watch = new AttemptWatch(NEVER, this.#stallTimeout, client.label, {
      // Waiting for a connection or connecting is bounded by the client's timeouts.
      busy: () => client.stats.pending > 0 || client.stats.connecting > 0,
    });
    watch.start();
    let error: Error | undefined;
    try {
      await answer(client, this.#service, this.#preview, watch);
    } catch (err) {
      error = err instanceof Error ? err : new Error(String(err));
    } finally {
      watch.dispose();
      client.destroy();
      this.#client = undefined;
      this.#running = undefined;
    }
    this.#last = { at: performance.now(), error };
    return error;
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
    body: CHECK_BODY,
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
