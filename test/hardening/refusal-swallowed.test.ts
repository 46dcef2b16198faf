/**
 * A refused request's body goes to nobody, even when the application undoes the refusal
 * (campaign-af AF1). With `refusals: 'error'` the middleware hands the refusal to the next error
 * middleware; one that logs it and calls `next()` without it resumes the chain, and the body
 * parser and the handler after it run. The body was never scanned (refused before it was read,
 * or read only in part): they must get none of it.
 */
import type { AddressInfo } from 'node:net';
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
});
