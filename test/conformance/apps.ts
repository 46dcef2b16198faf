/**
 * One small upload service per framework, each with the framework's usual body parsers
 * downstream of icapkit, so the conformance scenarios can check what the handler really got:
 *
 *   POST /raw        the raw bytes          (express.raw / Fastify buffer parser / Koa: the stream itself)
 *   POST /json       parsed JSON            (express.json / Fastify JSON / koa-body or @koa/bodyparser)
 *   POST /form       urlencoded fields      (express.urlencoded / @koa/bodyparser)
 *   POST /multipart  files and fields       (multer / @fastify/multipart / koa-body + formidable)
 *   GET  /health     no body
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer as createHttp2Server, type Http2Server } from 'node:http2';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fastifyMultipart from '@fastify/multipart';
import type { IcapEngine, IcapProfile, IcapRequestInfo } from '@icapkit/core';
import { icap as expressIcap } from '@icapkit/express';
import { icap as fastifyIcap } from '@icapkit/fastify';
import { icap as koaIcap } from '@icapkit/koa';
import { bodyParser } from '@koa/bodyparser';
import express5 from 'express';
import express4 from 'express4';
import Fastify from 'fastify';
import Koa3 from 'koa';
import { koaBody } from 'koa-body';
import Koa2 from 'koa2';
import multer from 'multer';
// --- Web-standard adapters (issue 16: @icapkit/hono, @icapkit/web's withIcap): apps-web.ts ---
import { startWebApp, WEB_FRAMEWORKS, type WebFramework } from './apps-web.js';
// --- end Web-standard adapters ---

// ---- NestJS (issue 16, @icapkit/nestjs): the same service as a Nest app on Express and Fastify ----
import { NEST_FRAMEWORKS, type NestFramework, startNest } from '../nestjs/apps.js';
// ---- end NestJS ----

export type Framework =
  | 'express5'
  | 'express4'
  | 'fastify'
  | 'koa3'
  | 'koa2'
  | WebFramework
  // ---- NestJS (issue 16) ----
  | NestFramework;
// ---- end NestJS ----
export const FRAMEWORKS: Framework[] = [
  'express5',
  'express4',
  'fastify',
  'koa3',
  'koa2',
  // --- Web-standard adapters ---
  ...WEB_FRAMEWORKS,
  // --- end Web-standard adapters ---
  // ---- NestJS (issue 16) ----
  ...NEST_FRAMEWORKS,
  // ---- end NestJS ----
];

export interface SeenFile {
  field: string;
  name: string;
  type: string;
  data: Buffer;
}

export interface Seen {
  route: string;
  method: string;
  url: string;
  headers: Record<string, string | string[] | undefined>;
  /** Raw bytes (/raw), or the parsed body serialised (/json, /form). */
  raw?: Buffer;
  parsed?: unknown;
  files?: SeenFile[];
  fields?: Record<string, unknown>;
  icap: IcapRequestInfo | undefined;
}

export interface App {
  framework: Framework;
  url: string;
  http2: boolean;
  seen: Seen[];
  /** The adapter's scanning engine (health, connections). */
  engine: IcapEngine;
  close(): Promise<void>;
}

export interface AppOptions {
  http2?: boolean;
  /** Koa only: which JSON parser. */
  koaParser?: 'koa-body' | '@koa/bodyparser';
}

const LIMIT = 200 * 1024 * 1024;

export async function startApp(
  framework: Framework,
  profile: IcapProfile,
  options: AppOptions = {},
): Promise<App> {
  if (framework === 'fastify') return startFastify(profile, options);
  // --- Web-standard adapters ---
  if (framework === 'hono' || framework === 'web') return startWebApp(framework, profile, options);
  // --- end Web-standard adapters ---
  // ---- NestJS (issue 16) ----
  if (framework === 'nest-express' || framework === 'nest-fastify')
    return startNest(framework, { startupCheck: 'off', ...profile }, { http2: options.http2 === true });
  // ---- end NestJS ----
  if (framework === 'express5' || framework === 'express4') return startExpress(framework, profile);
  return startKoa(framework, profile, options);
}

async function startExpress(framework: 'express5' | 'express4', profile: IcapProfile): Promise<App> {
  const express = (framework === 'express5' ? express5 : express4) as unknown as typeof express5;
  const seen: Seen[] = [];
  const mw = expressIcap(profile);
  const app = express();
  app.use(mw);
  const upload = multer({ storage: multer.memoryStorage(), limits: { fileSize: LIMIT } });
  app.post('/raw', express.raw({ type: () => true, limit: LIMIT }), (req, res) => {
    seen.push({
      route: 'raw',
      method: req.method,
      url: req.url,
      headers: req.headers,
      raw: req.body as Buffer,
      icap: req.icap,
    });
    res.json({ ok: true, length: (req.body as Buffer).length });
  });
  app.post('/json', express.json({ limit: LIMIT }), (req, res) => {
    seen.push({
      route: 'json',
      method: req.method,
      url: req.url,
      headers: req.headers,
      parsed: req.body,
      icap: req.icap,
    });
    res.json({ ok: true });
  });
  app.post('/form', express.urlencoded({ extended: false, limit: LIMIT }), (req, res) => {
    seen.push({
      route: 'form',
      method: req.method,
      url: req.url,
      headers: req.headers,
      parsed: { ...req.body },
      icap: req.icap,
    });
    res.json({ ok: true });
  });
  app.post('/multipart', upload.any(), (req, res) => {
    const files = ((req.files ?? []) as Express.Multer.File[]).map((f) => ({
      field: f.fieldname,
      name: f.originalname,
      type: f.mimetype,
      data: f.buffer,
    }));
    seen.push({
      route: 'multipart',
      method: req.method,
      url: req.url,
      headers: req.headers,
      files,
      fields: { ...req.body },
      icap: req.icap,
    });
    res.json({ ok: true, files: files.length });
  });
  app.get('/health', (req, res) => {
    seen.push({ route: 'health', method: req.method, url: req.url, headers: req.headers, icap: req.icap });
    res.json({ ok: true });
  });
  const server = app.listen(0, '127.0.0.1');
  await new Promise<void>((resolve) => server.once('listening', () => resolve()));
  return {
    framework,
    http2: false,
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    seen,
    engine: mw.engine,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await mw.close();
    },
  };
}

async function startFastify(profile: IcapProfile, options: AppOptions): Promise<App> {
  const seen: Seen[] = [];
  const app = options.http2 ? Fastify({ http2: true, bodyLimit: LIMIT }) : Fastify({ bodyLimit: LIMIT });
  // The scenarios start apps against dead and faulty servers on purpose: Fastify's start-up
  // check (OPTIONS in onReady, 'fail' by default) has tests of its own (test/engine/loud.test.ts).
  await app.register(fastifyIcap, { startupCheck: 'off', ...profile });
  await app.register(fastifyMultipart, { limits: { fileSize: LIMIT } });
  app.addContentTypeParser(
    'application/octet-stream',
    { parseAs: 'buffer', bodyLimit: LIMIT },
    (_req, body, done) => done(null, body),
  );
  app.post('/raw', async (req) => {
    seen.push({
      route: 'raw',
      method: req.method,
      url: req.url,
      headers: req.headers,
      raw: req.body as Buffer,
      icap: req.icap ?? undefined,
    });
    return { ok: true, length: (req.body as Buffer).length };
  });
  app.post('/json', async (req) => {
    seen.push({
      route: 'json',
      method: req.method,
      url: req.url,
      headers: req.headers,
      parsed: req.body,
      icap: req.icap ?? undefined,
    });
    return { ok: true };
  });
  app.post('/multipart', async (req) => {
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
    seen.push({
      route: 'multipart',
      method: req.method,
      url: req.url,
      headers: req.headers,
      files,
      fields,
      icap: req.icap ?? undefined,
    });
    return { ok: true, files: files.length };
  });
  app.get('/health', async (req) => {
    seen.push({
      route: 'health',
      method: req.method,
      url: req.url,
      headers: req.headers,
      icap: req.icap ?? undefined,
    });
    return { ok: true };
  });
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

async function startKoa(framework: 'koa3' | 'koa2', profile: IcapProfile, options: AppOptions): Promise<App> {
  const Koa = (framework === 'koa3' ? Koa3 : Koa2) as unknown as typeof Koa3;
  const seen: Seen[] = [];
  const app = new Koa();
  // Koa reports client aborts (the abort scenario) through app 'error'; keep them off stderr.
  app.silent = true;
  const mw = koaIcap(profile);
  app.use(mw as unknown as Koa3.Middleware);
  const useBodyParser = options.koaParser === '@koa/bodyparser';
  // formidable writes each file to a temporary file: in a directory of this app's own, removed
  // at close (files of an aborted form included), so no run leaves uploads in the system's tmp.
  const uploadDir = await mkdtemp(join(tmpdir(), 'icapkit-conformance-'));
  const kb = koaBody({
    multipart: true,
    jsonLimit: LIMIT,
    formLimit: LIMIT,
    formidable: { maxFileSize: LIMIT, maxTotalFileSize: LIMIT, uploadDir },
  });
  const bp = bodyParser({ enableTypes: ['json', 'form'], jsonLimit: '200mb', formLimit: '200mb' });
  app.use(async (ctx, next) => {
    const icap = ctx.state.icap as IcapRequestInfo | undefined;
    const record = (s: Omit<Seen, 'method' | 'url' | 'headers' | 'icap'>) =>
      seen.push({ ...s, method: ctx.method, url: ctx.url, headers: ctx.req.headers, icap });
    if (ctx.path === '/raw' && ctx.method === 'POST') {
      const chunks: Buffer[] = [];
      for await (const c of ctx.req) chunks.push(c as Buffer);
      const raw = Buffer.concat(chunks);
      record({ route: 'raw', raw });
      ctx.body = { ok: true, length: raw.length };
      return;
    }
    if (ctx.path === '/health') {
      record({ route: 'health' });
      ctx.body = { ok: true };
      return;
    }
    if (ctx.path === '/multipart') {
      await kb(ctx as never, async () => {});
      const files: SeenFile[] = [];
      const rawFiles = (ctx.request as { files?: Record<string, unknown> }).files ?? {};
      for (const [field, value] of Object.entries(rawFiles)) {
        for (const f of (Array.isArray(value) ? value : [value]) as Array<{
          filepath: string;
          originalFilename: string;
          mimetype: string;
        }>) {
          files.push({ field, name: f.originalFilename, type: f.mimetype, data: await readFile(f.filepath) });
        }
      }
      record({ route: 'multipart', files, fields: { ...((ctx.request as { body?: object }).body ?? {}) } });
      ctx.body = { ok: true, files: files.length };
      return;
    }
    if (ctx.path === '/json' || ctx.path === '/form') {
      if (useBodyParser) await bp(ctx as never, async () => {});
      else await kb(ctx as never, async () => {});
      record({ route: ctx.path.slice(1), parsed: { ...((ctx.request as { body?: object }).body ?? {}) } });
      ctx.body = { ok: true };
      return;
    }
    await next();
  });
  let server: ReturnType<Koa3['listen']> | Http2Server;
  if (options.http2) {
    server = createHttp2Server(app.callback() as never);
    server.listen(0, '127.0.0.1');
  } else {
    server = app.listen(0, '127.0.0.1');
  }
  await new Promise<void>((resolve) => server.once('listening', () => resolve()));
  return {
    framework,
    http2: options.http2 === true,
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    seen,
    engine: mw.engine,
    close: async () => {
      if ('closeAllConnections' in server) server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await mw.close();
      await rm(uploadDir, { recursive: true, force: true });
    },
  };
}
