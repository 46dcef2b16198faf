import { errorVerdict, readGeneric } from './generic.js';
import { readNsxDefender } from './nsx-defender.js';
import { readOpswat } from './opswat.js';

/*
 * Verdicts: how the final head of an ICAP response (status, ICAP headers, encapsulated HTTP
 * heads) reads as clean / blocked / adapted / error, per vendor. Synthesised from
 * shared/reference/vendor-verdicts.md §3.3 and the vendor table there.
 *
 * Order of the decision (the first that applies):
 * 1. A threat signal (below) -> blocked, WHATEVER THE ICAP STATUS: 200, 201, 204, 403, 405,
 *    418, 500, 539... A threat always wins over a clean marker (`X-Response-Info: Allowed`,
 *    `X-Virus-ID: no threats`) and over an error status, so a threat verdict is never routed
 *    through failAction. One exception, a repair: on a 200/201 that returns the message, when
 *    every threat reported says it was repaired and nothing refuses the message (see
 *    "repaired") -> adapted (the engine delivers the returned, disinfected body).
 * 2. The vendor's status rules (vendors.ts): ESET's `405 Forbidden` -> blocked; Symantec's
 *    539 -> error, unscannable.
 * 3. By status: 204 -> clean. 200 / 201 -> adapted when the response encapsulates an HTTP head
 *    (the engine compares bodies to tell an identical echo from a modification); otherwise
 *    clean on an explicit allow (X-Response-Info allowed/passed/clean, X-Virus-ID `no threats`,
 *    X-FSecure-Scan-Result clean), else error (a 200 must carry the entire adapted message,
 *    RFC 3507 §4.3.3). Anything else (1xx as a final status, 202, 206 which we never offer, 3xx,
 *    4xx, 5xx, vendor codes 418, 539...) -> error, reason `ICAP <status> <reason phrase>`; so is
 *    OPSWAT's ICAP 403 (FILEMOD) and an ICAP 403 without a threat signal.
 *
 * Threat signals: refusals
 * - a block page: on a REQMOD 200/201, any encapsulated HTTP response (request satisfaction,
 *   whatever its status: 403, a 3xx redirect (SquidClamav), even a 2xx patience page, even one
 *   the Encapsulated field announces whose head could not be read); on a
 *   RESPMOD 200/201 and on every other ICAP status, an encapsulated response whose status is
 *   403 or a redirect (301/302/303/307/308), or whose reason phrase says virus/infected/blocked
 *   (McAfee `403 VirusFound`);
 * - X-Blocked-Reason present; X-Block-Reason or X-MWG-Block-Reason (McAfee custom rules) not
 *   empty; X-Response-Info `blocked` (case-insensitive); X-Error-Code `file_type_blocked` /
 *   `file_extension_blocked`; X-FSecure-Scan-Result present and not `clean`, or
 *   X-FSecure-Infection-Name or X-FSecure-Infected-Filename naming one;
 * - X-Blocked present in the encapsulated HTTP headers (Sophos), or in the ICAP head;
 * and threat names
 * - X-Infection-Found present (any Type, any Resolution; see "repaired");
 * - X-Violations-Found, any of its fields, with a count > 0, or a count of 0 followed by
 *   violation lines, or a first line that is not a count (`0.9`) with any text;
 * - X-Virus-ID or X-Virus-Name present and not empty nor `no threats` (Kaspersky's clean);
 * - in the encapsulated HTTP headers: X-Infection-Found present, X-Virus-ID as above.
 * Every value of a repeated field counts: `X-Response-Info: passed` followed by
 * `X-Response-Info: blocked` is a block. The engine reads these signals in the final head, in
 * any 100 Continue before it, in the head of an answer that broke off, in the trailer fields
 * after the answer's body, and in anything the server sent after the answer on the connection
 * (../beyond-head.ts, which the engine and the CLI share): only ever to block.
 * Not threat signals: `X-Response-Info: Allowed|passed|clean`, `X-Virus-ID: no threats`, an
 * empty X-Virus-ID, `X-FSecure-Scan-Result: clean`, X-Error-Code decode_error /
 * password_protected / max_archive_layers_exceeded (unscannable, an error), NSX Defender's
 * X-Lastline-Status/Score (no invented blocks), X-Response-Desc alone.
 *
 * repaired: the vendor reads Resolution=1 as a repair (every vendor but NSX Defender, which
 * writes Resolution=1 on its blocks), the answer is a 200/201 returning the message (REQMOD:
 * req-hdr and no res-hdr; RESPMOD: res-hdr that is not a block page), there is at least one
 * X-Infection-Found or violation line, every X-Infection-Found says Resolution=1, every
 * violation says REPAIRED (1) or VIOLATING_SECTION_REMOVED (2), the X-Violations-Found count
 * matches its lines, and no refusal signal is present. A Resolution of 0 or 2, a missing one,
 * an X-Virus-ID without any X-Infection-Found, a repair reported on a 204 or on an error status:
 * blocked. A repair is marked (`repair`): the engine blocks one whose returned body is the
 * original byte for byte (scan/exchange.ts), since the threats it names are then all still there.
 *
 * threat_id: X-Infection-Found `Threat=` (up to the first `;` outside parentheses, trimmed, so a
 * `LastlineArtifact(score=..;md5=..;uuid=..)` stays whole and a Kaspersky comma list is kept as one
 * string), else X-Virus-ID (non-clean), else X-Virus-Name, else X-FSecure-Infection-Name, else
 * the encapsulated X-Virus-ID, else the first violation's threat name.
 *
 * violations: X-Violations-Found lines (count, then 4 lines per violation: file name, threat
 * name, problem id, resolution 0 NOT_REPAIRED / 1 REPAIRED / 2 VIOLATING_SECTION_REMOVED, unknown
 * NOT_REPAIRED); malformed input gives what parses. When that yields nothing and X-Infection-Found
 * is present: one violation built from it (file name from the encapsulated request's
 * Content-Disposition filename or its target's last path segment, else ''; Resolution 1 ->
 * REPAIRED, 0 and 2 (deleted/blocked) -> NOT_REPAIRED).
 *
 * reason: X-Blocked-Reason, else X-Block-Reason, else X-MWG-Block-Reason, else X-Response-Desc,
 * else X-Response-Description (ESET, UTF-8); for a block only: else 'Infected' when an
 * infection, violation or virus id was reported, else the encapsulated X-Blocked value, else
 * the blocking X-Error-Code, else the block page's reason phrase ('Forbidden'). An error's
 * reason is always `ICAP <status> <reason phrase>`.
 *
 * unscannable: X-Infection-Found Type=2 (container violation, encrypted archive), X-Error-Code
 * decode_error / max_archive_layers_exceeded / password_protected, Symantec's 539. It never
 * changes the kind (a 500 with X-Error-Code is error + unscannable; an OPSWAT Type=2 block is
 * blocked + unscannable). The engine blocks an error that is unscannable (scan/exchange.ts): it
 * is about the client's file, not a failure of the server, so it never takes the failure action.
 *
 * Vendors (vendors.ts): every vendor reads every signal above (so a forgotten or wrong vendor
 * setting cannot turn a block into a clean); a vendor adds its status rules, its repair reading,
 * its name in the log record, and 'opswat' adds opswat_log; 'nsx-defender' adds
 * nsx_defender_log (score, task uuid, status URL, X-Lastline-Status) and, when forwarding is on,
 * the validated X-Lastline-Status/Score/Task as client_headers.
 *
 * readVerdict never throws: an unexpected failure reads as an error verdict, or as a block when
 * a threat header is present at all.
 */

import type { Verdict, VerdictInput, VerdictOptions } from './types.js';
import { VENDOR_RULES, type Vendor } from './vendors.js';

export { DEFAULT_NSX_STATUS_URL } from './nsx-defender.js';
export type {
  NsxDefenderLog,
  OpswatLog,
  Resolution,
  Verdict,
  VerdictInput,
  VerdictOptions,
  Violation,
} from './types.js';
export type { StatusRule, Vendor, VendorRules } from './vendors.js';
export { isVendor, VENDOR_RULES, VENDORS } from './vendors.js';

export function readVerdict(vendor: Vendor, input: VerdictInput, options: VerdictOptions): Verdict {
  try {
    switch (vendor) {
      case 'opswat':
        return readOpswat(input);
      case 'nsx-defender':
        return readNsxDefender(input, options);
      default:
        return readGeneric(input, VENDOR_RULES[vendor] ?? VENDOR_RULES.generic);
    }
  } catch (err) {
    const v = errorVerdict(
      input,
      `unreadable ICAP verdict: ${err instanceof Error ? err.message : String(err)}`,
    );
    if (namesThreat(input)) v.kind = 'blocked';
    return v;
  }
}

/** ICAP headers whose mere presence names a threat (the fallback when the reading failed). */
const THREAT_HEADERS = [
  'x-infection-found',
  'x-violations-found',
  'x-blocked-reason',
  'x-virus-id',
  'x-virus-name',
];

function namesThreat(input: VerdictInput): boolean {
  try {
    return THREAT_HEADERS.some((name) =>
      input.headers.getAll(name).some((value) => {
        const v = value.trim().toLowerCase();
        return v !== '' && v !== '0' && v !== 'no threats';
      }),
    );
  } catch {
    return false;
  }
}
