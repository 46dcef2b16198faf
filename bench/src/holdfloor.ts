/**
 * The least a middleware that asks an ICAP server about each request can cost inside the
 * application's process: hold the body, one REQMOD on a kept-alive socket, wait for the answer,
 * then let the handler read what was held. It builds the ICAP head with one template string per
 * request (the body's length is in it), writes head, body chunks and the last chunk in one
 * `writev`, reads until the answer's head ends and accepts only `ICAP/1.0 204` with no body. No
 * parsing, no profile, no timeouts, no log record, no stream handed back: the handler gets the
 * held chunks as an array. It is not a middleware anyone should run (it trusts the server and
 * the client completely); it is the floor an in-process ICAP middleware is read against, as
 * floorload.js is the floor of a client alone.
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
const NO_204 = new Error('the hold floor accepts only a bare 204');
/** Parts of one form in flight at once: icapkit's default `multipartConcurrency`. */
export const MULTIPART_PARTS_AT_ONCE = 4;

type Waiter = (err: Error | null) => void;

/** One kept-alive connection: at most one exchange at a time. */
class FloorConnection {
  readonly socket: Socket;
  #head: Buffer | undefined;
  #waiter: Waiter | undefined;
  broken = false;

  constructor(port: number, host: string, onIdle: (c: FloorConnection) => void) {
    this.socket = connect(port, host);
    this.socket.setNoDelay(true);
    this.socket.on('data', (chunk: Buffer) => {
      const seen = this.#head === undefined ? chunk : Buffer.concat([this.#head, chunk]);
      const end = seen.indexOf(END);
      if (end < 0) {
        this.#head = seen;
        return;
      }
      this.#head = undefined;
      if (end + 4 !== seen.length || seen.toString('latin1', 0, 12) !== 'ICAP/1.0 204') {
        this.fail(NO_204);
        return;
      }
      const w = this.#waiter;
      this.#waiter = undefined;
      onIdle(this);
      w?.(null);
    });
    this.socket.on('error', (err) => this.fail(err));
    this.socket.on('close', () => this.fail(new Error('ICAP connection closed')));
  }

  fail(err: Error): void {
    this.broken = true;
    this.socket.destroy();
    const w = this.#waiter;
    this.#waiter = undefined;
    w?.(err);
  }

  exchange(chunks: Buffer[], head: Buffer, done: Waiter): void {
    this.#waiter = done;
    const socket = this.socket;
    socket.cork();
    socket.write(head);
    for (const c of chunks) socket.write(c);
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

  constructor(url: string, service: string, opts: { parts?: boolean } = {}) {
    this.parts = opts.parts === true;
    const u = new URL(url);
    this.#host = u.hostname;
    this.#port = Number(u.port);
    this.#authority = `${u.hostname}:${u.port}`;
    this.#uri = `icap://${this.#authority}${service}`;
  }

  /** Sends the held body in one REQMOD; `done(null)` on a 204, `done(err)` otherwise. */
  ask(contentType: string | undefined, chunks: Buffer[], length: number, done: Waiter): void {
    const httpHead =
      `POST /upload HTTP/1.1\r\nHost: app\r\nContent-Type: ${contentType ?? 'application/octet-stream'}\r\n` +
      `Content-Length: ${length}\r\n\r\n`;
    this.#send(httpHead, chunks, length, done);
  }

  /**
   * Each part of the held form in a REQMOD of its own, at most MULTIPART_PARTS_AT_ONCE at once;
   * `done(null)` once every part was answered 204, `done(err)` at the first that was not.
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
      this.#send(httpHead, [part.body], part.body.length, (err) => {
        if (failed) return;
        if (err !== null) {
          failed = true;
          done(err);
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
    const head = Buffer.from(
      `REQMOD ${this.#uri} ICAP/1.0\r\nHost: ${this.#authority}\r\nAllow: 204\r\n` +
        `Encapsulated: req-hdr=0, req-body=${httpHead.length}\r\n\r\n${httpHead}${length.toString(16)}\r\n`,
      'latin1',
    );
    let c = this.#idle.pop();
    while (c?.broken) c = this.#idle.pop();
    (c ?? new FloorConnection(this.#port, this.#host, this.#release)).exchange(chunks, head, done);
  }

  close(): void {
    for (const c of this.#idle.splice(0)) c.socket.destroy();
  }
}

/** Reads a stream's chunks into an array, then asks; `done(err, chunks)`. */
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
    const answered = (err: Error | null) => done(err, chunks);
    if (floor.parts && contentType !== undefined && /^multipart\//i.test(contentType))
      floor.askParts(contentType, chunks, length, answered);
    else floor.ask(contentType, chunks, length, answered);
  });
}
