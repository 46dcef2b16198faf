import type { VerdictInput } from '../../../src/engine/verdict/index.js';
import { Headers } from '../../../src/protocol/headers.js';
import { IcapParser, type IcapResponseHead } from '../../../src/protocol/parser.js';

/** Parses one complete raw ICAP response; throws when it does not frame exactly. */
export function parseResponse(raw: string): { head: IcapResponseHead; body: string } {
  let head: IcapResponseHead | undefined;
  let body = '';
  let ended = false;
  const parser = new IcapParser<IcapResponseHead>('response', {
    onHead: (h) => {
      if (h.status !== 100) head = h;
    },
    onBody: (data) => {
      body += data.toString('utf8');
    },
    onEnd: () => {
      ended = true;
    },
  });
  parser.execute(Buffer.from(raw, 'utf8'));
  if (head === undefined || !ended) throw new Error('incomplete ICAP response fixture');
  if (parser.leftover !== 0) throw new Error('bytes left after the ICAP response fixture');
  return { head, body };
}

/** The verdict input for a raw response, as the engine builds it. */
export function inputOf(raw: string, method: 'REQMOD' | 'RESPMOD' = 'REQMOD'): VerdictInput {
  const { head } = parseResponse(raw);
  return {
    method,
    status: head.status,
    reasonPhrase: head.reason,
    headers: head.headers,
    httpRequest: head.httpRequest,
    httpResponse: head.httpResponse,
  };
}

/** An input without a parser, for odd values the parser would never produce. */
export function bareInput(
  status: number,
  headers: Iterable<readonly [string, string]> = [],
  method: 'REQMOD' | 'RESPMOD' = 'REQMOD',
): VerdictInput {
  return { method, status, headers: new Headers(headers), httpRequest: null, httpResponse: null };
}
