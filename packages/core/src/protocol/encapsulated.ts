/** The `Encapsulated` header of an ICAP message (RFC 3507 §4.4.1): its entries and their offsets. */
import { IcapError, IcapErrorCodes } from '../errors.js';

export type EncapsulatedName = 'req-hdr' | 'res-hdr' | 'req-body' | 'res-body' | 'opt-body' | 'null-body';

export interface EncapsulatedEntry {
  name: EncapsulatedName;
  offset: number;
}

function protocol(message: string): IcapError {
  return new IcapError(IcapErrorCodes.PROTOCOL, message);
}

const ENCAPSULATED_NAMES: ReadonlySet<string> = new Set([
  'req-hdr',
  'res-hdr',
  'req-body',
  'res-body',
  'opt-body',
  'null-body',
]);

/**
 * Parses and validates an `Encapsulated` header value (RFC 3507 §4.4.1): known entity names,
 * decimal byte offsets starting at 0 and strictly increasing, header sections before exactly
 * one body entry (`*-body` or `null-body`) which comes last, `req-hdr` before `res-hdr`.
 */
export function parseEncapsulated(value: string): EncapsulatedEntry[] {
  // The answer without a message (a 204, most errors): what the general path gives for it.
  if (value === 'null-body=0') return [{ name: 'null-body', offset: 0 }];
  const entries = canonicalEntries(value) ?? generalEntries(value);
  const bodyAt = entries.findIndex((e) => e.name.endsWith('-body'));
  if (bodyAt !== entries.length - 1)
    throw protocol(`Encapsulated must end with exactly one body entry: ${value}`);
  if (entries[0]!.offset !== 0) throw protocol(`Encapsulated offsets must start at 0: ${value}`);
  for (let k = 1; k < entries.length; k++) {
    if (entries[k]!.offset <= entries[k - 1]!.offset) {
      throw protocol(`Encapsulated offsets must increase: ${value}`);
    }
  }
  if (entries[0]!.name === 'res-hdr' && entries.some((e) => e.name === 'req-hdr')) {
    throw protocol(`Encapsulated req-hdr must come before res-hdr: ${value}`);
  }
  return entries;
}

/**
 * The entries of a value as servers write it (`req-hdr=0, req-body=412`: known lower-case names, each once,
 * 1 to 10 digits, joined by `, `), read by index: what generalEntries gives for it. Null for any other value.
 */
function canonicalEntries(value: string): EncapsulatedEntry[] | null {
  const entries: EncapsulatedEntry[] = [];
  const n = value.length;
  let i = 0;
  for (;;) {
    const eq = value.indexOf('=', i);
    if (eq <= i) return null;
    const name = value.slice(i, eq);
    if (!ENCAPSULATED_NAMES.has(name)) return null;
    for (const e of entries) if (e.name === name) return null;
    let j = eq + 1;
    let offset = 0;
    while (j < n) {
      const c = value.charCodeAt(j);
      if (c < 0x30 || c > 0x39) break;
      offset = offset * 10 + (c - 0x30);
      j++;
    }
    if (j === eq + 1 || j - eq - 1 > 10) return null;
    entries.push({ name: name as EncapsulatedName, offset });
    if (j === n) return entries;
    if (value.charCodeAt(j) !== 0x2c || value.charCodeAt(j + 1) !== 0x20) return null;
    i = j + 2;
  }
}

/** The entries of any value the syntax allows (names in any case, spaces around each part). */
function generalEntries(value: string): EncapsulatedEntry[] {
  const entries: EncapsulatedEntry[] = [];
  const seen = new Set<string>();
  for (const part of value.split(',')) {
    const m = /^\s*([A-Za-z-]+)\s*=\s*(\d{1,10})\s*$/.exec(part);
    if (m === null) throw protocol(`invalid Encapsulated header ${JSON.stringify(value.slice(0, 120))}`);
    const name = m[1]!.toLowerCase();
    if (!ENCAPSULATED_NAMES.has(name)) throw protocol(`unknown Encapsulated entity ${JSON.stringify(name)}`);
    if (seen.has(name)) throw protocol(`duplicate Encapsulated entity ${name}`);
    seen.add(name);
    entries.push({ name: name as EncapsulatedName, offset: Number(m[2]) });
  }
  if (entries.length === 0) throw protocol('empty Encapsulated header');
  return entries;
}
