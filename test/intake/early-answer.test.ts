/**
 * Early answers are readable: a request answered before its body was read (503 with every
 * scanner down, 413 for a declared length over bufferSize, 415 for a refused type) has the
 * rest of its body read and discarded (bounded), so a client that sends its whole body before
 * reading gets the whole answer, not EPIPE or a reset. Beyond the bound the connection goes.
 */
import { connect } from 'node:net';
import type { IcapLog, IcapProfile } from '@icapkit/core';
import { eicar, startIcapServer } from '@icapkit/testing';
import { afterEach, describe, expect, it } from 'vitest';
import { type App, type Framework, startApp } from '../conformance/apps.js';
import { refusingPort } from '../support/c-icap.js';
import { activeResources, settleResources } from '../support/leaks.js';

const FRAMEWORKS: Framework[] = ['express5', 'fastify', 'koa3'];
const BODY = Buffer.alloc(4 * 1024 * 1024, 0x61);

interface RawResult {
  /** Bytes of the body the client managed to write before the connection failed or ended. */
  written: number;
  /** A write or read error (EPIPE, ECONNRESET), if any. */
  error: string | undefined;
  status: number | undefined;
  headers: Record<string, string>;
  /** The response body is complete (as long as its Content-Length). */
  complete: boolean;
  body: Buffer;
}

/**
 * A client that writes its whole body first (Nagle off, honouring backpressure), then reads:
 * what most upload clients do. Resolves when the server closed, or `withinMs` passed.
 */
function sendThenRead(
  url: string,
  head: string,
  body: Buffer,
  withinMs = 15_000,
  /** ms between 64 KiB pieces (0: as fast as the socket takes them). */
  paceMs = 0,
): Promise<RawResult> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve) => {
    const socket = connect({ host: hostname, port: Number(port), allowHalfOpen: true, noDelay: true });
    const received: Buffer[] = [];
    let written = 0;
    let error: string | undefined;
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      resolve({ written, error, ...parse(Buffer.concat(received)) });
    };
    const timer = setTimeout(finish, withinMs);
    socket.on('data', (d: Buffer) => received.push(d));
    socket.on('error', (e: NodeJS.ErrnoException) => {
      error ??= e.code ?? e.message;
      finish();
    });
    socket.on('close', finish);
    socket.on('end', () => {
      // The server half-closed: the answer is all there; what remains of our body may still go.
      if (written >= body.length + head.length) finish();
    });
    socket.once('connect', () => {
      const step = 64 * 1024;
      const whole = Buffer.concat([Buffer.from(head, 'latin1'), body]);
      const pump = () => {
        while (written < whole.length && !done) {
          const piece = whole.subarray(written, written + step);
          written += piece.length;
          if (!socket.write(piece)) {
            socket.once('drain', pump);
            return;
          }
          if (paceMs > 0) {
            setTimeout(pump, paceMs);
            return;
          }
        }
        // All written: keep reading until the server closes.
        if (socket.readableEnded) finish();
      };
      pump();
    });
  });
}

function parse(buf: Buffer): Omit<RawResult, 'written' | 'error'> {
  const end = buf.indexOf('\r\n\r\n');
  if (end === -1) return { status: undefined, headers: {}, complete: false, body: Buffer.alloc(0) };
  const lines = buf.subarray(0, end).toString('latin1').split('\r\n');
  const status = Number(lines[0]!.split(' ')[1]);
  const headers: Record<string, string> = {};
  for (const l of lines.slice(1)) {
    const i = l.indexOf(':');
    headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
  }
  const body = buf.subarray(end + 4);
  const length = Number(headers['content-length']);
  return { status, headers, complete: Number.isFinite(length) && body.length >= length, body };
}

const head = (length: number, type = 'application/octet-stream') =>
  `POST /raw HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: ${type}\r\nContent-Length: ${length}\r\n\r\n`;

let app: App | undefined;
afterEach(async () => {
  await app?.close();
  app = undefined;
});

describe.each(FRAMEWORKS)('early answers are readable: %s', (framework) => {
  const start = async (profile: Partial<IcapProfile>) => {
    const port = await refusingPort();
    app = await startApp(framework, {
      name: 'early',
      poolGroup: `icap://127.0.0.1:${port}`,
      serviceUri: '/avscan',
      bufferSize: '64mb',
      health: { failureLimit: 1000 },
      ...profile,
    });
    return app;
  };

  it('every scanner down: the client sends its 4 MiB body, then reads the whole 503', async () => {
    const baseline = activeResources();
    const a = await start({});
    const r = await sendThenRead(a.url, head(BODY.length), BODY);
    expect(r.error).toBeUndefined();
    expect(r.written).toBe(head(BODY.length).length + BODY.length);
    expect(r.status).toBe(503);
    expect(r.complete).toBe(true);
    expect(r.headers.connection).toBe('close');
    expect(a.seen).toHaveLength(0);
    await a.close();
    app = undefined;
    expect(await settleResources(baseline)).toEqual([]);
  });

  it('a declared length over bufferSize: the whole 413 after the body', async () => {
    const a = await start({ bufferSize: '1mb' });
    const r = await sendThenRead(a.url, head(BODY.length), BODY);
    expect(r.error).toBeUndefined();
    expect(r.status).toBe(413);
    expect(r.complete).toBe(true);
    expect(a.seen).toHaveLength(0);
  });

  it('a refused content type: the whole 415 after the body', async () => {
    const a = await start({ allowedContentTypes: ['image/*'] });
    const r = await sendThenRead(a.url, head(BODY.length, 'application/x-msdownload'), BODY);
    expect(r.error).toBeUndefined();
    expect(r.status).toBe(415);
    expect(r.complete).toBe(true);
  });

  it('bounded: past drainAfterAnswer.bytes the connection is closed', async () => {
    const a = await start({ drainAfterAnswer: { bytes: '256kb', timeout: 5000 } });
    const big = Buffer.alloc(32 * 1024 * 1024, 0x62);
    const t0 = Date.now();
    const r = await sendThenRead(a.url, head(big.length), big);
    // The server did not read 32 MiB: the client could not write all of it.
    expect(r.written).toBeLessThan(big.length);
    expect(Date.now() - t0).toBeLessThan(14_000);
  });

  it('bounded: past drainAfterAnswer.timeout the connection is closed', async () => {
    const a = await start({ drainAfterAnswer: { timeout: 300 } });
    const t0 = Date.now();
    // The client sends a head and a little of its body, then nothing: the answer, then the close.
    const r = await sendThenRead(a.url, head(BODY.length), BODY.subarray(0, 100_000).fill(0x63), 10_000);
    expect(r.status).toBe(503);
    expect(r.complete).toBe(true);
    expect(Date.now() - t0).toBeLessThan(8000);
  });
});

describe.each(FRAMEWORKS)('a block decided early does not store the rest of the body: %s', (framework) => {
  it('EICAR in the first bytes of a 32 MiB upload: 403, and at most drainAfterAnswer.bytes more were held', async () => {
    const icap = await startIcapServer({ recordBodies: false });
    const logs: IcapLog[] = [];
    try {
      app = await startApp(framework, {
        name: 'early-block',
        poolGroup: icap.url(),
        serviceUri: '/avscan',
        bufferSize: '64mb',
        drainAfterAnswer: { bytes: '1mb' },
        onLog: (l) => logs.push(l),
      });
      const big = Buffer.concat([eicar(), Buffer.alloc(32 * 1024 * 1024 - eicar().length, 0x64)]);
      // About 8 MiB/s: before the verdict (a few hundred ms on a busy machine) little arrives;
      // after it, the whole rest would arrive within drainRequest's 5 s if it were read.
      const r = await sendThenRead(app.url, head(big.length), big, 20_000, 8);
      // The client is told (while sending, or after): it never got through to the handler.
      expect(r.status === undefined || r.status === 403).toBe(true);
      expect(app.seen).toHaveLength(0);
      const deadline = Date.now() + 10_000;
      while (logs.length === 0 && Date.now() < deadline) await new Promise((res) => setTimeout(res, 20));
      expect(logs[0]!.action).toBe('ICAP_BLOCKED');
      // Before the answer, what arrived was stored: bounded by drainAfterAnswer.bytes (plus what
      // arrived before the verdict and one read), not the whole 32 MiB.
      expect(logs[0]!.request_body_length).toBeLessThan(20 * 1024 * 1024);
    } finally {
      await app?.close();
      app = undefined;
      await icap.close();
    }
  });
});
