/**
 * What an Express application sees of a request icapkit scanned: the Express adapter reads the
 * request once for the hand-off and sets `req.icap` after the body is handed back (always before
 * `next()`). Same body bytes, only the application's own listeners, the right `req.icap`, for a
 * body complete on arrival, a chunked one, one the scanner rewrites, one it blocks, and a request
 * without a body; a listener the application added before `icap()` stays, alone.
 */
import type { AddressInfo } from 'node:net';
import { icap as expressIcap } from '@icapkit/express';
import { eicar, type IcapTestServer, startIcapServer } from '@icapkit/testing';
import express5 from 'express';
import express4 from 'express4';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { send } from '../support/http-client.js';

let icap: IcapTestServer;

beforeAll(async () => {
  icap = await startIcapServer({ rewrite: { from: 'EVIL', to: 'GOOD-LONGER' } });
});
afterAll(async () => {
  await icap.close();
});

interface Seen {
  body: string;
  events: Array<string | symbol>;
  dataListeners: number;
  closeListeners: number;
  action: string | undefined;
}

async function withApp<T>(
  framework: 'express5' | 'express4',
  service: '/modify' | '/avscan',
  run: (url: string, seen: Seen[]) => Promise<T>,
): Promise<T> {
  const express = (framework === 'express5' ? express5 : express4) as unknown as typeof express5;
  const app = express();
  const seen: Seen[] = [];
  const mw = expressIcap({ name: 'listeners', poolGroup: icap.url(), serviceUri: service });
  const onClose = () => {};
  app.use((req, _res, next) => {
    // A listener of the application's, added before icap(): it stays, alone.
    req.on('close', onClose);
    next();
  });
  app.use(mw);
  app.all('/up', (req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      seen.push({
        body: Buffer.concat(chunks).toString(),
        events: req.eventNames().filter((n) => n !== 'data' && n !== 'end'),
        dataListeners: req.listenerCount('data'),
        closeListeners: req.listeners('close').filter((l) => l === onClose).length,
        action: req.icap?.action,
      });
      res.status(201).send('ok');
    });
  });
  const server = app.listen(0, '127.0.0.1');
  await new Promise<void>((r) => server.once('listening', () => r()));
  try {
    return await run(`http://127.0.0.1:${(server.address() as AddressInfo).port}`, seen);
  } finally {
    server.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
    await mw.close();
  }
}

const OCTETS = { 'content-type': 'application/octet-stream' };

describe.each(['express5', 'express4'] as const)(
  '%s: the request as the application sees it',
  (framework) => {
    it('a body with content-length, a chunked one, a rewritten one, none: the same listeners and bytes', async () => {
      await withApp(framework, '/modify', async (url, seen) => {
        const plain = await send(url, '/up', { body: 'hello world', headers: OCTETS });
        const chunked = await send(url, '/up', { body: 'x'.repeat(5000), headers: OCTETS, chunked: 700 });
        const rewritten = await send(url, '/up', { body: 'an EVIL body', headers: OCTETS });
        const none = await send(url, '/up', { method: 'GET' });
        expect([plain.status, chunked.status, rewritten.status, none.status]).toEqual([201, 201, 201, 201]);
        expect(seen.map((s) => s.body)).toEqual(['hello world', 'x'.repeat(5000), 'an GOOD-LONGER body', '']);
        for (const s of seen) {
          // Only the application's own listeners: nothing icapkit added is left.
          expect(s.events.filter((n) => typeof n === 'symbol')).toEqual([]);
          expect(s.dataListeners).toBe(1);
          expect(s.closeListeners).toBe(1);
        }
        expect(seen.map((s) => s.action).slice(0, 3)).toEqual([
          'ICAP_PASSED',
          'ICAP_PASSED',
          'ICAP_MODIFIED',
        ]);
      });
    });

    it('a blocked upload is refused and never reaches the handler', async () => {
      await withApp(framework, '/avscan', async (url, seen) => {
        const blocked = await send(url, '/up', { body: eicar(), headers: OCTETS });
        expect(blocked.status).toBe(403);
        expect(seen).toEqual([]);
      });
    });
  },
);
