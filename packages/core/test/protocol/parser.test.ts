import { describe, expect, it } from 'vitest';
import { IcapError } from '../../src/errors.js';
import {
  IcapParser,
  type IcapRequestHead,
  type IcapResponseHead,
  parseEncapsulated,
} from '../../src/protocol/parser.js';

interface Event {
  type: 'head' | 'body' | 'end';
  head?: IcapResponseHead | IcapRequestHead;
  data?: string;
  ieof?: boolean;
}

function collect(kind: 'response' | 'request', opts = {}) {
  const events: Event[] = [];
  const parser = new IcapParser(
    kind,
    {
      onHead: (head) => events.push({ type: 'head', head }),
      onBody: (data) => events.push({ type: 'body', data: data.toString('latin1') }),
      onEnd: (ieof) => events.push({ type: 'end', ieof }),
    },
    opts,
  );
  return { parser, events };
}

function body(events: Event[]): string {
  return events
    .filter((e) => e.type === 'body')
    .map((e) => e.data)
    .join('');
}

const BLOCK_HTTP = 'HTTP/1.1 403 Forbidden\r\nContent-Type: text/html\r\nContent-Length: 11\r\n\r\n';
const BLOCK =
  'ICAP/1.0 200 OK\r\n' +
  'ISTag: "CI0001-XXXX"\r\n' +
  'X-Infection-Found: Type=0; Resolution=2; Threat=Eicar-Test-Signature.UNOFFICIAL;\r\n' +
  'X-Violations-Found: 1\r\n' +
  '\tupload.txt\r\n' +
  '\tEicar-Test-Signature.UNOFFICIAL\r\n' +
  '\t0\r\n' +
  '\t0\r\n' +
  `Encapsulated: res-hdr=0, res-body=${BLOCK_HTTP.length}\r\n` +
  '\r\n' +
  BLOCK_HTTP +
  'b\r\nVIRUS FOUND\r\n0\r\n\r\n';

describe('IcapParser (responses)', () => {
  it('parses a block response with folded headers, encapsulated HTTP head and chunked body', () => {
    const { parser, events } = collect('response');
    parser.execute(Buffer.from(BLOCK));
    const head = events[0]!.head as IcapResponseHead;
    expect(head.status).toBe(200);
    expect(head.headers.get('istag')).toBe('"CI0001-XXXX"');
    expect(head.headers.get('x-violations-found')).toBe('1 upload.txt Eicar-Test-Signature.UNOFFICIAL 0 0');
    expect(head.headers.lines('X-Violations-Found')).toEqual([
      '1',
      'upload.txt',
      'Eicar-Test-Signature.UNOFFICIAL',
      '0',
      '0',
    ]);
    expect(head.httpResponse?.status).toBe(403);
    expect(head.httpResponse?.headers.get('content-length')).toBe('11');
    expect(head.body).toBe('res-body');
    expect(body(events)).toBe('VIRUS FOUND');
    expect(events.at(-1)).toEqual({ type: 'end', ieof: false });
    expect(parser.done).toBe(true);
    expect(parser.leftover).toBe(0);
  });

  it('gives the same result when fed one byte at a time', () => {
    const { parser, events } = collect('response');
    const bytes = Buffer.from(BLOCK);
    for (let i = 0; i < bytes.length; i++) parser.execute(bytes.subarray(i, i + 1));
    const head = events[0]!.head as IcapResponseHead;
    expect(head.httpResponse?.status).toBe(403);
    expect(body(events)).toBe('VIRUS FOUND');
    expect(events.at(-1)?.type).toBe('end');
  });

  it('reads a 204 without Encapsulated and an unquoted ISTag', () => {
    const { parser, events } = collect('response');
    parser.execute(Buffer.from('ICAP/1.0 204 Unmodified\r\nISTag: CI0001\r\n\r\n'));
    const head = events[0]!.head as IcapResponseHead;
    expect(head.status).toBe(204);
    expect(head.encapsulated).toBeNull();
    expect(head.headers.get('istag')).toBe('CI0001');
    expect(events.map((e) => e.type)).toEqual(['head', 'end']);
  });

  it('treats 100 Continue as interim and goes on to the final response', () => {
    const { parser, events } = collect('response');
    parser.execute(
      Buffer.from(
        'ICAP/1.0 100 Continue\r\n\r\nICAP/1.0 204 No Content\r\nISTag: "x"\r\nEncapsulated: null-body=0\r\n\r\n',
      ),
    );
    expect(events.map((e) => (e.type === 'head' ? (e.head as IcapResponseHead).status : e.type))).toEqual([
      100,
      204,
      'end',
    ]);
  });

  it('tolerates bare LF line ends, no space after the colon, and leading empty lines', () => {
    const { parser, events } = collect('response');
    parser.execute(Buffer.from('\r\nICAP/1.0 204 No Content\nISTag:"t"\nEncapsulated:null-body=0\n\n'));
    const head = events[0]!.head as IcapResponseHead;
    expect(head.headers.get('ISTAG')).toBe('"t"');
    expect(events.at(-1)?.type).toBe('end');
  });

  it('decodes non-ASCII header values as UTF-8', () => {
    const { parser, events } = collect('response');
    parser.execute(
      Buffer.from(
        'ICAP/1.0 204 No Content\r\nX-Response-Description: Gelöscht\r\nISTag: "t"\r\n\r\n',
        'utf8',
      ),
    );
    expect((events[0]!.head as IcapResponseHead).headers.get('x-response-description')).toBe('Gelöscht');
  });

  it('parses chunk extensions and reports ieof, tolerating spacing', () => {
    for (const last of ['0; ieof', '0;ieof', '0 ; IEOF']) {
      const { parser, events } = collect('request');
      parser.execute(
        Buffer.from(
          'REQMOD icap://h/s ICAP/1.0\r\nHost: h\r\nPreview: 4\r\nEncapsulated: req-hdr=0, req-body=19\r\n\r\n' +
            'POST / HTTP/1.1\r\n\r\n' +
            `4;x=y\r\nabcd\r\n${last}\r\n\r\n`,
        ),
      );
      expect(body(events)).toBe('abcd');
      expect(events.at(-1)).toEqual({ type: 'end', ieof: true });
    }
  });

  it('keeps bytes after a complete message as leftover and parses them after reset()', () => {
    const { parser, events } = collect('response');
    parser.execute(
      Buffer.from(
        'ICAP/1.0 204 No Content\r\nISTag: "a"\r\n\r\nICAP/1.0 204 No Content\r\nISTag: "b"\r\n\r\n',
      ),
    );
    expect(events.filter((e) => e.type === 'head')).toHaveLength(1);
    expect(parser.leftover).toBeGreaterThan(0);
    parser.reset();
    const heads = events
      .filter((e) => e.type === 'head')
      .map((e) => (e.head as IcapResponseHead).headers.get('istag'));
    expect(heads).toEqual(['"a"', '"b"']);
  });

  it('continues a previewed request body after continueBody()', () => {
    const { parser, events } = collect('request');
    parser.execute(
      Buffer.from(
        'REQMOD icap://h/s ICAP/1.0\r\nHost: h\r\nPreview: 2\r\nEncapsulated: req-hdr=0, req-body=19\r\n\r\nPOST / HTTP/1.1\r\n\r\n2\r\nab\r\n0\r\n\r\n',
      ),
    );
    expect(events.at(-1)).toEqual({ type: 'end', ieof: false });
    parser.execute(Buffer.from('3\r\ncde\r\n0\r\n\r\n'));
    expect(body(events)).toBe('ab');
    parser.continueBody();
    expect(body(events)).toBe('abcde');
    expect(events.filter((e) => e.type === 'end')).toHaveLength(2);
  });

  it('rejects header sections over maxHeaderSize with a clear error', () => {
    const { parser } = collect('response', { maxHeaderSize: 1024 });
    const big = `ICAP/1.0 200 OK\r\nX-Big: ${'a'.repeat(2000)}\r\n\r\n`;
    expect(() => parser.execute(Buffer.from(big))).toThrowError(/exceed maxHeaderSize \(1024 bytes\)/);
    // A response's head that never ends: read on past the bound for a threat field (campaign-bs
    // BS2), 1 MiB at most, then the same error.
    const { parser: p2 } = collect('response', { maxHeaderSize: 1024 });
    let fed = 0;
    expect(() => {
      for (let i = 0; i < 1200; i++) {
        p2.execute(Buffer.from(`X-H${i}: ${'b'.repeat(1000)}\r\n`));
        fed = i;
      }
    }).toThrowError(expect.objectContaining({ code: 'ICAP_ERR_HEADERS_TOO_LARGE' }));
    expect(fed).toBeGreaterThan(1000);
  });

  it('rejects encapsulated header areas over maxHeaderSize, once it has read what fits of them for a threat', () => {
    const { parser } = collect('response', { maxHeaderSize: 100 });
    // Nothing is thrown before maxHeaderSize bytes of the area have come (or the connection ends).
    parser.execute(
      Buffer.from('ICAP/1.0 500 Server Error\r\nEncapsulated: res-hdr=0, res-body=5000\r\n\r\n'),
    );
    parser.execute(Buffer.from('HTTP/1.1 403 Forbidden\r\nX-Virus-ID: Eicar-Test\r\n'));
    expect(parser.receivedHead()?.httpResponse).toMatchObject({ status: 403 });
    let thrown: unknown;
    try {
      parser.execute(Buffer.from(`X-Pad: ${'p'.repeat(200)}\r\n`));
    } catch (err) {
      thrown = err;
    }
    expect(thrown).toMatchObject({ code: 'ICAP_ERR_HEADERS_TOO_LARGE', head: { status: 500 } });
    const head = (
      thrown as { head: { httpResponse: { status: number; headers: { get(n: string): unknown } } } }
    ).head;
    expect(head.httpResponse.status).toBe(403);
    expect(head.httpResponse.headers.get('x-virus-id')).toBe('Eicar-Test');
  });

  it.each(['100 Continue', '204 No Content'])(
    'a %s announcing a body is refused once its encapsulated heads are read, which go with the error (campaign-ai AI2)',
    (status) => {
      const { parser } = collect('response');
      const page = 'HTTP/1.1 403 Forbidden\r\nX-Virus-ID: Eicar-Test\r\n\r\n';
      // Nothing is thrown before the heads have come: a block page there is still read.
      parser.execute(
        Buffer.from(`ICAP/1.0 ${status}\r\nEncapsulated: res-hdr=0, res-body=${page.length}\r\n\r\n`),
      );
      let thrown: unknown;
      try {
        parser.execute(Buffer.from(page));
      } catch (err) {
        thrown = err;
      }
      expect(thrown).toMatchObject({
        code: 'ICAP_ERR_PROTOCOL',
        message: expect.stringMatching(/must not carry a body/),
      });
      const head = (
        thrown as { head: { httpResponse: { status: number; headers: { get(n: string): unknown } } } }
      ).head;
      expect(head.httpResponse.status).toBe(403);
      expect(head.httpResponse.headers.get('x-virus-id')).toBe('Eicar-Test');
    },
  );

  it.each([
    ['HTTP/1.1 200 OK\r\n\r\n', /invalid ICAP status line/],
    ['ICAP/1.0 2000 OK\r\n\r\n', /invalid ICAP status line/],
    ['ICAP/1.0 099 Odd\r\n\r\n', /unknown ICAP status code/],
    ['ICAP/1.0 200 OK\r\nbad header line\r\n\r\n', /malformed header line/],
    ['ICAP/1.0 200 OK\r\nBad Name: x\r\n\r\n', /invalid header name/],
    ['ICAP/1.0 200 OK\r\n continuation first\r\n\r\n', /continuation line before any header/],
    ['ICAP/1.0 204 No Content\r\nEncapsulated: res-body=0\r\n\r\n', /must not carry a body/],
    [
      'ICAP/1.0 204 No Content\r\nEncapsulated: res-hdr=0, res-body=19\r\n\r\nHTTP/1.1 200 OK\r\n\r\n',
      /must not carry a body/,
    ],
    ['ICAP/1.0 200 OK\r\nEncapsulated: null-body=0\r\n\r\n0x\r\n', null],
  ])('rejects %j', (input, message) => {
    const { parser } = collect('response');
    if (message === null) {
      // A complete message followed by garbage: the garbage is leftover, not parsed.
      parser.execute(Buffer.from(input));
      expect(parser.leftover).toBeGreaterThan(0);
      return;
    }
    expect(() => parser.execute(Buffer.from(input))).toThrowError(message);
  });

  it('rejects bad chunk framing', () => {
    const head = 'ICAP/1.0 200 OK\r\nEncapsulated: res-hdr=0, res-body=19\r\n\r\nHTTP/1.1 200 OK\r\n\r\n';
    const cases: Array<[string, RegExp]> = [
      ['zz\r\n', /invalid chunk size/],
      ['3\r\nabcdef\r\n', /not followed by CRLF/],
      ['3;ieof\r\nabc\r\n', /ieof extension on a non-zero chunk/],
      [`${'1'.repeat(5000)}\r\n`, /chunk-size line too long/],
      ['fffffffffffffff\r\n', /invalid chunk size/],
    ];
    for (const [chunk, message] of cases) {
      const { parser } = collect('response');
      expect(() => parser.execute(Buffer.from(head + chunk))).toThrowError(message);
    }
  });

  it('streams a chunk larger than the input buffers without accumulating it', () => {
    const { parser, events } = collect('response');
    parser.execute(
      Buffer.from('ICAP/1.0 200 OK\r\nEncapsulated: res-hdr=0, res-body=19\r\n\r\nHTTP/1.1 200 OK\r\n\r\n'),
    );
    parser.execute(Buffer.from('100000\r\n'));
    for (let i = 0; i < 16; i++) parser.execute(Buffer.alloc(65536, 0x61));
    const sizes = events.filter((e) => e.type === 'body').map((e) => e.data!.length);
    expect(sizes).toHaveLength(16);
    expect(Math.max(...sizes)).toBe(65536);
    parser.execute(Buffer.from('\r\n0\r\n\r\n'));
    expect(events.at(-1)?.type).toBe('end');
  });

  it('skips trailers after the last chunk', () => {
    const { parser, events } = collect('response');
    parser.execute(
      Buffer.from(
        'ICAP/1.0 200 OK\r\nEncapsulated: res-hdr=0, res-body=19\r\n\r\nHTTP/1.1 200 OK\r\n\r\n1\r\na\r\n0\r\nX-T: 1\r\n\r\n',
      ),
    );
    expect(body(events)).toBe('a');
    expect(events.at(-1)?.type).toBe('end');
    expect(parser.leftover).toBe(0);
  });

  it('rejects an Encapsulated offset that does not fall on the end of the header section', () => {
    const { parser } = collect('response');
    const wrong = BLOCK.replace(`res-body=${BLOCK_HTTP.length}`, `res-body=${BLOCK_HTTP.length - 5}`);
    expect(() => parser.execute(Buffer.from(wrong))).toThrowError(/does not end with an empty line/);
  });

  it('throws IcapError instances with stable codes', () => {
    const { parser } = collect('response');
    try {
      parser.execute(Buffer.from('garbage\r\n\r\n'));
      expect.unreachable();
    } catch (err) {
      expect(err).toBeInstanceOf(IcapError);
      expect((err as IcapError).code).toBe('ICAP_ERR_PROTOCOL');
    }
  });
});

describe('parseEncapsulated', () => {
  it('accepts the RFC forms', () => {
    expect(parseEncapsulated('req-hdr=0, req-body=412')).toEqual([
      { name: 'req-hdr', offset: 0 },
      { name: 'req-body', offset: 412 },
    ]);
    expect(parseEncapsulated('req-hdr=0, res-hdr=137, res-body=296')).toHaveLength(3);
    expect(parseEncapsulated('null-body=0')).toEqual([{ name: 'null-body', offset: 0 }]);
    expect(parseEncapsulated('opt-body=0')).toEqual([{ name: 'opt-body', offset: 0 }]);
    expect(parseEncapsulated(' RES-HDR=0 ,RES-BODY=10 ')).toHaveLength(2);
  });

  it.each([
    ['', /invalid Encapsulated/],
    ['req-hdr=0', /must end with exactly one body entry/],
    ['req-body=0, req-hdr=5', /must end with exactly one body entry/],
    ['req-hdr=0, req-body=10, null-body=20', /must end with exactly one body entry/],
    ['req-hdr=5, req-body=10', /must start at 0/],
    ['req-hdr=0, res-hdr=0, res-body=10', /must increase/],
    ['res-hdr=0, req-hdr=10, req-body=20', /req-hdr must come before res-hdr/],
    ['req-hdr=0, req-hdr=10, req-body=20', /duplicate/],
    ['foo-hdr=0, req-body=1', /unknown Encapsulated entity/],
    ['req-hdr=-1, req-body=2', /invalid Encapsulated/],
    ['req-hdr=0, req-body=99999999999', /invalid Encapsulated/],
  ])('rejects %j', (value, message) => {
    expect(() => parseEncapsulated(value)).toThrowError(message);
  });
});
