/**
 * Wrong order is an immediate, clear error (issue 15, item 5): a body parser mounted before
 * icapkit has read the body, which was never scanned and can no longer be. The request is
 * refused at once with 500 and ICAP_ERR_BODY_CONSUMED (not a bodyTimeout wait and a 408
 * blaming the client), the handler never runs, and the fix ("mount icap() before body
 * parsers") is reported once per middleware, not per request. Parsers that skipped the
 * request (they only set an empty body) are not a reason to refuse it.
 */
import type { Buffer } from 'node:buffer';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { IcapProfile } from '@icapkit/core';
import { eicar, type IcapTestServer, startIcapServer } from '@icapkit/testing';
import { bodyParser } from '@koa/bodyparser';
import express5 from 'express';
import { koaBody } from 'koa-body';
import multer from 'multer';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Framework } from '../conformance/apps.js';
import { capture, expectConsumedRecords } from '../support/consumed-capture.js';
import { multipart, send } from '../support/http-client.js';
import { type RefusalApp, type RefusalAppOptions, startRefusalApp } from './refusal-apps.js';

let icap: IcapTestServer;
beforeAll(async () => {
  icap = await startIcapServer({ recordBodies: false });
});
afterAll(() => icap?.close());

const BODY_TIMEOUT = 20_000;

const json = { 'content-type': 'application/json', accept: 'application/json' };

async function refusedAtOnce(
  framework: Framework,
  options: RefusalAppOptions,
  request: { body: Buffer | string; headers: Record<string, string> },
): Promise<void> {
  const c = capture();
  const profile: IcapProfile = {
    name: 'order',
    poolGroup: icap.url(),
    serviceUri: '/avscan',
    bodyTimeout: BODY_TIMEOUT,
    logger: c.logger,
  };
  let app: RefusalApp | undefined;
  try {
    app = await startRefusalApp(framework, profile, options);
    for (let i = 0; i < 2; i++) {
      const t0 = performance.now();
      const r = await send(app.url, '/upload', { ...request, timeoutMs: BODY_TIMEOUT + 5000 });
      const elapsed = performance.now() - t0;
      expect(r.status).toBe(500);
      expect(elapsed).toBeLessThan(BODY_TIMEOUT / 2);
      if (options.adapter?.refusals !== 'error') {
        expect(JSON.parse(r.text)).toMatchObject({ type: 'urn:icapkit:problem:misconfigured', status: 500 });
        // Nothing about the application's set-up is told to the client.
        expect(r.text).not.toMatch(/body parser|icap\(\)/);
      }
    }
    expect(app.handled).toEqual([]);
    expect(app.logs).toHaveLength(2);
    expectConsumedRecords(app.logs);
    // Warnings are emitted on the next tick: give them a turn to arrive before looking.
    await new Promise((r) => setImmediate(r));
    expect(c.warnings).toHaveLength(1);
    expect(c.warnings[0]!.message).toContain('mount icap() before body parsers');
    // Once on the logger too (Fastify logs to request.log instead of the profile's logger).
    if (framework !== 'fastify')
      expect(
        c.errors.filter((e) => (e.obj as { code?: string }).code === 'ICAP_ERR_BODY_CONSUMED'),
      ).toHaveLength(1);
    if (options.adapter?.refusals === 'error') {
      expect(app.errors).toHaveLength(2);
      expect(app.errors[0]).toMatchObject({ code: 'ICAP_ERR_BODY_CONSUMED', status: 500, expose: false });
    }
  } finally {
    c.stop();
    await app?.close();
  }
}

async function passes(
  framework: Framework,
  options: RefusalAppOptions,
  request: { body: Buffer | string; headers: Record<string, string> },
  expected = 200,
): Promise<void> {
  const profile: IcapProfile = { name: 'order', poolGroup: icap.url(), serviceUri: '/avscan' };
  const app = await startRefusalApp(framework, profile, options);
  try {
    const r = await send(app.url, '/upload', request);
    expect(r.status).toBe(expected);
    expect(app.logs[0]?.error_code).not.toBe('ICAP_ERR_BODY_CONSUMED');
  } finally {
    await app.close();
  }
}

describe.each(['express5', 'express4'] as const)('%s', (framework) => {
  const express = express5;
  it('express.json() before icap(): 500 at once', () =>
    refusedAtOnce(framework, { before: express.json() }, { body: '{"a":1}', headers: json }));
  it('express.raw() before icap(): 500 at once', () =>
    refusedAtOnce(
      framework,
      { before: express.raw({ type: () => true }) },
      { body: eicar(), headers: { 'content-type': 'application/octet-stream', accept: 'application/json' } },
    ));
  it('express.urlencoded() before icap(): 500 at once', () =>
    refusedAtOnce(
      framework,
      { before: express.urlencoded({ extended: false }) },
      {
        body: 'a=1',
        headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
      },
    ));
  it('multer before icap(): 500 at once', () => {
    const form = multipart([{ name: 'file', filename: 'a.txt', data: 'hello' }]);
    return refusedAtOnce(
      framework,
      { before: multer({ storage: multer.memoryStorage() }).any() },
      { body: form.body, headers: { 'content-type': form.contentType, accept: 'application/json' } },
    );
  });
  it("with refusals: 'error' the error handler gets ICAP_ERR_BODY_CONSUMED", () =>
    refusedAtOnce(
      framework,
      { before: express.json(), adapter: { refusals: 'error' } },
      { body: '{"a":1}', headers: json },
    ));
  it('a parser before icap() that skipped the request (not its type) is no reason to refuse', async () => {
    const form = multipart([{ name: 'file', filename: 'a.txt', data: 'hello' }]);
    await passes(
      framework,
      { before: express.json(), after: multer({ storage: multer.memoryStorage() }).any() },
      { body: form.body, headers: { 'content-type': form.contentType } },
    );
    // ...and what it skipped is still scanned.
    await passes(
      framework,
      { before: express.json() },
      { body: eicar(), headers: { 'content-type': 'application/octet-stream' } },
      403,
    );
  });
});

describe.each(['koa3', 'koa2'] as const)('%s', (framework) => {
  // koa-body's formidable writes each file to a temporary file before icap() refuses the
  // request: in a directory of this suite's own, removed after it, not in the system's tmp.
  const uploadDir = mkdtempSync(join(tmpdir(), 'icapkit-body-consumed-'));
  afterAll(() => rmSync(uploadDir, { recursive: true, force: true }));
  it('koaBody() before icap(): 500 at once', () =>
    refusedAtOnce(framework, { before: koaBody() }, { body: '{"a":1}', headers: json }));
  it('koaBody({ multipart: true }) before icap(): 500 at once', () => {
    const form = multipart([{ name: 'file', filename: 'a.txt', data: 'hello' }]);
    return refusedAtOnce(
      framework,
      { before: koaBody({ multipart: true, formidable: { uploadDir } }) },
      { body: form.body, headers: { 'content-type': form.contentType, accept: 'application/json' } },
    );
  });
  it('@koa/bodyparser before icap(): 500 at once', () =>
    refusedAtOnce(framework, { before: bodyParser() }, { body: '{"a":1}', headers: json }));
  it('a parser before icap() that skipped the request is no reason to refuse', async () => {
    // @koa/bodyparser sets ctx.request.body = {} for a type it does not parse.
    await passes(
      framework,
      { before: bodyParser() },
      { body: 'clean bytes', headers: { 'content-type': 'application/octet-stream' } },
    );
    await passes(
      framework,
      { before: bodyParser() },
      { body: eicar(), headers: { 'content-type': 'application/octet-stream' } },
      403,
    );
  });
});

describe('fastify', () => {
  it('a body parser run on request.raw in an onRequest hook (middie style): 500 at once', () => {
    const parse = express5.json();
    return refusedAtOnce(
      'fastify',
      {
        before: (request: { raw: never }, reply: { raw: never }, done: (err?: unknown) => void) =>
          parse(request.raw, reply.raw, done),
      },
      { body: '{"a":1}', headers: json },
    );
  });
  it('an onRequest hook that read request.raw: 500 at once', () =>
    refusedAtOnce(
      'fastify',
      {
        before: async (request: { raw: AsyncIterable<Buffer> }) => {
          for await (const _ of request.raw);
        },
      },
      { body: eicar(), headers: { 'content-type': 'application/octet-stream', accept: 'application/json' } },
    ));
  it('a body already set on the request: 500 at once', () =>
    refusedAtOnce(
      'fastify',
      {
        before: async (request: { body: unknown }) => {
          request.body = { parsed: 'elsewhere' };
        },
      },
      { body: '{"a":1}', headers: json },
    ));
  it('an onRequest hook that does not touch the body changes nothing', async () => {
    await passes(
      'fastify',
      { before: async () => {} },
      { body: eicar(), headers: { 'content-type': 'a/b' } },
      403,
    );
    await passes(
      'fastify',
      { before: async () => {} },
      { body: 'clean', headers: { 'content-type': 'a/b' } },
    );
  });
});
