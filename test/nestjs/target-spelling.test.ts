/**
 * campaign-br BR2: on Nest's Express platform the route's `@IcapOptions()` applies to every
 * spelling of the target Express routes to it. Express reads the path with parseurl, which falls
 * back to Node's url.parse for a target with a `#`, whitespace or in absolute form
 * (`/files/upload#x`, `POST http://a/files/upload`); those were scanned with the module's
 * profile, so under a scanner outage a client chose the module's fail-open over the route's
 * fail-closed and Nest's body parser and the middleware bound to the route read EICAR (the guard
 * answered 403 after them). The `Expect: 100-continue` guard reads the route the same way.
 */
import 'reflect-metadata';
import type { AddressInfo } from 'node:net';
import type { IcapLog, IcapProfile } from '@icapkit/core';
import { IcapModule, IcapOptions } from '@icapkit/nestjs';
import { eicar, type IcapTestServer, startIcapServer } from '@icapkit/testing';
import {
  Body,
  Controller,
  HttpCode,
  Injectable,
  type MiddlewareConsumer,
  Module,
  type NestMiddleware,
  type NestModule,
  Post,
} from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import type { NestExpressApplication } from '@nestjs/platform-express';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rawExchange } from '../support/raw-http.js';

const E = eicar().toString('latin1');
/** What the Nest middleware bound to the route read of the parsed body. */
const middlewareSaw: boolean[] = [];

@Injectable()
class AuditMiddleware implements NestMiddleware {
  use(req: { body?: { f?: string } }, _res: unknown, next: () => void) {
    middlewareSaw.push(req.body?.f === E);
    next();
  }
}

@Controller('files')
class FilesController {
  @Post('upload')
  @IcapOptions({ failAction: 'fail-closed' })
  @HttpCode(200)
  upload(@Body() _body: unknown) {
    return { ok: true };
  }

  @Post('large')
  @IcapOptions({ bufferSize: 10_000_000 })
  @HttpCode(200)
  large(@Body() body: unknown) {
    return { n: typeof body === 'string' ? body.length : -1 };
  }
}

async function start(profile: IcapProfile) {
  @Module({
    imports: [IcapModule.forRoot(profile)],
    controllers: [FilesController],
    providers: [AuditMiddleware],
  })
  class AppModule implements NestModule {
    configure(consumer: MiddlewareConsumer) {
      consumer.apply(AuditMiddleware).forRoutes(FilesController);
    }
  }
  const nest = await NestFactory.create<NestExpressApplication>(AppModule, {
    logger: false,
    abortOnError: false,
  });
  nest.useBodyParser('text', { type: 'application/octet-stream', limit: '1mb' });
  await nest.listen(0, '127.0.0.1');
  const url = `http://127.0.0.1:${(nest.getHttpServer().address() as AddressInfo).port}`;
  return { nest, url };
}

const TARGETS = ['/files/upload#x', 'http://a/files/upload', '/files/upload?x#y'];

describe('BR2 Nest on Express: every target spelling Express routes gets the route setting', () => {
  it.each(TARGETS)('%s under a scanner outage is refused as the route says (fail-closed)', async (target) => {
    const logs: IcapLog[] = [];
    const { nest, url } = await start({
      name: 'br2',
      // Nothing listens there: every scan fails on the ICAP side.
      poolGroup: 'icap://127.0.0.1:1',
      serviceUri: '/avscan',
      startupCheck: 'off',
      failAction: 'fail-open',
      onLog: (l) => logs.push(l),
    });
    const body = JSON.stringify({ f: E });
    const post = async (t: string) => {
      middlewareSaw.length = 0;
      const r = await rawExchange(
        url,
        [
          `POST ${t} HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n`,
          body,
        ],
        { responses: 1, waitMs: 8000 },
      );
      return { status: r.responses[0]?.status, middlewareSawEicar: middlewareSaw.includes(true) };
    };
    try {
      expect(await post('/files/upload')).toEqual({ status: 503, middlewareSawEicar: false });
      expect(await post(target), `fail_action ${logs.at(-1)?.fail_action}`).toEqual({
        status: 503,
        middlewareSawEicar: false,
      });
    } finally {
      await nest.close();
    }
  });

  describe('Expect: 100-continue', () => {
    let icap: IcapTestServer;
    beforeAll(async () => {
      icap = await startIcapServer();
    });
    afterAll(() => icap?.close());

    it.each(TARGETS.map((t) => t.replace('upload', 'large')))(
      '%s is judged with the route bufferSize, not the module one',
      async (target) => {
        const { nest, url } = await start({
          name: 'br2e',
          poolGroup: icap.url(),
          serviceUri: '/avscan',
          startupCheck: 'off',
          bufferSize: 1000,
          bufferSizeExceedAction: 'fail-closed',
        });
        const BODY = Buffer.alloc(5000, 0x61);
        const post = async (t: string) => {
          const head = `POST ${t} HTTP/1.1\r\nHost: a\r\nContent-Type: application/octet-stream\r\nContent-Length: ${BODY.length}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n`;
          const r = await rawExchange(url, [head, { pause: 300 }, BODY], { waitMs: 5000 });
          return r.responses.find((x) => x.status !== 100)?.status;
        };
        try {
          expect(await post('/files/large')).toBe(200);
          expect(await post(target)).toBe(200);
        } finally {
          await nest.close();
        }
      },
    );
  });
});
