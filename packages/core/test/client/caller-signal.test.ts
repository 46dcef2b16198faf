/**
 * A request without a timeout of the client's own (the engine's way: `timeout` at setTimeout's
 * largest delay, a signal of its own) uses the caller's signal as it is. It must fail exactly as
 * a request with the client's own timeout (and so its own controller) does: the same code and
 * message for an abort whatever its reason and whenever it comes, and nothing left behind.
 */
import { type IcapTestServer, startIcapServer } from '@icapkit/testing';
import { afterEach, describe, expect, it } from 'vitest';
import { IcapClient, isSkipped } from '../../src/client/client.js';
import { IcapError } from '../../src/errors.js';

const NO_TIMEOUT = 2_147_483_647;

let server: IcapTestServer | undefined;
const clients: IcapClient[] = [];

afterEach(async () => {
  for (const c of clients.splice(0)) c.destroy();
  await server?.close();
  server = undefined;
});

function handles(): number {
  return process.getActiveResourcesInfo().filter((r) => r === 'TCPSocketWrap' || r === 'Timeout').length;
}

async function until(cond: () => boolean, ms = 2000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 5));
  }
}

function request(c: IcapClient, signal: AbortSignal | undefined, timeout: number | undefined) {
  return c.request({
    method: 'REQMOD',
    service: '/avscan',
    httpRequest: { method: 'POST', target: '/upload', headers: { host: 'app' } },
    body: Buffer.alloc(10 * 1024, 'x'),
    preview: false,
    signal,
    timeout,
  });
}

async function failure(p: Promise<unknown>): Promise<{ code: string; message: string; cause: unknown }> {
  try {
    const r = await p;
    if (r !== null && typeof r === 'object' && 'done' in r) await (r as { done: Promise<unknown> }).done;
  } catch (err) {
    expect(err).toBeInstanceOf(IcapError);
    const e = err as IcapError;
    return { code: e.code, message: e.message, cause: e.cause };
  }
  throw new Error('the request did not fail');
}

describe.each([
  ['the client timeout (its own controller)', 60_000],
  ['no client timeout (the caller signal as it is)', NO_TIMEOUT],
])('abort with %s', (_label, timeout) => {
  it('answers 204 as usual, and leaves nothing behind', async () => {
    server = await startIcapServer();
    const c = new IcapClient({ url: server.url() });
    clients.push(c);
    const before = handles();
    for (let i = 0; i < 3; i++) {
      const r = await request(c, new AbortController().signal, timeout);
      if (isSkipped(r)) throw new Error('skipped');
      expect(r.status).toBe(204);
      await r.done;
    }
    const r2 = await request(c, undefined, timeout);
    if (isSkipped(r2)) throw new Error('skipped');
    expect(r2.status).toBe(204);
    await r2.done;
    expect(c.stats.busy).toBe(0);
    c.destroy();
    await until(() => handles() <= before);
  });

  it('a signal aborted before the request: ICAP_ERR_ABORTED, the reason as cause', async () => {
    server = await startIcapServer();
    const c = new IcapClient({ url: server.url() });
    clients.push(c);
    const ac = new AbortController();
    const reason = new Error('gone');
    ac.abort(reason);
    const f = await failure(request(c, ac.signal, timeout));
    expect(f.code).toBe('ICAP_ERR_ABORTED');
    expect(f.message).toBe(`REQMOD ${server.url()}/avscan was aborted`);
    expect(f.cause).toBe(reason);
  });

  it('aborted while the server holds its answer: ICAP_ERR_ABORTED, connection closed', async () => {
    server = await startIcapServer({
      script: (req) => (req.method === 'OPTIONS' ? undefined : { kind: 'hang' }),
    });
    const c = new IcapClient({ url: server.url() });
    clients.push(c);
    await c.options('/avscan');
    const ac = new AbortController();
    const p = failure(request(c, ac.signal, timeout));
    await until(() => c.stats.busy === 1);
    ac.abort();
    const f = await p;
    expect(f.code).toBe('ICAP_ERR_ABORTED');
    expect(f.message).toBe(`REQMOD ${server.url()}/avscan was aborted`);
    expect((f.cause as Error).name).toBe('AbortError');
    await until(() => c.stats.busy === 0 && c.stats.open === 0);
  });

  it('an IcapError reason is the error itself', async () => {
    server = await startIcapServer({
      script: (req) => (req.method === 'OPTIONS' ? undefined : { kind: 'hang' }),
    });
    const c = new IcapClient({ url: server.url() });
    clients.push(c);
    const ac = new AbortController();
    const reason = new IcapError('ICAP_ERR_TIMEOUT', 'the scan took too long');
    const p = request(c, ac.signal, timeout).then(
      () => undefined,
      (e: unknown) => e,
    );
    await until(() => c.stats.busy === 1);
    ac.abort(reason);
    expect(await p).toBe(reason);
  });
});
