import type { Headers } from '../../protocol/headers.js';
import type { EncapsulatedHttpRequestHead, EncapsulatedHttpResponseHead } from '../../protocol/parser.js';
import { errorVerdict, readGeneric } from './generic.js';
import { readNsxDefender } from './nsx-defender.js';
import { readOpswat } from './opswat.js';

/*
 * Verdicts: how the final head of an ICAP response (status, ICAP headers, encapsulated HTTP
 * heads) reads as clean / blocked / adapted / error, per vendor. Synthesised from
 * shared/reference/vendor-verdicts.md §3.3 and the vendor table there.
 *
 * Kind, by ICAP status:
 * - 204 -> clean (whatever headers come along: a server in a passive/monitoring mode may report a
 *   threat and still let the message through; threat_id/violations are filled for the log).
 * - 200 / 201 -> blocked when any block signal below is present; otherwise adapted when the
 *   response encapsulates an HTTP head (the engine compares bodies to tell an identical echo from
 *   a modification); otherwise (no encapsulated head at all) clean when the server explicitly
 *   allowed (X-Response-Info allowed/passed/clean, X-Virus-ID `no threats`, X-FSecure-Scan-Result
 *   clean), else error: a 200 must carry the entire adapted message (RFC 3507 §4.3.3).
 * - anything else (100 or other 1xx as a final status, 202, 206 which we never offer, 3xx, 4xx,
 *   5xx, vendor codes 418, 539...) -> error, reason `ICAP <status> <reason phrase>`. OPSWAT's
 *   ICAP 403 (FILEMOD) is an error too, not a block.
 *
 * Block signals (200/201 only):
 * - request satisfaction: a REQMOD answered with an encapsulated HTTP response (res-hdr), whatever
 *   its status: 403, a 3xx redirect (SquidClamav), even a 2xx patience page: the upload is not
 *   forwarded;
 * - RESPMOD: an encapsulated response whose status is 403 or a redirect (301/302/303/307/308), or
 *   whose reason phrase says virus/infected/blocked (McAfee `403 VirusFound`): the engine only
 *   sends 2xx responses to scan, so such a status is the server's block page;
 * - ICAP headers: X-Infection-Found present; X-Violations-Found with a count > 0 (or an unreadable
 *   count with violation lines); X-Blocked-Reason present; X-Response-Info `blocked`
 *   (case-insensitive); X-FSecure-Scan-Result present and not `clean`; X-Virus-ID present and not
 *   empty nor `no threats` (Kaspersky's clean);
 * - encapsulated HTTP headers (modified request or response): X-Blocked, X-Infection-Found
 *   present, X-Virus-ID as above (Sophos puts its verdict there).
 * NSX Defender's X-Lastline-Status/Score never block by themselves (no invented blocks).
 *
 * threat_id: X-Infection-Found `Threat=` (up to the first `;` outside parentheses, trimmed, so a
 * `LastlineArtifact(score=..;md5=..;uuid=..)` stays whole and a Kaspersky comma list is kept as one
 * string), else X-Virus-ID (non-clean), else X-FSecure-Infection-Name, else the encapsulated
 * X-Virus-ID, else the first violation's threat name.
 *
 * violations: X-Violations-Found lines (count, then 4 lines per violation: file name, threat
 * name, problem id, resolution 0 NOT_REPAIRED / 1 REPAIRED / 2 VIOLATING_SECTION_REMOVED, unknown
 * NOT_REPAIRED); malformed input gives what parses. When that yields nothing and X-Infection-Found
 * is present: one violation built from it (file name from the encapsulated request's
 * Content-Disposition filename or its target's last path segment, else ''; Resolution 1 ->
 * REPAIRED, 0 and 2 (deleted/blocked) -> NOT_REPAIRED).
 *
 * reason: X-Blocked-Reason, else X-Response-Desc, else X-Response-Description (ESET, UTF-8); for a
 * block only: else 'Infected' when an infection, violation or virus id was reported, else the
 * encapsulated X-Blocked value, else the satisfaction response's reason phrase ('Forbidden').
 * An error's reason is always `ICAP <status> <reason phrase>`.
 *
 * unscannable: X-Infection-Found Type=2 (container violation, encrypted archive), or X-Error-Code
 * decode_error / max_archive_layers_exceeded / password_protected. It never changes the kind
 * (a 500 with X-Error-Code is error + unscannable; an OPSWAT Type=2 block is blocked + unscannable).
 *
 * Vendors: 'generic' understands every header above (including OPSWAT's and NSX Defender's, so a
 * forgotten vendor setting cannot turn a block into a clean); 'opswat' adds opswat_log;
 * 'nsx-defender' adds nsx_defender_log (score, task uuid, status URL, X-Lastline-Status) and, when
 * forwarding is on, the validated X-Lastline-Status/Score/Task as client_headers.
 *
 * readVerdict never throws: an unexpected failure reads as an error verdict.
 */

export type Vendor = 'generic' | 'opswat' | 'nsx-defender';

export type Resolution = 'ICAP_FILE_NOT_REPAIRED' | 'ICAP_FILE_REPAIRED' | 'ICAP_VIOLATING_SECTION_REMOVED';

export interface Violation {
  file_name: string;
  threat_name: string;
  resolution: Resolution;
  problem_id?: string;
}

export interface VerdictInput {
  method: 'REQMOD' | 'RESPMOD';
  /** Final ICAP status (not 100). */
  status: number;
  /** The status line's reason phrase, for error reasons; a standard phrase is used when absent. */
  reasonPhrase?: string | undefined;
  /** ICAP response headers. */
  headers: Headers;
  /** Encapsulated req-hdr (modified request). */
  httpRequest: EncapsulatedHttpRequestHead | null;
  /** Encapsulated res-hdr (request satisfaction / block page, or the adapted response in RESPMOD). */
  httpResponse: EncapsulatedHttpResponseHead | null;
  /** Name of the scanned file as the client sent it (Content-Disposition or URL), for violations built without one. */
  fileName?: string | undefined;
}

export interface OpswatLog {
  reason?: string;
  threat_id?: string;
  violations: Violation[];
}

export interface NsxDefenderLog {
  score?: number;
  status_url?: string;
  task_uuid?: string;
  status?: string;
}

export interface Verdict {
  /**
   * clean: 204 or an explicit allow without adaptation; blocked: the server refuses the message;
   * adapted: a 200/201 carrying a (possibly) modified message — the engine compares bodies to tell
   * an identical echo from a modification; error: the server failed (4xx/5xx, 1xx/3xx finals, unknown).
   */
  kind: 'clean' | 'blocked' | 'adapted' | 'error';
  /** e.g. 'Infected', 'No security rule matched', 'ICAP 500 Server Error'. */
  reason: string | undefined;
  /** e.g. 'Eicar-Test-Signature.UNOFFICIAL', 'EICAR-Test-File (not a virus)'. */
  threat_id: string | undefined;
  violations: Violation[];
  /** Type=2 container/scan problems, X-Error-Code decode_error|password_protected|...: the file could not be scanned. */
  unscannable: boolean;
  opswat_log?: OpswatLog;
  nsx_defender_log?: NsxDefenderLog;
  /** HTTP headers to add to the response sent to the HTTP client (NSX Defender X-Lastline-Status/Score/Task when forwarding is on). */
  client_headers: Array<[string, string]>;
}

export interface VerdictOptions {
  /** Status URL template; `$uuid` is replaced by the task UUID. */
  nsxStatusUrl: string;
  forwardLastlineHeaders: boolean;
}

export { DEFAULT_NSX_STATUS_URL } from './nsx-defender.js';

export function readVerdict(vendor: Vendor, input: VerdictInput, options: VerdictOptions): Verdict {
  try {
    switch (vendor) {
      case 'opswat':
        return readOpswat(input);
      case 'nsx-defender':
        return readNsxDefender(input, options);
      default:
        return readGeneric(input);
    }
  } catch (err) {
    return errorVerdict(
      input,
      `unreadable ICAP verdict: ${err instanceof Error ? err.message : String(err)}`,
    );
  }
}
