import type { IcapProfile, IcapRequestInfo } from '@icapkit/core';
import { createParamDecorator, type ExecutionContext, SetMetadata } from '@nestjs/common';
import { ICAP_OPTIONS_METADATA, ICAP_SKIP_METADATA } from './constants.js';

/**
 * The requests of this handler (or of every handler of this controller) are not scanned.
 * On a handler it wins over its controller's `@IcapOptions()`; on a controller a handler's own
 * `@IcapOptions()` wins over it.
 */
export function SkipIcap(): ClassDecorator & MethodDecorator {
  return SetMetadata(ICAP_SKIP_METADATA, true);
}

/**
 * Overrides of the module's profile for this handler (or every handler of this controller),
 * e.g. `@IcapOptions({ serviceUri: '/cdr', bufferSize: 50_000_000 })`. A handler's overrides are
 * applied over its controller's. Routes with the same overrides object share one engine: declare
 * the object once (a constant) rather than inline on many handlers.
 */
export function IcapOptions(overrides: Partial<IcapProfile>): ClassDecorator & MethodDecorator {
  if (overrides === null || typeof overrides !== 'object')
    throw new TypeError('@IcapOptions() takes an object of profile overrides');
  return SetMetadata(ICAP_OPTIONS_METADATA, overrides);
}

/**
 * The scan's outcome for this request (`{ action, threat, rule, removed, log }`), or `null` when
 * the route is not scanned (`@SkipIcap()`). Also on the request: `req.icap`.
 *
 *   upload(@UploadedFile() file: Express.Multer.File, @IcapResult() scan: IcapRequestInfo) {...}
 */
export const IcapResult: () => ParameterDecorator = createParamDecorator(
  (_data: unknown, ctx: ExecutionContext): IcapRequestInfo | null => {
    const req = ctx.switchToHttp().getRequest<{ icap?: IcapRequestInfo | null }>();
    return req.icap ?? null;
  },
);
