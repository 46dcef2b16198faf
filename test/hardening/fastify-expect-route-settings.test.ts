/**
 * campaign-br BR5: `Expect: 100-continue` on @icapkit/fastify was always judged with the plugin's
 * profile, never the route's: the guard looked the route's engine up by the handler
 * fastify.findRoute() returns, which is Fastify's own routeHandler (one function for every
 * route), so the lookup always missed. A route with a larger bufferSize (`config.icap`) or opted
 * out (`config: { icap: false }`) answered 413 to every client that sends Expect (curl does above
 * 1 MiB), though it takes the same upload without Expect. Now a request is answered before its
 * body only when every route of its method is scanned with one engine (else 100 Continue, and
 * the route's engine decides in preParsing). (Nest on Fastify: test/nestjs/fastify-expect.test.ts.)
 */
import type { AddressInfo } from 'node:net';
import type { IcapLog, IcapProfile } from '@icapkit/core';
import { icap as fastifyIcap } from '@icapkit/fastify';
import { type IcapTestServer, startIcapServer } from '@icapkit/testing';
import Fastify from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { expectContinue } from '../support/expect-continue.js';

let icap: IcapTestServer;
beforeAll(async () => {
  icap = await startIcapServer();
});
afterAll(() => icap?.close());

const BODY = Buffer.alloc(5000, 0x61);
const expecting = (url: string, method: string, path: string) => expectContinue(url, method, path, BODY);

describe('BR5 @icapkit/fastify: Expect: 100-continue and the route setting', () => {
  it('config.icap routes take a 5000-byte upload; a method whose routes share the profile is refused early', async () => {
    const logs: IcapLog[] = [];
    const profile: IcapProfile = {
      name: 'br5',
      poolGroup: icap.url(),
      serviceUri: '/avscan',
      startupCheck: 'off',
      bufferSize: 1000,
      bufferSizeExceedAction: 'fail-closed',
      onLog: (l) => logs.push(l),
    };
    const app = Fastify();
    await app.register(fastifyIcap, profile);
    app.addContentTypeParser('application/octet-stream', { parseAs: 'buffer' }, (_r, b, done) =>
      done(null, b),
    );
    app.post('/large', { config: { icap: { bufferSize: 10_000_000 } } }, async (req) => ({
      n: (req.body as Buffer).length,
    }));
    app.post('/hooks', { config: { icap: false } }, async (req) => ({ n: (req.body as Buffer).length }));
    app.post('/plain', async (req) => ({ n: (req.body as Buffer).length }));
    app.put('/plain', async (req) => ({ n: (req.body as Buffer).length }));
    await app.listen({ port: 0, host: '127.0.0.1' });
    const url = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
    try {
      expect({
        large: await expecting(url, 'POST', '/large'),
        hooks: await expecting(url, 'POST', '/hooks'),
        // The route's engine still refuses it, after 100 Continue.
        plain: await expecting(url, 'POST', '/plain'),
        // Every PUT route is scanned with the plugin's profile: refused before the body.
        put: await expecting(url, 'PUT', '/plain'),
      }).toEqual({
        large: { continued: true, status: 200 },
        hooks: { continued: true, status: 200 },
        plain: { continued: true, status: 413 },
        put: { continued: false, status: 413 },
      });
      // One refusal record each for the two refusals, none for the uploads taken.
      expect(logs.filter((l) => l.http_response_code === 413).map((l) => l.uri_path)).toEqual([
        '/plain',
        '/plain',
      ]);
    } finally {
      await app.close();
    }
  });
});
