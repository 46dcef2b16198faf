/**
 * One benchmark application, run as its own process so its RSS and CPU are its own.
 *
 *   node dist/app.js <express|fastify|koa|hono> [icap-url service [--hold-floor|--hold-floor-parts]]
 *
 * Without an ICAP URL it is the "no scanning" ceiling (and Squid's origin). With one, icapkit's
 * middleware for that framework scans every POST with the default profile (plus the JSON in
 * BENCH_PROFILE, if set). With `--hold-floor` (Express, Fastify, Koa) icapkit is replaced by
 * holdfloor.ts: the least an in-process ICAP middleware can do per request (previewing larger
 * bodies with BENCH_HOLD_PREVIEW=<bytes>; with BENCH_HOLD_STREAM=1 the handler reads the body as a
 * stream, as with icapkit, instead of taking the held chunks). Routes:
 *
 *   POST /upload   reads the body as a stream into a SHA-1 and answers 200 with the digest
 *   GET  /__stats  { rss, hwm, cpu, stages, mem, icap: engine.status() } (never scanned): `cpu` is
 *                  this process's `process.cpuUsage()` (µs), `stages` the per-stage totals of the
 *                  scan when BENCH_STAGES=1 (see stages.ts), else null; `mem` the peak of
 *                  `arrayBuffers` since the previous /__stats when BENCH_MEM_PEAK=1; `digested` the
 *                  uploads whose digest the handler made so far (the run's request count over a
 *                  window inside one load run)
 *
 * Prints `READY {"port":N}` once listening; stops on SIGTERM/SIGINT.
 */
import { createServer, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { constants, PerformanceObserver } from 'node:perf_hooks';
import { Readable } from 'node:stream';
import { getRequestListener } from '@hono/node-server';
import { type IcapEngine, type IcapProfile, rearmRequest } from '@icapkit/core';
import { icap as expressIcap } from '@icapkit/express';
import { icap as fastifyIcap } from '@icapkit/fastify';
import { icap as honoIcap } from '@icapkit/hono';
import { icap as koaIcap } from '@icapkit/koa';
import express from 'express';
import Fastify from 'fastify';
import { Hono } from 'hono';
import Koa from 'koa';
import { BodyDigest } from './bodies.js';
import { HoldFloor, holdAndAsk } from './holdfloor.js';
import { StageTotals } from './stages.js';
import { memOf } from './util.js';

const [framework, icapUrl, service, mode] = process.argv.slice(2);
/** The hold-and-ask floor instead of icapkit (`--hold-floor`; a form part by part: `--hold-floor-parts`). */
const hold =
  (mode === '--hold-floor' || mode === '--hold-floor-parts') && icapUrl !== undefined
    ? new HoldFloor(icapUrl, service ?? '/avscan', {
        parts: mode === '--hold-floor-parts',
        ...(process.env.BENCH_HOLD_PREVIEW ? { preview: Number(process.env.BENCH_HOLD_PREVIEW) } : {}),
      })
    : undefined;
const BODY_LIMIT = 256 * 1024 * 1024;
/**
 * BENCH_HOLD_STREAM=1: the hold floor hands the body on as a stream the handler reads (as icapkit
 * does: the request made readable again), not as the held chunks themselves.
 */
const holdStream = process.env.BENCH_HOLD_STREAM === '1';

/** The held chunks as a stream: all pushed at the first read, as icapkit's hand-off does. */
function heldStream(chunks: Buffer[]): Readable {
  let rest: Buffer[] | null = chunks;
  return new Readable({
    read() {
      if (rest === null) return;
      for (const c of rest) this.push(c);
      rest = null;
      this.push(null);
    },
  });
}
/** Per-stage CPU and wall time of the scan, from the engine's stage channel (opt-in: it costs a few µs). */
const stageTotals = process.env.BENCH_STAGES === '1' ? StageTotals.subscribe() : undefined;

function profile(): IcapProfile | null {
  if (icapUrl === undefined || hold !== undefined) return null;
  const extra = process.env.BENCH_PROFILE
    ? (JSON.parse(process.env.BENCH_PROFILE) as Partial<IcapProfile>)
    : {};
  return { name: 'bench', poolGroup: icapUrl, serviceUri: service ?? '/avscan', ...extra };
}

/**
 * Reads a stream to its end into a SHA-1: the application "uses" every byte it accepted. A
 * multipart form's boundary (icapkit gives it a fresh one) is replaced by a fixed token first.
 */
function digest(stream: Readable, contentType: string | undefined): Promise<string> {
  return new Promise((resolve, reject) => {
    const h = new BodyDigest(contentType);
    stream.on('data', (c: Buffer) => h.update(c));
    stream.once('end', () => {
      digested++;
      resolve(h.digest());
    });
    stream.once('error', reject);
  });
}

/** The digest of chunks already held (the hold floor's hand-off). */
function digestHeld(chunks: Buffer[], contentType: string | undefined): string {
  const h = new BodyDigest(contentType);
  for (const c of chunks) h.update(c);
  digested++;
  return h.digest();
}

/** Uploads digested so far (every framework's handler, every mode): /__stats `digested`. */
let digested = 0;

/** Mark-compacts since start (the run reports them per 1000 requests: which GC regime a cell saw). */
let majorGcs = 0;
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) {
    const kind = (e as unknown as { detail?: { kind?: number } }).detail?.kind;
    if (kind === constants.NODE_PERFORMANCE_GC_MAJOR) majorGcs++;
  }
}).observe({ entryTypes: ['gc'] });

/**
 * BENCH_MEM_PEAK=1: the peak of `process.memoryUsage()`'s `arrayBuffers` (Buffers' memory,
 * where a held body lives), sampled every 5 ms. Each /__stats answer gives the peak since the
 * previous one, and the value now, then starts over: what a body costs in
 * memory the application allocated, beside RSS (which moves by a few MiB with the pages malloc
 * and V8 keep or give back, plain framework or not).
 */
const memPeak =
  process.env.BENCH_MEM_PEAK === '1'
    ? (() => {
        const now = () => process.memoryUsage().arrayBuffers;
        let peak = now();
        setInterval(() => {
          peak = Math.max(peak, now());
        }, 5).unref();
        return () => {
          const current = now();
          const since = Math.max(peak, current);
          peak = current;
          return { peak: { arrayBuffers: since }, now: { arrayBuffers: current } };
        };
      })()
    : undefined;

function stats(engine: IcapEngine | undefined): string {
  return JSON.stringify({
    ...memOf(process.pid),
    cpu: process.cpuUsage(),
    majorGcs,
    digested,
    mem: memPeak?.() ?? null,
    stages: stageTotals?.snapshot() ?? null,
    icap: engine?.status() ?? null,
  });
}

async function startExpress(p: IcapProfile | null): Promise<{ port: number; close(): Promise<void> }> {
  const app = express();
  app.disable('x-powered-by');
  app.disable('etag');
  const mw = p ? expressIcap(p) : undefined;
  app.get('/__stats', (_req, res) => {
    res.type('json').send(stats(mw?.engine));
  });
  if (mw) app.use(mw);
  if (hold)
    app.use((req, _res, next) => {
      if (req.method !== 'POST') return next();
      holdAndAsk(hold, req, req.headers['content-type'], (err, chunks) => {
        if (err) return next(err);
        if (holdStream) {
          const length = chunks!.reduce((n, c) => n + c.length, 0);
          rearmRequest(req, { body: heldStream(chunks!), contentLength: length });
        } else (req as { held?: Buffer[] | undefined }).held = chunks;
        next();
      });
    });
  app.post('/upload', (req, res, next) => {
    const held = (req as { held?: Buffer[] }).held;
    if (held) res.send(digestHeld(held, req.headers['content-type']));
    else digest(req, req.headers['content-type']).then((d) => res.send(d), next);
  });
  const server = app.listen(0, '127.0.0.1');
  server.keepAliveTimeout = 60_000;
  await new Promise<void>((r) => server.once('listening', () => r()));
  return {
    port: (server.address() as AddressInfo).port,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
      await mw?.close();
    },
  };
}

async function startFastify(p: IcapProfile | null): Promise<{ port: number; close(): Promise<void> }> {
  const app = Fastify({ logger: false, bodyLimit: BODY_LIMIT, keepAliveTimeout: 60_000 });
  if (p) await app.register(fastifyIcap, p);
  // Every content type (octet-stream, multipart) goes to the handler as a digest of the raw stream.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { bodyLimit: BODY_LIMIT }, (req, payload, done) => {
    const type = req.headers['content-type'];
    if (hold) {
      holdAndAsk(hold, payload, type, (err, chunks) => {
        if (err) done(err);
        else if (!holdStream) done(null, digestHeld(chunks!, type));
        else
          digest(heldStream(chunks!), type).then(
            (d) => done(null, d),
            (e: Error) => done(e),
          );
      });
      return;
    }
    digest(payload as Readable, type).then(
      (d) => done(null, d),
      (err: Error) => done(err),
    );
  });
  app.get('/__stats', { config: { icap: false } }, async (_req, reply) => {
    reply.type('application/json');
    return stats(p ? app.icapEngine : undefined);
  });
  app.post('/upload', async (req) => req.body as string);
  await app.listen({ port: 0, host: '127.0.0.1' });
  return { port: (app.server.address() as AddressInfo).port, close: () => app.close() };
}

async function startKoa(p: IcapProfile | null): Promise<{ port: number; close(): Promise<void> }> {
  const app = new Koa();
  app.silent = true;
  const mw = p ? koaIcap(p) : undefined;
  app.use(async (ctx, next) => {
    if (ctx.path === '/__stats') {
      ctx.type = 'json';
      ctx.body = stats(mw?.engine);
      return;
    }
    await next();
  });
  if (mw) app.use(mw as unknown as Koa.Middleware);
  if (hold)
    app.use(async (ctx, next) => {
      if (ctx.method === 'POST') {
        ctx.state.held = await new Promise<Buffer[]>((resolve, reject) =>
          holdAndAsk(hold, ctx.req, ctx.req.headers['content-type'], (err, chunks) =>
            err ? reject(err) : resolve(chunks!),
          ),
        );
      }
      await next();
    });
  app.use(async (ctx) => {
    if (ctx.method === 'POST' && ctx.path === '/upload') {
      const held = ctx.state.held as Buffer[] | undefined;
      ctx.body = held
        ? holdStream
          ? await digest(heldStream(held), ctx.req.headers['content-type'])
          : digestHeld(held, ctx.req.headers['content-type'])
        : await digest(ctx.req as IncomingMessage, ctx.req.headers['content-type']);
      return;
    }
    ctx.status = 404;
  });
  const server = app.listen(0, '127.0.0.1');
  server.keepAliveTimeout = 60_000;
  await new Promise<void>((r) => server.once('listening', () => r()));
  return {
    port: (server.address() as AddressInfo).port,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
      await mw?.close();
    },
  };
}

/** Hono on @hono/node-server: the handler reads the (approved) Web Request's body stream. */
async function startHono(p: IcapProfile | null): Promise<{ port: number; close(): Promise<void> }> {
  const app = new Hono();
  const mw = p ? honoIcap(p) : undefined;
  app.get('/__stats', (c) => c.body(stats(mw?.engine), 200, { 'content-type': 'application/json' }));
  if (mw) app.use('/upload', mw);
  app.post('/upload', async (c) => {
    const h = new BodyDigest(c.req.header('content-type'));
    const body = c.req.raw.body;
    if (body !== null) for await (const chunk of body) h.update(Buffer.from(chunk));
    digested++;
    return c.text(h.digest());
  });
  const server = createServer(getRequestListener(app.fetch));
  server.keepAliveTimeout = 60_000;
  server.listen(0, '127.0.0.1');
  await new Promise<void>((r) => server.once('listening', () => r()));
  return {
    port: (server.address() as AddressInfo).port,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
      await mw?.close();
    },
  };
}

/**
 * V8's sampling heap profiler, counting garbage too (objects a scavenge or a mark-compact
 * collected): where the bytes a request allocates come from. Returns the function that writes
 * the profile (a .heapprofile, readable by `profile.js --analyze-alloc=FILE`). With
 * BENCH_ALLOC_SURVIVORS=1 it leaves out what scavenges collected: what survived them (promoted,
 * or allocated in the old generation directly, as V8's maps and pretenured objects are).
 */
async function startAllocationSampling(): Promise<(file: string) => Promise<void>> {
  const { Session } = await import('node:inspector');
  const { writeFile } = await import('node:fs/promises');
  const session = new Session();
  session.connect();
  const post = (method: string, params?: object) =>
    new Promise<unknown>((resolve, reject) =>
      session.post(method, params ?? {}, (err, result) => (err ? reject(err) : resolve(result))),
    );
  await post('HeapProfiler.enable');
  await post('HeapProfiler.startSampling', {
    samplingInterval: 4096,
    includeObjectsCollectedByMajorGC: true,
    includeObjectsCollectedByMinorGC: process.env.BENCH_ALLOC_SURVIVORS !== '1',
  });
  return async (file) => {
    const r = (await post('HeapProfiler.stopSampling')) as { profile: unknown };
    await writeFile(file, JSON.stringify(r.profile));
    session.disconnect();
  };
}

async function main(): Promise<void> {
  const p = profile();
  const start =
    framework === 'express'
      ? startExpress
      : framework === 'fastify'
        ? startFastify
        : framework === 'koa'
          ? startKoa
          : framework === 'hono'
            ? startHono
            : undefined;
  if (start === undefined) throw new Error(`unknown framework ${framework}`);
  const app = await start(p);
  const allocations = process.env.BENCH_ALLOC_PROFILE ? await startAllocationSampling() : undefined;
  let stopping = false;
  const stop = () => {
    if (stopping) return;
    stopping = true;
    // A cpu profile (--cpu-prof) is written when the process exits normally.
    (allocations?.(process.env.BENCH_ALLOC_PROFILE!) ?? Promise.resolve())
      .then(() => app.close())
      .then(() => hold?.close())
      .finally(() => process.exit(0));
    setTimeout(() => process.exit(0), 2000).unref();
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  process.stdout.write(`READY ${JSON.stringify({ port: app.port, pid: process.pid })}\n`);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
