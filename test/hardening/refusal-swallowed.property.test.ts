/**
 * Scanned equals delivered, when the application undoes a refusal (campaign-af AF1),
 * property-based: with `refusals: 'error'`, an Express error middleware that logs the refusal
 * and calls `next()` without it resumes the chain, and a body parser and the handler after it
 * run. Whatever the refusal (a declared length over bufferSize, a length crossed while chunked,
 * a content type, coding or charset refused from the head, a threat), whatever the framing and
 * the parser, the handler never gets a byte of EICAR: what was not scanned was discarded.
 *
 * `ICAPKIT_SWALLOWED_RUNS` sets the requests per Express version (default 40).
 */
import type { AddressInfo } from 'node:net';
import { icap } from '@icapkit/express';
import { eicar, type IcapTestServer, startIcapServer } from '@icapkit/testing';
import express from 'express';
import express4 from 'express4';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkAsyncProperty, runsFromEnv } from '../fuzz/support.js';
import { send } from '../support/http-client.js';

const RUNS = runsFromEnv('ICAPKIT_SWALLOWED_RUNS', 40);
const EICAR = eicar().toString('latin1');
const BUFFER_SIZE = 2048;

let server: IcapTestServer;
beforeAll(async () => {
  server = await startIcapServer({ recordBodies: false });
});
afterAll(() => server?.close());

type Trigger = 'too-long' | 'crossed' | 'type' | 'coding' | 'charset' | 'threat';
type Parser = 'raw' | 'text' | 'json';

interface Case {
  trigger: Trigger;
  parser: Parser;
  chunk: number | undefined;
  before: number;
  after: number;
}

/** The request for a case: EICAR between padding, with what makes it refused. */
function requestOf(c: Case): { body: Buffer; headers: Record<string, string>; chunked?: number } {
  const long = c.trigger === 'too-long' || c.trigger === 'crossed';
  const pad = (n: number) => 'a'.repeat(long ? n + BUFFER_SIZE : n);
  const text = `${pad(c.before)}${EICAR}${'b'.repeat(c.after)}`;
  const body = Buffer.from(c.parser === 'json' ? JSON.stringify({ f: text }) : text, 'latin1');
  const type = { raw: 'application/octet-stream', text: 'text/plain', json: 'application/json' }[c.parser];
  const headers: Record<string, string> = { 'content-type': type };
  if (c.trigger === 'type') headers['content-type'] = 'image/png';
  if (c.trigger === 'coding') headers['content-encoding'] = 'x-unknown';
  if (c.trigger === 'charset') headers['content-type'] = `${type}; charset=utf-16`;
  const chunked = c.trigger === 'crossed' ? (c.chunk ?? 512) : c.chunk;
  return chunked === undefined ? { body, headers } : { body, headers, chunked };
}

const caseArb: fc.Arbitrary<Case> = fc.record({
  trigger: fc.constantFrom<Trigger>('too-long', 'crossed', 'type', 'coding', 'charset', 'threat'),
  parser: fc.constantFrom<Parser>('raw', 'text', 'json'),
  chunk: fc.option(fc.integer({ min: 1, max: 700 }), { nil: undefined }),
  before: fc.integer({ min: 0, max: 600 }),
  after: fc.integer({ min: 0, max: 600 }),
});

describe.each([
  ['express5', express],
  ['express4', express4],
] as const)("%s: an error middleware that swallows the refusal (refusals: 'error')", (_name, framework) => {
  it('never hands the handler a byte the scan did not approve', async () => {
    const seen = { errors: [] as string[], bodies: [] as string[] };
    const scan = icap(
      {
        name: 'swallowed',
        poolGroup: server.url(),
        serviceUri: '/avscan',
        bufferSize: BUFFER_SIZE,
        allowedContentTypes: ['application/octet-stream', 'text/plain', 'application/json'],
      },
      { refusals: 'error' },
    );
    const app = (framework as typeof express)();
    app.use(scan);
    app.use(
      (err: { code?: string }, _req: express.Request, _res: express.Response, next: express.NextFunction) => {
        seen.errors.push(String(err.code));
        next();
      },
    );
    const limit = '1mb';
    app.use((framework as typeof express).raw({ type: ['application/octet-stream', 'image/png'], limit }));
    app.use((framework as typeof express).text({ type: 'text/plain', limit }));
    app.use((framework as typeof express).json({ limit }));
    app.post('/up', (req, res) => {
      const b = req.body as unknown;
      seen.bodies.push(
        Buffer.isBuffer(b) ? b.toString('latin1') : typeof b === 'string' ? b : JSON.stringify(b ?? null),
      );
      res.json({ ok: true });
    });
    app.use(
      (
        err: { status?: number },
        _req: express.Request,
        res: express.Response,
        _next: express.NextFunction,
      ) => {
        if (!res.headersSent) res.status(err.status ?? 500).json({ failed: true });
      },
    );
    const http = app.listen(0, '127.0.0.1');
    await new Promise<void>((resolve) => http.once('listening', () => resolve()));
    const url = `http://127.0.0.1:${(http.address() as AddressInfo).port}`;
    try {
      await checkAsyncProperty(
        'a swallowed refusal hands nothing unscanned on',
        fc.asyncProperty(caseArb, async (c) => {
          seen.errors.length = 0;
          seen.bodies.length = 0;
          const r = await send(url, '/up', { ...requestOf(c), timeoutMs: 10_000 });
          expect(seen.errors.length, `refused: ${JSON.stringify(c)}`).toBe(1);
          expect(seen.bodies.join(''), JSON.stringify(c)).not.toContain('EICAR-STANDARD');
          expect(r.text).not.toContain('EICAR-STANDARD');
        }),
        RUNS,
      );
    } finally {
      http.closeAllConnections();
      await new Promise<void>((resolve) => http.close(() => resolve()));
      await scan.close();
    }
  }, 120_000);
});
