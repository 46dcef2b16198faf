/**
 * Vendor profiles: what a `vendor` setting changes in the reading of an ICAP answer.
 *
 * Every profile reads every threat signal of the generic rules (index.ts): a forgotten or wrong
 * vendor setting can never turn a block into a clean. A profile only adds what is specific to
 * one server (shared/reference/vendor-verdicts.md, §3.2):
 * - `statuses`: ICAP statuses that mean something for this server when no threat signal is
 *   present (a threat signal always wins, whatever the status);
 * - `repairs`: whether `X-Infection-Found: ...; Resolution=1` on a returned message reads as a
 *   repair (the message is the disinfected one: modified), as c-icap, Clearswift and Symantec
 *   use it. NSX Defender writes Resolution=1 on its blocks, so there it names a threat like any
 *   other value;
 * - the log record's `vendor` (log.ts) and, for OPSWAT and NSX Defender, their log sections.
 */

export const VENDORS = [
  'generic',
  'opswat',
  'nsx-defender',
  'c-icap',
  'kaspersky',
  'eset',
  'symantec',
  'mcafee',
  'trend-micro',
  'sophos',
  'f-secure',
] as const;

export type Vendor = (typeof VENDORS)[number];

export interface StatusRule {
  /** What the status means when the answer carries no threat signal. */
  kind: 'blocked' | 'error';
  /** Only when the status line's reason phrase matches (ESET's `405 Forbidden`). */
  phrase?: RegExp;
  /** The file was not scanned (Symantec 539: no AV scanning license). */
  unscannable?: boolean;
  /** The reason for a block (an error's reason stays `ICAP <status> <phrase>`). */
  reason?: string;
}

export interface VendorRules {
  repairs: boolean;
  statuses: Readonly<Record<number, StatusRule>>;
}

const GENERIC: VendorRules = { repairs: true, statuses: {} };

export const VENDOR_RULES: Readonly<Record<Vendor, VendorRules>> = {
  generic: GENERIC,
  // OPSWAT's ICAP 403 (FILEMOD) is an error unless it names a threat: the generic rule.
  opswat: GENERIC,
  'nsx-defender': { repairs: false, statuses: {} },
  'c-icap': GENERIC,
  // KWTS's clean markers (`X-Virus-ID: no threats`, `X-Response-Info: passed`) are generic.
  kaspersky: GENERIC,
  // rspamd saw `ICAP/1.0 405 Forbidden` from ESET: a refusal, read as a block even without a
  // threat header (the safe side: an error would pass the file under fail-open).
  eset: {
    repairs: true,
    statuses: { 405: { kind: 'blocked', phrase: /forbidden/i, reason: 'Forbidden' } },
  },
  // 201 Created is an answer like 200 (generic); 539 "Aborted - No AV scanning license": the
  // file was not scanned.
  symantec: { repairs: true, statuses: { 539: { kind: 'error', unscannable: true } } },
  // 418 "Bad composition" (a malformed request) is an error: generic.
  mcafee: GENERIC,
  'trend-micro': GENERIC,
  sophos: GENERIC,
  'f-secure': GENERIC,
};

export function isVendor(v: unknown): v is Vendor {
  return typeof v === 'string' && (VENDORS as readonly string[]).includes(v);
}
