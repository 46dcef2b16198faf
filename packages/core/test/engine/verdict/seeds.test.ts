import { describe, expect, it } from 'vitest';
import {
  DEFAULT_NSX_STATUS_URL,
  readVerdict,
  type VerdictOptions,
} from '../../../src/engine/verdict/index.js';
import {
  NO_RULE_HTTP,
  OPSWAT_BLOCKED,
  OPSWAT_NO_RULE,
  OPSWAT_PASSED,
  SEED_BLOCKED_HEADERS_PREFIX,
  SEED_NO_RULE_HEADERS,
  SEED_PASSED_HEADERS,
} from './fixtures.js';
import { inputOf, parseResponse } from './parse.js';

const OPTS: VerdictOptions = { nsxStatusUrl: DEFAULT_NSX_STATUS_URL, forwardLastlineHeaders: true };

describe('seed log examples (OPSWAT MetaDefender)', () => {
  it('blocked: ICAP 200 with an encapsulated 403, reason Infected, the EICAR threat id', () => {
    const { head } = parseResponse(OPSWAT_BLOCKED);
    expect(head.rawHeaders.startsWith(SEED_BLOCKED_HEADERS_PREFIX)).toBe(true);
    expect(head.httpResponse?.status).toBe(403);

    const v = readVerdict('opswat', inputOf(OPSWAT_BLOCKED), OPTS);
    expect(v.kind).toBe('blocked');
    expect(v.reason).toBe('Infected');
    expect(v.threat_id).toBe('EICAR-Test-File (not a virus)');
    expect(v.unscannable).toBe(false);
    const violation = {
      file_name: 'eicar.com',
      threat_name: 'EICAR-Test-File (not a virus)',
      problem_id: '0',
      resolution: 'ICAP_FILE_NOT_REPAIRED',
    };
    expect(v.violations).toEqual([violation]);
    expect(v.opswat_log).toEqual({
      reason: 'Infected',
      threat_id: 'EICAR-Test-File (not a virus)',
      violations: [violation],
    });
    expect(v.nsx_defender_log).toBeUndefined();
    expect(v.client_headers).toEqual([]);
  });

  it('blocked the same under the generic vendor, without opswat_log', () => {
    const v = readVerdict('generic', inputOf(OPSWAT_BLOCKED), OPTS);
    expect(v.kind).toBe('blocked');
    expect(v.reason).toBe('Infected');
    expect(v.threat_id).toBe('EICAR-Test-File (not a virus)');
    expect(v.opswat_log).toBeUndefined();
  });

  it('passed: 204 with X-Response-Info: Allowed is clean', () => {
    const { head } = parseResponse(OPSWAT_PASSED);
    expect(head.rawHeaders).toBe(SEED_PASSED_HEADERS);
    for (const vendor of ['opswat', 'generic', 'nsx-defender'] as const) {
      const v = readVerdict(vendor, inputOf(OPSWAT_PASSED), OPTS);
      expect(v.kind).toBe('clean');
      expect(v.reason).toBeUndefined();
      expect(v.threat_id).toBeUndefined();
      expect(v.violations).toEqual([]);
      expect(v.unscannable).toBe(false);
    }
    expect(readVerdict('opswat', inputOf(OPSWAT_PASSED), OPTS).opswat_log).toEqual({ violations: [] });
  });

  it('"No security rule matched": 200 with res-hdr=0, res-body=91 is blocked', () => {
    expect(Buffer.byteLength(NO_RULE_HTTP)).toBe(91);
    const { head } = parseResponse(OPSWAT_NO_RULE);
    expect(head.rawHeaders).toBe(SEED_NO_RULE_HEADERS);
    expect(head.encapsulated).toEqual([
      { name: 'res-hdr', offset: 0 },
      { name: 'res-body', offset: 91 },
    ]);

    const v = readVerdict('opswat', inputOf(OPSWAT_NO_RULE), OPTS);
    expect(v.kind).toBe('blocked');
    expect(v.reason).toBe('No security rule matched');
    expect(v.threat_id).toBeUndefined();
    expect(v.violations).toEqual([]);
    expect(v.opswat_log).toEqual({ reason: 'No security rule matched', violations: [] });
  });
});
