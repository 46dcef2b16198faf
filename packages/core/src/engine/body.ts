/**
 * The HTTP request body while it is scanned: received once from the client, read by any
 * number of readers, each from the first byte, while it is still arriving.
 *
 * - `retainAll` (Allow: 204 mode): every byte is kept until the verdict, so a 204 can replay
 *   the original bytes to the application and a failed server can be replaced by another one.
 *   The client is read as fast as it sends (what is held is bounded by `limit`).
 * - otherwise (streaming mode): the client is paused while the slowest reader lags more than
 *   `highWaterMark` bytes behind, so a slow ICAP server slows the upload instead of growing
 *   memory. Bytes are held until {@link BodyStore.stopHolding} (called when the server asks for
 *   more than the preview: until then a 204 may still need to replay them), and from then on
 *   released as soon as every reader has passed them.
 *
 * Above `memoryThreshold` held bytes, the body moves to a temp file in `spoolDir` (mode 0600),
 * so a large bufferSize does not mean large memory. The file is removed by {@link dispose}, when
 * the last replay has read it after {@link release}, and at process exit at the latest.
 *
 * `limit` is the scan limit (the profile's bufferSize): crossing it calls `onExceeded` once.
 * After the verdict, {@link BodyStore.release} turns the store into a pass-through for the
 * replay to the application: no limit, memory released behind the reader.
 */
/*
 * Files: body/store.ts (BodyStore), body/cursor.ts (its readers), body/spool.ts (its temp
 * file), body/options.ts (its options and sizes), body/adapted.ts (AdaptedBody, the body an ICAP
 * server returns).
 */

export { AdaptedBody } from './body/adapted.js';
export type { BodyStoreOptions } from './body/options.js';
export { openSpoolFiles } from './body/spool.js';
export { BodyStore } from './body/store.js';
