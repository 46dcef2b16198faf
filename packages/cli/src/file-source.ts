import type { BigIntStats } from 'node:fs';
import { constants } from 'node:fs';
import { type FileHandle, open } from 'node:fs/promises';
import { IcapError, IcapErrorCodes, type ReplayableBody } from '@icapkit/core';
import type { ProgressTracker } from './io.js';

/** What a file was when it was looked at (stat, before it is sent): every open() must match it. */
export interface FileIdentity {
  dev: bigint;
  ino: bigint;
  size: bigint;
  mtimeNs: bigint;
  ctimeNs: bigint;
}

export function identityOf(st: BigIntStats): FileIdentity {
  return { dev: st.dev, ino: st.ino, size: st.size, mtimeNs: st.mtimeNs, ctimeNs: st.ctimeNs };
}

function sameIdentity(a: FileIdentity, b: FileIdentity): boolean {
  return (
    a.dev === b.dev &&
    a.ino === b.ino &&
    a.size === b.size &&
    a.mtimeNs === b.mtimeNs &&
    a.ctimeNs === b.ctimeNs
  );
}

const CHUNK = 64 * 1024;

/**
 * A file as a replayable body: each open() opens it again by path and reads it from its first
 * byte, 64 KiB at a time. The opened file must be the one of `identity` (device, inode, size,
 * mtime, ctime) right after it is opened and again once its last byte was read; otherwise (or
 * when it cannot be checked) the body fails with ICAP_ERR_BODY_SOURCE, "changed while it was
 * being sent": a verdict is only ever given for the bytes that are on disk.
 */
export function fileBody(
  path: string,
  identity: FileIdentity,
  progress: ProgressTracker | undefined,
): ReplayableBody {
  const size = Number(identity.size);
  let opens = 0;
  return {
    replayable: true,
    length: size,
    open(): AsyncIterator<Uint8Array> {
      if (opens++ > 0) progress?.restart();
      let fh: FileHandle | undefined;
      let closed = false;
      let failure: unknown;
      let read = 0;
      const changed = (detail: string) =>
        new IcapError(IcapErrorCodes.BODY_SOURCE, `${path} changed while it was being sent (${detail})`);
      const close = async () => {
        closed = true;
        const h = fh;
        fh = undefined;
        await h?.close().catch(() => {});
      };
      const check = async (h: FileHandle) => {
        let now: FileIdentity;
        try {
          now = identityOf(await h.stat({ bigint: true }));
        } catch (err) {
          throw new IcapError(IcapErrorCodes.BODY_SOURCE, `cannot check ${path}: ${(err as Error).message}`, {
            cause: err,
          });
        }
        if (!sameIdentity(now, identity)) throw changed(`${read} of ${size} bytes read`);
      };
      const step = async (): Promise<IteratorResult<Uint8Array>> => {
        if (closed) return { done: true, value: undefined };
        let h = fh;
        if (h === undefined) {
          // O_NONBLOCK: a FIFO swapped in since the stat does not block the open (it fails the check).
          h = await open(path, constants.O_RDONLY | constants.O_NONBLOCK);
          if (closed) {
            await h.close().catch(() => {});
            return { done: true, value: undefined };
          }
          fh = h;
          await check(h);
        }
        const buf = Buffer.allocUnsafe(CHUNK);
        const { bytesRead } = await h.read(buf, 0, CHUNK, read);
        if (bytesRead === 0) {
          if (read !== size) throw changed(`${size} bytes expected, ${read} read`);
          await check(h);
          await close();
          return { done: true, value: undefined };
        }
        read += bytesRead;
        if (read > size) throw changed(`${size} bytes expected, more read`);
        // The last byte is read: the file must still be the one looked at, before any is handed over.
        if (read === size) await check(h);
        progress?.add(bytesRead);
        return { done: false, value: buf.subarray(0, bytesRead) };
      };
      return {
        async next() {
          // A reader that failed keeps failing: it never ends as if the file had been read.
          if (failure !== undefined) throw failure;
          try {
            return await step();
          } catch (err) {
            failure = err;
            await close();
            throw err;
          }
        },
        async return() {
          await close();
          return { done: true as const, value: undefined };
        },
      };
    },
  };
}
