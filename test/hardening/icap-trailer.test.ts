/**
 * campaign-bs BS3: an ICAP trailer (draft-rousskov-icap-trailers, framed as Squid's
 * src/adaptation/icap/ModXact.cc reads it): a final head with a `Trailer` field is followed by one
 * more field section, right after the head when the answer has no body (null-body), else after
 * the chunked body's end. It is part of the answer: a threat named there blocks in both failure
 * modes however TCP splits it (a later segment included), an answer whose trailer never comes is
 * never clean, and the connection is never reused.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { scriptedApp } from '../support/scripted-app.js';
import { chunked, type Handler, type Req } from '../support/scripted-icap.js';
import { expectBlocked, expectPassed, FRAMEWORKS, later, MODES, THREAT, upload } from './odd-answers.js';

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const HEAD_204 =
  'ICAP/1.0 204 No Content\r\nISTag: "x1"\r\nTrailer: X-Infection-Found\r\nEncapsulated: null-body=0\r\n\r\n';
const HEAD_200_ALLOWED =
  'ICAP/1.0 200 OK\r\nISTag: "x1"\r\nX-Response-Info: Allowed\r\nTrailer: X-Infection-Found\r\nEncapsulated: null-body=0\r\n\r\n';
/** A 200 echo announcing the ICAP trailer, its chunked body to its end (`0\r\n\r\n`). */
function echoWithTrailer(r: Req): string {
  const h = r.encap.toString('latin1');
  return `ICAP/1.0 200 OK\r\nISTag: "x1"\r\nAllow: trailers\r\nTrailer: X-Infection-Found\r\nEncapsulated: req-hdr=0, req-body=${h.length}\r\n\r\n${h}${chunked(r.body)}0\r\n\r\n`;
}

type Shape = [name: string, head: (r: Req) => string, profile?: Record<string, unknown>];
const SHAPES: Shape[] = [
  ['a 204 (null-body)', () => HEAD_204],
  ['a 200 X-Response-Info: Allowed (null-body)', () => HEAD_200_ALLOWED],
  ['a 204 in the preview', () => HEAD_204, { previewSize: 4, previewMinBodySize: 0 }],
  ['a 200 echo, the trailer after its chunked body (Squid framing)', echoWithTrailer],
];
/** How the trailer naming EICAR is sent after the answer. */
const SPLITS: Array<[name: string, send: (r: Req, head: string, trailer: string) => void]> = [
  ['in the same segment', (r, head, trailer) => r.sock.write(head + trailer)],
  [
    '80 ms later',
    (r, head, trailer) => {
      r.sock.write(head);
      later(r, 80, trailer);
    },
  ],
  [
    'its threat line cut in two, 40 ms apart',
    (r, head, trailer) => {
      r.sock.write(head + trailer.slice(0, 20));
      later(r, 40, trailer.slice(20));
    },
  ],
];

describe.each(FRAMEWORKS)('%s', (framework) => {
  describe.each(MODES)('%s', (mode) => {
    describe.each(SHAPES)('%s announcing Trailer: X-Infection-Found', (_n, head, profile) => {
      it.each(SPLITS)('the ICAP trailer naming EICAR %s: blocked', async (_s, send) => {
        const h: Handler = (r) => send(r, head(r), `${THREAT}\r\n`);
        expectBlocked(await upload(framework, mode, h, cleanups, profile));
      });
    });
  });
});

describe('the ICAP trailer is part of the answer', () => {
  it.each(SHAPES)('%s whose trailer names nothing passes (the upload as sent)', async (_n, head, profile) => {
    const h: Handler = (r) => {
      r.sock.write(head(r));
      later(r, 50, 'X-Scan-Info: done\r\n\r\n');
    };
    expectPassed(await upload('express5', 'fail-closed', h, cleanups, profile));
  });

  it.each(MODES)(
    '%s: a 204 whose announced trailer never comes (the server closes) is never clean',
    async (mode) => {
      const h: Handler = (r) => {
        r.sock.write(HEAD_204);
        setTimeout(() => r.sock.end(), 80);
      };
      const out = await upload('express5', mode, h, cleanups);
      expect(out.log?.action).toBe('ICAP_FAILED');
      if (mode === 'fail-closed') {
        expect(out.status).toBe(503);
        expect(out.seen).toEqual([]);
      }
    },
  );

  it('a 204 whose trailer has not come waits for it: a trailer cut off by the server closing still blocks', async () => {
    const h: Handler = (r) => {
      r.sock.write(`${HEAD_204}X-Infection-Found: Type=0; Resolution=2; Threat=EICAR;`);
      setTimeout(() => r.sock.end(), 80);
    };
    expectBlocked(await upload('express5', 'fail-open', h, cleanups));
  });

  it.each(MODES)(
    '%s: a block naming EICAR in its own head, whose announced trailer never comes: blocked',
    async (mode) => {
      const h: Handler = (r) => {
        r.sock.write(HEAD_204.replace('Trailer:', `${THREAT}Trailer:`));
        setTimeout(() => r.sock.end(), 80);
      };
      expectBlocked(await upload('express5', mode, h, cleanups));
    },
  );

  it('the connection is not reused after an answer that announced an ICAP trailer', async () => {
    const s = await scriptedApp(
      'express5',
      (r) => r.sock.write(`${HEAD_204}\r\n`),
      { failAction: 'fail-closed', responseTimeout: 3000 },
      cleanups,
    );
    expect((await s.post(Buffer.from('one'))).status).toBe(200);
    expect((await s.post(Buffer.from('two'))).status).toBe(200);
    const scans = s.icap.requests.filter((r) => r.method === 'REQMOD');
    expect(scans).toHaveLength(2);
    expect(scans[1]!.conn).not.toBe(scans[0]!.conn);
  });
});
