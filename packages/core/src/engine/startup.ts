import { IcapError, IcapErrorCodes } from '../errors.js';
import { maskQuery } from '../protocol/shown-uri.js';
import type { IcapWarningCode } from './alerts.js';
import { IcapWarningCodes } from './alerts.js';
import { observe } from './log.js';
import type { ServerHandle } from './pool-group.js';
import type { PinoLike, StartupCheck } from './profile.js';

/**
 * The start-up check behind `engine.ready()`: OPTIONS to every server of the profile, at once.
 * A server that answers with a service that takes REQMOD is known to be up from then on
 * (`status()` no longer says `unknown`); one that does not answer (refused, timed out, a 4xx/5xx,
 * a service without REQMOD) counts as one failure against its health, and then the profile's
 * `startupCheck` decides: 'fail' rejects with a {@link StartupCheckError} naming each such
 * server and why, 'warn' reports them (to the logger, or as a process warning) and resolves,
 * 'off' sends nothing at all.
 *
 * Why 'fail' by default: an application that starts against a scanner it cannot reach answers
 * every upload with 503 (or, failing open, passes them unscanned) until someone notices; a
 * refused start is noticed by the deployment instead. Each OPTIONS is bounded like the probes
 * (queue, connect and stall timeouts), so a black-holed server delays start-up by that much.
 */

export interface StartupServerReport {
  server: string;
  pool: string;
  ok: boolean;
  /** The service's ISTag, when it answered. */
  istag?: string | undefined;
  /** Why it is not usable, when it is not. */
  code?: string | undefined;
  reason?: string | undefined;
}

export interface StartupReport {
  /** The check applied: 'off' sent nothing (and `servers` is empty). */
  mode: StartupCheck;
  servers: StartupServerReport[];
  /** Every server checked answered. */
  ok: boolean;
}

/** `ready()` with `startupCheck: 'fail'` and a server that did not answer. */
export class StartupCheckError extends IcapError {
  constructor(
    message: string,
    /** The servers that did not answer, with why. */
    readonly servers: StartupServerReport[],
  ) {
    super(IcapErrorCodes.STARTUP_CHECK, message);
    this.name = 'StartupCheckError';
  }
}

export interface StartupCheckContext {
  profile: string;
  serviceUri: string;
  mode: StartupCheck;
  logger: PinoLike | undefined;
  /** Where the warning goes without a logger. */
  warn: (message: string, code: IcapWarningCode) => void;
}

/** Sends OPTIONS to each server and applies the profile's `startupCheck`. */
export async function checkServers(
  servers: readonly ServerHandle[],
  ctx: StartupCheckContext,
): Promise<StartupReport> {
  if (ctx.mode === 'off') return { mode: 'off', servers: [], ok: true };
  const reports = await Promise.all(servers.map((s) => checkOne(s, ctx.serviceUri)));
  const down = reports.filter((r) => !r.ok);
  const report: StartupReport = { mode: ctx.mode, servers: reports, ok: down.length === 0 };
  if (down.length === 0) return report;
  const message =
    `icapkit (profile "${ctx.profile}"): ${down.length} of ${reports.length} ICAP ${reports.length === 1 ? 'server' : 'servers'} ` +
    `did not answer OPTIONS ${maskQuery(ctx.serviceUri)}: ` +
    down.map((r) => `${r.server} (${r.code}: ${r.reason})`).join('; ') +
    ". Check the server's address and serviceUri, or set startupCheck: 'warn' or 'off'.";
  if (ctx.mode === 'fail') throw new StartupCheckError(message, down);
  if (ctx.logger !== undefined) {
    try {
      const logger = ctx.logger;
      observe(
        () => logger.warn({ code: IcapWarningCodes.STARTUP_CHECK, servers: down }, message),
        undefined,
        '',
      );
    } catch {
      // a logger that throws does not stop start-up
    }
  } else ctx.warn(message, IcapWarningCodes.STARTUP_CHECK);
  return report;
}

async function checkOne(handle: ServerHandle, serviceUri: string): Promise<StartupServerReport> {
  const base = { server: handle.server.url, pool: handle.pool.name };
  try {
    const options = await handle.client.options(serviceUri);
    if (options.methods.length > 0 && !options.methods.includes('REQMOD')) {
      const error = new IcapError(
        IcapErrorCodes.METHOD_NOT_SUPPORTED,
        `the service does not support REQMOD (Methods: ${options.methods.join(', ')})`,
      );
      handle.failed(error);
      return { ...base, ok: false, code: error.code, reason: error.message };
    }
    handle.answered();
    return { ...base, ok: true, istag: options.istag };
  } catch (err) {
    const error =
      err instanceof IcapError ? err : new IcapError(IcapErrorCodes.INTERNAL, String(err), { cause: err });
    handle.failed(error);
    return { ...base, ok: false, code: error.code, reason: error.message };
  }
}
