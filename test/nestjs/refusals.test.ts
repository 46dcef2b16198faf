/**
 * Refusals are the application's to shape in @icapkit/nestjs too (issue 15, item 3), on both
 * platforms: `onRefusal` / `refusals` given to IcapModule.forRoot reach the platform's adapter.
 * With `refusals: 'error'` the IcapRefusalError reaches Nest's global exception filters (the
 * scan runs before Nest's routing; Nest's own error layer hands it to them), and without a
 * filter of the application's, Nest's own answers with the refusal's status (http-errors rule).
 * The handler never runs, and a callback that fails falls back to the default page.
 */

import type { AddressInfo } from 'node:net';
import { createServer } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { type IcapLog, type IcapProfile, IcapRefusalError } from '@icapkit/core';
import { EICAR_NAME, eicar, type IcapTestServer, startIcapServer } from '@icapkit/testing';
import 'reflect-metadata';
import { IcapModule, type IcapModuleOptions } from '@icapkit/nestjs';
import {
  type ArgumentsHost,
  Catch,
  Controller,
  type ExceptionFilter,
  HttpCode,
  Module,
  Post,
  Req,
} from '@nestjs/common';
import { APP_FILTER, NestFactory } from '@nestjs/core';
import { FastifyAdapter } from '@nestjs/platform-fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { send } from '../support/http-client.js';
import { NEST_FRAMEWORKS, type NestApp, type NestFramework, startNest } from './apps.js';

let icap: IcapTestServer;
let deadPort: number;
beforeAll(async () => {
  icap = await startIcapServer({ recordBodies: false });
  const probe = createServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  deadPort = (probe.address() as { port: number }).port;
  await new Promise<void>((resolve) => probe.close(() => resolve()));
});
afterAll(() => icap?.close());

const octets = { 'content-type': 'application/octet-stream', accept: 'application/json' };

async function until(cond: () => boolean, ms = 5000): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (!cond() && Date.now() < deadline) await sleep(20);
  return cond();
}

interface Run {
  app: NestApp;
  logs: IcapLog[];
  errors: unknown[];
}

async function withNest(
  framework: NestFramework,
  poolGroup: string,
  moduleOptions: IcapModuleOptions,
  filter: boolean,
  fn: (run: Run) => Promise<void>,
): Promise<void> {
  const logs: IcapLog[] = [];
  const errors: unknown[] = [];
  const profile: IcapProfile = {
    name: 'nest-refusals',
    poolGroup,
    serviceUri: '/avscan',
    // Some cases start against a scanner that is down on purpose (Fastify's start-up check).
    startupCheck: 'off',
    onLog: (l) => logs.push(l),
  };
  const app = await startNest(framework, profile, {
    moduleOptions,
    beforeListen: (nest) => {
      if (!filter) return;
      const adapter = nest.getHttpAdapter();
      // A global filter of the application's (no @Catch(): it catches everything).
      const catchAll: ExceptionFilter = {
        catch(exception: unknown, host: ArgumentsHost) {
          errors.push(exception);
          const e = exception as Record<string, unknown>;
          const status = typeof e.status === 'number' ? e.status : 500;
          adapter.reply(
            host.switchToHttp().getResponse(),
            { filter: 'app', code: e.code, message: e.expose ? e.message : 'hidden', threat: e.threat },
            status,
          );
        },
      };
      nest.useGlobalFilters(catchAll);
    },
  });
  try {
    await fn({ app, logs, errors });
  } finally {
    await app.close();
  }
}

describe.each(NEST_FRAMEWORKS)('%s', (framework) => {
  const up = () => icap.url();
  const down = () => `icap://127.0.0.1:${deadPort}`;

  it("refusals: 'error' hands a blocked upload to the application's global exception filter", async () => {
    await withNest(framework, up(), { refusals: 'error' }, true, async ({ app, logs, errors }) => {
      const r = await send(app.url, '/raw', { body: eicar(), headers: octets });
      expect(r.status).toBe(403);
      expect(JSON.parse(r.text)).toMatchObject({
        filter: 'app',
        code: 'ICAP_ERR_BLOCKED',
        threat: EICAR_NAME,
      });
      expect(app.seen).toEqual([]);
      expect(errors).toHaveLength(1);
      const err = errors[0] as IcapRefusalError;
      expect(err).toBeInstanceOf(IcapRefusalError);
      expect(err).toMatchObject({
        name: 'IcapRefusalError',
        code: 'ICAP_ERR_BLOCKED',
        status: 403,
        statusCode: 403,
        expose: true,
        reason: 'blocked',
        threat: EICAR_NAME,
      });
      expect(err.message).toContain(EICAR_NAME);
      expect(logs).toHaveLength(1);
      expect(logs[0]!.action).toBe('ICAP_BLOCKED');
      expect(err.log).toBe(logs[0]);
    });
  });

  it("refusals: 'error' with the scanner down: 503, not exposed, Retry-After in err.headers", async () => {
    await withNest(framework, down(), { refusals: 'error' }, true, async ({ app, logs, errors }) => {
      const r = await send(app.url, '/raw', { body: 'clean bytes', headers: octets });
      expect(r.status).toBe(503);
      expect(JSON.parse(r.text)).toMatchObject({ filter: 'app', message: 'hidden' });
      expect(app.seen).toEqual([]);
      expect(errors).toHaveLength(1);
      expect(errors[0]).toMatchObject({ status: 503, statusCode: 503, expose: false, reason: 'unavailable' });
      expect((errors[0] as IcapRefusalError).code).toMatch(/^ICAP_ERR_/);
      expect((errors[0] as IcapRefusalError).headers['retry-after']).toBe('30');
      expect(logs[0]!.action).toBe('ICAP_FAILED');
    });
  });

  it("refusals: 'error' without a filter of the application's: Nest answers with the refusal's status", async () => {
    await withNest(framework, up(), { refusals: 'error' }, false, async ({ app, logs }) => {
      const r = await send(app.url, '/raw', { body: eicar(), headers: octets });
      expect(r.status).toBe(403);
      expect(JSON.parse(r.text)).toMatchObject({ statusCode: 403 });
      expect(r.text).toContain(EICAR_NAME);
      expect(app.seen).toEqual([]);
      expect(logs[0]!.action).toBe('ICAP_BLOCKED');
    });
    await withNest(framework, down(), { refusals: 'error' }, false, async ({ app }) => {
      const r = await send(app.url, '/raw', { body: 'clean bytes', headers: octets });
      expect(r.status).toBe(503);
      // expose false: the status text, not the error's message.
      expect(JSON.parse(r.text)).toMatchObject({ statusCode: 503, message: 'Service Unavailable' });
      expect(app.seen).toEqual([]);
    });
  });

  it('onRefusal returning { status, headers, body } renders the refusal (block and scanner down)', async () => {
    const seen: unknown[] = [];
    const onRefusal = (refusal: { reason: string; threat: string | undefined; status: number }) => {
      seen.push(refusal);
      return {
        status: 422,
        headers: { 'x-refused': refusal.reason },
        body: { error: 'refused', threat: refusal.threat, was: refusal.status },
      };
    };
    await withNest(framework, up(), { onRefusal }, true, async ({ app, logs, errors }) => {
      const r = await send(app.url, '/raw', { body: eicar(), headers: octets });
      expect(r.status).toBe(422);
      expect(r.headers['x-refused']).toBe('blocked');
      expect(JSON.parse(r.text)).toEqual({ error: 'refused', threat: EICAR_NAME, was: 403 });
      expect(app.seen).toEqual([]);
      expect(errors).toEqual([]);
      expect(seen).toHaveLength(1);
      expect(logs[0]!.action).toBe('ICAP_BLOCKED');
    });
    await withNest(framework, down(), { onRefusal }, true, async ({ app, logs }) => {
      const r = await send(app.url, '/raw', { body: 'clean bytes', headers: octets });
      expect(r.status).toBe(422);
      expect(r.headers['x-refused']).toBe('unavailable');
      expect(JSON.parse(r.text)).toMatchObject({ was: 503 });
      expect(app.seen).toEqual([]);
      expect(logs[0]!.action).toBe('ICAP_FAILED');
    });
  });

  it.each([
    [
      'throws',
      () => {
        throw new Error('template missing');
      },
    ],
    ['returns nothing', () => undefined],
    ['returns a 2xx', () => ({ status: 200, body: 'all good' })],
  ])('onRefusal that %s: the default page, the handler never runs', async (_name, onRefusal) => {
    await withNest(framework, up(), { onRefusal }, true, async ({ app, logs, errors }) => {
      const r = await send(app.url, '/raw', { body: eicar(), headers: octets });
      expect(r.status).toBe(403);
      expect(r.headers['content-type']).toBe('application/problem+json');
      expect(JSON.parse(r.text)).toMatchObject({ status: 403, threat: EICAR_NAME });
      expect(app.seen).toEqual([]);
      expect(errors).toEqual([]);
      expect(await until(() => logs.length === 1)).toBe(true);
      expect(logs[0]!.action).toBe('ICAP_BLOCKED');
    });
  });

  it("a route with its own @IcapOptions (413 by its buffer) goes through refusals: 'error' and onRefusal too", async () => {
    const big = Buffer.alloc(8 * 1024, 0x61);
    await withNest(framework, up(), { refusals: 'error' }, true, async ({ app, logs, errors }) => {
      const r = await send(app.url, '/small/raw', { body: big, headers: octets });
      expect(r.status).toBe(413);
      expect(JSON.parse(r.text)).toMatchObject({ filter: 'app', code: 'ICAP_ERR_REQUEST_TOO_LARGE' });
      expect(errors[0]).toMatchObject({ status: 413, reason: 'too-large', expose: true });
      expect(app.seen).toEqual([]);
      expect(await until(() => logs.length === 1)).toBe(true);
      expect(logs[0]!.error_code).toBe('ICAP_ERR_REQUEST_TOO_LARGE');
    });
    const onRefusal = (refusal: { status: number }) => ({ status: 422, body: { was: refusal.status } });
    await withNest(framework, up(), { onRefusal }, true, async ({ app, errors }) => {
      const r = await send(app.url, '/small/raw', { body: big, headers: octets });
      expect(r.status).toBe(422);
      expect(JSON.parse(r.text)).toEqual({ was: 413 });
      expect(app.seen).toEqual([]);
      expect(errors).toEqual([]);
    });
  });

  it('Expect: 100-continue refused from its head (413) still goes through onRefusal and the filter', async () => {
    const big = Buffer.alloc(8 * 1024, 0x61);
    const onRefusal = (refusal: { status: number }) => ({ status: 422, body: { was: refusal.status } });
    await withNest(framework, up(), { onRefusal }, true, async ({ app }) => {
      const r = await send(app.url, '/small/raw', { body: big, headers: octets, expectContinue: true });
      expect(r.status).toBe(422);
      expect(JSON.parse(r.text)).toEqual({ was: 413 });
      expect(app.seen).toEqual([]);
    });
    await withNest(framework, up(), { refusals: 'error' }, true, async ({ app, errors }) => {
      const r = await send(app.url, '/small/raw', { body: big, headers: octets, expectContinue: true });
      expect(r.status).toBe(413);
      expect(errors[0]).toMatchObject({ code: 'ICAP_ERR_REQUEST_TOO_LARGE', status: 413 });
      expect(app.seen).toEqual([]);
    });
  });

  it('a clean upload still reaches the handler', async () => {
    await withNest(framework, up(), { refusals: 'error' }, true, async ({ app, errors }) => {
      const r = await send(app.url, '/raw', { body: 'clean bytes', headers: octets });
      expect(r.status).toBe(200);
      expect(app.seen).toHaveLength(1);
      expect(app.seen[0]!.raw?.toString()).toBe('clean bytes');
      expect(errors).toEqual([]);
    });
  });
});

describe.each(NEST_FRAMEWORKS)('%s: an APP_FILTER provider (as the README shows)', (framework) => {
  it('@Catch(IcapRefusalError) as APP_FILTER receives the refusal; the handler never runs', async () => {
    const caught: unknown[] = [];
    const handled: string[] = [];
    const logs: IcapLog[] = [];

    @Catch(IcapRefusalError)
    class RefusalFilter implements ExceptionFilter {
      catch(err: IcapRefusalError, host: ArgumentsHost) {
        caught.push(err);
        const res = host.switchToHttp().getResponse();
        nest.getHttpAdapter().reply(res, { mine: err.code, threat: err.threat }, err.status);
      }
    }

    @Controller()
    class UploadController {
      @Post('raw')
      @HttpCode(200)
      raw(@Req() req: { url: string }) {
        handled.push(req.url);
        return { ok: true };
      }
    }

    @Module({
      imports: [
        IcapModule.forRoot(
          { name: 'filter', poolGroup: icap.url(), serviceUri: '/avscan', onLog: (l) => logs.push(l) },
          { refusals: 'error' },
        ),
      ],
      controllers: [UploadController],
      providers: [{ provide: APP_FILTER, useClass: RefusalFilter }],
    })
    class AppModule {}

    const nest =
      framework === 'nest-express'
        ? await NestFactory.create(AppModule, { logger: false, abortOnError: false })
        : await NestFactory.create(AppModule, new FastifyAdapter(), { logger: false, abortOnError: false });
    if (framework === 'nest-fastify')
      nest
        .getHttpAdapter()
        .getInstance()
        .addContentTypeParser(
          'application/octet-stream',
          { parseAs: 'buffer' },
          (_r: unknown, b: unknown, done: (e: null, b: unknown) => void) => done(null, b),
        );
    await nest.listen(0, '127.0.0.1');
    try {
      const url = `http://127.0.0.1:${(nest.getHttpServer().address() as AddressInfo).port}`;
      const r = await send(url, '/raw', { body: eicar(), headers: octets });
      expect(r.status).toBe(403);
      expect(JSON.parse(r.text)).toEqual({ mine: 'ICAP_ERR_BLOCKED', threat: EICAR_NAME });
      expect(caught).toHaveLength(1);
      expect(caught[0]).toBeInstanceOf(IcapRefusalError);
      expect(handled).toEqual([]);
      expect(logs[0]!.action).toBe('ICAP_BLOCKED');
      const clean = await send(url, '/raw', { body: 'clean', headers: octets });
      expect(clean.status).toBe(200);
      expect(handled).toEqual(['/raw']);
    } finally {
      await nest.close();
    }
  });
});
