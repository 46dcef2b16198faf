/**
 * The types of a verdict reading, shared by the vendor readers (generic.ts, opswat.ts,
 * nsx-defender.ts, fields.ts) and re-exported by index.ts, so that no reader imports index.ts.
 */
import type { Headers } from '../../protocol/headers.js';
import type { EncapsulatedHttpRequestHead, EncapsulatedHttpResponseHead } from '../../protocol/parser.js';

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
   * clean: 204 or an explicit allow without adaptation, and no threat signal; blocked: a threat
   * signal or a refusal, whatever the ICAP status; adapted: a 200/201 carrying a (possibly)
   * modified or repaired message — the engine compares bodies to tell an identical echo from a
   * modification; error: the server failed (4xx/5xx, 1xx/3xx finals, unknown) and named no threat.
   */
  kind: 'clean' | 'blocked' | 'adapted' | 'error';
  /** e.g. 'Infected', 'No security rule matched', 'ICAP 500 Server Error'. */
  reason: string | undefined;
  /** e.g. 'Eicar-Test-Signature.UNOFFICIAL', 'EICAR-Test-File (not a virus)'. */
  threat_id: string | undefined;
  violations: Violation[];
  /** Type=2 container/scan problems, X-Error-Code decode_error|password_protected|...: the file could not be scanned. */
  unscannable: boolean;
  /**
   * An adapted verdict that is a repair: the server named threats and says it repaired every
   * one. The engine then requires the returned body to differ from the original (a "repair" that
   * hands back the infected bytes unchanged is a block).
   */
  repair?: boolean;
  opswat_log?: OpswatLog;
  nsx_defender_log?: NsxDefenderLog;
  /** HTTP headers to add to the response sent to the HTTP client (NSX Defender X-Lastline-Status/Score/Task when forwarding is on). */
  client_headers: Array<[string, string]>;
}

export interface VerdictOptions {
  /** Status URL template; `$uuid` is replaced by the task UUID. */
  nsxStatusUrl: string;
  forwardLastlineHeaders: boolean;
  /**
   * The request's own header fields: a scanner that returns the request (a modified request's
   * head) returns them too, so their values there are the client's, not the scanner's.
   */
  sentHeaders?: Headers | undefined;
}
