/**
 * Whether an echo returned the request head that was sent: sameRequestHead reads the returned
 * fields by index and filters the sent ones as it goes (no end-to-end list, no iterator pairs);
 * it must decide as it did (a frozen copy below) for heads returned as they were, reordered,
 * with fields added, dropped, changed, renamed in case, hop-by-hop ones, ones that Connection
 * names, pseudo-headers and ignored ones (Via, Date, X-Lastline-*).
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { HttpRequestFacts } from '../../packages/core/src/engine/request.js';
import { sameRequestHead } from '../../packages/core/src/engine/scan/returned-head.js';
import { endToEndHeaders, Headers } from '../../packages/core/src/protocol/headers.js';
import type { EncapsulatedHttpRequestHead } from '../../packages/core/src/protocol/parser.js';

const IGNORED = new Set(['via', 'content-length', 'transfer-encoding', 'date', 'connection', 'keep-alive']);
const comparable = (key: string) =>
  !key.startsWith(':') && !IGNORED.has(key) && !key.startsWith('x-lastline-');
function comparableHeaders(pairs: Iterable<readonly [string, string]>): string[] {
  const out: string[] = [];
  for (const [n, v] of pairs) {
    const key = n.toLowerCase();
    if (!comparable(key)) continue;
    out.push(`${key}:${v.trim()}`);
  }
  return out.sort();
}
function sameFieldsInOrder(
  a: Iterable<readonly [string, string]>,
  b: ReadonlyArray<readonly [string, string]>,
) {
  let j = 0;
  for (const [name, value] of a) {
    const key = name.toLowerCase();
    if (!comparable(key)) continue;
    let other: readonly [string, string] | undefined;
    while (j < b.length) {
      const candidate = b[j++]!;
      if (comparable(candidate[0].toLowerCase())) {
        other = candidate;
        break;
      }
    }
    if (other === undefined || other[0].toLowerCase() !== key || other[1].trim() !== value.trim())
      return false;
  }
  while (j < b.length) if (comparable(b[j++]![0].toLowerCase())) return false;
  return true;
}
/** sameRequestHead's field comparison as it was (the method and target are compared the same way). */
function referenceFields(returned: Headers, sentPairs: Array<[string, string]>): boolean {
  const sent = endToEndHeaders(sentPairs);
  if (sameFieldsInOrder(returned, sent)) return true;
  const a = comparableHeaders(returned);
  const b = comparableHeaders(sent);
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

function head(pairs: Array<[string, string]>): EncapsulatedHttpRequestHead {
  return {
    startLine: 'POST /upload HTTP/1.1',
    headers: new Headers(pairs),
    raw: Buffer.alloc(0),
    method: 'POST',
    target: '/upload',
    version: 'HTTP/1.1',
  };
}

function facts(pairs: Array<[string, string]>): HttpRequestFacts {
  return { method: 'POST', target: '/upload', headerPairs: pairs } as unknown as HttpRequestFacts;
}

const name = fc.constantFrom(
  'Host',
  'host',
  'Content-Type',
  'content-type',
  'X-First',
  'x-first',
  'X-Second',
  'Via',
  'Date',
  'Connection',
  'Keep-Alive',
  'TE',
  'Upgrade',
  'Transfer-Encoding',
  'Content-Length',
  'X-Lastline-Id',
  ':authority',
  'X-Named',
  'Accept',
);
const fieldValue = fc.constantFrom(
  'a',
  ' a ',
  'b',
  'close',
  'keep-alive',
  'X-Named',
  'x-named, te',
  '1',
  '',
  '\u00a0a',
);
const pairs = fc
  .array(fc.tuple(name, fieldValue), { maxLength: 8 })
  .map((l) => l.map(([n, v]) => [n, v] as [string, string]));

/** A returned head made from the sent one: as it was, reordered, or edited. */
const returned = (sent: Array<[string, string]>) =>
  fc.oneof(
    fc.constant(sent.map((p) => [...p] as [string, string])),
    fc.shuffledSubarray(sent, { minLength: sent.length, maxLength: sent.length }),
    fc.tuple(pairs, fc.nat(8)).map(([extra, at]) => [...sent.slice(0, at), ...extra, ...sent.slice(at)]),
    fc.nat(8).map((at) => sent.filter((_, i) => i !== at)),
    fc
      .nat(8)
      .map((at) =>
        sent.map(([n, v], i) => (i === at ? ([n.toUpperCase(), `${v} `] as [string, string]) : [n, v])),
      ),
    fc.nat(8).map((at) => sent.map(([n, v], i) => (i === at ? ([n, `${v}x`] as [string, string]) : [n, v]))),
    pairs,
  );

describe('sameRequestHead decides as the general comparison', () => {
  it('on a head returned as it was sent', () => {
    const sent: Array<[string, string]> = [
      ['Host', '127.0.0.1:3000'],
      ['Content-Type', 'application/octet-stream'],
      ['Content-Length', '10240'],
      ['Connection', 'keep-alive'],
    ];
    const back: Array<[string, string]> = [...sent, ['Via', 'ICAP/1.0 test']];
    expect(sameRequestHead(head(back), facts(sent), false)).toBe(true);
    expect(referenceFields(new Headers(back), sent)).toBe(true);
  });

  it('on generated heads (5,000), the same and different ones', () => {
    const said = { true: 0, false: 0 };
    fc.assert(
      fc.property(
        pairs.chain((sent) => fc.tuple(fc.constant(sent), returned(sent))),
        ([sent, back]) => {
          const same = sameRequestHead(head(back), facts(sent), false);
          expect(same).toBe(referenceFields(new Headers(back), sent));
          said[`${same}`]++;
        },
      ),
      { numRuns: 5000 },
    );
    expect(said.true).toBeGreaterThan(500);
    expect(said.false).toBeGreaterThan(500);
  });
});
