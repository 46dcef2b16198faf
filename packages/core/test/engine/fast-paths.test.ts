/**
 * The engine's per-request shortcuts decide as the general code they stand in for: the head
 * check without a trial encoding, the `Preview` value without a regular expression, one
 * Content-Length field without the set of values.
 */
import { Readable } from 'node:stream';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { encapsulationProblem, requestFacts, type ScanRequest } from '../../src/engine/request.js';
import { previewOf } from '../../src/engine/scan/exchange.js';
import { encodeHttpRequestHead } from '../../src/protocol/encoder.js';

function fakeRequest(init: {
  method: string;
  url: string;
  httpVersion: string;
  rawHeaders: string[];
}): ScanRequest {
  const req = new Readable({ read() {} }) as ScanRequest;
  req.method = init.method;
  req.url = init.url;
  req.httpVersion = init.httpVersion;
  req.rawHeaders = init.rawHeaders;
  const headers: Record<string, string> = {};
  for (let i = 0; i + 1 < init.rawHeaders.length; i += 2)
    headers[init.rawHeaders[i]!.toLowerCase()] = init.rawHeaders[i + 1]!;
  req.headers = headers;
  req.socket = { remoteAddress: '127.0.0.1' };
  return req;
}

const piece = fc.constantFrom(
  'a',
  'Z',
  '0',
  '9',
  '-',
  '/',
  ':',
  ' ',
  '\t',
  '\r',
  '\n',
  '\x00',
  '\x7f',
  '%',
  '?',
  '@',
  '[',
  ']',
  '"',
  'é',
  '€',
  '*',
  '.',
  ',',
);
const text = fc.array(piece, { maxLength: 8 }).map((a) => a.join(''));
const name = fc.oneof(
  fc.constantFrom(
    'Host',
    'Content-Type',
    'Content-Length',
    'Connection',
    'X-A',
    ':authority',
    ':path',
    ':method',
    ':scheme',
    'Transfer-Encoding',
  ),
  text,
);

describe('encapsulationProblem without a trial encoding', () => {
  it('never passes a head the encoder refuses (so it decides as the trial encoding did)', () => {
    fc.assert(
      fc.property(
        fc.oneof(fc.constantFrom('POST', 'GET', 'OPTIONS'), text),
        fc.oneof(fc.constantFrom('/upload', '*', 'http://h/x', '/a b'), text),
        fc.constantFrom('1.1', '1.0', '2.0', '2', 'HTTP/1.1', '1', 'x', '11.1', ''),
        fc.array(fc.tuple(name, text), { maxLength: 5 }),
        fc.boolean(),
        (method, url, httpVersion, pairs, absolute) => {
          const facts = requestFacts(fakeRequest({ method, url, httpVersion, rawHeaders: pairs.flat() }));
          if (encapsulationProblem(facts, absolute) !== undefined) return;
          const target = absolute
            ? /^[a-z][a-z0-9+.-]*:\/\//i.test(facts.target)
              ? facts.target
              : `${facts.scheme}://${facts.host || 'localhost'}${facts.target.startsWith('/') ? facts.target : `/${facts.target}`}`
            : facts.target;
          expect(() =>
            encodeHttpRequestHead({
              method: facts.method,
              target,
              httpVersion: facts.httpVersion,
              headers: facts.headerPairs,
            }),
          ).not.toThrow();
        },
      ),
      { numRuns: 3000 },
    );
  });
});

describe('previewOf', () => {
  it('reads what /(?:^|\\n)Preview: (\\d+)/ reads', () => {
    const line = fc.oneof(
      fc.constantFrom(
        'Preview: 4096',
        'Preview: ',
        'Preview: x1',
        'Preview: 0',
        'XPreview: 5',
        'preview: 7',
        'Allow: 204',
      ),
      fc
        .array(fc.constantFrom('P', 'r', 'e', 'v', 'i', 'w', ':', ' ', '1', '9', 'x', '\n', '\r'), {
          maxLength: 14,
        })
        .map((a) => a.join('')),
    );
    fc.assert(
      fc.property(fc.array(line, { maxLength: 6 }), fc.constantFrom('\r\n', '\n', ''), (lines, sep) => {
        const head = lines.join(sep);
        const m = /(?:^|\n)Preview: (\d+)/.exec(head);
        expect(previewOf(head)).toBe(m === null ? undefined : Number(m[1]));
      }),
      { numRuns: 3000 },
    );
  });
});

describe('requestFacts: Content-Length', () => {
  it('one field of digits reads as the list of values does', () => {
    const value = fc.oneof(
      fc.constantFrom(
        '10240',
        '0',
        '007',
        '1,1',
        '1, 1',
        '1,2',
        ' 5',
        '',
        'abc',
        '1234567890123456',
        '123456789012345',
      ),
      fc.array(fc.constantFrom('1', '0', ',', ' ', 'x'), { maxLength: 6 }).map((a) => a.join('')),
    );
    fc.assert(
      fc.property(fc.array(value, { maxLength: 3 }), (values) => {
        const raw = values.flatMap((v) => ['Content-Length', v]);
        const facts = requestFacts(
          fakeRequest({ method: 'POST', url: '/', httpVersion: '1.1', rawHeaders: raw }),
        );
        let expected: number | undefined;
        if (values.length > 0) {
          const set = new Set(values.flatMap((v) => v.split(',')).map((v) => v.trim()));
          const only = set.size === 1 ? [...set][0]! : '';
          if (/^\d{1,15}$/.test(only)) expected = Number(only);
        }
        expect(facts.contentLength).toBe(expected);
      }),
      { numRuns: 2000 },
    );
  });
});
