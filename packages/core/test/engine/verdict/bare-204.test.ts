/**
 * readGeneric's shortcut for a bare 204 (no encapsulated message, no `X-` field) gives the
 * verdict the full reading gives, for every vendor read by the generic rules; any `X-` field
 * or another status takes the full reading.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { analyse, decide, readGeneric } from '../../../src/engine/verdict/generic.js';
import { VENDOR_RULES } from '../../../src/engine/verdict/vendors.js';
import { Headers } from '../../../src/protocol/headers.js';

const NAMES = [
  'ISTag',
  'Date',
  'Server',
  'Encapsulated',
  'Connection',
  'Service',
  'X-Infection-Found',
  'x-virus-id',
  'X-Virus-Name',
  'X-Blocked-Reason',
  'X-Response-Info',
  'X-Response-Desc',
  'X-FSecure-Scan-Result',
  'X-Error-Code',
  'X-Violations-Found',
  'X-Something',
  'Xa',
  'X',
];
const VALUES = [
  '',
  '0',
  'no threats',
  'Clean',
  'blocked',
  'EICAR',
  'Type=0; Resolution=2; Threat=EICAR;',
  '1',
  'decode_error',
];

describe('readGeneric on a bare 204', () => {
  it('reads as decide(analyse()) for every generic vendor, with or without extension fields', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...Object.keys(VENDOR_RULES).filter((v) => v !== 'opswat' && v !== 'nsx-defender')),
        fc.constantFrom(204, 200, 403, 500),
        fc.array(fc.tuple(fc.constantFrom(...NAMES), fc.constantFrom(...VALUES)), { maxLength: 6 }),
        (vendor, status, pairs) => {
          const rules = VENDOR_RULES[vendor as keyof typeof VENDOR_RULES];
          const input = {
            method: 'REQMOD' as const,
            status,
            reasonPhrase: undefined,
            headers: new Headers(pairs),
            httpRequest: null,
            httpResponse: null,
            fileName: 'a.txt',
          };
          expect(readGeneric(input, rules)).toStrictEqual(decide(analyse(input, rules), rules));
        },
      ),
      { numRuns: 2000 },
    );
  });
});
