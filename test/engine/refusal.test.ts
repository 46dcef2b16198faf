/**
 * The refusal a `respond` outcome stands for (reason, code, expose), the error handed to
 * frameworks, and onRefusal replies that are not refusals.
 */
import { PassThrough } from 'node:stream';
import {
  bodyConsumedReason,
  IcapError,
  IcapErrorCodes,
  type IcapLog,
  IcapRefusalError,
  isIcapRefusalError,
  type RespondOutcome,
  refusalOf,
  replyResponse,
} from '@icapkit/core';
import { describe, expect, it } from 'vitest';

function outcome(status: number, over: Partial<IcapLog> = {}, threat?: string): RespondOutcome {
  const log = { action: 'ICAP_BLOCKED', significance: [], ...over } as unknown as IcapLog;
  return {
    kind: 'respond',
    action: log.action,
    log,
    threat,
    responseHeaders: [],
    dispose: () => {},
    status,
    headers: [
      ['Cache-Control', 'no-store'],
      ['Retry-After', '30'],
    ],
    body: Buffer.from('page'),
    closeConnection: true,
  };
}

describe('refusalOf', () => {
  it.each([
    [400, 'bad-request', 'ICAP_ERR_BAD_REQUEST'],
    [408, 'timeout', 'ICAP_ERR_BODY_TIMEOUT'],
    [413, 'too-large', 'ICAP_ERR_REQUEST_TOO_LARGE'],
    [415, 'unsupported-type', 'ICAP_ERR_CONTENT_TYPE'],
    [429, 'too-many', 'ICAP_ERR_CLIENT_LIMIT'],
    [500, 'misconfigured', 'ICAP_ERR_BODY_CONSUMED'],
    [501, 'unsupported-transfer-coding', 'ICAP_ERR_CONTENT_ENCODING'],
    [503, 'unavailable', 'ICAP_ERR_CONNECT'],
  ])('%i: %s', (status, reason, code) => {
    const r = refusalOf(outcome(status, { error_code: code, error_message: 'why' }));
    // A 5xx's message names nothing of the ICAP side (campaign-bl BL3): the record has the detail.
    const message = status < 500 ? 'why' : `Upload refused: ${reason} (${status})`;
    expect(r).toMatchObject({ status, reason, code, message, expose: status < 500 });
    expect(r.log.error_message).toBe('why');
  });

  it('a 4xx message quotes what the client sent without markup; a 5xx one names no server (campaign-bl BL3, BL4)', () => {
    const name = '<img src=x onerror=alert(document.cookie)>&.txt';
    const r = refusalOf(
      outcome(413, {
        error_code: 'ICAP_ERR_REQUEST_TOO_LARGE',
        error_message: `file "${name}" is too large`,
      }),
    );
    expect(r.message).toBe(
      'file "\\u003cimg src=x onerror=alert(document.cookie)\\u003e\\u0026.txt" is too large',
    );
    expect(r.log.error_message).toContain(name);
    const down = refusalOf(
      outcome(503, {
        error_code: 'ICAP_ERR_CONNECT',
        error_message: 'cannot connect to ICAP server icap://10.0.0.5:1344',
      }),
    );
    expect(down.message).toBe('Upload refused: unavailable (503)');
    // A threat name is the scanner's text: written without markup too (campaign-bn BN3).
    const named = refusalOf(outcome(403, { significance: ['ICAP_BLOCKED'] }, '<img src=x onerror=alert(1)>'));
    expect(named.message).toBe(
      'Upload blocked: the content scanner found \\u003cimg src=x onerror=alert(1)\\u003e',
    );
    expect(new IcapRefusalError(down).message).not.toContain('10.0.0.5');
  });

  it('a threat is blocked whatever else the record says', () => {
    const r = refusalOf(
      outcome(403, { significance: ['ICAP_BLOCKED'], error_code: 'ICAP_ERR_MULTIPART' }, 'EICAR'),
    );
    expect(r).toMatchObject({ reason: 'blocked', code: 'ICAP_ERR_BLOCKED', threat: 'EICAR', expose: true });
    expect(r.message).toContain('EICAR');
  });
});

describe('IcapRefusalError', () => {
  it('is an IcapError with http-errors fields; a plain IcapError is not one', () => {
    const err = new IcapRefusalError(refusalOf(outcome(503, { error_code: 'ICAP_ERR_CONNECT' })));
    expect(err).toBeInstanceOf(IcapError);
    expect(err).toBeInstanceOf(IcapRefusalError);
    expect(isIcapRefusalError(err)).toBe(true);
    expect(err).toMatchObject({ status: 503, statusCode: 503, expose: false, code: 'ICAP_ERR_CONNECT' });
    expect(err.headers).toEqual({ 'cache-control': 'no-store', 'retry-after': '30', connection: 'close' });
    expect(new IcapRefusalError(refusalOf(outcome(503)), { http2: true }).headers.connection).toBeUndefined();
    const plain = new IcapError(IcapErrorCodes.CONNECT, 'x');
    expect(plain instanceof IcapRefusalError).toBe(false);
    expect(isIcapRefusalError(plain)).toBe(false);
  });
});

describe('replyResponse', () => {
  const refusal = refusalOf(outcome(403, { significance: ['ICAP_BLOCKED'] }, 'EICAR'));
  it.each([0, 200, 204, 299, 600, 403.5, Number.NaN])(
    'refuses status %s (a refusal is never a 2xx)',
    (status) => {
      expect(() => replyResponse(refusal, { status })).toThrow(/300-599/);
    },
  );
  it('refuses header names and values that could split the response', () => {
    expect(() => replyResponse(refusal, { headers: { 'a b': 'x' } })).toThrow(/header name/);
    expect(() => replyResponse(refusal, { headers: { a: 'x\r\nSet-Cookie: y' } })).toThrow(/header a/);
  });
  it('serialises bodies and keeps the framing its own', () => {
    const json = replyResponse(refusal, {
      body: { a: 1 },
      headers: { 'Content-Length': '999', 'X-A': ['1', '2'] },
    });
    expect(json.status).toBe(403);
    expect(json.body.toString()).toBe('{"a":1}');
    expect(json.headers).toContainEqual(['Content-Length', '7']);
    expect(json.headers).not.toContainEqual(['Content-Length', '999']);
    expect(json.headers.filter(([n]) => n === 'X-A')).toEqual([
      ['X-A', '1'],
      ['X-A', '2'],
    ]);
    expect(json.headers).toContainEqual(['Connection', 'close']);
    expect(replyResponse(refusal, { body: 'text' }, true).headers.map(([n]) => n)).not.toContain(
      'Connection',
    );
    expect(() => replyResponse(refusal, { body: () => 1 })).toThrow(/cannot be sent/);
  });
});

describe('bodyConsumedReason', () => {
  const req = () => Object.assign(new PassThrough(), { headers: {} });
  it('an untouched stream, an empty parsed body, a paused one: not consumed', () => {
    expect(bodyConsumedReason(req())).toBeUndefined();
    expect(bodyConsumedReason(Object.assign(req(), { body: {} }), {})).toBeUndefined();
    const paused = req();
    paused.pause();
    expect(bodyConsumedReason(paused)).toBeUndefined();
  });
  it('ended, read, flowing, with a reader, parsed: consumed', async () => {
    const ended = req();
    ended.end('x');
    ended.resume();
    await new Promise((r) => ended.once('end', r));
    expect(bodyConsumedReason(ended)).toMatch(/to its end/);
    const read = req();
    read.write('abc');
    read.read(1);
    expect(bodyConsumedReason(read)).toMatch(/already read/);
    const reading = req();
    reading.on('data', () => {});
    expect(bodyConsumedReason(reading)).toMatch(/flowing|reader/);
    const readable = req();
    readable.on('readable', () => {});
    expect(bodyConsumedReason(readable)).toBeDefined();
    expect(bodyConsumedReason(Object.assign(req(), { _body: true }))).toMatch(/_body/);
    expect(bodyConsumedReason(Object.assign(req(), { body: { a: 1 } }))).toMatch(/req\.body/);
    expect(bodyConsumedReason(req(), Buffer.from('x'))).toMatch(/parsed body/);
    expect(bodyConsumedReason(req(), 'text')).toMatch(/parsed body/);
  });
});
