/**
 * The vendor table (shared/reference/vendor-verdicts.md §3.2) as status × headers → kind, for
 * every vendor profile: a threat signal blocks whatever the ICAP status and whatever the vendor
 * setting; a vendor's status rules apply only without a threat; a repair is a modification.
 * Every response is built as raw bytes and parsed, so folding, UTF-8 and the Encapsulated
 * offsets are those of the wire.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { vendorEnum } from '../../../src/engine/log.js';
import {
  DEFAULT_NSX_STATUS_URL,
  readVerdict,
  VENDORS,
  type Vendor,
  type Verdict,
  type VerdictOptions,
} from '../../../src/engine/verdict/index.js';
import type { Headers } from '../../../src/protocol/headers.js';
import { chunked } from './fixtures.js';
import { bareInput, inputOf } from './parse.js';

const OPTS: VerdictOptions = { nsxStatusUrl: DEFAULT_NSX_STATUS_URL, forwardLastlineHeaders: false };

interface Http {
  /** `HTTP/1.1 403 Forbidden` or `POST /upload HTTP/1.1`. */
  start: string;
  headers?: string[];
  /** undefined: `null-body` after the head. */
  body?: string;
}

/**
 * A raw ICAP response: the status line, the ICAP header lines (folded ones included as
 * written), then the encapsulated request or response with computed offsets. Without `http`,
 * `encapsulated: false` leaves the Encapsulated header out (else `null-body=0`).
 */
function raw(
  statusLine: string,
  icap: string[],
  http?: Http,
  options: { encapsulated?: boolean } = {},
): string {
  const lines = [statusLine, 'ISTag: "T-1"', ...icap];
  if (http === undefined) {
    if (options.encapsulated !== false) lines.push('Encapsulated: null-body=0');
    return `${lines.join('\r\n')}\r\n\r\n`;
  }
  const head = `${[http.start, ...(http.headers ?? [])].join('\r\n')}\r\n\r\n`;
  const kind = http.start.startsWith('HTTP/') ? 'res' : 'req';
  const n = Buffer.byteLength(head);
  lines.push(`Encapsulated: ${kind}-hdr=0, ${http.body === undefined ? 'null-body' : `${kind}-body`}=${n}`);
  return `${lines.join('\r\n')}\r\n\r\n${head}${http.body === undefined ? '' : chunked(http.body)}`;
}

const PAGE_403: Http = {
  start: 'HTTP/1.1 403 Forbidden',
  headers: ['Content-Type: text/html'],
  body: '<h1>x</h1>',
};
const ECHO: Http = {
  start: 'POST /upload HTTP/1.1',
  headers: ['Host: app', 'Content-Length: 5'],
  body: 'hello',
};
const INFECTION = 'X-Infection-Found: Type=0; Resolution=2; Threat=EICAR;';
const VIOLATIONS = ['X-Violations-Found: 1', '\teicar.com', '\tEICAR', '\t0', '\t0'];

type Kind = Verdict['kind'];
interface Row {
  name: string;
  response: string;
  method?: 'REQMOD' | 'RESPMOD';
  /** The kind for every vendor, or per vendor (others: `other`). */
  kind: Kind | ({ [v in Vendor]?: Kind } & { other: Kind });
  threat?: string;
  reason?: string;
}

const ROWS: Row[] = [
  // ------------------------------------------------------------ c-icap + ClamAV
  {
    name: 'c-icap: 200 + X-Infection-Found + folded X-Violations-Found + encapsulated 403',
    response: raw('ICAP/1.0 200 OK', [INFECTION, ...VIOLATIONS], PAGE_403),
    kind: 'blocked',
    threat: 'EICAR',
    reason: 'Infected',
  },
  {
    name: 'c-icap: 204 clean',
    response: raw('ICAP/1.0 204 No Content', [], undefined, { encapsulated: false }),
    kind: 'clean',
  },
  {
    name: 'c-icap: 500 (PassOnError off) is an error',
    response: raw('ICAP/1.0 500 Server Error', []),
    kind: 'error',
    reason: 'ICAP 500 Server Error',
  },
  // ------------------------------------------------------------ SquidClamav
  {
    name: 'SquidClamav: encapsulated 307 redirect + X-Virus-ID',
    response: raw('ICAP/1.0 200 OK', [INFECTION, 'X-Virus-ID: EICAR'], {
      start: 'HTTP/1.0 307 Temporary Redirect',
      headers: ['Location: http://x/virus'],
    }),
    kind: 'blocked',
    threat: 'EICAR',
  },
  // ------------------------------------------------------------ OPSWAT
  {
    name: 'OPSWAT: X-Response-Info: Blocked + X-Blocked-Reason + encapsulated page',
    response: raw(
      'ICAP/1.0 200 OK',
      ['X-Response-Info: Blocked', 'X-Blocked-Reason: Infected', 'X-Virus-ID: EICAR', INFECTION],
      PAGE_403,
    ),
    kind: 'blocked',
    threat: 'EICAR',
    reason: 'Infected',
  },
  {
    name: 'OPSWAT: X-Response-Info: Allowed on a 204 is clean',
    response: raw('ICAP/1.0 204 No Content', ['X-Response-Info: Allowed'], undefined, {
      encapsulated: false,
    }),
    kind: 'clean',
  },
  {
    name: 'OPSWAT: X-Response-Info: Allowed on a 200 echo is adapted (bodies compared)',
    response: raw('ICAP/1.0 200 OK', ['X-Response-Info: Allowed'], ECHO),
    kind: 'adapted',
  },
  {
    name: 'OPSWAT: ICAP 403 (FILEMOD) without a threat is an error',
    response: raw('ICAP/1.0 403 Forbidden', []),
    kind: 'error',
    reason: 'ICAP 403 Forbidden',
  },
  // ------------------------------------------------------------ Kaspersky
  {
    name: 'Kaspersky: X-Virus-ID + X-Response-Info: blocked + encapsulated 403',
    response: raw(
      'ICAP/1.0 200 OK',
      ['X-Virus-ID: EICAR-Test-File', 'X-Response-Info: blocked', 'X-Response-Desc: DETECT'],
      PAGE_403,
    ),
    kind: 'blocked',
    threat: 'EICAR-Test-File',
    reason: 'DETECT',
  },
  {
    name: 'Kaspersky (KWTS): X-Virus-ID: no threats + X-Response-Info: passed on a 204 is clean',
    response: raw('ICAP/1.0 204 No Content', ['X-Virus-ID: no threats', 'X-Response-Info: passed']),
    kind: 'clean',
  },
  {
    name: 'Kaspersky (KWTS): the same on a 200 echo is adapted',
    response: raw('ICAP/1.0 200 OK', ['X-Virus-ID: no threats', 'X-Response-Info: passed'], ECHO),
    kind: 'adapted',
  },
  {
    name: 'Kaspersky: 400 (no encapsulated Content-Length) is an error',
    response: raw('ICAP/1.0 400 Bad Request', []),
    kind: 'error',
  },
  // ------------------------------------------------------------ ESET
  {
    name: 'ESET: X-Infection-Found Resolution=0 + localised X-Virus-ID + UTF-8 description + 403 without body',
    response: raw(
      'ICAP/1.0 200 OK',
      [
        'X-Infection-Found: Type=0; Resolution=0; Threat=Eicar;',
        'X-Virus-ID: Testdatei',
        'X-Response-Info: Blocked',
        'X-Response-Description: Gelöscht',
      ],
      { start: 'HTTP/1.1 403 Forbidden', headers: ['Content-Length: 0'] },
    ),
    kind: 'blocked',
    threat: 'Eicar',
    reason: 'Gelöscht',
  },
  {
    name: 'ESET: ICAP 405 Forbidden with a threat header blocks for every vendor',
    response: raw('ICAP/1.0 405 Forbidden', [INFECTION, 'X-Virus-ID: Eicar']),
    kind: 'blocked',
    threat: 'EICAR',
  },
  {
    name: 'ESET: ICAP 405 Forbidden alone: blocked for eset, an error for the others',
    response: raw('ICAP/1.0 405 Forbidden', []),
    kind: { eset: 'blocked', other: 'error' },
    reason: undefined,
  },
  {
    name: 'ICAP 405 Method Not Allowed (Trend, anyone) is an error, ESET included',
    response: raw('ICAP/1.0 405 Method Not Allowed', []),
    kind: 'error',
  },
  // ------------------------------------------------------------ Symantec
  {
    name: 'Symantec: 201 Created + X-Infection-Found + folded violations + encapsulated 403',
    response: raw('ICAP/1.0 201 Created', [INFECTION, ...VIOLATIONS], PAGE_403),
    method: 'RESPMOD',
    kind: 'blocked',
    threat: 'EICAR',
  },
  {
    name: 'Symantec: 201 with a repaired response (Resolution=1, violation REPAIRED) is a modification',
    response: raw(
      'ICAP/1.0 201 Created',
      [
        'X-Infection-Found: Type=0; Resolution=1; Threat=W97M.Macro;',
        'X-Violations-Found: 1',
        '\tdoc.docm',
        '\tW97M.Macro',
        '\t7',
        '\t1',
      ],
      { start: 'HTTP/1.1 200 OK', headers: ['Content-Type: application/msword'], body: 'cleaned' },
    ),
    method: 'RESPMOD',
    kind: { 'nsx-defender': 'blocked', other: 'adapted' },
    threat: 'W97M.Macro',
  },
  {
    name: 'Symantec: 539 (no AV license) is an error',
    response: raw('ICAP/1.0 539 Aborted - No AV scanning license', []),
    kind: 'error',
    reason: 'ICAP 539 Aborted - No AV scanning license',
  },
  {
    name: 'Symantec: 539 carrying X-Infection-Found + violations blocks',
    response: raw('ICAP/1.0 539 Aborted - No AV scanning license', [INFECTION, ...VIOLATIONS]),
    kind: 'blocked',
    threat: 'EICAR',
  },
  {
    name: 'Symantec: Type=2 container violation blocks (and is unscannable)',
    response: raw(
      'ICAP/1.0 200 OK',
      ['X-Infection-Found: Type=2; Resolution=2; Threat=Container size violation;'],
      PAGE_403,
    ),
    kind: 'blocked',
    threat: 'Container size violation',
  },
  // ------------------------------------------------------------ McAfee
  {
    name: 'McAfee: encapsulated 403 VirusFound without ICAP headers (REQMOD)',
    response: raw('ICAP/1.0 200 OK', [], { ...PAGE_403, start: 'HTTP/1.1 403 VirusFound' }),
    kind: 'blocked',
    reason: 'VirusFound',
  },
  {
    name: 'McAfee: the same in RESPMOD',
    response: raw('ICAP/1.0 200 OK', [], { ...PAGE_403, start: 'HTTP/1.1 403 VirusFound' }),
    method: 'RESPMOD',
    kind: 'blocked',
  },
  {
    name: 'McAfee (custom rule): X-Virus-Name and X-MWG-Block-Reason',
    response: raw('ICAP/1.0 200 OK', ['X-Virus-Name: EICAR test file', 'X-MWG-Block-Reason: Virus found'], {
      ...PAGE_403,
      start: 'HTTP/1.1 403 VirusFound',
    }),
    kind: 'blocked',
    threat: 'EICAR test file',
    reason: 'Virus found',
  },
  {
    name: 'McAfee: 418 Bad composition alone is an error',
    response: raw('ICAP/1.0 418 Bad composition', []),
    kind: 'error',
    reason: 'ICAP 418 Bad composition',
  },
  {
    name: 'McAfee: 418 carrying X-Virus-ID blocks',
    response: raw('ICAP/1.0 418 Bad composition', ['X-Virus-ID: EICAR', 'X-Response-Info: Blocked']),
    kind: 'blocked',
    threat: 'EICAR',
  },
  // ------------------------------------------------------------ Trend Micro
  {
    name: 'Trend Micro: encapsulated 403 Forbidden (TMWS Blocked) + X-Virus-ID',
    response: raw('ICAP/1.0 200 OK', ['X-Virus-ID: Eicar_test_file'], {
      ...PAGE_403,
      start: 'HTTP/1.1 403 Forbidden (TMWS Blocked)',
    }),
    kind: 'blocked',
    threat: 'Eicar_test_file',
  },
  {
    name: 'Trend Micro: 500 with a scan error code is an error',
    response: raw('ICAP/1.0 500 Server Error', ['X-Error-Code: -69']),
    kind: 'error',
  },
  // ------------------------------------------------------------ Sophos
  {
    name: 'Sophos SAVDI: X-Blocked in the encapsulated HTTP headers of a RESPMOD 200',
    response: raw('ICAP/1.0 200 OK', [], {
      start: 'HTTP/1.1 200 OK',
      headers: ['X-Blocked: Virus found during virus scan', 'X-Blocked-By: Sophos Anti-Virus'],
      body: 'page',
    }),
    method: 'RESPMOD',
    kind: 'blocked',
    reason: 'Virus found during virus scan',
  },
  {
    name: 'Sophos SAVDI: X-Virus-ID in the ICAP headers',
    response: raw('ICAP/1.0 200 OK', ['X-Virus-ID: EICAR-AV-Test'], PAGE_403),
    kind: 'blocked',
    threat: 'EICAR-AV-Test',
  },
  // ------------------------------------------------------------ F-Secure
  {
    name: 'F-Secure: X-FSecure-Scan-Result: infected',
    response: raw(
      'ICAP/1.0 200 OK',
      ['X-FSecure-Scan-Result: infected', 'X-FSecure-Infection-Name: EICAR'],
      PAGE_403,
    ),
    kind: 'blocked',
    threat: 'EICAR',
  },
  {
    name: 'F-Secure: X-FSecure-Scan-Result: clean on a 204',
    response: raw('ICAP/1.0 204 No Content', ['X-FSecure-Scan-Result: clean']),
    kind: 'clean',
  },
  // ------------------------------------------------------------ NSX Defender
  {
    name: 'NSX Defender: Resolution=1 with a LastlineArtifact on a block page',
    response: raw(
      'ICAP/1.0 200 OK',
      ['X-Infection-Found: Type=0;Resolution=1;Threat=LastlineArtifact(score=100;md5=x;uuid=y)'],
      PAGE_403,
    ),
    kind: 'blocked',
  },
  {
    name: 'NSX Defender: X-Lastline-* headers alone never block',
    response: raw('ICAP/1.0 200 OK', [], {
      ...ECHO,
      headers: [...(ECHO.headers ?? []), 'X-Lastline-Score: 100'],
    }),
    kind: 'adapted',
  },
  // ------------------------------------------------------------ ICAP status codes carrying a threat
  {
    name: 'ICAP 403 Forbidden + X-Blocked-Reason: Infected, no Encapsulated',
    response: raw('ICAP/1.0 403 Forbidden', ['X-Blocked-Reason: Infected', INFECTION], undefined, {
      encapsulated: false,
    }),
    kind: 'blocked',
    threat: 'EICAR',
    reason: 'Infected',
  },
  {
    name: 'ICAP 403 + X-Infection-Found alone',
    response: raw('ICAP/1.0 403 Forbidden', [INFECTION]),
    kind: 'blocked',
  },
  {
    name: 'ICAP 403 + an encapsulated 403 page (REQMOD), no vendor header',
    response: raw('ICAP/1.0 403 Forbidden', [], PAGE_403),
    kind: 'blocked',
    reason: 'Forbidden',
  },
  {
    name: 'ICAP 500 with an encapsulated HTTP 500 page is an error',
    response: raw('ICAP/1.0 500 Server Error', [], {
      ...PAGE_403,
      start: 'HTTP/1.1 500 Internal Server Error',
    }),
    kind: 'error',
  },
  {
    name: 'ICAP 500 + X-Blocked-Reason blocks',
    response: raw('ICAP/1.0 500 Server Error', ['X-Blocked-Reason: Infected']),
    kind: 'blocked',
  },
  {
    name: 'ICAP 500 + X-Error-Code: file_type_blocked blocks (a policy refusal)',
    response: raw('ICAP/1.0 500 Server Error', ['X-Error-Code: file_type_blocked']),
    kind: 'blocked',
    reason: 'file_type_blocked',
  },
  {
    name: 'ICAP 500 + X-Error-Code: password_protected is an error (unscannable)',
    response: raw('ICAP/1.0 500 Server Error', ['X-Error-Code: password_protected']),
    kind: 'error',
  },
  {
    name: 'ICAP 204 + X-Infection-Found (a monitoring mode) blocks',
    response: raw('ICAP/1.0 204 No Content', [INFECTION, 'X-Virus-ID: EICAR'], undefined, {
      encapsulated: false,
    }),
    kind: 'blocked',
    threat: 'EICAR',
  },
  {
    name: 'ICAP 204 + an encapsulated 403 head (null-body) blocks',
    response: raw('ICAP/1.0 204 No Content', [], {
      start: 'HTTP/1.1 403 Forbidden',
      headers: ['Content-Length: 0'],
    }),
    kind: 'blocked',
  },
  {
    name: 'ICAP 200 without Encapsulated + X-Infection-Found blocks',
    response: raw('ICAP/1.0 200 OK', [INFECTION], undefined, { encapsulated: false }),
    kind: 'blocked',
  },
  {
    name: 'ICAP 200 without Encapsulated and nothing said is an error',
    response: raw('ICAP/1.0 200 OK', [], undefined, { encapsulated: false }),
    kind: 'error',
  },
  // ------------------------------------------------------------ ambiguous combinations: a threat wins
  {
    name: 'X-Response-Info: Allowed + X-Infection-Found: blocked',
    response: raw('ICAP/1.0 200 OK', ['X-Response-Info: Allowed', INFECTION], ECHO),
    kind: 'blocked',
  },
  {
    name: 'X-Response-Info: Allowed + X-Virus-ID naming a threat on a 204: blocked',
    response: raw('ICAP/1.0 204 No Content', ['X-Response-Info: Allowed', 'X-Virus-ID: Trojan.X']),
    kind: 'blocked',
    threat: 'Trojan.X',
  },
  {
    name: 'X-Virus-ID: no threats + X-Infection-Found: blocked',
    response: raw('ICAP/1.0 200 OK', ['X-Virus-ID: no threats', INFECTION], ECHO),
    kind: 'blocked',
  },
  {
    name: 'X-FSecure-Scan-Result: clean + X-Blocked-Reason: blocked',
    response: raw('ICAP/1.0 204 No Content', ['X-FSecure-Scan-Result: clean', 'X-Blocked-Reason: Policy']),
    kind: 'blocked',
    reason: 'Policy',
  },
  {
    name: 'a threat in a second field of the same name: X-Response-Info: passed, then blocked',
    response: raw('ICAP/1.0 204 No Content', ['X-Response-Info: passed', 'X-Response-Info: blocked']),
    kind: 'blocked',
  },
  {
    name: 'X-Virus-ID: no threats, then X-Virus-ID naming one',
    response: raw('ICAP/1.0 204 No Content', ['X-Virus-ID: no threats', 'X-Virus-ID: Trojan.Y']),
    kind: 'blocked',
    threat: 'Trojan.Y',
  },
  // ------------------------------------------------------------ repairs
  {
    name: 'repair: Resolution=1 on a returned request is a modification (nsx-defender: a block)',
    response: raw('ICAP/1.0 200 OK', ['X-Infection-Found: Type=0; Resolution=1; Threat=W97M;'], ECHO),
    kind: { 'nsx-defender': 'blocked', other: 'adapted' },
    threat: 'W97M',
  },
  {
    name: 'repair reported on a 204 (no returned message): blocked',
    response: raw('ICAP/1.0 204 No Content', ['X-Infection-Found: Type=0; Resolution=1; Threat=W97M;']),
    kind: 'blocked',
  },
  {
    name: 'repair with a block page: blocked',
    response: raw('ICAP/1.0 200 OK', ['X-Infection-Found: Type=0; Resolution=1; Threat=W97M;'], PAGE_403),
    kind: 'blocked',
  },
  {
    name: 'repair + X-Blocked-Reason: blocked',
    response: raw(
      'ICAP/1.0 200 OK',
      ['X-Infection-Found: Type=0; Resolution=1; Threat=W97M;', 'X-Blocked-Reason: Infected'],
      ECHO,
    ),
    kind: 'blocked',
  },
  {
    name: 'one repaired, one not: blocked',
    response: raw(
      'ICAP/1.0 200 OK',
      [
        'X-Infection-Found: Type=0; Resolution=1; Threat=A;',
        'X-Infection-Found: Type=0; Resolution=2; Threat=B;',
      ],
      ECHO,
    ),
    kind: 'blocked',
  },
  {
    name: 'Resolution missing: blocked',
    response: raw('ICAP/1.0 200 OK', ['X-Infection-Found: Type=0; Threat=W97M;'], ECHO),
    kind: 'blocked',
  },
  {
    name: 'repaired infection but a violation NOT_REPAIRED: blocked',
    response: raw(
      'ICAP/1.0 200 OK',
      [
        'X-Infection-Found: Type=0; Resolution=1; Threat=A;',
        'X-Violations-Found: 1',
        '\tf',
        '\tA',
        '\t0',
        '\t0',
      ],
      ECHO,
    ),
    kind: 'blocked',
  },
  {
    name: 'violations announced 2, one listed (repaired): blocked',
    response: raw(
      'ICAP/1.0 200 OK',
      [
        'X-Infection-Found: Type=0; Resolution=1; Threat=A;',
        'X-Violations-Found: 2',
        '\tf',
        '\tA',
        '\t0',
        '\t1',
      ],
      ECHO,
    ),
    kind: 'blocked',
  },
  {
    name: 'X-Virus-ID alone on an echo (no resolution): blocked',
    response: raw('ICAP/1.0 200 OK', ['X-Virus-ID: Trojan.X'], ECHO),
    kind: 'blocked',
  },
  {
    name: 'repair on an error status (500): blocked',
    response: raw('ICAP/1.0 500 Server Error', ['X-Infection-Found: Type=0; Resolution=1; Threat=A;'], ECHO),
    kind: 'blocked',
  },
];

function expectedKind(row: Row, vendor: Vendor): Kind {
  if (typeof row.kind === 'string') return row.kind;
  return row.kind[vendor] ?? row.kind.other;
}

describe.each(VENDORS)('vendor table, read with vendor %s', (vendor) => {
  it.each(ROWS.map((r) => [r.name, r] as const))('%s', (_name, row) => {
    const v = readVerdict(vendor, inputOf(row.response, row.method ?? 'REQMOD'), OPTS);
    expect(v.kind).toBe(expectedKind(row, vendor));
    if (row.threat !== undefined) expect(v.threat_id).toBe(row.threat);
    if (row.reason !== undefined && typeof row.kind === 'string') expect(v.reason).toBe(row.reason);
  });
});

describe('vendor specifics', () => {
  it('Symantec 539 is unscannable for the symantec profile only', () => {
    const r = inputOf(raw('ICAP/1.0 539 Aborted - No AV scanning license', []));
    expect(readVerdict('symantec', r, OPTS)).toMatchObject({ kind: 'error', unscannable: true });
    expect(readVerdict('generic', r, OPTS)).toMatchObject({ kind: 'error', unscannable: false });
  });

  it("ESET's 405 Forbidden block says Forbidden", () => {
    const v = readVerdict('eset', inputOf(raw('ICAP/1.0 405 Forbidden', [])), OPTS);
    expect(v).toMatchObject({ kind: 'blocked', reason: 'Forbidden' });
  });

  it('every vendor has its own log name; the reference names stay', () => {
    const names = VENDORS.map((v) => vendorEnum(v));
    expect(new Set(names).size).toBe(VENDORS.length);
    expect(vendorEnum('generic')).toBe('ICAP_VENDOR_GENERIC');
    expect(vendorEnum('opswat')).toBe('ICAP_VENDOR_OPSWAT');
    expect(vendorEnum('nsx-defender')).toBe('ICAP_VENDOR_LASTLINE');
    expect(vendorEnum('c-icap')).toBe('ICAP_VENDOR_CICAP');
    expect(vendorEnum('toString')).toBe('ICAP_VENDOR_GENERIC');
  });

  it('a reading that fails still blocks when a threat header is present', () => {
    for (const vendor of VENDORS) {
      const input = bareInput(500, [['X-Virus-ID', 'EICAR']]);
      const broken = input.headers as Headers & { linesAll: unknown };
      broken.linesAll = () => {
        throw new Error('boom');
      };
      const v = readVerdict(vendor, input, OPTS);
      expect(v.kind).toBe('blocked');
      expect(v.reason).toMatch(/unreadable ICAP verdict: boom/);
      const clean = bareInput(204, [['X-Virus-ID', 'no threats']]);
      (clean.headers as Headers & { linesAll: unknown }).linesAll = () => {
        throw new Error('boom');
      };
      expect(readVerdict(vendor, clean, OPTS).kind).toBe('error');
    }
  });
});

describe('property: a threat signal blocks on any status, next to any clean marker, for every vendor', () => {
  /** Signals that name a threat and can never read as a repair. */
  const THREATS: Array<[string, string]> = [
    ['X-Infection-Found', 'Type=0; Resolution=2; Threat=EICAR;'],
    ['X-Infection-Found', 'Type=1; Resolution=0; Threat=Policy;'],
    ['X-Infection-Found', 'Type=2; Threat=Encrypted;'],
    ['X-Virus-ID', 'Trojan.X'],
    ['X-Virus-Name', 'Trojan.X'],
    ['X-Blocked-Reason', 'Infected'],
    ['X-Block-Reason', 'Virus found'],
    ['X-Response-Info', 'BLOCKED'],
    ['X-FSecure-Scan-Result', 'infected'],
    ['X-Error-Code', 'file_extension_blocked'],
    // campaign-ap AP1/AP3: after a clean `X-Violations-Found: 0` (a marker below), a second
    // field counting one; F-Secure's infection name alone; Sophos's X-Blocked in the ICAP head.
    ['X-Violations-Found', '1'],
    ['X-FSecure-Infection-Name', 'EICAR_Test_File'],
    ['X-FSecure-Infected-Filename', 'upload.bin'], // campaign-aq AQ4
    ['X-Blocked', 'Virus found during virus scan'],
  ];
  const CLEAN_MARKERS: Array<[string, string]> = [
    ['X-Violations-Found', '0'],
    ['X-Response-Info', 'Allowed'],
    ['X-Response-Info', 'passed'],
    ['X-Virus-ID', 'no threats'],
    ['X-FSecure-Scan-Result', 'clean'],
    ['X-Error-Code', 'password_protected'],
    ['X-Response-Desc', 'OK'],
  ];

  it('holds for random statuses, signals and markers', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 101, max: 599 }),
        fc.constantFrom(...VENDORS),
        fc.constantFrom(...THREATS),
        fc.subarray(CLEAN_MARKERS),
        fc.boolean(),
        fc.constantFrom('REQMOD' as const, 'RESPMOD' as const),
        (status, vendor, threat, markers, threatFirst, method) => {
          const headers = threatFirst ? [threat, ...markers] : [...markers, threat];
          const v = readVerdict(vendor, bareInput(status, headers, method), OPTS);
          expect(v.kind).toBe('blocked');
        },
      ),
      { numRuns: 2000 },
    );
  });

  it('without a threat signal, a clean marker never blocks and a non-2xx status is an error', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 101, max: 599 }).filter((s) => s !== 200 && s !== 201 && s !== 204),
        fc.constantFrom(...VENDORS),
        fc.subarray(CLEAN_MARKERS),
        (status, vendor, markers) => {
          const v = readVerdict(vendor, bareInput(status, markers), OPTS);
          // ESET's 405 is a block by its reason phrase only; bareInput has none.
          expect(v.kind).toBe('error');
        },
      ),
      { numRuns: 1000 },
    );
  });
});
