/**
 * Chunking cannot amplify: 1 MiB sent as 1-byte HTTP chunks (Nagle off, so the application's
 * parser hands the body over one byte at a time) is answered, reaches the handler byte for
 * byte, and is forwarded to the ICAP server in a bounded number of ICAP chunks, not one per
 * byte (it used to be a million, and the request got no answer in 120 s). Express 5, Fastify
 * and Koa 3. What is bounded is a count (chunks on the ICAP wire), not a time; the deadline is
 * only there so that a regression fails instead of hanging.
 */
import { connect } from 'node:net';
import type { IcapProfile } from '@icapkit/core';
import { type IcapTestServer, type RecordedRequest, startIcapServer } from '@icapkit/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type App, type Framework, startApp } from '../conformance/apps.js';

const FRAMEWORKS: Framework[] = ['express5', 'fastify', 'koa3'];
const SIZE = 1024 * 1024;
/** Generous: the client alone needs a few seconds for a million chunks on a busy machine. */
const DEADLINE_MS = 90_000;
/** 1-byte chunks per TCP write (each still a chunk of its own for the HTTP parser). */
const FRAMES_PER_WRITE = 512;

function body(): Buffer {
  const b = Buffer.allocUnsafe(SIZE);
  for (let i = 0; i < SIZE; i++) b[i] = 0x41 + ((i * 7) % 26);
  return b;
}

/** Bytes of one 1-byte chunk on the wire: `1\r\nX\r\n`. */
const FRAME = 6;

/** `data` as 1-byte HTTP chunks (the last-chunk not included). */
function framed(data: Buffer): Buffer {
  const wire = Buffer.allocUnsafe(data.length * FRAME);
  for (let i = 0; i < data.length; i++) {
    const at = i * FRAME;
    wire[at] = 0x31;
    wire[at + 1] = 0x0d;
    wire[at + 2] = 0x0a;
    wire[at + 3] = data[i]!;
    wire[at + 4] = 0x0d;
    wire[at + 5] = 0x0a;
  }
  return wire;
}

/** Sends `data` as 1-byte chunks; resolves with the status of the answer (0: none before the deadline). */
function sendOneByteChunks(url: string, data: Buffer): Promise<{ status: number; text: string }> {
  const { port } = new URL(url);
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port: Number(port) });
    socket.setNoDelay(true);
    let got = Buffer.alloc(0);
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      const text = got.toString('latin1');
      resolve({ status: Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0), text });
    };
    const timer = setTimeout(finish, DEADLINE_MS);
    socket.on('data', (d: Buffer) => {
      got = Buffer.concat([got, d]);
      const text = got.toString('latin1');
      const head = text.indexOf('\r\n\r\n');
      const length = /\r\ncontent-length: *(\d+)/i.exec(text)?.[1];
      if (head !== -1 && length !== undefined && got.length >= head + 4 + Number(length)) finish();
    });
    socket.on('error', finish);
    socket.on('close', finish);
    socket.once('connect', async () => {
      socket.write(
        'POST /raw HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n',
      );
      const wire = framed(data);
      const step = FRAMES_PER_WRITE * FRAME;
      for (let at = 0; at < wire.length && !done; at += step) {
        if (!socket.write(wire.subarray(at, at + step)))
          await new Promise<void>((r) => {
            socket.once('drain', r);
            socket.once('close', r);
          });
      }
      if (!done) socket.write('0\r\n\r\n');
    });
  });
}

/** Sends `data` with a Content-Length, one byte per TCP write (each waits for the previous one). */
function sendOneByteWrites(url: string, data: Buffer): Promise<{ status: number }> {
  const { port } = new URL(url);
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port: Number(port) });
    socket.setNoDelay(true);
    let got = '';
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      resolve({ status: Number(/^HTTP\/1\.1 (\d{3})/.exec(got)?.[1] ?? 0) });
    };
    const timer = setTimeout(finish, DEADLINE_MS);
    socket.setEncoding('latin1');
    socket.on('data', (d: string) => {
      got += d;
      if (got.includes('\r\n\r\n')) finish();
    });
    socket.on('error', finish);
    socket.on('close', finish);
    socket.once('connect', async () => {
      socket.write(
        `POST /raw HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\nContent-Length: ${data.length}\r\n\r\n`,
      );
      for (let i = 0; i < data.length && !done; i++)
        await new Promise<void>((r) => socket.write(data.subarray(i, i + 1), () => r()));
    });
  });
}

/** Chunks (non-empty) in the chunked body of a recorded ICAP request. */
function icapChunks(rec: RecordedRequest): { chunks: number; bytes: number } {
  const raw = rec.raw!;
  let at = rec.rawHead.length;
  let chunks = 0;
  let bytes = 0;
  while (at < raw.length) {
    const eol = raw.indexOf('\r\n', at);
    if (eol === -1) break;
    const size = Number.parseInt(raw.toString('latin1', at, eol).split(';')[0]!, 16);
    if (size === 0) {
      // The end of the preview (or of the body): the rest, after 100 Continue, follows.
      at = eol + 4;
      continue;
    }
    chunks++;
    bytes += size;
    at = eol + 2 + size + 2;
  }
  return { chunks, bytes };
}

describe('1 MiB in 1-byte chunks: answered, delivered whole, forwarded in a bounded number of ICAP chunks', () => {
  let server: IcapTestServer;
  const apps = new Map<Framework, App>();
  const data = body();

  beforeAll(async () => {
    server = await startIcapServer();
    for (const framework of FRAMEWORKS) {
      const profile: IcapProfile = {
        name: `tiny-${framework}`,
        poolGroup: server.url(),
        serviceUri: '/avscan',
        bufferSize: 4 * SIZE,
        responseTimeout: DEADLINE_MS,
        bodyTimeout: DEADLINE_MS,
        onLog: () => {},
      };
      apps.set(framework, await startApp(framework, profile));
    }
  });

  afterAll(async () => {
    await Promise.all([...apps.values()].map((a) => a.close()));
    await server?.close();
  });

  for (const framework of FRAMEWORKS) {
    it(
      `${framework}`,
      async () => {
        const app = apps.get(framework)!;
        server.reset();
        const r = await sendOneByteChunks(app.url, data);
        expect(r.status).toBe(200);
        expect(app.seen.at(-1)?.raw?.equals(data)).toBe(true);
        const reqmod = server.requests.filter((q) => q.method === 'REQMOD');
        expect(reqmod).toHaveLength(1);
        const { chunks, bytes } = icapChunks(reqmod[0]!);
        expect(bytes).toBe(SIZE);
        // One ICAP chunk per 64 bytes at most (in practice far fewer); it was one per byte.
        expect(chunks).toBeLessThanOrEqual(SIZE / 64);
      },
      DEADLINE_MS + 10_000,
    );

    it(
      `${framework}: 32 KiB in 1-byte TCP writes (Content-Length)`,
      async () => {
        const app = apps.get(framework)!;
        server.reset();
        const small = data.subarray(0, 32 * 1024);
        const r = await sendOneByteWrites(app.url, small);
        expect(r.status).toBe(200);
        expect(app.seen.at(-1)?.raw?.equals(small)).toBe(true);
        const reqmod = server.requests.filter((q) => q.method === 'REQMOD');
        expect(reqmod).toHaveLength(1);
        const { chunks, bytes } = icapChunks(reqmod[0]!);
        expect(bytes).toBe(small.length);
        // Readers are woken per 16 KiB or every few ms, not per byte: far fewer chunks than bytes.
        expect(chunks).toBeLessThanOrEqual(small.length / 8);
      },
      DEADLINE_MS + 10_000,
    );
  }
});
