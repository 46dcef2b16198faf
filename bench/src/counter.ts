/**
 * A loopback TCP proxy in front of an ICAP server that counts the connections clients open
 * (the server-side view: the same for icapkit, Squid and the raw generator). Bytes are piped
 * unchanged both ways. Same idea as test/support/tcp-counter.ts, plus the peak of connections
 * open at once.
 */
import { connect, createServer, type Socket } from 'node:net';
import { LOOPBACK } from './util.js';

export interface TcpCounter {
  port: number;
  /** Connections accepted since start. */
  accepted(): number;
  /** Most connections open at the same time. */
  peakOpen(): number;
  close(): Promise<void>;
}

export function startTcpCounter(targetPort: number): Promise<TcpCounter> {
  let accepted = 0;
  let peak = 0;
  const open = new Set<Socket>();
  const server = createServer((client) => {
    accepted++;
    open.add(client);
    if (open.size > peak) peak = open.size;
    const upstream = connect({ host: LOOPBACK, port: targetPort });
    client.setNoDelay(true);
    upstream.setNoDelay(true);
    const destroyBoth = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on('error', destroyBoth);
    upstream.on('error', destroyBoth);
    client.on('close', () => {
      open.delete(client);
      upstream.end();
      setTimeout(() => upstream.destroy(), 2000).unref();
    });
    upstream.on('close', () => {
      client.end();
      setTimeout(() => client.destroy(), 2000).unref();
    });
    client.pipe(upstream);
    upstream.pipe(client);
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, LOOPBACK, () => {
      const addr = server.address();
      if (addr === null || typeof addr !== 'object') {
        reject(new Error('no address'));
        return;
      }
      let closing: Promise<void> | null = null;
      resolve({
        port: addr.port,
        accepted: () => accepted,
        peakOpen: () => peak,
        close: () => {
          closing ??= new Promise<void>((done) => {
            server.close(() => done());
            for (const c of open) c.destroy();
          });
          return closing;
        },
      });
    });
  });
}
