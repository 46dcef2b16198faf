/**
 * Apps whose handlers read a body through the body parsers people mount after icapkit: each
 * reader is a framework with one parser (JSON or urlencoded, as configured by default or in a
 * common variation), recording every string the parser handed over (keys and values, walked
 * deeply). The decoded-strings tests compare those strings with what the ICAP server was sent.
 */
import { createServer as createHttpServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import formbody from '@fastify/formbody';
import { getRequestListener } from '@hono/node-server';
import type { IcapLog, IcapProfile } from '@icapkit/core';
import { icap as expressIcap } from '@icapkit/express';
import { icap as fastifyIcap } from '@icapkit/fastify';
import { icap as honoIcap } from '@icapkit/hono';
import { icap as koaIcap } from '@icapkit/koa';
import { bodyParser as koaBodyParser } from '@koa/bodyparser';
import express5 from 'express';
import express4 from 'express4';
import Fastify from 'fastify';
import formidable from 'formidable';
import { Hono } from 'hono';
import Koa from 'koa';
import { koaBody } from 'koa-body';

/** What a reader parses: JSON (by its media type), JSON sent as text/plain, urlencoded forms. */
export type BodyKind = 'json' | 'json-as-text' | 'form';

export interface Reader {
  name: string;
  kind: BodyKind;
  start(profile: IcapProfile): Promise<ReaderApp>;
}

export interface ReaderApp {
  url: string;
  /** Per request that reached the handler: every string the parser handed over. */
  delivered: string[][];
  logs: IcapLog[];
  close(): Promise<void>;
}

/** Every string in a parsed value: object keys and string values, at any depth. */
export function stringsOf(value: unknown, out: string[] = []): string[] {
  if (typeof value === 'string') out.push(value);
  else if (Array.isArray(value)) for (const v of value) stringsOf(v, out);
  else if (value !== null && typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) {
      out.push(k);
      stringsOf(v, out);
    }
  }
  return out;
}

/** What a reader's app records: the icap_log records, the strings each handled request got. */
interface Recorder {
  logs: IcapLog[];
  delivered: string[][];
}

/** A reader whose app `start` makes from the profile (its onLog records) and the recorder. */
function reader(
  name: string,
  kind: BodyKind,
  start: (profile: IcapProfile, rec: Recorder) => Promise<ReaderApp>,
): Reader {
  return {
    name,
    kind,
    start: (profile) => {
      const rec: Recorder = { logs: [], delivered: [] };
      return start({ ...profile, onLog: (l) => rec.logs.push(l) }, rec);
    },
  };
}

/** A listening server as a ReaderApp: closed with its connections, then the scanner. */
async function served(server: Server, rec: Recorder, closeScanner: () => Promise<void>): Promise<ReaderApp> {
  if (!server.listening) await new Promise<void>((resolve) => server.once('listening', () => resolve()));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    ...rec,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await closeScanner();
    },
  };
}

type Mount = 'express5' | 'express4';

export function expressReader(name: string, kind: BodyKind, mount: Mount, parser: () => unknown): Reader {
  return reader(name, kind, async (profile, rec) => {
    const express = (mount === 'express5' ? express5 : express4) as unknown as typeof express5;
    const mw = expressIcap(profile);
    const app = express();
    app.use(mw);
    app.post('/upload', parser() as express5.RequestHandler, (req, res) => {
      rec.delivered.push(stringsOf(req.body));
      res.json({ ok: true });
    });
    app.use((err: { status?: number }, _req: express5.Request, res: express5.Response, _n: unknown) => {
      res.status(err.status ?? 500).json({ error: true });
    });
    return served(app.listen(0, '127.0.0.1'), rec, () => mw.close());
  });
}

/** formidable 3 after icapkit in Express: its urlencoded parser reads the body as Node's `ascii`. */
function formidableReader(): Reader {
  return expressReader('express5 + formidable (urlencoded)', 'form', 'express5', () => {
    return (req: IncomingMessage & { body?: unknown }, _res: unknown, next: (e?: unknown) => void) => {
      formidable({}).parse(req, (err, fields) => {
        if (err) return next(Object.assign(err as object, { status: 400 }));
        req.body = fields;
        next();
      });
    };
  });
}

function fastifyReader(name: string, kind: BodyKind): Reader {
  return reader(name, kind, async (profile, rec) => {
    const app = Fastify();
    await app.register(fastifyIcap, profile as never);
    if (kind === 'form') await app.register(formbody);
    if (kind === 'json-as-text') {
      app.addContentTypeParser('text/plain', { parseAs: 'string' }, (_req, body, done) => {
        try {
          done(null, JSON.parse(body as string));
        } catch (err) {
          done(Object.assign(err as Error, { statusCode: 400 }), undefined);
        }
      });
    }
    app.post('/upload', async (request) => {
      rec.delivered.push(stringsOf(request.body));
      return { ok: true };
    });
    await app.listen({ port: 0, host: '127.0.0.1' });
    return {
      url: `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`,
      ...rec,
      close: () => app.close(),
    };
  });
}

export function koaReader(name: string, kind: BodyKind, parser: () => Koa.Middleware): Reader {
  return reader(name, kind, async (profile, rec) => {
    const app = new Koa();
    app.silent = true;
    const mw = koaIcap(profile);
    app.use(mw as unknown as Koa.Middleware);
    app.use(parser());
    app.use(async (ctx) => {
      rec.delivered.push(stringsOf((ctx.request as unknown as { body: unknown }).body));
      ctx.body = { ok: true };
    });
    return served(app.listen(0, '127.0.0.1'), rec, () => mw.close());
  });
}

function honoReader(name: string, kind: BodyKind): Reader {
  return reader(name, kind, async (profile, rec) => {
    const mw = honoIcap(profile);
    const app = new Hono();
    app.use(mw);
    app.post('/upload', async (c) => {
      const body = kind === 'form' ? await c.req.parseBody({ all: true }) : await c.req.json();
      rec.delivered.push(stringsOf(body));
      return c.json({ ok: true });
    });
    app.onError((_err, c) => c.json({ error: true }, 400));
    const server = createHttpServer(getRequestListener(app.fetch));
    return served(server.listen(0, '127.0.0.1'), rec, () => mw.close());
  });
}

/**
 * The readers: every framework with its usual JSON and urlencoded parsers, and the variations
 * that decode differently (body-parser's `extended`, Express 4's Node querystring, qs with a
 * Latin-1 charset, fast-querystring, URLSearchParams, formidable's `ascii`), and JSON parsed
 * from text/plain (sendBeacon's content type).
 */
export const READERS: Reader[] = [
  expressReader('express5 + express.json', 'json', 'express5', () => express5.json()),
  expressReader('express5 + express.json({type: text/plain})', 'json-as-text', 'express5', () =>
    express5.json({ type: 'text/plain' }),
  ),
  expressReader('express5 + urlencoded', 'form', 'express5', () => express5.urlencoded()),
  expressReader('express5 + urlencoded({extended: true})', 'form', 'express5', () =>
    express5.urlencoded({ extended: true }),
  ),
  expressReader('express4 + express.json', 'json', 'express4', () => express4.json()),
  expressReader('express4 + urlencoded({extended: false})', 'form', 'express4', () =>
    express4.urlencoded({ extended: false }),
  ),
  formidableReader(),
  fastifyReader('fastify (JSON)', 'json'),
  fastifyReader('fastify + text/plain as JSON', 'json-as-text'),
  fastifyReader('fastify + @fastify/formbody', 'form'),
  koaReader('koa + @koa/bodyparser (JSON)', 'json', () => koaBodyParser() as unknown as Koa.Middleware),
  koaReader(
    'koa + @koa/bodyparser (form)',
    'form',
    () => koaBodyParser({ enableTypes: ['form'] }) as unknown as Koa.Middleware,
  ),
  koaReader('koa + koa-body (JSON)', 'json', () => koaBody() as unknown as Koa.Middleware),
  koaReader('koa + koa-body (form)', 'form', () => koaBody() as unknown as Koa.Middleware),
  honoReader('hono (c.req.json)', 'json'),
  honoReader('hono (c.req.parseBody)', 'form'),
];
