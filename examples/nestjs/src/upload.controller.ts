import { createHash } from 'node:crypto';
// IcapService is imported as a value: its constructor parameter's design-time type is read by Nest.
import { IcapOptions, type IcapRequestInfo, IcapResult, IcapService, SkipIcap } from '@icapkit/nestjs';
import {
  BadRequestException,
  Body,
  Controller,
  Get,
  HttpCode,
  Post,
  Req,
  UploadedFile,
  UseInterceptors,
} from '@nestjs/common';
import { FileInterceptor } from '@nestjs/platform-express';
import type { FastifyRequest } from 'fastify';

/** A route with a larger limit than the module's profile (50 MB). */
const LARGE_UPLOADS = { bufferSize: '500mb' } as const;

function result(name: string, data: Buffer, scan: IcapRequestInfo | null) {
  return {
    ok: true,
    file: name,
    size: data.length,
    sha256: createHash('sha256').update(data).digest('hex'),
    icap: { action: scan?.action ?? null },
  };
}

/** Shared by both platforms: the scanner's status, and a small JSON route the scan skips. */
@Controller()
export class StatusController {
  // Injected by type (emitDecoratorMetadata).
  constructor(private readonly icap: IcapService) {}

  @Get('status')
  status() {
    return { platform: this.icap.platform, servers: this.icap.engine.status() };
  }

  /** Small JSON from the browser: no file, not scanned. */
  @SkipIcap()
  @Post('telemetry')
  @HttpCode(204)
  telemetry(@Body() _event: unknown) {}
}

/** Express platform: multer's FileInterceptor parses the body the ICAP server approved. */
@Controller('upload')
export class ExpressUploadController {
  @Post()
  @HttpCode(200)
  @UseInterceptors(FileInterceptor('file', { limits: { files: 1 } }))
  upload(@UploadedFile() file: Express.Multer.File | undefined, @IcapResult() scan: IcapRequestInfo | null) {
    if (file === undefined)
      throw new BadRequestException('Send a multipart form with the file in the field "file".');
    return result(file.originalname, file.buffer, scan);
  }

  @Post('large')
  @HttpCode(200)
  @IcapOptions(LARGE_UPLOADS)
  @UseInterceptors(FileInterceptor('file', { limits: { files: 1 } }))
  large(@UploadedFile() file: Express.Multer.File | undefined, @IcapResult() scan: IcapRequestInfo | null) {
    if (file === undefined)
      throw new BadRequestException('Send a multipart form with the file in the field "file".');
    return result(file.originalname, file.buffer, scan);
  }
}

/** Fastify platform: @fastify/multipart (registered in main.ts) reads the approved body. */
@Controller('upload')
export class FastifyUploadController {
  @Post()
  @HttpCode(200)
  async upload(@Req() req: FastifyRequest, @IcapResult() scan: IcapRequestInfo | null) {
    const file = await req.file();
    if (file === undefined)
      throw new BadRequestException('Send a multipart form with the file in the field "file".');
    return result(file.filename, await file.toBuffer(), scan);
  }

  @Post('large')
  @HttpCode(200)
  @IcapOptions(LARGE_UPLOADS)
  async large(@Req() req: FastifyRequest, @IcapResult() scan: IcapRequestInfo | null) {
    return this.upload(req, scan);
  }
}
