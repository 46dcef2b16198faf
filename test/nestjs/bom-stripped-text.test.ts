/**
 * campaign-br BR8 on Nest (Express platform): `useBodyParser('text')` (body-parser, iconv-lite)
 * strips a leading UTF-8 BOM. A body that starts with one is also scanned without it, so an
 * offset-0 signature sees what the handler holds. See test/hardening/bom-stripped-text.test.ts.
 */
import 'reflect-metadata';
import type { AddressInfo } from 'node:net';
import type { IcapProfile } from '@icapkit/core';
import { IcapModule } from '@icapkit/nestjs';
import { eicar } from '@icapkit/testing';
import { Body, Controller, HttpCode, Module, Post } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import type { NestExpressApplication } from '@nestjs/platform-express';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rawExchange } from '../support/raw-http.js';
import { type ScriptedIcap, scripted } from '../support/scripted-icap.js';

const E = eicar();
const BOM = Buffer.from([0xef, 0xbb, 0xbf]);
const THREAT =
  'ICAP/1.0 200 OK\r\nISTag: "x1"\r\nX-Infection-Found: Type=0; Resolution=2; Threat=Eicar-Test-Signature;\r\nEncapsulated: null-body=0\r\n\r\n';
const CLEAN = 'ICAP/1.0 204 No Content\r\nISTag: "x1"\r\nEncapsulated: null-body=0\r\n\r\n';

let scanner: ScriptedIcap;
beforeAll(async () => {
  // A signature anchored at offset 0 of the object (the EICAR file as the spec defines it).
  scanner = await scripted((r) => r.sock.write(r.body.subarray(0, E.length).equals(E) ? THREAT : CLEAN));
});
afterAll(() => scanner?.close());

const profile = (): IcapProfile => ({
  name: 'br8',
  poolGroup: scanner.url,
  serviceUri: '/avscan',
  startupCheck: 'off',
});

async function post(url: string, body: Buffer): Promise<number | undefined> {
  const r = await rawExchange(
    url,
    [
      Buffer.concat([
        Buffer.from(
          `POST /upload HTTP/1.1\r\nHost: a\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n`,
        ),
        body,
      ]),
    ],
    { responses: 1, waitMs: 5000 },
  );
  return r.responses[0]?.status;
}

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
