/**
 * The multipart path's shortcuts against its general path:
 *
 * - the canonical form complete in memory is handed to the request as its Buffers at once (the
 *   replay's TAKE_HELD, FormReader.takeAll), instead of streaming through the replay: the same
 *   bytes, headers and end; a spooled part, a replaced content, a reader already started or a
 *   form discarded first take (or behave as) the general path;
 * - part headers are read at offsets, without a regex, Map or tuple per parameter: the same
 *   parts, contents and errors as the parser before that cut (reference/, a differential test);
 * - the strict parse takes a chunk the source holds now without a promise (NEXT_NOW): the same
 *   parts, contents and errors as a source that only answers next(), whatever the split, and an
 *   abort still ends it.
 */

import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { IncomingMessage } from 'node:http';
import { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { BodyStore } from '../../src/engine/body.js';
import { canonicalForm, freshBoundary, type RebuiltPart } from '../../src/engine/multipart/canonical.js';
import { type Part, parseMultipart } from '../../src/engine/multipart/parse.js';
import { MultipartParser } from '../../src/engine/multipart/parser.js';
import { parseDisposition, parseMediaType } from '../../src/engine/multipart/syntax.js';
import { rearmRequest } from '../../src/node/handoff.js';
import { emittedSoon } from './held-body.js';
import { MultipartParser as ParserBefore } from './reference/parser-before.js';
import {
  parseDisposition as parseDispositionBefore,
  parseMediaType as parseMediaTypeBefore,
} from './reference/syntax-before.js';

const BOUNDARY = 'xYzBoundary123';
const CT = `multipart/form-data; boundary=${BOUNDARY}`;
const TAKE_HELD = Symbol.for('icapkit.body.takeHeld');

function pattern(n: number, seed = 7): Buffer {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed + (i >> 8)) & 0xff;
  return b;
}

function form(files: Buffer[], field = 'hello'): Buffer {
  const parts: Buffer[] = [
    Buffer.from(`--${BOUNDARY}\r\nContent-Disposition: form-data; name="title"\r\n\r\n${field}\r\n`),
  ];
  files.forEach((f, i) => {
    parts.push(
      Buffer.from(
        `--${BOUNDARY}\r\nContent-Disposition: form-data; name="f${i}"; filename="d${i}.bin"\r\nContent-Type: application/octet-stream\r\n\r\n`,
      ),
      f,
      Buffer.from('\r\n'),
    );
  });
  parts.push(Buffer.from(`--${BOUNDARY}--\r\n`));
  return Buffer.concat(parts);
}

/** A source that answers next() only (no NEXT_NOW): the general path. */
function slowSource(chunks: Buffer[]): AsyncIterator<Buffer> {
  let i = 0;
  return {
    next: async () => {
      await new Promise((r) => setImmediate(r));
      return i < chunks.length ? { done: false, value: chunks[i++]! } : { done: true, value: undefined };
    },
  };
}

/** A held store of `body` split at `sizes` (repeated), ended: its cursor has NEXT_NOW. */
function heldStore(body: Buffer, sizes: number[]): BodyStore {
  const store = new BodyStore({ limit: Number.POSITIVE_INFINITY, retainAll: true });
  let at = 0;
  for (let k = 0; at < body.length; k++) {
    const n = Math.max(1, sizes[k % sizes.length]!);
    store.push(body.subarray(at, at + n));
    at += n;
  }
  store.end();
  return store;
}

function split(body: Buffer, sizes: number[]): Buffer[] {
  const out: Buffer[] = [];
  let at = 0;
  for (let k = 0; at < body.length; k++) {
    const n = Math.max(1, sizes[k % sizes.length]!);
    out.push(body.subarray(at, at + n));
    at += n;
  }
  return out;
}

const LIMITS = {
  files: 20,
  fields: 20,
  parts: 30,
  fileSize: 10 * 1024 * 1024,
  fieldSize: 100_000,
  fieldNameSize: 100,
  headerPairs: 10,
  headerSize: 2_000,
};

const options = (over: { memoryThreshold?: number; spoolDir?: string } = {}) => ({
  limits: LIMITS,
  storage: { memoryThreshold: over.memoryThreshold ?? 1024 * 1024, spoolDir: over.spoolDir ?? tmpdir() },
});

async function parse(
  source: AsyncIterator<Buffer>,
  opts = options(),
  signal?: AbortSignal,
): Promise<{ parts: Part[]; summary: unknown }> {
  const parts = await parseMultipart(CT, source, opts, () => {}, signal);
  const summary = [];
  for (const p of parts) {
    const chunks: Buffer[] = [];
    const it = p.store.open();
    for (let r = await it.next(); !r.done; r = await it.next()) chunks.push(r.value);
    summary.push({
      index: p.index,
      kind: p.kind,
      field: p.field,
      file: p.fileName,
      bytes: Buffer.concat(chunks).toString('hex'),
    });
  }
  return { parts, summary };
}

async function outcome(run: () => Promise<unknown>): Promise<unknown> {
  try {
    return { ok: await run() };
  } catch (err) {
    return {
      error: (err as { code?: string }).code,
      message: (err as Error).message,
      status: (err as { status?: number }).status,
    };
  }
}

async function consumedRequest(length: number): Promise<IncomingMessage> {
  const req = new IncomingMessage(new Socket());
  req.method = 'POST';
  req.url = '/upload';
  req.headers = { host: 'x', 'content-type': CT, 'content-length': String(length) };
  req.rawHeaders = ['Host', 'x', 'Content-Type', CT, 'Content-Length', String(length)];
  req.push(null);
  req.resume();
  await once(req, 'end');
  return req;
}

async function readAll(req: Readable, ms = 5000): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      new Promise<void>((resolve, reject) => {
        req.on('data', (c: Buffer) => chunks.push(c));
        req.once('end', resolve);
        req.once('error', reject);
      }),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error('the body did not end in time')), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
  return Buffer.concat(chunks);
}

/** Hands the canonical form of `kept` to a request, by the shortcut or (general) the replay stream. */
async function handOff(kept: RebuiltPart[], general: boolean) {
  const f = canonicalForm(kept, '----fixedBoundaryForTheTest');
  const req = await consumedRequest(0);
  // The general path: a replay already asked to read (as the body-handoff tests do).
  if (general) f.body.read(0);
  // Which way the hand-off went: the Buffers at once, or the replay stream.
  const replay = f.body as unknown as Record<symbol, () => Buffer[] | undefined>;
  const take = replay[TAKE_HELD]!.bind(f.body);
  let took = false;
  replay[TAKE_HELD] = () => {
    const held = take();
    took = held !== undefined;
    return held;
  };
  rearmRequest(req, { body: f.body, contentLength: f.length, headers: [['content-type', f.contentType]] });
  const bytes = await readAll(req);
  return { took, bytes: bytes.toString('hex'), length: f.length, headers: req.headers, raw: req.rawHeaders };
}

describe('the canonical form handed to the request at once', () => {
  it("the same bytes, length and headers as the replay stream, the parts' own Buffers", async () => {
    const body = form([pattern(70 * 1024), pattern(5000, 3), Buffer.alloc(0), pattern(200 * 1024, 9)]);
    const results = [];
    for (const general of [false, true]) {
      const { parts } = await parse(heldStore(body, [64 * 1024]).open());
      const f = canonicalForm(
        parts.map((part) => ({ part })),
        '----fixedBoundaryForTheTest',
      );
      const held = general
        ? undefined
        : (f.body as unknown as { [k: symbol]: () => Buffer[] | undefined })[TAKE_HELD]!();
      if (held !== undefined) {
        // No copy: a large part's content is the parsed slice of the input itself.
        expect(held.some((b) => b.buffer === parts[1]!.store.slices(1)[0]!.buffer)).toBe(true);
        expect(Buffer.concat(held).length).toBe(f.length);
      }
      const r = await handOff(
        parts.map((part) => ({ part })),
        general,
      );
      expect(r.took).toBe(!general);
      results.push({ ...r, took: undefined });
    }
    expect(results[0]).toEqual(results[1]);
    expect(Buffer.from(results[0]!.bytes as string, 'hex').length).toBe(results[0]!.length);
    expect(results[0]!.headers['content-length']).toBe(String(results[0]!.length));
  });

  it('any form and split: the shortcut gives what the replay gives', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.integer({ min: 0, max: 20_000 }), { minLength: 0, maxLength: 5 }),
        fc.array(fc.integer({ min: 1, max: 30_000 }), { minLength: 1, maxLength: 4 }),
        async (sizes, chunks) => {
          const body = form(sizes.map((n, i) => pattern(n, i)));
          const out = [];
          for (const general of [false, true]) {
            const { parts } = await parse(heldStore(body, chunks).open());
            out.push(
              (
                await handOff(
                  parts.map((part) => ({ part })),
                  general,
                )
              ).bytes,
            );
          }
          expect(out[0]).toBe(out[1]);
        },
      ),
      { numRuns: 40 },
    );
  });

  it('a replaced content or a spooled part: no shortcut, the replay reads it', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'icapkit-mp-fast-'));
    try {
      const body = form([pattern(100 * 1024), pattern(3000, 5)]);
      // Spooled: a part over memoryThreshold lives in a temp file.
      const spooled = await parse(
        heldStore(body, [16 * 1024]).open(),
        options({ memoryThreshold: 8 * 1024, spoolDir: dir }),
      );
      expect(spooled.parts[1]!.store.spooled).toBe(true);
      const f = canonicalForm(spooled.parts.map((part) => ({ part })));
      expect((f.body as unknown as { [k: symbol]: () => unknown })[TAKE_HELD]!()).toBeUndefined();
      const inMemory = await parse(heldStore(body, [16 * 1024]).open());
      const a = await handOff(
        spooled.parts.map((part) => ({ part })),
        false,
      );
      const b = await handOff(
        inMemory.parts.map((part) => ({ part })),
        true,
      );
      expect(a.bytes).toBe(b.bytes);
      // Replaced: the new content is streamed in place of the part's.
      const replacement = Buffer.from('rewritten content');
      const kept = inMemory.parts.map((part) =>
        part.index === 2
          ? { part, content: { stream: () => Readable.from([replacement]), length: replacement.length } }
          : { part },
      );
      const g = canonicalForm(kept);
      expect((g.body as unknown as { [k: symbol]: () => unknown })[TAKE_HELD]!()).toBeUndefined();
      const c = await handOff(kept, false);
      expect(c.took).toBe(false);
      expect(Buffer.from(c.bytes, 'hex').includes(replacement)).toBe(true);
      expect(Buffer.from(c.bytes, 'hex').length).toBe(c.length);
      for (const p of [...spooled.parts, ...inMemory.parts]) p.store.dispose();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('a form read from already, or discarded first: no shortcut; discarded, no bytes and no end either way', async () => {
    const body = form([pattern(30 * 1024)]);
    const { parts } = await parse(heldStore(body, [8 * 1024]).open());
    const f = canonicalForm(parts.map((part) => ({ part })));
    f.body.read(0);
    await new Promise((r) => setImmediate(r));
    expect((f.body as unknown as { [k: symbol]: () => unknown })[TAKE_HELD]!()).toBeUndefined();
    f.body.destroy();
    const seen = [];
    for (const general of [false, true]) {
      const g = canonicalForm(parts.map((part) => ({ part })));
      const req = await consumedRequest(0);
      if (general) g.body.read(0);
      rearmRequest(req, { body: g.body, contentLength: g.length });
      // What the outcome's dispose does before the application reads.
      g.body.destroy();
      seen.push(await emittedSoon(req));
    }
    expect(seen[0]).toEqual({ chunks: 0, ended: false });
    expect(seen[1]).toEqual(seen[0]);
  });
});

describe('the parse takes held chunks without a promise', () => {
  it('the same parts and contents as a source that only answers next(), whatever the split', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.integer({ min: 0, max: 9000 }), { minLength: 0, maxLength: 4 }),
        fc.array(fc.integer({ min: 1, max: 12_000 }), { minLength: 1, maxLength: 4 }),
        async (sizes, chunks) => {
          const body = form(sizes.map((n, i) => pattern(n, i + 1)));
          const a = await outcome(async () => (await parse(heldStore(body, chunks).open())).summary);
          const b = await outcome(async () => (await parse(slowSource(split(body, chunks)))).summary);
          expect(a).toEqual(b);
        },
      ),
      { numRuns: 40 },
    );
  });

  it('malformed or truncated forms: the same error either way', async () => {
    const good = form([pattern(5000)]);
    const bad = [
      good.subarray(0, good.length - 10),
      Buffer.concat([Buffer.from('preamble\r\n'), good]),
      Buffer.from(good.toString('latin1').replace('name="f0"', 'nome="f0"'), 'latin1'),
      Buffer.concat([good, Buffer.from('epilogue')]),
    ];
    for (const body of bad) {
      for (const chunks of [[7], [1000], [body.length]]) {
        const a = await outcome(async () => (await parse(heldStore(body, chunks).open())).summary);
        const b = await outcome(async () => (await parse(slowSource(split(body, chunks)))).summary);
        expect(a).toEqual(b);
        expect((a as { error?: string }).error).toBe('ICAP_ERR_MULTIPART');
      }
    }
  });

  it('an aborted signal ends the parse with its reason, held chunks or not', async () => {
    const body = form([pattern(40 * 1024)]);
    const ac = new AbortController();
    const reason = new Error('client gone');
    ac.abort(reason);
    await expect(parse(heldStore(body, [4096]).open(), options(), ac.signal)).rejects.toBe(reason);
    // Aborted while the body still arrives: the pending read is rejected.
    const store = new BodyStore({ limit: Number.POSITIVE_INFINITY, retainAll: true });
    store.push(body.subarray(0, 10_000));
    const ac2 = new AbortController();
    const parsing = parseMultipart(CT, store.open(), options(), () => {}, ac2.signal);
    setTimeout(() => ac2.abort(reason), 5);
    await expect(parsing).rejects.toBe(reason);
    store.dispose();
    // A source that is not a store's cursor: its pending read is raced against the signal.
    const ac3 = new AbortController();
    const stalled = parseMultipart(
      CT,
      { next: () => new Promise<IteratorResult<Buffer>>(() => {}) },
      options(),
      () => {},
      ac3.signal,
    );
    setTimeout(() => ac3.abort(reason), 5);
    await expect(stalled).rejects.toBe(reason);
  });
});

describe('fresh boundaries drawn from a batch of random bytes', () => {
  it('every boundary has its own 32 hex digits, across batches', () => {
    const seen = new Set<string>();
    for (let i = 0; i < 1000; i++) {
      const b = freshBoundary();
      expect(b).toMatch(/^----icapkit[0-9a-f]{32}$/);
      seen.add(b);
    }
    expect(seen.size).toBe(1000);
  });
});

describe('part headers read at offsets, without a regex, Map or tuple per parameter', () => {
  /** Events or the error of a parse of `body` split at `cuts`, by `Parser`. */
  function run(
    Parser: typeof MultipartParser | typeof ParserBefore,
    body: Buffer,
    cuts: number[],
    asSent: boolean,
  ) {
    const p = new Parser(BOUNDARY, { ...LIMITS, headerPairs: 4, headerSize: 300 }, { asSent });
    const out: unknown[] = [];
    const record = (events: ReturnType<MultipartParser['write']>) => {
      for (const e of events)
        out.push(
          e.type === 'part'
            ? {
                ...e.head,
                media: e.head.media && { type: e.head.media.type, params: [...e.head.media.params] },
              }
            : e.type === 'data'
              ? e.data.toString('latin1')
              : e.type,
        );
    };
    try {
      let at = 0;
      for (const c of [...cuts.filter((x) => x > 0 && x < body.length).sort((a, b) => a - b), body.length]) {
        if (c <= at) continue;
        record(p.write(body.subarray(at, c)));
        at = c;
      }
      record(p.end());
      return { events: out };
    } catch (err) {
      return { events: out, error: (err as Error).message, status: (err as { status?: number }).status };
    }
  }

  const piece = fc.constantFrom(
    'Content-Disposition',
    'content-disposition',
    'Content-Type',
    'CONTENT-TYPE',
    'Content-Transfer-Encoding',
    'X-Other',
    'x-other',
    ':',
    ': ',
    ' ',
    '\t',
    ';',
    '=',
    '"',
    '\\',
    'form-data',
    'name',
    'filename',
    'boundary',
    'charset=utf-16',
    'text/plain',
    'a/b',
    '/',
    'binary',
    'base64',
    'x',
    '\u0000',
    '\u007f',
    '\u00e9',
    '\r',
    '\n',
    '\r\n',
  );
  const noise = fc.array(piece, { minLength: 0, maxLength: 12 }).map((p) => p.join(''));
  /** `first; name=value; ...` with the shapes parsers disagree on. */
  const paramValue = fc
    .tuple(
      fc.constantFrom('form-data', 'Form-Data', 'text/plain', 'a/b', 'attachment', '', ' form-data', 'x/y/z'),
      fc.array(
        fc.constantFrom(
          '; name="f"',
          '; filename="a.txt"',
          '; x=1',
          ';x=2',
          '; NAME=g',
          ' ; name=f',
          ';\tcharset=utf-8',
          '; charset="UTF-16"',
          '; boundary=zz',
          ';; x=1',
          '; name = f',
          '; name= f',
          '; name="a\\b"',
          '; filename=m[1].bin',
          '; name="\u0001"',
          '; name="\u00e9"',
          "; filename*=UTF-8''x",
          '; name',
          '; name=',
          '; name="x',
          '; filename=""',
          ';',
        ),
        { maxLength: 4 },
      ),
      fc.constantFrom('', ' ', '\t', ';', ' junk'),
    )
    .map(([first, params, tail]) => first + params.join('') + tail);
  const header = fc
    .tuple(
      fc.constantFrom(
        'Content-Disposition',
        'content-disposition',
        'Content-Type',
        'Content-Transfer-Encoding',
        'X-Other',
        'x-other',
        'Bad Name',
        '',
      ),
      fc.constantFrom(':', ': ', ':\t', ' :', ':  ', ''),
      fc.oneof(
        paramValue,
        fc.constantFrom('binary', '7BIT', 'base64', ' binary\t', 'binary\t', 'v\u0000', 'v\u007f', '\t'),
      ),
      fc.constantFrom('', ' ', '\t', ' \t'),
    )
    .map((p) => p.join(''));
  const line = fc.oneof(header, header, noise);
  const good = fc.constantFrom(
    'Content-Disposition: form-data; name="f"; filename="a.txt"',
    'Content-Disposition: form-data; name=f',
    'Content-Type: text/plain; charset=utf-8',
    'Content-Type:application/octet-stream  ',
    'X-Other:  v ',
  );
  it('the same parts, contents and errors as before, for any header lines and split', () => {
    fc.assert(
      fc.property(
        fc.array(fc.oneof(good, line), { minLength: 0, maxLength: 5 }),
        fc.array(fc.integer({ min: 0, max: 400 }), { maxLength: 4 }),
        fc.boolean(),
        fc.constantFrom('\r\n', '', '\r', '\n', 'x', '\r\nx', '\r\r', '\r\n\r\n'),
        (lines, cuts, asSent, end) => {
          const head = lines.map((l) => `${l}\r\n`).join('');
          const body = Buffer.from(
            `--${BOUNDARY}\r\n${head}\r\ncontent\r\n--${BOUNDARY}\r\nContent-Disposition: form-data; name="b"\r\n\r\nx\r\n--${BOUNDARY}--${end}`,
            'latin1',
          );
          expect(run(MultipartParser, body, cuts, asSent)).toEqual(run(ParserBefore, body, cuts, asSent));
        },
      ),
      { numRuns: 3000 },
    );
  });

  it('Content-Type and Content-Disposition values: the same result or message as before', () => {
    const value = fc.oneof(
      paramValue,
      fc.array(piece, { maxLength: 14 }).map((p) => p.join('')),
    );
    fc.assert(
      fc.property(value, (v) => {
        const media = (m: ReturnType<typeof parseMediaType>) =>
          typeof m === 'string' ? m : { type: m.type, params: [...m.params] };
        expect(media(parseMediaType(v))).toEqual(media(parseMediaTypeBefore(v)));
        expect(parseDisposition(v)).toEqual(parseDispositionBefore(v));
      }),
      { numRuns: 5000 },
    );
  });
});
