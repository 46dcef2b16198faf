import { createHash } from 'node:crypto';
import { createServer as createNetServer, type Server, type Socket } from 'node:net';
import { createServer as createTlsServer } from 'node:tls';
import {
  CRLF,
  chunkHeader,
  type EncapsulatedHttpRequestHead,
  type EncapsulatedHttpResponseHead,
  encodeHttpRequestHead,
  encodeHttpResponseHead,
  type Headers,
  headBytes,
  IcapParser,
  type IcapRequestHead,
  LAST_CHUNK,
} from '@icapkit/core';
import type { Fault } from './faults.js';
import { EICAR_NAME, eicar, type Signature, StreamScanner } from './signatures.js';
import { blockAnswer, cleanHeaders, lastlineCleanHeaders, type VendorStyle } from './vendors.js';

/**
 * An RFC 3507 ICAP server for tests, demos and users' own test suites. Services:
 *
 * - `/avscan`: detects EICAR and the given signatures (streaming, constant memory); clean
 *   requests get 204 (when allowed) or a 200 echo; infected ones a vendor-worded block;
 * - `/echo`: always a 200 with the request (plus `Via`), streamed back while it arrives;
 * - `/modify`: applies `rewrite`; a 200 with the modified request when the body changed.
 *
 * OPTIONS, preview with 100/204, `Allow: 204`, keep-alive, ICAPS, and per-request faults
 * scripted by the test. Every request is recorded (`requests`) so tests can check the bytes
 * the client put on the wire.
 */

export interface IcapServerOptions {
  host?: string | undefined;
  /** Default 0: a free port. */
  port?: number | undefined;
  /** ICAPS: TLS from the first byte. */
  tls?: { cert: string | Buffer; key: string | Buffer } | undefined;
  /** Default a fixed alphanumeric tag. */
  istag?: string | undefined;
  /** OPTIONS `Preview`; null: the server takes no preview (no header). Default 1024. */
  preview?: number | null | undefined;
  /** Answer 204 when the client allows it. Default true. */
  allow204?: boolean | undefined;
  /** OPTIONS `Options-TTL` in seconds; null leaves it out. Default 3600. */
  optionsTtl?: number | null | undefined;
  /** OPTIONS `Max-Connections` (advertised only). */
  maxConnections?: number | undefined;
  transfer?: { preview?: string[]; ignore?: string[]; complete?: string[] } | undefined;
  /** How verdicts are worded. Default 'c-icap'. */
  vendor?: VendorStyle | undefined;
  /** Detected besides EICAR. */
  signatures?: Signature[] | undefined;
  /** Used by `/modify`. */
  rewrite?:
    | { from: string | Buffer; to: string | Buffer }
    | ((body: Buffer, req: RecordedRequest) => Buffer | null)
    | undefined;
  /** ms an idle connection is kept. Default 30 000. */
  keepAliveTimeout?: number | undefined;
  /** Close a connection after this many requests (the last answer says `Connection: close`). */
  maxKeepAliveRequests?: number | undefined;
  /** Per-request misbehaviour, decided when the ICAP head arrives. */
  script?: ((req: RecordedRequest) => Fault | undefined) | undefined;
  /** Keep received bodies and raw bytes in `requests`. Default true; false keeps memory flat. */
  recordBodies?: boolean | undefined;
  /** nsx-defender: answer a clean REQMOD with a 200 adding X-Lastline-* to the request, instead of 204. */
  nsxLastlineHeadersOnClean?: boolean | undefined;
  /** ISTag churn: every answer (OPTIONS included) carries a new ISTag (`<istag>-<n>`). */
  istagChurn?: boolean | undefined;
  /** OPTIONS answers leave out the headers RFC 3507 requires (`ISTag`, `Methods`). */
  incompleteOptions?: boolean | undefined;
  /**
   * Like servers that need the body's length (Kaspersky style): a REQMOD whose encapsulated
   * request has a body but no `Content-Length` is answered `ICAP/1.0 400` at once (its body is
   * read and discarded).
   */
  lengthRequired?: boolean | undefined;
}

export interface RecordedRequest {
  method: string;
  uri: string;
  /** Path of the URI, e.g. '/avscan'. */
  service: string;
  query: string;
  headers: Headers;
  httpRequest: EncapsulatedHttpRequestHead | null;
  httpResponse: EncapsulatedHttpResponseHead | null;
  /** ICAP head plus encapsulated header sections, as received. */
  rawHead: Buffer;
  /** Every byte received for this request (with recordBodies). */
  raw: Buffer | undefined;
  preview: number | undefined;
  previewBytes: number;
  ieof: boolean;
  /** The server sent 100 Continue. */
  continued: boolean;
  allow204: boolean;
  /** Body bytes, preview and rest (with recordBodies). */
  body: Buffer | undefined;
  bodyLength: number;
  connectionId: number;
  complete: boolean;
  verdict: 'clean' | 'infected' | 'modified' | 'fault' | undefined;
  /** The status the server answered with. */
  status: number | undefined;
}

export interface IcapTestServer {
  host: string;
  port: number;
  tls: boolean;
  /** `icap://host:port/service` (icaps:// with TLS). Without a service: the server URL. */
  url(service?: string): string;
  requests: RecordedRequest[];
  connections: { accepted: number; open: number };
  setScript(fn: ((req: RecordedRequest) => Fault | undefined) | undefined): void;
  /** Forgets recorded requests. */
  reset(): void;
  /**
   * Destroys every open connection (one stalled on purpose, say), and resolves once they are
   * closed; the server keeps listening.
   */
  closeConnections(): Promise<void>;
  /** Stops listening and destroys every connection and timer. */
  close(): Promise<void>;
  /**
   * Listens again on the same port (after `close()` or a `crash` fault), once the crash (if
   * any) is complete.
   */
  restart(): Promise<void>;
}

const DEFAULT_ISTAG = 'ICAPKIT-TEST-0001';
const MAX_HEAD_RECORD = 64 * 1024;

export async function startIcapServer(options: IcapServerOptions = {}): Promise<IcapTestServer> {
  const impl = new TestServer(options);
  await impl.listen();
  return impl.api();
}

class TestServer {
  readonly options: IcapServerOptions;
  readonly requests: RecordedRequest[] = [];
  readonly connections = { accepted: 0, open: 0 };
  readonly sockets = new Set<Socket>();
  readonly timers = new Set<NodeJS.Timeout>();
  readonly signatures: Signature[];
  script: ((req: RecordedRequest) => Fault | undefined) | undefined;
  server: Server;
  nextConnectionId = 1;
  port = 0;
  /** A `crash` fault's listener closing (restart() waits for it). */
  crashing: Promise<void> | undefined;

  constructor(options: IcapServerOptions) {
    this.options = options;
    this.script = options.script;
    this.signatures = [{ name: EICAR_NAME, pattern: eicar() }, ...(options.signatures ?? [])];
    const onSocket = (socket: Socket) => this.accept(socket);
    this.server = options.tls
      ? createTlsServer({ cert: options.tls.cert, key: options.tls.key }, onSocket)
      : createNetServer(onSocket);
    this.server.on('error', () => {});
    if (options.tls) this.server.on('tlsClientError', () => {});
  }

  listen(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.options.port ?? 0, this.options.host ?? '127.0.0.1', () => {
        this.server.removeListener('error', reject);
        const addr = this.server.address();
        this.port = typeof addr === 'object' && addr !== null ? addr.port : 0;
        resolve();
      });
    });
  }

  api(): IcapTestServer {
    const host = this.options.host ?? '127.0.0.1';
    const tls = this.options.tls !== undefined;
    return {
      host,
      port: this.port,
      tls,
      url: (service?: string) =>
        `${tls ? 'icaps' : 'icap'}://${host.includes(':') ? `[${host}]` : host}:${this.port}${service ?? ''}`,
      requests: this.requests,
      connections: this.connections,
      setScript: (fn) => {
        this.script = fn;
      },
      reset: () => {
        this.requests.length = 0;
      },
      closeConnections: () => this.closeConnections(),
      close: () => this.close(),
      restart: () => this.restart(),
    };
  }

  async closeConnections(): Promise<void> {
    const closing = [...this.sockets].map(
      (s) =>
        new Promise<void>((resolve) =>
          s.destroyed && s.closed ? resolve() : s.once('close', () => resolve()),
        ),
    );
    for (const s of this.sockets) s.destroy();
    await Promise.all(closing);
  }

  accept(socket: Socket): void {
    this.connections.accepted++;
    this.connections.open++;
    this.sockets.add(socket);
    socket.on('close', () => {
      this.connections.open--;
      this.sockets.delete(socket);
    });
    socket.on('error', () => {});
    socket.setNoDelay(true);
    new Session(this, socket, this.nextConnectionId++);
  }

  setTimer(fn: () => void, ms: number): NodeJS.Timeout {
    const t = setTimeout(() => {
      this.timers.delete(t);
      fn();
    }, ms);
    this.timers.add(t);
    return t;
  }

  /** A `crash` fault: every connection reset, and (unless `keepListening`) the listener closed. */
  crash(keepListening: boolean): Promise<void> {
    if (!keepListening) this.crashing = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const s of this.sockets) s.resetAndDestroy();
    return this.crashing ?? Promise.resolve();
  }

  async restart(): Promise<void> {
    await this.crashing;
    this.crashing = undefined;
    if (this.server.listening) return;
    const port = this.port;
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, this.options.host ?? '127.0.0.1', () => {
        this.server.removeListener('error', reject);
        resolve();
      });
    });
  }

  async close(): Promise<void> {
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    await this.crashing;
    if (!this.server.listening) {
      for (const s of this.sockets) s.destroy();
      return;
    }
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const s of this.sockets) s.destroy();
    await closed;
  }

  #istagSerial = 0;

  get istag(): string {
    const base = this.options.istag ?? DEFAULT_ISTAG;
    return this.options.istagChurn ? `${base}-${++this.#istagSerial}` : base;
  }
}

/** One client connection: ICAP requests one after another (keep-alive). */
class Session {
  readonly #srv: TestServer;
  readonly #socket: Socket;
  readonly #id: number;
  readonly #parser: IcapParser<IcapRequestHead>;
  #served = 0;
  #rec: RecordedRequest | null = null;
  #head: IcapRequestHead | null = null;
  #fault: Fault | undefined;
  #scanner: StreamScanner | null = null;
  #chunks: Buffer[] = [];
  #keepBody = true;
  #raw: Buffer[] = [];
  #rawBytes = 0;
  /** Responding with a streamed echo: body chunks are sent back as they arrive. */
  #streaming = false;
  /** Everything further of this request is read and dropped (an answer went out early, or a hang). */
  #discard = false;
  #dead = false;
  /** An endless chunk is being written: this connection never serves another request. */
  #pumping = false;
  /** Body bytes seen past the preview while an early-verdict fault waits for `after` of them. */
  #earlyBytes = 0;
  /** The next answer goes out without this many trailing bytes (early-verdict `truncate`). */
  #cutNextWrite = 0;
  /** A trickled answer: bytes still to send, a few at a time. */
  #drip: { queue: Buffer[]; intervalMs: number; bytes: number } | null = null;

  constructor(srv: TestServer, socket: Socket, id: number) {
    this.#srv = srv;
    this.#socket = socket;
    this.#id = id;
    this.#parser = new IcapParser<IcapRequestHead>('request', {
      onHead: (h) => this.#onHead(h),
      onBody: (d) => this.#onBody(d),
      onEnd: (ieof) => this.#onEnd(ieof),
    });
    socket.setTimeout(srv.options.keepAliveTimeout ?? 30_000, () => socket.destroy());
    socket.on('data', (data: Buffer) => {
      if (this.#dead) return;
      if (this.#srv.options.recordBodies !== false || this.#rawBytes < MAX_HEAD_RECORD) {
        this.#raw.push(data);
        this.#rawBytes += data.length;
      }
      try {
        this.#parser.execute(data);
      } catch (err) {
        this.#badRequest(err);
      }
    });
  }

  // ------------------------------------------------------------------ request events

  #onHead(head: IcapRequestHead): void {
    const url = parseUri(head.uri);
    const rawAll = Buffer.concat(this.#raw);
    const rec: RecordedRequest = {
      method: head.method,
      uri: head.uri,
      service: url.path,
      query: url.query,
      headers: head.headers,
      // Copies: a slice would keep the whole read (up to 64 KiB of body) alive with the record.
      httpRequest:
        head.httpRequest === null ? null : { ...head.httpRequest, raw: copyOf(head.httpRequest.raw) },
      httpResponse:
        head.httpResponse === null ? null : { ...head.httpResponse, raw: copyOf(head.httpResponse.raw) },
      rawHead: copyOf(rawAll.subarray(0, headLength(rawAll, head))),
      raw: undefined,
      preview: optionalInt(head.headers.get('preview')),
      previewBytes: 0,
      ieof: false,
      continued: false,
      allow204: /\b204\b/.test(head.headers.get('allow') ?? ''),
      body: undefined,
      bodyLength: 0,
      connectionId: this.#id,
      complete: false,
      verdict: undefined,
      status: undefined,
    };
    this.#rec = rec;
    this.#head = head;
    this.#srv.requests.push(rec);
    this.#scanner = new StreamScanner(this.#srv.signatures);
    this.#chunks = [];
    // Keep the body only when an answer may need it (an echo, a rewrite, a 200 for lack of
    // Allow: 204) or the test wants it recorded: a large upload answered 204 costs no memory.
    const may204 =
      rec.allow204 && this.#srv.options.allow204 !== false && !/(?:^|&)allow204=off(?:&|$)/.test(rec.query);
    this.#keepBody =
      this.#srv.options.recordBodies !== false ||
      rec.service !== '/avscan' ||
      !may204 ||
      this.#srv.options.vendor === 'nsx-defender';
    this.#streaming = false;
    this.#discard = false;
    const fault = this.#srv.script?.(rec);
    this.#fault = fault;
    if (fault !== undefined) rec.verdict = 'fault';
    if (fault?.kind === 'close' && fault.when === 'on-head') {
      this.#kill('close');
      return;
    }
    if (fault?.kind === 'reset' && fault.when === 'on-head') {
      this.#kill('reset');
      return;
    }
    if (fault?.kind === 'hang') {
      this.#discard = true;
      return;
    }
    if (fault?.kind === 'give-up') this.#armGiveUp(fault);
    if (fault?.kind === 'early-response') {
      this.#discard = true;
      this.#sendBlock(rec, EICAR_NAME, '');
      return;
    }
    this.#earlyBytes = 0;
    if (fault?.kind === 'early-verdict' && fault.continue === false) {
      this.#earlyVerdict(rec, head, fault);
      return;
    }
    if (
      this.#srv.options.lengthRequired === true &&
      head.method === 'REQMOD' &&
      head.body === 'req-body' &&
      head.httpRequest?.headers.get('content-length') === undefined
    ) {
      // Answered now, the body discarded as it comes (then the next request), as for early-response.
      this.#discard = true;
      this.#fault = { kind: 'early-response' };
      rec.status = 400;
      this.#write(
        headBytes('ICAP/1.0 400 Bad Request', [
          ['ISTag', `"${this.#srv.istag}"`],
          ['X-Error', 'Content-Length of the encapsulated request is required'],
          ['Encapsulated', 'null-body=0'],
        ]),
      );
      return;
    }
    if (
      rec.service === '/echo' &&
      head.method !== 'OPTIONS' &&
      head.body !== null &&
      rec.preview === undefined &&
      fault === undefined
    ) {
      this.#startEcho();
    }
  }

  /** The `give-up` fault's limits, until the request is complete (see Fault). */
  #armGiveUp(fault: { idleMs?: number | undefined; totalMs?: number | undefined }): void {
    const rec = this.#rec!;
    const giveUp = () => {
      if (!rec.complete && !this.#dead && this.#rec === rec) this.#kill('close');
    };
    if (fault.totalMs !== undefined) this.#srv.setTimer(giveUp, fault.totalMs);
    if (fault.idleMs === undefined) return;
    const idleMs = fault.idleMs;
    const idle = this.#srv.setTimer(giveUp, idleMs);
    this.#idle = idle;
  }

  /** The `give-up` fault's idle timer (refreshed by every byte of the request). */
  #idle: NodeJS.Timeout | undefined;

  #onBody(data: Buffer): void {
    this.#idle?.refresh();
    const rec = this.#rec!;
    rec.bodyLength += data.length;
    if (!rec.continued) rec.previewBytes += data.length;
    if (this.#discard) return;
    this.#scanner!.feed(data);
    if (this.#keepBody) this.#chunks.push(data);
    // Mid-body: past the preview (once the rest of the body is flowing), or at once without one.
    const midBody = rec.preview === undefined || rec.continued;
    if (midBody && this.#fault?.kind === 'close' && this.#fault.when === 'mid-body') {
      this.#kill('close');
      return;
    }
    if (midBody && this.#fault?.kind === 'reset' && this.#fault.when === 'mid-body') {
      this.#kill('reset');
      return;
    }
    if (this.#streaming) {
      this.#chunks = [];
      this.#writeChunk(data);
    }
    const f = this.#fault;
    if (midBody && f?.kind === 'early-verdict' && !this.#discard) {
      this.#earlyBytes += data.length;
      if (this.#earlyBytes >= (f.after ?? 1)) this.#earlyVerdict(rec, this.#head!, f);
    }
  }

  #onEnd(ieof: boolean): void {
    this.#idle = undefined;
    const rec = this.#rec!;
    const head = this.#head!;
    const fault = this.#fault;
    const previewEnd = rec.preview !== undefined && !rec.continued && !ieof && head.body !== null;
    if (previewEnd && !this.#discard) {
      if (fault?.kind === 'close' && fault.when === 'after-preview') {
        this.#kill('close');
        return;
      }
      if (fault?.kind === 'reset' && fault.when === 'after-preview') {
        this.#kill('reset');
        return;
      }
      const found = this.#scanner!.found;
      if (
        found !== undefined &&
        fault?.kind !== 'early-verdict' &&
        (rec.service === '/avscan' || rec.service === '/modify')
      ) {
        // A verdict inside the preview: no need to see the rest.
        this.#finish(() => this.#sendBlock(rec, found, fileNameOf(head)));
        return;
      }
      if (
        fault?.kind === 'preview-204' ||
        (fault === undefined && this.#srv.options.allow204 !== false && this.#previewAnswer204(rec))
      ) {
        this.#finish(() => this.#send204(rec));
        return;
      }
      this.#write(Buffer.from('ICAP/1.0 100 Continue\r\n\r\n'));
      rec.continued = true;
      if (fault?.kind === 'stall-after-continue') {
        this.#discard = true;
        this.#socket.pause();
        return;
      }
      if (rec.service === '/echo' && fault === undefined) this.#startEcho();
      this.#parser.continueBody();
      if (fault?.kind === 'early-verdict' && fault.after === 0) this.#earlyVerdict(rec, head, fault);
      return;
    }
    rec.ieof = ieof;
    rec.complete = true;
    if (this.#srv.options.recordBodies !== false) {
      rec.raw = Buffer.concat(this.#raw);
      rec.body = this.#bodyOf(rec);
    }
    this.#raw = [];
    this.#rawBytes = 0;
    if (this.#discard) {
      if (fault?.kind === 'early-response' || fault?.kind === 'early-verdict') this.#next();
      return;
    }
    if ((fault?.kind === 'close' || fault?.kind === 'reset') && fault.when === 'after-body') {
      this.#kill(fault.kind);
      return;
    }
    if (fault?.kind === 'crash') {
      this.#dead = true;
      this.#parser.close();
      void this.#srv.crash(fault.keepListening === true);
      return;
    }
    if (ieof && fault?.kind === 'continue-after-ieof')
      this.#write(Buffer.from('ICAP/1.0 100 Continue\r\n\r\n'));
    if (fault?.kind === 'delay') {
      this.#srv.setTimer(() => this.#finish(() => this.#answer(rec, head)), fault.ms);
      return;
    }
    this.#finish(() => this.#answer(rec, head));
  }

  /** The whole recorded body (streamed echoes do not keep it: reassembled from raw). */
  #bodyOf(rec: RecordedRequest): Buffer {
    if (!this.#streaming) return Buffer.concat(this.#chunks);
    return rec.bodyLength === 0 ? Buffer.alloc(0) : extractBody(Buffer.concat(this.#raw), this.#head!);
  }

  /** Whether a preview that ended without ieof can be answered 204 right away (never, here: the server wants the rest). */
  #previewAnswer204(_rec: RecordedRequest): boolean {
    return false;
  }

  // ------------------------------------------------------------------ answers

  #answer(rec: RecordedRequest, head: IcapRequestHead): void {
    const fault = this.#fault;
    const srv = this.#srv;
    if (fault?.kind === 'status') {
      rec.status = fault.status;
      this.#write(
        headBytes(`ICAP/1.0 ${fault.status} ${fault.reason ?? reasonOf(fault.status)}`, [
          ['ISTag', `"${srv.istag}"`],
          ['Encapsulated', fault.encapsulated ?? 'null-body=0'],
        ]),
      );
      return;
    }
    if (fault?.kind === 'raw') {
      this.#write(Buffer.isBuffer(fault.response) ? fault.response : Buffer.from(fault.response, 'latin1'));
      return;
    }
    if (fault?.kind === 'garbage') {
      this.#write(
        Buffer.isBuffer(fault.bytes)
          ? fault.bytes
          : Buffer.from(fault.bytes ?? 'HTTP/1.1 200 OK\r\nthis is not ICAP\r\n\r\n'),
      );
      this.#kill('close');
      return;
    }
    if (fault?.kind === 'oversized-headers') {
      rec.status = 204;
      this.#write(
        headBytes('ICAP/1.0 204 No Content', [
          ['ISTag', `"${srv.istag}"`],
          ['X-Padding', 'x'.repeat(Math.max(0, fault.bytes))],
        ]),
      );
      return;
    }
    if (fault?.kind === 'endless-chunk') {
      this.#endless(rec, head, fault.in ?? 'response');
      return;
    }
    if (!['/avscan', '/echo', '/modify'].includes(rec.service)) {
      rec.status = 404;
      this.#write(
        headBytes('ICAP/1.0 404 ICAP Service Not Found', [
          ['ISTag', `"${srv.istag}"`],
          ['Encapsulated', 'null-body=0'],
        ]),
      );
      return;
    }
    if (head.method === 'OPTIONS') {
      this.#sendOptions(rec);
      return;
    }
    if (head.method !== 'REQMOD' && head.method !== 'RESPMOD') {
      rec.status = 405;
      this.#write(
        headBytes('ICAP/1.0 405 Method Not Allowed', [
          ['ISTag', `"${srv.istag}"`],
          ['Encapsulated', 'null-body=0'],
        ]),
      );
      return;
    }
    if (this.#streaming) {
      rec.verdict = 'clean';
      this.#write(LAST_CHUNK);
      return;
    }
    const found = this.#scanner!.found;
    if (found !== undefined && rec.service !== '/echo') {
      this.#sendBlock(rec, found, fileNameOf(head));
      return;
    }
    const body = Buffer.concat(this.#chunks);
    if (rec.service === '/modify') {
      const modified = this.#rewrite(body, rec);
      if (modified !== null && !modified.equals(body)) {
        rec.verdict = 'modified';
        this.#sendAdapted(rec, head, modified, []);
        return;
      }
    }
    if (rec.service === '/echo') {
      rec.verdict = 'clean';
      this.#sendAdapted(rec, head, body, [['Via', '1.0 icapkit-testing']]);
      return;
    }
    rec.verdict = rec.verdict ?? 'clean';
    if (
      srv.options.vendor === 'nsx-defender' &&
      srv.options.nsxLastlineHeadersOnClean &&
      head.method === 'REQMOD'
    ) {
      this.#sendAdapted(rec, head, body, lastlineCleanHeaders());
      return;
    }
    const noModificationAllowed =
      (rec.allow204 || rec.ieof) &&
      srv.options.allow204 !== false &&
      !/(?:^|&)allow204=off(?:&|$)/.test(rec.query);
    if (noModificationAllowed) {
      this.#send204(rec);
      return;
    }
    this.#sendAdapted(rec, head, body, []);
  }

  /** The early-verdict fault: a complete block now, then close, reset or read on. */
  #earlyVerdict(
    rec: RecordedRequest,
    head: IcapRequestHead,
    fault: Extract<Fault, { kind: 'early-verdict' }>,
  ): void {
    this.#discard = true;
    fault.beforeAnswer?.();
    if (fault.truncate) this.#cutNextWrite = 20;
    this.#sendBlock(rec, this.#scanner?.found ?? EICAR_NAME, fileNameOf(head));
    if (fault.ending === 'keep-alive') return;
    const onClosed = fault.onClosed;
    if (onClosed !== undefined) {
      if (this.#socket.closed) queueMicrotask(onClosed);
      else this.#socket.once('close', () => onClosed());
    }
    this.#kill(fault.ending);
  }

  #rewrite(body: Buffer, rec: RecordedRequest): Buffer | null {
    const rw = this.#srv.options.rewrite;
    if (rw === undefined) return null;
    if (typeof rw === 'function') return rw(body, rec);
    const from = Buffer.isBuffer(rw.from) ? rw.from : Buffer.from(rw.from);
    const to = Buffer.isBuffer(rw.to) ? rw.to : Buffer.from(rw.to);
    const parts: Buffer[] = [];
    let at = 0;
    for (let i = body.indexOf(from); i !== -1; i = body.indexOf(from, at)) {
      parts.push(body.subarray(at, i), to);
      at = i + from.length;
    }
    if (at === 0) return null;
    parts.push(body.subarray(at));
    return Buffer.concat(parts);
  }

  #icapHead(status: number, reason: string, extra: Array<[string, string]>, encapsulated?: string): Buffer {
    const lines: Array<[string, string]> = [['Server', 'icapkit-testing/0.1']];
    const noIstag =
      this.#fault?.kind === 'no-istag' ||
      (this.#srv.options.incompleteOptions === true && this.#head?.method === 'OPTIONS');
    if (!noIstag) lines.push(['ISTag', `"${this.#srv.istag}"`]);
    if (this.#closeAfter()) lines.push(['Connection', 'close']);
    lines.push(...extra);
    if (encapsulated !== undefined) lines.push(['Encapsulated', encapsulated]);
    return headBytes(`ICAP/1.0 ${status} ${reason}`, lines);
  }

  #send204(rec: RecordedRequest): void {
    rec.status = 204;
    this.#write(this.#icapHead(204, 'No Content', cleanHeaders(this.#srv.options.vendor ?? 'c-icap')));
  }

  #sendOptions(rec: RecordedRequest): void {
    const o = this.#srv.options;
    const t = o.transfer ?? {};
    const lines: Array<[string, string]> = [
      ['Methods', 'REQMOD, RESPMOD'],
      ['Service', 'icapkit-testing ICAP server'],
    ];
    if (o.incompleteOptions) lines.shift();
    if (o.optionsTtl !== null) lines.push(['Options-TTL', String(o.optionsTtl ?? 3600)]);
    if (o.maxConnections !== undefined) lines.push(['Max-Connections', String(o.maxConnections)]);
    if (o.allow204 !== false) lines.push(['Allow', '204']);
    if (o.preview !== null) lines.push(['Preview', String(o.preview ?? 1024)]);
    if (t.preview !== undefined) lines.push(['Transfer-Preview', t.preview.join(', ')]);
    if (t.ignore !== undefined) lines.push(['Transfer-Ignore', t.ignore.join(', ')]);
    if (t.complete !== undefined) lines.push(['Transfer-Complete', t.complete.join(', ')]);
    if (t.preview === undefined && t.ignore === undefined && t.complete === undefined)
      lines.push(['Transfer-Preview', '*']);
    rec.status = 200;
    this.#write(this.#icapHead(200, 'OK', lines, 'null-body=0'));
  }

  #sendBlock(rec: RecordedRequest, threat: string, fileName: string): void {
    rec.verdict = 'infected';
    const vendor = this.#srv.options.vendor ?? 'c-icap';
    const a = blockAnswer(vendor, {
      threat,
      fileName,
      md5: this.#scanner?.md5() ?? createHash('md5').digest('hex'),
    });
    rec.status = a.icapStatus;
    const http =
      a.http === null ? null : encodeHttpResponseHead(a.http, { contentLength: a.page?.length ?? 0 });
    const icap = this.#icapHead(a.icapStatus, a.icapReason, a.icapHeaders, undefined);
    // Folded (or raw UTF-8) lines and Encapsulated go after the plain headers (headBytes cannot fold).
    let encapsulated = '';
    if (http === null) encapsulated = a.noEncapsulated === true ? '' : 'Encapsulated: null-body=0\r\n';
    else
      encapsulated = `Encapsulated: res-hdr=0, ${a.page === null ? 'null-body' : 'res-body'}=${http.length}\r\n`;
    const parts = [
      icap.subarray(0, icap.length - 2),
      Buffer.from(`${a.foldedLines}${encapsulated}\r\n`, 'latin1'),
    ];
    if (http !== null) parts.push(http);
    if (a.page !== null) {
      if (a.page.length > 0) parts.push(chunkHeader(a.page.length), a.page, CRLF);
      parts.push(LAST_CHUNK);
    }
    this.#write(Buffer.concat(parts));
  }

  /** 200 with the (possibly modified) message: request for REQMOD, response for RESPMOD. */
  #sendAdapted(
    rec: RecordedRequest,
    head: IcapRequestHead,
    body: Buffer,
    addHeaders: Array<[string, string]>,
  ): void {
    rec.status = 200;
    const encapsulatedHead = this.#adaptedHead(head, body.length, addHeaders);
    const kind = head.method === 'RESPMOD' ? 'res' : 'req';
    const icap = this.#icapHead(
      200,
      'OK',
      cleanHeaders(this.#srv.options.vendor ?? 'c-icap'),
      `${kind}-hdr=0, ${kind}-body=${encapsulatedHead.length}`,
    );
    const parts = [icap, encapsulatedHead];
    if (body.length > 0) parts.push(chunkHeader(body.length), body, CRLF);
    parts.push(LAST_CHUNK);
    this.#write(Buffer.concat(parts));
  }

  #adaptedHead(head: IcapRequestHead, length: number | undefined, add: Array<[string, string]>): Buffer {
    if (head.method === 'RESPMOD' && head.httpResponse !== null) {
      const r = head.httpResponse;
      return encodeHttpResponseHead(
        { status: r.status, reason: r.reason, headers: [...r.headers, ...add] },
        { contentLength: length },
      );
    }
    const r = head.httpRequest;
    return encodeHttpRequestHead(
      { method: r?.method ?? 'POST', target: r?.target ?? '/', headers: [...(r?.headers ?? []), ...add] },
      { contentLength: length },
    );
  }

  /** /echo: the 200 head now, then every body chunk back as it arrives. */
  #startEcho(): void {
    const head = this.#head!;
    const rec = this.#rec!;
    this.#streaming = true;
    rec.status = 200;
    const encapsulatedHead = this.#adaptedHead(head, undefined, [['Via', '1.0 icapkit-testing']]);
    const kind = head.method === 'RESPMOD' ? 'res' : 'req';
    this.#write(
      Buffer.concat([
        this.#icapHead(200, 'OK', [], `${kind}-hdr=0, ${kind}-body=${encapsulatedHead.length}`),
        encapsulatedHead,
      ]),
    );
    for (const c of this.#chunks) this.#writeChunk(c);
    this.#chunks = [];
  }

  #writeChunk(data: Buffer): void {
    if (this.#fault?.kind === 'close' && this.#fault.when === 'mid-response') {
      this.#kill('close');
      return;
    }
    if (this.#fault?.kind === 'reset' && this.#fault.when === 'mid-response') {
      this.#kill('reset');
      return;
    }
    this.#write(Buffer.concat([chunkHeader(data.length), data, CRLF]));
  }

  #endless(rec: RecordedRequest, head: IcapRequestHead, where: 'response' | 'request'): void {
    rec.status = 200;
    const http =
      where === 'request'
        ? this.#adaptedHead(head, undefined, [])
        : encodeHttpResponseHead({
            status: 200,
            reason: 'OK',
            headers: [['Content-Type', 'application/octet-stream']],
          });
    const kind = where === 'request' ? 'req' : 'res';
    this.#write(
      Buffer.concat([
        this.#icapHead(200, 'OK', [], `${kind}-hdr=0, ${kind}-body=${http.length}`),
        http,
        Buffer.from('7fffffffffff\r\n'),
      ]),
    );
    const block = Buffer.alloc(64 * 1024, 0x41);
    this.#pumping = true;
    const pump = () => {
      while (!this.#dead && !this.#socket.destroyed) {
        if (!this.#socket.write(block)) {
          this.#socket.once('drain', pump);
          return;
        }
      }
    };
    pump();
  }

  // ------------------------------------------------------------------ plumbing

  #write(b: Buffer): void {
    if (this.#dead || this.#socket.destroyed) return;
    if (this.#cutNextWrite > 0) {
      b = b.subarray(0, Math.max(0, b.length - this.#cutNextWrite));
      this.#cutNextWrite = 0;
    }
    const fault = this.#fault;
    if (this.#drip !== null || fault?.kind === 'trickle') {
      if (this.#drip === null && fault?.kind === 'trickle') {
        this.#drip = { queue: [], intervalMs: fault.intervalMs, bytes: Math.max(1, fault.bytes ?? 1) };
        this.#srv.setTimer(() => this.#dripNext(), fault.intervalMs);
      }
      this.#drip!.queue.push(b);
      return;
    }
    if (!this.#socket.write(b)) {
      // Backpressure: read no more until the client has taken what was sent.
      this.#socket.pause();
      this.#socket.once('drain', () => {
        if (!this.#dead && !this.#discardPaused()) this.#socket.resume();
      });
    }
  }

  /** Sends the next few bytes of a trickled answer. */
  #dripNext(): void {
    const drip = this.#drip;
    if (drip === null || this.#dead || this.#socket.destroyed) {
      this.#drip = null;
      return;
    }
    let n = drip.bytes;
    const out: Buffer[] = [];
    while (n > 0 && drip.queue.length > 0) {
      const first = drip.queue[0]!;
      if (first.length <= n) {
        out.push(first);
        n -= first.length;
        drip.queue.shift();
      } else {
        out.push(first.subarray(0, n));
        drip.queue[0] = first.subarray(n);
        n = 0;
      }
    }
    if (out.length > 0) this.#socket.write(Buffer.concat(out));
    if (drip.queue.length === 0) {
      this.#drip = null;
      return;
    }
    this.#srv.setTimer(() => this.#dripNext(), drip.intervalMs);
  }

  #discardPaused(): boolean {
    return this.#fault?.kind === 'stall-after-continue' && this.#discard;
  }

  /** Runs an answer, then prepares for the next request (or closes). */
  #finish(answer: () => void): void {
    const fault = this.#fault;
    if (fault?.kind === 'close' && fault.when === 'mid-response') {
      this.#write(
        Buffer.from(
          'ICAP/1.0 200 OK\r\nISTag: "x"\r\nEncapsulated: res-hdr=0, res-body=19\r\n\r\nHTTP/1.1 200 OK\r\n\r\n10\r\npartial',
        ),
      );
      this.#kill('close');
      return;
    }
    if (fault?.kind === 'reset' && fault.when === 'mid-response') {
      this.#write(
        Buffer.from(
          'ICAP/1.0 200 OK\r\nISTag: "x"\r\nEncapsulated: res-hdr=0, res-body=19\r\n\r\nHTTP/1.1 200 OK\r\n\r\n10\r\npartial',
        ),
      );
      this.#kill('reset');
      return;
    }
    answer();
    // The connection is over (garbage, then closed) or still busy (an endless chunk being
    // pumped). Otherwise the answer was a normal one (EICAR found in the preview before the
    // fault could play): the connection serves the next request.
    if (this.#dead || this.#pumping) return;
    this.#next();
  }

  #next(): void {
    this.#served++;
    if (this.#closeAfter(true) || this.#fault?.kind === 'connection-close') {
      this.#socket.end();
      this.#dead = true;
      return;
    }
    this.#rec = null;
    this.#head = null;
    this.#fault = undefined;
    this.#parser.reset();
  }

  /** The connection closes after this answer (maxKeepAliveRequests or a connection-close fault). */
  #closeAfter(counted = false): boolean {
    const max = this.#srv.options.maxKeepAliveRequests;
    if (this.#fault?.kind === 'connection-close') return true;
    return max !== undefined && this.#served + (counted ? 0 : 1) >= max;
  }

  #kill(how: 'close' | 'reset'): void {
    this.#dead = true;
    this.#parser.close();
    if (how === 'reset') this.#socket.resetAndDestroy();
    else this.#socket.end(() => this.#socket.destroy());
  }

  #badRequest(err: unknown): void {
    if (this.#dead) return;
    const message =
      err instanceof Error ? err.message.replace(/[^\x20-\x7e]/g, '?').slice(0, 200) : 'bad request';
    this.#write(
      headBytes('ICAP/1.0 400 Bad Request', [
        ['ISTag', `"${this.#srv.istag}"`],
        ['X-Error', message],
        ['Connection', 'close'],
        ['Encapsulated', 'null-body=0'],
      ]),
    );
    this.#kill('close');
  }
}

/** The bytes in a buffer of their own (not a slice of a larger one). */
function copyOf(b: Buffer): Buffer {
  const out = Buffer.alloc(b.length);
  b.copy(out);
  return out;
}

function parseUri(uri: string): { path: string; query: string } {
  const m = /^icaps?:\/\/[^/]*(\/[^?]*)?(?:\?(.*))?$/i.exec(uri);
  if (m !== null) return { path: m[1] ?? '/', query: m[2] ?? '' };
  const q = uri.indexOf('?');
  return q === -1 ? { path: uri, query: '' } : { path: uri.slice(0, q), query: uri.slice(q + 1) };
}

function optionalInt(v: string | undefined): number | undefined {
  return v !== undefined && /^\d+$/.test(v.trim()) ? Number(v.trim()) : undefined;
}

/** Bytes of the ICAP head plus the encapsulated header sections at the start of `raw`. */
function headLength(raw: Buffer, head: IcapRequestHead): number {
  let start = 0;
  while (start < raw.length && (raw[start] === 0x0d || raw[start] === 0x0a)) start++;
  const end = raw.indexOf('\r\n\r\n', start);
  if (end === -1) return raw.length;
  const encap = head.encapsulated;
  const bodyOffset = encap === null ? 0 : encap[encap.length - 1]!.offset;
  return Math.min(raw.length, end + 4 + bodyOffset);
}

/** Decodes the chunked body out of a complete raw request. */
function extractBody(raw: Buffer, head: IcapRequestHead): Buffer {
  const out: Buffer[] = [];
  let i = headLength(raw, head);
  while (i < raw.length) {
    const nl = raw.indexOf('\n', i);
    if (nl === -1) break;
    const size = Number.parseInt(raw.toString('latin1', i, nl).split(';')[0]!.trim(), 16);
    if (!(size > 0)) {
      // 0-chunk: after a preview the body may continue.
      const end = raw.indexOf('\r\n\r\n', i);
      if (end === -1) break;
      i = end + 4;
      continue;
    }
    out.push(raw.subarray(nl + 1, nl + 1 + size));
    i = nl + 1 + size + 2;
  }
  return Buffer.concat(out);
}

function fileNameOf(head: IcapRequestHead): string {
  const cd =
    head.httpRequest?.headers.get('content-disposition') ??
    head.httpResponse?.headers.get('content-disposition');
  const m = cd === undefined ? null : /filename\s*=\s*"?([^";]+)"?/i.exec(cd);
  if (m !== null) return m[1]!;
  const target = head.httpRequest?.target ?? '';
  const path = target.replace(/^[a-z]+:\/\/[^/]*/i, '').split('?')[0] ?? '';
  const last = path.slice(path.lastIndexOf('/') + 1);
  return last === '' ? '-' : last;
}

function reasonOf(status: number): string {
  const reasons: Record<number, string> = {
    400: 'Bad Request',
    403: 'Forbidden',
    404: 'ICAP Service Not Found',
    405: 'Method Not Allowed',
    408: 'Request Timeout',
    418: 'Bad Composition',
    500: 'Server Error',
    501: 'Method Not Implemented',
    502: 'Bad Gateway',
    503: 'Service Overloaded',
    505: 'ICAP Version Not Supported',
  };
  return reasons[status] ?? 'Error';
}
