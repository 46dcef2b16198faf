/**
 * IcapHeadEncoder keeps the constant part of a client's heads (request line, Host, the client's
 * headers, User-Agent, Allow) and builds the rest per request. It must give the very bytes and
 * `icapHeaders` that encodeIcapRequest gives for the same input, throw what it throws (same
 * code, same message), and give the same again on the second request (the kept part).
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { IcapError } from '../../src/errors.js';
import {
  encodeIcapRequest,
  type HeaderPairs,
  IcapHeadEncoder,
  type IcapRequestMethod,
} from '../../src/protocol/encoder.js';

const names = fc.constantFrom(
  'X-Client-IP',
  'X-Key',
  'Preview',
  'encapsulated',
  'Connection',
  'bad name',
  'X-É',
);
const values = fc.constantFrom('1.2.3.4', 'close', '', ' spaced ', 'é', 'a\r\nb', 'ünï', '中文', 'nul\0');
const pairs = fc.array(fc.tuple(names, values), { maxLength: 3 });
const heads = fc.option(
  fc.constantFrom(
    'POST /upload HTTP/1.1\r\nHost: app\r\nContent-Length: 5\r\n\r\n',
    'GET / HTTP/1.1\r\nX: é\r\n\r\n',
    'POST /x HTTP/1.1\r\nX: 中\r\n\r\n',
  ),
  { nil: undefined },
);
const resHeads = fc.option(
  fc.constantFrom('HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n', 'HTTP/1.1 200 ✓\r\n\r\n'),
  {
    nil: undefined,
  },
);

function outcome(f: () => { head: Buffer; icapHeaders: string }) {
  try {
    const r = f();
    return { head: r.head.toString('hex'), icapHeaders: r.icapHeaders };
  } catch (err) {
    return { error: err instanceof IcapError ? `${err.code} ${err.message}` : String(err) };
  }
}

describe('IcapHeadEncoder', () => {
  it('gives what encodeIcapRequest gives, the first time and the next', () => {
    fc.assert(
      fc.property(
        fc.record({
          method: fc.constantFrom<IcapRequestMethod>('REQMOD', 'RESPMOD', 'OPTIONS'),
          uri: fc.constantFrom(
            'icap://h:1344/avscan',
            'icap://h:1344/srv?mode=x',
            'icap://h/a b',
            '',
            'icap://h/é',
          ),
          host: fc.constantFrom('h:1344', '[::1]:1344', 'bad\r\nhost'),
          clientHeaders: pairs,
          extra: pairs,
          userAgent: fc.option(fc.constantFrom('icapkit/0.1.0', 'ua é', 'ua ✓', 'bad\nua'), {
            nil: undefined,
          }),
          req: heads,
          res: resHeads,
          hasBody: fc.boolean(),
          preview: fc.option(fc.constantFrom(0, 1, 4096, 5000), { nil: undefined }),
          allow204: fc.boolean(),
        }),
        (c) => {
          const encoder = new IcapHeadEncoder(c.host, c.clientHeaders as HeaderPairs, c.userAgent);
          const expected = outcome(() =>
            encodeIcapRequest({
              method: c.method,
              uri: c.uri,
              host: c.host,
              httpRequestHead: c.req,
              httpResponseHead: c.res,
              hasBody: c.hasBody,
              preview: c.preview,
              allow204: c.allow204,
              headers: [...c.clientHeaders, ...c.extra] as HeaderPairs,
              userAgent: c.userAgent,
            }),
          );
          const run = () =>
            outcome(() =>
              encoder.encode(
                c.method,
                c.uri,
                c.req,
                c.res,
                c.hasBody,
                c.preview,
                c.allow204,
                c.extra as HeaderPairs,
              ),
            );
          expect(run()).toEqual(expected);
          expect(run()).toEqual(expected);
        },
      ),
      { numRuns: 3000 },
    );
  });

  it('keeps one start per method and URI, and the same request again gives the same bytes', () => {
    const encoder = new IcapHeadEncoder('h:1344', [['X-Key', 'k']], 'icapkit/0.1.0');
    const req = 'POST /upload HTTP/1.1\r\nHost: app\r\nContent-Length: 10\r\n\r\n';
    for (const uri of ['icap://h:1344/avscan', 'icap://h:1344/other', 'icap://h:1344/avscan']) {
      for (const method of ['REQMOD', 'RESPMOD'] as const) {
        const a = encoder.encode(method, uri, req, undefined, true, 4096, true, [
          ['X-Client-IP', '10.0.0.1'],
        ]);
        const b = encodeIcapRequest({
          method,
          uri,
          host: 'h:1344',
          httpRequestHead: req,
          hasBody: true,
          preview: 4096,
          allow204: true,
          headers: [
            ['X-Key', 'k'],
            ['X-Client-IP', '10.0.0.1'],
          ],
          userAgent: 'icapkit/0.1.0',
        });
        expect(a.head.equals(b.head)).toBe(true);
        expect(a.icapHeaders).toBe(b.icapHeaders);
      }
    }
  });
});
