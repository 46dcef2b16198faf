/**
 * campaign-br BR1: a query rule must read the query as every router does. find-my-way (Fastify)
 * splits the target at the first `?` or `#` and parses everything after it, the fragment
 * included (`/store#type=upload` has `type=upload` to `request.query`), and with
 * `useSemicolonDelimiter` at a `;` before them too (`/store;type=upload`). An `enable-icap` query
 * rule matches when any reading does; a `skip` query rule holds only when every reading agrees
 * (`/store;type=upload?type=webhook` is `type=upload?type=webhook` to Fastify). Each case sends
 * EICAR and asserts the status and whether the handler got it. (Nest on Fastify:
 * test/nestjs/query-readings.test.ts.)
 */
import type { AddressInfo } from 'node:net';
import type { PolicyRule } from '@icapkit/core';
import { icap as fastifyIcap } from '@icapkit/fastify';
import { eicar, type IcapTestServer, startIcapServer } from '@icapkit/testing';
import Fastify from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rawExchange } from '../support/raw-http.js';

const E = eicar();
let icap: IcapTestServer;
beforeAll(async () => {
  icap = await startIcapServer();
});
afterAll(() => icap?.close());

async function post(url: string, target: string): Promise<number | undefined> {
  const r = await rawExchange(
    url,
    [
      `POST ${target} HTTP/1.1\r\nHost: a\r\nContent-Type: application/octet-stream\r\nContent-Length: ${E.length}\r\nConnection: close\r\n\r\n`,
      E,
    ],
    { responses: 1, waitMs: 5000 },
  );
  return r.responses[0]?.status;
}

interface Delivered {
  type: string | undefined;
  eicar: boolean;
}

/** A Fastify app whose /store handler records the `type` it reads and whether it got EICAR. */
async function storeApp(rules: PolicyRule[], routerOptions: object = {}) {
  const app = Fastify({ routerOptions } as never);
  await app.register(fastifyIcap, {
    name: 'br1',
    poolGroup: icap.url(),
    serviceUri: '/avscan',
    startupCheck: 'off',
    rules,
  });
  app.addContentTypeParser('application/octet-stream', { parseAs: 'buffer' }, (_r, b, done) => done(null, b));
  const got: Delivered[] = [];
  app.post('/store', async (req) => {
    const type = (req.query as { type?: string }).type;
    got.push({ type, eicar: Buffer.isBuffer(req.body) && req.body.includes(E) });
    return { type };
  });
  await app.listen({ port: 0, host: '127.0.0.1' });
  const url = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
  return { app, url, got };
}

const scanUploads: PolicyRule[] = [
  { name: 'scan-uploads', match: { query: [{ name: 'type', value: 'upload' }] }, action: 'enable-icap' },
];

describe('BR1 a query rule reads the query as find-my-way does', () => {
  it.each([
    ['a # before the query', {}, ['/store#type=upload', '/store?x#&type=upload']],
    ['useSemicolonDelimiter: a ; before the query', { useSemicolonDelimiter: true }, ['/store;type=upload']],
  ] as const)('enable-icap on type=upload, %s: scanned', async (_name, routerOptions, targets) => {
    const { app, url, got } = await storeApp(scanUploads, routerOptions);
    try {
      expect(await post(url, '/store?type=upload')).toBe(403);
      for (const target of targets) {
        got.length = 0;
        const status = await post(url, target);
        expect(
          { target, status, eicarDelivered: got[0]?.eicar ?? false },
          `handler read type=${got[0]?.type}`,
        ).toEqual({ target, status: 403, eicarDelivered: false });
      }
      // Control: what no router reads as type=upload stays unscanned.
      got.length = 0;
      expect(await post(url, '/store?type=other')).toBe(200);
      expect(got).toEqual([{ type: 'other', eicar: true }]);
    } finally {
      await app.close();
    }
  });

  it('useSemicolonDelimiter: a skip rule on type=webhook does not skip /store;type=upload?type=webhook', async () => {
    const { app, url, got } = await storeApp(
      [
        { name: 'skip-webhooks', match: { query: [{ name: 'type', value: 'webhook' }] }, action: 'skip' },
        { name: 'scan-everything', action: 'enable-icap' },
      ],
      { useSemicolonDelimiter: true },
    );
    try {
      for (const target of ['/store;type=upload?type=webhook', '/store;x?type=webhook']) {
        got.length = 0;
        const status = await post(url, target);
        expect(
          { target, status, eicarDelivered: got[0]?.eicar ?? false },
          `handler read type=${got[0]?.type}`,
        ).toEqual({ target, status: 403, eicarDelivered: false });
      }
      // Control: a webhook every reading agrees on is still skipped.
      got.length = 0;
      expect(await post(url, '/store?type=webhook')).toBe(200);
      expect(got).toEqual([{ type: 'webhook', eicar: true }]);
    } finally {
      await app.close();
    }
  });
});
