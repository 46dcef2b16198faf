/**
 * A bare node:http server that runs the engine on every request and applies the outcome the
 * simplest correct way (no framework): the engine tests' harness. The handler records the
 * bytes it received, so tests assert exactly what the application saw.
 */
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { type IcapEngine, type IcapLog, rearmRequest, type ScanOutcome } from '@icapkit/core';

export interface Seen {
  method: string;
  url: string;
  headers: IncomingMessage['headers'];
  body: Buffer;
}

export interface ScanServer {
  url: string;
  port: number;
  seen: Seen[];
  outcomes: ScanOutcome[];
  logs: IcapLog[];
  close(): Promise<void>;
}

export async function startScanServer(engine: IcapEngine): Promise<ScanServer> {
  const seen: Seen[] = [];
  const outcomes: ScanOutcome[] = [];
  const logs: IcapLog[] = [];
  const server: Server = createServer(async (req, res) => {
    const ac = new AbortController();
    res.on('close', () => ac.abort());
    const outcome = await engine.scan(req, { signal: ac.signal });
    outcomes.push(outcome);
    logs.push(outcome.log);
    res.on('close', () => outcome.dispose());
    if (outcome.kind === 'aborted') {
      res.destroy();
      return;
    }
    if (outcome.kind === 'respond') {
      res.writeHead(outcome.status, outcome.headers.flat());
      res.end(outcome.body);
      return;
    }
    if (outcome.kind === 'rewrite') {
      rearmRequest(req, {
        body: outcome.body,
        contentLength: outcome.contentLength,
        headers: outcome.headers,
        method: outcome.method,
        url: outcome.url,
      });
    } else if (outcome.body !== null) {
      rearmRequest(req, { body: outcome.body, contentLength: outcome.contentLength ?? 0 });
    }
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const body = Buffer.concat(chunks);
    seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body });
    for (const [n, v] of outcome.responseHeaders) res.setHeader(n, v);
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ received: body.length }));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    seen,
    outcomes,
    logs,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
