/**
 * A loopback TCP proxy that counts connections, to prove keep-alive from the server's side:
 * point a client at `127.0.0.1:<port>` instead of the real server and check how many TCP
 * connections it opened (`accepted()`) and how many it still holds (`open()`).
 *
 * Bytes are forwarded unchanged both ways with pipe() (so backpressure is respected). When
 * either side ends, the end is forwarded (half-close); when either side is fully closed the
 * other is ended and destroyed 2 s later at the latest; an error on either side destroys both. Works for TLS as well, since it never looks at
 * the bytes.
 */
import { connect, createServer, type Server, type Socket } from 'node:net';

export interface TcpCounter {
  /** Loopback port the proxy listens on. */
  port: number;
  host: '127.0.0.1';
  /** Connections accepted from clients since start. */
  accepted(): number;
  /** Client connections currently open (accepted and not yet closed). */
  open(): number;
  /** Stops listening, destroys every open connection pair and resolves when the listener is closed. */
  close(): Promise<void>;
}

const CLOSE_GRACE_MS = 2_000;

export function startTcpCounter(targetHost: string, targetPort: number): Promise<TcpCounter> {
  let accepted = 0;
  const pairs = new Set<Socket>();

  const server: Server = createServer((client) => {
    accepted++;
    pairs.add(client);
    const upstream = connect({ host: targetHost, port: targetPort });
    // Keep the bytes flowing without delay in both directions.
    client.setNoDelay(true);
    upstream.setNoDelay(true);

    // An error on either side tears down both. A close on one side ends the other gracefully
    // (so bytes already piped into it are still flushed), with a bounded wait before destroying.
    const destroyBoth = () => {
      client.destroy();
      upstream.destroy();
    };
    const endOther = (other: Socket) => {
      if (other.destroyed) return;
      other.end();
      setTimeout(() => other.destroy(), CLOSE_GRACE_MS).unref();
    };
    client.on('error', destroyBoth);
    upstream.on('error', destroyBoth);
    client.on('close', () => {
      pairs.delete(client);
      endOther(upstream);
    });
    upstream.on('close', () => endOther(client));

    client.pipe(upstream);
    upstream.pipe(client);
  });

  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      server.off('error', reject);
      const addr = server.address();
      if (addr === null || typeof addr !== 'object') {
        server.close();
        reject(new Error('startTcpCounter: no address'));
        return;
      }
      let closing: Promise<void> | null = null;
      resolve({
        port: addr.port,
        host: '127.0.0.1',
        accepted: () => accepted,
        open: () => pairs.size,
        close(): Promise<void> {
          closing ??= new Promise<void>((done) => {
            server.close(() => done());
            for (const client of pairs) client.destroy();
          });
          return closing;
        },
      });
    });
  });
}
