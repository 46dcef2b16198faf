/**
 * campaign-bs BS5: a whole ICAP error answer (a 5xx, no body, or a body read whole), then the
 * server's real answer naming a threat in a later segment. Under fail-open the error would pass
 * the upload: before it does, the exchange waits on the connection as after a broken answer
 * (client/stray.ts) and reads what follows for a threat. An error with nothing after it still
 * takes the failure action.
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { Handler } from '../support/scripted-icap.js';
import { BLOCK, expectBlocked, FRAMEWORKS, later, UPLOAD, upload } from './odd-answers.js';

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const PAGE = 'HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n';
const ERRORS: Array<[string, string]> = [
  ['500 null-body', 'ICAP/1.0 500 Server Error\r\nISTag: "x1"\r\nEncapsulated: null-body=0\r\n\r\n'],
  ['503 without Encapsulated', 'ICAP/1.0 503 Service Unavailable\r\nISTag: "x1"\r\n\r\n'],
  [
    '500 with an error page (res-hdr)',
    `ICAP/1.0 500 Server Error\r\nISTag: "x1"\r\nEncapsulated: res-hdr=0, null-body=${PAGE.length}\r\n\r\n${PAGE}`,
  ],
];

describe.each(FRAMEWORKS)('%s, fail-open', (framework) => {
  it.each(ERRORS)('a %s, then the real block 80 ms later: blocked', async (_n, error) => {
    const h: Handler = (r) => {
      r.sock.write(error);
      later(r, 80, BLOCK);
    };
    expectBlocked(await upload(framework, 'fail-open', h, cleanups));
  });
});

describe('an error with nothing after it still takes the failure action', () => {
  it.each(ERRORS)('a %s alone: fail-open passes the upload (ICAP_FAILED)', async (_n, error) => {
    const out = await upload('express5', 'fail-open', (r) => r.sock.write(error), cleanups);
    expect(out.status).toBe(200);
    expect(out.seen).toEqual([UPLOAD.toString('latin1')]);
    expect(out.log?.action).toBe('ICAP_FAILED');
  });
  it('a 500 alone under fail-closed: 503', async () => {
    const out = await upload('express5', 'fail-closed', (r) => r.sock.write(ERRORS[0]![1]), cleanups);
    expect(out.status).toBe(503);
    expect(out.log?.action).toBe('ICAP_FAILED');
  });
});
