/**
 * A route's `config.icap` is checked when the route is added, and the error names the route
 * (method and URL): not "profile.0 is not a known option".
 */
import { icap } from '@icapkit/fastify';
import { eicar, type IcapTestServer, startIcapServer } from '@icapkit/testing';
import Fastify from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

let server: IcapTestServer;
beforeAll(async () => {
  server = await startIcapServer({ recordBodies: false });
});
afterAll(() => server?.close());

async function startWith(config: unknown): Promise<Error | undefined> {
  const app = Fastify();
  try {
    await app.register(icap, { name: 'routes', poolGroup: server.url(), serviceUri: '/avscan' });
    app.post('/docs', { config: { icap: config } as never }, async () => 'ok');
    await app.ready();
    return undefined;
  } catch (err) {
    return err as Error;
  } finally {
    await app.close().catch(() => {});
  }
}

describe('fastify route config.icap', () => {
  it.each([
    ['a string', 'nope', /config\.icap of route POST \/docs must be false, true or an object/],
    ['an array', ['/cdr'], /config\.icap of route POST \/docs must be false, true or an object/],
    ['a number', 5, /config\.icap of route POST \/docs must be/],
    ['an unknown field', { bufferSzie: 5 }, /config\.icap of route POST \/docs: .*bufferSzie/],
    ['a wrong value', { failAction: 'fail-opne' }, /config\.icap of route POST \/docs: .*failAction/],
  ])('%s fails start-up naming the route', async (_name, config, message) => {
    const err = await startWith(config);
    expect(err).toBeDefined();
    expect((err as { code?: string }).code).toBe('ICAP_ERR_INVALID_PROFILE');
    expect(err!.message).toMatch(message);
    expect(err!.message).not.toMatch(/profile\.0 /);
  });

  it('true, false and a valid override start', async () => {
    for (const config of [true, false, { bufferSize: '1mb' }, undefined])
      expect(await startWith(config)).toBeUndefined();
  });

  it('icap: true scans like no config', async () => {
    const app = Fastify();
    await app.register(icap, { name: 'routes', poolGroup: server.url(), serviceUri: '/avscan' });
    app.addContentTypeParser('*', { parseAs: 'buffer' }, (_req, body, done) => done(null, body));
    app.post('/docs', { config: { icap: true } }, async (request) => request.icap.action);
    try {
      const r = await app.inject({
        method: 'POST',
        url: '/docs',
        payload: eicar(),
        headers: { 'content-type': 'a/b' },
      });
      expect(r.statusCode).toBe(403);
    } finally {
      await app.close();
    }
  });
});
