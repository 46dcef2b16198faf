/**
 * The application-side parsers of the differential multipart fuzz, each run directly on the
 * bytes (and the Content-Type) a handler received, the way the framework integrations run them:
 *
 *   multer            (Express)           multer 2, memoryStorage, .any()
 *   @fastify/busboy   (@fastify/multipart) the options @fastify/multipart passes
 *   formidable        (koa-body)          formidable 3 with koa-body's `multiples: true`
 *   busboy            (what icapkit used) busboy 1.6
 *   @koa/bodyparser   (Koa)               json, form and text (it has no multipart parser)
 *
 * Each returns what it extracted (files and fields, in order) and the error it ended with, if
 * any. Items extracted before an error are kept: a handler iterating parts as they come
 * (@fastify/multipart's `req.parts()`, busboy and formidable events) has seen them already.
 * Nothing here may throw or leave a listener behind: every parser is bounded by a deadline.
 */
import { IncomingMessage, ServerResponse } from 'node:http';
import { Socket } from 'node:net';
import { Writable } from 'node:stream';
import FastifyBusboy from '@fastify/busboy';
import { bodyParser } from '@koa/bodyparser';
import busboy from 'busboy';
import formidable from 'formidable';
import Koa from 'koa';
import multer from 'multer';

export type ParserName = 'multer' | '@fastify/busboy' | 'formidable' | 'busboy' | '@koa/bodyparser';
export const PARSERS: ParserName[] = ['multer', '@fastify/busboy', 'formidable', 'busboy', '@koa/bodyparser'];

export interface Extracted {
  kind: 'file' | 'field' | 'body';
  name: string;
  fileName?: string | undefined;
  /** Files: the bytes. Fields and text bodies: the string the parser produced. */
  content: Buffer | string;
}

export interface ParseResult {
  parser: ParserName;
  items: Extracted[];
  error: string | null;
  /**
   * A rejection the parser leaves unhandled (an application using it exits, Node's default):
   * formidable's part handler is async and nobody awaits it.
   */
  crash?: string | undefined;
}

/** Each parser's time limit (they are given a complete body, so only a bug could make them wait). */
const PARSE_DEADLINE_MS = 2_000;

/** A request as the framework hands it to a parser: an IncomingMessage carrying `body`. */
function fakeRequest(body: Buffer, contentType: string | undefined): IncomingMessage {
  const req = new IncomingMessage(new Socket());
  req.method = 'POST';
  req.url = '/upload';
  req.httpVersion = '1.1';
  req.httpVersionMajor = 1;
  req.httpVersionMinor = 1;
  req.headers = { 'content-length': String(body.length) };
  if (contentType !== undefined) req.headers['content-type'] = contentType;
  req.push(body);
  req.push(null);
  // Every byte is there: a parser that listens for 'close' must not take it for an abort.
  req.complete = true;
  return req;
}

function withDeadline(parser: ParserName, run: (items: Extracted[]) => Promise<void>): Promise<ParseResult> {
  const items: Extracted[] = [];
  return new Promise<ParseResult>((resolve) => {
    let settled = false;
    const settle = (error: string | null, crash?: string) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve({ parser, items: [...items], error, ...(crash === undefined ? {} : { crash }) });
    };
    const timer = setTimeout(() => settle(`no end within ${PARSE_DEADLINE_MS} ms`), PARSE_DEADLINE_MS);
    let p: Promise<void>;
    try {
      p = run(items);
    } catch (err) {
      settle(describe(err));
      return;
    }
    p.then(
      () => settle(null),
      (err: unknown) =>
        err instanceof ParserCrash ? settle(`crashed: ${err.message}`, err.message) : settle(describe(err)),
    );
  });
}

class ParserCrash extends Error {}

function describe(err: unknown): string {
  if (err instanceof Error) return `${err.name}: ${err.message}`;
  return String(err);
}

function collect(stream: NodeJS.ReadableStream, chunks: Buffer[] = []): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('end', () => resolve(Buffer.concat(chunks)));
    stream.on('error', reject);
  });
}

const upload = multer({ storage: multer.memoryStorage() }).any();

export function parseWithMulter(body: Buffer, contentType: string | undefined): Promise<ParseResult> {
  return withDeadline('multer', async (items) => {
    const req = fakeRequest(body, contentType) as IncomingMessage & {
      files?: Express.Multer.File[];
      body?: Record<string, unknown>;
    };
    const res = new ServerResponse(req);
    await new Promise<void>((resolve, reject) => {
      upload(req as never, res as never, (err?: unknown) => (err === undefined ? resolve() : reject(err)));
    });
    for (const [name, value] of Object.entries(req.body ?? {})) {
      for (const v of Array.isArray(value) ? value : [value])
        items.push({ kind: 'field', name, content: v === undefined ? '' : String(v) });
    }
    for (const f of req.files ?? [])
      items.push({ kind: 'file', name: f.fieldname, fileName: f.originalname, content: f.buffer });
  });
}

export function parseWithFastifyBusboy(body: Buffer, contentType: string | undefined): Promise<ParseResult> {
  return withDeadline('@fastify/busboy', async (items) => {
    const req = fakeRequest(body, contentType);
    // @fastify/multipart: { headers: request.headers } merged with its options (none here).
    const bb = new FastifyBusboy({ headers: req.headers as never });
    const pending: Array<Promise<void>> = [];
    await new Promise<void>((resolve, reject) => {
      bb.on('field', (name: string, value: string | undefined) => {
        // A charset the parser cannot decode gives undefined: nothing extracted.
        items.push({ kind: 'field', name, content: value ?? '' });
      });
      bb.on('file', (name: string, stream: NodeJS.ReadableStream, fileName: string) => {
        const item: Extracted = { kind: 'file', name, fileName, content: Buffer.alloc(0) };
        items.push(item);
        // Errors of the file stream are the parser's error too (reported through 'error').
        const chunks: Buffer[] = [];
        pending.push(
          collect(stream, chunks).then(
            (data) => {
              item.content = data;
            },
            () => {
              item.content = Buffer.concat(chunks);
            },
          ),
        );
      });
      bb.on('error', reject);
      bb.on('finish', resolve);
      req.on('error', reject);
      req.pipe(bb);
    });
    await Promise.all(pending);
  });
}

export function parseWithFormidable(body: Buffer, contentType: string | undefined): Promise<ParseResult> {
  return withDeadline('formidable', async (items) => {
    const req = fakeRequest(body, contentType);
    const byFile = new Map<unknown, Extracted>();
    const itemOf = (file: unknown): Extracted => {
      let item = byFile.get(file);
      if (item === undefined) {
        item = { kind: 'file', name: '', content: Buffer.alloc(0) };
        byFile.set(file, item);
        items.push(item);
      }
      return item;
    };
    const form = formidable({
      // koa-body's default, and in-memory files instead of temp files (same parse).
      multiples: true,
      fileWriteStreamHandler: (file?: unknown) => {
        const item = itemOf(file);
        const chunks: Buffer[] = [];
        return new Writable({
          write(chunk: Buffer, _enc, cb) {
            chunks.push(chunk);
            item.content = Buffer.concat(chunks);
            cb();
          },
        });
      },
    });
    // 'fileBegin' comes first (the write stream is made when the file opens).
    form.on('fileBegin', (name: string, file: unknown) => {
      const item = itemOf(file);
      item.name = name;
      item.fileName = (file as { originalFilename?: string | null }).originalFilename ?? undefined;
    });
    // formidable calls its async part handler without awaiting it: a rejection there is
    // unhandled in an application. Observed here (and so handled) to report it at once.
    const internals = form as unknown as {
      _handlePart(part: unknown): Promise<void>;
      onPart(part: unknown): void;
    };
    let crashed: (reason: string) => void = () => {};
    const crash = new Promise<never>((_resolve, reject) => {
      crashed = (reason) => reject(new ParserCrash(reason));
    });
    crash.catch(() => {});
    internals.onPart = (part: unknown) => {
      internals._handlePart(part).catch((err: unknown) => crashed(describe(err)));
    };
    form.on('field', (name: string, value: string) => {
      items.push({ kind: 'field', name, content: value });
    });
    await Promise.race([form.parse(req), crash]);
  });
}

export function parseWithBusboy(body: Buffer, contentType: string | undefined): Promise<ParseResult> {
  return withDeadline('busboy', async (items) => {
    const req = fakeRequest(body, contentType);
    const bb = busboy({ headers: req.headers });
    const pending: Array<Promise<void>> = [];
    await new Promise<void>((resolve, reject) => {
      bb.on('field', (name, value: string | undefined) => {
        items.push({ kind: 'field', name, content: value ?? '' });
      });
      bb.on('file', (name, stream, info) => {
        const item: Extracted = { kind: 'file', name, fileName: info.filename, content: Buffer.alloc(0) };
        items.push(item);
        // Errors of the file stream are the parser's error too (reported through 'error').
        const chunks: Buffer[] = [];
        pending.push(
          collect(stream, chunks).then(
            (data) => {
              item.content = data;
            },
            () => {
              item.content = Buffer.concat(chunks);
            },
          ),
        );
      });
      bb.on('error', reject);
      bb.on('close', resolve);
      req.on('error', reject);
      req.pipe(bb);
    });
    await Promise.all(pending);
  });
}

const koa = new Koa();
const koaParser = bodyParser({ enableTypes: ['json', 'form', 'text'] });

export function parseWithKoaBodyparser(body: Buffer, contentType: string | undefined): Promise<ParseResult> {
  return withDeadline('@koa/bodyparser', async (items) => {
    const req = fakeRequest(body, contentType);
    const ctx = koa.createContext(req, new ServerResponse(req));
    await koaParser(ctx as never, async () => {});
    const request = ctx.request as { body?: unknown; rawBody?: string };
    if (typeof request.rawBody === 'string' && request.rawBody !== '')
      items.push({ kind: 'body', name: '', content: request.rawBody });
    const parsed = request.body;
    if (parsed !== null && typeof parsed === 'object') {
      for (const [name, value] of Object.entries(parsed as Record<string, unknown>))
        items.push({
          kind: 'field',
          name,
          content: typeof value === 'string' ? value : JSON.stringify(value),
        });
    }
  });
}

/**
 * All five parsers on the same delivered bytes, one after the other; `phase.now` names the one
 * running (an uncaught exception or unhandled rejection is then attributed to it).
 */
export async function parseAll(
  body: Buffer,
  contentType: string | undefined,
  phase: { now: string } = { now: '' },
): Promise<ParseResult[]> {
  const out: ParseResult[] = [];
  for (const [name, run] of [
    ['multer', parseWithMulter],
    ['@fastify/busboy', parseWithFastifyBusboy],
    ['formidable', parseWithFormidable],
    ['busboy', parseWithBusboy],
    ['@koa/bodyparser', parseWithKoaBodyparser],
  ] as const) {
    phase.now = `${name} parsing the delivered bytes`;
    out.push(await run(body, contentType));
    // Let what a parser left pending (a rejected promise nobody awaits) surface while it is named.
    await new Promise((resolve) => setImmediate(resolve));
  }
  phase.now = 'idle';
  return out;
}
