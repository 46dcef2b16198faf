/** Helpers of the hand-off tests (body-handoff, held-pass): a consumed request, a held store, a reader. */
import { once } from 'node:events';
import { IncomingMessage } from 'node:http';
import { Socket } from 'node:net';
import type { Readable } from 'node:stream';
import { BodyStore } from '../../src/engine/body.js';

/**
 * A request whose body (`parts`) was read to its end, as after the scan's intake; `extra` are
 * more raw header lines (name, value, ...), given in `headers` too.
 */
export async function consumedRequest(parts: Buffer[], extra: string[] = []): Promise<IncomingMessage> {
  const req = new IncomingMessage(new Socket());
  const length = parts.reduce((n, p) => n + p.length, 0);
  req.method = 'POST';
  req.url = '/upload';
  req.headers = { host: 'x', 'content-length': String(length) };
  for (let i = 0; i + 1 < extra.length; i += 2) req.headers[extra[i]!.toLowerCase()] = extra[i + 1]!;
  req.rawHeaders = ['Host', 'x', 'Content-Length', String(length), ...extra];
  for (const p of parts) req.push(p);
  req.push(null);
  req.resume();
  await once(req, 'end');
  return req;
}

/** A store holding `body`, pushed in pieces of the given sizes. */
export function held(
  body: Buffer,
  pieces: number[],
  opts: Partial<ConstructorParameters<typeof BodyStore>[0]> = {},
): BodyStore {
  const store = new BodyStore({ limit: 64 * 1024 * 1024, retainAll: true, ...opts });
  let at = 0;
  for (const n of pieces) {
    store.push(body.subarray(at, at + n));
    at += n;
  }
  return store;
}

/** Reads `req` as a body parser does, with a deadline: its bytes and the chunks they came in. */
export async function readBody(req: Readable, ms = 5000): Promise<{ bytes: Buffer; chunks: Buffer[] }> {
  const chunks: Buffer[] = [];
  const done = new Promise<void>((resolve, reject) => {
    req.on('data', (c: Buffer) => chunks.push(c));
    req.once('end', resolve);
    req.once('error', reject);
  });
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error('the body did not end in time')), ms);
  });
  try {
    await Promise.race([done, deadline]);
  } finally {
    clearTimeout(timer);
  }
  return { bytes: Buffer.concat(chunks), chunks };
}

/** The rest of a held body arriving after the hand-off: pushed and ended `ms` later. */
export function endLater(store: BodyStore, rest: Buffer, ms = 10): void {
  setTimeout(() => {
    store.push(rest);
    store.end();
  }, ms);
}

/**
 * What `req` emits over the next few turns of the event loop: how many chunks, and whether it
 * ended (a body disposed before it was read must give neither).
 */
export async function emittedSoon(req: Readable, turns = 5): Promise<{ chunks: number; ended: boolean }> {
  let chunks = 0;
  let ended = false;
  req.on('data', () => {
    chunks++;
  });
  req.once('end', () => {
    ended = true;
  });
  for (let i = 0; i < turns; i++) await new Promise((r) => setImmediate(r));
  return { chunks, ended };
}
