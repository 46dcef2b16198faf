/**
 * campaign-br BR5 on Nest on Fastify: `Expect: 100-continue` to a route with
 * `@IcapOptions({ bufferSize })` (the README's `large` example) or `@SkipIcap()` was judged with
 * the module's profile (the Fastify plugin's route lookup always missed): 413 for uploads the
 * route takes without Expect. (Plain Fastify: test/hardening/fastify-expect-route-settings.test.ts.)
 */
import 'reflect-metadata';
import type { AddressInfo } from 'node:net';
import type { IcapProfile } from '@icapkit/core';
import { IcapModule, IcapOptions, SkipIcap } from '@icapkit/nestjs';
import { type IcapTestServer, startIcapServer } from '@icapkit/testing';
import { Controller, HttpCode, Module, Post, Req } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { FastifyAdapter, type NestFastifyApplication } from '@nestjs/platform-fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { expectContinue } from '../support/expect-continue.js';

let icap: IcapTestServer;
beforeAll(async () => {
  icap = await startIcapServer();
});
afterAll(() => icap?.close());

const BODY = Buffer.alloc(5000, 0x61);

@Controller()
class DocsController {
  @Post('large')
  @IcapOptions({ bufferSize: 10_000_000 })
  @HttpCode(200)
  large(@Req() req: { body: unknown }) {
    return { n: Buffer.isBuffer(req.body) ? req.body.length : -1 };
  }

  @Post('hooks')
  @SkipIcap()
  @HttpCode(200)
  hook(@Req() req: { body: unknown }) {
    return { n: Buffer.isBuffer(req.body) ? req.body.length : -1 };
  }

  @Post('plain')
  @HttpCode(200)
  plain(@Req() req: { body: unknown }) {
    return { n: Buffer.isBuffer(req.body) ? req.body.length : -1 };
  }
}

describe('BR5 Nest on Fastify: Expect: 100-continue and the route setting', () => {
  it('@IcapOptions({ bufferSize }) and @SkipIcap() routes take a 5000-byte upload', async () => {
    const profile: IcapProfile = {
      name: 'br5-nest',
      poolGroup: icap.url(),
      serviceUri: '/avscan',
      startupCheck: 'off',
      bufferSize: 1000,
      bufferSizeExceedAction: 'fail-closed',
    };
    @Module({ imports: [IcapModule.forRoot(profile)], controllers: [DocsController] })
    class AppModule {}
    const nest = await NestFactory.create<NestFastifyApplication>(AppModule, new FastifyAdapter(), {
      logger: false,
      abortOnError: false,
    });
    nest
      .getHttpAdapter()
      .getInstance()
      .addContentTypeParser('application/octet-stream', { parseAs: 'buffer' }, (_r, b, done) =>
        done(null, b),
      );
    await nest.listen(0, '127.0.0.1');
    const url = `http://127.0.0.1:${(nest.getHttpServer().address() as AddressInfo).port}`;
    try {
      expect({
        large: await expectContinue(url, 'POST', '/large', BODY),
        hooks: await expectContinue(url, 'POST', '/hooks', BODY),
        plain: await expectContinue(url, 'POST', '/plain', BODY),
      }).toEqual({
        large: { continued: true, status: 200 },
        hooks: { continued: true, status: 200 },
        plain: { continued: true, status: 413 },
      });
    } finally {
      await nest.close();
    }
  });
});
