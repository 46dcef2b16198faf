import { describe, expect, it } from 'vitest';
import {
  chunkHeader,
  encodeHttpRequestHead,
  encodeHttpResponseHead,
  encodeIcapRequest,
  toPairs,
} from '../../src/protocol/encoder.js';
import { IcapParser, type IcapRequestHead } from '../../src/protocol/parser.js';

function reparse(head: Buffer): IcapRequestHead {
  let got: IcapRequestHead | undefined;
  const p = new IcapParser<IcapRequestHead>('request', {
    onHead: (h) => {
      got = h;
    },
    onBody: () => {},
    onEnd: () => {},
  });
  p.execute(head);
  if (got === undefined) throw new Error('no head parsed');
  return got;
}

describe('encodeHttpRequestHead', () => {
  it('keeps end-to-end headers in order and case, drops hop-by-hop ones and those named by Connection', () => {
    const head = encodeHttpRequestHead(
      {
        method: 'POST',
        target: '/upload?x=1',
        httpVersion: '1.1',
        headers: [
          'Host',
          'example.test',
          'Connection',
          'keep-alive, X-Secret-Hop',
          'X-Secret-Hop',
          'yes',
          'Keep-Alive',
          'timeout=5',
          'Transfer-Encoding',
          'chunked',
          'Proxy-Authorization',
          'Basic abc',
          'TE',
          'trailers',
          'Upgrade',
          'h2c',
          'Content-Type',
          'text/plain',
          'X-Custom',
          'a',
          'x-custom',
          'b',
        ],
      },
      { contentLength: 42 },
    ).toString('latin1');
    expect(head).toBe(
      'POST /upload?x=1 HTTP/1.1\r\nHost: example.test\r\nContent-Type: text/plain\r\nX-Custom: a\r\nx-custom: b\r\nContent-Length: 42\r\n\r\n',
    );
  });

  it('replaces a caller-declared Content-Length with the real one, and drops it when unknown', () => {
    const withLen = encodeHttpRequestHead(
      { method: 'POST', target: '/', headers: { 'content-length': '999999', host: 'h' } },
      { contentLength: 3 },
    ).toString();
    expect(withLen).toContain('Content-Length: 3\r\n');
    expect(withLen).not.toContain('999999');
    const unknown = encodeHttpRequestHead({
      method: 'POST',
      target: '/',
      headers: { 'content-length': '5' },
    }).toString();
    expect(unknown).not.toMatch(/content-length/i);
  });

  it('turns HTTP/2 pseudo-headers into a request line and Host', () => {
    const head = encodeHttpRequestHead({
      method: 'GET',
      target: '/ignored',
      httpVersion: '2.0',
      headers: {
        ':method': 'PUT',
        ':path': '/files/a.txt',
        ':authority': 'api.example:8443',
        ':scheme': 'https',
        accept: '*/*',
      },
    }).toString();
    expect(head).toBe('PUT /files/a.txt HTTP/1.1\r\nHost: api.example:8443\r\naccept: */*\r\n\r\n');
  });

  it('writes Latin-1 values byte for byte and other text as UTF-8', () => {
    const latin = encodeHttpRequestHead({ method: 'POST', target: '/', headers: [['X-Name', 'caf\u00e9']] });
    expect(latin.includes(Buffer.from([0x63, 0x61, 0x66, 0xe9]))).toBe(true);
    const utf8 = encodeHttpRequestHead({
      method: 'POST',
      target: '/',
      headers: [['Content-Disposition', 'attachment; filename="отчёт.pdf"']],
    });
    expect(utf8.toString('utf8')).toContain('отчёт.pdf');
  });

  it.each([
    [{ method: 'PO ST', target: '/' }, /not a token/],
    [{ method: 'POST', target: '/a b' }, /request target/],
    [
      { method: 'POST', target: '/', headers: [['X-A', 'x\r\nInjected: 1']] as Array<[string, string]> },
      /CR, LF or NUL/,
    ],
    [{ method: 'POST', target: '/', headers: [['Bad Name', 'x']] as Array<[string, string]> }, /not a token/],
  ])('refuses what would break the wire format: %j', (init, message) => {
    expect(() => encodeHttpRequestHead(init)).toThrowError(message);
  });
});

describe('encodeHttpResponseHead', () => {
  it('encodes a status line and headers', () => {
    expect(
      encodeHttpResponseHead(
        { status: 200, reason: 'OK', headers: { 'content-type': 'text/plain', connection: 'close' } },
        { contentLength: 5 },
      ).toString(),
    ).toBe('HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nContent-Length: 5\r\n\r\n');
  });
});

describe('encodeIcapRequest', () => {
  it('computes Encapsulated offsets on bytes, UTF-8 header values included', () => {
    const http = encodeHttpRequestHead({
      method: 'POST',
      target: '/upload',
      headers: [
        ['Host', 'app'],
        ['Content-Disposition', 'attachment; filename="résumé-履歴書.pdf"'],
      ],
    });
    expect(http.length).toBeGreaterThan(http.toString().length);
    const { head, icapHeaders } = encodeIcapRequest({
      method: 'REQMOD',
      uri: 'icap://127.0.0.1:1344/avscan',
      host: '127.0.0.1:1344',
      httpRequestHead: http,
      hasBody: true,
      preview: 1024,
      allow204: true,
    });
    expect(icapHeaders).toBe(
      `Host: 127.0.0.1:1344\r\nAllow: 204\r\nPreview: 1024\r\nEncapsulated: req-hdr=0, req-body=${http.length}\r\n`,
    );
    const parsed = reparse(Buffer.concat([head, Buffer.from('0; ieof\r\n\r\n')]));
    expect(parsed.method).toBe('REQMOD');
    expect(parsed.httpRequest?.headers.get('content-disposition')).toBe(
      Buffer.from('attachment; filename="résumé-履歴書.pdf"', 'utf8').toString('latin1'),
    );
    expect(parsed.body).toBe('req-body');
  });

  it('uses null-body for a message without a body and for OPTIONS', () => {
    const http = encodeHttpRequestHead({ method: 'GET', target: '/' });
    const r = encodeIcapRequest({
      method: 'REQMOD',
      uri: 'icap://h/s',
      host: 'h',
      httpRequestHead: http,
      hasBody: false,
    });
    expect(r.icapHeaders).toContain(`Encapsulated: req-hdr=0, null-body=${http.length}\r\n`);
    const o = encodeIcapRequest({
      method: 'OPTIONS',
      uri: 'icap://h/s',
      host: 'h',
      hasBody: false,
      preview: 5,
    });
    expect(o.head.toString()).toBe(
      'OPTIONS icap://h/s ICAP/1.0\r\nHost: h\r\nEncapsulated: null-body=0\r\n\r\n',
    );
  });

  it('encodes RESPMOD with both heads', () => {
    const req = encodeHttpRequestHead({ method: 'GET', target: '/f' });
    const res = encodeHttpResponseHead({ status: 200, reason: 'OK' }, { contentLength: 3 });
    const r = encodeIcapRequest({
      method: 'RESPMOD',
      uri: 'icap://h/s',
      host: 'h',
      httpRequestHead: req,
      httpResponseHead: res,
      hasBody: true,
    });
    expect(r.icapHeaders).toContain(
      `Encapsulated: req-hdr=0, res-hdr=${req.length}, res-body=${req.length + res.length}`,
    );
  });

  it('refuses ICAP header values with CR/LF', () => {
    expect(() =>
      encodeIcapRequest({
        method: 'OPTIONS',
        uri: 'icap://h/s',
        host: 'h',
        hasBody: false,
        headers: [['X-Key', 'a\nb']],
      }),
    ).toThrowError(/CR, LF or NUL/);
  });
});

describe('chunk framing and header input', () => {
  it('writes hex sizes', () => {
    expect(chunkHeader(0).toString()).toBe('0\r\n');
    expect(chunkHeader(255).toString()).toBe('ff\r\n');
    expect(chunkHeader(1 << 20).toString()).toBe('100000\r\n');
  });

  it('accepts pairs, raw header lists and header objects', () => {
    expect(toPairs(['A', '1', 'B', '2'])).toEqual([
      ['A', '1'],
      ['B', '2'],
    ]);
    expect(toPairs({ a: '1', b: ['2', '3'], c: undefined })).toEqual([
      ['a', '1'],
      ['b', '2'],
      ['b', '3'],
    ]);
    expect(toPairs([['x', 'y']])).toEqual([['x', 'y']]);
  });
});
