/**
 * The conformance upload service (see test/conformance/apps.ts) as a NestJS application, on
 * @nestjs/platform-express (multer through AnyFilesInterceptor / FileInterceptor) and
 * @nestjs/platform-fastify (@fastify/multipart registered on the Nest app), with
 * @icapkit/nestjs's IcapModule, plus the routes the NestJS tests need (@SkipIcap,
 * @IcapOptions, @IcapResult).
 *
 * Compiled as Nest users compile (legacy decorators with design-time metadata: see
 * tsconfig.json here): constructor dependencies by type, a value by an explicit @Inject token.
 */
import 'reflect-metadata';
import type { AddressInfo } from 'node:net';
import fastifyMultipart from '@fastify/multipart';
import type { IcapProfile, IcapRequestInfo } from '@icapkit/core';
import {
  IcapModule,
  type IcapModuleOptions,
  IcapOptions,
  IcapResult,
  IcapService,
  SkipIcap,
} from '@icapkit/nestjs';
import {
  Body,
  Controller,
  Get,
  HttpCode,
  Inject,
  Injectable,
  Module,
  Post,
  Req,
  UploadedFile,
  UploadedFiles,
  UseInterceptors,
} from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { AnyFilesInterceptor, FileInterceptor, type NestExpressApplication } from '@nestjs/platform-express';
import { FastifyAdapter, type NestFastifyApplication } from '@nestjs/platform-fastify';
import { Test } from '@nestjs/testing';
import type { FastifyRequest } from 'fastify';
import { memoryStorage } from 'multer';
import type { App, Seen, SeenFile } from '../conformance/apps.js';

export type NestFramework = 'nest-express' | 'nest-fastify';
export const NEST_FRAMEWORKS: NestFramework[] = ['nest-express', 'nest-fastify'];

const LIMIT = 200 * 1024 * 1024;
const SEEN = Symbol('seen');

/** A tight override for one route: bodies over 1000 bytes are refused there (413), not elsewhere. */
export const SMALL_BUFFER: Partial<IcapProfile> = { bufferSize: 1000, bufferSizeExceedAction: 'fail-closed' };

type AnyReq = (FastifyRequest | import('node:http').IncomingMessage) & {
  icap?: IcapRequestInfo | null;
  body?: unknown;
};

function isFastify(req: AnyReq): req is FastifyRequest & { icap?: IcapRequestInfo | null } {
  return 'raw' in req && 'routeOptions' in req;
}

/**
 * The request body as bytes: Fastify's buffer parser, or the (approved) stream (Express; Fastify
 * multipart, which @fastify/multipart leaves unread).
 */
async function rawBody(req: AnyReq): Promise<Buffer> {
  if (isFastify(req) && Buffer.isBuffer(req.body)) return req.body;
  const stream = (isFastify(req) ? req.raw : req) as import('node:http').IncomingMessage;
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

@Injectable()
export class SeenLog {
  constructor(@Inject(SEEN) readonly list: Seen[]) {}
  record(req: AnyReq, s: Omit<Seen, 'method' | 'url' | 'headers' | 'icap'>): void {
    const headers = isFastify(req) ? req.headers : req.headers;
    this.list.push({
      ...s,
      method: req.method ?? '',
      url: req.url ?? '',
      headers,
      icap: req.icap ?? undefined,
    });
  }
}

async function fastifyFiles(
  req: FastifyRequest,
): Promise<{ files: SeenFile[]; fields: Record<string, unknown> }> {
  const files: SeenFile[] = [];
  const fields: Record<string, unknown> = {};
  for await (const part of req.parts()) {
    if (part.type === 'file')
      files.push({
        field: part.fieldname,
        name: part.filename,
        type: part.mimetype,
        data: await part.toBuffer(),
      });
    else fields[part.fieldname] = part.value;
  }
  return { files, fields };
}

function multerFiles(files: Express.Multer.File[] | undefined): SeenFile[] {
  return (files ?? []).map((f) => ({
    field: f.fieldname,
    name: f.originalname,
    type: f.mimetype,
    data: f.buffer,
  }));
}

function controllers(platform: 'express' | 'fastify') {
  const multipartInterceptors =
    platform === 'express'
      ? [AnyFilesInterceptor({ storage: memoryStorage(), limits: { fileSize: LIMIT } })]
      : [];
  const fileInterceptors =
    platform === 'express'
      ? [FileInterceptor('file', { storage: memoryStorage(), limits: { fileSize: LIMIT } })]
      : [];

  /** The conformance routes. */
  @Controller()
  class UploadController {
    // By type: needs the design-time metadata (emitDecoratorMetadata).
    constructor(readonly seen: SeenLog) {}

    @Post('raw')
    @HttpCode(200)
    async raw(@Req() req: AnyReq) {
      const raw = await rawBody(req);
      this.seen.record(req, { route: 'raw', raw });
      return { ok: true, length: raw.length };
    }

    @Post('json')
    @HttpCode(200)
    json(@Req() req: AnyReq, @Body() body: unknown) {
      this.seen.record(req, { route: 'json', parsed: body });
      return { ok: true };
    }

    @Post('form')
    @HttpCode(200)
    form(@Req() req: AnyReq, @Body() body: Record<string, unknown>) {
      this.seen.record(req, { route: 'form', parsed: { ...body } });
      return { ok: true };
    }

    @Post('multipart')
    @HttpCode(200)
    @UseInterceptors(...multipartInterceptors)
    async multipart(
      @Req() req: AnyReq,
      @UploadedFiles() uploaded: Express.Multer.File[] | undefined,
      @Body() body: Record<string, unknown> | undefined,
    ) {
      const { files, fields } = isFastify(req)
        ? await fastifyFiles(req)
        : { files: multerFiles(uploaded), fields: { ...(body ?? {}) } };
      this.seen.record(req, { route: 'multipart', files, fields });
      return { ok: true, files: files.length };
    }

    @Get('health')
    health(@Req() req: AnyReq) {
      this.seen.record(req, { route: 'health' });
      return { ok: true };
    }

    /** FileInterceptor('file') on Express, req.file() on Fastify; answers what the handler got and the scan. */
    @Post('upload')
    @HttpCode(200)
    @UseInterceptors(...fileInterceptors)
    async upload(
      @Req() req: AnyReq,
      @UploadedFile() file: Express.Multer.File | undefined,
      @IcapResult() scan: IcapRequestInfo | null,
    ) {
      let got: SeenFile | undefined;
      if (isFastify(req)) {
        const part = await req.file();
        if (part !== undefined)
          got = {
            field: part.fieldname,
            name: part.filename,
            type: part.mimetype,
            data: await part.toBuffer(),
          };
      } else if (file !== undefined) {
        got = multerFiles([file])[0];
      }
      this.seen.record(req, { route: 'upload', files: got === undefined ? [] : [got] });
      return {
        file: got?.name ?? null,
        size: got?.data.length ?? null,
        scan:
          scan === null
            ? null
            : { action: scan.action, threat: scan.threat ?? null, rule: scan.rule ?? null },
        sameAsRequest: scan === (req.icap ?? null),
        logAction: scan?.log.action ?? null,
      };
    }

    @SkipIcap()
    @Post('skip/raw')
    @HttpCode(200)
    async skipRaw(@Req() req: AnyReq, @IcapResult() scan: IcapRequestInfo | null) {
      const raw = await rawBody(req);
      this.seen.record(req, { route: 'skip', raw });
      return { ok: true, length: raw.length, scan };
    }

    @IcapOptions(SMALL_BUFFER)
    @Post('small/raw')
    @HttpCode(200)
    async smallRaw(@Req() req: AnyReq) {
      const raw = await rawBody(req);
      this.seen.record(req, { route: 'small', raw });
      return { ok: true, length: raw.length };
    }
  }

  /** A controller opted out as a whole, with one handler that opts back in with overrides. */
  @SkipIcap()
  @Controller('public')
  class PublicController {
    constructor(@Inject(SeenLog) readonly seen: SeenLog) {}

    @Post('raw')
    @HttpCode(200)
    async raw(@Req() req: AnyReq) {
      const raw = await rawBody(req);
      this.seen.record(req, { route: 'public', raw });
      return { ok: true, length: raw.length };
    }

    @IcapOptions(SMALL_BUFFER)
    @Post('scanned/raw')
    @HttpCode(200)
    async scanned(@Req() req: AnyReq) {
      const raw = await rawBody(req);
      this.seen.record(req, { route: 'public-scanned', raw });
      return { ok: true, length: raw.length };
    }
  }

  return [UploadController, PublicController];
}

export interface NestApp extends App {
  /** The Nest application. */
  nest: NestExpressApplication | NestFastifyApplication;
}

export interface NestAppOptions {
  /** forRootAsync (with an injected dependency) instead of forRoot. */
  async?: boolean;
  /** Build with @nestjs/testing's Test.createTestingModule() instead of NestFactory.create(). */
  testingModule?: boolean;
  moduleOptions?: IcapModuleOptions;
  /** Fastify only: HTTP/2 (cleartext). */
  http2?: boolean;
  /** Called on the Nest application before it listens (e.g. to add middleware). */
  beforeListen?: (nest: NestExpressApplication | NestFastifyApplication) => void | Promise<void>;
}

const PROFILE_TOKEN = Symbol('profile');

export async function startNest(
  framework: NestFramework,
  profile: IcapProfile,
  options: NestAppOptions = {},
): Promise<NestApp> {
  const platform = framework === 'nest-express' ? 'express' : 'fastify';
  const seen: Seen[] = [];

  @Module({ providers: [{ provide: PROFILE_TOKEN, useValue: profile }], exports: [PROFILE_TOKEN] })
  class ConfigModule {}

  const icapModule = options.async
    ? IcapModule.forRootAsync({
        imports: [ConfigModule],
        inject: [PROFILE_TOKEN],
        useFactory: async (p: IcapProfile) => ({ profile: p, options: options.moduleOptions }),
      })
    : IcapModule.forRoot(profile, options.moduleOptions);

  @Module({
    imports: [icapModule],
    controllers: controllers(platform),
    providers: [{ provide: SEEN, useValue: seen }, SeenLog],
  })
  class AppModule {}

  let nest: NestExpressApplication | NestFastifyApplication;
  if (platform === 'express') {
    if (options.testingModule) {
      const ref = await Test.createTestingModule({ imports: [AppModule] }).compile();
      nest = ref.createNestApplication<NestExpressApplication>({ logger: false });
    } else {
      nest = await NestFactory.create<NestExpressApplication>(AppModule, {
        logger: false,
        abortOnError: false,
      });
    }
  } else {
    const adapter = options.http2
      ? new FastifyAdapter({ http2: true, bodyLimit: LIMIT } as never)
      : new FastifyAdapter({ bodyLimit: LIMIT });
    if (options.testingModule) {
      const ref = await Test.createTestingModule({ imports: [AppModule] }).compile();
      nest = ref.createNestApplication<NestFastifyApplication>(adapter, { logger: false });
    } else {
      nest = await NestFactory.create<NestFastifyApplication>(AppModule, adapter, {
        logger: false,
        abortOnError: false,
      });
    }
    const f = nest as NestFastifyApplication;
    await f.register(fastifyMultipart as never, { limits: { fileSize: LIMIT } });
    f.getHttpAdapter()
      .getInstance()
      .addContentTypeParser(
        'application/octet-stream',
        { parseAs: 'buffer', bodyLimit: LIMIT },
        (_req, body, done) => done(null, body),
      );
  }
  await options.beforeListen?.(nest);
  await nest.listen(0, '127.0.0.1');
  const server = nest.getHttpServer() as import('node:http').Server;
  const service = nest.get(IcapService);
  return {
    framework: framework as App['framework'],
    http2: options.http2 === true,
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    seen,
    engine: service.engine,
    nest,
    close: async () => {
      if ('closeAllConnections' in server) server.closeAllConnections();
      await nest.close();
    },
  };
}
