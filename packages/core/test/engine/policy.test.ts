import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  backslashesToSlashes,
  collapseSlashes,
  percentDecode,
  removeDotSegments,
  removeParams,
} from '../../src/engine/policy/paths.js';
import {
  compilePolicy,
  type PolicyDecision,
  type PolicyRule,
  pathCandidates,
  pathReadings,
  type RequestFacts,
  type RuleMatch,
} from '../../src/engine/policy.js';
import { IcapError, IcapErrorCodes } from '../../src/errors.js';
import { Headers } from '../../src/protocol/headers.js';

type FactsInit = Partial<Omit<RequestFacts, 'headers'>> & {
  headers?: Record<string, string | string[]> | Array<[string, string]>;
};

function facts(over: FactsInit = {}): RequestFacts {
  const h = over.headers ?? {};
  return {
    method: over.method ?? 'POST',
    target: over.target ?? '/upload',
    host: 'host' in over ? over.host : 'app.example.com',
    headers: Array.isArray(h) ? new Headers(h) : new Headers(h),
    clientIp: 'clientIp' in over ? over.clientIp : '10.1.2.3',
    hasBody: over.hasBody ?? true,
  };
}

const decide = (rules: readonly PolicyRule[] | undefined, f: RequestFacts): PolicyDecision =>
  compilePolicy(rules).evaluate(f);

const scanned = (rule: string): PolicyDecision => ({ scan: true, rule, reason: 'rule' });
const skipped = (rule: string): PolicyDecision => ({ scan: false, rule, reason: 'rule' });
const NO_MATCH: PolicyDecision = { scan: false, rule: undefined, reason: 'no-rule-matched' };

/** One enabling rule named 'r' with the given match; anything else matches nothing. */
const only = (match: RuleMatch): PolicyRule[] => [{ name: 'r', match, action: 'enable-icap' }];
const onlyDecides = (match: RuleMatch, f: FactsInit) => decide(only(match), facts(f));

describe('no rules', () => {
  it('undefined rules scan a request with a body', () => {
    expect(decide(undefined, facts())).toEqual({ scan: true, rule: undefined, reason: 'no-rules' });
  });

  it('an empty list scans a request with a body', () => {
    expect(decide([], facts({ method: 'GET', target: '/anything' }))).toEqual({
      scan: true,
      rule: undefined,
      reason: 'no-rules',
    });
  });

  it('a request without a body is not scanned (no-body)', () => {
    expect(decide(undefined, facts({ hasBody: false }))).toEqual({
      scan: false,
      rule: undefined,
      reason: 'no-body',
    });
    expect(decide([], facts({ hasBody: false }))).toEqual({
      scan: false,
      rule: undefined,
      reason: 'no-body',
    });
  });

  it('exposes the rules it was given, as a frozen copy', () => {
    const rules: PolicyRule[] = [{ name: 'a', action: 'skip' }];
    const p = compilePolicy(rules);
    expect(p.rules).toEqual(rules);
    expect(p.rules).not.toBe(rules);
    expect(Object.isFrozen(p.rules)).toBe(true);
    expect(compilePolicy(undefined).rules).toEqual([]);
  });
});

describe('rule order and actions', () => {
  const rules: PolicyRule[] = [
    { name: 'off', enabled: false, match: { path: '/upload' }, action: 'skip' },
    { name: 'scan-upload', match: { path: '/upload' }, action: 'enable-icap' },
    { name: 'skip-upload-too', match: { path: '/upload' }, action: 'skip' },
    { name: 'skip-api', match: { path: '/api' }, action: 'skip' },
    { name: 'scan-api-too', match: { path: '/api' }, action: 'enable-icap' },
  ];

  it('the first matching enabled rule decides (enable before a later skip)', () => {
    expect(decide(rules, facts({ target: '/upload' }))).toEqual(scanned('scan-upload'));
  });

  it('the first matching rule decides (skip before a later enable)', () => {
    expect(decide(rules, facts({ target: '/api/x' }))).toEqual(skipped('skip-api'));
  });

  it('a disabled rule is ignored', () => {
    const withOff: PolicyRule[] = [
      { name: 'off', enabled: false, action: 'enable-icap' },
      { name: 'on', enabled: true, match: { path: '/x' }, action: 'enable-icap' },
    ];
    expect(decide(withOff, facts({ target: '/y' }))).toEqual(NO_MATCH);
    expect(decide(withOff, facts({ target: '/x' }))).toEqual(scanned('on'));
  });

  it('nothing matched: not scanned, reason no-rule-matched', () => {
    expect(decide(rules, facts({ target: '/other' }))).toEqual(NO_MATCH);
  });

  it('only disabled rules: nothing matches (not the no-rules default)', () => {
    expect(decide([{ name: 'off', enabled: false, action: 'enable-icap' }], facts())).toEqual(NO_MATCH);
  });

  it('a rule without match, or with an empty match, matches every request', () => {
    expect(decide([{ name: 'all', action: 'enable-icap' }], facts({ target: '/z', method: 'GET' }))).toEqual(
      scanned('all'),
    );
    expect(decide([{ name: 'all', match: {}, action: 'skip' }], facts())).toEqual(skipped('all'));
  });

  it("'enable-icap' scans even a request without a body", () => {
    expect(
      decide([{ name: 'all', action: 'enable-icap' }], facts({ hasBody: false, method: 'GET' })),
    ).toEqual(scanned('all'));
  });

  it("'skip' does not scan a request with a body", () => {
    expect(decide([{ name: 'none', action: 'skip' }], facts({ hasBody: true }))).toEqual(skipped('none'));
  });

  it('a compiled policy can be evaluated many times with the same answers', () => {
    const p = compilePolicy(rules);
    for (let i = 0; i < 3; i++) {
      expect(p.evaluate(facts({ target: '/upload' }))).toEqual(scanned('scan-upload'));
      expect(p.evaluate(facts({ target: '/api' }))).toEqual(skipped('skip-api'));
    }
  });
});

describe('method', () => {
  const match: RuleMatch = { method: ['post', 'PUT'] };

  it('matches case-insensitively, any of the list', () => {
    expect(onlyDecides(match, { method: 'POST' })).toEqual(scanned('r'));
    expect(onlyDecides(match, { method: 'put' })).toEqual(scanned('r'));
    expect(onlyDecides(match, { method: 'GET' })).toEqual(NO_MATCH);
    expect(onlyDecides(match, { method: 'PATCH' })).toEqual(NO_MATCH);
  });

  it.each(['X-HTTP-Method-Override', 'x-http-method', 'X-Method-Override'])(
    'a %s header naming a listed method matches',
    (header) => {
      expect(onlyDecides(match, { method: 'GET', headers: { [header]: 'put' } })).toEqual(scanned('r'));
    },
  );

  it('override headers with comma lists and several fields are all considered', () => {
    expect(
      onlyDecides(match, { method: 'GET', headers: { 'x-http-method-override': 'DELETE, POST' } }),
    ).toEqual(scanned('r'));
    expect(
      onlyDecides(match, {
        method: 'GET',
        headers: [
          ['X-HTTP-Method', 'HEAD'],
          ['X-HTTP-Method', 'PUT'],
        ],
      }),
    ).toEqual(scanned('r'));
  });

  it('an override naming an unlisted method does not match', () => {
    expect(onlyDecides(match, { method: 'GET', headers: { 'x-http-method-override': 'DELETE' } })).toEqual(
      NO_MATCH,
    );
  });

  it('other headers are not method overrides', () => {
    expect(onlyDecides(match, { method: 'GET', headers: { 'x-method': 'POST' } })).toEqual(NO_MATCH);
  });

  it('a _method query parameter (method-override query getter) is a method reading', () => {
    expect(onlyDecides(match, { method: 'GET', target: '/upload?_method=put' })).toEqual(scanned('r'));
    expect(onlyDecides(match, { method: 'GET', target: '/upload?%5Fmethod=%50UT' })).toEqual(scanned('r'));
    expect(onlyDecides(match, { method: 'GET', target: '/upload?_method=GET&_method=PUT' })).toEqual(
      scanned('r'),
    );
    expect(onlyDecides(match, { method: 'GET', target: '/upload?_method=DELETE' })).toEqual(NO_MATCH);
    expect(onlyDecides(match, { method: 'GET', target: '/upload?method=PUT&x_method=PUT' })).toEqual(
      NO_MATCH,
    );
  });

  it('a form body (which may carry a _method field) reads as every listed method', () => {
    const form = (ct: string) => ({ method: 'GET', headers: { 'content-type': ct } });
    expect(onlyDecides(match, form('application/x-www-form-urlencoded'))).toEqual(scanned('r'));
    expect(onlyDecides(match, form('multipart/form-data; boundary=b'))).toEqual(scanned('r'));
    expect(onlyDecides(match, form('application/octet-stream'))).toEqual(NO_MATCH);
    expect(onlyDecides(match, { ...form('application/x-www-form-urlencoded'), hasBody: false })).toEqual(
      NO_MATCH,
    );
  });
});

describe('path', () => {
  it('a plain string is a prefix', () => {
    expect(onlyDecides({ path: '/upload' }, { target: '/upload/a/b?x=1' })).toEqual(scanned('r'));
    expect(onlyDecides({ path: '/upload' }, { target: '/uploads' })).toEqual(scanned('r'));
    expect(onlyDecides({ path: '/upload' }, { target: '/api/upload' })).toEqual(NO_MATCH);
  });

  it('exact ignores the query and fragment', () => {
    expect(onlyDecides({ path: { exact: ['/upload'] } }, { target: '/upload?x=1#f' })).toEqual(scanned('r'));
    expect(onlyDecides({ path: { exact: ['/upload'] } }, { target: '/uploads' })).toEqual(NO_MATCH);
  });

  it('suffix', () => {
    expect(onlyDecides({ path: { suffix: ['.pdf', '.zip'] } }, { target: '/a/b.ZIP' })).toEqual(scanned('r'));
    expect(onlyDecides({ path: { suffix: ['.pdf'] } }, { target: '/a/b.pdf.txt' })).toEqual(NO_MATCH);
  });

  it('contains', () => {
    expect(onlyDecides({ path: { contains: ['/files/'] } }, { target: '/api/FILES/1' })).toEqual(
      scanned('r'),
    );
    expect(onlyDecides({ path: { contains: ['/files/'] } }, { target: '/api/files' })).toEqual(NO_MATCH);
  });

  it('regex, unanchored unless anchored, case-insensitive by default', () => {
    expect(onlyDecides({ path: { regex: ['^/v[0-9]+/upload$'] } }, { target: '/V2/Upload' })).toEqual(
      scanned('r'),
    );
    expect(onlyDecides({ path: { regex: ['^/v[0-9]+/upload$'] } }, { target: '/v2/upload/x' })).toEqual(
      NO_MATCH,
    );
    expect(onlyDecides({ path: { regex: ['upload'] } }, { target: '/x/upload/y' })).toEqual(scanned('r'));
  });

  it('caseSensitive applies to every list and to regexes', () => {
    const cs = (m: Omit<NonNullable<Exclude<RuleMatch['path'], string>>, 'caseSensitive'>) => ({
      path: { ...m, caseSensitive: true },
    });
    expect(onlyDecides(cs({ prefix: ['/Upload'] }), { target: '/Upload' })).toEqual(scanned('r'));
    expect(onlyDecides(cs({ prefix: ['/Upload'] }), { target: '/upload' })).toEqual(NO_MATCH);
    expect(onlyDecides(cs({ exact: ['/a'] }), { target: '/A' })).toEqual(NO_MATCH);
    expect(onlyDecides(cs({ suffix: ['.pdf'] }), { target: '/a/B.PDF' })).toEqual(NO_MATCH);
    expect(onlyDecides(cs({ contains: ['x'] }), { target: '/X' })).toEqual(NO_MATCH);
    expect(onlyDecides(cs({ regex: ['^/a$'] }), { target: '/A' })).toEqual(NO_MATCH);
    expect(onlyDecides(cs({ regex: ['^/a$'] }), { target: '/a' })).toEqual(scanned('r'));
  });

  // Campaign BJ2: case folding is one more reading beside the path as sent, not applied to
  // it: a case-insensitive skip rule skips only a path whose as-sent spelling matches too
  // (Fastify and Hono route /WEBHOOKS/x elsewhere than /webhooks/x); an enable-icap rule
  // still matches every case.
  it.each([
    ['prefix', { prefix: ['/webhooks'] }, '/webhooks/a', '/WEBHOOKS/a'],
    ['exact', { exact: ['/health'] }, '/health', '/Health'],
    ['suffix', { suffix: ['.png'] }, '/a/b.png', '/a/b.PNG'],
    ['contains', { contains: ['/public/'] }, '/x/public/y', '/x/Public/y'],
    ['regex', { regex: ['^/webhooks/'] }, '/webhooks/a', '/WebHooks/a'],
    ['string', '/webhooks', '/webhooks/a', '/wEbhooks/a'],
    ['an entry in upper case', { prefix: ['/Webhooks'] }, '/Webhooks/a', '/webhooks/a'],
  ] as const)('a case-insensitive %s skip skips only the spelling as written', (_n, path, same, other) => {
    const rules: PolicyRule[] = [
      { name: 'skip', match: { path: path as RuleMatch['path'] }, action: 'skip' },
      { name: 'scan-rest', action: 'enable-icap' },
    ];
    expect(decide(rules, facts({ target: same }))).toEqual(skipped('skip'));
    expect(decide(rules, facts({ target: other }))).toEqual(scanned('scan-rest'));
    // Scanning side: an enable-icap rule of the same match scans either spelling.
    const scan: PolicyRule[] = [
      { name: 'scan', match: { path: path as RuleMatch['path'] }, action: 'enable-icap' },
      { name: 'skip-rest', action: 'skip' },
    ];
    expect(decide(scan, facts({ target: same }))).toEqual(scanned('scan'));
    expect(decide(scan, facts({ target: other }))).toEqual(scanned('scan'));
  });

  it('a negated case-insensitive enable-icap rule scans a spelling whose case differs from its entry', () => {
    // "Scan everything outside /public": /PUBLIC/x is outside /public to a case-sensitive router.
    const rules: PolicyRule[] = [
      {
        name: 'scan-outside-public',
        match: { path: { prefix: ['/public'], negate: true } },
        action: 'enable-icap',
      },
      { name: 'skip-public', action: 'skip' },
    ];
    expect(decide(rules, facts({ target: '/public/a' }))).toEqual(skipped('skip-public'));
    expect(decide(rules, facts({ target: '/upload' }))).toEqual(scanned('scan-outside-public'));
    expect(decide(rules, facts({ target: '/PUBLIC/a' }))).toEqual(scanned('scan-outside-public'));
  });

  // Campaign BM2: a skip rule's path prefix matches whole segments (routers send /webhooksx/a,
  // /webhooks-evil/a and /webhooks;x/a elsewhere than /webhooks/a); an enable rule's, and a
  // negated skip's inner test, any string prefix.
  it('a skip prefix matches whole path segments; an enable prefix any string prefix (campaign-bm BM2)', () => {
    const rules: PolicyRule[] = [
      { name: 'skip', match: { path: { prefix: ['/webhooks'] } }, action: 'skip' },
      { name: 'scan-rest', action: 'enable-icap' },
    ];
    for (const t of ['/webhooks', '/webhooks/a', '/webhooks?x=1'])
      expect(decide(rules, facts({ target: t })), t).toEqual(skipped('skip'));
    for (const t of ['/webhooksx/a', '/webhooks-evil/a', '/webhooks;x/a', '/webhooks.json'])
      expect(decide(rules, facts({ target: t })), t).toEqual(scanned('scan-rest'));
    // A prefix written with its '/' matches below it only.
    const slash: PolicyRule[] = [
      { name: 'skip', match: { path: '/static/' }, action: 'skip' },
      { name: 'scan-rest', action: 'enable-icap' },
    ];
    expect(decide(slash, facts({ target: '/static/a.css' }))).toEqual(skipped('skip'));
    expect(decide(slash, facts({ target: '/staticx/a' }))).toEqual(scanned('scan-rest'));
    // Scanning side: any string prefix.
    expect(decide(only({ path: '/api' }), facts({ target: '/apix/upload' }))).toEqual(scanned('r'));
    // A negated skip ("skip everything outside /public"): /publicx is not skipped as outside.
    const outside: PolicyRule[] = [
      { name: 'skip-outside', match: { path: { prefix: ['/public'], negate: true } }, action: 'skip' },
      { name: 'scan-rest', action: 'enable-icap' },
    ];
    expect(decide(outside, facts({ target: '/other/a' }))).toEqual(skipped('skip-outside'));
    expect(decide(outside, facts({ target: '/publicx/a' }))).toEqual(scanned('scan-rest'));
  });

  /** Skip X-Source: github with ?type=webhook, scan the rest (campaign-bm BM3, campaign-bn). */
  const SKIP_GITHUB_WEBHOOK: PolicyRule[] = [
    {
      name: 'skip',
      match: {
        headers: [{ name: 'X-Source', value: 'github' }],
        query: [{ name: 'type', value: 'webhook' }],
      },
      action: 'skip',
    },
    { name: 'scan-rest', action: 'enable-icap' },
  ];
  const withSource = (source: string | string[], target: string) =>
    facts({ headers: { 'x-source': source }, target });

  // Campaign BM3: a skip rule's header or query value matches only when every value of the field
  // or parameter does, as sent; an enable rule's when any does, in any case.
  it('a skip rule needs every value of a header or parameter to match as sent; an enable rule any, in any case (campaign-bm BM3)', () => {
    const rules = SKIP_GITHUB_WEBHOOK;
    const f = withSource;
    expect(decide(rules, f('github', '/u?type=webhook'))).toEqual(skipped('skip'));
    expect(decide(rules, f('GitHub', '/u?type=webhook'))).toEqual(scanned('scan-rest'));
    expect(decide(rules, f('github', '/u?type=WEBHOOK'))).toEqual(scanned('scan-rest'));
    expect(decide(rules, f('github', '/u?type=webhook&type=upload'))).toEqual(scanned('scan-rest'));
    expect(decide(rules, f(['github', 'other'], '/u?type=webhook'))).toEqual(scanned('scan-rest'));
    const scan = only({ headers: [{ name: 'X-Source', value: 'github' }] });
    expect(decide(scan, f(['other', 'GitHub'], '/u'))).toEqual(scanned('r'));
    // A negated value in a skip rule ("skip when the source is not internal"): compared in any
    // case, every value.
    const notInternal: PolicyRule[] = [
      {
        name: 'skip',
        match: { headers: [{ name: 'X-Source', value: { exact: ['internal'], negate: true } }] },
        action: 'skip',
      },
      { name: 'scan-rest', action: 'enable-icap' },
    ];
    expect(decide(notInternal, f('partner', '/u'))).toEqual(skipped('skip'));
    expect(decide(notInternal, f('INTERNAL', '/u'))).toEqual(scanned('scan-rest'));
    expect(decide(notInternal, f(['partner', 'internal'], '/u'))).toEqual(scanned('scan-rest'));
  });

  it('a skip rule value: a field or parameter repeated, or written with brackets, is not skipped; a negated enable value scans an absent field (campaign-bn BN1, BN2, BN4)', () => {
    const rules = SKIP_GITHUB_WEBHOOK;
    const f = withSource;
    expect(decide(rules, f('github', '/u?type=webhook'))).toEqual(skipped('skip'));
    // Repeated identically: the application gets a list, which is not the value.
    expect(decide(rules, f(['github', 'github'], '/u?type=webhook'))).toEqual(scanned('scan-rest'));
    expect(decide(rules, f('github', '/u?type=webhook&type=webhook'))).toEqual(scanned('scan-rest'));
    // qs merges type[] and type[k] into type.
    for (const q of ['type[]=upload', 'type%5B%5D=upload', 'type[x]=upload'])
      expect(decide(rules, f('github', `/u?type=webhook&${q}`)), q).toEqual(scanned('scan-rest'));
    // "Scan unless the source is github": an absent X-Source is not github.
    const unlessGithub = only({
      headers: [{ name: 'X-Source', value: { exact: ['github'], negate: true } }],
    });
    expect(decide(unlessGithub, facts({ headers: {} }))).toEqual(scanned('r'));
    expect(decide(unlessGithub, f('gitlab', '/u'))).toEqual(scanned('r'));
    expect(decide(unlessGithub, f('github', '/u'))).toEqual(NO_MATCH);
  });

  it("a skip rule's query criterion holds only where query parsers read the query alike (campaign-bo BO1-BO5, campaign-bp BP1-BP3)", () => {
    const rules: PolicyRule[] = [
      { name: 'skip', match: { query: [{ name: 'type', value: 'webhook' }] }, action: 'skip' },
      { name: 'scan-rest', action: 'enable-icap' },
    ];
    expect(decide(rules, facts({ target: '/u?type=webhook' }))).toEqual(skipped('skip'));
    for (const target of [
      '/u?type[]=webhook',
      '/u?type[x]=webhook',
      '/u?type%5B%5D=webhook',
      '/u?type=webhook&[type]=upload',
      '/u?type=webhook&type.x=upload',
      '/upload#?type=webhook',
      '/u?type=webhook#',
      '/u?type=webhook#&type=upload',
      `/u?${'&'.repeat(999)}type=webhook`,
      `/u?${'a=1&'.repeat(1000)}type=webhook`,
      // campaign-bp: Koa's URLSearchParams drops a leading ?; qs splits a part at ]=.
      '/u??type=upload&type=webhook',
      '/u?type=webhook]=x',
      '/u?type=webhook%5D=x',
    ])
      expect(decide(rules, facts({ target })), target.slice(0, 40)).toEqual(scanned('scan-rest'));
    // Presence and absence skips alike.
    const debug: PolicyRule[] = [
      { name: 'skip-no-debug', match: { query: [{ name: 'debug', present: false }] }, action: 'skip' },
      { name: 'scan-rest', action: 'enable-icap' },
    ];
    expect(decide(debug, facts({ target: '/u?x=1' }))).toEqual(skipped('skip-no-debug'));
    expect(decide(debug, facts({ target: '/u?[debug]=1' }))).toEqual(scanned('scan-rest'));
    expect(decide(debug, facts({ target: '/u?debug.x=1' }))).toEqual(scanned('scan-rest'));
    // Enable rules read the query as before, and the other names a parser may read (BP1, BP3).
    for (const target of ['/u??type=upload', '/u?[type]=upload', '/u?%5Btype%5D=upload'])
      expect(decide(only({ query: [{ name: 'type', value: 'upload' }] }), facts({ target })), target).toEqual(
        scanned('r'),
      );
    expect(
      decide(only({ query: [{ name: 'type', value: 'upload' }] }), facts({ target: '/u?type[]=upload' })),
    ).toEqual(scanned('r'));
  });

  it("BQ2: a skip rule's query criterion does not hold for a value (or name) some escape of which does not decode", () => {
    const rules: PolicyRule[] = [
      { name: 'skip', match: { query: [{ name: 'type', value: { prefix: ['web'] } }] }, action: 'skip' },
      { name: 'scan-rest', action: 'enable-icap' },
    ];
    expect(decide(rules, facts({ target: '/u?type=w%65bhook' }))).toEqual(skipped('skip'));
    // qs (Express 4) and fast-querystring (Fastify) keep such a value as sent: w%65bhook% is no web... to them.
    for (const target of [
      '/u?type=w%65bhook%',
      '/u?type=w%65b%C0',
      '/u?type=%77eb%FF',
      '/u?type=webhook&type=%77eb%C0',
    ])
      expect(decide(rules, facts({ target })), target).toEqual(scanned('scan-rest'));
    // Control: another parameter's odd escape leaves the criterion alone; enable rules read it as before.
    expect(decide(rules, facts({ target: '/u?type=webhook&x=%C0%' }))).toEqual(skipped('skip'));
    expect(decide(rules, facts({ target: '/u?typ%65%=x&type=webhook' }))).toEqual(skipped('skip'));
    expect(
      decide(
        only({ query: [{ name: 'type', value: { prefix: ['web'] } }] }),
        facts({ target: '/u?type=web%' }),
      ),
    ).toEqual(scanned('r'));
  });

  it("BQ4: a skip rule's query criterion does not hold where qs reads a name by its leading [segment]: [type]x is type to it", () => {
    const exact: PolicyRule[] = [
      { name: 'skip', match: { query: [{ name: 'type', value: 'webhook' }] }, action: 'skip' },
      { name: 'scan-rest', action: 'enable-icap' },
    ];
    const absent: PolicyRule[] = [
      { name: 'skip', match: { query: [{ name: 'type', present: false }] }, action: 'skip' },
      { name: 'scan-rest', action: 'enable-icap' },
    ];
    for (const target of [
      '/u?[type]x=upload&type=webhook',
      '/u?%5Btype%5Dtype=upload&type=webhook',
      '/u?[type].x=1&type=webhook',
    ])
      expect(decide(exact, facts({ target })), target).toEqual(scanned('scan-rest'));
    for (const target of ['/u?[type]x=upload', '/u?%5Btype%5Dtype'])
      expect(decide(absent, facts({ target })), target).toEqual(scanned('scan-rest'));
    // Control: a name qs reads as another (`[ty]pe` is `ty`, `a[type]` is `a`) leaves type alone.
    expect(decide(exact, facts({ target: '/u?a[type]=1&type=webhook' }))).toEqual(skipped('skip'));
    expect(decide(absent, facts({ target: '/u?a[type]=1' }))).toEqual(skipped('skip'));
    // Enable rules read [type]x=upload as type=upload too.
    expect(
      decide(only({ query: [{ name: 'type', value: 'upload' }] }), facts({ target: '/u?[type]x=upload' })),
    ).toEqual(scanned('r'));
  });

  it('BQ5: HEAD reads as GET too (routers serve it by GET routes)', () => {
    const scanGet: PolicyRule[] = [{ name: 'scan-get', match: { method: ['GET'] }, action: 'enable-icap' }];
    expect(decide(scanGet, facts({ method: 'HEAD' }))).toEqual(scanned('scan-get'));
    const skipGet: PolicyRule[] = [
      { name: 'skip-get', match: { method: ['GET'] }, action: 'skip' },
      { name: 'scan-head', match: { method: ['HEAD'] }, action: 'enable-icap' },
    ];
    expect(decide(skipGet, facts({ method: 'HEAD' }))).toEqual(scanned('scan-head'));
    // Control: no other method reads as GET.
    expect(decide(scanGet, facts({ method: 'POST' }))).toEqual(NO_MATCH);
  });

  it("BQ6: a skip rule's query criterion does not hold for a target with a ';' before its query (find-my-way's useSemicolonDelimiter)", () => {
    const exact: PolicyRule[] = [
      { name: 'skip', match: { query: [{ name: 'type', value: 'webhook' }] }, action: 'skip' },
      { name: 'scan-rest', action: 'enable-icap' },
    ];
    const absent: PolicyRule[] = [
      { name: 'skip', match: { query: [{ name: 'type', present: false }] }, action: 'skip' },
      { name: 'scan-rest', action: 'enable-icap' },
    ];
    for (const target of [
      '/webhooks/x;type=upload?type=webhook',
      '/webhooks/x;?type=webhook',
      'http://h;x/y?type=webhook',
    ])
      expect(decide(exact, facts({ target })), target).toEqual(scanned('scan-rest'));
    expect(decide(absent, facts({ target: '/webhooks/x;type=upload' }))).toEqual(scanned('scan-rest'));
    // Control: a ';' in the query itself is a character of a value.
    expect(decide(exact, facts({ target: '/webhooks/x?a=1;b&type=webhook' }))).toEqual(skipped('skip'));
    expect(decide(absent, facts({ target: '/webhooks/x' }))).toEqual(skipped('skip'));
  });

  it("BQ7: a path is also read up to its first ';' (find-my-way's useSemicolonDelimiter routes it so)", () => {
    const skipPng: PolicyRule[] = [
      { name: 'skip-png', match: { path: { suffix: ['.png'] } }, action: 'skip' },
      { name: 'scan-everything', action: 'enable-icap' },
    ];
    expect(pathCandidates('/upload;x.png')).toContain('/upload');
    expect(decide(skipPng, facts({ target: '/upload;x.png' }))).toEqual(scanned('scan-everything'));
    expect(decide(skipPng, facts({ target: '/a;b/c.png' }))).toEqual(scanned('scan-everything'));
    // Control: a path without ';' is still skipped.
    expect(decide(skipPng, facts({ target: '/img/a.png' }))).toEqual(skipped('skip-png'));
  });

  it('lists are ORed', () => {
    const m: RuleMatch = { path: { exact: ['/a'], prefix: ['/b/'], suffix: ['.c'], regex: ['^/d'] } };
    for (const target of ['/a', '/b/1', '/x.c', '/dd'])
      expect(onlyDecides(m, { target })).toEqual(scanned('r'));
    expect(onlyDecides(m, { target: '/e' })).toEqual(NO_MATCH);
  });

  it('negate inverts the match', () => {
    const m: RuleMatch = { path: { prefix: ['/public'], negate: true } };
    expect(onlyDecides(m, { target: '/upload' })).toEqual(scanned('r'));
    expect(onlyDecides(m, { target: '/public/a' })).toEqual(NO_MATCH);
  });

  it("exact '*' matches the asterisk-form target", () => {
    expect(onlyDecides({ path: { exact: ['*'] } }, { target: '*', method: 'OPTIONS' })).toEqual(scanned('r'));
  });

  it('non-ASCII paths match their percent-encoded UTF-8 form', () => {
    expect(onlyDecides({ path: { exact: ['/été'] } }, { target: '/%C3%A9t%C3%A9' })).toEqual(scanned('r'));
  });
});

describe('host', () => {
  const m: RuleMatch = { host: ['api.example.com', '*.uploads.test', '[2001:db8::1]', '192.0.2.7'] };

  it.each([
    ['api.example.com', true],
    ['API.Example.COM', true],
    ['api.example.com:8443', true],
    ['api.example.com.', true],
    ['eu.uploads.test', true],
    ['a.b.uploads.test:444', true],
    ['EU.UPLOADS.TEST:80', true],
    ['[2001:db8::1]:8080', true],
    ['192.0.2.7:3000', true],
    ['uploads.test', false],
    ['evil-uploads.test', false],
    ['api.example.com.evil.test', false],
    ['xapi.example.com', false],
    ['example.com', false],
  ])('Host %s matches: %s', (host, matches) => {
    expect(onlyDecides(m, { host })).toEqual(matches ? scanned('r') : NO_MATCH);
  });

  it('no Host does not match', () => {
    expect(onlyDecides(m, { host: undefined })).toEqual(NO_MATCH);
  });

  it('the authority of an absolute-form target is a reading too', () => {
    expect(onlyDecides(m, { host: 'other.test', target: 'http://API.example.com:80/upload' })).toEqual(
      scanned('r'),
    );
    expect(onlyDecides(m, { host: undefined, target: 'https://x.uploads.test/' })).toEqual(scanned('r'));
    expect(onlyDecides(m, { host: 'other.test', target: 'http://other.test/upload' })).toEqual(NO_MATCH);
  });

  it('a host skip rule cannot hide a request whose absolute-form target names a scanned host', () => {
    const rules: PolicyRule[] = [
      { name: 'skip-static', match: { host: ['static.example.com'] }, action: 'skip' },
      { name: 'scan-rest', action: 'enable-icap' },
    ];
    expect(
      decide(rules, facts({ host: 'static.example.com', target: 'http://app.example.com/upload' })),
    ).toEqual(scanned('scan-rest'));
    expect(decide(rules, facts({ host: 'static.example.com' }))).toEqual(skipped('skip-static'));
  });

  // Campaign BJ3: find-my-way's host constraint compares Host as sent (case, port), Express's
  // req.hostname keeps a trailing dot: a skip applies only to the host written as the rule
  // names it; an enable-icap rule still matches every spelling (the table above).
  it.each(['STATIC.example.com', 'static.example.com.', 'static.example.com:443', 'static.example.com:8080'])(
    'a host skip rule does not skip Host %s, written otherwise than it names the host',
    (host) => {
      const rules: PolicyRule[] = [
        { name: 'skip-static', match: { host: ['static.example.com'] }, action: 'skip' },
        { name: 'scan-rest', action: 'enable-icap' },
      ];
      expect(decide(rules, facts({ host }))).toEqual(scanned('scan-rest'));
    },
  );

  it('a host skip rule: suffix and IPv6 spellings as sent', () => {
    const rules: PolicyRule[] = [
      { name: 'skip-static', match: { host: ['*.cdn.test', '[2001:db8::1]'] }, action: 'skip' },
      { name: 'scan-rest', action: 'enable-icap' },
    ];
    expect(decide(rules, facts({ host: 'eu.cdn.test' }))).toEqual(skipped('skip-static'));
    expect(decide(rules, facts({ host: '[2001:db8::1]' }))).toEqual(skipped('skip-static'));
    for (const host of [
      'eu.CDN.test',
      'eu.cdn.test:80',
      'eu.cdn.test.',
      '[2001:db8::1]:443',
      '[2001:DB8::1]',
    ])
      expect(decide(rules, facts({ host }))).toEqual(scanned('scan-rest'));
    // X-Forwarded-Host entries are read as sent too.
    expect(
      decide(rules, facts({ host: 'eu.cdn.test', headers: { 'x-forwarded-host': 'eu.CDN.test' } })),
    ).toEqual(scanned('scan-rest'));
  });
});

describe('headers', () => {
  it('present: true requires the field, any value', () => {
    const m: RuleMatch = { headers: [{ name: 'x-scan', present: true }] };
    expect(onlyDecides(m, { headers: { 'X-Scan': '' } })).toEqual(scanned('r'));
    expect(onlyDecides(m, {})).toEqual(NO_MATCH);
  });

  it('no present and no value also requires the field', () => {
    const m: RuleMatch = { headers: [{ name: 'X-Scan' }] };
    expect(onlyDecides(m, { headers: { 'x-scan': '1' } })).toEqual(scanned('r'));
    expect(onlyDecides(m, {})).toEqual(NO_MATCH);
  });

  it('present: false requires the field to be absent', () => {
    const m: RuleMatch = { headers: [{ name: 'x-trusted', present: false }] };
    expect(onlyDecides(m, { headers: { 'X-Trusted': '1' } })).toEqual(NO_MATCH);
    expect(onlyDecides(m, {})).toEqual(scanned('r'));
  });

  it('a string value is an exact, case-insensitive match', () => {
    const m: RuleMatch = { headers: [{ name: 'x-tier', value: 'free' }] };
    expect(onlyDecides(m, { headers: { 'x-tier': 'FREE' } })).toEqual(scanned('r'));
    expect(onlyDecides(m, { headers: { 'x-tier': 'freemium' } })).toEqual(NO_MATCH);
    expect(onlyDecides(m, {})).toEqual(NO_MATCH);
  });

  it('a StringMatch value, with caseSensitive and negate', () => {
    expect(
      onlyDecides(
        { headers: [{ name: 'x-tier', value: { prefix: ['pro'] } }] },
        { headers: { 'x-tier': 'Pro-1' } },
      ),
    ).toEqual(scanned('r'));
    expect(
      onlyDecides(
        { headers: [{ name: 'x-tier', value: { exact: ['pro'], caseSensitive: true } }] },
        { headers: { 'x-tier': 'PRO' } },
      ),
    ).toEqual(NO_MATCH);
    expect(
      onlyDecides(
        { headers: [{ name: 'x-tier', value: { exact: ['internal'], negate: true } }] },
        { headers: { 'x-tier': 'external' } },
      ),
    ).toEqual(scanned('r'));
    expect(
      onlyDecides(
        { headers: [{ name: 'x-tier', value: { regex: ['^t[0-9]$'] } }] },
        { headers: { 'x-tier': 'T7' } },
      ),
    ).toEqual(scanned('r'));
  });

  it('a repeated field matches when any of its values does', () => {
    const m: RuleMatch = { headers: [{ name: 'x-tag', value: 'upload' }] };
    expect(
      onlyDecides(m, {
        headers: [
          ['x-tag', 'a'],
          ['X-Tag', 'upload'],
        ],
      }),
    ).toEqual(scanned('r'));
  });

  it('all header criteria must hold', () => {
    const m: RuleMatch = {
      headers: [
        { name: 'x-a', present: true },
        { name: 'x-b', present: false },
      ],
    };
    expect(onlyDecides(m, { headers: { 'x-a': '1' } })).toEqual(scanned('r'));
    expect(onlyDecides(m, { headers: { 'x-a': '1', 'x-b': '1' } })).toEqual(NO_MATCH);
    expect(onlyDecides(m, {})).toEqual(NO_MATCH);
  });
});

describe('content type', () => {
  const m: RuleMatch = { contentType: ['Multipart/Form-Data', 'image/*'] };

  it.each([
    ['multipart/form-data; boundary=----x', true],
    ['MULTIPART/FORM-DATA;boundary="a;b"', true],
    ['  multipart/form-data  ', true],
    ['image/png', true],
    ['Image/SVG+XML; charset=utf-8', true],
    ['application/json', false],
    // formidable reads any value mentioning multipart as a form: multipart/form-data to the rules too.
    ['multipart/mixed; boundary=x', true],
    ['text/plain; x=multipart/form-data', true],
    ['text/plain; x=mixed', false],
    ['image', false],
  ])('%s matches: %s', (ct, matches) => {
    expect(onlyDecides(m, { headers: { 'Content-Type': ct } })).toEqual(matches ? scanned('r') : NO_MATCH);
  });

  it('no Content-Type does not match', () => {
    expect(onlyDecides(m, {})).toEqual(NO_MATCH);
  });

  it('*/* matches any present content type', () => {
    expect(onlyDecides({ contentType: ['*/*'] }, { headers: { 'content-type': 'x/y' } })).toEqual(
      scanned('r'),
    );
    expect(onlyDecides({ contentType: ['*/*'] }, {})).toEqual(NO_MATCH);
  });

  it('a second Content-Type field cannot steer the request into a skip rule', () => {
    const rules: PolicyRule[] = [
      { name: 'skip-json', match: { contentType: ['application/json'] }, action: 'skip' },
      { name: 'scan-forms', match: { contentType: ['multipart/form-data'] }, action: 'enable-icap' },
    ];
    const twoTypes: Array<[string, string]> = [
      ['Content-Type', 'application/json'],
      ['Content-Type', 'multipart/form-data; boundary=x'],
    ];
    expect(decide(rules, facts({ headers: twoTypes }))).toEqual(scanned('scan-forms'));
    expect(decide(rules, facts({ headers: { 'content-type': 'application/json' } }))).toEqual(
      skipped('skip-json'),
    );
  });

  it('an unlisted type in a rule with other types does not match a wildcard of another rule', () => {
    const rules: PolicyRule[] = [
      { name: 'png', match: { contentType: ['image/png'] }, action: 'skip' },
      { name: 'images', match: { contentType: ['image/*'] }, action: 'enable-icap' },
    ];
    expect(decide(rules, facts({ headers: { 'content-type': 'image/png' } }))).toEqual(skipped('png'));
    expect(decide(rules, facts({ headers: { 'content-type': 'image/gif' } }))).toEqual(scanned('images'));
  });
});

describe('query', () => {
  it('a string value is an exact match against any repeated value', () => {
    const m: RuleMatch = { query: [{ name: 'mode', value: 'upload' }] };
    expect(onlyDecides(m, { target: '/x?a=1&mode=view&mode=upload' })).toEqual(scanned('r'));
    expect(onlyDecides(m, { target: '/x?mode=view&mode=edit' })).toEqual(NO_MATCH);
    expect(onlyDecides(m, { target: '/x' })).toEqual(NO_MATCH);
  });

  it('names and values are percent-decoded, + is a space', () => {
    expect(
      onlyDecides({ query: [{ name: 'mode', value: 'upload' }] }, { target: '/x?m%6Fde=%75pload' }),
    ).toEqual(scanned('r'));
    expect(
      onlyDecides({ query: [{ name: 'file name', value: 'a b' }] }, { target: '/x?file+name=a%20b' }),
    ).toEqual(scanned('r'));
    expect(onlyDecides({ query: [{ name: 'q', value: 'a&b' }] }, { target: '/x?q=a%26b' })).toEqual(
      scanned('r'),
    );
  });

  it('values match case-insensitively by default; names are exact', () => {
    expect(onlyDecides({ query: [{ name: 'mode', value: 'upload' }] }, { target: '/x?mode=UPLOAD' })).toEqual(
      scanned('r'),
    );
    expect(onlyDecides({ query: [{ name: 'mode', value: 'upload' }] }, { target: '/x?MODE=upload' })).toEqual(
      NO_MATCH,
    );
  });

  it('present with and without a value, and absent', () => {
    expect(onlyDecides({ query: [{ name: 'raw', present: true }] }, { target: '/x?raw' })).toEqual(
      scanned('r'),
    );
    expect(onlyDecides({ query: [{ name: 'raw', present: true }] }, { target: '/x?raw=' })).toEqual(
      scanned('r'),
    );
    expect(onlyDecides({ query: [{ name: 'raw', present: true }] }, { target: '/x?rawer=1' })).toEqual(
      NO_MATCH,
    );
    expect(onlyDecides({ query: [{ name: 'raw', present: false }] }, { target: '/x?raw=1' })).toEqual(
      NO_MATCH,
    );
    expect(onlyDecides({ query: [{ name: 'raw', present: false }] }, { target: '/x?a=1' })).toEqual(
      scanned('r'),
    );
  });

  it('the fragment is not part of the query', () => {
    expect(onlyDecides({ query: [{ name: 'a', value: '1' }] }, { target: '/x?a=1#b=2' })).toEqual(
      scanned('r'),
    );
    expect(onlyDecides({ query: [{ name: 'b', present: true }] }, { target: '/x?a=1#b=2' })).toEqual(
      NO_MATCH,
    );
  });

  it("every reading a router makes of the query: after a '#', or after a ';' (campaign-br BR1)", () => {
    // find-my-way (Fastify, Nest on Fastify) reads the query from the first '?' or '#' to the end,
    // and with useSemicolonDelimiter from a ';' before them: an enable rule matches in any reading.
    const upload: RuleMatch = { query: [{ name: 'type', value: 'upload' }] };
    for (const target of [
      '/store#type=upload',
      '/store?x#&type=upload',
      '/store;type=upload',
      '/s;a?x#&type=upload',
    ])
      expect(onlyDecides(upload, { target }), target).toEqual(scanned('r'));
    for (const target of ['/store?x=1#type=upload', '/store?type=webhook;type=upload'])
      expect(onlyDecides(upload, { target }), target).toEqual(NO_MATCH);
    expect(
      onlyDecides({ query: [{ name: 'type', present: false }] }, { target: '/store;type=upload' }),
    ).toEqual(scanned('r'));
    // A skip rule holds only when every reading agrees.
    const skipWebhook: PolicyRule[] = [
      { name: 'skip', match: { query: [{ name: 'type', value: 'webhook' }] }, action: 'skip' },
      { name: 'scan-rest', action: 'enable-icap' },
    ];
    for (const target of ['/store;type=upload?type=webhook', '/store;x?type=webhook'])
      expect(decide(skipWebhook, facts({ target })), target).toEqual(scanned('scan-rest'));
    for (const target of [
      '/store?type=webhook',
      '/store?type=webhook&sig=a;b',
      '/store?sig=a;b&type=webhook',
    ])
      expect(decide(skipWebhook, facts({ target })), target).toEqual(skipped('skip'));
    const skipNoDebug: PolicyRule[] = [
      { name: 'skip', match: { query: [{ name: 'debug', present: false }] }, action: 'skip' },
      { name: 'scan-rest', action: 'enable-icap' },
    ];
    expect(decide(skipNoDebug, facts({ target: '/u;debug=1' }))).toEqual(scanned('scan-rest'));
    expect(decide(skipNoDebug, facts({ target: '/u;[debug]=1?x=1' }))).toEqual(scanned('scan-rest'));
    expect(decide(skipNoDebug, facts({ target: '/u?x=1' }))).toEqual(skipped('skip'));
  });

  it('StringMatch values and absolute-form targets', () => {
    expect(
      onlyDecides({ query: [{ name: 'f', value: { suffix: ['.exe'] } }] }, { target: 'http://h/x?f=a.EXE' }),
    ).toEqual(scanned('r'));
  });

  it('all query criteria must hold', () => {
    const m: RuleMatch = {
      query: [
        { name: 'a', value: '1' },
        { name: 'b', present: true },
      ],
    };
    expect(onlyDecides(m, { target: '/x?b&a=1' })).toEqual(scanned('r'));
    expect(onlyDecides(m, { target: '/x?a=1' })).toEqual(NO_MATCH);
  });
});

describe('client IP', () => {
  const m: RuleMatch = { clientIp: ['10.0.0.0/8', '192.168.1.7', '2001:db8::/32', '::1', '172.16.0.0/12'] };

  it.each([
    ['10.200.1.1', true],
    ['192.168.1.7', true],
    ['192.168.1.8', false],
    ['172.31.255.255', true],
    ['172.32.0.0', false],
    ['11.0.0.1', false],
    ['2001:db8:1::5', true],
    ['2001:DB8::1', true],
    ['2001:db9::1', false],
    ['::1', true],
    ['::2', false],
    ['::ffff:10.9.9.9', true],
    ['::FFFF:192.168.1.7', true],
    ['::ffff:a01:203', true],
    ['::ffff:11.0.0.1', false],
    ['not-an-ip', false],
  ])('%s matches: %s', (clientIp, matches) => {
    expect(onlyDecides(m, { clientIp })).toEqual(matches ? scanned('r') : NO_MATCH);
  });

  it('no client address does not match', () => {
    expect(onlyDecides(m, { clientIp: undefined })).toEqual(NO_MATCH);
  });

  it('/0 matches every address of its family', () => {
    expect(onlyDecides({ clientIp: ['0.0.0.0/0'] }, { clientIp: '203.0.113.9' })).toEqual(scanned('r'));
    expect(onlyDecides({ clientIp: ['::/0'] }, { clientIp: '2001:db8::9' })).toEqual(scanned('r'));
    expect(onlyDecides({ clientIp: ['0.0.0.0/0'] }, { clientIp: '2001:db8::9' })).toEqual(NO_MATCH);
  });

  it('a /32 and a /128 are single addresses', () => {
    expect(onlyDecides({ clientIp: ['10.0.0.1/32'] }, { clientIp: '10.0.0.1' })).toEqual(scanned('r'));
    expect(onlyDecides({ clientIp: ['10.0.0.1/32'] }, { clientIp: '10.0.0.2' })).toEqual(NO_MATCH);
    expect(onlyDecides({ clientIp: ['2001:db8::1/128'] }, { clientIp: '2001:db8::1' })).toEqual(scanned('r'));
    expect(onlyDecides({ clientIp: ['2001:db8::1/128'] }, { clientIp: '2001:db8::2' })).toEqual(NO_MATCH);
  });
});

describe('criteria combined', () => {
  const rules: PolicyRule[] = [
    {
      name: 'uploads',
      match: {
        method: ['POST'],
        path: '/upload',
        host: ['*.example.com'],
        contentType: ['multipart/form-data'],
        headers: [{ name: 'authorization', present: true }],
        query: [{ name: 'async', present: false }],
        clientIp: ['10.0.0.0/8'],
      },
      action: 'enable-icap',
    },
  ];
  const good: FactsInit = {
    headers: { 'content-type': 'multipart/form-data; boundary=b', authorization: 'Bearer x' },
  };

  it('matches when every criterion holds', () => {
    expect(decide(rules, facts(good))).toEqual(scanned('uploads'));
  });

  it('a PUT still matches: its multipart body may carry a _method field naming POST', () => {
    expect(decide(rules, facts({ ...good, method: 'PUT' }))).toEqual(scanned('uploads'));
  });

  it.each<[string, FactsInit]>([
    ['path', { target: '/download' }],
    ['host', { host: 'example.org' }],
    ['content type', { headers: { 'content-type': 'text/plain', authorization: 'x' } }],
    ['header', { headers: { 'content-type': 'multipart/form-data' } }],
    ['query', { target: '/upload?async=1' }],
    ['client IP', { clientIp: '192.0.2.1' }],
  ])('does not match when the %s does not', (_, over) => {
    expect(decide(rules, facts({ ...good, ...over }))).toEqual(NO_MATCH);
  });
});

describe('bypass resistance', () => {
  // An allow-list: only an exact '/upload' is scanned, public files are skipped, the rest too.
  const rules: PolicyRule[] = [
    { name: 'skip-public', match: { path: '/public' }, action: 'skip' },
    { name: 'scan-upload', match: { path: { exact: ['/upload'] } }, action: 'enable-icap' },
    { name: 'skip-rest', action: 'skip' },
  ];

  it.each([
    '/upload',
    '/UPLOAD',
    '/UpLoAd',
    '/upl%6Fad',
    '/%75%70%6c%6f%61%64',
    '/%2575pload',
    '/upl%256Fad',
    '//upload',
    '///upload',
    '/upload/',
    '/upload//',
    '/upload/.',
    '/upload/x/..',
    '/./upload',
    '/%2e/upload',
    '\\upload',
    '/%5Cupload',
    '/upload;x=1',
    '/upload;jsessionid=ABC/',
    '/upload%3Bx',
    '/public/../upload',
    '/public/..%2Fupload',
    '/public/..%2fupload',
    '/public/%2e%2e/upload',
    '/public/%2E%2E%2Fupload',
    '/public/.%2e/upload',
    '/public/%252e%252e/upload',
    '/public/..\\upload',
    '/public/%5C..%5Cupload',
    '/public/..;/upload',
    '/public/a/../../upload',
    '/public//../upload',
    'http://app.example.com/upload',
    'HTTP://app.example.com:8080/upload?x=1',
    'http://app.example.com/public/../upload',
    'http://app.example.com\\upload',
    'upload',
  ])('%s is scanned by scan-upload', (target) => {
    expect(decide(rules, facts({ target }))).toEqual(scanned('scan-upload'));
  });

  it.each([
    ['/public/logo.png', 'skip-public'],
    ['/PUBLIC/logo.png', 'skip-public'],
    ['/public/upload', 'skip-public'],
    ['/uploads', 'skip-rest'],
    ['/upload.exe', 'skip-rest'],
    ['/api/upload', 'skip-rest'],
    ['/%25252575pload', 'skip-rest'],
    ['/upload%2x', 'skip-rest'],
    ['/x?next=/upload', 'skip-rest'],
    ['http://upload/x', 'skip-rest'],
  ])('%s is still skipped by %s', (target, rule) => {
    expect(decide(rules, facts({ target }))).toEqual(skipped(rule));
  });

  it('a traversal cannot reach a skip rule past an enable-everything rule', () => {
    const denyByDefault: PolicyRule[] = [
      { name: 'skip-health', match: { path: { exact: ['/health'] } }, action: 'skip' },
      { name: 'skip-static', match: { path: '/static/' }, action: 'skip' },
      { name: 'scan-all', action: 'enable-icap' },
    ];
    for (const target of [
      '/static/../upload',
      '/static/%2e%2e/upload',
      '/static/..%2fupload',
      '/health/../x',
    ]) {
      expect(decide(denyByDefault, facts({ target }))).toEqual(scanned('scan-all'));
    }
    expect(decide(denyByDefault, facts({ target: '/static/a.css' }))).toEqual(skipped('skip-static'));
    expect(decide(denyByDefault, facts({ target: '/health' }))).toEqual(skipped('skip-health'));
  });

  it('a negated path cannot be dodged by an alternative spelling', () => {
    const r: PolicyRule[] = [
      {
        name: 'scan-non-public',
        match: { path: { prefix: ['/public/'], negate: true } },
        action: 'enable-icap',
      },
    ];
    expect(decide(r, facts({ target: '/public/../upload' }))).toEqual(scanned('scan-non-public'));
    expect(decide(r, facts({ target: '/public/a' }))).toEqual(NO_MATCH);
  });

  it('a method override saying POST on a GET is scanned', () => {
    const r: PolicyRule[] = [
      { name: 'skip-get', match: { method: ['GET', 'HEAD'] }, action: 'skip' },
      { name: 'scan-post', match: { method: ['POST', 'PUT'] }, action: 'enable-icap' },
    ];
    expect(decide(r, facts({ method: 'GET', headers: { 'X-HTTP-Method-Override': 'POST' } }))).toEqual(
      scanned('scan-post'),
    );
    expect(decide(r, facts({ method: 'GET' }))).toEqual(skipped('skip-get'));
  });

  it('scan PUT, skip the rest: ?_method=PUT and a form body are scanned, a plain POST skipped', () => {
    const r: PolicyRule[] = [
      { name: 'scan-put', match: { method: ['PUT'] }, action: 'enable-icap' },
      { name: 'skip-rest', action: 'skip' },
    ];
    expect(decide(r, facts({ method: 'POST', target: '/files?_method=PUT' }))).toEqual(scanned('scan-put'));
    expect(
      decide(r, facts({ method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' } })),
    ).toEqual(scanned('scan-put'));
    expect(
      decide(r, facts({ method: 'POST', headers: { 'content-type': 'application/octet-stream' } })),
    ).toEqual(skipped('skip-rest'));
  });

  it('a method override saying GET on a POST does not skip it', () => {
    const r: PolicyRule[] = [
      { name: 'skip-get', match: { method: ['GET'] }, action: 'skip' },
      { name: 'scan-post', match: { method: ['POST'] }, action: 'enable-icap' },
    ];
    expect(decide(r, facts({ method: 'POST', headers: { 'x-method-override': 'GET' } }))).toEqual(
      scanned('scan-post'),
    );
  });

  it('method and path readings combine', () => {
    const r: PolicyRule[] = [
      {
        name: 'scan-post-upload',
        match: { method: ['POST'], path: { exact: ['/upload'] } },
        action: 'enable-icap',
      },
    ];
    expect(
      decide(
        r,
        facts({ method: 'GET', target: '/public/%2e%2e/upload', headers: { 'x-http-method': 'post' } }),
      ),
    ).toEqual(scanned('scan-post-upload'));
  });

  it('when no reading scans, the first skipping rule is named', () => {
    const r: PolicyRule[] = [
      { name: 'skip-encoded', match: { path: { contains: ['%'] } }, action: 'skip' },
      { name: 'skip-x', match: { path: { exact: ['/x'] } }, action: 'skip' },
    ];
    // raw '/%78' reaches skip-encoded, decoded '/x' reaches skip-x: both skip.
    expect(decide(r, facts({ target: '/%78' }))).toEqual(skipped('skip-encoded'));
    // raw '/%41' skips, decoded '/A' matches nothing: still a skip by rule.
    expect(decide(r, facts({ target: '/%41' }))).toEqual(skipped('skip-encoded'));
  });

  it('an enabling reading wins over a skipping one and is named', () => {
    const r: PolicyRule[] = [
      { name: 'skip-encoded', match: { path: { contains: ['%'] } }, action: 'skip' },
      { name: 'scan-x', match: { path: { exact: ['/x'] } }, action: 'enable-icap' },
    ];
    expect(decide(r, facts({ target: '/%78' }))).toEqual(scanned('scan-x'));
  });
});

describe('pathCandidates', () => {
  it('a plain path is its only reading', () => {
    expect(pathCandidates('/api/v1/upload')).toEqual(['/api/v1/upload']);
    expect(pathCandidates('/a.b/c..d/.e')).toEqual(['/a.b/c..d/.e']);
    expect(pathCandidates('/')).toEqual(['/']);
  });

  it('removes the query and the fragment', () => {
    expect(pathCandidates('/upload?x=1#y')).toEqual(['/upload']);
    expect(pathCandidates('/upload#y?x')).toEqual(['/upload']);
    expect(pathCandidates('?x')).toEqual(['/']);
  });

  it('takes the path of an absolute-form target', () => {
    expect(pathCandidates('http://h:8080/a/b?q')).toEqual(['/a/b']);
    expect(pathCandidates('https://user@h')).toEqual(['/']);
    expect(pathCandidates('http://h?q')).toEqual(['/']);
  });

  it('lists the raw path first, then its readings, without duplicates', () => {
    const c = pathCandidates('/public/..%2Fupload');
    expect(c[0]).toBe('/public/..%2Fupload');
    expect(c).toContain('/public/../upload');
    expect(c).toContain('/upload');
    expect(new Set(c).size).toBe(c.length);
  });

  it('decodes %2F and %5C, and leaves invalid escapes as they are', () => {
    expect(pathCandidates('/a%2Fb')).toContain('/a/b');
    expect(pathCandidates('/a%5Cb')).toEqual(expect.arrayContaining(['/a\\b', '/a/b']));
    expect(pathCandidates('/a%zz%4')).toEqual(['/a%zz%4']);
    expect(pathCandidates('/%%41')).toEqual(['/%%41', '/%A']);
  });

  it('decodes at most twice', () => {
    const c = pathCandidates('/%25252e');
    expect(c).toEqual(['/%25252e', '/%252e', '/%2e', '/']);
    expect(c).not.toContain('/.');
    expect(pathCandidates('/%2525252e')).not.toContain('/%2e');
  });

  it('resolves dot segments per RFC 3986, %2e included', () => {
    expect(pathCandidates('/a/b/c/./../../g')).toContain('/a/g');
    expect(pathCandidates('/../a')).toContain('/a');
    expect(pathCandidates('/a/b/..')).toEqual(['/a/b/..', '/a/', '/a']);
    expect(pathCandidates('/a/%2E%2e/b')).toContain('/b');
    expect(pathCandidates('/a/.%2E/b')).toContain('/b');
    expect(pathCandidates('/a/..x/b')).toEqual(['/a/..x/b']);
  });

  it('collapses slashes before and after resolving dots', () => {
    const c = pathCandidates('/a//../b');
    expect(c).toContain('/a/b'); // resolved, then collapsed
    expect(c).toContain('/b'); // collapsed, then resolved
  });

  it('drops ;params from every segment', () => {
    expect(pathCandidates('/a;x=1/b;y')).toContain('/a/b');
    expect(pathCandidates('/upload;jsessionid=1')).toEqual(['/upload;jsessionid=1', '/upload']);
  });

  it('turns backslashes into slashes', () => {
    expect(pathCandidates('/a\\b\\..\\c')).toContain('/a/c');
  });

  it('adds a leading slash to a path without one', () => {
    expect(pathCandidates('upload')).toEqual(['upload', '/upload']);
  });

  it('stays bounded on a hostile path', () => {
    const hostile = `/${'%252e%252e;a=b\\.%2F/'.repeat(300)}x`;
    const t0 = performance.now();
    const c = pathCandidates(`${hostile}?q=1`);
    expect(performance.now() - t0).toBeLessThan(2000);
    expect(c[0]).toBe(hostile);
    expect(c.length).toBeLessThanOrEqual(512);
  });
});

describe('validation at start-up', () => {
  const rule = (match: unknown, extra: Record<string, unknown> = {}) => [
    { name: 'a', action: 'skip', match, ...extra },
  ];

  function failure(rules: unknown, prefix?: string): IcapError {
    try {
      if (prefix === undefined) compilePolicy(rules as PolicyRule[]);
      else compilePolicy(rules as PolicyRule[], prefix);
    } catch (err) {
      expect(err).toBeInstanceOf(IcapError);
      return err as IcapError;
    }
    throw new Error('compilePolicy did not throw');
  }

  it.each<[string, unknown, string, RegExp]>([
    [
      'rules not an array',
      { name: 'a' },
      'rules',
      /^invalid ICAP profile: rules must be an array of rules \(got \{"name":"a"\}\)$/,
    ],
    ['rules a string', 'all', 'rules', /^invalid ICAP profile: rules must be an array of rules/],
    [
      'a rule that is not an object',
      [null],
      'rules[0]',
      /^invalid ICAP profile: rules\[0\] must be an object/,
    ],
    ['a rule that is an array', [[]], 'rules[0]', /^invalid ICAP profile: rules\[0\] must be an object/],
    [
      'an unknown rule key',
      [{ name: 'a', action: 'skip', mtach: {} }],
      'rules[0].mtach',
      /^invalid ICAP profile: rules\[0\]\.mtach is not a known option of a rule; did you mean "match"\?$/,
    ],
    [
      'a missing name',
      [{ action: 'skip' }],
      'rules[0].name',
      /^invalid ICAP profile: rules\[0\]\.name is required: a non-empty string/,
    ],
    ['a blank name', [{ name: '  ', action: 'skip' }], 'rules[0].name', /is required: a non-empty string/],
    ['a name that is not a string', [{ name: 7, action: 'skip' }], 'rules[0].name', /is required.*\(got 7\)/],
    [
      'a name with a line break',
      [{ name: 'a\nb', action: 'skip' }],
      'rules[0].name',
      /^invalid ICAP profile: rules\[0\]\.name must not contain control characters$/,
    ],
    [
      'a duplicate name',
      [
        { name: 'a', action: 'skip' },
        { name: 'b', action: 'skip' },
        { name: 'a', action: 'skip' },
      ],
      'rules[2].name',
      /^invalid ICAP profile: rules\[2\]\.name duplicates the name of rules\[0\] \("a"\)$/,
    ],
    [
      'an unknown action',
      [{ name: 'a', action: 'block' }],
      'rules[0].action',
      /^invalid ICAP profile: rules\[0\]\.action must be 'enable-icap' or 'skip' \(got "block"\)$/,
    ],
    [
      'a missing action',
      [{ name: 'a' }],
      'rules[0].action',
      /must be 'enable-icap' or 'skip' \(got undefined\)/,
    ],
    [
      'enabled not boolean',
      [{ name: 'a', action: 'skip', enabled: 'yes' }],
      'rules[0].enabled',
      /must be true or false/,
    ],
    [
      'match not an object',
      rule('/upload'),
      'rules[0].match',
      /^invalid ICAP profile: rules\[0\]\.match must be an object/,
    ],
    [
      'an unknown match key',
      rule({ pathh: '/x' }),
      'rules[0].match.pathh',
      /^invalid ICAP profile: rules\[0\]\.match\.pathh is not a known option of a rule's match; did you mean "path"\?$/,
    ],
    [
      'method not an array',
      rule({ method: 'POST' }),
      'rules[0].match.method',
      /must be a non-empty array of strings/,
    ],
    ['method empty', rule({ method: [] }), 'rules[0].match.method', /must be a non-empty array of strings/],
    [
      'method not a string',
      rule({ method: ['POST', 1] }),
      'rules[0].match.method[1]',
      /must be a string \(got 1\)/,
    ],
    [
      'method not a token',
      rule({ method: ['GE T'] }),
      'rules[0].match.method[0]',
      /^invalid ICAP profile: rules\[0\]\.match\.method\[0\] is not an HTTP method \(a token\) \(got "GE T"\)$/,
    ],
    ['method empty string', rule({ method: [''] }), 'rules[0].match.method[0]', /is not an HTTP method/],
    ['path a number', rule({ path: 1 }), 'rules[0].match.path', /must be a string or an object/],
    [
      'path without a slash',
      rule({ path: 'upload' }),
      'rules[0].match.path',
      /must start with '\/' \(got "upload"\)/,
    ],
    [
      'path with no list',
      rule({ path: {} }),
      'rules[0].match.path',
      /needs at least one of exact, prefix, suffix, contains, regex/,
    ],
    [
      'path only flags',
      rule({ path: { caseSensitive: true } }),
      'rules[0].match.path',
      /needs at least one of/,
    ],
    [
      'path unknown key',
      rule({ path: { prefx: ['/a'] } }),
      'rules[0].match.path.prefx',
      /is not a known option of a string match/,
    ],
    [
      'path prefix without slash',
      rule({ path: { prefix: ['/a', 'b'] } }),
      'rules[0].match.path.prefix[1]',
      /must start with '\/'/,
    ],
    [
      'path exact without slash',
      rule({ path: { exact: ['a'] } }),
      'rules[0].match.path.exact[0]',
      /must start with '\/'/,
    ],
    [
      'path exact not an array',
      rule({ path: { exact: '/a' } }),
      'rules[0].match.path.exact',
      /must be a non-empty array/,
    ],
    [
      'path suffix empty',
      rule({ path: { suffix: [] } }),
      'rules[0].match.path.suffix',
      /must be a non-empty array/,
    ],
    [
      'path contains not strings',
      rule({ path: { contains: [null] } }),
      'rules[0].match.path.contains[0]',
      /must be a string/,
    ],
    [
      'path caseSensitive not boolean',
      rule({ path: { prefix: ['/a'], caseSensitive: 'no' } }),
      'rules[0].match.path.caseSensitive',
      /must be true or false/,
    ],
    [
      'path negate not boolean',
      rule({ path: { prefix: ['/a'], negate: 1 } }),
      'rules[0].match.path.negate',
      /must be true or false/,
    ],
    [
      'a regex too long',
      rule({ path: { regex: ['a'.repeat(1001)] } }),
      'rules[0].match.path.regex[0]',
      /^invalid ICAP profile: rules\[0\]\.match\.path\.regex\[0\] is longer than 1000 characters \(1001\)$/,
    ],
    [
      'a regex not a string',
      rule({ path: { regex: [/a/] } }),
      'rules[0].match.path.regex[0]',
      /must be a string/,
    ],
    ['host not an array', rule({ host: 'a.com' }), 'rules[0].match.host', /non-empty array/],
    [
      'host with a port',
      rule({ host: ['a.com:8080'] }),
      'rules[0].match.host[0]',
      /is not a host name, IP address or \*\.domain wildcard/,
    ],
    ['host empty', rule({ host: [''] }), 'rules[0].match.host[0]', /is not a host name/],
    ['host bare star', rule({ host: ['*'] }), 'rules[0].match.host[0]', /is not a host name/],
    ['host inner star', rule({ host: ['a.*.com'] }), 'rules[0].match.host[0]', /is not a host name/],
    ['host with a path', rule({ host: ['a.com/x'] }), 'rules[0].match.host[0]', /is not a host name/],
    ['host wildcard IP', rule({ host: ['*.10.0.0.1'] }), 'rules[0].match.host[0]', /is not a host name/],
    [
      'headers not an array',
      rule({ headers: { name: 'x' } }),
      'rules[0].match.headers',
      /must be a non-empty array of \{ name, present, value \}/,
    ],
    ['headers empty', rule({ headers: [] }), 'rules[0].match.headers', /non-empty array/],
    [
      'a header criterion not an object',
      rule({ headers: ['x-a'] }),
      'rules[0].match.headers[0]',
      /must be an object/,
    ],
    [
      'a header criterion unknown key',
      rule({ headers: [{ name: 'x', vlaue: 'a' }] }),
      'rules[0].match.headers[0].vlaue',
      /is not a known option of a header criterion/,
    ],
    [
      'a header name missing',
      rule({ headers: [{ present: true }] }),
      'rules[0].match.headers[0].name',
      /is required: a header field name/,
    ],
    [
      'a header name invalid',
      rule({ headers: [{ name: 'x a' }] }),
      'rules[0].match.headers[0].name',
      /is not a valid header field name/,
    ],
    [
      'header present not boolean',
      rule({ headers: [{ name: 'x', present: 'yes' }] }),
      'rules[0].match.headers[0].present',
      /must be true or false/,
    ],
    [
      'header absent with a value',
      rule({ headers: [{ name: 'x', present: false, value: 'a' }] }),
      'rules[0].match.headers[0].value',
      /cannot be combined with present: false/,
    ],
    [
      'header value a number',
      rule({ headers: [{ name: 'x', value: 1 }] }),
      'rules[0].match.headers[0].value',
      /must be a string or an object/,
    ],
    [
      'header value with no list',
      rule({ headers: [{ name: 'x', value: { negate: true } }] }),
      'rules[0].match.headers[0].value',
      /needs at least one of/,
    ],
    [
      'a header value regex invalid',
      rule({ headers: [{ name: 'x', value: { regex: ['a', '['] } }] }),
      'rules[0].match.headers[0].value.regex[1]',
      /^invalid ICAP profile: rules\[0\]\.match\.headers\[0\]\.value\.regex\[1\] is not a valid regular expression: /,
    ],
    [
      'contentType not an array',
      rule({ contentType: 'image/png' }),
      'rules[0].match.contentType',
      /non-empty array/,
    ],
    [
      'contentType without a subtype',
      rule({ contentType: ['json'] }),
      'rules[0].match.contentType[0]',
      /is not a media type \(type\/subtype, type\/\* or \*\/\*, without parameters\) \(got "json"\)/,
    ],
    [
      'contentType with parameters',
      rule({ contentType: ['text/plain; charset=utf-8'] }),
      'rules[0].match.contentType[0]',
      /is not a media type/,
    ],
    [
      'contentType wildcard major',
      rule({ contentType: ['*/json'] }),
      'rules[0].match.contentType[0]',
      /is not a media type/,
    ],
    ['query not an array', rule({ query: 'a=1' }), 'rules[0].match.query', /non-empty array/],
    [
      'a query name empty',
      rule({ query: [{ name: '' }] }),
      'rules[0].match.query[0].name',
      /is required: a query parameter name/,
    ],
    [
      'a query criterion unknown key',
      rule({ query: [{ name: 'a', presnt: true }] }),
      'rules[0].match.query[0].presnt',
      /is not a known option of a query criterion/,
    ],
    [
      'query absent with a value',
      rule({ query: [{ name: 'a', present: false, value: { exact: ['1'] } }] }),
      'rules[0].match.query[0].value',
      /cannot be combined/,
    ],
    [
      'query value regex too long',
      rule({ query: [{ name: 'a', value: { regex: ['x'.repeat(2000)] } }] }),
      'rules[0].match.query[0].value.regex[0]',
      /longer than 1000 characters/,
    ],
    ['clientIp not an array', rule({ clientIp: '10.0.0.1' }), 'rules[0].match.clientIp', /non-empty array/],
    [
      'clientIp not an address',
      rule({ clientIp: ['not-an-ip'] }),
      'rules[0].match.clientIp[0]',
      /^invalid ICAP profile: rules\[0\]\.match\.clientIp\[0\] is not an IP address or CIDR \(got "not-an-ip"\)$/,
    ],
    [
      'clientIp a host name',
      rule({ clientIp: ['localhost'] }),
      'rules[0].match.clientIp[0]',
      /is not an IP address or CIDR/,
    ],
    [
      'clientIp bad IPv4 address',
      rule({ clientIp: ['10.0.0.256/8'] }),
      'rules[0].match.clientIp[0]',
      /is not an IP address or CIDR/,
    ],
    [
      'clientIp IPv4 prefix too long',
      rule({ clientIp: ['10.0.0.0/33'] }),
      'rules[0].match.clientIp[0]',
      /^invalid ICAP profile: rules\[0\]\.match\.clientIp\[0\] has an invalid prefix length, IPv4 allows \/0 to \/32 \(got "10\.0\.0\.0\/33"\)$/,
    ],
    [
      'clientIp IPv6 prefix too long',
      rule({ clientIp: ['2001:db8::/129'] }),
      'rules[0].match.clientIp[0]',
      /IPv6 allows \/0 to \/128/,
    ],
    [
      'clientIp prefix not a number',
      rule({ clientIp: ['10.0.0.0/x'] }),
      'rules[0].match.clientIp[0]',
      /invalid prefix length/,
    ],
    [
      'clientIp negative prefix',
      rule({ clientIp: ['10.0.0.0/-1'] }),
      'rules[0].match.clientIp[0]',
      /invalid prefix length/,
    ],
    [
      'clientIp empty prefix',
      rule({ clientIp: ['10.0.0.0/'] }),
      'rules[0].match.clientIp[0]',
      /invalid prefix length/,
    ],
    [
      'clientIp two prefixes',
      rule({ clientIp: ['10.0.0.0/8/8'] }),
      'rules[0].match.clientIp[0]',
      /invalid prefix length/,
    ],
    [
      'an error in a disabled rule',
      [{ name: 'a', enabled: false, action: 'skip', match: { path: { regex: ['('] } } }],
      'rules[0].match.path.regex[0]',
      /is not a valid regular expression/,
    ],
  ])('%s', (_, rules, field, message) => {
    const err = failure(rules);
    expect(err.code).toBe(IcapErrorCodes.INVALID_PROFILE);
    expect(err.field).toBe(field);
    expect(err.message.startsWith(`invalid ICAP profile: ${field} `)).toBe(true);
    expect(err.message).toMatch(message);
  });

  it('names the regex with its rule index and the engine reason', () => {
    const bad = '(unclosed';
    const err = failure([
      { name: 'a', action: 'skip' },
      { name: 'b', action: 'skip' },
      { name: 'c', action: 'skip', match: { path: { regex: ['^/ok$', bad] } } },
    ]);
    expect(err.field).toBe('rules[2].match.path.regex[1]');
    let reason = '';
    try {
      new RegExp(bad, 'i');
    } catch (e) {
      reason = (e as Error).message;
    }
    expect(err.message).toBe(
      `invalid ICAP profile: rules[2].match.path.regex[1] is not a valid regular expression: ${reason}`,
    );
    expect(err.cause).toBeUndefined();
  });

  it('uses the field prefix it is given', () => {
    const err = failure([{ name: 'a', action: 'scan' }], 'profile.rules');
    expect(err.field).toBe('profile.rules[0].action');
    expect(err.message).toBe(
      "invalid ICAP profile: profile.rules[0].action must be 'enable-icap' or 'skip' (got \"scan\")",
    );
    expect(failure('x', 'profile.rules').field).toBe('profile.rules');
  });

  it('accepts the edge of every limit', () => {
    expect(() =>
      compilePolicy([
        {
          name: 'edges',
          enabled: true,
          match: {
            method: ['M-SEARCH', 'get'],
            path: { regex: ['a'.repeat(1000)], exact: ['*'] },
            host: ['*.example.com', 'EXAMPLE.com.', '[::1]', '::2', '10.0.0.1'],
            headers: [{ name: 'x', value: '' }],
            contentType: ['*/*', 'Image/*', 'application/vnd.api+json'],
            query: [{ name: 'a b', present: true }],
            clientIp: ['0.0.0.0/0', '10.0.0.1/32', '::/0', '2001:db8::/128', '::ffff:10.0.0.0/104'],
          },
          action: 'enable-icap',
        },
      ]),
    ).not.toThrow();
  });
});

/** One order of the transforms the readings are closed under, to a fixed point: a reading. */
function normalized(target: string): string {
  const settle = (x: string) => {
    let s = x;
    for (let k = 0; k < 20; k++)
      s = removeParams(collapseSlashes(removeDotSegments(backslashesToSlashes(s))));
    return s;
  };
  return settle(percentDecode(settle(percentDecode(settle(target)))));
}

describe('a path written to have more readings than are made', () => {
  // Found by a property: 256 readings made, and not the one an application that decodes twice,
  // reads backslashes as slashes, resolves dot segments and drops params routes on.
  const target = '%5c/a%252f/%2e%2f/a/%2e\\/%252e%252e;x\\;x/upload';
  const rules: PolicyRule[] = [
    { name: 'uploads', match: { path: { prefix: ['/a/upload'] } }, action: 'enable-icap' },
  ];

  it('is scanned (path-readings-limit) rather than skipped on the readings made', () => {
    expect(normalized(target)).toBe('/a/upload');
    const read = pathReadings(target);
    expect(read.complete).toBe(false);
    expect(read.paths).not.toContain('/a/upload');
    expect(decide(rules, facts({ target }))).toEqual({
      scan: true,
      rule: undefined,
      reason: 'path-readings-limit',
    });
  });

  it('with only skip rules it stays as the readings made decide (no rule to scan for)', () => {
    const skipOnly: PolicyRule[] = [
      { name: 'static', match: { path: { prefix: ['/static'] } }, action: 'skip' },
    ];
    expect(decide(skipOnly, facts({ target }))).toEqual(NO_MATCH);
  });

  it('a reading made that reaches an enable-icap rule still names it', () => {
    const t = `/a/upload${target}`;
    expect(decide(rules, facts({ target: t }))).toEqual(scanned('uploads'));
  });

  it('either the readings are all made, with that normalized one among them, or the request is scanned (property)', () => {
    const token = fc.constantFrom(
      '/a',
      '/b;p',
      '//',
      '/%2e',
      '/%252e%252e',
      '%255c',
      '%5c',
      '\\',
      '/..',
      '/.',
      ';x',
      '%2f',
      '%252f',
      '/c',
      '%25',
      '/%2e%2e',
    );
    fc.assert(
      fc.property(fc.array(token, { maxLength: 24 }), (tokens) => {
        const t = `${tokens.join('')}/upload`;
        const read = pathReadings(t);
        // A target without its leading '/' is read as if it had one (and refused as a request
        // target before the policy sees it); a path rule names a path with one.
        const n = normalized(t.startsWith('/') ? t : `/${t}`);
        if (read.complete)
          expect(read.paths.includes(n) || read.paths.includes(n.replace(/\/+$/, ''))).toBe(true);
        else
          expect(
            decide(
              [{ name: 'n', match: { path: { exact: [n] } }, action: 'enable-icap' }],
              facts({ target: t }),
            ).scan,
          ).toBe(true);
      }),
      { numRuns: 3000 },
    );
  });

  it('a target without its leading slash that has too many readings is scanned', () => {
    // Found by the property above (seed 699077338): its rule named a path without a '/'.
    const t = '%25///%252e%252e/%2e\\;x/a%5c/a%252f/upload';
    const n = normalized(`/${t}`);
    expect(n.startsWith('/')).toBe(true);
    const read = pathReadings(t);
    expect(read.complete).toBe(false);
    expect(read.paths).not.toContain(n);
    expect(
      decide([{ name: 'n', match: { path: { exact: [n] } }, action: 'enable-icap' }], facts({ target: t })),
    ).toEqual({ scan: true, rule: undefined, reason: 'path-readings-limit' });
  });

  it('a 16 KiB path of thousands of odd segments costs a bounded amount of work', () => {
    const long = `/${'/%3b//;%2f%2525//%5c%2e%253b/.'.repeat(520)}`;
    const read = pathReadings(long);
    expect(read.complete).toBe(false);
    // The characters of the readings made stay within the budget (64 KiB), not 256 of 16 KiB.
    expect(read.paths.reduce((n, p) => n + p.length, 0)).toBeLessThanOrEqual(2 * 64 * 1024);
    expect(decide(rules, facts({ target: long }))).toEqual({
      scan: true,
      rule: undefined,
      reason: 'path-readings-limit',
    });
  });
});

describe('readings applications make that the rules must cover (campaign-e)', () => {
  const skipStatic: PolicyRule[] = [
    { name: 'skip-static-host', match: { host: ['static.example.com'] }, action: 'skip' },
    { name: 'scan-everything', action: 'enable-icap' },
  ];
  const scanPut: PolicyRule[] = [
    { name: 'scan-put', match: { method: ['PUT'] }, action: 'enable-icap' },
    { name: 'skip-rest', action: 'skip' },
  ];

  it('F1: a JSON body (method-override body getter) reads as every listed method', () => {
    for (const ct of [
      'application/json',
      'application/vnd.api+json',
      'text/plain; x=json',
      'application/csp-report',
    ])
      expect(decide(scanPut, facts({ method: 'POST', headers: { 'content-type': ct } })), ct).toEqual(
        scanned('scan-put'),
      );
    // Control: a body no parser reads as fields, and a JSON head without a body, are skipped.
    expect(
      decide(scanPut, facts({ method: 'POST', headers: { 'content-type': 'application/octet-stream' } })),
    ).toEqual(skipped('skip-rest'));
    expect(
      decide(
        scanPut,
        facts({ method: 'POST', hasBody: false, headers: { 'content-type': 'application/json' } }),
      ),
    ).toEqual(skipped('skip-rest'));
  });

  it('F2a: :authority is a host reading besides Host', () => {
    const h2 = (authority: string) =>
      facts({
        host: 'static.example.com',
        headers: [
          [':authority', authority],
          ['host', 'static.example.com'],
        ],
      });
    expect(decide(skipStatic, h2('api.example.com'))).toEqual(scanned('scan-everything'));
    // Control: both name the skipped host.
    expect(decide(skipStatic, h2('static.example.com'))).toEqual(skipped('skip-static-host'));
    // A port is a spelling host routing may compare (campaign-bj BJ3): scanned.
    expect(decide(skipStatic, h2('static.example.com:8443'))).toEqual(scanned('scan-everything'));
  });

  it.each([
    'api.example.com:1@static.example.com',
    'api.example.com,x@static.example.com',
    'api.example.com,static.example.com',
    'st%61tic.example.com',
    'static.example.com ',
    'static.example.com/x',
  ])('F2b: a Host frameworks read differently (%s) is never skipped by a host rule', (host) => {
    expect(decide(skipStatic, facts({ host, headers: { host } }))).toEqual(scanned('scan-everything'));
  });

  it('F2b: an ambiguous Host reads as every host the rules tell apart, in both directions', () => {
    const scanApi: PolicyRule[] = [
      { name: 'scan-api', match: { host: ['api.example.com'] }, action: 'enable-icap' },
      { name: 'scan-uploads', match: { host: ['*.uploads.test'] }, action: 'enable-icap' },
      { name: 'skip-rest', action: 'skip' },
    ];
    expect(decide(scanApi, facts({ host: 'static.example.com:1@api.example.com' }))).toEqual(
      scanned('scan-api'),
    );
    const skipSub: PolicyRule[] = [
      { name: 'skip-cdn', match: { host: ['*.cdn.uploads.test'] }, action: 'skip' },
      { name: 'scan-uploads', match: { host: ['*.uploads.test'] }, action: 'enable-icap' },
      { name: 'skip-rest', action: 'skip' },
    ];
    // Some host under *.uploads.test but not *.cdn.uploads.test is scanned: so is any ambiguous one.
    expect(decide(skipSub, facts({ host: 'a.cdn.uploads.test,b' }))).toEqual(scanned('scan-uploads'));
    expect(decide(skipSub, facts({ host: 'a.cdn.uploads.test' }))).toEqual(skipped('skip-cdn'));
    // A URL parser reads these as 127.0.0.1: not the name they spell.
    const loop: PolicyRule[] = [
      { name: 'scan-loopback', match: { host: ['127.0.0.1'] }, action: 'enable-icap' },
      { name: 'skip-rest', action: 'skip' },
    ];
    for (const host of ['0x7f.1', '127.1', '2130706433', '127.0.0.01'])
      expect(decide(loop, facts({ host })), host).toEqual(scanned('scan-loopback'));
    expect(decide(loop, facts({ host: '127.0.0.2' }))).toEqual(skipped('skip-rest'));
  });

  it('F2c: the first and last X-Forwarded-Host entries are host readings', () => {
    const xfh = (value: string) =>
      facts({
        host: 'static.example.com',
        headers: { host: 'static.example.com', 'x-forwarded-host': value },
      });
    expect(decide(skipStatic, xfh('api.example.com'))).toEqual(scanned('scan-everything'));
    expect(decide(skipStatic, xfh('static.example.com, api.example.com'))).toEqual(
      scanned('scan-everything'),
    );
    expect(decide(skipStatic, xfh('api.example.com, static.example.com'))).toEqual(
      scanned('scan-everything'),
    );
    expect(decide(skipStatic, xfh('api.example.com@static.example.com'))).toEqual(scanned('scan-everything'));
    // Control: a proxy that names the skipped host.
    expect(decide(skipStatic, xfh('static.example.com'))).toEqual(skipped('skip-static-host'));
  });

  it('F3: a Content-Type mentioning multipart, json, urlencoded or octet-stream reads as that type too', () => {
    const readme: PolicyRule[] = [
      { name: 'skip-health', match: { path: { exact: ['/health'] } }, action: 'skip' },
      {
        name: 'scan-uploads',
        match: {
          method: ['POST', 'PUT'],
          path: '/upload',
          contentType: ['multipart/form-data', 'application/*'],
        },
        action: 'enable-icap',
      },
    ];
    for (const ct of [
      'text/plain; boundary=XyZ123; x=multipart',
      'text/plain; x="multipart/form-data"; boundary=b',
    ])
      expect(decide(readme, facts({ headers: { 'content-type': ct } })), ct).toEqual(scanned('scan-uploads'));
    const skipImages: PolicyRule[] = [
      { name: 'skip-images', match: { contentType: ['image/*'] }, action: 'skip' },
      { name: 'scan-everything', action: 'enable-icap' },
    ];
    for (const ct of ['image/png; x=multipart; boundary=b', 'image/png; x=json', 'image/png; x=octet-stream'])
      expect(decide(skipImages, facts({ headers: { 'content-type': ct } })), ct).toEqual(
        scanned('scan-everything'),
      );
    // Control: a plain image is still skipped, text/plain still matches no upload rule.
    expect(decide(skipImages, facts({ headers: { 'content-type': 'image/png' } }))).toEqual(
      skipped('skip-images'),
    );
    expect(decide(readme, facts({ headers: { 'content-type': 'text/plain' } }))).toEqual(NO_MATCH);
  });

  // Campaign BJ4: co-body, koa-body and @koa/bodyparser parse application/csp-report as JSON
  // by default (their other default JSON and form types mention json or urlencoded).
  it('BJ4: every default JSON or form type of the Koa and Express parsers reads as that type', () => {
    const scanJson: PolicyRule[] = [
      {
        name: 'scan-json',
        match: { method: ['POST'], contentType: ['application/json'] },
        action: 'enable-icap',
      },
      {
        name: 'scan-form',
        match: { contentType: ['application/x-www-form-urlencoded'] },
        action: 'enable-icap',
      },
    ];
    for (const ct of [
      'application/csp-report',
      'Application/CSP-Report; charset=utf-8',
      'application/json-patch+json',
      'application/vnd.api+json',
      'application/reports+json',
      'application/scim+json',
    ])
      expect(decide(scanJson, facts({ headers: { 'content-type': ct } })), ct).toEqual(scanned('scan-json'));
    expect(
      decide(
        scanJson,
        facts({ headers: { 'content-type': 'application/x-www-form-urlencoded; charset=utf-8' } }),
      ),
    ).toEqual(scanned('scan-form'));
    const skipReports: PolicyRule[] = [
      { name: 'skip-reports', match: { contentType: ['application/csp-report'] }, action: 'skip' },
      { name: 'scan-json', match: { contentType: ['application/json'] }, action: 'enable-icap' },
    ];
    expect(decide(skipReports, facts({ headers: { 'content-type': 'application/csp-report' } }))).toEqual(
      scanned('scan-json'),
    );
    // Control: a type no default parser reads as fields stays out of the JSON rule.
    expect(decide(scanJson, facts({ headers: { 'content-type': 'application/pdf' } }))).toEqual(NO_MATCH);
  });

  it('F5: an absolute-form target is also read from the first / after scheme://', () => {
    const readme: PolicyRule[] = [
      { name: 'skip-health', match: { path: { exact: ['/health'] } }, action: 'skip' },
      { name: 'scan-uploads', match: { method: ['POST', 'PUT'], path: '/upload' }, action: 'enable-icap' },
    ];
    expect(pathCandidates('http://h?x/upload')).toEqual(['/', '/upload']);
    expect(pathCandidates('http://h?x/upload?y')).toEqual(['/', '/upload']);
    expect(decide(readme, facts({ target: 'http://h?x/upload' }))).toEqual(scanned('scan-uploads'));
    const skipRoot: PolicyRule[] = [
      { name: 'skip-root', match: { path: { exact: ['/'] } }, action: 'skip' },
      { name: 'scan-everything', action: 'enable-icap' },
    ];
    expect(decide(skipRoot, facts({ target: 'http://h?x/upload' }))).toEqual(scanned('scan-everything'));
    // Control: the same reading either way is one reading; a target that is / is skipped.
    expect(pathCandidates('http://h/upload?x/y')).toEqual(['/upload']);
    expect(decide(skipRoot, facts({ target: 'http://h/?x' }))).toEqual(skipped('skip-root'));
  });

  it('BQ3: an absolute-form target of another scheme than http(s) is read as itself too (find-my-way routes it so)', () => {
    const skipWebhooks: PolicyRule[] = [
      { name: 'skip-webhooks', match: { path: { prefix: ['/webhooks'] } }, action: 'skip' },
      { name: 'scan-everything', action: 'enable-icap' },
    ];
    expect(pathCandidates('foo://h/webhooks/x?y')).toContain('foo://h/webhooks/x');
    // Express and Koa: url.parse() reads no host after javascript:.
    expect(pathCandidates('JavaScript://h/webhooks/x')).toContain('//h/webhooks/x');
    for (const target of ['foo://h/webhooks/x', 'javascript://h/webhooks/x?type=webhook', 'ws://h/webhooks'])
      expect(decide(skipWebhooks, facts({ target })), target).toEqual(scanned('scan-everything'));
    // Control: http and https, in any case, are read from their authority on.
    for (const target of ['HTTPS://h/webhooks/x', 'http://h/webhooks'])
      expect(decide(skipWebhooks, facts({ target })), target).toEqual(skipped('skip-webhooks'));
  });

  it("BT2: an origin-form target starting '//user@host' or '/\\user@host' is also read as url.parse() does", () => {
    const rules: PolicyRule[] = [
      { name: 'scan-raw', match: { path: { exact: ['/raw'] } }, action: 'enable-icap' },
    ];
    // parseurl (Express, Koa) falls back to url.parse for a target holding '#': '/raw' is routed.
    expect(pathCandidates('//a@b/raw#x')).toContain('/raw');
    expect(pathCandidates('/\\a@b/raw#x')).toContain('/raw');
    for (const target of ['//a@b/raw#x', '//a@b/raw?#', '/\\a@b/raw#x'])
      expect(decide(rules, facts({ target })), target).toEqual(scanned('scan-raw'));
    // Control: a plain origin-form target is one reading.
    expect(pathCandidates('/raw')).toEqual(['/raw']);
  });

  it("BQ1: an absolute-form target is also read as url.parse() cuts its authority (at '%', ';', a ':' before no port)", () => {
    const skipWebhooks: PolicyRule[] = [
      { name: 'skip-webhooks', match: { path: { prefix: ['/webhooks'] } }, action: 'skip' },
      { name: 'scan-everything', action: 'enable-icap' },
    ];
    // Express and Koa (parseurl) read these paths: %2Fwebhooks/webhooks, ;x/webhooks/x, /:80x/webhooks/x.
    expect(pathCandidates('http://h%2Fwebhooks/webhooks')).toContain('/%2Fwebhooks/webhooks');
    expect(pathCandidates('http://h;x/webhooks/x?type=webhook')).toContain(';x/webhooks/x');
    expect(pathCandidates('http://u@h:80x/webhooks/x')).toContain('/:80x/webhooks/x');
    for (const target of ['http://h%2Fwebhooks/webhooks', 'http://h;x/webhooks/x', 'http://h:80x/webhooks/x'])
      expect(decide(skipWebhooks, facts({ target })), target).toEqual(scanned('scan-everything'));
    // Control: a plain authority, with a port or userinfo, is one reading; its path is skipped.
    expect(pathCandidates('http://u;p@h.example:8080/webhooks/x')).toEqual(['/webhooks/x']);
    expect(decide(skipWebhooks, facts({ target: 'http://h:8080/webhooks/x' }))).toEqual(
      skipped('skip-webhooks'),
    );
  });
});
