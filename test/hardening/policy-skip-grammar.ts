/**
 * The request grammar of policy-skip.differential.test.ts: request heads (everything up to the
 * blank line but Content-Length and Connection) written from spellings the policy and the
 * frameworks' routers, query and header parsers may read apart.
 */
import fc from 'fast-check';

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
export const requestArb = fc
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
export const nearArb = ([hook, second]: readonly [string, string]) =>
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
