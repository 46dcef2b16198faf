/**
 * campaign-br BR8 on Nest (Express platform): `useBodyParser('text')` (body-parser, iconv-lite)
 * strips a leading UTF-8 BOM. A body that starts with one is also scanned without it, so an
 * offset-0 signature sees what the handler holds. See test/hardening/bom-stripped-text.test.ts.
 */
import 'reflect-metadata';
import type { AddressInfo } from 'node:net';
import { IcapModule } from '@icapkit/nestjs';
import { Body, Controller, HttpCode, Module, Post } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import type { NestExpressApplication } from '@nestjs/platform-express';
import { describe, expect, it } from 'vitest';
import { anchoredScanner, BOM, E, postText } from '../support/anchored-scanner.js';

const { profile } = anchoredScanner();
const post = postText;

describe('BR8 a BOM before a text body on Nest', () => {
  it("Nest on Express: useBodyParser('text')", async () => {
    const got: string[] = [];
    @Controller()
    class UploadController {
      @Post('upload')
      @HttpCode(200)
      upload(@Body() body: unknown) {
        if (typeof body === 'string') got.push(body);
        return 'stored';
      }
    }
    @Module({ imports: [IcapModule.forRoot(profile())], controllers: [UploadController] })
    class AppModule {}
    const nest = await NestFactory.create<NestExpressApplication>(AppModule, {
      logger: false,
      abortOnError: false,
    });
    nest.useBodyParser('text');
    await nest.listen(0, '127.0.0.1');
    const url = `http://127.0.0.1:${(nest.getHttpServer().address() as AddressInfo).port}`;
    try {
      expect(await post(url, E)).toBe(403);
      const status = await post(url, Buffer.concat([BOM, E]));
      expect({ status, handlerReadEicarFile: got.includes(E.toString('latin1')) }).toEqual({
        status: 403,
        handlerReadEicarFile: false,
      });
    } finally {
      await nest.close();
    }
  });
});
