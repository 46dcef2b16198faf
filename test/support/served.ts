/**
 * A Node HTTP server a test started, as a URL and a close that ends its connections, then runs
 * `close` (the middleware's engine); and the whole of a request stream, as a handler reads it.
 */
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';

export async function served(
  server: Server,
  close: () => Promise<void>,
): Promise<{ url: string; close(): Promise<void> }> {
  if (!server.listening) await new Promise<void>((resolve) => server.once('listening', () => resolve()));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await close();
    },
  };
}

export async function readAll(stream: AsyncIterable<unknown>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}
