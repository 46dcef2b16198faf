/**
 * @icapkit/nestjs: ICAP (RFC 3507) upload scanning for NestJS on the Express and Fastify
 * platforms, on top of @icapkit/express and @icapkit/fastify (one engine, the same profile).
 */
export type { IcapProfile, IcapRequestInfo } from '@icapkit/core';
export {
  ICAP_MODULE_OPTIONS,
  ICAP_OPTIONS_METADATA,
  ICAP_ROUTE_METADATA,
  ICAP_SKIP_METADATA,
  UNSCANNED_REQUEST,
} from './constants.js';
export { IcapOptions, IcapResult, SkipIcap } from './decorators.js';
export { IcapRouteGuard } from './guard.js';
export { IcapModule, type IcapModuleAsyncOptions } from './module.js';
export { type IcapModuleConfig, type IcapModuleOptions, IcapService } from './service.js';
