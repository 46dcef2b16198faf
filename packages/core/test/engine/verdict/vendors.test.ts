import { describe, expect, it } from 'vitest';
import {
  DEFAULT_NSX_STATUS_URL,
  readVerdict,
  type VerdictOptions,
} from '../../../src/engine/verdict/index.js';
import {
  ALLOWED_200_NO_MESSAGE,
  BARE_200_NO_MESSAGE,
  BARE_REDIRECT,
  CICAP_EICAR,
  ERROR_PASSWORD_PROTECTED,
  ESET_BLOCK,
  FSECURE_CLEAN,
  FSECURE_INFECTED,
  KASPERSKY_BLOCK,
  KASPERSKY_CLEAN_ECHO,
  MCAFEE_418,
  MCAFEE_VIRUSFOUND,
  OPSWAT_403,
  OPSWAT_ALLOWED_200,
  OPSWAT_ENCRYPTED,
  SOPHOS_BLOCK,
  SQUIDCLAMAV_REDIRECT,
  STATUS_202,
  STATUS_206,
  STATUS_503_NO_PHRASE,
  SYMANTEC_201_REQMOD,
  SYMANTEC_201_RESPMOD,
  SYMANTEC_539,
  SYMANTEC_MULTI,
} from './fixtures.js';
import { inputOf, parseResponse } from './parse.js';

const OPTS: VerdictOptions = { nsxStatusUrl: DEFAULT_NSX_STATUS_URL, forwardLastlineHeaders: true };
const generic = (raw: string, method: 'REQMOD' | 'RESPMOD' = 'REQMOD') =>
  readVerdict('generic', inputOf(raw, method), OPTS);

describe('c-icap virus_scan (ClamAV)', () => {
  it('EICAR: X-Infection-Found + folded X-Violations-Found + encapsulated 403 is blocked', () => {
    expect(parseResponse(CICAP_EICAR).head.headers.lines('x-violations-found')).toHaveLength(5);
    const v = generic(CICAP_EICAR);
    expect(v.kind).toBe('blocked');
    expect(v.reason).toBe('Infected');
    expect(v.threat_id).toBe('Eicar-Test-Signature.UNOFFICIAL');
    expect(v.violations).toEqual([
      {
        file_name: 'eicar_com.zip',
        threat_name: 'Eicar-Test-Signature.UNOFFICIAL',
        problem_id: '0',
        resolution: 'ICAP_FILE_NOT_REPAIRED',
      },
    ]);
    expect(v.unscannable).toBe(false);
  });

  it('the same in RESPMOD (the 403 page replaces the scanned response)', () => {
    expect(generic(CICAP_EICAR, 'RESPMOD').kind).toBe('blocked');
  });
});

describe('Symantec', () => {
  it('two policy violations (Type=1), 8 folded lines', () => {
    const v = generic(SYMANTEC_MULTI);
    expect(v.kind).toBe('blocked');
    expect(v.reason).toBe('Infected');
    expect(v.threat_id).toBe('File policy violation File Size Blocked');
    expect(v.violations).toEqual([
      {
        file_name: 'no.file',
        threat_name: 'File policy violation File Size Blocked',
        problem_id: '-1',
        resolution: 'ICAP_FILE_NOT_REPAIRED',
      },
      {
        file_name: 'payload/macro.docm',
        threat_name: 'File policy violation File Extension Blocked',
        problem_id: '-1',
        resolution: 'ICAP_VIOLATING_SECTION_REMOVED',
      },
    ]);
    expect(v.unscannable).toBe(false);
  });

  it('201 Created with res-hdr is blocked (RESPMOD with X-Infection-Found, REQMOD satisfaction alone)', () => {
    const resp = generic(SYMANTEC_201_RESPMOD, 'RESPMOD');
    expect(resp.kind).toBe('blocked');
    expect(resp.threat_id).toBe('EICAR Test String');
    const req = generic(SYMANTEC_201_REQMOD);
    expect(req.kind).toBe('blocked');
    expect(req.reason).toBe('Forbidden');
    expect(req.threat_id).toBeUndefined();
  });

  it('539 (no AV scanning license) is an error', () => {
    const v = generic(SYMANTEC_539);
    expect(v.kind).toBe('error');
    expect(v.reason).toBe('ICAP 539 Aborted - No AV scanning license');
    expect(v.unscannable).toBe(false);
  });
});

describe('Kaspersky', () => {
  it('clean: X-Virus-ID: no threats on a 200 echo is adapted (the engine compares bodies)', () => {
    const v = generic(KASPERSKY_CLEAN_ECHO);
    expect(v.kind).toBe('adapted');
    expect(v.reason).toBeUndefined();
    expect(v.threat_id).toBeUndefined();
    expect(v.violations).toEqual([]);
  });

  it('block: the comma list of threats is kept whole', () => {
    const v = generic(KASPERSKY_BLOCK);
    expect(v.kind).toBe('blocked');
    expect(v.reason).toBe('Infected');
    expect(v.threat_id).toBe('EICAR-Test-File,HEUR:Trojan.Script.Generic');
    expect(v.violations).toEqual([
      {
        file_name: '',
        threat_name: 'EICAR-Test-File,HEUR:Trojan.Script.Generic',
        resolution: 'ICAP_FILE_NOT_REPAIRED',
      },
    ]);
  });
});

describe('ESET', () => {
  it('UTF-8 X-Response-Description is the reason; Threat= wins over the localised X-Virus-ID', () => {
    const v = generic(ESET_BLOCK);
    expect(v.kind).toBe('blocked');
    expect(v.reason).toBe('Gelöscht');
    expect(v.threat_id).toBe('Eicar');
    expect(v.violations).toEqual([
      { file_name: '', threat_name: 'Eicar', resolution: 'ICAP_FILE_NOT_REPAIRED' },
    ]);
  });
});

describe('SquidClamav', () => {
  it('a 307 redirect satisfaction is blocked', () => {
    const v = generic(SQUIDCLAMAV_REDIRECT);
    expect(v.kind).toBe('blocked');
    expect(v.reason).toBe('Infected');
    expect(v.threat_id).toBe('Eicar-Test-Signature');
  });

  it('a redirect alone blocks too, in REQMOD and RESPMOD; the reason is its phrase', () => {
    const req = generic(BARE_REDIRECT);
    expect(req.kind).toBe('blocked');
    expect(req.reason).toBe('Temporary Redirect');
    expect(generic(BARE_REDIRECT, 'RESPMOD').kind).toBe('blocked');
  });
});

describe('McAfee Web Gateway', () => {
  it('403 VirusFound with no ICAP vendor header is blocked (REQMOD and RESPMOD)', () => {
    const v = generic(MCAFEE_VIRUSFOUND);
    expect(v.kind).toBe('blocked');
    expect(v.reason).toBe('VirusFound');
    expect(v.threat_id).toBeUndefined();
    expect(generic(MCAFEE_VIRUSFOUND, 'RESPMOD').kind).toBe('blocked');
  });

  it('418 Bad composition is an error', () => {
    const v = generic(MCAFEE_418);
    expect(v.kind).toBe('error');
    expect(v.reason).toBe('ICAP 418 Bad composition');
  });
});

describe('Sophos SAVDI', () => {
  it('X-Blocked in the encapsulated HTTP headers blocks a RESPMOD 200 OK page', () => {
    const v = generic(SOPHOS_BLOCK, 'RESPMOD');
    expect(v.kind).toBe('blocked');
    expect(v.reason).toBe('Virus found during virus scan');
  });
});

describe('F-Secure', () => {
  it('X-FSecure-Scan-Result: infected blocks an echo', () => {
    const v = generic(FSECURE_INFECTED, 'RESPMOD');
    expect(v.kind).toBe('blocked');
    expect(v.reason).toBe('Infected');
    expect(v.threat_id).toBe('EICAR_Test_File');
  });

  it('X-FSecure-Scan-Result: clean on an echo is adapted', () => {
    expect(generic(FSECURE_CLEAN, 'RESPMOD').kind).toBe('adapted');
  });
});

describe('OPSWAT specifics', () => {
  it('Type=2 Encrypted Archive: blocked and unscannable', () => {
    const v = readVerdict('opswat', inputOf(OPSWAT_ENCRYPTED), OPTS);
    expect(v.kind).toBe('blocked');
    expect(v.unscannable).toBe(true);
    expect(v.reason).toBe('Encrypted Archive');
    expect(v.threat_id).toBe('Encrypted Archive');
    expect(v.opswat_log).toEqual({
      reason: 'Encrypted Archive',
      threat_id: 'Encrypted Archive',
      violations: [{ file_name: '', threat_name: 'Encrypted Archive', resolution: 'ICAP_FILE_NOT_REPAIRED' }],
    });
    expect(generic(OPSWAT_ENCRYPTED).unscannable).toBe(true);
  });

  it('X-Response-Info: Allowed on a 200 carrying the request is adapted', () => {
    const v = readVerdict('opswat', inputOf(OPSWAT_ALLOWED_200), OPTS);
    expect(v.kind).toBe('adapted');
    expect(v.opswat_log).toEqual({ violations: [] });
  });

  it('ICAP 403 (FILEMOD) is an error, not a block', () => {
    const v = readVerdict('opswat', inputOf(OPSWAT_403), OPTS);
    expect(v.kind).toBe('error');
    expect(v.reason).toBe('ICAP 403 Forbidden');
  });
});

describe('errors and odd statuses', () => {
  it('500 with X-Error-Code: password_protected is an error and unscannable', () => {
    const v = generic(ERROR_PASSWORD_PROTECTED);
    expect(v.kind).toBe('error');
    expect(v.unscannable).toBe(true);
    expect(v.reason).toBe('ICAP 500 Internal Server Error');
  });

  it('206 (never offered), 202 and a 503 without a reason phrase are errors', () => {
    expect(generic(STATUS_206)).toMatchObject({ kind: 'error', reason: 'ICAP 206 Partial Content' });
    expect(generic(STATUS_202)).toMatchObject({ kind: 'error', reason: 'ICAP 202 Accepted' });
    expect(generic(STATUS_503_NO_PHRASE)).toMatchObject({
      kind: 'error',
      reason: 'ICAP 503 Service Overloaded',
    });
  });

  it('a 200 without an encapsulated message: clean on an explicit allow, else an error', () => {
    expect(generic(ALLOWED_200_NO_MESSAGE).kind).toBe('clean');
    const v = generic(BARE_200_NO_MESSAGE);
    expect(v.kind).toBe('error');
    expect(v.reason).toBe('ICAP 200 OK without an encapsulated HTTP message');
  });
});
