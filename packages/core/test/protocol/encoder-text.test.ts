/**
 * The client builds the whole ICAP head from text (httpRequestHeadText, one buffer when every
 * part is byte for byte): it must give the very bytes the buffer-based API gives, a part with a
 * code point above U+00FF (UTF-8) included, and leave the fields the original encoder left.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  encodeHttpRequestHead,
  encodeHttpResponseHead,
  encodeIcapRequest,
  type HeaderPairs,
  httpRequestHeadText,
  httpResponseHeadText,
} from '../../src/protocol/encoder.js';
import { HOP_BY_HOP_FIELDS } from '../../src/protocol/headers.js';

const names = fc.constantFrom(
  'Host',
  'Content-Type',
  'content-length',
  'Connection',
  'connection',
  'Keep-Alive',
  'X-Custom',
  'x-custom',
  'TE',
  'Transfer-Encoding',
  ':authority',
  ':path',
  'Upgrade',
  'Cookie',
);
const values = fc.oneof(
  fc.constantFrom(
    'close',
    'x-custom, cookie',
    'keep-alive',
    ' X-Custom ,,',
    'a',
    'é',
    'caf\u00e9',
    '\u6587\u5b57',
    '/p?q=1',
  ),
  fc.string({ maxLength: 12 }).filter((s) => !/[\r\n\0]/.test(s)),
);
const pairs = fc.array(fc.tuple(names, values), { maxLength: 10 });

/** The fields the encoder kept before it was made one pass: the reference. */
function referenceKept(list: HeaderPairs): string[] {
  const named = new Set<string>();
  for (const [n, v] of list) {
    if (n.toLowerCase() !== 'connection') continue;
    for (const t of v.split(',')) if (t.trim() !== '') named.add(t.trim().toLowerCase());
  }
  return list
    .filter(([n]) => {
      const k = n.toLowerCase();
      return !n.startsWith(':') && !HOP_BY_HOP_FIELDS.has(k) && !named.has(k) && k !== 'content-length';
    })
    .map(([n]) => n);
}

function fieldNames(head: string): string[] {
  return head
    .split('\r\n')
    .slice(1)
    .filter((l) => l !== '')
    .map((l) => l.slice(0, l.indexOf(':')));
}

describe('ICAP head from text equals the head from buffers', () => {
  it('REQMOD and RESPMOD, any fields, any code points', () => {
    fc.assert(
      fc.property(
        pairs,
        pairs,
        fc.option(fc.nat(1 << 20)),
        fc.boolean(),
        values,
        (reqH, resH, len, resp, ua) => {
          const httpRequest = { method: 'POST', target: '/up', headers: reqH };
          const httpResponse = { status: 200, reason: 'OK', headers: resH };
          const opts = { contentLength: len ?? undefined };
          let text: string;
          try {
            text = httpRequestHeadText(httpRequest, opts);
          } catch (err) {
            expect(() => encodeHttpRequestHead(httpRequest, opts)).toThrow((err as Error).message);
            return;
          }
          expect(Buffer.from(text, /[^\x00-\xff]/.test(text) ? 'utf8' : 'latin1')).toEqual(
            encodeHttpRequestHead(httpRequest, opts),
          );
          const kept = fieldNames(text).filter(
            (n) =>
              n !== 'Content-Length' && !(n === 'Host' && !reqH.some(([k]) => k.toLowerCase() === 'host')),
          );
          expect(kept).toEqual(referenceKept(reqH));
          const base = {
            method: (resp ? 'RESPMOD' : 'REQMOD') as 'RESPMOD' | 'REQMOD',
            uri: 'icap://127.0.0.1:1344/avscan',
            host: '127.0.0.1:1344',
            hasBody: true,
            preview: 10,
            allow204: true,
            headers: [['X-Client-IP', '10.0.0.1'] as const],
            userAgent: `ua ${ua.replace(/[\r\n\0]/g, '')}`,
          };
          const resText = resp ? httpResponseHeadText(httpResponse, opts) : undefined;
          const fromText = encodeIcapRequest({ ...base, httpRequestHead: text, httpResponseHead: resText });
          const fromBytes = encodeIcapRequest({
            ...base,
            httpRequestHead: encodeHttpRequestHead(httpRequest, opts),
            httpResponseHead: resp ? encodeHttpResponseHead(httpResponse, opts) : undefined,
          });
          expect(fromText.head).toEqual(fromBytes.head);
          expect(fromText.icapHeaders).toBe(fromBytes.icapHeaders);
        },
      ),
      { numRuns: 500 },
    );
  });
});
