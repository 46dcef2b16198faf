/**
 * The ICAP profile: its types (profile/types.ts), defaults (profile/defaults.ts), the checks of
 * one value (profile/check.ts) and resolveProfile (profile/resolve.ts), which validates a
 * profile once, at start-up, and fills in every default.
 */

export type { PinoLike } from './log.js';
export { parseSize } from './profile/check.js';
export { PROFILE_DEFAULTS } from './profile/defaults.js';
export { resolveProfile } from './profile/resolve.js';
export type * from './profile/types.js';
