/**
 * What the parser keeps of a response head it cannot use as an answer: the fields, read
 * leniently, go with the error (or are there to ask for when the connection closes), so that a
 * threat named in them is not lost. Read for a threat only: nothing here passes a request.
 */
import { describe, expect, it } from 'vitest';
import { IcapError } from '../../src/errors.js';
import { IcapParser, type IcapResponseHead } from '../../src/protocol/parser.js';
import { receivedAnswer, salvageHeads, salvageResponseHead } from '../../src/protocol/salvage.js';

const THREAT = 'X-Infection-Found: Type=0; Resolution=2; Threat=Eicar-Test-Signature;\r\n';

function parser() {
  const heads: IcapResponseHead[] = [];
  const p = new IcapParser<IcapResponseHead>('response', {
    onHead: (h) => heads.push(h),
    onBody: () => {},
    onEnd: () => {},
  });
  return { p, heads };
}

function errorOf(fn: () => void): IcapError {
  try {
    fn();
  } catch (err) {
    if (err instanceof IcapError) return err;
    throw err;
  }
  throw new Error('no error');
}

describe('a head the strict parser refuses keeps its fields on the error', () => {
  it.each([
    [
      'a line without a colon',
      `ICAP/1.0 200 OK\r\n${THREAT}Scan Engine 1.2\r\nEncapsulated: null-body=0\r\n\r\n`,
    ],
    [
      'a name that is not a token',
      `ICAP/1.0 200 OK\r\nX Scan: 1\r\n${THREAT}Encapsulated: null-body=0\r\n\r\n`,
    ],
    ['a lower-case version', `icap/1.0 403 Forbidden\r\n${THREAT}Encapsulated: null-body=0\r\n\r\n`],
    ['a four-digit status', `ICAP/1.0 2000 OK\r\n${THREAT}Encapsulated: null-body=0\r\n\r\n`],
    ['an Encapsulated value that is not one', `ICAP/1.0 200 OK\r\n${THREAT}Encapsulated: garbage\r\n\r\n`],
  ])('%s', (_, text) => {
    const { p, heads } = parser();
    const err = errorOf(() => p.execute(Buffer.from(text, 'latin1')));
    expect(heads).toEqual([]);
    expect(err.head?.headers.get('x-infection-found')).toBe(
      'Type=0; Resolution=2; Threat=Eicar-Test-Signature;',
    );
  });

  it('a block page head that breaks a rule: the ICAP head, parsed, and the page read leniently go with the error', () => {
    const page = 'HTTP/1.1 403 Forbidden\r\nnot a field\r\n\r\n';
    const text = `ICAP/1.0 200 OK\r\n${THREAT}Encapsulated: res-hdr=0, null-body=${page.length}\r\n\r\n${page}`;
    const { p } = parser();
    const err = errorOf(() => p.execute(Buffer.from(text, 'latin1')));
    expect(err.head?.status).toBe(200);
    expect(err.head?.headers.has('x-infection-found')).toBe(true);
    expect(err.head?.httpResponse?.status).toBe(403);
  });
});

describe('receivedHead: what came of a head before the connection closed', () => {
  it('the lines of a cut head, the line cut short too (a threat field whose line breaks off still names it)', () => {
    const { p } = parser();
    p.execute(Buffer.from(`ICAP/1.0 200 OK\r\n${THREAT}X-Virus-ID: Eic`, 'latin1'));
    const head = p.receivedHead();
    expect(head?.status).toBe(200);
    expect(head?.headers.has('x-infection-found')).toBe(true);
    expect(head?.headers.get('x-virus-id')).toBe('Eic');
  });

  it('a head over maxHeaderSize: what fits of it, read leniently, goes with the error', () => {
    const { p } = parser();
    const err = errorOf(() =>
      p.execute(Buffer.from(`ICAP/1.0 200 OK\r\n${THREAT}X-List: ${'a'.repeat(70_000)}\r\n\r\n`, 'latin1')),
    );
    expect(err.code).toBe('ICAP_ERR_HEADERS_TOO_LARGE');
    expect(err.head?.headers.has('x-infection-found')).toBe(true);
  });

  it('bare-CR line ends are read as line ends (salvage only)', () => {
    const { p } = parser();
    p.execute(Buffer.from(`ICAP/1.0 200 OK\rISTag: "x"\rX-Virus-ID: EICAR\r`, 'latin1'));
    expect(p.receivedHead()?.headers.get('x-virus-id')).toBe('EICAR');
  });

  it('a head whose encapsulated part never came whole', () => {
    const { p, heads } = parser();
    p.execute(
      Buffer.from(`ICAP/1.0 200 OK\r\n${THREAT}Encapsulated: res-hdr=0, null-body=64\r\n\r\nHTTP/1.1 4`),
    );
    expect(heads).toEqual([]);
    expect(p.receivedHead()?.headers.has('x-infection-found')).toBe(true);
  });

  it('nothing while no head is pending, nor after one was reported', () => {
    const { p, heads } = parser();
    expect(p.receivedHead()).toBeUndefined();
    p.execute(Buffer.from('ICAP/1.0 204 No Content\r\nEncapsulated: null-body=0\r\n\r\n'));
    expect(heads).toHaveLength(1);
    expect(p.receivedHead()).toBeUndefined();
  });
});

describe('salvageResponseHead and receivedAnswer', () => {
  it('folded lines continue their field; the status only when it is a valid code', () => {
    const h = salvageResponseHead(
      Buffer.from(
        'ICAP/1.0 999 X\r\nX-Violations-Found: 1\r\n\tf\r\n\tEicar\r\n\t0\r\n\t0\r\n\r\n',
        'latin1',
      ),
    );
    expect(h.status).toBe(0);
    expect(h.headers.lines('x-violations-found')).toEqual(['1', 'f', 'Eicar', '0', '0']);
  });

  it('a 100 Continue and a head cut after it read as one', () => {
    const interim = salvageResponseHead(Buffer.from(`ICAP/1.0 100 Continue\r\n${THREAT}\r\n`, 'latin1'));
    const bare = salvageResponseHead(Buffer.from('ICAP/1.0 100 Continue\r\n\r\n', 'latin1'));
    const cut = salvageResponseHead(Buffer.from('ICAP/1.0 204 No Content\r\nISTag: "x"\r\n', 'latin1'));
    const both = receivedAnswer(cut, interim);
    expect(both?.status).toBe(204);
    expect(both?.headers.has('x-infection-found')).toBe(true);
    expect(both?.headers.get('istag')).toBe('"x"');
    // A bare 100 (its raw lines an empty line) does not end the block early.
    const withThreat = salvageResponseHead(Buffer.from(`ICAP/1.0 200 OK\r\n${THREAT}`, 'latin1'));
    expect(receivedAnswer(withThreat, bare)?.headers.has('x-infection-found')).toBe(true);
    expect(receivedAnswer(undefined, null)).toBeUndefined();
  });
});

describe('salvageHeads: an encapsulated page after a stray head (campaign-at AT10, campaign-au AU2, AU3)', () => {
  const page = 'HTTP/1.1 403 VirusFound\r\nContent-Type: text/html\r\n\r\n';

  it("is read as the page of the ICAP head before it when that head's Encapsulated names res-hdr", () => {
    const heads = salvageHeads(
      Buffer.from(
        `ICAP/1.0 500 Server Error\r\nEncapsulated: res-hdr=0, res-body=50\r\n\r\n${page}5\r\nBlock`,
      ),
    );
    expect(heads[0]?.status).toBe(500);
    expect(heads[0]?.httpResponse).toMatchObject({ status: 403, reason: 'VirusFound' });
    expect(heads[0]?.httpResponse?.headers.get('content-type')).toBe('text/html');
    // Its fields are a head of their own too (a threat field there is read as in any head: AU3).
    expect(heads[1]?.headers.get('content-type')).toBe('text/html');
  });

  it('is read as the page after an HTTP request head between them (req-hdr, then res-hdr: AU2)', () => {
    const req = 'POST /upload HTTP/1.1\r\nHost: x\r\n\r\n';
    const heads = salvageHeads(
      Buffer.from(
        `ICAP/1.0 500 Server Error\r\nEncapsulated: req-hdr=0, res-hdr=${req.length}, res-body=90\r\n\r\n${req}${page}`,
      ),
    );
    expect(heads[0]?.httpResponse).toMatchObject({ status: 403, reason: 'VirusFound' });
  });

  it('is a head of its own after a head naming no res-hdr, or after no ICAP head', () => {
    const after = salvageHeads(Buffer.from(`ICAP/1.0 200 OK\r\nEncapsulated: null-body=0\r\n\r\n${page}`));
    expect(after[0]?.httpResponse).toBeNull();
    expect(after).toHaveLength(2);
    expect(salvageHeads(Buffer.from(page))[0]?.httpResponse).toBeNull();
  });

  it('is read as the page of an ICAP head glued to the bytes before it, through a glued status line in the request head (AW1, AW2)', () => {
    const req = 'POST /upload HTTP/1.1\r\nX-Note: ICAP/1.0 204 x\r\n\r\n';
    const answer = `ICAP/1.0 500 Server Error\r\nEncapsulated: req-hdr=0, res-hdr=${req.length}\r\n\r\n${req}${page}`;
    for (const before of ['ab', 'zz\r\nab', 'junk with ICAP/1.0 200 OK in it ']) {
      const heads = salvageHeads(Buffer.from(`${before}${answer}`));
      expect(
        heads.some((h) => h.status === 500 && h.httpResponse?.status === 403),
        before,
      ).toBe(true);
    }
  });

  it("is read as the page of an ICAP head at a line's start after other lines, no blank line between (AX2, AX3)", () => {
    const answer = `ICAP/1.0 500 Server Error\r\nEncapsulated: res-hdr=0, res-body=50\r\n\r\n${page}`;
    const cicap = `ICAP/1.0 200 OK\r\nServer: C-ICAP/0.5.10\r\nEncapsulated: res-hdr=0, res-body=50\r\n\r\n${page}`;
    for (const before of ['x\r\n', 'some upload\n', 'ab\r', 'two\r\nlines\r\n']) {
      for (const [what, status] of [
        [answer, 500],
        [cicap, 200],
      ] as const) {
        const heads = salvageHeads(Buffer.from(`${before}${what}`));
        expect(
          heads.some((h) => h.status === status && h.httpResponse?.status === 403),
          `${before} ${status}`,
        ).toBe(true);
      }
      const eset = salvageHeads(Buffer.from(`${before}ICAP/1.0 405 Forbidden\r\nISTag: "e"\r\n\r\n`));
      expect(eset.some((h) => h.status === 405)).toBe(true);
    }
  });

  it('reads any number of glued status lines without a call over its arguments (no throw)', () => {
    const unit = 'aICAP/1.0 200 x\n';
    const many = Buffer.from(unit.repeat(Math.ceil((4 * 1024 * 1024) / unit.length)), 'latin1');
    expect(salvageHeads(many).length).toBeGreaterThan(250_000);
  });
});
