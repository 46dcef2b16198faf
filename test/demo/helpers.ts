/**
 * Helpers of the example and demo tests: the three example servers (plain JavaScript, imported
 * in-process, so vitest runs them against the packages' TypeScript sources) and a one-shot HTTP
 * client.
 */
import { request } from 'node:http';
import { createServer } from 'node:net';
import { start as startExpress } from '../../examples/express/server.js';
import { start as startFastify } from '../../examples/fastify/server.js';
import { start as startHono } from '../../examples/hono/server.js';
import { start as startKoa } from '../../examples/koa/server.js';

export interface ExampleOptions {
  port?: number;
  host?: string;
  /** icap://host:port of an ICAP server; unset: the example starts the embedded one. */
  icapUrl?: string;
  serviceUri?: string;
  failOpen?: boolean;
  maxUpload?: number;
  print?: (line: string) => void;
}

export interface Example {
  framework: string;
  url: string;
  icapUrl: string;
  embedded: boolean;
  close(): Promise<void>;
}

export type ExampleName = 'express' | 'fastify' | 'koa' | 'hono';

export const EXAMPLES: Record<ExampleName, (options?: ExampleOptions) => Promise<Example>> = {
  express: startExpress,
  fastify: startFastify,
  koa: startKoa,
  hono: startHono,
};

export interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
  text: string;
  json(): unknown;
}

/**
 * One HTTP request on its own connection (no keep-alive agent), so nothing of the client is
 * left open once it is answered.
 */
export function send(
  url: string,
  options: { method?: string; headers?: Record<string, string>; body?: Buffer } = {},
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: options.method ?? 'GET', headers: options.headers, agent: false });
    req.on('error', reject);
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', reject);
      res.on('end', () => {
        const body = Buffer.concat(chunks);
        const text = body.toString('utf8');
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          body,
          text,
          json: () => JSON.parse(text),
        });
      });
    });
    req.end(options.body);
  });
}

/** POSTs a multipart form with one file (as a browser or `curl -F field=@file` does). */
export async function postFile(
  url: string,
  file: { name: string; data: Buffer; field?: string },
  accept?: string,
): Promise<Reply> {
  const form = new FormData();
  form.append(file.field ?? 'file', new Blob([file.data], { type: 'application/octet-stream' }), file.name);
  const encoded = new Request('http://localhost/', { method: 'POST', body: form });
  const body = Buffer.from(await encoded.arrayBuffer());
  const headers: Record<string, string> = {
    'content-type': encoded.headers.get('content-type')!,
    'content-length': String(body.length),
  };
  if (accept !== undefined) headers.accept = accept;
  return send(url, { method: 'POST', headers, body });
}

/** Open TCP servers and sockets of this process. */
export function tcpHandles(): number {
  return process.getActiveResourcesInfo().filter((r) => r === 'TCPServerWrap' || r === 'TCPSocketWrap')
    .length;
}

/** Waits until `check` holds (or throws its last failure after `ms`). */
export async function eventually(check: () => void, ms = 3000): Promise<void> {
  const until = Date.now() + ms;
  for (;;) {
    try {
      check();
      return;
    } catch (err) {
      if (Date.now() > until) throw err;
      await new Promise((r) => setTimeout(r, 25));
    }
  }
}

/** An icap:// URL where nothing listens (a port that was free a moment ago). */
export async function deadIcapUrl(): Promise<string> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const port = (server.address() as { port: number }).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return `icap://127.0.0.1:${port}`;
}
