/**
 * A response body taken through a sink (AnswerBody.take, what AdaptedBody.readAnswer uses)
 * gives its reader what its Readable (`IcapResponse.body`, the general path) gives: the same
 * bytes in order, then the same end or the same error, whenever the reader comes (before the
 * first chunk, mid-way, after the end or the failure); a reader that stops early fails the
 * exchange as destroying the Readable does. Then the same through a real exchange: readAnswer
 * against readAll(res.body), echoes complete on arrival and streamed, cut off, too large.
 */
import { startIcapServer } from '@icapkit/testing';
import { describe, expect, it } from 'vitest';
import { AnswerBody, type BodySink } from '../../packages/core/src/client/answer.js';
import { IcapClient } from '../../packages/core/src/client/client.js';
import type { IcapResponse } from '../../packages/core/src/client/transaction-types.js';
import { AdaptedBody, BodyStore } from '../../packages/core/src/engine/body.js';
import { IcapError, IcapErrorCodes } from '../../packages/core/src/errors.js';

type Step = Buffer | 'end' | 'fail';

interface Seen {
  bytes: string;
  error: string | undefined;
  /** What the transaction was told when its reader gave up (destroyed / abandoned). */
  gaveUp: string[];
}

const describeError = (e: unknown) =>
  e === undefined
    ? undefined
    : `${(e as { code?: string }).code ?? ''} ${(e as Error).message}`.replace(
        /:\/\/127\.0\.0\.1:\d+/g,
        '://icap',
      );

/** Feeds `steps` to an AnswerBody; the reader comes after `at` of them, the Readable way or a sink. */
async function run(way: 'readable' | 'sink', steps: Step[], at: number, stopAfter = Infinity): Promise<Seen> {
  const gaveUp: string[] = [];
  const body = new AnswerBody(
    () => {},
    (err) => gaveUp.push(describeError(err)!),
  );
  const failure = new IcapError(IcapErrorCodes.CLOSED, 'closed in the middle');
  const feed = (s: Step) => {
    if (s === 'end') body.end();
    else if (s === 'fail') body.fail(failure);
    else body.push(s);
  };
  for (const s of steps.slice(0, at)) feed(s);
  const chunks: Buffer[] = [];
  let error: unknown;
  const done = (async () => {
    if (way === 'readable') {
      const r = body.readable()!;
      try {
        for await (const c of r as AsyncIterable<Buffer>) {
          chunks.push(c);
          if (chunks.length >= stopAfter) break;
        }
      } catch (err) {
        error = err;
      }
      return;
    }
    await new Promise<void>((resolve) => {
      const sink: BodySink = {
        data: (c) => {
          chunks.push(c);
          if (chunks.length < stopAfter) return true;
          resolve();
          return false;
        },
        end: () => resolve(),
        error: (err) => {
          error = err;
          resolve();
        },
      };
      expect(body.take(sink)).toBe(true);
      if (chunks.length >= stopAfter) resolve();
    });
  })();
  for (const s of steps.slice(at)) {
    await new Promise((r) => setImmediate(r));
    feed(s);
  }
  // Bounded: every script ends (end or fail), or its reader stopped.
  await Promise.race([
    done,
    new Promise((_, rej) => setTimeout(() => rej(new Error('reader never ended')), 5000)),
  ]);
  return { bytes: Buffer.concat(chunks).toString(), error: describeError(error), gaveUp };
}

const a = Buffer.from('first chunk;');
const b = Buffer.from('second;');
const c = Buffer.from('third');
const scripts: Array<[string, Step[]]> = [
  ['three chunks and the end', [a, b, c, 'end']],
  ['an empty body', ['end']],
  ['a failure mid-way', [a, b, 'fail']],
  ['a failure before any chunk', ['fail']],
  [
    'more than a Readable holds (64 KiB) before its reader comes',
    [Buffer.alloc(40_000, 1), Buffer.alloc(40_000, 2), 'end'],
  ],
];

describe('a sink gets what the Readable gives', () => {
  for (const [name, steps] of scripts) {
    for (let at = 0; at <= steps.length; at++) {
      it(`${name}, reader after ${at} step(s)`, async () => {
        const general = await run('readable', steps, at);
        const sink = await run('sink', steps, at);
        expect(sink).toEqual(general);
      });
    }
  }

  // (A Readable read by for await hands over what it holds as one chunk, a sink chunk by chunk:
  // where a reader that stops after its first chunk stops differs; what the exchange is told not.)
  it('a reader that stops before the end fails the exchange as a destroyed Readable does', async () => {
    for (let at = 0; at <= 3; at++) {
      const general = await run('readable', [a, b, c, 'end'], at, 1);
      const sink = await run('sink', [a, b, c, 'end'], at, 1);
      expect(sink.gaveUp).toEqual(general.gaveUp);
      expect(sink.gaveUp).toEqual(['ICAP_ERR_ABORTED the ICAP response body was destroyed before its end']);
    }
  });

  it('after the end was held, a reader that stops says so as the Readable does (the transaction, over, ignores it)', async () => {
    const general = await run('readable', [a, b, 'end'], 3, 1);
    const sink = await run('sink', [a, b, 'end'], 3, 1);
    expect(sink.gaveUp).toEqual(general.gaveUp);
  });

  it('once a sink took the body there is no Readable, and once the Readable is made no sink', () => {
    const one = new AnswerBody(
      () => {},
      () => {},
    );
    expect(one.take({ data: () => true, end: () => {}, error: () => {} })).toBe(true);
    expect(one.readable()).toBeNull();
    const two = new AnswerBody(
      () => {},
      () => {},
    );
    expect(two.readable()).not.toBeNull();
    expect(two.take({ data: () => true, end: () => {}, error: () => {} })).toBe(false);
  });
});

describe('readAnswer through an exchange reads as readAll(res.body)', () => {
  async function exchange(
    way: 'readAnswer' | 'readAll',
    body: Buffer,
    opts: { limit?: number; fault?: 'cut' } = {},
  ) {
    const icap = await startIcapServer({
      script: (r) =>
        r.method !== 'OPTIONS' && opts.fault === 'cut' ? { kind: 'close', when: 'mid-response' } : undefined,
    });
    const client = new IcapClient({ url: icap.url(), useOptions: false });
    try {
      const original = new BodyStore({ limit: 1 << 24, retainAll: true });
      original.push(body);
      original.end();
      const res = (await client.request({
        method: 'REQMOD',
        service: '/echo',
        allow204: false,
        httpRequest: {
          method: 'POST',
          target: '/upload',
          headers: [
            ['Host', 'example.test'],
            ['Content-Length', String(body.length)],
          ],
        },
        body,
        bodyLength: body.length,
        preview: false,
      })) as IcapResponse;
      const adapted = new AdaptedBody(original, opts.limit ?? 1 << 24);
      let received = 0;
      let error: unknown;
      try {
        if (way === 'readAnswer')
          await adapted.readAnswer(
            res,
            (n) => (received += n),
            () => new Error('too large'),
          );
        else if (res.body !== null)
          await adapted.readAll(
            res.body,
            (n) => (received += n),
            () => new Error('too large'),
          );
      } catch (err) {
        error = err;
      }
      const done = await res.done.then(
        (s) => `done, reused ${s.reused}`,
        (err: unknown) => `failed: ${describeError(err)}`,
      );
      const result = {
        status: res.status,
        // Where a body too large is given up depends on how it was cut into chunks: both ways
        // must only never hold more than the limit.
        received: error === undefined ? received : undefined,
        length: error === undefined ? adapted.length : undefined,
        heldWithinLimit: adapted.length <= (opts.limit ?? 1 << 24),
        identical: error === undefined ? await adapted.identical() : undefined,
        error: describeError(error),
        done,
      };
      adapted.dispose();
      return result;
    } finally {
      await client.close();
      await icap.close();
    }
  }

  const cases: Array<[string, Buffer, Parameters<typeof exchange>[2]]> = [
    ['a small echo (the body comes with the head)', Buffer.alloc(10 * 1024, 'x'), {}],
    ['a 1 MiB echo streamed back as it is sent', Buffer.alloc(1 << 20, 'y'), {}],
    ['an echo larger than the limit', Buffer.alloc(200 * 1024, 'z'), { limit: 100 * 1024 }],
    ['an echo cut off mid-way (the server closes)', Buffer.alloc(300 * 1024, 'w'), { fault: 'cut' }],
  ];
  for (const [name, body, opts] of cases) {
    it(name, async () => {
      const general = await exchange('readAll', body, opts);
      const fast = await exchange('readAnswer', body, opts);
      expect(fast).toEqual(general);
    });
  }
});
