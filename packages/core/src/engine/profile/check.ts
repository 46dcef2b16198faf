/** The checks resolveProfile makes of one value: each failure names the field and what it allows. */

import { IcapError, IcapErrorCodes } from '../../errors.js';
import { unknownOptionHint } from '../suggest.js';
import { VENDORS, type Vendor } from '../verdict/index.js';
import { PROFILE_DEFAULTS } from './defaults.js';

export function fail(field: string, message: string): never {
  throw new IcapError(IcapErrorCodes.INVALID_PROFILE, `invalid ICAP profile: ${field} ${message}`, { field });
}

export function describe(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v);
  if (typeof v === 'function') return 'a function';
  if (Array.isArray(v)) return 'an array';
  if (v === null) return 'null';
  if (typeof v === 'object') return 'an object';
  return String(v);
}

export function checkKeys(obj: object, allowed: ReadonlySet<string>, field: string): void {
  for (const key of Object.keys(obj)) {
    if (!allowed.has(key)) {
      fail(`${field}.${key}`, `is not a known option${unknownOptionHint(key, allowed)}`);
    }
  }
}

export function oneOf<T extends string>(v: unknown, allowed: readonly T[], field: string, fallback: T): T {
  if (v === undefined) return fallback;
  if (typeof v !== 'string' || !(allowed as readonly string[]).includes(v)) {
    fail(field, `must be one of ${allowed.map((a) => `'${a}'`).join(', ')} (got ${describe(v)})`);
  }
  return v as T;
}

/** Names people write for a vendor, with the `vendor` value that reads that server. */
const VENDOR_HINTS: Readonly<Record<string, Vendor>> = {
  clamav: 'c-icap',
  cicap: 'c-icap',
  squidclamav: 'generic',
  metadefender: 'opswat',
  lastline: 'nsx-defender',
  nsx: 'nsx-defender',
  kwts: 'kaspersky',
  mwg: 'mcafee',
  skyhigh: 'mcafee',
  broadcom: 'symantec',
  trend: 'trend-micro',
  trendmicro: 'trend-micro',
  savdi: 'sophos',
  fsecure: 'f-secure',
};

export function vendorOf(v: unknown): Vendor {
  if (v === undefined) return PROFILE_DEFAULTS.vendor;
  if (typeof v === 'string' && (VENDORS as readonly string[]).includes(v)) return v as Vendor;
  const key = typeof v === 'string' ? v.toLowerCase().replace(/[^a-z]/g, '') : '';
  const exact = VENDORS.find((x) => x.replace(/[^a-z]/g, '') === key);
  const hint = exact ?? (Object.hasOwn(VENDOR_HINTS, key) ? VENDOR_HINTS[key] : undefined);
  fail(
    'profile.vendor',
    `must be one of ${VENDORS.map((a) => `'${a}'`).join(', ')} (got ${describe(v)})` +
      (hint !== undefined ? `; did you mean '${hint}'?` : ''),
  );
}

export function bool(v: unknown, field: string, fallback: boolean): boolean {
  if (v === undefined) return fallback;
  if (typeof v !== 'boolean') fail(field, `must be true or false (got ${describe(v)})`);
  return v;
}

export function integer(
  v: unknown,
  field: string,
  fallback: number,
  min: number,
  max: number,
  unit: string,
): number {
  if (v === undefined) return fallback;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    fail(field, `must be an integer from ${min} to ${max} ${unit} (got ${describe(v)})`);
  }
  return v;
}

const SIZE_UNITS: Record<string, number> = {
  '': 1,
  b: 1,
  kb: 1024,
  k: 1024,
  kib: 1024,
  mb: 1024 ** 2,
  m: 1024 ** 2,
  mib: 1024 ** 2,
  gb: 1024 ** 3,
  g: 1024 ** 3,
  gib: 1024 ** 3,
};

/** Bytes from a number or a string such as '50mb', '512 KiB', '1.5gb' (binary units). */
export function parseSize(v: unknown, field: string): number {
  if (typeof v === 'number') return v;
  if (typeof v !== 'string')
    fail(field, `must be a number of bytes or a size such as '50mb' (got ${describe(v)})`);
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(v);
  const unit = m === null ? undefined : SIZE_UNITS[m[2]!.toLowerCase()];
  if (m === null || unit === undefined) {
    fail(field, `must be a number of bytes or a size such as '50mb', '512kb', '1gb' (got ${describe(v)})`);
  }
  return Math.floor(Number(m[1]) * unit);
}
