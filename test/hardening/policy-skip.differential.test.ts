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
 * The bypasses found (campaign-bq BQ1-BQ4, campaign-bt BT2) stay below as fixed cases (EXAMPLES).
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
import { nearArb, requestArb } from './policy-skip-grammar.js';

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

/** A profile, and a request from the free grammar or near its skip (policy-skip-grammar.ts). */
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
    'BT2',
    "an origin-form target '//user@host/...#': url.parse (Express, Koa) reads an authority, routes the rest",
    'negated prefix (skip all but /acme)',
    'POST //a@b/acme/upload# HTTP/1.1\r\nHost: static.example.com\r\nContent-Type: application/octet-stream\r\n',
  ],
  [
    'BT2',
    "the same after a backslash: '/\\user@host/...#'",
    'negated prefix (skip all but /acme)',
    'POST /\\a@b/acme/upload#x HTTP/1.1\r\nHost: static.example.com\r\nContent-Type: application/octet-stream\r\n',
  ],
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
