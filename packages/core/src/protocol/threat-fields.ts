/**
 * The ICAP fields that may name a threat or a refusal (engine/verdict reads them; client/reuse.ts
 * reads them wider): what is kept of a field section read past its bound (over-size.ts).
 */

/** Fields that block by being there, whatever their value (the verdict reads them so, or as an error). */
export const PRESENCE_FIELDS: readonly string[] = [
  'x-infection-found',
  'x-blocked-reason',
  'x-block-reason',
  'x-mwg-block-reason',
  'x-blocked',
  'x-error-code',
  'x-fsecure-infection-name',
  'x-fsecure-infected-filename',
];

/** Fields whose value may name a threat (client/reuse.ts knows their clean values). */
export const VALUE_FIELD_NAMES: readonly string[] = [
  'x-virus-id',
  'x-virus-name',
  'x-violations-found',
  'x-fsecure-scan-result',
  'x-response-info',
];

/** Every field that may name a threat or a refusal (lower case). */
export const NAMING_FIELDS: ReadonlySet<string> = new Set([...PRESENCE_FIELDS, ...VALUE_FIELD_NAMES]);
