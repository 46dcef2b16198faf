/** A small HTTP client for tests: HTTP/1.1 (length or chunked, Expect: 100-continue, abort) and HTTP/2. */
import { request as h1request } from 'node:http';
import { constants as h2, connect as h2connect } from 'node:http2';

export interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
  text: string;
}

export interface SendOptions {
  method?: string;
  headers?: Record<string, string>;
  body?: Buffer | string;
  /** Send without content-length (chunked), in pieces of this many bytes. */
  chunked?: number;
  /** Send `Expect: 100-continue` and the body only after `100 Continue`. */
  expectContinue?: boolean;
  http2?: boolean;
  timeoutMs?: number;
}

export function send(url: string, path: string, opts: SendOptions = {}): Promise<Reply> {
  return opts.http2 ? send2(url, path, opts) : send1(url, path, opts);
}

function send1(url: string, path: string, opts: SendOptions): Promise<Reply> {
  const body = typeof opts.body === 'string' ? Buffer.from(opts.body) : opts.body;
  return new Promise<Reply>((resolve, reject) => {
    const headers: Record<string, string> = { ...opts.headers };
    if (body !== undefined && opts.chunked === undefined) headers['content-length'] = String(body.length);
    if (opts.expectContinue) headers.expect = '100-continue';
    const req = h1request(
      new URL(path, url),
      { method: opts.method ?? (body ? 'POST' : 'GET'), headers },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          clearTimeout(timer);
          const b = Buffer.concat(chunks);
          resolve({ status: res.statusCode!, headers: res.headers, body: b, text: b.toString() });
        });
        res.on('error', reject);
      },
    );
    const timer = setTimeout(() => {
      req.destroy(new Error(`no answer within ${opts.timeoutMs ?? 20_000} ms`));
    }, opts.timeoutMs ?? 20_000);
    req.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    const write = () => {
      if (body === undefined) {
        req.end();
      } else if (opts.chunked !== undefined) {
        for (let i = 0; i < body.length; i += opts.chunked) req.write(body.subarray(i, i + opts.chunked));
        req.end();
      } else {
        req.end(body);
      }
    };
    if (opts.expectContinue) req.once('continue', write);
    else write();
  });
}

function send2(url: string, path: string, opts: SendOptions): Promise<Reply> {
  const body = typeof opts.body === 'string' ? Buffer.from(opts.body) : opts.body;
  return new Promise<Reply>((resolve, reject) => {
    const session = h2connect(url);
    session.on('error', reject);
    const headers: Record<string, string> = {
      [h2.HTTP2_HEADER_METHOD]: opts.method ?? (body ? 'POST' : 'GET'),
      [h2.HTTP2_HEADER_PATH]: path,
      ...opts.headers,
    };
    if (body !== undefined && opts.chunked === undefined) headers['content-length'] = String(body.length);
    const stream = session.request(headers, { endStream: body === undefined });
    const timer = setTimeout(() => {
      stream.close();
      session.destroy(new Error('no HTTP/2 answer in time'));
    }, opts.timeoutMs ?? 20_000);
    let status = 0;
    let resHeaders: Record<string, string | string[] | undefined> = {};
    stream.on('response', (h) => {
      status = Number(h[h2.HTTP2_HEADER_STATUS]);
      resHeaders = h as Record<string, string | string[] | undefined>;
    });
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('end', () => {
      clearTimeout(timer);
      session.close();
      const b = Buffer.concat(chunks);
      resolve({ status, headers: resHeaders, body: b, text: b.toString() });
    });
    stream.on('error', (e) => {
      clearTimeout(timer);
      session.destroy();
      reject(e);
    });
    if (body !== undefined) {
      if (opts.chunked !== undefined) {
        for (let i = 0; i < body.length; i += opts.chunked) stream.write(body.subarray(i, i + opts.chunked));
        stream.end();
      } else {
        stream.end(body);
      }
    }
  });
}

/**
 * Starts a chunked upload, sends `sendBytes` of it, then destroys the connection (a client
 * going away mid-upload). Resolves once the socket is closed.
 */
export function abortMidUpload(url: string, path: string, body: Buffer, sendBytes: number): Promise<void> {
  return new Promise<void>((resolve) => {
    const req = h1request(new URL(path, url), {
      method: 'POST',
      headers: { 'content-type': 'application/octet-stream' },
    });
    req.on('error', () => {});
    req.write(body.subarray(0, sendBytes), () => {
      setTimeout(() => {
        req.destroy();
        resolve();
      }, 150);
    });
  });
}

/** A multipart/form-data body built by hand (what browsers and curl -F send). */
export function multipart(
  parts: Array<{ name: string; filename?: string; type?: string; data: Buffer | string }>,
  boundary = `----icapkit${Math.random().toString(16).slice(2)}`,
): { body: Buffer; contentType: string } {
  const chunks: Buffer[] = [];
  for (const p of parts) {
    let head = `--${boundary}\r\nContent-Disposition: form-data; name="${p.name}"`;
    if (p.filename !== undefined) head += `; filename="${p.filename}"`;
    head += '\r\n';
    if (p.filename !== undefined) head += `Content-Type: ${p.type ?? 'application/octet-stream'}\r\n`;
    chunks.push(
      Buffer.from(`${head}\r\n`),
      Buffer.isBuffer(p.data) ? p.data : Buffer.from(p.data),
      Buffer.from('\r\n'),
    );
  }
  chunks.push(Buffer.from(`--${boundary}--\r\n`));
  return { body: Buffer.concat(chunks), contentType: `multipart/form-data; boundary=${boundary}` };
}
