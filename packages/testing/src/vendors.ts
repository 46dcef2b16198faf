import { randomUUID } from 'node:crypto';
import { escapeHtml } from '@icapkit/core';

/**
 * How each vendor words a verdict, as the embedded server answers: c-icap with ClamAV,
 * OPSWAT MetaDefender, NSX Defender (Lastline). Headers in the order and spelling those
 * servers use (see shared/reference/vendor-verdicts.md).
 */

export type VendorStyle = 'c-icap' | 'opswat' | 'nsx-defender';

export interface BlockInput {
  threat: string;
  fileName: string;
  md5: string;
}

export interface BlockAnswer {
  /** ICAP headers of the 200 response (Encapsulated excluded). */
  icapHeaders: Array<[string, string]>;
  /** Raw header lines that need obs-fold (X-Violations-Found), appended after icapHeaders. */
  foldedLines: string;
  /** The encapsulated HTTP response head and its body (the block page). */
  httpHead: Array<[string, string]>;
  httpStatus: number;
  httpReason: string;
  page: Buffer;
  /** NSX Defender task id, when one was made up. */
  taskUuid?: string;
}

export function blockAnswer(vendor: VendorStyle, input: BlockInput): BlockAnswer {
  const page = Buffer.from(
    '<html><head><title>VIRUS FOUND</title></head><body><h1>VIRUS FOUND</h1>' +
      `<p>You tried to upload ${escapeHtml(input.fileName)}, which is infected with ${escapeHtml(input.threat)}.</p></body></html>\n`,
  );
  const httpHead: Array<[string, string]> = [
    ['Content-Type', 'text/html'],
    ['Content-Length', String(page.length)],
  ];
  if (vendor === 'opswat') {
    return {
      icapHeaders: [
        ['X-ICAP-Profile', 'File process'],
        ['X-Response-Info', 'Blocked'],
        ['X-Response-Desc', 'Infected'],
        ['X-Blocked-Reason', 'Infected'],
        ['X-Virus-ID', input.threat],
        ['X-Infection-Found', `Type=0; Resolution=2; Threat=${input.threat};`],
      ],
      foldedLines: '',
      httpHead,
      httpStatus: 403,
      httpReason: 'Forbidden',
      page,
    };
  }
  if (vendor === 'nsx-defender') {
    const uuid = randomUUID().replace(/-/g, '');
    return {
      icapHeaders: [
        [
          'X-Infection-Found',
          `Type=0;Resolution=1;Threat=LastlineArtifact(score=100;md5=${input.md5};uuid=${uuid})`,
        ],
        ['X-Virus-ID', `LastlineArtifact(score=100;md5=${input.md5};task_uuid=${uuid})`],
      ],
      foldedLines: '',
      httpHead: [
        ...httpHead,
        ['X-Lastline-Status', 'known'],
        ['X-Lastline-Score', '100'],
        ['X-Lastline-Task', uuid],
      ],
      httpStatus: 403,
      httpReason: 'Forbidden',
      page,
      taskUuid: uuid,
    };
  }
  return {
    icapHeaders: [['X-Infection-Found', `Type=0; Resolution=2; Threat=${input.threat};`]],
    // c-icap's virus_scan: a count, then file name, threat, problem id and resolution, folded.
    foldedLines: `X-Violations-Found: 1\r\n\t${input.fileName}\r\n\t${input.threat}\r\n\t0\r\n\t0\r\n`,
    httpHead,
    httpStatus: 403,
    httpReason: 'Forbidden',
    page,
  };
}

/** Headers a clean answer carries. */
export function cleanHeaders(vendor: VendorStyle): Array<[string, string]> {
  return vendor === 'opswat' ? [['X-Response-Info', 'Allowed']] : [];
}

/** NSX Defender's analysis headers on a clean request (added to the encapsulated request). */
export function lastlineCleanHeaders(): Array<[string, string]> {
  return [
    ['X-Lastline-Status', 'known'],
    ['X-Lastline-Score', '0'],
    ['X-Lastline-Task', randomUUID().replace(/-/g, '')],
  ];
}
