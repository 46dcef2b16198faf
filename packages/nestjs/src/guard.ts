import { type CanActivate, type ExecutionContext, ForbiddenException, Logger } from '@nestjs/common';
import { DEFAULT_ROUTE, NO_BODY, UNSCANNED_REQUEST } from './constants.js';
import { sameScan, settingOf } from './routes.js';
import type { IcapService } from './service.js';

/**
 * A global guard (installed by the module) that checks, at the handler, that the request was
 * scanned with the handler's own setting: on Express the scan picks the route from the URL
 * before Nest's body parsers and routing run, so a request whose URL was rewritten on the way,
 * or that Express dispatched to another handler than the first route matching its path
 * (versioned or host-bound routes sharing a path), could otherwise reach a handler with a scan
 * meant for another route, or none. Such a request gets 403 (code ICAP_ERR_UNSCANNED_ROUTE)
 * and the handler (and its interceptors: multer) never runs. On Fastify routing happens before
 * the scan, so this only confirms it ran.
 */
export class IcapRouteGuard implements CanActivate {
  readonly #logger = new Logger('IcapModule');
  constructor(private readonly service: IcapService) {}

  canActivate(context: ExecutionContext): boolean {
    if (context.getType() !== 'http' || this.service.platform === undefined) return true;
    const expected = settingOf(context.getHandler()) ?? DEFAULT_ROUTE;
    if (expected === false) return true;
    const used = this.service.settingUsed(context.switchToHttp().getRequest());
    if (used === NO_BODY) return true;
    // Another route's setting that scans alike (the same overrides, written twice) will do.
    if (used === expected || (used !== undefined && sameScan(used, expected, this.service.config.profile)))
      return true;
    const handler = `${context.getClass().name}.${context.getHandler().name}`;
    this.#logger.warn(
      `${UNSCANNED_REQUEST}: a request reached ${handler} without the scan its route requires (${
        used === undefined || used === false ? 'not scanned' : 'scanned with another route setting'
      }); refused with 403`,
    );
    throw new ForbiddenException({
      statusCode: 403,
      error: 'Forbidden',
      code: UNSCANNED_REQUEST,
      message: 'This request was not scanned as its route requires.',
    });
  }
}
