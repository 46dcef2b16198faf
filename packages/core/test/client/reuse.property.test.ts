/**
 * The connection an answer came on is kept for another exchange only when the answer names
 * nothing the verdict could read as a threat or a refusal (client/reuse.ts): an answer the
 * verdict blocks, for any vendor, never leaves its connection in the pool. Kept, a late second
 * answer on it (a stray 204 after the block) would become the next upload's verdict (campaign-ap
 * AP4: a second X-Response-Info or X-FSecure-Scan-Result value, an empty X-Blocked-Reason, a
 * threat in the echoed request head, in a trailer or in a 100 Continue kept the connection).
 * Answers are built as raw bytes and parsed, as on the wire.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { keepsConnection, mayName } from '../../src/client/reuse.js';
import type { TransactionRequest } from '../../src/client/transaction-types.js';
import { blocksOutsideFinalHead, verdictOfHead } from '../../src/engine/beyond-head.js';
import {
  DEFAULT_NSX_STATUS_URL,
  readVerdict,
  VENDORS,
  type VerdictInput,
} from '../../src/engine/verdict/index.js';
import type { IcapReceivedHead } from '../../src/errors.js';
import { Headers } from '../../src/protocol/headers.js';
import type { IcapResponseHead } from '../../src/protocol/parser.js';
import { salvageHeads } from '../../src/protocol/salvage.js';
import { chunked } from '../engine/verdict/fixtures.js';
import { parseResponse } from '../engine/verdict/parse.js';

const OPTS = { nsxStatusUrl: DEFAULT_NSX_STATUS_URL, forwardLastlineHeaders: false };
const REQ = {
  method: 'REQMOD',
  head: Buffer.from('REQMOD icap://127.0.0.1/avscan ICAP/1.0\r\nHost: 127.0.0.1\r\n\r\n'),
  closeAsked: false,
} as TransactionRequest;

/** Field lines the verdict reads (threats, refusals, clean markers, odd values), folded ones as sent. */
const FIELDS = [
  'X-Infection-Found: Type=0; Resolution=2; Threat=EICAR;',
  'X-Infection-Found: Type=0; Resolution=1; Threat=EICAR;',
  'X-Infection-Found:',
  'X-Virus-ID: EICAR',
  'X-Virus-ID: no threats',
  'X-Virus-ID:',
  'X-Virus-Name: Trojan.X',
  'X-Violations-Found: 0',
  'X-Violations-Found: 1\r\n\tupload.bin\r\n\tEICAR Test String\r\n\t-1\r\n\t0',
  'X-Violations-Found: 0\r\n\tupload.bin\r\n\tEICAR Test String\r\n\t-1\r\n\t0',
  'X-Violations-Found: 1\r\n\tupload.bin\r\n\tEICAR\r\n\t-1\r\n\t2',
  'X-Blocked-Reason:',
  'X-Blocked-Reason: Infected',
  'X-Block-Reason: policy',
  'X-MWG-Block-Reason: virus',
  'X-Blocked: Virus found during virus scan',
  'X-Response-Info: Allowed',
  'X-Response-Info: Blocked (virus found)',
  'X-Response-Info: BLOCKED_BY_POLICY',
  'X-Response-Info: BlockedByPolicy',
  'X-Response-Info: Infected',
  'X-FSecure-Scan-Result: clean',
  'X-FSecure-Scan-Result: infected',
  'X-FSecure-Infection-Name: EICAR_Test_File',
  'X-FSecure-Infected-Filename: upload.bin',
  'X-Error-Code: file_type_blocked',
  'X-Error-Code: password_protected',
  'X-Response-Desc: OK',
];
/** Fields a scanner may add to the request it echoes (the verdict reads some of them there). */
const HTTP_FIELDS = [
  'X-Virus-ID: EICAR',
  'X-Blocked: Virus found',
  'X-Infection-Found: Type=0; Threat=EICAR;',
  'X-Note: fine',
];

const REQUEST_HEAD = (fields: string[]) =>
  `POST /upload HTTP/1.1\r\nHost: app\r\nContent-Type: application/octet-stream\r\n${fields.map((f) => `${f}\r\n`).join('')}\r\n`;

/** A 204, or a 200 returning the request (its head with `httpFields`, the body unchanged). */
function answer(status: 204 | 200, fields: string[], httpFields: string[]): string {
  const icap = fields.map((f) => `${f}\r\n`).join('');
  if (status === 204)
    return `ICAP/1.0 204 No Content\r\nISTag: "x1"\r\n${icap}Encapsulated: null-body=0\r\n\r\n`;
  const head = REQUEST_HEAD(httpFields);
  return `ICAP/1.0 200 OK\r\nISTag: "x1"\r\n${icap}Encapsulated: req-hdr=0, req-body=${head.length}\r\n\r\n${head}${chunked('hello')}`;
}

function inputOf(head: IcapResponseHead): VerdictInput {
  return {
    method: 'REQMOD',
    status: head.status,
    reasonPhrase: head.reason,
    headers: head.headers,
    httpRequest: head.httpRequest,
    httpResponse: head.httpResponse,
  };
}

/** A 100 Continue with one field and no encapsulated head, as the transaction keeps it. */
const bare100: IcapReceivedHead = {
  status: 100,
  reason: 'Continue',
  rawHeaders: 'ISTag: "x1"\r\n',
  headers: new Headers([['ISTag', '"x1"']]),
  httpResponse: null,
};

const blockedBySome = (input: VerdictInput) =>
  VENDORS.some((v) => readVerdict(v, input, OPTS).kind === 'blocked');

describe('property: an answer any vendor reading blocks never leaves its connection for reuse', () => {
  it('over 204s and echoes with random fields, repeated and in any order, in the ICAP head and the echoed request head', () => {
    let blocked = 0;
    fc.assert(
      fc.property(
        fc.constantFrom(204 as const, 200 as const),
        fc.array(fc.constantFrom(...FIELDS), { maxLength: 4 }),
        fc.array(fc.constantFrom(...HTTP_FIELDS), { maxLength: 2 }),
        (status, fields, httpFields) => {
          const { head } = parseResponse(answer(status, fields, httpFields));
          if (!blockedBySome(inputOf(head))) return;
          blocked++;
          expect(keepsConnection(REQ, head, null, null)).toBe(false);
        },
      ),
      { numRuns: 3000 },
    );
    // The property looked at blocking answers, many of them.
    expect(blocked).toBeGreaterThan(1000);
  });

  it('a threat in the fields of a 100 Continue before a clean 204, or in a trailer, closes it', () => {
    const { head } = parseResponse(answer(204, [], []));
    expect(keepsConnection(REQ, head, null, null)).toBe(true);
    for (const field of FIELDS) {
      const interim = parseResponse(answer(204, [field], [])).head;
      if (!blockedBySome(inputOf(interim))) continue;
      expect(keepsConnection(REQ, head, null, interim), field).toBe(false);
      expect(keepsConnection(REQ, head, `${field}\r\n`, null), field).toBe(false);
    }
  });

  it('heads the parser did not read but the verdict does close it (campaign-aq AQ1)', () => {
    const echo = parseResponse(answer(200, [], [])).head;
    expect(keepsConnection(REQ, echo, null, null)).toBe(true);
    // A second Encapsulated field naming a response: the verdict reads a block page.
    const twice = parseResponse(
      answer(200, [], []).replace('\r\n\r\nPOST', '\r\nEncapsulated: res-hdr=0, null-body=0\r\n\r\nPOST'),
    ).head;
    expect(blockedBySome(inputOf(twice))).toBe(true);
    expect(keepsConnection(REQ, twice, null, null)).toBe(false);
    // A trailer naming an encapsulated response, read as a head with the answer's status.
    expect(keepsConnection(REQ, echo, 'Encapsulated: res-hdr=0\r\n', null)).toBe(false);
    // A 100 Continue with encapsulated heads (a 403 page): no server sends one.
    const page = {
      status: 403,
      reason: 'Forbidden',
      headers: new Headers(),
    } as IcapReceivedHead['httpResponse'];
    expect(keepsConnection(REQ, echo, null, { ...bare100, httpResponse: page })).toBe(false);
  });

  it('clean answers keep it: a bare 204, clean markers, an unchanged echo (pooling is not lost)', () => {
    for (const fields of [
      [],
      ['X-Virus-ID: no threats'],
      ['X-Response-Info: Allowed'],
      ['X-FSecure-Scan-Result: clean'],
      ['X-Violations-Found: 0'],
      ['X-Response-Desc: OK'],
    ]) {
      for (const status of [204, 200] as const) {
        const { head } = parseResponse(answer(status, fields, ['X-Note: fine']));
        expect(blockedBySome(inputOf(head))).toBe(false);
        expect(keepsConnection(REQ, head, null, bare100), `${status} ${fields}`).toBe(true);
      }
    }
  });
});

describe('property: a head read for a threat only that any vendor reading blocks is never dropped (mayName)', () => {
  it('over heads with any status and random fields, salvaged as what follows an answer or a failure is', () => {
    let blocked = 0;
    fc.assert(
      fc.property(
        fc.constantFrom('0', '100', '200', '204', '206', '403', '405', '500', '503', '539'),
        fc.array(fc.constantFrom(...FIELDS), { maxLength: 3 }),
        fc.array(fc.constantFrom(...HTTP_FIELDS), { maxLength: 2 }),
        (status, fields, httpFields) => {
          // The ICAP head, then an encapsulated head: salvaged as heads of their own.
          const text = `ICAP/1.0 ${status} X\r\n${fields.map((f) => `${f}\r\n`).join('')}\r\n${REQUEST_HEAD(httpFields)}`;
          for (const head of salvageHeads(Buffer.from(text, 'latin1'))) {
            const blocks = VENDORS.some((vendor) =>
              blocksOutsideFinalHead(
                verdictOfHead({ vendor, options: OPTS }, head, head.httpRequest ?? null),
              ),
            );
            if (!blocks) continue;
            blocked++;
            expect(mayName(head)).toBe(true);
          }
        },
      ),
      { numRuns: 2000 },
    );
    expect(blocked).toBeGreaterThan(500);
  });

  it('a clean head names nothing: it may be dropped', () => {
    for (const text of [
      'ICAP/1.0 204 No Content\r\nISTag: "x1"\r\nEncapsulated: null-body=0\r\n',
      'junk\r\n',
    ])
      for (const head of salvageHeads(Buffer.from(text))) expect(mayName(head)).toBe(false);
  });
});
