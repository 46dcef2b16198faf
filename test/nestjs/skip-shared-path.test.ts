/**
 * A `@SkipIcap()` route's opt-out belongs to that route only. On Express the module picks the
 * setting before routing, from the route the path matches; a plain Express handler mounted in
 * main.ts on a path the skipped route also matches (`app.use('/legacy/upload', express.raw(),
 * handler)` next to `@Post(':id')`, a Router or a sub-application with its own routes) runs first
 * and must not inherit the skip: it gets the module's scan. The skipped route itself, and global
 * middleware that passes requests on (cors, a logger), keep it. On Fastify each route carries its
 * own setting (`config.icap`), so the same shapes are checked there too.
 */
import 'reflect-metadata';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { IcapLog } from '@icapkit/core';
import { IcapModule, SkipIcap } from '@icapkit/nestjs';
import { eicar, type IcapTestServer, startIcapServer } from '@icapkit/testing';
import { Controller, HttpCode, Module, Post } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import type { NestExpressApplication } from '@nestjs/platform-express';
import { FastifyAdapter, type NestFastifyApplication } from '@nestjs/platform-fastify';
import express from 'express';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { send } from '../support/http-client.js';

let icap: IcapTestServer;
beforeAll(async () => {
  icap = await startIcapServer({ recordBodies: true });
});
afterAll(() => icap?.close());

const octet = { 'content-type': 'application/octet-stream' };

@Controller('legacy')
class LegacyController {
  // Matches /legacy/upload too: a parameter route, the shape that shadows a legacy path.
  @SkipIcap()
  @Post(':id')
  @HttpCode(200)
  ping() {
    return { pong: true };
  }
}

type Mount = 'path' | 'router' | 'sub-app';

async function startExpress(mount: Mount, logs: IcapLog[], got: string[]) {
  @Module({
    imports: [
      IcapModule.forRoot({
        name: 'legacy',
        poolGroup: icap.url(),
        serviceUri: '/avscan',
        startupCheck: 'off',
        onLog: (l) => logs.push(l),
      }),
    ],
    controllers: [LegacyController],
  })
  class AppModule {}
  const app = await NestFactory.create<NestExpressApplication>(AppModule, { logger: false });
  // Global middleware that passes every request on (as cors or a logger): the skip still holds.
  app.use((_req: IncomingMessage, _res: ServerResponse, next: () => void) => next());
  // main.ts: a legacy Express upload handler kept during a migration, mounted three ways.
  const legacy = (req: express.Request, res: express.Response) => {
    got.push((req.body as Buffer).toString('latin1'));
    res.json({ legacy: true });
  };
  const raw = express.raw({ type: () => true });
  if (mount === 'path') app.use('/legacy/upload', raw, legacy);
  else if (mount === 'router') {
    const router = express.Router();
    router.post('/legacy/upload', raw, legacy);
    app.use(router);
  } else {
    const sub = express();
    sub.post('/legacy/upload', raw, legacy);
    app.use(sub);
  }
  await app.listen(0, '127.0.0.1');
  return app;
}

describe('nest-express: a @SkipIcap() route does not lend its skip to a plain Express handler on its path', () => {
  it.each(['path', 'router', 'sub-app'] as const)(
    'mounted as %s: the Express handler gets the module scan (EICAR: 403); the Nest route stays skipped (but under a sub-app)',
    async (mount) => {
      const logs: IcapLog[] = [];
      const got: string[] = [];
      const app = await startExpress(mount, logs, got);
      const url = `http://127.0.0.1:${(app.getHttpServer().address() as AddressInfo).port}`;
      try {
        const blocked = await send(url, '/legacy/upload', { body: eicar(), headers: octet });
        expect(blocked.status).toBe(403);
        expect(got).toEqual([]);
        expect(logs.map((l) => l.action)).toEqual(['ICAP_BLOCKED']);
        // A clean upload reaches the legacy handler, scanned.
        const first = icap.requests.length;
        const clean = await send(url, '/legacy/upload', { body: 'clean bytes', headers: octet });
        expect(clean.status).toBe(200);
        expect(got).toEqual(['clean bytes']);
        expect(icap.requests.slice(first).some((q) => q.body?.toString('latin1') === 'clean bytes')).toBe(
          true,
        );
        const before = icap.requests.length;
        if (mount === 'sub-app') {
          // A sub-application's routes cannot be read (Express keeps no reference to it): one
          // mounted on every path may answer any path, so every request is scanned, the
          // skipped route's too (it accepts them).
          const scanned = await send(url, '/legacy/42', { body: 'clean', headers: octet });
          expect([scanned.status, JSON.parse(scanned.text)]).toEqual([200, { pong: true }]);
          expect(icap.requests.length).toBeGreaterThan(before);
          return;
        }
        // The @SkipIcap() route itself is still not scanned (no log record, no REQMOD).
        const skipped = await send(url, '/legacy/42', { body: eicar(), headers: octet });
        expect([skipped.status, JSON.parse(skipped.text)]).toEqual([200, { pong: true }]);
        expect(icap.requests.length).toBe(before);
        expect(logs).toHaveLength(2);
      } finally {
        await app.close();
      }
    },
  );
});

describe('nest-fastify: the same shape, a plain Fastify route on a @SkipIcap() route path', () => {
  it('the plain route is scanned with the module profile (EICAR: 403), the Nest route stays skipped', async () => {
    const logs: IcapLog[] = [];
    const got: string[] = [];
    @Module({
      imports: [
        IcapModule.forRoot({
          name: 'legacy',
          poolGroup: icap.url(),
          serviceUri: '/avscan',
          startupCheck: 'off',
          onLog: (l) => logs.push(l),
        }),
      ],
      controllers: [LegacyController],
    })
    class AppModule {}
    const app = await NestFactory.create<NestFastifyApplication>(AppModule, new FastifyAdapter(), {
      logger: false,
    });
    // main.ts: a route on the Fastify instance (its own config, no config.icap).
    const fastify = app.getHttpAdapter().getInstance();
    fastify.addContentTypeParser('application/octet-stream', { parseAs: 'buffer' }, (_r, body, done) =>
      done(null, body),
    );
    fastify.post('/legacy/upload', async (request) => {
      got.push((request.body as Buffer).toString('latin1'));
      return { legacy: true };
    });
    await app.listen(0, '127.0.0.1');
    const url = `http://127.0.0.1:${(app.getHttpServer().address() as AddressInfo).port}`;
    try {
      const blocked = await send(url, '/legacy/upload', { body: eicar(), headers: octet });
      expect(blocked.status).toBe(403);
      expect(got).toEqual([]);
      expect(logs.map((l) => l.action)).toEqual(['ICAP_BLOCKED']);
      const before = icap.requests.length;
      const skipped = await send(url, '/legacy/42', { body: eicar(), headers: octet });
      expect([skipped.status, JSON.parse(skipped.text)]).toEqual([200, { pong: true }]);
      expect(icap.requests.length).toBe(before);
      expect(logs).toHaveLength(1);
    } finally {
      await app.close();
    }
  });
});
