import { randomUUID } from 'node:crypto';
import { escapeHtml } from '@icapkit/core';

/**
 * How each vendor words a verdict, as the embedded server answers (see
 * shared/reference/vendor-verdicts.md, §3.2): headers in the order and spelling those servers
 * use, the ICAP status they answer with, and the block page they encapsulate (or not).
 *
 * Vendors: c-icap with ClamAV, OPSWAT MetaDefender, NSX Defender (Lastline), Kaspersky
 * (KWTS / Scan Engine), ESET, Symantec (201 Created), McAfee Web Gateway, Trend Micro, Sophos
 * SAVDI, F-Secure, SquidClamav (a redirect). Status-code styles, for "a threat header wins over
 * the status line": `icap-403` (`ICAP/1.0 403 Forbidden` with X-Blocked-Reason and
 * X-Infection-Found, no Encapsulated, no body), `icap-405` (ESET's `405 Forbidden`), `icap-418`
 * (McAfee's `418 Bad composition` code), `icap-539` (Symantec's license code), `icap-500`
 * (a server error status) and `icap-204` (a 204 reporting a threat, as a monitoring mode
 * would), each carrying the threat in its ICAP headers.
 */
export const VENDOR_STYLES = [
  'c-icap',
  'opswat',
  'nsx-defender',
  'kaspersky',
  'eset',
  'symantec',
  'mcafee',
  'trend-micro',
  'sophos',
  'f-secure',
  'squidclamav',
  'icap-403',
  'icap-405',
  'icap-418',
  'icap-539',
  'icap-500',
  'icap-204',
] as const;

export type VendorStyle = (typeof VENDOR_STYLES)[number];

export interface BlockInput {
  threat: string;
  fileName: string;
  md5: string;
}

export interface BlockAnswer {
  /** ICAP status line of the block (200 for most vendors). */
  icapStatus: number;
  icapReason: string;
  /** ICAP headers (Encapsulated excluded). */
  icapHeaders: Array<[string, string]>;
  /**
   * Raw header lines appended after icapHeaders, as Latin-1 text of the bytes to send: lines
   * that need obs-fold (X-Violations-Found) or raw UTF-8 (ESET's X-Response-Description).
   */
  foldedLines: string;
  /** The encapsulated HTTP response (the block page's head, Content-Length added from `page`); null: none. */
  http: { status: number; reason: string; headers: Array<[string, string]> } | null;
  /** The block page; null: the head alone (`null-body`). */
  page: Buffer | null;
  /** Without an encapsulated response: leave the Encapsulated header out (else `null-body=0`). */
  noEncapsulated?: boolean;
  /** NSX Defender task id, when one was made up. */
  taskUuid?: string;
}

/** Raw UTF-8 bytes of a header value, as the Latin-1 text `foldedLines` carries. */
function utf8Raw(s: string): string {
  return Buffer.from(s, 'utf8').toString('latin1');
}

function blockPage(input: BlockInput): Buffer {
  return Buffer.from(
    '<html><head><title>VIRUS FOUND</title></head><body><h1>VIRUS FOUND</h1>' +
      `<p>You tried to upload ${escapeHtml(input.fileName)}, which is infected with ${escapeHtml(input.threat)}.</p></body></html>\n`,
  );
}

function pageAnswer(
  page: Buffer,
  icapHeaders: Array<[string, string]>,
  options: {
    status?: number;
    reason?: string;
    httpHeaders?: Array<[string, string]>;
    foldedLines?: string;
    icapStatus?: number;
    icapReason?: string;
  } = {},
): BlockAnswer {
  return {
    icapStatus: options.icapStatus ?? 200,
    icapReason: options.icapReason ?? 'OK',
    icapHeaders,
    foldedLines: options.foldedLines ?? '',
    http: {
      status: options.status ?? 403,
      reason: options.reason ?? 'Forbidden',
      // Content-Length is written by the server from the page.
      headers: [['Content-Type', 'text/html'], ...(options.httpHeaders ?? [])],
    },
    page,
  };
}

/** A status-code style: the threat in the ICAP headers, no encapsulated message. */
function headersOnly(
  status: number,
  reason: string,
  icapHeaders: Array<[string, string]>,
  noEncapsulated = false,
): BlockAnswer {
  return {
    icapStatus: status,
    icapReason: reason,
    icapHeaders,
    foldedLines: '',
    http: null,
    page: null,
    noEncapsulated,
  };
}

function violations(input: BlockInput): string {
  // A count, then file name, threat, problem id and resolution, folded (c-icap, Symantec).
  return `X-Violations-Found: 1\r\n\t${input.fileName}\r\n\t${input.threat}\r\n\t0\r\n\t0\r\n`;
}

export function blockAnswer(vendor: VendorStyle, input: BlockInput): BlockAnswer {
  const page = blockPage(input);
  const infection: [string, string] = ['X-Infection-Found', `Type=0; Resolution=2; Threat=${input.threat};`];
  switch (vendor) {
    case 'opswat':
      return pageAnswer(page, [
        ['X-ICAP-Profile', 'File process'],
        ['X-Response-Info', 'Blocked'],
        ['X-Response-Desc', 'Infected'],
        ['X-Blocked-Reason', 'Infected'],
        ['X-Virus-ID', input.threat],
        infection,
      ]);
    case 'nsx-defender': {
      const uuid = randomUUID().replace(/-/g, '');
      return {
        ...pageAnswer(
          page,
          [
            [
              'X-Infection-Found',
              `Type=0;Resolution=1;Threat=LastlineArtifact(score=100;md5=${input.md5};uuid=${uuid})`,
            ],
            ['X-Virus-ID', `LastlineArtifact(score=100;md5=${input.md5};task_uuid=${uuid})`],
          ],
          {
            httpHeaders: [
              ['X-Lastline-Status', 'known'],
              ['X-Lastline-Score', '100'],
              ['X-Lastline-Task', uuid],
            ],
          },
        ),
        taskUuid: uuid,
      };
    }
    case 'kaspersky':
      // X-Virus-ID (VirusNameICAPHeader), X-Response-Info: blocked; X-Infection-Found is off by default.
      return pageAnswer(page, [
        ['X-Virus-ID', input.threat],
        ['X-Response-Info', 'blocked'],
        ['X-Response-Desc', 'DETECT'],
      ]);
    case 'eset':
      // Localised X-Virus-ID, X-Response-Description in raw UTF-8, a 403 without a body.
      return {
        icapStatus: 200,
        icapReason: 'OK',
        icapHeaders: [
          ['X-Infection-Found', `Type=0; Resolution=0; Threat=${input.threat};`],
          ['X-Virus-ID', 'Testdatei'],
          ['X-Response-Info', 'Blocked'],
        ],
        foldedLines: `X-Response-Description: ${utf8Raw('Gelöscht')}\r\n`,
        http: { status: 403, reason: 'Forbidden', headers: [] },
        page: null,
      };
    case 'symantec':
      // SYMCScanResp-AV: 201 Created with X-Infection-Found and folded X-Violations-Found.
      return pageAnswer(page, [infection], {
        icapStatus: 201,
        icapReason: 'Created',
        foldedLines: violations(input),
      });
    case 'mcafee':
      // `403 VirusFound` with an HTML page; X-Virus-Name and X-MWG-Block-Reason as a custom rule adds them.
      return pageAnswer(
        page,
        [
          ['X-Virus-Name', input.threat],
          ['X-MWG-Block-Reason', 'Virus found'],
        ],
        { reason: 'VirusFound' },
      );
    case 'trend-micro':
      return pageAnswer(
        page,
        [
          ['X-Virus-ID', input.threat],
          ['X-Infection-Found', `Type=0; Resolution=0; Threat=${input.threat};`],
        ],
        { reason: 'Forbidden (TMWS Blocked)' },
      );
    case 'sophos':
      // SAVDI: X-Virus-ID in ICAP, X-Blocked / X-Blocked-By in the encapsulated HTTP headers.
      return pageAnswer(page, [['X-Virus-ID', input.threat]], {
        httpHeaders: [
          ['X-Blocked', 'Virus found during virus scan'],
          ['X-Blocked-By', 'Sophos Anti-Virus'],
        ],
      });
    case 'f-secure':
      return pageAnswer(page, [
        ['X-FSecure-Scan-Result', 'infected'],
        ['X-FSecure-Infection-Name', input.threat],
        ['X-FSecure-Infected-Filename', input.fileName],
      ]);
    case 'squidclamav':
      // A redirect to a "virus found" page instead of a 403, with the threat in the ICAP headers.
      return {
        icapStatus: 200,
        icapReason: 'OK',
        icapHeaders: [infection, ['X-Virus-ID', input.threat]],
        foldedLines: '',
        http: {
          status: 307,
          reason: 'Temporary Redirect',
          headers: [['Location', 'http://127.0.0.1/virus-found.html']],
        },
        page: null,
      };
    case 'icap-403':
      return headersOnly(403, 'Forbidden', [['X-Blocked-Reason', 'Infected'], infection], true);
    case 'icap-405':
      return headersOnly(405, 'Forbidden', [infection, ['X-Virus-ID', input.threat]]);
    case 'icap-418':
      return headersOnly(418, 'Bad composition', [
        ['X-Virus-ID', input.threat],
        ['X-Response-Info', 'Blocked'],
      ]);
    case 'icap-539':
      return {
        ...headersOnly(539, 'Aborted - No AV scanning license', [infection]),
        foldedLines: violations(input),
      };
    case 'icap-500':
      return headersOnly(500, 'Server Error', [infection, ['X-Blocked-Reason', 'Infected']]);
    case 'icap-204':
      return headersOnly(204, 'No Content', [infection, ['X-Virus-ID', input.threat]], true);
    default:
      // c-icap's virus_scan.
      return pageAnswer(page, [infection], { foldedLines: violations(input) });
  }
}

/** Headers a clean answer carries (a 204, or the 200 echo). */
export function cleanHeaders(vendor: VendorStyle): Array<[string, string]> {
  switch (vendor) {
    case 'opswat':
      return [['X-Response-Info', 'Allowed']];
    case 'kaspersky':
      // KWTS on a clean object: a virus id that says so, and "passed".
      return [
        ['X-Virus-ID', 'no threats'],
        ['X-Response-Info', 'passed'],
      ];
    case 'f-secure':
      return [['X-FSecure-Scan-Result', 'clean']];
    default:
      return [];
  }
}

/** NSX Defender's analysis headers on a clean request (added to the encapsulated request). */
export function lastlineCleanHeaders(): Array<[string, string]> {
  return [
    ['X-Lastline-Status', 'known'],
    ['X-Lastline-Score', '0'],
    ['X-Lastline-Task', randomUUID().replace(/-/g, '')],
  ];
}
