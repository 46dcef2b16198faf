/**
 * EchoCheck (client/echo.ts): a connection is kept after an answer with a body only when that
 * body is the one sent, byte for byte. However the bytes sent and read are split, the same bytes
 * are an echo; one byte changed, one more or one fewer, is not (campaign-at AT5, campaign-au AU1).
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { EchoCheck } from '../../src/client/echo.js';
import { split } from './split.js';

/**
 * Sends `sent` and reads `read`, each in its pieces, interleaved as `order` says, a piece read
 * only once the bytes it would echo were sent (a server echoes what it has read); `max`: the
 * caller's bound on what is held (IcapRequestOptions.echoHold).
 */
function check(sent: Buffer[], read: Buffer[], order: boolean[], max?: number): boolean {
  const echo = new EchoCheck(max);
  let s = 0;
  let r = 0;
  let sentBytes = 0;
  let readBytes = 0;
  const send = () => {
    sentBytes += sent[s]!.length;
    echo.sent(Buffer.from(sent[s++]!));
  };
  const take = () => {
    readBytes += read[r]!.length;
    echo.read(read[r++]!);
  };
  for (const readNext of order) {
    if (readNext && r < read.length && readBytes + read[r]!.length <= sentBytes) take();
    else if (s < sent.length) send();
  }
  while (s < sent.length) send();
  while (r < read.length) take();
  return echo.echoed;
}

const body = fc.uint8Array({ minLength: 1, maxLength: 3000 }).map((b) => Buffer.from(b));
const cuts = fc.array(fc.nat(), { maxLength: 12 });
const order = fc.array(fc.boolean(), { maxLength: 40 });

describe('EchoCheck', () => {
  it('the same bytes, split anyhow on either side, are an echo', () => {
    fc.assert(
      fc.property(body, cuts, cuts, order, (b, c1, c2, o) => {
        expect(check(split(b, c1), split(b, c2), o)).toBe(true);
      }),
      { numRuns: 300 },
    );
  });

  it('one byte changed, added or taken away is not', () => {
    fc.assert(
      fc.property(
        body,
        fc.nat(),
        fc.constantFrom('change', 'add', 'drop'),
        cuts,
        cuts,
        order,
        (b, at, how, c1, c2, o) => {
          const i = at % b.length;
          const other =
            how === 'change'
              ? Buffer.concat([b.subarray(0, i), Buffer.from([b[i]! ^ 1]), b.subarray(i + 1)])
              : how === 'add'
                ? Buffer.concat([b.subarray(0, i), Buffer.from([0x30]), b.subarray(i)])
                : Buffer.concat([b.subarray(0, i), b.subarray(i + 1)]);
          expect(check(split(b, c1), split(other, c2), o)).toBe(false);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('holds at most 2 MiB ahead of the answer: a larger body read after all was sent is not an echo', () => {
    const big = Buffer.alloc(3 * 1024 * 1024, 0x61);
    const pieces = split(big, [1 << 20, 2 << 20]);
    expect(check(pieces, pieces, [false, false, false])).toBe(false);
    // Read as it is sent, the same body is.
    expect(check(pieces, pieces, [false, true, false, true, false, true])).toBe(true);
  });

  it("holds no more than the caller's bound (a body spooled to disk: campaign-ax AX4), never more than 2 MiB", () => {
    const body = Buffer.alloc(6000, 0x62);
    const pieces = split(body, [2000, 4000]);
    expect(check(pieces, pieces, [false, false, false], 5000)).toBe(false);
    expect(check(pieces, pieces, [false, false, false], 6000)).toBe(true);
    // Read as it is sent, no more than 2000 bytes are ever held.
    expect(check(pieces, pieces, [false, true, false, true, false, true], 2000)).toBe(true);
    // A bound that is not a number holds nothing (never everything).
    expect(check(pieces, pieces, [false, false, false], Number.NaN)).toBe(false);
    const big = split(Buffer.alloc(3 * 1024 * 1024, 0x61), [1 << 20, 2 << 20]);
    expect(check(big, big, [false, false, false], 8 * 1024 * 1024)).toBe(false);
  });

  it('no body sent and none read is an echo; a body read when none was sent is not', () => {
    expect(new EchoCheck().echoed).toBe(true);
    const e = new EchoCheck();
    e.read(Buffer.from('x'));
    expect(e.echoed).toBe(false);
  });
});
