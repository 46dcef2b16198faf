/**
 * A refused request's body goes to nobody, even when the application undoes the refusal
 * (campaign-af AF1). With `refusals: 'error'` the middleware hands the refusal to the next error
 * middleware; one that logs it and calls `next()` without it resumes the chain, and the body
 * parser and the handler after it run. The body was never scanned (refused before it was read,
 * or read only in part): they must get none of it.
 */
import { type AddressInfo, connect } from 'node:net';
import { icap } from '@icapkit/express';
import { eicar, type IcapTestServer, startIcapServer } from '@icapkit/testing';
import express from 'express';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { send } from '../support/http-client.js';

let server: IcapTestServer;
beforeAll(async () => {
  server = await startIcapServer({ recordBodies: false });
});
afterAll(() => server?.close());

const EICAR = eicar().toString('latin1');

async function withApp(
  profile: Record<string, unknown>,
  fn: (url: string, seen: { errors: string[]; bodies: string[] }) => Promise<void>,
) {
  const seen = { errors: [] as string[], bodies: [] as string[] };
  const scan = icap(
    { name: 'swallowed', poolGroup: server.url(), serviceUri: '/avscan', ...profile },
    { refusals: 'error' },
  );
  const app = express();
  app.use(scan);
  // An error middleware that logs and carries on: the mistake this test is about.
  app.use(
    (err: { code?: string }, _req: express.Request, _res: express.Response, next: express.NextFunction) => {
      seen.errors.push(String(err.code));
      next();
    },
  );
  app.use(express.raw({ type: () => true, limit: '10mb' }));
  app.post('/up', (req, res) => {
    seen.bodies.push(
      Buffer.isBuffer(req.body) ? req.body.toString('latin1') : JSON.stringify(req.body ?? null),
    );
    res.json({ length: Buffer.isBuffer(req.body) ? req.body.length : null });
  });
  app.use(
    (err: { status?: number }, _req: express.Request, res: express.Response, _next: express.NextFunction) => {
      res.status(err.status ?? 500).json({ failed: true });
    },
  );
  const http = app.listen(0, '127.0.0.1');
  await new Promise<void>((resolve) => http.once('listening', () => resolve()));
  try {
    await fn(`http://127.0.0.1:${(http.address() as AddressInfo).port}`, seen);
  } finally {
    http.closeAllConnections();
    await new Promise<void>((resolve) => http.close(() => resolve()));
    await scan.close();
  }
}

describe("express: an error middleware that swallows a refusal (refusals: 'error')", () => {
  it('a body refused by its declared length (413, never read) reaches nothing after it', async () => {
    await withApp({ bufferSize: 1024 }, async (url, seen) => {
      const body = Buffer.from(EICAR + 'x'.repeat(8 * 1024), 'latin1');
      const r = await send(url, '/up', { body, headers: { 'content-type': 'application/octet-stream' } });
      expect(seen.errors).toEqual(['ICAP_ERR_REQUEST_TOO_LARGE']);
      expect(seen.bodies.join('')).not.toContain('EICAR');
      expect(r.text).not.toContain('EICAR');
    });
  });

  it('a small body refused from its head (415), all of it arrived with the head, reaches nothing after it', async () => {
    await withApp({ allowedContentTypes: ['application/json'] }, async (url, seen) => {
      const r = await send(url, '/up', {
        body: EICAR,
        headers: { 'content-type': 'application/octet-stream' },
      });
      expect(seen.errors).toEqual(['ICAP_ERR_CONTENT_TYPE']);
      expect(seen.bodies.join('')).not.toContain('EICAR');
      expect(r.text).not.toContain('EICAR');
    });
  });

  it('a chunked body refused while it arrives (bufferSize crossed) reaches nothing after it', async () => {
    await withApp({ bufferSize: 1024 }, async (url, seen) => {
      const body = Buffer.from('x'.repeat(2048) + EICAR + 'y'.repeat(4096), 'latin1');
      const r = await send(url, '/up', {
        body,
        chunked: 512,
        headers: { 'content-type': 'application/octet-stream' },
      });
      expect(seen.errors).toEqual(['ICAP_ERR_REQUEST_TOO_LARGE']);
      expect(seen.bodies.join('')).not.toContain('EICAR');
      expect(seen.bodies.join('')).not.toContain('yyyy');
      expect(r.text).not.toContain('EICAR');
    });
  });

  it('an endless upload after a swallowed refusal: the parser after it ends at once, the answer goes out, the connection closes (campaign-ah AH1)', async () => {
    for (const drainAfterAnswer of [undefined, { bytes: 1024 * 1024, timeout: 0 }]) {
      await withApp(
        { bufferSize: 1024, ...(drainAfterAnswer ? { drainAfterAnswer } : {}) },
        async (url, seen) => {
          const { port } = new URL(url);
          const socket = connect(Number(port), '127.0.0.1');
          let got = '';
          let closed = false;
          socket.on('data', (d: Buffer) => {
            got += d.toString('latin1');
          });
          socket.on('error', () => {});
          socket.on('close', () => {
            closed = true;
          });
          socket.write(
            'POST /up HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n',
          );
          const chunk = `${(16 * 1024).toString(16)}\r\n${'A'.repeat(16 * 1024)}\r\n`;
          // 16 KiB every 10 ms until the server closes, for at most 10 s.
          const deadline = Date.now() + 10_000;
          while (!closed && Date.now() < deadline) {
            if (!socket.destroyed) socket.write(chunk);
            await new Promise((r) => setTimeout(r, 10));
          }
          socket.destroy();
          expect(closed, JSON.stringify(drainAfterAnswer)).toBe(true);
          expect(seen.errors).toEqual(['ICAP_ERR_REQUEST_TOO_LARGE']);
          // The handler ran with an empty body and answered.
          expect(seen.bodies).toEqual(['']);
          if (drainAfterAnswer === undefined) expect(got.split('\r\n')[0]).toBe('HTTP/1.1 200 OK');
        },
      );
    }
  }, 30_000);
});
