/**
 * A NestJS upload service whose uploads are scanned by an ICAP server (antivirus) before
 * multer / @fastify/multipart or the handler see a byte of them.
 *
 *   pnpm run build && node examples/nestjs/dist/main.js                     # Express, embedded ICAP server
 *   PLATFORM=fastify node examples/nestjs/dist/main.js                      # Fastify
 *   ICAP_URL=icap://127.0.0.1:1344 node examples/nestjs/dist/main.js        # with c-icap
 *
 * POST /upload (multipart, file in the field `file`) answers `{ ok, file, size, sha256, icap }`;
 * blocked uploads get icapkit's 403 (HTML, or problem+json for `Accept: application/json`).
 */
import 'reflect-metadata';
import fastifyMultipart from '@fastify/multipart';
import { startIcapServer } from '@icapkit/testing';
import { NestFactory } from '@nestjs/core';
import { FastifyAdapter, type NestFastifyApplication } from '@nestjs/platform-fastify';
import { AppModule } from './app.module.js';

async function bootstrap(): Promise<void> {
  const platform = process.env.PLATFORM === 'fastify' ? 'fastify' : 'express';
  // No ICAP_URL: an embedded ICAP server on a free loopback port (it detects EICAR).
  const embedded = process.env.ICAP_URL ? null : await startIcapServer({ host: '127.0.0.1' });
  const icapUrl = process.env.ICAP_URL || embedded!.url();
  const module = AppModule.register({
    platform,
    icapUrl,
    serviceUri: process.env.ICAP_SERVICE || '/avscan',
    failOpen: process.env.ICAP_FAIL_OPEN === '1',
  });
  const app =
    platform === 'fastify'
      ? await NestFactory.create<NestFastifyApplication>(
          module,
          new FastifyAdapter({ bodyLimit: 60 * 1024 * 1024 }),
        )
      : await NestFactory.create(module);
  if (platform === 'fastify') {
    await (app as NestFastifyApplication).register(fastifyMultipart as never, { limits: { files: 1 } });
  }
  await app.listen(Number(process.env.PORT || 3000), process.env.HOST || '127.0.0.1');
  console.log(`listening on ${await app.getUrl()} (${platform}); ICAP server ${icapUrl}`);
  console.log(`  curl -F file=@README.md ${await app.getUrl()}/upload`);

  let closing = false;
  const close = async (signal: string) => {
    if (closing) process.exit(130);
    closing = true;
    console.log(`${signal}: closing`);
    // app.close() closes the HTTP server, then IcapModule's engines (their ICAP connections).
    await app.close();
    await embedded?.close();
    console.log('closed');
  };
  process.once('SIGINT', () => void close('SIGINT'));
  process.once('SIGTERM', () => void close('SIGTERM'));
}

bootstrap().catch((err: unknown) => {
  console.error(`Could not start: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});
