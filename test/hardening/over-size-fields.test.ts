/**
 * campaign-bs BS2: a threat field past maxHeaderSize (64 KiB) in the ICAP head or in a trailer
 * section. The section is read on past its bound, line by line without being stored (up to 1 MiB
 * and the attempt's deadline), keeping the fields that may name a threat: a threat named late
 * blocks in both failure modes, however TCP splits it; an over-size section that names none stays
 * a failure (never clean).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { chunked, type Handler, type Req } from '../support/scripted-icap.js';
import {
  BLOCK,
  expectBlocked,
  FRAMEWORKS,
  later,
  MODES,
  type Mode,
  THREAT,
  UPLOAD,
  upload,
} from './odd-answers.js';

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** 70 KB of other fields (over maxHeaderSize), in one line or many. */
const PAD = `X-Scan-Details: ${'a'.repeat(70_000)}\r\n`;
const PAD_LINES = `X-Scan-Item: ${'b'.repeat(60)}\r\n`.repeat(1200);
const HEAD_204 = (fields: string) =>
  `ICAP/1.0 204 No Content\r\nISTag: "x1"\r\n${fields}Encapsulated: null-body=0\r\n\r\n`;
function echoTrailer(r: Req, trailer: string): string {
  const h = r.encap.toString('latin1');
  return `ICAP/1.0 200 OK\r\nISTag: "x1"\r\nEncapsulated: req-hdr=0, req-body=${h.length}\r\n\r\n${h}${chunked(r.body)}0\r\n${trailer}\r\n`;
}

const SHAPES: Array<[string, Handler]> = [
  [
    'a 200 block page naming the threat after 70 KB of fields',
    (r) => r.sock.write(BLOCK.replace(THREAT, `${PAD}${THREAT}`)),
  ],
  ['a 204 naming the threat after 70 KB of fields', (r) => r.sock.write(HEAD_204(`${PAD}${THREAT}`))],
  [
    'a 204 naming the threat after 1200 lines of fields',
    (r) => r.sock.write(HEAD_204(`${PAD_LINES}${THREAT}`)),
  ],
  [
    'a 204 naming the threat after 70 KB, its line cut in two 40 ms apart',
    (r) => {
      const all = HEAD_204(`${PAD}${THREAT}`);
      const at = all.indexOf('Threat=EIC');
      r.sock.write(all.slice(0, at));
      later(r, 40, all.slice(at));
    },
  ],
  [
    'a 204 naming the threat after 70 KB, the rest of the head 80 ms later',
    (r) => {
      r.sock.write(`ICAP/1.0 204 No Content\r\nISTag: "x1"\r\n${PAD}`);
      later(r, 80, `${THREAT}Encapsulated: null-body=0\r\n\r\n`);
    },
  ],
  [
    'a 204 naming the threat after a bare CR, past 70 KB',
    (r) => r.sock.write(HEAD_204(`${PAD}X-Other: x\r${THREAT}`)),
  ],
  [
    'an X-Violations-Found list (folded lines) past 70 KB',
    (r) => r.sock.write(HEAD_204(`${PAD}X-Violations-Found: 1\r\n\tupload.bin\r\n\tEICAR\r\n\t0\r\n\t2\r\n`)),
  ],
  [
    'an echo whose trailer names the threat after 70 KB of trailer fields',
    (r) => r.sock.write(echoTrailer(r, `${PAD}${THREAT}`)),
  ],
  [
    'an echo whose trailer names the threat after 70 KB, 80 ms later',
    (r) => {
      const all = echoTrailer(r, `${PAD}${THREAT}`);
      const at = all.indexOf('X-Infection-Found');
      r.sock.write(all.slice(0, at));
      later(r, 80, all.slice(at));
    },
  ],
];

describe.each(FRAMEWORKS)('%s', (framework) => {
  describe.each(MODES)('%s', (mode) => {
    it.each(SHAPES)('%s: blocked', async (_n, handler) => {
      const out = await upload(framework, mode, handler, cleanups);
      expectBlocked(out);
    });
  });
});

/** A failure, never clean: fail-closed 503; fail-open the failure action. */
function expectFailure(out: Awaited<ReturnType<typeof upload>>, mode: Mode): void {
  expect(out.log?.action).toBe('ICAP_FAILED');
  if (mode === 'fail-closed') {
    expect(out.status).toBe(503);
    expect(out.seen).toEqual([]);
  } else {
    expect(out.seen).toEqual([UPLOAD.toString('latin1')]);
  }
}

describe.each(MODES)('an over-size section naming nothing stays a failure (%s)', (mode) => {
  it('a 204 with 70 KB of other fields', async () => {
    expectFailure(await upload('express5', mode, (r) => r.sock.write(HEAD_204(PAD)), cleanups), mode);
  });
  it('a head that never ends within 1 MiB fails without waiting for more', async () => {
    const h: Handler = (r) => r.sock.write(`ICAP/1.0 204 No Content\r\n${PAD_LINES.repeat(15)}`);
    expectFailure(await upload('express5', mode, h, cleanups), mode);
  });
  it('an echo with 70 KB of other trailer fields', async () => {
    expectFailure(await upload('express5', mode, (r) => r.sock.write(echoTrailer(r, PAD)), cleanups), mode);
  });
});
