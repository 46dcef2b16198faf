/**
 * campaign-br BR1 on Nest on Fastify: `@Query('type')` is find-my-way's reading of the query,
 * which starts at a `#` too (`/store#type=upload`, `/store?x#&type=upload`), so an `enable-icap`
 * rule on `type=upload` must scan those targets. (Plain Fastify and the skip direction:
 * test/hardening/policy-query-readings-br.test.ts.)
 */
import 'reflect-metadata';
import type { AddressInfo } from 'node:net';
import type { IcapLog, IcapProfile } from '@icapkit/core';
import { IcapModule } from '@icapkit/nestjs';
import { eicar, type IcapTestServer, startIcapServer } from '@icapkit/testing';
import { Controller, HttpCode, Module, Post, Query, Req } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { FastifyAdapter, type NestFastifyApplication } from '@nestjs/platform-fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rawExchange } from '../support/raw-http.js';

const E = eicar();
let icap: IcapTestServer;
beforeAll(async () => {
  icap = await startIcapServer();
});
afterAll(() => icap?.close());

const delivered: Array<{ type: string | undefined; eicar: boolean }> = [];

@Controller()
class StoreController {
  @Post('store')
  @HttpCode(200)
  store(@Query('type') type: string | undefined, @Req() req: { body: unknown }) {
    delivered.push({ type, eicar: Buffer.isBuffer(req.body) && req.body.includes(E) });
    return { stored: type === 'upload' };
  }
}

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

describe('BR1 Nest on Fastify: an enable-icap query rule and a # in the target', () => {
  it('the handler reads type=upload, so the body was scanned', async () => {
    const logs: IcapLog[] = [];
    const profile: IcapProfile = {
      name: 'br1-nest',
      poolGroup: icap.url(),
      serviceUri: '/avscan',
      startupCheck: 'off',
      rules: [
        {
          name: 'scan-uploads',
          match: { query: [{ name: 'type', value: 'upload' }] },
          action: 'enable-icap',
        },
      ],
      onLog: (l) => logs.push(l),
    };
    @Module({ imports: [IcapModule.forRoot(profile)], controllers: [StoreController] })
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
      expect(await post(url, '/store?type=upload')).toBe(403);
      for (const target of ['/store#type=upload', '/store?x#&type=upload']) {
        delivered.length = 0;
        const status = await post(url, target);
        expect(
          { target, status, eicarDelivered: delivered[0]?.eicar ?? false },
          `handler read type=${delivered[0]?.type}; policy_reason ${JSON.stringify(logs.at(-1)?.policy_reason)}`,
        ).toEqual({ target, status: 403, eicarDelivered: false });
      }
    } finally {
      await nest.close();
    }
  });
});
