import { escapeControls } from '../errors.js';
import type { IcapLog } from './log.js';
import type { ServerTransition } from './pool-group.js';

/**
 * Loud by default: an engine whose profile has neither a `logger` nor `onLog` would otherwise
 * suspend servers and answer 503s without a word. Such an engine reports, through
 * `process.emitWarning` (printed on stderr unless the application listens for 'warning' or runs
 * with --no-warnings):
 *
 * - a server suspended (once, until it is up again: failed trials in between say nothing new),
 *   and a suspended server back up;
 * - the first scan of a burst that failed on the ICAP side (`ICAP_ERROR`), per server (or "no
 *   server" when none was available), then at most one summary per {@link SUMMARY_INTERVAL}
 *   ms per server while failures go on ("12 more scans failed ... in the last 30 s"). Scans
 *   that found no server because of a suspension already warned about are only summed up.
 *
 * Every warning has the type {@link ICAP_WARNING_TYPE} and a stable `code` (below), so an
 * application can filter them: `process.on('warning', (w) => w.name === 'IcapkitWarning' ...)`.
 * With a `logger` or `onLog` in the profile, nothing is emitted here: the records and the
 * transitions go there, as they always did.
 */

/** The `name` of every warning icapkit emits (`process.emitWarning` type). */
export const ICAP_WARNING_TYPE = 'IcapkitWarning';

export const IcapWarningCodes = {
  /** A server was suspended (failureLimit failures in a row). */
  SERVER_DOWN: 'ICAP_WARN_SERVER_DOWN',
  /** A suspended server is up again. */
  SERVER_UP: 'ICAP_WARN_SERVER_UP',
  /** Scans failed on the ICAP side (the first of a burst, then summaries). */
  SCAN_FAILED: 'ICAP_WARN_SCAN_FAILED',
  /** `ready()` with `startupCheck: 'warn'`: servers that did not answer OPTIONS. */
  STARTUP_CHECK: 'ICAP_WARN_STARTUP_CHECK',
} as const;

export type IcapWarningCode = (typeof IcapWarningCodes)[keyof typeof IcapWarningCodes];

/** ms between two summaries of the failures on one server. */
export const SUMMARY_INTERVAL = 30_000;

/** Where warnings go: `process.emitWarning` unless a test gives another. */
export type WarningSink = (message: string, code: IcapWarningCode) => void;

export const emitProcessWarning: WarningSink = (message, code) => {
  process.emitWarning(escapeControls(message), { type: ICAP_WARNING_TYPE, code });
};

interface Burst {
  /** Failures since the last warning. */
  count: number;
  /** Whether the burst began with a warning of its own (then the summary counts "more"). */
  warned: boolean;
  last: string;
  timer: NodeJS.Timeout;
}

/** Whether a profile sends its records and transitions somewhere (then no process warnings). */
export function isQuiet(profile: { logger?: unknown; onLog?: unknown }): boolean {
  return profile.logger !== undefined || profile.onLog !== undefined;
}

export class ProcessAlerts {
  readonly #profile: string;
  readonly #interval: number;
  readonly #sink: WarningSink;
  /** Servers reported down and not reported up since. */
  readonly #down = new Set<string>();
  readonly #bursts = new Map<string, Burst>();
  #closed = false;

  constructor(profile: string, options: { interval?: number; sink?: WarningSink } = {}) {
    this.#profile = profile;
    this.#interval = options.interval ?? SUMMARY_INTERVAL;
    this.#sink = options.sink ?? emitProcessWarning;
  }

  /** A server's health changed. */
  transition(server: string, change: ServerTransition): void {
    if (this.#closed) return;
    if (change.to === 'suspended' && !this.#down.has(server)) {
      this.#down.add(server);
      const next = change.backoff === undefined ? '' : `; next OPTIONS probe in ${change.backoff} ms`;
      this.#warn(
        `icapkit (profile "${this.#profile}"): ICAP server ${server} suspended: ${change.reason}${next}`,
        IcapWarningCodes.SERVER_DOWN,
      );
    } else if (change.to === 'up' && this.#down.delete(server)) {
      this.#warn(
        `icapkit (profile "${this.#profile}"): ICAP server ${server} is up again (${change.reason})`,
        IcapWarningCodes.SERVER_UP,
      );
    }
  }

  /** A finished record: reported when the scan failed on the ICAP side. */
  record(log: IcapLog): void {
    if (this.#closed || !(log.significance ?? []).includes('ICAP_ERROR')) return;
    const entry = log.request_logs?.at(-1);
    const server = entry === undefined ? NO_SERVER : serverName(entry.icap_absolute_uri);
    const answer =
      (log.http_response_code !== undefined
        ? `answered ${log.http_response_code}`
        : log.significance.includes('FAIL_OPEN')
          ? 'passed unscanned'
          : 'not answered') + (log.fail_action === undefined ? '' : ` (${log.fail_action})`);
    const what = `${log.error_code ?? 'ICAP_ERR'}: ${log.error_message ?? 'the scan failed'}`;
    const burst = this.#bursts.get(server);
    if (burst !== undefined) {
      burst.count++;
      burst.last = what;
      return;
    }
    if (server === NO_SERVER && this.#down.size > 0) {
      // No server to try because of a suspension already warned about: only summed up.
      this.#open(server, { count: 1, warned: false, last: what });
      return;
    }
    const seconds = Math.round(this.#interval / 1000);
    this.#warn(
      `icapkit (profile "${this.#profile}"): a scan failed ${where(server)}, ${answer}: ${what}. Further failures there are summed up at most every ${seconds} s; ` +
        'give the profile a logger or onLog to get every record instead.',
      IcapWarningCodes.SCAN_FAILED,
    );
    this.#open(server, { count: 0, warned: true, last: '' });
  }

  /** Stops the summary timers (pending counts are dropped). */
  close(): void {
    this.#closed = true;
    for (const b of this.#bursts.values()) clearTimeout(b.timer);
    this.#bursts.clear();
  }

  /** A burst window on a server: at its end, a summary if more failed, and another window. */
  #open(server: string, start: Omit<Burst, 'timer'>): void {
    const timer = setTimeout(() => {
      const burst = this.#bursts.get(server);
      this.#bursts.delete(server);
      if (burst === undefined || burst.count === 0 || this.#closed) return;
      const seconds = Math.round(this.#interval / 1000);
      this.#warn(
        `icapkit (profile "${this.#profile}"): ${burst.count}${burst.warned ? ' more' : ''} ${burst.count === 1 ? 'scan' : 'scans'} ` +
          `failed ${where(server)} in the last ${seconds} s; the last: ${burst.last}`,
        IcapWarningCodes.SCAN_FAILED,
      );
      this.#open(server, { count: 0, warned: true, last: '' });
    }, this.#interval);
    timer.unref();
    this.#bursts.set(server, { ...start, timer });
  }

  #warn(message: string, code: IcapWarningCode): void {
    try {
      this.#sink(message, code);
    } catch {
      // a warning listener that throws does not change the scan
    }
  }
}

/** The key of failures no server was tried for (all suspended; a body read before the scan). */
const NO_SERVER = '';

function where(server: string): string {
  return server === NO_SERVER ? 'before any ICAP server was tried' : `on ICAP server ${server}`;
}

/** `icap://host:port` of an ICAP URI (the form `engine.status()` names servers by). */
function serverName(uri: string | undefined): string {
  const m = /^(icaps?:\/\/[^/?#]+)/i.exec(uri ?? '');
  return m === null ? NO_SERVER : m[1]!;
}
