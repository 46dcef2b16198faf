/**
 * Fuzzing of the ICAP request encoder: generated REQMOD, RESPMOD and OPTIONS requests
 * (methods, ICAP URIs, targets, header names and values in ASCII, Latin-1 and UTF-8, CR/LF and
 * NUL injection attempts, HTTP/2 pseudo-headers, hop-by-hop headers, the three header input
 * forms, bodies of random size, chunking and preview) go through the encoder the way IcapClient
 * calls it. Either the encoder refuses with ICAP_ERR_INVALID_ARGUMENT, which it must do exactly
 * when something it would write is unsafe, or:
 *
 * - byte inspection: every `Encapsulated` offset points exactly at the start of its section
 *   (and the body offset at the end of the head), sections end with their empty line, no
 *   header line carries CR, LF or NUL, no hop-by-hop (or Connection-named, or pseudo) header
 *   is encapsulated, `Content-Length` is the real body length or absent;
 * - the embedded server's parser (`IcapParser` in request mode, continuing after a preview as
 *   the server does) reads back the same method, URI, ICAP headers, HTTP head and body, in
 *   one piece or split anywhere.
 */
import { isUtf8 } from 'node:buffer';
import {
  CRLF,
  chunkHeader,
  encodeHttpRequestHead,
  encodeHttpResponseHead,
  encodeIcapRequest,
  IcapError,
  IcapErrorCodes,
  type IcapRequestMethod,
  LAST_CHUNK,
  LAST_CHUNK_IEOF,
} from '@icapkit/core';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type HeadSummary,
  outcome,
  type ParseEvent,
  runParser,
  trackConcat,
  untrackConcat,
} from './harness.js';
import { checkProperty, runsFor, split, timeoutFor } from './support.js';

beforeAll(trackConcat);
afterAll(untrackConcat);

// ---------------------------------------------------------------- the rules, independently

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const HOP_BY_HOP = [
  'connection',
  'keep-alive',
  'proxy-authenticate',
  'proxy-authorization',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'http2-settings',
];
const unsafeValue = (v: string) => /[\r\n\0]/.test(v);
/** A request target or ICAP URI: non-empty, no whitespace, no control character. */
const badTarget = (t: string) => t === '' || /[\s\x00-\x1f\x7f]/.test(t);
const trimOws = (s: string) => s.replace(/^[ \t]+/, '').replace(/[ \t]+$/, '');

// ---------------------------------------------------------------- generators

const TOKEN_CHARS = [..."!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"];
const tokenArb = fc.string({ unit: fc.constantFrom(...TOKEN_CHARS), minLength: 1, maxLength: 12 });
const INJECTIONS = ['\r\n', '\r', '\n', '\0', '\r\nX-Injected: 1', '\r\n\r\n', '\n\r\n'];

/** Usually `arb`; now and then the same with an injection spliced in at a random point. */
function maybeInjected(arb: fc.Arbitrary<string>, freq = 60): fc.Arbitrary<string> {
  return fc.oneof(
    { weight: freq, arbitrary: arb },
    {
      weight: 1,
      arbitrary: fc
        .tuple(arb, fc.constantFrom(...INJECTIONS), fc.nat())
        .map(([s, inj, at]) => s.slice(0, at % (s.length + 1)) + inj + s.slice(at % (s.length + 1))),
    },
  );
}

const valueUnit = fc.oneof(
  {
    weight: 10,
    arbitrary: fc.constantFrom(...Array.from({ length: 95 }, (_, i) => String.fromCharCode(0x20 + i))),
  },
  { weight: 2, arbitrary: fc.constantFrom('\t', ' ') },
  { weight: 2, arbitrary: fc.integer({ min: 0x80, max: 0xff }).map((c) => String.fromCharCode(c)) },
  {
    weight: 2,
    arbitrary: fc.string({ unit: 'binary', minLength: 1, maxLength: 1 }).filter((c) => !/[\r\n\0]/.test(c)),
  },
  { weight: 1, arbitrary: fc.constantFrom('\x01', '\x0b', '\x0c', '\x1f', '\x7f') },
);
const valueArb = maybeInjected(fc.string({ unit: valueUnit, maxLength: 30 }));

const badNameArb = fc.constantFrom('', 'Bad Name', 'X:Y', 'X\r\nY', 'é', 'X-A\0', ' X', '(x)');
const nameArb = fc.oneof({ weight: 80, arbitrary: tokenArb }, { weight: 1, arbitrary: badNameArb });

const hostValueArb = maybeInjected(
  fc.constantFrom('app.example', 'app.example:8443', '127.0.0.1', '[::1]:8080'),
);

const targetArb = maybeInjected(
  fc.oneof(
    { weight: 6, arbitrary: fc.webPath().map((p) => (p.startsWith('/') ? p : `/${p}`)) },
    { weight: 3, arbitrary: fc.webUrl({ withQueryParameters: true, withFragments: true }) },
    { weight: 1, arbitrary: fc.constantFrom('*', '/files/отчёт.pdf', '/caf\u00e9', '/\u0085') },
    { weight: 1, arbitrary: fc.constantFrom('/a b', '', '/\t', '/x\u00a0y') },
  ),
);

const methodArb = fc.oneof(
  { weight: 30, arbitrary: fc.constantFrom('POST', 'PUT', 'PATCH', 'GET', 'DELETE') },
  { weight: 8, arbitrary: tokenArb },
  { weight: 1, arbitrary: fc.constantFrom('PO ST', 'GET\r\n', '', 'é', 'A/B') },
);

const versionArb = fc.oneof(
  { weight: 20, arbitrary: fc.constantFrom(undefined, '1.1', '1.0', '2.0', '2', 'HTTP/1.1', 'HTTP/1.0') },
  { weight: 1, arbitrary: fc.constantFrom('3', '1.1\r\n', 'x') },
);

type Pair = [string, string];

/** HTTP request headers: end-to-end, hop-by-hop in any case, Connection lists, pseudo-headers, Content-Length. */
const httpHeadersArb: fc.Arbitrary<Pair[]> = fc
  .array(
    fc.oneof(
      { weight: 8, arbitrary: fc.tuple(nameArb, valueArb) },
      {
        weight: 3,
        arbitrary: fc.tuple(
          fc
            .tuple(fc.constantFrom(...HOP_BY_HOP), fc.boolean())
            .map(([n, upper]) =>
              upper ? n.toUpperCase() : n.replace(/(^|-)([a-z])/g, (m) => m.toUpperCase()),
            ),
          valueArb,
        ),
      },
      { weight: 1, arbitrary: fc.tuple(fc.constantFrom('Host', 'host'), hostValueArb) },
      {
        weight: 1,
        arbitrary: fc.tuple(fc.constantFrom('Content-Length', 'content-length'), fc.nat().map(String)),
      },
      {
        weight: 2,
        arbitrary: fc.oneof(
          fc.tuple(fc.constant(':method'), methodArb),
          fc.tuple(fc.constant(':path'), targetArb),
          fc.tuple(fc.constant(':authority'), hostValueArb),
          fc.tuple(fc.constant(':scheme'), fc.constantFrom('https', 'http\r\n')),
          fc.tuple(fc.constant(':protocol'), valueArb),
        ),
      },
    ),
    { maxLength: 10 },
  )
  .chain((pairs) => {
    // Sometimes a Connection header that names some of the others.
    const names = pairs.map(([n]) => n).filter((n) => TOKEN.test(n));
    return fc.option(fc.subarray(names.length === 0 ? ['x-hop'] : names), { freq: 3 }).chain((named) =>
      named === null
        ? fc.constant(pairs)
        : fc.nat({ max: pairs.length }).map((at) => {
            const out = [...pairs];
            out.splice(at, 0, ['Connection', ['keep-alive', ...named].join(', ')]);
            return out;
          }),
    );
  });

type HeaderForm = 'pairs' | 'flat' | 'object';

interface HttpRequestSpec {
  method: string;
  target: string;
  httpVersion: string | undefined;
  headers: Pair[];
  form: HeaderForm;
}

interface HttpResponseSpec {
  status: number;
  reason: string | undefined;
  httpVersion: string | undefined;
  headers: Pair[];
  form: HeaderForm;
}

interface RequestSpec {
  method: IcapRequestMethod;
  uri: string;
  host: string;
  extra: Pair[];
  userAgent: string | undefined;
  allow204: boolean | undefined;
  preview: number | undefined;
  hasBody: boolean;
  lengthKnown: boolean;
  httpRequest: HttpRequestSpec | null;
  httpResponse: HttpResponseSpec | null;
  body: Uint8Array;
  pieces: number[];
  feeds: number[];
}

const httpRequestArb: fc.Arbitrary<HttpRequestSpec> = fc.record({
  method: methodArb,
  target: targetArb,
  httpVersion: versionArb,
  headers: httpHeadersArb,
  form: fc.constantFrom<HeaderForm>('pairs', 'flat', 'object'),
});

const httpResponseArb: fc.Arbitrary<HttpResponseSpec> = fc.record({
  status: fc.oneof(
    { weight: 30, arbitrary: fc.constantFrom(200, 201, 204, 206, 302, 403, 404, 500) },
    { weight: 6, arbitrary: fc.integer({ min: 100, max: 999 }) },
    { weight: 1, arbitrary: fc.constantFrom(99, 1000, 200.5, Number.NaN, -1) },
  ),
  reason: fc.option(valueArb, { nil: undefined }),
  httpVersion: versionArb,
  headers: httpHeadersArb,
  form: fc.constantFrom<HeaderForm>('pairs', 'flat', 'object'),
});

const uriArb = maybeInjected(
  fc.oneof(
    {
      weight: 20,
      arbitrary: fc
        .tuple(
          fc.constantFrom('icap://127.0.0.1:1344', 'icaps://icap.example:11344', 'icap://[::1]:1344'),
          fc.webPath(),
          fc.option(fc.webQueryParameters(), { freq: 3 }),
        )
        .map(
          ([base, path, q]) =>
            `${base}${path.startsWith('/') ? path : `/${path}`}${q === null ? '' : `?${q}`}`,
        ),
    },
    { weight: 1, arbitrary: fc.constantFrom('icap://h/é', 'icap://h/\u0085') },
    { weight: 1, arbitrary: fc.constantFrom('icap://h/a b', '', 'icap://h/\t', 'icap://h/\u00a0') },
  ),
);

const requestArb: fc.Arbitrary<RequestSpec> = fc
  .constantFrom<IcapRequestMethod>('REQMOD', 'REQMOD', 'RESPMOD', 'OPTIONS')
  .chain((method) =>
    fc.record({
      method: fc.constant(method),
      uri: uriArb,
      host: maybeInjected(fc.constantFrom('127.0.0.1:1344', 'icap.example:1344', '[::1]:1344')),
      extra: fc.array(
        fc.oneof(
          { weight: 10, arbitrary: fc.tuple(nameArb, valueArb) },
          {
            weight: 1,
            arbitrary: fc.tuple(
              fc.constantFrom(
                'X-Client-IP',
                'Proxy-Authorization',
                'Encapsulated',
                'encapsulated',
                'Preview',
                'Allow',
                'Host',
              ),
              fc.oneof(valueArb, fc.constantFrom('null-body=0', 'req-body=0', '0', '204')),
            ),
          },
        ),
        { maxLength: 4 },
      ),
      userAgent: fc.option(maybeInjected(fc.constantFrom('icapkit/0.1.0', 'agent \u00e9', 'агент')), {
        nil: undefined,
      }),
      allow204: fc.option(fc.boolean(), { nil: undefined }),
      preview: fc.option(fc.oneof(fc.constantFrom(0, 1, 4096, 5000), fc.nat({ max: 400 })), {
        nil: undefined,
      }),
      hasBody: method === 'OPTIONS' ? fc.constant(false) : fc.boolean(),
      lengthKnown: fc.boolean(),
      httpRequest:
        method === 'OPTIONS'
          ? fc.constant(null)
          : method === 'REQMOD'
            ? httpRequestArb
            : fc.option(httpRequestArb, { freq: 2 }),
      httpResponse: method === 'RESPMOD' ? httpResponseArb : fc.constant(null),
      body: fc.oneof(
        { weight: 4, arbitrary: fc.uint8Array({ maxLength: 600 }) },
        {
          weight: 1,
          arbitrary: fc.integer({ min: 4000, max: 12_000 }).map((n) => new Uint8Array(n).fill(0x61)),
        },
      ),
      pieces: fc.array(fc.integer({ min: 1, max: 700 }), { minLength: 1, maxLength: 5 }),
      feeds: fc.array(fc.oneof(fc.integer({ min: 1, max: 9 }), fc.integer({ min: 10, max: 400 })), {
        minLength: 1,
        maxLength: 8,
      }),
    }),
  );

// ---------------------------------------------------------------- the encoder, as IcapClient calls it

function headerInput(pairs: Pair[], form: HeaderForm): Pair[] | string[] | Record<string, string | string[]> {
  if (form === 'pairs') return pairs;
  if (form === 'flat') return pairs.flat();
  // Null prototype, as Node's `headers` objects: `constructor` or `__proto__` are names like any other.
  const obj: Record<string, string | string[]> = Object.create(null);
  for (const [n, v] of pairs) {
    const prev = obj[n];
    obj[n] = prev === undefined ? v : Array.isArray(prev) ? [...prev, v] : [prev, v];
  }
  return obj;
}

/** The pairs the encoder is given, in order, after the input form is read. */
function inputPairs(pairs: Pair[], form: HeaderForm): Pair[] {
  const input = headerInput(pairs, form);
  if (Array.isArray(input)) return form === 'flat' ? pairs : (input as Pair[]);
  return Object.entries(input).flatMap(([n, v]) =>
    Array.isArray(v) ? v.map((x): Pair => [n, x]) : [[n, v] as Pair],
  );
}

interface Encoded {
  head: Buffer;
  reqHead: Buffer | undefined;
  resHead: Buffer | undefined;
}

function encode(spec: RequestSpec): Encoded {
  const contentLength = spec.hasBody ? (spec.lengthKnown ? spec.body.length : undefined) : 0;
  let reqHead: Buffer | undefined;
  let resHead: Buffer | undefined;
  if (spec.httpRequest !== null) {
    const r = spec.httpRequest;
    reqHead = encodeHttpRequestHead(
      {
        method: r.method,
        target: r.target,
        ...(r.httpVersion === undefined ? {} : { httpVersion: r.httpVersion }),
        headers: headerInput(r.headers, r.form),
      },
      // RESPMOD: the request head is context only; the length describes the response body.
      spec.method === 'REQMOD' ? { contentLength } : {},
    );
  }
  if (spec.httpResponse !== null) {
    const r = spec.httpResponse;
    resHead = encodeHttpResponseHead(
      {
        status: r.status,
        ...(r.reason === undefined ? {} : { reason: r.reason }),
        ...(r.httpVersion === undefined ? {} : { httpVersion: r.httpVersion }),
        headers: headerInput(r.headers, r.form),
      },
      { contentLength },
    );
  }
  const { head } = encodeIcapRequest({
    method: spec.method,
    uri: spec.uri,
    host: spec.host,
    httpRequestHead: reqHead,
    httpResponseHead: resHead,
    hasBody: spec.hasBody,
    preview: spec.hasBody ? spec.preview : undefined,
    allow204: spec.allow204,
    headers: spec.extra,
    userAgent: spec.userAgent,
  });
  return { head, reqHead, resHead };
}

/** The chunked body as the transaction writes it: preview chunks, `0` or `0; ieof`, the rest, `0`. */
function bodyBytes(spec: RequestSpec): { wire: Buffer; ieof: boolean; previewPart: Buffer; rest: Buffer } {
  const body = Buffer.from(spec.body);
  const chunks = (data: Buffer): Buffer[] => {
    const out: Buffer[] = [];
    let k = 0;
    for (let at = 0; at < data.length; ) {
      const n = spec.pieces[k++ % spec.pieces.length]!;
      const piece = data.subarray(at, at + n);
      out.push(chunkHeader(piece.length), piece, CRLF);
      at += n;
    }
    return out;
  };
  if (spec.preview === undefined) {
    return {
      wire: Buffer.concat([...chunks(body), LAST_CHUNK]),
      ieof: false,
      previewPart: body,
      rest: Buffer.alloc(0),
    };
  }
  const previewPart = body.subarray(0, spec.preview);
  const rest = body.subarray(spec.preview);
  if (body.length <= spec.preview) {
    return { wire: Buffer.concat([...chunks(body), LAST_CHUNK_IEOF]), ieof: true, previewPart, rest };
  }
  return {
    wire: Buffer.concat([...chunks(previewPart), LAST_CHUNK, ...chunks(rest), LAST_CHUNK]),
    ieof: false,
    previewPart,
    rest,
  };
}

// ---------------------------------------------------------------- the oracle

/** What the encoder must refuse (null: nothing), computed from the rules, not from the encoder. */
function mustRefuse(spec: RequestSpec): string | null {
  for (const [what, r] of [
    ['request', spec.httpRequest],
    ['response', spec.httpResponse],
  ] as const) {
    if (r === null) continue;
    const pairs = inputPairs(r.headers, r.form);
    if (what === 'request') {
      const req = r as HttpRequestSpec;
      let method = req.method;
      let target = req.target;
      for (const [n, v] of pairs) {
        if (n.toLowerCase() === ':method') method = v;
        if (n.toLowerCase() === ':path') target = v;
      }
      const kept = keptHeaders(pairs, undefined);
      const authority = pairs.filter(([n]) => n.toLowerCase() === ':authority').at(-1)?.[1];
      if (
        authority !== undefined &&
        !kept.some(([n]) => n.toLowerCase() === 'host') &&
        unsafeValue(authority)
      )
        return 'an :authority with CR/LF';
      for (const [n, v] of kept) {
        if (!TOKEN.test(n)) return `request header name ${JSON.stringify(n)}`;
        if (unsafeValue(v)) return `request header ${n} value`;
      }
      if (!TOKEN.test(method)) return 'HTTP method';
      if (badTarget(target)) return 'HTTP target';
    } else {
      const res = r as HttpResponseSpec;
      if (!Number.isInteger(res.status) || res.status < 100 || res.status > 999) return 'HTTP status';
      if (res.reason !== undefined && unsafeValue(res.reason)) return 'reason phrase';
      for (const [n, v] of keptHeaders(pairs, undefined)) {
        if (!TOKEN.test(n)) return `response header name ${JSON.stringify(n)}`;
        if (unsafeValue(v)) return `response header ${n} value`;
      }
    }
    const v = r.httpVersion;
    if (v !== undefined && !v.startsWith('2') && !/^(?:HTTP\/)?\d\.\d$/.test(v)) return 'HTTP version';
  }
  if (badTarget(spec.uri)) return 'ICAP URI';
  if (unsafeValue(spec.host)) return 'Host';
  for (const [n, v] of spec.extra) {
    if (!TOKEN.test(n)) return `ICAP header name ${JSON.stringify(n)}`;
    // The encoder's own framing headers: a caller's copy would come first and win.
    if (/^(?:encapsulated|preview)$/i.test(n)) return `ICAP header ${n} (framing)`;
    if (unsafeValue(v)) return `ICAP header ${n} value`;
  }
  if (spec.userAgent !== undefined && unsafeValue(spec.userAgent)) return 'User-Agent';
  return null;
}

/**
 * The field names the `Connection` headers list, lower-cased. An empty element (`Connection: `,
 * `a, , b`) names nothing: RFC 9110 §5.6.1 has recipients ignore empty list elements, so a
 * header called "" is not thereby hop-by-hop (and must still be refused as a bad name).
 */
function connectionTokens(pairs: Pair[]): Set<string> {
  return new Set(
    pairs
      .filter(([n]) => n.toLowerCase() === 'connection')
      .flatMap(([, v]) => v.split(',').map((t) => t.trim().toLowerCase()))
      .filter((t) => t !== ''),
  );
}

/** The end-to-end headers, in order: no hop-by-hop, none Connection names, no pseudo, no Content-Length. */
function keptHeaders(pairs: Pair[], contentLength: number | undefined): Pair[] {
  const named = connectionTokens(pairs);
  const kept = pairs.filter(([n]) => {
    const k = n.toLowerCase();
    return !n.startsWith(':') && !HOP_BY_HOP.includes(k) && !named.has(k) && k !== 'content-length';
  });
  if (contentLength !== undefined) kept.push(['Content-Length', String(contentLength)]);
  return kept;
}

/** How a string goes on the wire in a head that is UTF-8 when any character needs it. */
function charsetOf(text: string): 'utf8' | 'latin1' {
  for (let i = 0; i < text.length; i++) if (text.charCodeAt(i) > 0xff) return 'utf8';
  return 'latin1';
}

// ---------------------------------------------------------------- byte inspection

interface Inspected {
  icapLines: string[];
  entries: Array<[string, number]>;
  bodyStart: number;
}

function inspect(spec: RequestSpec, enc: Encoded): Inspected {
  const { head } = enc;
  const end = head.indexOf('\r\n\r\n');
  expect(end).toBeGreaterThan(0);
  const icapEnd = end + 4;
  const icapLines = head.toString('latin1', 0, end).split('\r\n');
  // No header line carries a stray CR or LF or a NUL: each line is `token: value`.
  for (const line of icapLines.slice(1)) expect(line).toMatch(/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+: [^\r\n\0]*$/);
  const encapLines = icapLines.filter((l) => /^encapsulated:/i.test(l));
  expect(encapLines).toHaveLength(1);
  const entries = encapLines[0]!
    .slice('Encapsulated: '.length)
    .split(', ')
    .map((e): [string, number] => {
      const m = /^([a-z-]+)=(\d+)$/.exec(e);
      expect(m).not.toBeNull();
      return [m![1]!, Number(m![2])];
    });
  const names = entries.map(([n]) => n);
  const sections: Buffer[] = [];
  if (enc.reqHead !== undefined) sections.push(enc.reqHead);
  if (enc.resHead !== undefined) sections.push(enc.resHead);
  const bodyName =
    spec.method === 'OPTIONS' || !spec.hasBody
      ? 'null-body'
      : spec.method === 'RESPMOD'
        ? 'res-body'
        : 'req-body';
  const wantNames = [
    ...(enc.reqHead === undefined ? [] : ['req-hdr']),
    ...(enc.resHead === undefined ? [] : ['res-hdr']),
    bodyName,
  ];
  expect(names).toEqual(wantNames);
  // Each offset is where its section starts; the last one is where the head ends.
  for (let k = 0; k < sections.length; k++) {
    const start = icapEnd + entries[k]![1];
    const stop = icapEnd + entries[k + 1]![1];
    const section = head.subarray(start, stop);
    expect(section.equals(sections[k]!)).toBe(true);
    expect(section.toString('latin1')).toMatch(
      names[k] === 'req-hdr' ? /^[^ ]+ [^ ]+ HTTP\/\d\.\d\r\n/ : /^HTTP\/\d\.\d \d{3}/,
    );
    expect(section.subarray(-4).toString('latin1')).toBe('\r\n\r\n');
    expect(section.indexOf('\r\n\r\n')).toBe(section.length - 4);
    inspectHttpSection(section, names[k] === 'req-hdr' ? spec.httpRequest! : spec.httpResponse!);
  }
  const bodyStart = icapEnd + entries.at(-1)![1];
  expect(bodyStart).toBe(head.length);
  return { icapLines, entries, bodyStart };
}

function inspectHttpSection(section: Buffer, from: HttpRequestSpec | HttpResponseSpec): void {
  const lines = section
    .toString('latin1', 0, section.length - 4)
    .split('\r\n')
    .slice(1);
  const names = lines.map((line) => {
    expect(line).toMatch(/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+: [^\r\n\0]*$/);
    return line.slice(0, line.indexOf(':')).toLowerCase();
  });
  const given = inputPairs(from.headers, from.form);
  const connectionNamed = connectionTokens(given);
  const fromAuthority = given.some(([n]) => n.toLowerCase() === ':authority');
  for (const n of names) {
    expect(HOP_BY_HOP).not.toContain(n);
    // Content-Length is the encoder's own (the real length), and Host may come from :authority,
    // even if Connection named the client's own fields of these names.
    if (n !== 'content-length' && !(n === 'host' && fromAuthority))
      expect(connectionNamed.has(n)).toBe(false);
  }
  expect(names.filter((n) => n === 'content-length').length).toBeLessThanOrEqual(1);
}

// ---------------------------------------------------------------- reading it back

function expectedEvents(spec: RequestSpec, enc: Encoded, body: ReturnType<typeof bodyBytes>): ParseEvent[] {
  // The ICAP head is written as UTF-8 when any character needs it, else byte for byte; the
  // server reads it as UTF-8 when the bytes are valid UTF-8, else as Latin-1.
  const icapBlock = enc.head.subarray(0, enc.head.indexOf('\r\n\r\n') + 4);
  const written = charsetOf(icapLinesText(spec));
  const readAs = written === 'utf8' || isUtf8(icapBlock) ? 'utf8' : 'latin1';
  const readIcap = (s: string) => Buffer.from(s, written).toString(readAs);
  const icapHeaders: Pair[] = [['Host', spec.host], ...spec.extra];
  if (spec.userAgent !== undefined) icapHeaders.push(['User-Agent', spec.userAgent]);
  if (spec.allow204) icapHeaders.push(['Allow', '204']);
  const previewSent = spec.hasBody && spec.preview !== undefined && spec.method !== 'OPTIONS';
  if (previewSent) icapHeaders.push(['Preview', String(spec.preview)]);
  const sections: Array<[string, number]> = [];
  let offset = 0;
  if (enc.reqHead !== undefined) {
    sections.push(['req-hdr', offset]);
    offset += enc.reqHead.length;
  }
  if (enc.resHead !== undefined) {
    sections.push(['res-hdr', offset]);
    offset += enc.resHead.length;
  }
  const bodyName =
    spec.method === 'OPTIONS' || !spec.hasBody
      ? 'null-body'
      : spec.method === 'RESPMOD'
        ? 'res-body'
        : 'req-body';
  const entries: Array<[string, number]> = [...sections, [bodyName, spec.method === 'OPTIONS' ? 0 : offset]];
  icapHeaders.push(['Encapsulated', entries.map(([n, o]) => `${n}=${o}`).join(', ')]);
  const head: HeadSummary = {
    kind: 'request',
    line: [spec.method, readIcap(spec.uri), 'ICAP/1.0'],
    headers: icapHeaders.map(([n, v]) => [n, trimOws(readIcap(v))]),
    encapsulated: entries,
    body: bodyName === 'null-body' ? null : bodyName,
    httpRequest: null,
    httpResponse: null,
  };
  if (spec.httpRequest !== null && enc.reqHead !== undefined) {
    const r = spec.httpRequest;
    const pairs = inputPairs(r.headers, r.form);
    let method = r.method;
    let target = r.target;
    let authority: string | undefined;
    for (const [n, v] of pairs) {
      const k = n.toLowerCase();
      if (k === ':method') method = v;
      else if (k === ':path') target = v;
      else if (k === ':authority') authority = v;
    }
    const kept = keptHeaders(pairs, spec.method === 'REQMOD' ? contentLengthOf(spec) : undefined);
    if (authority !== undefined && !kept.some(([n]) => n.toLowerCase() === 'host'))
      kept.unshift(['Host', authority]);
    const version =
      r.httpVersion === undefined || r.httpVersion.startsWith('2')
        ? 'HTTP/1.1'
        : r.httpVersion.startsWith('HTTP/')
          ? r.httpVersion
          : `HTTP/${r.httpVersion}`;
    head.httpRequest = httpSummary(`${method} ${target} ${version}`, kept, enc.reqHead, [
      method,
      target,
      version,
    ]);
  }
  if (spec.httpResponse !== null && enc.resHead !== undefined) {
    const r = spec.httpResponse;
    const kept = keptHeaders(inputPairs(r.headers, r.form), contentLengthOf(spec));
    const version =
      r.httpVersion === undefined || r.httpVersion.startsWith('2')
        ? 'HTTP/1.1'
        : r.httpVersion.startsWith('HTTP/')
          ? r.httpVersion
          : `HTTP/${r.httpVersion}`;
    const startLine =
      r.reason === undefined || r.reason === ''
        ? `${version} ${r.status}`
        : `${version} ${r.status} ${r.reason}`;
    head.httpResponse = httpSummary(startLine, kept, enc.resHead, [version, r.status, trimReason(startLine)]);
  }
  const events: ParseEvent[] = [{ type: 'head', head }];
  if (head.body === null) {
    events.push({ type: 'end', ieof: false });
    return events;
  }
  const hex = (b: Buffer) => (b.length === 0 ? [] : [{ type: 'body' as const, hex: b.toString('hex') }]);
  if (spec.preview === undefined) {
    events.push(...hex(Buffer.from(spec.body)), { type: 'end', ieof: false });
  } else if (body.ieof) {
    events.push(...hex(Buffer.from(spec.body)), { type: 'end', ieof: true });
  } else {
    events.push(...hex(body.previewPart), { type: 'end', ieof: false }, ...hex(body.rest), {
      type: 'end',
      ieof: false,
    });
  }
  return events;
}

function contentLengthOf(spec: RequestSpec): number | undefined {
  return spec.hasBody ? (spec.lengthKnown ? spec.body.length : undefined) : 0;
}

/** The reason phrase as the parser reads it from a response status line (Latin-1). */
function trimReason(startLine: string): string {
  const m = /^HTTP\/\d\.\d +\d{3}(?: (.*))?$/s.exec(startLine);
  return m?.[1] ?? '';
}

/** An encapsulated HTTP head as the parser reads it: always Latin-1, values OWS-trimmed. */
function httpSummary(startLine: string, pairs: Pair[], raw: Buffer, line: Array<string | number>) {
  const utf8 = charsetOf(`${startLine}${pairs.map(([n, v]) => n + v).join('')}`) === 'utf8';
  const read = (s: string) => Buffer.from(s, utf8 ? 'utf8' : 'latin1').toString('latin1');
  return {
    startLine: read(startLine),
    line: line.map((x) => (typeof x === 'string' ? read(x) : x)),
    headers: pairs.map(([n, v]): Pair => [n, trimOws(read(v))]),
    raw: raw.toString('hex'),
  };
}

function icapLinesText(spec: RequestSpec): string {
  return [spec.uri, spec.host, ...spec.extra.flat(), spec.userAgent ?? ''].join('');
}

// ---------------------------------------------------------------- properties

describe('ICAP encoder fuzzing', () => {
  const runs = runsFor(1);
  it(
    `refuses unsafe input with ICAP_ERR_INVALID_ARGUMENT, otherwise frames exactly what the server reads back (${runs} runs)`,
    () => {
      checkProperty(
        'encoder: requests round-trip through the server parser',
        fc.property(requestArb, (spec) => {
          const refuse = mustRefuse(spec);
          let enc: Encoded;
          try {
            enc = encode(spec);
          } catch (err) {
            if (!(err instanceof IcapError)) throw err;
            expect(err.code).toBe(IcapErrorCodes.INVALID_ARGUMENT);
            // It refused: the input had something unsafe in a place it would have written.
            expect(refuse, `refused (${err.message}) although nothing unsafe was given`).not.toBeNull();
            return;
          }
          expect(refuse, `accepted although the input has an unsafe ${refuse}`).toBeNull();
          inspect(spec, enc);
          const body = bodyBytes(spec);
          const wire =
            spec.method !== 'OPTIONS' && spec.hasBody ? Buffer.concat([enc.head, body.wire]) : enc.head;
          const whole = runParser('request', [wire], 'multi');
          const pieces = runParser('request', split(wire, spec.feeds), 'multi');
          expect(outcome(pieces)).toEqual(outcome(whole));
          expect(whole.error).toBeNull();
          expect(whole.events).toEqual(expectedEvents(spec, enc, body));
          expect(whole.leftover).toBe(0);
        }),
        runs,
      );
    },
    timeoutFor(runs, 3000),
  );

  it('chunkHeader writes the size in hex, below and above its cache', () => {
    checkProperty(
      'encoder: chunk headers',
      fc.property(fc.integer({ min: 1, max: 2 ** 40 }), (n) => {
        expect(chunkHeader(n).toString('latin1')).toBe(`${n.toString(16)}\r\n`);
      }),
      runsFor(1),
    );
  });
});

describe('ICAP encoder regressions found by fuzzing', () => {
  const base = { method: 'OPTIONS' as const, host: '127.0.0.1:1344', hasBody: false };

  it('refuses an ICAP URI that would split the request line', () => {
    // Found: `icap://h/a b` (and CR/LF) went into the request line as given; a service path
    // passed to IcapClient.request() could add ICAP headers of its own.
    for (const uri of ['icap://h/a b', 'icap://h/x\r\nX-Injected: 1', '', 'icap://h/\t', 'icap://h/\u00a0']) {
      expect(() => encodeIcapRequest({ ...base, uri })).toThrow(
        expect.objectContaining({ code: IcapErrorCodes.INVALID_ARGUMENT }),
      );
    }
    expect(encodeIcapRequest({ ...base, uri: 'icap://h/srv?x=%20' }).head.toString()).toMatch(
      /^OPTIONS icap:\/\/h\/srv\?x=%20 ICAP\/1\.0\r\n/,
    );
  });

  it('refuses caller headers named Encapsulated or Preview, which would frame the message for the server', () => {
    // Found: an `encapsulated: null-body=0` given in `headers` came before the encoder's own
    // Encapsulated; a server reads the first, so the encapsulated HTTP head became the next message.
    for (const name of ['Encapsulated', 'encapsulated', 'Preview']) {
      expect(() =>
        encodeIcapRequest({
          ...base,
          method: 'REQMOD',
          uri: 'icap://h/avscan',
          hasBody: true,
          httpRequestHead: encodeHttpRequestHead({ method: 'POST', target: '/' }),
          headers: [[name, 'null-body=0']],
        }),
      ).toThrow(expect.objectContaining({ code: IcapErrorCodes.INVALID_ARGUMENT }));
    }
  });

  it('an empty Connection element names nothing: a header called "" is still refused', () => {
    // Found in CI (seed 1546059235): the test's own model read `Connection: ` as naming a field
    // "" and so expected the encoder to drop a header of that name instead of refusing it. The
    // encoder was right; this pins both sides.
    for (const value of ['', ' , ', 'keep-alive, ,']) {
      expect(() =>
        encodeHttpRequestHead({
          method: 'POST',
          target: 'http://a.aa',
          headers: [
            ['Connection', value],
            ['', ''],
          ],
        }),
      ).toThrow(expect.objectContaining({ code: IcapErrorCodes.INVALID_ARGUMENT }));
    }
    const head = encodeHttpRequestHead({
      method: 'POST',
      target: '/',
      headers: [
        ['Connection', 'x-a, , X-B,'],
        ['X-A', '1'],
        ['x-b', '2'],
        ['X-C', '3'],
      ],
    }).toString('latin1');
    expect(head).toBe('POST / HTTP/1.1\r\nX-C: 3\r\n\r\n');
  });

  it('writes a reason phrase as given, whitespace at its end included', () => {
    // Found: `trimEnd()` dropped a trailing HTAB (and U+00A0, \v, \f) of the reason phrase.
    expect(encodeHttpResponseHead({ status: 200, reason: 'OK\t' }).toString('latin1')).toBe(
      'HTTP/1.1 200 OK\t\r\n\r\n',
    );
    expect(encodeHttpResponseHead({ status: 204 }).toString('latin1')).toBe('HTTP/1.1 204\r\n\r\n');
  });
});
