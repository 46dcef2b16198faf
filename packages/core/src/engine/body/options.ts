/** What a BodyStore is given, and the sizes and delays it works with. */

export interface BodyStoreOptions {
  limit: number;
  retainAll: boolean;
  highWaterMark?: number;
  /** Keep a running SHA-256 of the body (to recognise an identical echo when bytes are not held in memory). */
  hash?: boolean;
  onExceeded?: () => void;
  /** Held bytes above which the body moves to a temp file. Default: never. */
  memoryThreshold?: number;
  /** Folder for temp files. Default: the OS temp folder. */
  spoolDir?: string;
  /**
   * ms the source may send nothing while the store is reading it (not while the store holds it
   * back for slow readers): then `onIdle` is called once. Default: no limit.
   */
  idleTimeout?: number;
  onIdle?: () => void;
}

/** Spool writes outstanding above which the client is paused. */
export const SPOOL_PENDING_MAX = 4 * 1024 * 1024;
/**
 * Chunks smaller than this are copied into a shared arena instead of being kept as they came:
 * a body sent in 1-byte pieces costs the same memory (and the same number of ICAP chunks
 * downstream) as one sent in large ones. Each small Buffer Node hands over would otherwise be
 * kept with its own object and backing store, and read, hashed and framed one by one.
 */
export const COALESCE_BELOW = 16 * 1024;
/** Size of the arenas small chunks are copied into: the first is small (most bodies are), each next one twice as large, up to the largest. */
export const FIRST_ARENA = 4 * 1024;
export const ARENA_SIZE = 64 * 1024;
/**
 * Bytes received since readers were last woken from which they are woken at once; below, at
 * most once per {@link WAKE_DELAY} ms. A reader waiting at the end of a body that trickles in
 * then reads (and the ICAP client frames) a few hundred pieces a second at most, not one per
 * byte, however the client cut its body.
 */
export const WAKE_AT = 16 * 1024;
export const WAKE_DELAY = 4;
/** Bytes read from a spool file at a time. */
export const SPOOL_READ = 256 * 1024;
