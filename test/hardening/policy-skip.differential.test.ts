/**
 * Skip rules against the frameworks' own readings, property-based (invariant 1): a request a
 * skip rule lets through unscanned must be one the application reads as the rule names it.
 *
 * Each framework (policy-skip-apps.ts: Express 5 and 4, Fastify, Koa 3, Hono, a Web handler)
 * runs one app per profile below, each a skip rule then `scan-everything`, with an embedded
 * ICAP server that blocks EICAR. fast-check writes requests from a grammar of spellings the
 * policy and the routers / query and header parsers may read apart (case, percent-encoding,
 * dot segments, `//`, `;`, backslashes, `#`, `?`, bracket and dotted names, `&`/`;`
 * separators, duplicates, long lists, whitespace, Host spellings, absolute-form targets,
 * method overrides), sends each with an EICAR body over a raw socket (the bytes exactly as
 * generated), and checks every handler that got EICAR (so: unscanned) against the profile's
 * `accepts`: the rule restated over the framework's reading (the route it ran, the decoded
 * path parameter, the parsed `type`, the `X-Source` value, the host, the method). A request
 * that reached another handler, or a value parsed otherwise, is a bypass: the failure prints
 * the request bytes.
 *
 * Two generators: a free grammar, and requests near each profile's skip (the request it skips
 * with one to a few parts respelt), where a spelling read apart meets every other criterion.
 * The bypasses found (campaign-bq BQ1-BQ4) stay below as fixed cases (EXAMPLES).
 *
 * `ICAPKIT_POLICY_SKIP_RUNS` sets the requests per framework (default 600); fast-check's seed is
 * random, `ICAPKIT_FUZZ_SEED` (and `ICAPKIT_FUZZ_PATH`) replay a reported one.
 */
import type { PolicyRule } from '@icapkit/core';
import { eicar, type IcapTestServer, startIcapServer } from '@icapkit/testing';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkAsyncProperty, runsFromEnv } from '../fuzz/support.js';
import { rawExchange } from '../support/raw-http.js';
import {
  type Delivery,
  SKIP_FRAMEWORKS,
  type SkipApp,
  type SkipFramework,
  startSkipApp,
} from './policy-skip-apps.js';

const RUNS = runsFromEnv('ICAPKIT_POLICY_SKIP_RUNS', 600);
const EICAR = eicar();

interface SkipProfile {
  name: string;
  /** How the app writes its webhook route (`<hook>/:x`). */
  hook: string;
  /** The request the near-skip requests start from: `<first>/<second>` (default: the hook and `github`). */
  near?: readonly [string, string];
  skip: NonNullable<PolicyRule['match']>;
  /** The skip rule restated over what the framework read: may this handler get the body unscanned? */
  accepts(d: Delivery): boolean;
}

const webhook = (d: Delivery) => d.route === 'webhook';

function decoded(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

/**
 * The path the framework handed the handler, as it is and decoded, matches `test`: a route the
 * app has not written under the rule's path (the catch-all) may get what the rule names, e.g.
 * `/webhooks/x/` on routers that tell a trailing slash apart.
 */
const pathFits = (d: Delivery, test: (p: string) => boolean) => test(d.path) && test(decoded(d.path));
const underPrefix = (prefix: string) => (p: string) =>
  p === prefix || p.startsWith(prefix.endsWith('/') ? prefix : `${prefix}/`);
/** The webhook route, or another whose path is under `prefix` (a skip prefix matches whole segments). */
const routedUnder = (prefix: string) => (d: Delivery) => webhook(d) || pathFits(d, underPrefix(prefix));

const PROFILES: SkipProfile[] = [
  {
    name: 'prefix+query+header',
    hook: '/webhooks',
    skip: {
      path: { prefix: ['/webhooks'] },
      query: [{ name: 'type', value: 'webhook' }],
      headers: [{ name: 'X-Source', value: 'github' }],
    },
    accepts: (d) => routedUnder('/webhooks')(d) && d.type === 'webhook' && d.source === 'github',
  },
  {
    name: 'exact+method',
    hook: '/webhooks',
    skip: { method: ['POST'], path: { exact: ['/webhooks/github'] } },
    accepts: (d) => webhook(d) && d.param === 'github' && d.method === 'POST',
  },
  {
    name: 'suffix',
    hook: '/webhooks',
    skip: { path: { suffix: ['/github'] } },
    accepts: (d) => (webhook(d) && d.param === 'github') || pathFits(d, (p) => p.endsWith('/github')),
  },
  {
    name: 'regex',
    hook: '/webhooks',
    skip: { path: { regex: ['^/webhooks/[a-z]+$'] } },
    accepts: (d) =>
      (webhook(d) && /^[a-z]+$/.test(d.param ?? '')) || pathFits(d, (p) => /^\/webhooks\/[a-z]+$/.test(p)),
  },
  {
    name: 'case-insensitive prefix /WebHooks + query',
    hook: '/WebHooks',
    skip: { path: { prefix: ['/WebHooks'] }, query: [{ name: 'type', value: 'webhook' }] },
    accepts: (d) => routedUnder('/WebHooks')(d) && d.type === 'webhook',
  },
  {
    name: 'case-sensitive prefix',
    hook: '/webhooks',
    skip: { path: { prefix: ['/webhooks'], caseSensitive: true } },
    accepts: routedUnder('/webhooks'),
  },
  {
    name: 'negated prefix (skip all but /acme)',
    hook: '/webhooks',
    near: ['/acme', 'upload'],
    skip: { path: { prefix: ['/acme'], negate: true } },
    // Express and the Koa app route /ACME/upload as /:tenant/upload too: no reading of it is under /acme.
    accepts: (d) =>
      !(d.route === 'upload' && decoded(d.param ?? '').toLowerCase() === 'acme') &&
      ![d.path, decoded(d.path)].some((p) => p.toLowerCase().startsWith('/acme')),
  },
  {
    name: 'query prefix only',
    hook: '/webhooks',
    skip: { query: [{ name: 'type', value: { prefix: ['web'] } }] },
    accepts: (d) => typeof d.type === 'string' && d.type.startsWith('web'),
  },
  {
    name: 'query exact only',
    hook: '/webhooks',
    skip: { query: [{ name: 'type', value: 'webhook' }] },
    accepts: (d) => d.type === 'webhook',
  },
  {
    name: 'query negated (skip unless type=upload)',
    hook: '/webhooks',
    skip: { query: [{ name: 'type', value: { exact: ['upload'], negate: true } }] },
    accepts: (d) => typeof d.type === 'string' && d.type.toLowerCase() !== 'upload',
  },
  {
    name: 'query absent',
    hook: '/webhooks',
    skip: { query: [{ name: 'type', present: false }] },
    accepts: (d) => d.type === undefined,
  },
  {
    name: 'header negated (skip unless X-Source: evil)',
    hook: '/webhooks',
    skip: { headers: [{ name: 'X-Source', value: { exact: ['evil'], negate: true } }] },
    accepts: (d) => typeof d.source === 'string' && d.source.toLowerCase() !== 'evil',
  },
  {
    name: 'header absent',
    hook: '/webhooks',
    skip: { headers: [{ name: 'X-Source', present: false }] },
    accepts: (d) => d.source === undefined,
  },
  {
    name: 'header only',
    hook: '/webhooks',
    skip: { headers: [{ name: 'X-Source', value: 'github' }] },
    accepts: (d) => d.source === 'github',
  },
  {
    name: 'host',
    hook: '/webhooks',
    skip: { host: ['static.example.com'] },
    accepts: (d) => d.hostname === 'static.example.com',
  },
  {
    name: 'host wildcard',
    hook: '/webhooks',
    skip: { host: ['*.example.com'] },
    accepts: (d) =>
      typeof d.hostname === 'string' &&
      d.hostname.length > '.example.com'.length &&
      d.hostname.toLowerCase().endsWith('.example.com'),
  },
  {
    name: 'method',
    hook: '/webhooks',
    skip: { method: ['PUT'] },
    accepts: (d) => d.method === 'PUT',
  },
];

// ---------------------------------------------------------------------------------------------
// The request grammar

const SEGMENTS = [
  'webhooks',
  'WebHooks',
  'WEBHOOKS',
  'webhooksx',
  'webhooks;x',
  'web%68ooks',
  'webhooks%2Fgithub',
  'webhooks%252Fgithub',
  'webhooks%5Cgithub',
  'github',
  'GitHub',
  'git%68ub',
  'github;v=1',
  'github%00',
  'github%20',
  'github.',
  'abc',
  'acme',
  'upload',
  'UPLOAD',
  '..',
  '.',
  '%2e%2e',
  '%2E',
  '',
  'hook',
  'webhooks#',
  '%23',
  'github%3F',
  'gith\xfcb',
  'webhooks%E2%80%8B',
  '%77ebhooks',
  '%57ebhooks',
  'webhoo%6Bs',
  'webhoo\u212As',
];
const SEPARATORS = ['/', '/', '/', '/', '//', '\\', '%2F', '%5C', '/./', '/../'];
const PATH_ENDS = [
  '',
  '',
  '',
  '/',
  ';',
  ';x',
  '/.',
  '%20',
  '?',
  '#',
  '#/../../acme/upload',
  '%23/../acme/upload',
  '%3F',
];
const QUERY_NAMES = [
  'type',
  'type',
  'type',
  'TYPE',
  'Type',
  'type[]',
  'type[0]',
  'type[x]',
  '[type]',
  'type.x',
  'type]',
  '?type',
  'typ%65',
  'type%5B%5D',
  'type%00',
  'ty+pe',
  'type+',
  '_method',
  'a',
  '%74ype',
  'type%5b0%5d',
  'type[',
  'type[[]]',
  'type%3D',
  '__proto__',
  'type\xa0',
  '[type]x',
  '%5Btype%5Dtype',
  '[ty]pe',
];
const QUERY_VALUES = [
  'webhook',
  'webhook',
  'webhook',
  'Webhook',
  'WEBHOOK',
  'webhook]=x',
  'web%68ook',
  'webhook%00',
  'webhook+',
  'webhook,upload',
  'webhooks',
  'upload',
  '',
  'PUT',
  'webhook#x',
  'webhook?type=upload',
  'webhook%26type%3Dupload',
  'webhook%',
  'webhook%2',
  'webhook%C0',
  'web\xe9hook',
  'w%65b%',
  '%77eb%C0',
  'w%65bhook%',
  'webhook%FF',
  'up%6Coad%',
  '%75pload%C0',
];
const QUERY_SEPARATORS = ['&', '&', '&', ';', '&&', '&amp;'];
const QUERY_OPENERS = ['?', '?', '?', '??', '?&', '?;'];
const FRAGMENTS = ['#', '#x', '#?type=upload', '#&type=upload'];
const LONG_LISTS = [998, 999, 1000, 1001];

const SOURCES = [
  'evil',
  'Evil',
  'evil, github',
  'github, evil',
  'github',
  'github',
  'github',
  'GitHub',
  'github ',
  ' github',
  'github, other',
  'github,github',
  '',
  'other',
];
const SOURCE_NAMES = ['X-Source', 'x-source', 'X-SOURCE'];
const HOSTS = [
  'static.example.com',
  'static.example.com',
  'STATIC.example.com',
  'static.example.com.',
  'static.example.com:80',
  'static.example.com:',
  'api.example.com',
  '127.0.0.1',
  'static.example.com@api.example.com',
  'api.example.com,static.example.com',
  'static.example.com/acme/upload?',
  'static.example.com#',
  'static.example.com%2e',
  '',
  'example.com',
  '.example.com',
  'API.EXAMPLE.COM',
  'a.example.com.evil.com',
  'evil.com',
  'a.example.com:8080',
  'a_b.example.com',
  '[::1]',
];
const ABSOLUTE = [
  'http://static.example.com',
  'http://api.example.com',
  'http://h?x',
  'HTTP://static.example.com',
  'https://static.example.com',
  'javascript://static.example.com',
  'foo://static.example.com',
  'http://static.example.com:80',
  'http://u@static.example.com',
];
const METHODS = ['POST', 'POST', 'POST', 'PUT', 'PATCH', 'DELETE'];
const OVERRIDES = ['X-HTTP-Method-Override', 'X-HTTP-Method', 'X-Method-Override'];

const pick = <T>(list: readonly T[]) => fc.constantFrom(...list);
/** `usual` `weight` times out of `weight + 1`, else a value of `other`. */
const mostly = <T, U>(usual: T, other: fc.Arbitrary<U>, weight: number): fc.Arbitrary<T | U> =>
  fc.oneof({ arbitrary: fc.constant(usual), weight }, { arbitrary: other, weight: 1 });

const pathArb = fc
  .tuple(
    fc.array(fc.tuple(pick(SEPARATORS), pick(SEGMENTS)), { minLength: 1, maxLength: 4 }),
    pick(PATH_ENDS),
  )
  .map(([parts, end]) => parts.map(([sep, seg]) => sep + seg).join('') + end);

const queryArb = fc.option(
  fc
    .tuple(
      pick(QUERY_OPENERS),
      fc.array(
        fc.tuple(
          pick(QUERY_NAMES),
          fc.option(pick(QUERY_VALUES), { nil: undefined }),
          pick(QUERY_SEPARATORS),
        ),
        {
          minLength: 1,
          maxLength: 4,
        },
      ),
      mostly(undefined, pick(LONG_LISTS), 7),
    )
    .map(([open, params, long]) => {
      let q = open;
      params.forEach(([name, value, sep], i) => {
        q += (i === 0 ? '' : sep) + name + (value === undefined ? '' : `=${value}`);
      });
      if (long !== undefined) q += '&x=1'.repeat(long);
      return q;
    }),
  { nil: '' },
);

const headersArb = fc
  .record({
    sources: fc.array(fc.tuple(pick(SOURCE_NAMES), pick(SOURCES)), { maxLength: 2 }),
    host: pick(HOSTS),
    forwarded: mostly(undefined, pick(['static.example.com', 'api.example.com']), 5),
    override: mostly(undefined, fc.tuple(pick(OVERRIDES), pick(['PUT', 'POST', 'GET'])), 5),
  })
  .map(({ sources, host, forwarded, override }) => {
    let h = `Host: ${host}\r\n`;
    for (const [name, value] of sources) h += `${name}: ${value}\r\n`;
    if (forwarded !== undefined) h += `X-Forwarded-Host: ${forwarded}\r\n`;
    if (override !== undefined) h += `${override[0]}: ${override[1]}\r\n`;
    return h;
  });

/** A request head (everything up to the blank line but Content-Length and Connection). */
const requestArb = fc
  .record({
    method: pick(METHODS),
    absolute: mostly(undefined, pick(ABSOLUTE), 5),
    path: pathArb,
    query: queryArb,
    fragment: mostly('', pick(FRAGMENTS), 7),
    headers: headersArb,
  })
  .map(
    ({ method, absolute, path, query, fragment, headers }) =>
      `${method} ${absolute ?? ''}${path}${query}${fragment} HTTP/1.1\r\n${headers}Content-Type: application/octet-stream\r\n`,
  );

/** How a request near the skips writes the webhook prefix. */
const HOOKS = [
  '/webhooks',
  '/WebHooks',
  '/WEBHOOKS',
  '/web%68ooks',
  '//webhooks',
  '/./webhooks',
  '/x/../webhooks',
  '/x/..%2Fwebhooks',
  '\\webhooks',
  '/webhooks/.',
  '/webhooks;x',
  '/webhooks%2F..',
  '/%2e/webhooks',
  '/webhooksx',
];
const paramArb = fc.tuple(pick(QUERY_NAMES), fc.option(pick(QUERY_VALUES), { nil: undefined }));

/**
 * A request near the skips: `POST /webhooks/github?type=webhook` with `Host: static.example.com`
 * and `X-Source: github`, each part kept (most often) or respelt from the grammar, and more
 * parameters, headers and path segments added around them: where a spelling the policy and a
 * framework read apart meets every other criterion of a skip.
 */
const nearArb = ([hook, second]: readonly [string, string]) =>
  fc
    .record({
      method: mostly('POST', pick(METHODS), 2),
      absolute: mostly('', pick(ABSOLUTE), 5),
      hook: mostly(hook, pick(HOOKS), 2),
      param: mostly(second, pick(SEGMENTS), 2),
      extra: mostly(
        [],
        fc.array(fc.tuple(pick(SEPARATORS), pick(SEGMENTS)), { minLength: 1, maxLength: 2 }),
        3,
      ),
      end: mostly('', pick(PATH_ENDS), 2),
      opener: mostly('?', pick(QUERY_OPENERS), 3),
      before: mostly([], fc.array(paramArb, { minLength: 1, maxLength: 2 }), 2),
      typeName: mostly('type', pick(QUERY_NAMES), 3),
      typeValue: mostly('webhook', pick(QUERY_VALUES), 2),
      after: mostly([], fc.array(paramArb, { minLength: 1, maxLength: 2 }), 2),
      separator: mostly('&', pick(QUERY_SEPARATORS), 2),
      long: mostly(undefined, pick(LONG_LISTS), 9),
      fragment: mostly('', pick(FRAGMENTS), 5),
      sources: mostly(
        [['X-Source', 'github']] as Array<[string, string]>,
        fc.array(fc.tuple(pick(SOURCE_NAMES), pick(SOURCES)), { minLength: 0, maxLength: 2 }),
        2,
      ),
      host: mostly('static.example.com', pick(HOSTS), 2),
      forwarded: mostly(undefined, pick(['static.example.com', 'api.example.com']), 7),
      override: mostly(undefined, fc.tuple(pick(OVERRIDES), pick(['PUT', 'POST', 'GET'])), 7),
    })
    .map((r) => {
      const params: Array<readonly [string, string | undefined]> = [
        ...r.before,
        [r.typeName, r.typeValue],
        ...r.after,
      ];
      let query = r.opener + params.map(([n, v]) => (v === undefined ? n : `${n}=${v}`)).join(r.separator);
      if (r.long !== undefined) query += '&x=1'.repeat(r.long);
      const path = `${r.hook}/${r.param}${r.extra.map(([sep, seg]) => sep + seg).join('')}${r.end}`;
      let head = `${r.method} ${r.absolute}${path}${query}${r.fragment} HTTP/1.1\r\nHost: ${r.host}\r\n`;
      for (const [name, value] of r.sources) head += `${name}: ${value}\r\n`;
      if (r.forwarded !== undefined) head += `X-Forwarded-Host: ${r.forwarded}\r\n`;
      if (r.override !== undefined) head += `${r.override[0]}: ${r.override[1]}\r\n`;
      return `${head}Content-Type: application/octet-stream\r\n`;
    });

const caseArb = fc.nat(PROFILES.length - 1).chain((profile) =>
  fc.record({
    profile: fc.constant(profile),
    head: fc.oneof(
      { arbitrary: requestArb, weight: 1 },
      { arbitrary: nearArb(PROFILES[profile]!.near ?? [PROFILES[profile]!.hook, 'github']), weight: 3 },
    ),
  }),
);

/**
 * Bypasses the property found (campaign-bq), kept as fixed cases: [id, what, profile, head].
 */
const EXAMPLES: Array<[string, string, string, string]> = [
  [
    'BQ1',
    "an absolute-form authority url.parse (Express, Koa) cuts at '%'",
    'case-sensitive prefix',
    'POST http://static.example.com%2Fwebhooks/webhooks HTTP/1.1\r\nHost: static.example.com\r\nContent-Type: application/octet-stream\r\n',
  ],
  [
    'BQ1',
    "an absolute-form authority url.parse (Express, Koa) cuts at ';'",
    'prefix+query+header',
    'POST http://h;x/webhooks/x?type=webhook HTTP/1.1\r\nHost: static.example.com\r\nX-Source: github\r\nContent-Type: application/octet-stream\r\n',
  ],
  [
    'BQ1',
    "an absolute-form authority url.parse (Express, Koa) cuts at a ':' before no port",
    'regex',
    'POST http://h:80x/webhooks/abc HTTP/1.1\r\nHost: static.example.com\r\nContent-Type: application/octet-stream\r\n',
  ],
  [
    'BQ2',
    'a query value some escape of which does not decode: qs (Express 4) and fast-querystring (Fastify) keep it as sent',
    'query prefix only',
    'POST /webhooks/github?type=w%65bhook% HTTP/1.1\r\nHost: static.example.com\r\nX-Source: github\r\nContent-Type: application/octet-stream\r\n',
  ],
  [
    'BQ3',
    'an absolute-form target of another scheme than http(s): find-my-way routes it as it is, url.parse reads javascript: as hostless',
    'prefix+query+header',
    'POST javascript://static.example.com/webhooks/x?type=webhook HTTP/1.1\r\nHost: static.example.com\r\nX-Source: github\r\nContent-Type: application/octet-stream\r\n',
  ],
  [
    'BQ3',
    'an absolute-form target of another scheme than http(s): find-my-way routes it as it is',
    'case-sensitive prefix',
    'POST foo://static.example.com/webhooks/x HTTP/1.1\r\nHost: static.example.com\r\nContent-Type: application/octet-stream\r\n',
  ],
  [
    'BQ4',
    'a name qs reads by its leading [segment] whatever follows: [type]x is type to Express 4',
    'query exact only',
    'POST /webhooks/x?[type]x=upload&type=webhook HTTP/1.1\r\nHost: static.example.com\r\nContent-Type: application/octet-stream\r\n',
  ],
  [
    'BQ4',
    'a name qs reads by its leading [segment] whatever follows: [type]type is type to Express 4',
    'query absent',
    'POST /webhooks/x?%5Btype%5Dtype=upload HTTP/1.1\r\nHost: static.example.com\r\nContent-Type: application/octet-stream\r\n',
  ],
  [
    'BQ6',
    "a ';' before the query: find-my-way with useSemicolonDelimiter (Fastify 4's default) starts the query there",
    'query exact only',
    'POST /webhooks/x;type=upload?type=webhook HTTP/1.1\r\nHost: static.example.com\r\nContent-Type: application/octet-stream\r\n',
  ],
  [
    'BQ6',
    "a ';' and no query: find-my-way with useSemicolonDelimiter reads one from the ';'",
    'query absent',
    'POST /webhooks/x;type=upload HTTP/1.1\r\nHost: static.example.com\r\nContent-Type: application/octet-stream\r\n',
  ],
  [
    'BQ7',
    "a ';' in the path: find-my-way with useSemicolonDelimiter routes the path up to it",
    'suffix',
    'POST /webhooks;x/github HTTP/1.1\r\nHost: static.example.com\r\nContent-Type: application/octet-stream\r\n',
  ],
  [
    'BQ7',
    "a ';' in the path: find-my-way with useSemicolonDelimiter routes /acme/upload;x/github to /:tenant/upload",
    'suffix',
    'POST /acme/upload;x/github HTTP/1.1\r\nHost: static.example.com\r\nContent-Type: application/octet-stream\r\n',
  ],
];

// ---------------------------------------------------------------------------------------------

let icap: IcapTestServer;
beforeAll(async () => {
  icap = await startIcapServer();
});
afterAll(() => icap?.close());

const hasEicar = (b: Buffer) => b.includes(EICAR);

describe.each(SKIP_FRAMEWORKS)('%s', (framework: SkipFramework) => {
  const apps: SkipApp[] = [];
  beforeAll(async () => {
    for (const p of PROFILES) {
      apps.push(
        await startSkipApp(
          framework,
          {
            name: `skip-${p.name}`,
            poolGroup: icap.url(),
            serviceUri: '/avscan',
            startupCheck: 'off',
            rules: [
              { name: 'skip', match: p.skip, action: 'skip' },
              { name: 'scan-everything', action: 'enable-icap' },
            ],
          },
          p.hook,
        ),
      );
    }
  });
  afterAll(async () => {
    for (const a of apps) await a.close();
  });

  /** Sends the request with an EICAR body; every handler that got EICAR must be one the skip names. */
  async function check(profile: number, head: string): Promise<void> {
    const app = apps[profile]!;
    const p = PROFILES[profile]!;
    app.seen.length = 0;
    const bytes = Buffer.concat([
      Buffer.from(`${head}Content-Length: ${EICAR.length}\r\nConnection: close\r\n\r\n`, 'latin1'),
      EICAR,
    ]);
    await rawExchange(app.url, [bytes], { responses: 1, waitMs: 5000 });
    for (const d of app.seen) {
      if (!hasEicar(d.body)) continue;
      const { body: _body, ...reading } = d;
      expect(
        p.accepts(d),
        `${framework}, skip ${JSON.stringify(p.skip)}: EICAR reached the ${d.route} handler unscanned, ` +
          `read as ${JSON.stringify(reading)}; the request: ${JSON.stringify(head)}`,
      ).toBe(true);
    }
  }

  it.each(EXAMPLES)('%s: %s (%s)', async (_id, _what, profile, head) => {
    const i = PROFILES.findIndex((p) => p.name === profile);
    expect(i).toBeGreaterThanOrEqual(0);
    await check(i, head);
  });

  it('a handler gets EICAR unscanned only when the framework reads the request as the skip rule names it', async () => {
    await checkAsyncProperty(
      `policy-skip ${framework}`,
      fc.asyncProperty(caseArb, ({ profile, head }) => check(profile, head)),
      RUNS,
    );
  }, 120_000);
});
