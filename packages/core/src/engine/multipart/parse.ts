import { PassThrough } from 'node:stream';
import { takeNow } from '../../client/source.js';
import { Cursor } from '../body/cursor.js';
import { BodyStore } from '../body.js';
import type { ResolvedMultipartLimits } from '../profile.js';
import { MultipartParser, multipartError, type ParseEvent, type PartHead } from './parser.js';
import { boundaryFrom, type MediaType, parseMediaType, SyntaxProblem } from './syntax.js';

export { type AnomalyStatus, multipartError } from './parser.js';

/**
 * multipart/form-data, part by part, and the form the application gets.
 *
 * The raw body is parsed while it arrives by icapkit's own strict parser (multipart/parser.ts:
 * anything ambiguous or unparsable is a 400, a limit a 413, never a silent skip) and each part
 * is held in a store of its own (memory, then a temp file), so each can be scanned as a separate
 * ICAP request named after its file.
 *
 * The application never gets the bytes the client sent: it gets a form serialised here from
 * this parse ({@link canonicalForm}): only the parts parsed and scanned (or their rewritten
 * content), each with a regenerated `Content-Disposition: form-data; name="..."[; filename="..."]`,
 * its Content-Type as sent, no transfer encoding and no other part header, under a fresh random
 * boundary (so the request's Content-Type changes too) and with a correct length. Whatever
 * parser the application uses (multer, @fastify/multipart, formidable, a raw-body reader)
 * reads this well-formed form, so it can extract nothing the scanner did not see.
 *
 * busboy is no longer used here: a second parse as a cross-check would cost CPU for no gain,
 * since this parser refuses everything busboy could read differently (see multipart/parser.ts).
 */

export interface Part {
  index: number;
  kind: 'file' | 'field';
  /** The form field name (UTF-8 decoded, for logs). */
  field: string;
  /** The file name (UTF-8 decoded, for logs); undefined for a field. */
  fileName: string | undefined;
  /** Media type of the part (its Content-Type, or text/plain / application/octet-stream). */
  mimeType: string;
  /** The part's content, as received (fields are not decoded, whatever their charset). */
  store: BodyStore;
  /** The parsed part head (raw names and Content-Type for the canonical form). */
  head: PartHead;
  /** Resolves when the part's content is complete. */
  done: Promise<void>;
}

export interface MultipartOptions {
  limits: ResolvedMultipartLimits;
  storage: { memoryThreshold: number; spoolDir: string };
  /**
   * The source answers every read at once (a body complete in memory): no read can stall, so
   * none is raced against the signal (no listener); the signal is checked before each read.
   */
  sourceInMemory?: boolean;
}

/** The media type of a request's Content-Type (strict), or an ICAP_ERR_MULTIPART 400. */
export function multipartMediaType(contentType: string): MediaType {
  const media = parseMediaType(contentType);
  if (typeof media === 'string') {
    if (/"boundary" more than once/.test(media))
      throw multipartError(400, 'multipart Content-Type with more than one boundary parameter');
    throw multipartError(400, `multipart request: ${media}`);
  }
  return media;
}

/** The boundary of a multipart/form-data Content-Type, or an ICAP_ERR_MULTIPART error (400). */
export function boundaryOf(contentType: string): string {
  const media = multipartMediaType(contentType);
  try {
    return boundaryFrom(media);
  } catch (err) {
    if (err instanceof SyntaxProblem) throw multipartError(400, err.message);
    throw err;
  }
}

/** The Content-Type's media type is multipart/form-data (loosely: it decides which path a body takes). */
export function isMultipartFormData(contentType: string | undefined): boolean {
  return contentType !== undefined && /^\s*multipart\/form-data\s*(?:;|$)/i.test(contentType);
}

/** Any multipart/* media type (koa-body and others parse them all as forms). */
export function isMultipart(contentType: string | undefined): boolean {
  return contentType !== undefined && /^\s*multipart\//i.test(contentType);
}

/** A name sent as bytes (a latin1 string), decoded as UTF-8; ASCII is itself (no Buffer). */
function decodeName(latin1: string): string {
  if (/^[\x00-\x7f]*$/.test(latin1)) return latin1;
  return Buffer.from(latin1, 'latin1').toString('utf8');
}

/**
 * Reads the body from `source` and hands each part to `onPart` when it starts. Resolves with
 * all parts once the body is parsed; rejects with ICAP_ERR_MULTIPART (status 400 or 413) on
 * an anomaly, or with the source's error. On rejection every part store is disposed.
 */
export async function parseMultipart(
  contentType: string,
  source: AsyncIterator<Buffer>,
  options: MultipartOptions,
  onPart: (part: Part) => void,
  signal?: AbortSignal,
): Promise<Part[]> {
  const boundary = boundaryOf(contentType);
  const parser = new MultipartParser(boundary, options.limits);
  const parts: Part[] = [];
  // What every part's store is made with (the store only reads it): one object per form.
  const storeOptions = { limit: Number.POSITIVE_INFINITY, retainAll: true, ...options.storage };
  /** The part being read, and the pipe feeding its store once the store writes to a temp file. */
  let current: Part | undefined;
  let pipe: PassThrough | undefined;
  /**
   * Hands the parser's events to the parts, from `from` on. Synchronous unless a spooling store
   * must catch up: then a promise of the rest.
   */
  const handle = (events: ParseEvent[], from = 0): Promise<void> | undefined => {
    for (let i = from; i < events.length; i++) {
      const e = events[i]!;
      if (e.type === 'part') {
        const store = new BodyStore(storeOptions);
        const h = e.head;
        const part: Part = {
          index: h.index,
          kind: h.kind,
          field: decodeName(h.nameBytes),
          fileName: h.fileNameBytes === undefined ? undefined : decodeName(h.fileNameBytes),
          mimeType: h.media?.type ?? (h.kind === 'file' ? 'application/octet-stream' : 'text/plain'),
          store,
          head: h,
          done: store.whenEnded(),
        };
        parts.push(part);
        current = part;
        pipe = undefined;
        onPart(part);
      } else if (e.type === 'data') {
        if (current === undefined) continue;
        const store = current.store;
        // A store that failed (its temp file) takes nothing more: the parse ends with its error.
        if (store.error !== undefined) throw store.error;
        if (pipe === undefined && !store.spooled) {
          // In memory: the store takes the bytes as they are (no stream in between).
          store.push(e.data);
          continue;
        }
        if (pipe === undefined) {
          // The store moved to a temp file: from now on it is fed through a pipe it pauses
          // while the file is behind (attach()), so writes wait and memory stays bounded
          // however fast the body is read.
          pipe = new PassThrough();
          store.attach(pipe);
        }
        if (!pipe.write(e.data)) {
          // The store takes more once its temp file caught up; a store that failed (spool
          // error) never will: its end settles the wait, and its error ends the parse.
          return Promise.race([drained(pipe), current.done]).then(() => {
            if (store.error !== undefined) throw store.error;
            return handle(events, i + 1);
          });
        }
      } else if (e.type === 'end-part') {
        if (pipe !== undefined) pipe.end();
        else current?.store.end();
        current = undefined;
        pipe = undefined;
      }
    }
    return undefined;
  };
  const reader = new AbortableReader(source, signal, options.sourceInMemory === true);
  try {
    for (;;) {
      // A chunk the source holds now is taken without a promise (the same chunk next() gives).
      const r = reader.now() ?? (await reader.next());
      if (r.done) break;
      const wait = handle(parser.write(r.value));
      if (wait !== undefined) await wait;
    }
    const wait = handle(parser.end());
    if (wait !== undefined) await wait;
    await Promise.all(parts.map((p) => p.done));
    const failed = parts.find((p) => p.store.error !== undefined);
    if (failed !== undefined) throw failed.store.error;
    return parts;
  } catch (err) {
    pipe?.destroy();
    for (const p of parts) p.store.dispose();
    void source.return?.();
    throw err;
  } finally {
    reader.close();
  }
}

/**
 * Whole mode: runs the same strict parser over the body without keeping any part, so a form
 * that parsers could read differently is refused before the raw body is passed on.
 */
export async function validateMultipart(
  contentType: string,
  source: AsyncIterator<Buffer>,
  limits: ResolvedMultipartLimits,
): Promise<void> {
  const parser = new MultipartParser(boundaryOf(contentType), limits, { asSent: true });
  try {
    for (;;) {
      const r = await source.next();
      if (r.done) break;
      parser.write(r.value);
    }
    parser.end();
  } finally {
    void source.return?.();
  }
}

/**
 * The source's chunks, each read rejecting with the signal's reason once it is aborted (a
 * stalled body does not hold the parse): one abort listener for the whole parse, not one per
 * chunk. A body store's cursor is failed with the reason itself (its pending read rejects), so
 * its reads need no promise around them.
 */
class AbortableReader {
  readonly #source: AsyncIterator<Buffer>;
  readonly #signal: AbortSignal | undefined;
  /** Reads never wait: no listener, the signal is checked before each. */
  readonly #inMemory: boolean;
  /** The source, when it is a body store's cursor. */
  readonly #cursor: Cursor | undefined;
  /** Rejects the read in progress. */
  #reject: ((err: unknown) => void) | undefined = undefined;

  constructor(source: AsyncIterator<Buffer>, signal: AbortSignal | undefined, inMemory: boolean) {
    this.#source = source;
    this.#signal = signal;
    this.#inMemory = inMemory;
    this.#cursor = source instanceof Cursor ? source : undefined;
    if (!inMemory) signal?.addEventListener('abort', this.#onAbort, { once: true });
  }

  readonly #onAbort = (): void => {
    if (this.#cursor !== undefined) {
      this.#cursor.fail(this.#signal!.reason);
      return;
    }
    const reject = this.#reject;
    this.#reject = undefined;
    reject?.(this.#signal!.reason);
  };

  /**
   * The next result when the source has it now (see NEXT_NOW: counts as that next()), unless
   * the signal is aborted; undefined: call next().
   */
  now(): IteratorResult<Buffer> | undefined {
    if (this.#signal?.aborted === true) return undefined;
    return takeNow(this.#source) as IteratorResult<Buffer> | undefined;
  }

  next(): Promise<IteratorResult<Buffer>> {
    const signal = this.#signal;
    if (signal === undefined) return this.#source.next();
    if (signal.aborted) return Promise.reject(signal.reason);
    if (this.#inMemory || this.#cursor !== undefined) return this.#source.next();
    return new Promise((resolve, reject) => {
      this.#reject = reject;
      this.#source.next().then(resolve, reject);
    });
  }

  close(): void {
    this.#reject = undefined;
    this.#signal?.removeEventListener('abort', this.#onAbort);
  }
}

/** Waits until a PassThrough takes more, or is closed. */
function drained(pipe: PassThrough): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      pipe.removeListener('drain', done);
      pipe.removeListener('close', done);
      resolve();
    };
    pipe.on('drain', done);
    pipe.on('close', done);
  });
}
