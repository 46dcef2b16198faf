import { describe, expect, it } from 'vitest';
import {
  DEFAULT_NSX_STATUS_URL,
  readVerdict,
  VENDORS,
  type VerdictInput,
  type VerdictOptions,
} from '../../../src/engine/verdict/index.js';
import { Headers } from '../../../src/protocol/headers.js';
import {
  INFECTION_NO_THREAT,
  INFECTION_ODD_THREAT,
  INFECTION_WITH_NAMED_REQUEST,
  INFECTION_WITH_TARGET_ONLY,
  VIOLATIONS_COUNT_3_EIGHT_LINES,
  VIOLATIONS_COUNT_3_TWO_LINES,
  VIOLATIONS_NON_NUMERIC,
  VIOLATIONS_ZERO_ECHO,
} from './fixtures.js';
import { bareInput, inputOf } from './parse.js';

const OPTS: VerdictOptions = { nsxStatusUrl: DEFAULT_NSX_STATUS_URL, forwardLastlineHeaders: true };
const generic = (input: VerdictInput) => readVerdict('generic', input, OPTS);

describe('malformed X-Violations-Found', () => {
  it('count 3 but only two lines: one partial violation, blocked', () => {
    const v = generic(inputOf(VIOLATIONS_COUNT_3_TWO_LINES));
    expect(v.kind).toBe('blocked');
    expect(v.violations).toEqual([
      { file_name: 'first.exe', threat_name: 'Trojan.Agent', resolution: 'ICAP_FILE_NOT_REPAIRED' },
    ]);
    expect(v.threat_id).toBe('Trojan.Agent');
    expect(v.reason).toBe('Infected');
  });

  it('count 3 but two complete violations: two; an unknown resolution code reads NOT_REPAIRED', () => {
    const v = generic(inputOf(VIOLATIONS_COUNT_3_EIGHT_LINES));
    expect(v.violations).toEqual([
      { file_name: 'a.exe', threat_name: 'Trojan.A', problem_id: '11', resolution: 'ICAP_FILE_REPAIRED' },
      { file_name: 'b.exe', threat_name: 'Trojan.B', problem_id: '12', resolution: 'ICAP_FILE_NOT_REPAIRED' },
    ]);
  });

  it('a non-numeric count: the lines that parse, still blocked', () => {
    const v = generic(inputOf(VIOLATIONS_NON_NUMERIC));
    expect(v.kind).toBe('blocked');
    expect(v.violations).toEqual([
      { file_name: 'c.exe', threat_name: 'Trojan.C', problem_id: '-1', resolution: 'ICAP_FILE_NOT_REPAIRED' },
    ]);
  });

  it('a non-numeric count on one line blocks (no false clean); count 0 does not', () => {
    expect(generic(bareInput(200, [['X-Violations-Found', 'several']])).kind).toBe('blocked');
    const zero = generic(inputOf(VIOLATIONS_ZERO_ECHO));
    expect(zero.kind).toBe('adapted');
    expect(zero.violations).toEqual([]);
  });

  it('a huge count with no lines does not loop or allocate', () => {
    const v = generic(bareInput(200, [['X-Violations-Found', '999999999']]));
    expect(v.kind).toBe('blocked');
    expect(v.violations).toEqual([]);
  });

  it('an unfolded X-Violations-Found with an X-Infection-Found falls back to one violation from the latter', () => {
    const v = generic(
      bareInput(200, [
        ['X-Violations-Found', '1'],
        ['X-Infection-Found', 'Type=0; Resolution=2; Threat=Eicar;'],
      ]),
    );
    expect(v.violations).toEqual([
      { file_name: '', threat_name: 'Eicar', resolution: 'ICAP_FILE_NOT_REPAIRED' },
    ]);
  });
});

describe('X-Infection-Found oddities', () => {
  it('no Threat=, spaces around "=": blocked, no threat id', () => {
    const v = generic(inputOf(INFECTION_NO_THREAT));
    expect(v.kind).toBe('blocked');
    expect(v.reason).toBe('Infected');
    expect(v.threat_id).toBeUndefined();
    expect(v.violations).toEqual([{ file_name: '', threat_name: '', resolution: 'ICAP_FILE_NOT_REPAIRED' }]);
  });

  it('no Threat= but an X-Virus-ID: the virus id is the threat', () => {
    const v = generic(
      bareInput(200, [
        ['X-Infection-Found', 'Type=0; Resolution=2'],
        ['X-Virus-ID', 'Eicar-Signature'],
      ]),
    );
    expect(v.threat_id).toBe('Eicar-Signature');
    expect(v.violations[0]?.threat_name).toBe('Eicar-Signature');
  });

  it('unbalanced parentheses and a non-ASCII threat name', () => {
    const v = generic(inputOf(INFECTION_ODD_THREAT));
    expect(v.kind).toBe('blocked');
    expect(v.threat_id).toBe('Virüs(Foo');
  });

  it('threat and keys in odd case and spacing, no trailing ";"', () => {
    const v = generic(bareInput(200, [['x-infection-found', 'TYPE=2 ;resolution= 1; threat =  Mal ware  ']]));
    expect(v.threat_id).toBe('Mal ware');
    expect(v.unscannable).toBe(true);
    expect(v.violations).toEqual([
      { file_name: '', threat_name: 'Mal ware', resolution: 'ICAP_FILE_REPAIRED' },
    ]);
  });

  it('file name of a built violation: Content-Disposition (RFC 8187) first, then the target', () => {
    // Resolution=1 on a returned request: a repair, the returned request is the disinfected one.
    const named = generic(inputOf(INFECTION_WITH_NAMED_REQUEST));
    expect(named.kind).toBe('adapted');
    expect(named.violations).toEqual([
      { file_name: 'résumé.pdf', threat_name: 'W97M.Downloader', resolution: 'ICAP_FILE_REPAIRED' },
    ]);
    const target = generic(inputOf(INFECTION_WITH_TARGET_ONLY));
    expect(target.kind).toBe('blocked');
    expect(target.violations).toEqual([
      { file_name: 'report v2.docx', threat_name: 'W97M.Downloader', resolution: 'ICAP_FILE_NOT_REPAIRED' },
    ]);
  });

  it('X-Infection-Found on a 204 blocks (a threat wins over the status), with the threat in the log', () => {
    const v = generic(bareInput(204, [['X-Infection-Found', 'Type=0; Resolution=0; Threat=Eicar;']]));
    expect(v.kind).toBe('blocked');
    expect(v.threat_id).toBe('Eicar');
    expect(v.reason).toBe('Infected');
  });
});

describe('other signals', () => {
  it('X-Virus-ID empty or "no threats" (any case) is not a block; anything else is', () => {
    expect(generic(bareInput(200, [['X-Virus-ID', '']])).kind).toBe('error');
    expect(generic(bareInput(200, [['X-Virus-ID', 'No Threats']])).kind).toBe('clean');
    expect(generic(bareInput(200, [['X-Virus-ID', 'Trojan.X']]))).toMatchObject({
      kind: 'blocked',
      reason: 'Infected',
      threat_id: 'Trojan.X',
    });
  });

  it('X-Response-Info is case-insensitive; X-Blocked-Reason alone blocks', () => {
    expect(generic(bareInput(200, [['X-Response-Info', ' BLOCKED ']])).kind).toBe('blocked');
    // The word with more text about it blocks too, on a 204 as on a 200 (campaign-al AL4): the
    // rule the connection's reuse already went by.
    for (const status of [200, 204])
      expect(generic(bareInput(status, [['X-Response-Info', 'Blocked (virus found)']])).kind).toBe('blocked');
    for (const value of [
      'BLOCKED_BY_POLICY',
      'Blocked_Infected',
      'not blocked',
      'BlockedByPolicy',
      'Infected',
    ])
      expect(generic(bareInput(204, [['X-Response-Info', value]])).kind).toBe('blocked');
    expect(generic(bareInput(204, [['X-Response-Info', 'Unblocked-list']])).kind).not.toBe('blocked');
    expect(generic(bareInput(201, [['X-Blocked-Reason', 'Policy']]))).toMatchObject({
      kind: 'blocked',
      reason: 'Policy',
    });
  });

  it('X-Response-Desc wins over X-Response-Description', () => {
    const v = generic(
      bareInput(200, [
        ['X-Response-Info', 'Blocked'],
        ['X-Response-Description', 'Gelöscht'],
        ['X-Response-Desc', 'Deleted'],
      ]),
    );
    expect(v.reason).toBe('Deleted');
  });

  it('X-Error-Code: the unscannable codes only, case-insensitive; the status decides the kind', () => {
    for (const code of ['decode_error', 'MAX_ARCHIVE_LAYERS_EXCEEDED', 'password_protected']) {
      expect(generic(bareInput(500, [['X-Error-Code', code]]))).toMatchObject({
        kind: 'error',
        unscannable: true,
      });
    }
    expect(generic(bareInput(500, [['X-Error-Code', 'file_type_blocked']])).unscannable).toBe(false);
  });

  it('an X-Virus-ID or X-Infection-Found in a modified request blocks', () => {
    const input = bareInput(200);
    input.httpRequest = {
      startLine: 'POST /up HTTP/1.1',
      method: 'POST',
      target: '/up',
      version: 'HTTP/1.1',
      raw: Buffer.alloc(0),
      headers: new Headers([['X-Infection-Found', 'Type=0; Resolution=2; Threat=Eicar;']]),
    };
    expect(generic(input)).toMatchObject({ kind: 'blocked', threat_id: 'Eicar', reason: 'Infected' });
  });

  it('a RESPMOD echo of a 2xx response with no signal is adapted; REQMOD satisfaction with 200 is blocked', () => {
    const input = bareInput(200, [], 'RESPMOD');
    input.httpResponse = {
      startLine: 'HTTP/1.1 200 OK',
      status: 200,
      reason: 'OK',
      version: 'HTTP/1.1',
      raw: Buffer.alloc(0),
      headers: new Headers(),
    };
    expect(generic(input).kind).toBe('adapted');
    expect(generic({ ...input, method: 'REQMOD' })).toMatchObject({ kind: 'blocked', reason: 'OK' });
  });
});

describe('never throws', () => {
  it('empty headers', () => {
    for (const vendor of VENDORS) {
      expect(readVerdict(vendor, bareInput(204), OPTS).kind).toBe('clean');
      expect(readVerdict(vendor, bareInput(200), OPTS).kind).toBe('error');
      expect(readVerdict(vendor, bareInput(100), OPTS)).toMatchObject({
        kind: 'error',
        reason: 'ICAP 100 Continue',
      });
      expect(readVerdict(vendor, bareInput(302), OPTS)).toMatchObject({ kind: 'error', reason: 'ICAP 302' });
      expect(readVerdict(vendor, bareInput(Number.NaN), OPTS).kind).toBe('error');
    }
  });

  it('control characters in values are replaced; very long values are bounded', () => {
    const v = generic(
      bareInput(200, [
        ['X-Blocked-Reason', 'bad\u0000reason\u0007'],
        ['X-Virus-ID', 'T'.repeat(5000)],
      ]),
    );
    expect(v.reason).toBe('bad reason');
    expect(v.threat_id?.length).toBe(1024);
  });

  it('a header map that throws reads as an error verdict', () => {
    const broken = {
      get: () => {
        throw new Error('boom');
      },
      getAll: () => {
        throw new Error('boom');
      },
      has: () => false,
      linesAll: () => [],
    } as unknown as Headers;
    for (const vendor of VENDORS) {
      const v = readVerdict(
        vendor,
        { method: 'REQMOD', status: 200, headers: broken, httpRequest: null, httpResponse: null },
        OPTS,
      );
      expect(v.kind).toBe('error');
      expect(v.reason).toBe('ICAP 200 OK: unreadable ICAP verdict: boom');
      expect(v.client_headers).toEqual([]);
    }
  });

  it('a missing status URL template falls back to the default', () => {
    const v = readVerdict(
      'nsx-defender',
      bareInput(200, [
        ['X-Virus-ID', 'LastlineArtifact(score=100;md5=x;task_uuid=0123456789abcdef0123456789abcdef)'],
      ]),
      { forwardLastlineHeaders: false } as unknown as VerdictOptions,
    );
    expect(v.nsx_defender_log?.status_url).toBe(
      'https://user.lastline.com/portal#/analyst/task/0123456789abcdef0123456789abcdef/overview',
    );
  });
});
