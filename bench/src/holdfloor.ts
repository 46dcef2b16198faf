/**
 * The least a middleware that asks an ICAP server about each request can cost inside the
 * application's process: hold the body, one REQMOD on a kept-alive socket, wait for the answer,
 * then let the handler read what was held. It builds the ICAP head with one template string per
 * request (the body's length is in it), writes head, body chunks and the last chunk in one
 * `writev`, reads until the answer's head ends and takes a bare `ICAP/1.0 204` (a 200, below). No
 * parsing, no profile, no timeouts, no log record, no stream handed back: the handler gets the
 * held chunks as an array. It is not a middleware anyone should run (it trusts the server and
 * the client completely); it is the floor an in-process ICAP middleware is read against, as
 * floorload.js is the floor of a client alone.
 *
 * Against a service that returns the request (c-icap's echo: `200` with `req-hdr=0, req-body=N`)
 * the floor reads the answer to its end, skips the HTTP head without parsing it, de-chunks the
 * body into views of the socket's buffers and hands those to the handler instead of the held
 * chunks: the least a middleware does to pass a rewritten body on. Any other 200 (a block is an
 * HTTP response) is refused.
 *
 * With `preview` (`BENCH_HOLD_PREVIEW=<bytes>` in app.js) a larger body is sent as icapkit and
 * Squid send it: that many bytes first, the rest only on a 100 Continue; a 204 then ends the
 * exchange. c-icap's echo answers every other previewed request with a 204 after the preview
 * (and each one sent whole with a 200): a floor that does not preview does twice its work.
 *
 * Used by app.js with `--hold-floor` (see run.ts, the `hold` paths).
 *
 * Part by part (`--hold-floor-parts`, floors.ts): a multipart form is scanned as icapkit's
 * per-file mode scans it, each part its own bare REQMOD (the part's bytes, with its Content-Type
 * and Content-Disposition), at most MULTIPART_PARTS_AT_ONCE at once, and the held form is handed
 * over once every part was answered 204. The parts are found with one boundary search over the
 * held form (bodies.ts's formParts, made for the bench's own form): no strict parse, no rebuilt
 * form. The floor of a middleware that scans each file.
 */
import { connect, type Socket } from 'node:net';
import { formParts } from './bodies.js';

const END = Buffer.from('\r\n\r\n');
const LAST_CHUNK = Buffer.from('\r\n0\r\n\r\n', 'latin1');
const REFUSED = new Error('the hold floor accepts only a bare 204 or a 200 with the request');
/**
 * The preview icapkit sends c-icap (its default previewSize, capped by c-icap's OPTIONS
 * `Preview: 1024`): the hold floor previews as much against echo (floors.js, steady.js,
 * perfsplit.js).
 */
export const C_ICAP_PREVIEW = 1024;
/** The environment that makes app.js's hold floor preview against `service` as icapkit does. */
export function holdFloorEnv(service: string): Record<string, string> {
  return service === 'echo' || service === '/echo' ? { BENCH_HOLD_PREVIEW: String(C_ICAP_PREVIEW) } : {};
}
/** Parts of one form in flight at once: icapkit's default `multipartConcurrency`. */
export const MULTIPART_PARTS_AT_ONCE = 4;

/** `body`: the request body of a 200 (echo), as it came; undefined for a 204 (the held one stands). */
type Waiter = (err: Error | null, body?: Buffer[]) => void;

/**
 * Where the reading of an answer is: its ICAP head, then (a 200 only) the encapsulated HTTP head
 * to skip, then the chunked body: a size line, its data, the CRLF after it, the last chunk's CRLF.
 */
enum Read {
  Head,
  Skip,
  Size,
  Data,
  DataEnd,
  Last,
}

/** One kept-alive connection: at most one exchange at a time. */
class FloorConnection {
  readonly socket: Socket;
  #state = Read.Head;
  /** The ICAP head so far, or a size line cut between two reads. */
  #pending: Buffer | undefined;
  /** Bytes left to skip (HTTP head, a chunk's CRLF, the last chunk's CRLF) or of a chunk's data. */
  #left = 0;
  #body: Buffer[] = [];
  #waiter: Waiter | undefined;
  /** After a preview: the rest of the body (its chunk-size line first), sent on a 100 Continue. */
  #rest: Buffer[] | undefined;
  readonly #onIdle: (c: FloorConnection) => void;
  broken = false;

  constructor(port: number, host: string, onIdle: (c: FloorConnection) => void) {
    this.#onIdle = onIdle;
    this.socket = connect(port, host);
    this.socket.setNoDelay(true);
    this.socket.on('data', (chunk: Buffer) => this.#read(chunk));
    this.socket.on('error', (err) => this.fail(err));
    this.socket.on('close', () => this.fail(new Error('ICAP connection closed')));
  }

  /**
   * A bare 204, or a 200 whose encapsulated message is the request with a body (c-icap's echo,
   * a rewrite): its body is de-chunked into views of the socket's buffers, not copied. Anything
   * else (a block is a 200 with an HTTP response, or another status) is refused.
   */
  #read(chunk: Buffer): void {
    let at = 0;
    while (at < chunk.length && !this.broken) {
      switch (this.#state) {
        case Read.Head: {
          const seen = this.#pending === undefined ? chunk : Buffer.concat([this.#pending, chunk]);
          const end = seen.indexOf(END);
          if (end < 0) {
            this.#pending = seen;
            return;
          }
          this.#pending = undefined;
          const status = seen.toString('latin1', 0, 12);
          if (status === 'ICAP/1.0 100' && this.#rest !== undefined) {
            this.#write(this.#rest);
            this.#rest = undefined;
            // The final answer may follow in the same read (a server that echoes as it reads).
            chunk = seen.subarray(end + 4);
            at = 0;
            break;
          }
          if (status === 'ICAP/1.0 204') {
            if (end + 4 !== seen.length) {
              this.fail(REFUSED);
              return;
            }
            this.#done(undefined);
            return;
          }
          const encapsulated = /\r\nEncapsulated: *req-hdr=0, *req-body=(\d+)\r\n/i.exec(
            seen.toString('latin1', 0, end + 2),
          );
          if (status !== 'ICAP/1.0 200' || encapsulated === null) {
            this.fail(REFUSED);
            return;
          }
          this.#left = Number(encapsulated[1]);
          this.#state = Read.Skip;
          chunk = seen;
          at = end + 4;
          break;
        }
        case Read.Skip:
        case Read.DataEnd:
        case Read.Last: {
          const n = Math.min(this.#left, chunk.length - at);
          at += n;
          this.#left -= n;
          if (this.#left > 0) return;
          if (this.#state === Read.Last) {
            if (at !== chunk.length) {
              this.fail(REFUSED);
              return;
            }
            this.#done(this.#body);
            return;
          }
          this.#state = Read.Size;
          break;
        }
        case Read.Size: {
          const lf = chunk.indexOf(10, at);
          if (lf < 0) {
            this.#pending =
              this.#pending === undefined
                ? chunk.subarray(at)
                : Buffer.concat([this.#pending, chunk.subarray(at)]);
            return;
          }
          const line =
            (this.#pending === undefined ? '' : this.#pending.toString('latin1')) +
            chunk.toString('latin1', at, lf);
          this.#pending = undefined;
          at = lf + 1;
          const size = Number.parseInt(line, 16);
          if (!Number.isSafeInteger(size) || size < 0) {
            this.fail(REFUSED);
            return;
          }
          this.#left = size === 0 ? 2 : size;
          this.#state = size === 0 ? Read.Last : Read.Data;
          break;
        }
        case Read.Data: {
          const n = Math.min(this.#left, chunk.length - at);
          this.#body.push(chunk.subarray(at, at + n));
          at += n;
          this.#left -= n;
          if (this.#left > 0) return;
          this.#left = 2;
          this.#state = Read.DataEnd;
          break;
        }
      }
    }
  }

  #done(body: Buffer[] | undefined): void {
    this.#state = Read.Head;
    this.#rest = undefined;
    this.#body = [];
    const w = this.#waiter;
    this.#waiter = undefined;
    this.#onIdle(this);
    w?.(null, body);
  }

  fail(err: Error): void {
    this.broken = true;
    this.socket.destroy();
    const w = this.#waiter;
    this.#waiter = undefined;
    w?.(err);
  }

  /** `rest`: a preview was sent; on a 100 Continue these go (a 204 ends the exchange without). */
  exchange(head: Buffer[], done: Waiter, rest?: Buffer[]): void {
    this.#waiter = done;
    this.#rest = rest;
    this.#write(head);
  }

  #write(buffers: Buffer[]): void {
    const socket = this.socket;
    socket.cork();
    for (const b of buffers) socket.write(b);
    socket.write(LAST_CHUNK);
    socket.uncork();
  }
}

/** A pool of floor connections to one ICAP service. */
export class HoldFloor {
  readonly #port: number;
  readonly #host: string;
  readonly #authority: string;
  readonly #uri: string;
  readonly #idle: FloorConnection[] = [];
  readonly #release = (c: FloorConnection) => {
    if (!c.broken) this.#idle.push(c);
  };

  /** A multipart form is asked about part by part (see the file's comment). */
  readonly parts: boolean;
  /** Bytes of a larger body sent first as a preview (none when undefined). */
  readonly #preview: number | undefined;

  constructor(url: string, service: string, opts: { parts?: boolean; preview?: number } = {}) {
    this.parts = opts.parts === true;
    this.#preview = opts.preview;
    const u = new URL(url);
    this.#host = u.hostname;
    this.#port = Number(u.port);
    this.#authority = `${u.hostname}:${u.port}`;
    this.#uri = `icap://${this.#authority}${service}`;
  }

  /**
   * Sends the held body in one REQMOD: `done(null)` on a 204, `done(null, body)` on a 200 that
   * returns the request (the body to hand over instead), `done(err)` otherwise.
   */
  ask(contentType: string | undefined, chunks: Buffer[], length: number, done: Waiter): void {
    const httpHead =
      `POST /upload HTTP/1.1\r\nHost: app\r\nContent-Type: ${contentType ?? 'application/octet-stream'}\r\n` +
      `Content-Length: ${length}\r\n\r\n`;
    this.#send(httpHead, chunks, length, done);
  }

  /**
   * Each part of the held form in a REQMOD of its own, at most MULTIPART_PARTS_AT_ONCE at once;
   * `done(null)` once every part was answered 204, `done(err)` at the first that was not (a 200
   * too: putting a form together again from rewritten parts is more than this floor does).
   */
  askParts(contentType: string, chunks: Buffer[], length: number, done: Waiter): void {
    let parts: ReturnType<typeof formParts>;
    try {
      parts = formParts(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, length), contentType);
    } catch (err) {
      done(err as Error);
      return;
    }
    let next = 0;
    let pending = parts.length;
    let failed = false;
    const sendNext = (): void => {
      const part = parts[next++];
      if (part === undefined) return;
      const httpHead = `POST /upload HTTP/1.1\r\n${part.headers.map(([k, v]) => `${k}: ${v}\r\n`).join('')}\r\n`;
      this.#send(httpHead, [part.body], part.body.length, (err, body) => {
        if (failed) return;
        if (err !== null || body !== undefined) {
          failed = true;
          done(err ?? REFUSED);
          return;
        }
        if (--pending === 0) done(null);
        else sendNext();
      });
    };
    if (pending === 0) done(null);
    for (let i = 0; i < MULTIPART_PARTS_AT_ONCE; i++) sendNext();
  }

  #send(httpHead: string, chunks: Buffer[], length: number, done: Waiter): void {
    const preview = this.#preview !== undefined && length > this.#preview ? this.#preview : undefined;
    const first = preview ?? length;
    const head = Buffer.from(
      `REQMOD ${this.#uri} ICAP/1.0\r\nHost: ${this.#authority}\r\nAllow: 204\r\n` +
        (preview === undefined ? '' : `Preview: ${preview}\r\n`) +
        `Encapsulated: req-hdr=0, req-body=${httpHead.length}\r\n\r\n${httpHead}${first.toString(16)}\r\n`,
      'latin1',
    );
    let c = this.#idle.pop();
    while (c?.broken) c = this.#idle.pop();
    c ??= new FloorConnection(this.#port, this.#host, this.#release);
    if (preview === undefined) {
      c.exchange([head, ...chunks], done);
      return;
    }
    // The first `preview` bytes now, the rest (its own chunk) on a 100 Continue.
    const sent: Buffer[] = [head];
    const rest: Buffer[] = [Buffer.from(`${(length - preview).toString(16)}\r\n`, 'latin1')];
    let at = 0;
    for (const chunk of chunks) {
      const cut = Math.min(Math.max(preview - at, 0), chunk.length);
      if (cut > 0) sent.push(chunk.subarray(0, cut));
      if (cut < chunk.length) rest.push(chunk.subarray(cut));
      at += chunk.length;
    }
    c.exchange(sent, done, rest);
  }

  close(): void {
    for (const c of this.#idle.splice(0)) c.socket.destroy();
  }
}

/**
 * Reads a stream's chunks into an array, then asks; `done(err, chunks)`: the held chunks after a
 * 204, the returned body after a 200.
 */
export function holdAndAsk(
  floor: HoldFloor,
  stream: NodeJS.ReadableStream,
  contentType: string | undefined,
  done: (err: Error | null, chunks?: Buffer[]) => void,
): void {
  const chunks: Buffer[] = [];
  let length = 0;
  stream.on('data', (c: Buffer) => {
    chunks.push(c);
    length += c.length;
  });
  stream.once('error', (err: Error) => done(err));
  stream.once('end', () => {
    const answered = (err: Error | null, body?: Buffer[]) => done(err, body ?? chunks);
    if (floor.parts && contentType !== undefined && /^multipart\//i.test(contentType))
      floor.askParts(contentType, chunks, length, answered);
    else floor.ask(contentType, chunks, length, answered);
  });
}
