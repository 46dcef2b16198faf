/**
 * The body pump takes a chunk the engine's body store holds in memory at once (NEXT_NOW, no
 * promise per chunk) and waits through next() otherwise. Both ways must put the same bytes on
 * the wire and end alike: a body complete before the exchange, one still arriving, a threat in
 * it, an abort mid-way, with and without a preview. Each case is run twice, once with the
 * store's reader as it is and once behind a wrapper that hides NEXT_NOW (the general path).
 */
import { eicar, type IcapTestServer, startIcapServer } from '@icapkit/testing';
import { afterEach, describe, expect, it } from 'vitest';
import { IcapClient, isSkipped } from '../../src/client/client.js';
import type { ReplayableBody } from '../../src/client/source.js';
import { NEXT_NOW } from '../../src/client/source.js';
import { BodyStore } from '../../src/engine/body.js';
import { IcapError } from '../../src/errors.js';

let server: IcapTestServer | undefined;
const clients: IcapClient[] = [];

afterEach(async () => {
  for (const c of clients.splice(0)) c.destroy();
  await server?.close();
  server = undefined;
});

/** The same body without NEXT_NOW: every chunk through next(). */
function general(body: ReplayableBody): ReplayableBody {
  return {
    replayable: true,
    get length() {
      return body.length;
    },
    open() {
      const it = body.open();
      return {
        next: () => it.next(),
        return: () => it.return?.() ?? Promise.resolve({ done: true, value: undefined }),
      };
    },
  };
}

/** Pieces of several sizes (small ones share the store's arena), `total` bytes, deterministic. */
function pieces(total: number, seed: number): Buffer[] {
  const out: Buffer[] = [];
  let n = 0;
  let i = 0;
  while (n < total) {
    const size = Math.min(total - n, [70_000, 1, 5000, 16_384, 300, 65_536, 20_000][(i + seed) % 7]!);
    out.push(Buffer.alloc(size, 97 + ((i + seed) % 26)));
    n += size;
    i++;
  }
  return out;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function send(
  body: ReplayableBody,
  opts: { preview: number | false; signal?: AbortSignal },
): Promise<{ status: number; raw: Buffer | undefined } | { code: string }> {
  const c = new IcapClient({ url: server!.url('/avscan') });
  clients.push(c);
  try {
    const r = await c.request({
      method: 'REQMOD',
      service: '/avscan',
      httpRequest: { method: 'POST', target: '/upload', headers: { host: 'app' } },
      body,
      preview: opts.preview,
      signal: opts.signal,
    });
    if (isSkipped(r)) throw new Error('skipped');
    r.body?.resume();
    await r.done;
    const rec = server!.requests.filter((q) => q.method === 'REQMOD').at(-1);
    return { status: r.status, raw: rec?.body };
  } catch (err) {
    if (!(err instanceof IcapError)) throw err;
    return { code: err.code };
  }
}

describe.each([
  ['no preview', false as const],
  ['a preview', 1024],
])('the body pump with %s: in-memory chunks taken at once = the general path', (_name, preview) => {
  it('a body complete before the exchange: the same bytes, the same answer', async () => {
    server = await startIcapServer({ host: '127.0.0.1' });
    const chunks = pieces(400_000, 1);
    const results = [];
    for (const hide of [false, true]) {
      const store = new BodyStore({ limit: Number.POSITIVE_INFINITY, retainAll: true });
      for (const c of chunks) store.push(c);
      store.end();
      expect(typeof (store.open() as unknown as Record<symbol, unknown>)[NEXT_NOW]).toBe('function');
      results.push(await send(hide ? general(store) : store, { preview }));
    }
    expect(results[0]).toEqual(results[1]);
    expect(results[0]).toMatchObject({ status: 204 });
    expect((results[0] as { raw: Buffer }).raw.equals(Buffer.concat(chunks))).toBe(true);
  });

  it('a body still arriving while it is sent: the same bytes, the same answer', async () => {
    server = await startIcapServer({ host: '127.0.0.1' });
    const chunks = pieces(300_000, 3);
    const results = [];
    for (const hide of [false, true]) {
      const store = new BodyStore({ limit: Number.POSITIVE_INFINITY, retainAll: true });
      for (const c of chunks.slice(0, 5)) store.push(c);
      const feeding = (async () => {
        for (let i = 5; i < chunks.length; i += 2) {
          await sleep(2);
          for (const c of chunks.slice(i, i + 2)) store.push(c);
        }
        store.end();
      })();
      results.push(await send(hide ? general(store) : store, { preview }));
      await feeding;
    }
    expect(results[0]).toEqual(results[1]);
    expect((results[0] as { raw: Buffer }).raw.equals(Buffer.concat(chunks))).toBe(true);
  });

  it('a threat in the body: the same verdict either way', async () => {
    server = await startIcapServer({ host: '127.0.0.1' });
    const chunks = [...pieces(150_000, 2), eicar(), ...pieces(50_000, 5)];
    const results = [];
    for (const hide of [false, true]) {
      const store = new BodyStore({ limit: Number.POSITIVE_INFINITY, retainAll: true });
      for (const c of chunks) store.push(c);
      store.end();
      const r = await send(hide ? general(store) : store, { preview });
      results.push('status' in r ? r.status : r);
    }
    expect(results[0]).toEqual(results[1]);
    expect(results[0]).not.toBe(204);
  });

  it('an abort while the body is still arriving: the same error, nothing left open', async () => {
    server = await startIcapServer({ host: '127.0.0.1' });
    const results = [];
    for (const hide of [false, true]) {
      const store = new BodyStore({ limit: Number.POSITIVE_INFINITY, retainAll: true });
      for (const c of pieces(200_000, 4)) store.push(c);
      const ac = new AbortController();
      const p = send(hide ? general(store) : store, { preview, signal: ac.signal });
      // Aborted once the server has the bytes held so far (bounded wait, polled).
      const deadline = Date.now() + 5000;
      while ((server.requests.at(-1)?.bodyLength ?? 0) < (preview === false ? 200_000 : 1024)) {
        if (Date.now() > deadline) throw new Error('the server never got the body');
        await sleep(5);
      }
      ac.abort(new Error('gone'));
      results.push(await p);
      store.dispose();
    }
    expect(results[0]).toEqual(results[1]);
    expect(results[0]).toHaveProperty('code');
  });
});
