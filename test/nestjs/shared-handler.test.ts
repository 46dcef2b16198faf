/**
 * A handler several controllers share: a method inherited from a base class (the "CRUD base
 * controller" pattern) is one function, and Nest registers every route of it with that one
 * function's metadata. Before, the module wrote each controller's setting on that function in
 * turn, so the last controller decided for all: with a `@SkipIcap()` (or a laxer
 * `@IcapOptions()`) controller annotated after a scanned one, the scanned controller's route
 * passed EICAR to its handler unscanned (0 REQMOD), on Express and Fastify, and the guard (which
 * read the same function) let it through. Found by an attack campaign (campaign-m).
 *
 * Now such an application fails to start, naming the controllers and the fix; a shared handler
 * whose controllers resolve to the same setting starts and scans as before, and the fix the
 * message names (an override with its route decorators) scans each controller as its own.
 */
import 'reflect-metadata';
import { IcapModule, IcapOptions, SkipIcap } from '@icapkit/nestjs';
import { eicar, type IcapTestServer, startIcapServer } from '@icapkit/testing';
import { Body, Controller, HttpCode, Module, Post, type Type } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import type { NestExpressApplication } from '@nestjs/platform-express';
import { FastifyAdapter, type NestFastifyApplication } from '@nestjs/platform-fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { send } from '../support/http-client.js';

let icap: IcapTestServer;
beforeAll(async () => {
  icap = await startIcapServer({ recordBodies: false });
});
afterAll(() => icap?.close());

const E = eicar().toString('latin1');
const json = { 'content-type': 'application/json' };
const got: Array<{ controller: string; data: unknown }> = [];

abstract class CrudController {
  @Post()
  @HttpCode(200)
  create(@Body() dto: { data?: unknown }) {
    got.push({ controller: this.constructor.name, data: dto.data });
    return { ok: true };
  }
}

@Controller('users')
class UsersController extends CrudController {}

@SkipIcap()
@Controller('telemetry')
class SkippedTelemetry extends CrudController {}

@IcapOptions({ bufferSize: 1024, bufferSizeExceedAction: 'fail-open' })
@Controller('telemetry')
class LaxTelemetry extends CrudController {}

@IcapOptions({ serviceUri: '/avscan' })
@Controller('a')
class SameA extends CrudController {}

@IcapOptions({ serviceUri: '/avscan' })
@Controller('b')
class SameB extends CrudController {}

/** The fix the start-up error names: the method overridden, with its route decorators. */
@SkipIcap()
@Controller('telemetry')
class OverridingTelemetry extends CrudController {
  @Post()
  @HttpCode(200)
  override create(@Body() dto: { data?: unknown }) {
    return super.create(dto);
  }
}

type Platform = 'express' | 'fastify';

async function start(platform: Platform, controllers: Type[]) {
  @Module({
    imports: [
      IcapModule.forRoot({
        name: 'shared',
        poolGroup: icap.url(),
        serviceUri: '/avscan',
        startupCheck: 'off',
      }),
    ],
    controllers,
  })
  class AppModule {}
  const app =
    platform === 'express'
      ? await NestFactory.create<NestExpressApplication>(AppModule, { logger: false, abortOnError: false })
      : await NestFactory.create<NestFastifyApplication>(AppModule, new FastifyAdapter(), {
          logger: false,
          abortOnError: false,
        });
  await app.listen(0, '127.0.0.1');
  return { app, url: (await app.getUrl()).replace('[::1]', '127.0.0.1') };
}

const reqmods = () => icap.requests.filter((r) => r.method === 'REQMOD').length;

describe.each(['express', 'fastify'] as const)('nest-%s', (platform) => {
  for (const [label, other] of [
    ['@SkipIcap()', SkippedTelemetry],
    ['a laxer @IcapOptions()', LaxTelemetry],
  ] as const) {
    for (const order of ['scanned first', 'scanned last'] as const) {
      it(`an inherited handler, one controller ${label} (${order}): start-up fails naming both and the fix`, async () => {
        const controllers = order === 'scanned first' ? [UsersController, other] : [other, UsersController];
        const started = start(platform, controllers);
        await expect(started).rejects.toThrow(
          /UsersController\.create and \w+Telemetry\.create are one function|\w+Telemetry\.create and UsersController\.create are one function/,
        );
        await expect(started).rejects.toThrow(/Override create in the controllers/);
      });
    }
  }

  it('an inherited handler whose controllers have equal settings: starts, and each route is scanned', async () => {
    const { app, url } = await start(platform, [SameA, SameB]);
    try {
      for (const path of ['/a', '/b']) {
        const before = reqmods();
        got.length = 0;
        const blocked = await send(url, path, { body: JSON.stringify({ data: E }), headers: json });
        expect(blocked.status).toBe(403);
        expect(got).toEqual([]);
        const clean = await send(url, path, { body: JSON.stringify({ data: 'clean' }), headers: json });
        expect(clean.status).toBe(200);
        expect(reqmods() - before).toBeGreaterThanOrEqual(2);
      }
    } finally {
      await app.close();
    }
  });

  it('the fix: an overriding controller is skipped, the inheriting one is still scanned', async () => {
    const { app, url } = await start(platform, [UsersController, OverridingTelemetry]);
    try {
      got.length = 0;
      let before = reqmods();
      const users = await send(url, '/users', { body: JSON.stringify({ data: E }), headers: json });
      expect(users.status).toBe(403);
      expect(reqmods() - before).toBeGreaterThanOrEqual(1);
      expect(got).toEqual([]);
      before = reqmods();
      const telemetry = await send(url, '/telemetry', {
        body: JSON.stringify({ data: 'clean' }),
        headers: json,
      });
      expect(telemetry.status).toBe(200);
      expect(reqmods() - before).toBe(0);
      expect(got).toEqual([{ controller: 'OverridingTelemetry', data: 'clean' }]);
    } finally {
      await app.close();
    }
  });
});
