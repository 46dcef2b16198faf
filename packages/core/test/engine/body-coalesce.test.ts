/**
 * Chunking cannot amplify: a body that arrives in 1-byte pieces is kept in as few pieces (and
 * read in as few reads) as one that arrives in large ones, byte for byte the same; small chunk
 * headers do not pin slabs of Node's shared Buffer pool.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { toBodySource } from '../../src/client/source.js';
import { BodyStore } from '../../src/engine/body.js';
import { chunkHeader } from '../../src/protocol/encoder.js';

const MiB = 1024 * 1024;

function pattern(n: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + (i >> 8)) & 0xff;
  return b;
}

async function readAll(it: AsyncIterator<Buffer>): Promise<{ bytes: Buffer; reads: number }> {
  const parts: Buffer[] = [];
  for (;;) {
    const r = await it.next();
    if (r.done) break;
    parts.push(Buffer.from(r.value));
  }
  return { bytes: Buffer.concat(parts), reads: parts.length };
}

describe('BodyStore: small chunks are coalesced', () => {
  it('1 MiB pushed as 1-byte chunks is held in a bounded number of pieces, and replays byte for byte', async () => {
    const body = pattern(MiB);
    const store = new BodyStore({ limit: 2 * MiB, retainAll: true });
    for (let i = 0; i < body.length; i++) store.push(body.subarray(i, i + 1));
    store.end();
    // Arenas of 4, 8, 16, 32 KiB, then 64 KiB: about 20 pieces for 1 MiB (not a million).
    expect(store.pieces).toBeLessThanOrEqual(21);
    const { bytes, reads } = await readAll(store.open());
    expect(bytes.equals(body)).toBe(true);
    expect(reads).toBeLessThanOrEqual(21);
    expect(store.equalsAt(12345, body.subarray(12345, 99999))).toBe(true);
    expect(Buffer.concat(store.slices(MiB)).equals(body)).toBe(true);
    store.dispose();
  });

  it('large and small chunks mixed keep their order and bytes', async () => {
    const body = pattern(300_000);
    const store = new BodyStore({ limit: MiB, retainAll: true });
    const sizes = [1, 3, 70_000, 1, 2, 5000, 20_000, 1, 16_384, 7];
    let at = 0;
    for (let k = 0; at < body.length; k++) {
      const n = Math.min(sizes[k % sizes.length]!, body.length - at);
      store.push(body.subarray(at, at + n));
      at += n;
    }
    store.end();
    const { bytes } = await readAll(store.open());
    expect(bytes.equals(body)).toBe(true);
    store.dispose();
  });

  it('a reader waiting at the end of a trickling body reads it in a few large pieces, not byte by byte', async () => {
    const body = pattern(256 * 1024);
    const store = new BodyStore({ limit: MiB, retainAll: false });
    const reading = readAll(store.open());
    // Arrives in 1-byte pieces, a burst of 4 KiB per turn of the event loop.
    for (let at = 0; at < body.length; at += 4096) {
      for (let i = at; i < at + 4096; i++) store.push(body.subarray(i, i + 1));
      await new Promise((r) => setImmediate(r));
    }
    store.end();
    const { bytes, reads } = await reading;
    expect(bytes.equals(body)).toBe(true);
    // One read per wake at most: far fewer than the 262 144 pieces (and than the 64 bursts x 4 KiB).
    expect(reads).toBeLessThanOrEqual(64 + 16);
    store.stopHolding();
    store.dispose();
  });

  it('a spooled body that arrived in 1-byte chunks reads back whole', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'icapkit-coalesce-'));
    try {
      const body = pattern(512 * 1024);
      const store = new BodyStore({ limit: MiB, retainAll: true, memoryThreshold: 64 * 1024, spoolDir: dir });
      store.attach(
        Readable.from(
          (function* () {
            for (let i = 0; i < body.length; i++) yield body.subarray(i, i + 1);
          })(),
        ),
      );
      await store.whenEnded();
      expect(store.spooled).toBe(true);
      const { bytes } = await readAll(store.open());
      expect(bytes.equals(body)).toBe(true);
      store.dispose();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('BodyStore.equalsAt: the held bytes at an offset, however they were chunked', () => {
  it('says whether a slice (or a slice with one byte changed) equals the body there', () => {
    fc.assert(
      fc.property(
        fc.array(fc.oneof(fc.integer({ min: 1, max: 200 }), fc.integer({ min: 1, max: 70_000 })), {
          minLength: 1,
          maxLength: 40,
        }),
        fc.array(fc.tuple(fc.nat(), fc.nat({ max: 20_000 }), fc.option(fc.nat(), { nil: undefined })), {
          minLength: 1,
          maxLength: 20,
        }),
        fc.boolean(),
        (pieces, probes, ended) => {
          const total = pieces.reduce((a, b) => a + b, 0);
          const body = pattern(total);
          const store = new BodyStore({ limit: total + 1, retainAll: true });
          let at = 0;
          for (const n of pieces) {
            store.push(body.subarray(at, at + n));
            at += n;
          }
          if (ended) store.end();
          for (const [from, length, flip] of probes) {
            const offset = from % (total + 1);
            let data = Buffer.from(body.subarray(offset, offset + length));
            let same = true;
            // Past the end: bytes the body does not (yet) have are never equal.
            if (offset + length > total) {
              data = Buffer.concat([data, Buffer.from([body[0]!])]);
              same = false;
            } else if (flip !== undefined && data.length > 0) {
              data[flip % data.length]! ^= 0x5a;
              same = false;
            }
            expect(store.equalsAt(offset, data)).toBe(same);
          }
          // An echo compared piece by piece, in c-icap's 4,064-byte chunks, from start to end.
          for (let o = 0; o < total; o += 4064) {
            expect(store.equalsAt(o, body.subarray(o, Math.min(total, o + 4064)))).toBe(true);
          }
          store.dispose();
        },
      ),
      { numRuns: 200 },
    );
  });
});

describe('toBodySource: a list of small pieces', () => {
  it('is read (and so framed) in pieces of 16 KiB, not one per item', async () => {
    const body = pattern(100_000);
    const items: Uint8Array[] = [];
    for (let i = 0; i < body.length; i++) items.push(body.subarray(i, i + 1));
    items.push(pattern(40_000));
    const source = toBodySource(items);
    expect(source.length).toBe(140_000);
    const { bytes, reads } = await readAll(source.open() as AsyncIterator<Buffer>);
    expect(bytes.equals(Buffer.concat([body, pattern(40_000)]))).toBe(true);
    expect(reads).toBeLessThanOrEqual(Math.ceil(100_000 / (16 * 1024)) + 2);
  });
});

describe('chunkHeader', () => {
  it('writes the hex size and CRLF', () => {
    for (const n of [0, 1, 15, 16, 255, 256, 4095, 4096, 65_536, 1_000_000])
      expect(chunkHeader(n).toString('latin1')).toBe(`${n.toString(16)}\r\n`);
  });

  it('kept header lines share one arena of their own, not slabs of the shared Buffer pool', () => {
    const buffers = new Set<ArrayBufferLike>();
    for (let n = 0; n < 4096; n++) buffers.add(chunkHeader(n).buffer);
    expect(buffers.size).toBe(1);
    const [arena] = [...buffers];
    // Buffer.poolSize slabs are 8 KiB; the arena is sized for the 4096 lines (5 bytes each).
    expect(arena!.byteLength).toBe(4096 * 5);
    expect(chunkHeader(42)).toBe(chunkHeader(42));
  });
});
