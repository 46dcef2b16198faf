import { describe, expect, it } from 'vitest';
import {
  compilePolicy,
  type PolicyRule,
  pathCandidates,
  type RequestFacts,
} from '../../src/engine/policy.js';
import { Headers } from '../../src/protocol/headers.js';

function facts(
  over: Partial<Omit<RequestFacts, 'headers'>> & { headers?: Record<string, string> } = {},
): RequestFacts {
  return {
    method: over.method ?? 'POST',
    target: over.target ?? '/upload',
    host: 'host' in over ? over.host : 'app.example.com',
    headers: new Headers(over.headers ?? {}),
    clientIp: 'clientIp' in over ? over.clientIp : '10.1.2.3',
    hasBody: over.hasBody ?? true,
  };
}

const decide = (rules: PolicyRule[] | undefined, f: RequestFacts) => compilePolicy(rules).evaluate(f);

describe('policy without rules', () => {
  it('scans every request with a body and nothing else', () => {
    expect(decide(undefined, facts())).toEqual({ scan: true, rule: undefined, reason: 'no-rules' });
    expect(decide([], facts({ hasBody: false }))).toEqual({
      scan: false,
      rule: undefined,
      reason: 'no-body',
    });
  });
});

describe('rule criteria', () => {
  const scanIf = (match: PolicyRule['match']): PolicyRule[] => [{ name: 'r', match, action: 'enable-icap' }];

  it('first match wins, disabled rules are skipped, no match does not scan', () => {
    const rules: PolicyRule[] = [
      { name: 'off', enabled: false, match: { path: '/upload' }, action: 'skip' },
      { name: 'scan', match: { path: '/upload' }, action: 'enable-icap' },
      { name: 'skip-all', action: 'skip' },
    ];
    expect(decide(rules, facts())).toEqual({ scan: true, rule: 'scan', reason: 'rule' });
    expect(decide(rules, facts({ target: '/other' }))).toEqual({
      scan: false,
      rule: 'skip-all',
      reason: 'rule',
    });
    expect(decide([{ name: 'x', match: { path: '/x' }, action: 'enable-icap' }], facts())).toEqual({
      scan: false,
      rule: undefined,
      reason: 'no-rule-matched',
    });
  });

  it('an enabling rule scans even a request without a body', () => {
    expect(
      decide([{ name: 'all', action: 'enable-icap' }], facts({ hasBody: false, method: 'GET' })).scan,
    ).toBe(true);
  });

  it('method (and method-override headers)', () => {
    const rules = scanIf({ method: ['post', 'PUT'] });
    expect(decide(rules, facts({ method: 'PUT' })).scan).toBe(true);
    expect(decide(rules, facts({ method: 'GET' })).scan).toBe(false);
    expect(decide(rules, facts({ method: 'GET', headers: { 'X-HTTP-Method-Override': 'POST' } })).scan).toBe(
      true,
    );
    expect(decide(rules, facts({ method: 'GET', headers: { 'x-method-override': 'put' } })).scan).toBe(true);
  });

  it('path: exact, prefix, suffix, contains, regex, case, negate', () => {
    expect(decide(scanIf({ path: { exact: ['/upload'] } }), facts({ target: '/upload?x=1' })).scan).toBe(
      true,
    );
    expect(decide(scanIf({ path: { exact: ['/upload'] } }), facts({ target: '/uploads' })).scan).toBe(false);
    expect(decide(scanIf({ path: { suffix: ['.pdf'] } }), facts({ target: '/a/B.PDF' })).scan).toBe(true);
    expect(
      decide(scanIf({ path: { suffix: ['.pdf'], caseSensitive: true } }), facts({ target: '/a/B.PDF' })).scan,
    ).toBe(false);
    expect(decide(scanIf({ path: { contains: ['/files/'] } }), facts({ target: '/api/files/1' })).scan).toBe(
      true,
    );
    expect(
      decide(scanIf({ path: { regex: ['^/v[0-9]+/upload$'] } }), facts({ target: '/V2/upload' })).scan,
    ).toBe(true);
    expect(
      decide(scanIf({ path: { prefix: ['/public'], negate: true } }), facts({ target: '/upload' })).scan,
    ).toBe(true);
    expect(
      decide(scanIf({ path: { prefix: ['/public'], negate: true } }), facts({ target: '/public/a' })).scan,
    ).toBe(false);
  });

  it('host, with ports and wildcards', () => {
    const rules = scanIf({ host: ['api.example.com', '*.uploads.test'] });
    expect(decide(rules, facts({ host: 'API.example.com:8443' })).scan).toBe(true);
    expect(decide(rules, facts({ host: 'eu.uploads.test' })).scan).toBe(true);
    expect(decide(rules, facts({ host: 'uploads.test' })).scan).toBe(false);
    expect(decide(rules, facts({ host: 'evil-uploads.test' })).scan).toBe(false);
    expect(decide(rules, facts({ host: undefined })).scan).toBe(false);
  });

  it('headers present, absent, value', () => {
    expect(
      decide(scanIf({ headers: [{ name: 'x-scan', present: true }] }), facts({ headers: { 'X-Scan': '' } }))
        .scan,
    ).toBe(true);
    expect(
      decide(
        scanIf({ headers: [{ name: 'x-trusted', present: false }] }),
        facts({ headers: { 'x-trusted': '1' } }),
      ).scan,
    ).toBe(false);
    expect(decide(scanIf({ headers: [{ name: 'x-trusted', present: false }] }), facts()).scan).toBe(true);
    expect(
      decide(
        scanIf({ headers: [{ name: 'x-tier', value: 'free' }] }),
        facts({ headers: { 'x-tier': 'FREE' } }),
      ).scan,
    ).toBe(true);
    expect(
      decide(
        scanIf({ headers: [{ name: 'x-tier', value: { prefix: ['pro'] } }] }),
        facts({ headers: { 'x-tier': 'free' } }),
      ).scan,
    ).toBe(false);
  });

  it('content type by media type, parameters and case ignored, wildcards', () => {
    const rules = scanIf({ contentType: ['multipart/form-data', 'image/*'] });
    expect(
      decide(rules, facts({ headers: { 'content-type': 'Multipart/Form-Data; boundary=x' } })).scan,
    ).toBe(true);
    expect(decide(rules, facts({ headers: { 'content-type': 'image/png' } })).scan).toBe(true);
    expect(decide(rules, facts({ headers: { 'content-type': 'application/json' } })).scan).toBe(false);
    expect(decide(rules, facts()).scan).toBe(false);
  });

  it('query parameters, repeated and encoded', () => {
    const rules = scanIf({ query: [{ name: 'mode', value: 'upload' }] });
    expect(decide(rules, facts({ target: '/x?a=1&mode=view&mode=upload' })).scan).toBe(true);
    expect(decide(rules, facts({ target: '/x?m%6Fde=%75pload' })).scan).toBe(true);
    expect(decide(rules, facts({ target: '/x?mode=view' })).scan).toBe(false);
    expect(
      decide(scanIf({ query: [{ name: 'raw', present: true }] }), facts({ target: '/x?raw' })).scan,
    ).toBe(true);
  });

  it('client IPs and CIDRs, v4, v6 and IPv4-mapped', () => {
    const rules = scanIf({ clientIp: ['10.0.0.0/8', '2001:db8::/32', '192.168.1.7'] });
    expect(decide(rules, facts({ clientIp: '10.200.1.1' })).scan).toBe(true);
    expect(decide(rules, facts({ clientIp: '::ffff:10.9.9.9' })).scan).toBe(true);
    expect(decide(rules, facts({ clientIp: '2001:db8:1::5' })).scan).toBe(true);
    expect(decide(rules, facts({ clientIp: '192.168.1.7' })).scan).toBe(true);
    expect(decide(rules, facts({ clientIp: '192.168.1.8' })).scan).toBe(false);
    expect(decide(rules, facts({ clientIp: undefined })).scan).toBe(false);
  });

  it('all criteria of a rule must hold', () => {
    const rules = scanIf({ method: ['POST'], path: '/upload', contentType: ['multipart/form-data'] });
    expect(
      decide(rules, facts({ headers: { 'content-type': 'multipart/form-data; boundary=a' } })).scan,
    ).toBe(true);
    expect(
      decide(rules, facts({ method: 'PUT', headers: { 'content-type': 'multipart/form-data' } })).scan,
    ).toBe(false);
  });
});

describe('bypass attempts', () => {
  const rules: PolicyRule[] = [
    { name: 'skip-public', match: { path: '/public' }, action: 'skip' },
    { name: 'scan-upload', match: { path: '/upload' }, action: 'enable-icap' },
  ];
  it.each([
    '/upload',
    '/UPLOAD',
    '/Upload/x',
    '/upl%6Fad',
    '/%75pload',
    '/%2575pload',
    '//upload',
    '/./upload',
    '/public/../upload',
    '/public/..%2Fupload',
    '/public/%2e%2e/upload',
    '/public/%2E%2E%2Fupload',
    '/public/..%5Cupload',
    '\\upload',
    '/upload;jsessionid=1',
    'http://app.example.com/upload?x=1',
    '/a/../upload',
  ])('%s is scanned', (target) => {
    expect(decide(rules, facts({ target }))).toEqual({ scan: true, rule: 'scan-upload', reason: 'rule' });
  });

  it('a real public path is still skipped', () => {
    expect(decide(rules, facts({ target: '/public/logo.png' }))).toEqual({
      scan: false,
      rule: 'skip-public',
      reason: 'rule',
    });
  });

  it('a method override cannot dodge a method rule', () => {
    const r: PolicyRule[] = [
      { name: 'skip-get', match: { method: ['GET'] }, action: 'skip' },
      { name: 'scan-post', match: { method: ['POST'] }, action: 'enable-icap' },
    ];
    expect(decide(r, facts({ method: 'GET', headers: { 'x-http-method-override': 'POST' } })).rule).toBe(
      'scan-post',
    );
  });

  it('pathCandidates covers decoded, resolved and collapsed readings', () => {
    const c = pathCandidates('/a//b/%2e%2e/c;x=1?q');
    expect(c).toContain('/a//b/%2e%2e/c;x=1');
    expect(c).toContain('/a/c');
    expect(c).toContain('/a/c;x=1');
  });
});

describe('validation at start-up', () => {
  it.each([
    [{}, 'rules', /must be an array/],
    [[{ match: {}, action: 'skip' }], 'rules[0].name', /is required/],
    [[{ name: 'a', action: 'block' }], 'rules[0].action', /must be 'enable-icap' or 'skip'/],
    [
      [
        { name: 'a', action: 'skip' },
        { name: 'a', action: 'skip' },
      ],
      'rules[1].name',
      /duplicates rule name/,
    ],
    [[{ name: 'a', action: 'skip', mtach: {} }], 'rules[0].mtach', /is not a known option/],
    [
      [{ name: 'a', action: 'skip', match: { pathh: '/x' } }],
      'rules[0].match.pathh',
      /is not a known option/,
    ],
    [
      [{ name: 'a', action: 'skip', match: { path: { regex: ['(unclosed'] } } }],
      'rules[0].match.path.regex[0]',
      /not a valid regular expression/,
    ],
    [
      [{ name: 'a', action: 'skip', match: { path: { regex: ['a'.repeat(1001)] } } }],
      'rules[0].match.path.regex[0]',
      /longer than 1000/,
    ],
    [[{ name: 'a', action: 'skip', match: { path: {} } }], 'rules[0].match.path', /needs at least one of/],
    [
      [{ name: 'a', action: 'skip', match: { clientIp: ['10.0.0.0/33'] } }],
      'rules[0].match.clientIp[0]',
      /invalid prefix length/,
    ],
    [
      [{ name: 'a', action: 'skip', match: { clientIp: ['not-an-ip'] } }],
      'rules[0].match.clientIp[0]',
      /not an IP address/,
    ],
    [
      [{ name: 'a', action: 'skip', match: { method: ['GE T'] } }],
      'rules[0].match.method[0]',
      /not an HTTP method/,
    ],
    [
      [{ name: 'a', action: 'skip', match: { contentType: ['json'] } }],
      'rules[0].match.contentType[0]',
      /not a media type/,
    ],
    [
      [{ name: 'a', action: 'skip', match: { headers: [{ present: true }] } }],
      'rules[0].match.headers[0].name',
      /is required/,
    ],
  ])('%j -> %s', (rules, field, message) => {
    try {
      compilePolicy(rules as unknown as PolicyRule[]);
      expect.unreachable();
    } catch (err) {
      expect(err).toMatchObject({ code: 'ICAP_ERR_INVALID_PROFILE', field });
      expect((err as Error).message).toMatch(message);
      expect((err as Error).message).toContain(field);
    }
  });
});
