/**
 * The request head checks without regular expressions (engine/request.ts): `pathOf` and
 * `encapsulationProblem` give the same answers as the patterns they replaced, for any target
 * and any header name or value (fast-check), including pseudo-headers, control characters,
 * surrounding whitespace and characters above 0xff.
 */
import { Readable } from 'node:stream';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  encapsulationProblem,
  type HttpRequestFacts,
  pathOf,
  requestFacts,
} from '../../packages/core/src/engine/request.js';
import { Headers, isToken } from '../../packages/core/src/protocol/headers.js';

/** pathOf as it was written with regular expressions. */
function pathOfByRegex(target: string): string {
  let t = target;
  const abs = /^[a-z][a-z0-9+.-]*:\/\/[^/?#]*/i.exec(t);
  if (abs !== null) t = t.slice(abs[0].length) || '/';
  const q = t.search(/[?#]/);
  return q === -1 ? t : t.slice(0, q);
}

/** The header loop of encapsulationProblem as it was written with regular expressions. */
function headerProblemByRegex(pairs: Array<[string, string]>): string | undefined {
  const UNSAFE_VALUE = /[\x00-\x08\x0a-\x1f\x7f]|^[ \t]|[ \t]$/;
  for (const [name, value] of pairs) {
    const field = name.startsWith(':') ? name.slice(1) : name;
    if (!isToken(field)) return 'a header name is not a token';
    if (UNSAFE_VALUE.test(value))
      return `the ${name} header has a control character or surrounding whitespace`;
    for (let i = 0; i < value.length; i++) {
      if (value.charCodeAt(i) > 0xff) return `the ${name} header has a character that is not one byte`;
    }
  }
  return undefined;
}

function facts(method: string, target: string, pairs: Array<[string, string]>): HttpRequestFacts {
  return {
    method,
    target,
    host: undefined,
    headers: new Headers(pairs),
    clientIp: undefined,
    hasBody: false,
    headerPairs: pairs,
    httpVersion: '1.1',
    scheme: 'http',
    contentLength: undefined,
    chunked: false,
    contentCoding: 'identity',
    transferCoding: undefined,
    fileName: undefined,
  };
}

/** Characters that matter to the checks, and any other. */
const interesting = fc.constantFrom(
  ' ',
  '\t',
  '\r',
  '\n',
  '\x00',
  '\x08',
  '\x0b',
  '\x1f',
  '\x7f',
  '\x80',
  '\xff',
  '\u0100',
  '\u20ac',
  '\ud83d',
  ':',
  '/',
  '?',
  '#',
  '%',
  'a',
  'Z',
  '0',
  '-',
  '!',
  '"',
  '(',
  '@',
  '[',
  '{',
  '~',
  '.',
  'http://',
  'HTTPS://',
  'x+y.z-w://h',
);
const text = fc.oneof(
  fc.string({ maxLength: 12 }),
  fc.array(interesting, { maxLength: 8 }).map((a) => a.join('')),
  fc.string({ unit: 'binary', maxLength: 8 }),
);

describe('request head checks without regular expressions', () => {
  it('pathOf finds what its patterns found', () => {
    fc.assert(
      fc.property(text, text, (a, b) => {
        for (const t of [a, `/${a}`, `${a}${b}`, `http://${a}/${b}`, `${a}?${b}#${a}`])
          expect(pathOf(t)).toBe(pathOfByRegex(t));
      }),
      { numRuns: 3000 },
    );
  });

  it('the header names and values are judged as the patterns judged them', () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.tuple(
            fc.oneof(
              text,
              text.map((n) => `:${n}`),
            ),
            text,
          ),
          { minLength: 1, maxLength: 4 },
        ),
        (pairs) => {
          // Only the header loop can answer: a valid method and target, no Host or pseudo-header counted twice.
          const clean = pairs.filter(([n]) => !/^:?(host|authority|path|method|scheme)$/i.test(n));
          const got = encapsulationProblem(facts('POST', '/upload', clean), false);
          const want = headerProblemByRegex(clean);
          if (want !== undefined) expect(got).toBe(want);
          else
            expect(got === undefined || got.startsWith('the request head cannot be encapsulated')).toBe(true);
        },
      ),
      { numRuns: 5000 },
    );
  });

  it('the method and the target are judged as the patterns judged them', () => {
    fc.assert(
      fc.property(text, text, (method, target) => {
        const got = encapsulationProblem(facts(method, target, []), false);
        if (!isToken(method)) {
          expect(got).toBe('the request method is not a token');
          return;
        }
        if (!/^[\x21-\x7e]+$/.test(target)) {
          expect(got).toBe('the request target contains characters other than visible ASCII');
          return;
        }
        const absoluteForm = /^[a-z][a-z0-9+.-]*:\/\//i.test(target);
        if (!absoluteForm && !target.startsWith('/') && !(target === '*' && method === 'OPTIONS'))
          expect(got).toBe('the request target is neither a path nor an absolute URI');
        else expect(got).not.toBe('the request target is neither a path nor an absolute URI');
      }),
      { numRuns: 5000 },
    );
  });

  it('a Host is judged as the authority pattern judged it', () => {
    const AUTHORITY = /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]*)(?::[0-9]{0,5})?$/;
    const hosts = fc.oneof(
      text,
      fc
        .tuple(fc.stringMatching(/^[A-Za-z0-9.-]{0,12}$/), fc.option(fc.stringMatching(/^[0-9]{0,7}$/)))
        .map(([h, port]) => (port === null ? h : `${h}:${port}`)),
      fc.constantFrom('127.0.0.1:3000', 'localhost', '[::1]:8080', 'a:1:2', ':', '', 'x:123456', 'h_o~st:1'),
    );
    fc.assert(
      fc.property(hosts, (host) => {
        const got = encapsulationProblem(facts('POST', '/upload', [['Host', host]]), false);
        if (!AUTHORITY.test(host)) expect(got).toBe('the Host of the request is not a valid host');
        else expect(got).not.toBe('the Host of the request is not a valid host');
      }),
      { numRuns: 5000 },
    );
  });

  it('a Content-Length is read as the length pattern read it', () => {
    const values = fc.oneof(
      text,
      fc.stringMatching(/^[0-9]{0,17}$/),
      fc.constantFrom('0', '10240', '', '+1', '1 ', '١'),
    );
    fc.assert(
      fc.property(values, (value) => {
        const req = new Readable({ read() {} });
        Object.assign(req, {
          method: 'POST',
          url: '/upload',
          httpVersion: '1.1',
          headers: {},
          rawHeaders: ['Host', 'x', 'Content-Length', value],
        });
        // The pattern on the field as it is, else on its one comma-separated value, trimmed.
        const values = new Set(value.split(',').map((v) => v.trim()));
        const only = values.size === 1 ? [...values][0]! : '';
        const want = /^\d{1,15}$/.test(value)
          ? Number(value)
          : /^\d{1,15}$/.test(only)
            ? Number(only)
            : undefined;
        expect(requestFacts(req as never).contentLength).toBe(want);
      }),
      { numRuns: 3000 },
    );
  });

  it('answers the usual request head and its known refusals as before', () => {
    const pairs: Array<[string, string]> = [
      ['Host', '127.0.0.1:3000'],
      ['Content-Type', 'application/octet-stream'],
      ['Content-Length', '10240'],
    ];
    expect(encapsulationProblem(facts('POST', '/upload?a=1', pairs), false)).toBeUndefined();
    expect(encapsulationProblem(facts('POST', '/x', [['X-A', ' lead']]), false)).toBe(
      'the X-A header has a control character or surrounding whitespace',
    );
    expect(encapsulationProblem(facts('POST', '/x', [['X-A', 'tail\t']]), false)).toBe(
      'the X-A header has a control character or surrounding whitespace',
    );
    expect(encapsulationProblem(facts('POST', '/x', [['X-A', 'in\tside']]), false)).toBeUndefined();
    expect(encapsulationProblem(facts('POST', '/x', [['X-A', '\u20ac\x01']]), false)).toBe(
      'the X-A header has a control character or surrounding whitespace',
    );
    expect(encapsulationProblem(facts('POST', '/x', [['X-A', 'a\u20ac']]), false)).toBe(
      'the X-A header has a character that is not one byte',
    );
    expect(encapsulationProblem(facts('POST', '/x', [[':', 'v']]), false)).toBe(
      'a header name is not a token',
    );
    expect(encapsulationProblem(facts('POST', '/x', [['', 'v']]), false)).toBe(
      'a header name is not a token',
    );
    expect(encapsulationProblem(facts('GE T', '/x', []), false)).toBe('the request method is not a token');
    expect(encapsulationProblem(facts('POST', '', []), false)).toBe(
      'the request target contains characters other than visible ASCII',
    );
    expect(pathOf('HTTP://h:1/p/q?x#y')).toBe('/p/q');
    expect(pathOf('http://h')).toBe('/');
    expect(pathOf('/a#b?c')).toBe('/a');
  });
});
