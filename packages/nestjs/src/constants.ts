import type { IcapProfile } from '@icapkit/core';

/** Injection token of the module's options (`{ profile, options }`), for forRoot and forRootAsync. */
export const ICAP_MODULE_OPTIONS = Symbol.for('@icapkit/nestjs:options');

/** Metadata set by `@SkipIcap()` on a controller or a handler. */
export const ICAP_SKIP_METADATA = 'icapkit:skip';
/** Metadata set by `@IcapOptions({...})` on a controller or a handler. */
export const ICAP_OPTIONS_METADATA = 'icapkit:options';
/**
 * What the module resolved for a handler (its own and its controller's decorators), written on
 * the handler function when the module starts: Nest copies a handler's metadata onto the route
 * callback it registers, so the Express dispatcher finds it on the router's route layer.
 */
export const ICAP_ROUTE_METADATA = 'icapkit:route';
/** The handler's name for messages (`Controller.method`), written and copied as ICAP_ROUTE_METADATA. */
export const ICAP_LABEL_METADATA = 'icapkit:label';
/**
 * What may make a handler's route pass a request on to the next route (Nest's version and host
 * filters): `{ version, host }`, written and copied as ICAP_ROUTE_METADATA.
 */
export const ICAP_FILTERS_METADATA = 'icapkit:filters';
/**
 * @nestjs/platform-fastify's route config metadata (`@RouteConfig`), passed to Fastify as the
 * route's `config`: the module adds `icap` to it, which @icapkit/fastify reads.
 */
export const FASTIFY_ROUTE_CONFIG_METADATA = '__fastify_route_config__';

/**
 * A route's setting: `false` not scanned, an object overrides the module's profile, `DEFAULT`
 * the module's profile.
 */
export type RouteSetting = false | Partial<IcapProfile> | typeof DEFAULT_ROUTE;
export const DEFAULT_ROUTE = 'default' as const;

/**
 * What the guard reads for a request without a body that routes scanned with different settings
 * may take: there is nothing to scan, so any of them may have it.
 */
export const NO_BODY = 'no-body' as const;

/** Code of the refusal when a request reached a handler without the scan its route requires. */
export const UNSCANNED_REQUEST = 'ICAP_ERR_UNSCANNED_ROUTE';
