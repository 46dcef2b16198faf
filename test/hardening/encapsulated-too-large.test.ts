/**
 * A threat named in encapsulated HTTP heads the server made larger than maxHeaderSize (64 KiB)
 * is still a threat (campaign-z Z3, the parser's side): the first maxHeaderSize bytes of them
 * are read for it, then the answer fails as too large. It used to fail at once, with the ICAP
 * head alone: an error page with a 403 block page (ICAP 500) or a 200 echoing a request head
 * that names the threat, both padded past 64 KiB, took the failure action, and fail-open passed
 * the upload. Both failure modes, every framework; an oversized head that names nothing stays
 * the ICAP failure it was.
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { Framework } from '../conformance/apps.js';
import { scriptedApp } from '../support/scripted-app.js';
import type { Req } from '../support/scripted-icap.js';

const FRAMEWORKS: Framework[] = ['express5', 'fastify', 'koa3', 'hono'];
const MODES = ['fail-open', 'fail-closed'] as const;
const PAD = Array.from({ length: 80 }, (_, i) => `X-Pad-${i}: ${'p'.repeat(1000)}\r\n`).join('');

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** An ICAP answer whose encapsulated `kind` head is `head` (over 64 KiB), then a body. */
function answer(status: string, kind: 'req' | 'res', head: string): string {
  return (
    `ICAP/1.0 ${status}\r\nISTag: "x1"\r\nEncapsulated: ${kind}-hdr=0, ${kind}-body=${Buffer.byteLength(head, 'latin1')}\r\n\r\n` +
    `${head}5\r\nhello\r\n0\r\n\r\n`
  );
}

const ANSWERS: Record<string, (r: Req) => string> = {
  'a 500 with a 403 block page': () =>
    answer('500 Server Error', 'res', `HTTP/1.1 403 Forbidden\r\nContent-Type: text/html\r\n${PAD}\r\n`),
  'a 500 with a page naming the threat': () =>
    answer('500 Server Error', 'res', `HTTP/1.1 200 OK\r\nX-Virus-ID: EICAR-Test-Signature\r\n${PAD}\r\n`),
  'a 200 echoing a request head that names the threat': (r) => {
    const [line] = r.encap.toString('latin1').split('\r\n');
    return answer(
      '200 OK',
      'req',
      `${line}\r\nHost: x\r\nX-Blocked: Virus found during virus scan\r\n${PAD}\r\n`,
    );
  },
};

describe('a threat in encapsulated heads over maxHeaderSize', () => {
  for (const framework of FRAMEWORKS)
    for (const failAction of MODES)
      it(`blocks (${framework}, ${failAction})`, async () => {
        let reply: (r: Req) => string = () => '';
        const s = await scriptedApp(
          framework,
          (r) => r.sock.end(reply(r)),
          { failAction, responseTimeout: 3000, connection: { ioTimeout: 2000 } },
          cleanups,
        );
        const passed: string[] = [];
        for (const [name, a] of Object.entries(ANSWERS)) {
          reply = a;
          const before = s.logs.length;
          const res = await s.post(Buffer.from('upload'));
          if (res.status !== 403 || s.logs[before]?.action !== 'ICAP_BLOCKED')
            passed.push(`${name}: ${res.status}`);
        }
        expect(passed).toEqual([]);
        expect(s.app.seen).toHaveLength(0);
        // Oversized and naming nothing: the ICAP failure it was.
        reply = () => answer('500 Server Error', 'res', `HTTP/1.1 500 Oops\r\n${PAD}\r\n`);
        const before = s.logs.length;
        const res = await s.post(Buffer.from('upload'));
        expect(res.status).toBe(failAction === 'fail-open' ? 200 : 503);
        expect(s.logs[before]?.error_code).toBe('ICAP_ERR_HEADERS_TOO_LARGE');
      }, 30_000);
});
