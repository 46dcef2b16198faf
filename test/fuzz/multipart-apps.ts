/**
 * Apps for the multipart differential tests: POST /raw hands the handler's raw bytes (and the
 * request's headers, as the framework sees them) to the test, whatever the Content-Type.
 *
 * Express and Koa: the conformance apps of test/conformance/apps.ts (express.raw with any type;
 * Koa reads the request stream). Fastify: the conformance app's /raw only takes
 * application/octet-stream (a multipart body there goes to @fastify/multipart's parser, which
 * reads nothing), so the Fastify app here is built the same way (@icapkit/fastify, then
 * @fastify/multipart, registered on the root) with /raw in an encapsulated context whose only
 * content-type parser takes any body as a buffer.
 */
import type { AddressInfo } from 'node:net';
import fastifyMultipart from '@fastify/multipart';
import type { IcapProfile } from '@icapkit/core';
import { icap as fastifyIcap } from '@icapkit/fastify';
import Fastify from 'fastify';
import { type App, type AppOptions, type Framework, type Seen, startApp } from '../conformance/apps.js';

const LIMIT = 200 * 1024 * 1024;

export async function startCaptureApp(
  framework: Framework,
  profile: IcapProfile,
  options: AppOptions = {},
): Promise<App> {
  if (framework !== 'fastify') return startApp(framework, profile, options);
  const seen: Seen[] = [];
  const app = options.http2 ? Fastify({ http2: true, bodyLimit: LIMIT }) : Fastify({ bodyLimit: LIMIT });
  await app.register(fastifyIcap, profile);
  await app.register(fastifyMultipart, { limits: { fileSize: LIMIT } });
  await app.register(async (child) => {
    child.removeAllContentTypeParsers();
    child.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit: LIMIT }, (_req, body, done) =>
      done(null, body),
    );
    child.post('/raw', async (req) => {
      const raw = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
      seen.push({
        route: 'raw',
        method: req.method,
        url: req.url,
        headers: req.headers,
        raw,
        icap: req.icap ?? undefined,
      });
      return { ok: true, length: raw.length };
    });
  });
  app.get('/health', async () => ({ ok: true }));
  await app.listen({ port: 0, host: '127.0.0.1' });
  const port = (app.server.address() as AddressInfo).port;
  return {
    framework: 'fastify',
    http2: options.http2 === true,
    url: `http://127.0.0.1:${port}`,
    seen,
    engine: app.icapEngine,
    close: () => app.close(),
  };
}
