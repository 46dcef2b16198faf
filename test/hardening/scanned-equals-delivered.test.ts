/**
 * "Scanned equals delivered" from the request head: what a body parser or handler could read
 * differently from the bytes the scanner saw is refused (4xx, whatever the failure action), and
 * a method override the application honours cannot steer a request into a skip rule.
 *
 * - a `charset` whose decoding changes ASCII text (UTF-16, UTF-7...): body-parser decodes
 *   `application/json; charset=utf-16le` with iconv-lite, so the scanner would see NULs between
 *   the letters of a signature the handler reads whole: 415 ICAP_ERR_CONTENT_TYPE;
 * - a Content-Type that mentions `multipart` but is not multipart/*: formidable (`/multipart/i`)
 *   reads it as a form and decodes base64 parts, icapkit would scan one opaque body: 415
 *   ICAP_ERR_MULTIPART;
 * - `?_method=PUT` (method-override's query getter) and a `_method` field in a form body count
 *   as method readings, so "scan PUT, skip the rest" scans `POST /upload?_method=PUT`.
 */
import type { AddressInfo } from 'node:net';
import { parse as parseQueryString } from 'node:querystring';
import { Writable } from 'node:stream';
import type { IcapLog, IcapProfile } from '@icapkit/core';
import { icap as expressIcap } from '@icapkit/express';
import { eicar, type IcapTestServer, startIcapServer } from '@icapkit/testing';
import express5 from 'express';
import formidable from 'formidable';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { send } from '../support/http-client.js';
import {
  type Framework,
  REFUSAL_FRAMEWORKS,
  type RefusalAppOptions,
  startRefusalApp,
} from './refusal-apps.js';

let icap: IcapTestServer;
beforeAll(async () => {
  icap = await startIcapServer({ recordBodies: true });
});
afterAll(() => icap?.close());

const E = eicar().toString('latin1');
const FAIL_ACTIONS = ['fail-closed', 'fail-open'] as const;

const profile = (over: Partial<IcapProfile> = {}): IcapProfile => ({
  name: 'delivered',
  poolGroup: icap.url(),
  serviceUri: '/avscan',
  startupCheck: 'off',
  ...over,
});

const reqmods = () => icap.requests.filter((r) => r.method === 'REQMOD');

async function withApp(
  framework: Framework,
  p: IcapProfile,
  fn: (app: Awaited<ReturnType<typeof startRefusalApp>>) => Promise<void>,
  options: RefusalAppOptions = {},
): Promise<void> {
  const app = await startRefusalApp(framework, p, options);
  try {
    icap.reset();
    await fn(app);
  } finally {
    await app.close();
  }
}

const utf16le = (s: string) => Buffer.from(s, 'utf16le');
const utf16be = (s: string) => utf16le(s).swap16();
/** UTF-7 with every character as a base64 run: no byte of the signature appears as it is. */
const utf7 = (s: string) => Buffer.from(`+${utf16be(s).toString('base64').replace(/=+$/, '')}-`);

/** [name, Content-Type, body]: each decodes (by its charset) to text holding EICAR. */
const CHARSET_CASES: Array<[string, string, Buffer]> = [
  ['JSON utf-16le', 'application/json; charset=utf-16le', utf16le(JSON.stringify({ x: E }))],
  [
    'JSON utf-16 with a BOM',
    'application/json; charset=UTF-16',
    Buffer.concat([Buffer.from([0xff, 0xfe]), utf16le(JSON.stringify({ x: E }))]),
  ],
  ['JSON utf-16be, quoted', 'application/json; charset="utf-16be"', utf16be(JSON.stringify({ x: E }))],
  ['text utf-7', 'text/plain; charset=utf-7', utf7(E)],
  ['octets utf-32le', 'application/octet-stream; charset=UTF-32LE', Buffer.from(E)],
  // Node's Buffer 'ascii' decoding clears the high bit: a handler decoding by the label reads EICAR.
  [
    'ascii (Node clears the high bit)',
    'text/plain; charset=ascii',
    Buffer.from(eicar().map((b) => b | 0x80)),
  ],
  ['a second charset', 'text/plain; charset=utf-8; charset=utf-16le', utf16le(E)],
  ['charset inside another parameter', 'text/plain; x="charset=utf-16le"', utf16le(E)],
];

describe.each(REFUSAL_FRAMEWORKS)('%s', (framework) => {
  describe.each(FAIL_ACTIONS)('%s', (failAction) => {
    it.each(CHARSET_CASES)('a body with %s is refused (415) before it is scanned', async (_n, ct, body) => {
      await withApp(framework, profile({ failAction }), async (app) => {
        const r = await send(app.url, '/upload', {
          body,
          headers: { 'content-type': ct, accept: 'application/json' },
        });
        expect(r.status).toBe(415);
        expect(JSON.parse(r.text)).toMatchObject({ status: 415 });
        expect(app.handled).toEqual([]);
        expect(reqmods()).toEqual([]);
        expect(app.logs).toHaveLength(1);
        expect(app.logs[0]).toMatchObject({
          action: 'ICAP_BLOCKED',
          error_code: 'ICAP_ERR_CONTENT_TYPE',
          http_response_code: 415,
        });
        expect(app.logs[0]!.significance).toContain('CONTENT_TYPE_REFUSED');
        expect(app.logs[0]!.error_message).toMatch(/charset/);
      });
    });

    it.each([
      'text/plain; charset=UTF-8',
      'text/plain; charset="utf8"',
      'application/json; charset=us-ascii',
      'text/plain; charset=ISO-8859-1',
      'text/plain; charset=latin1',
      'text/plain; charset=windows-1252',
    ])('%s is scanned and passed (clean) or blocked (EICAR)', async (ct) => {
      await withApp(framework, profile({ failAction }), async (app) => {
        const clean = await send(app.url, '/upload', {
          body: '{"a":"hello"}',
          headers: { 'content-type': ct },
        });
        expect(clean.status).toBe(200);
        expect(app.handled).toEqual(['/upload']);
        const bad = await send(app.url, '/upload', { body: eicar(), headers: { 'content-type': ct } });
        expect(bad.status).toBe(403);
        expect(app.handled).toEqual(['/upload']);
        expect(reqmods()).toHaveLength(2);
      });
    });

    it.each([
      ['text/plain with a boundary and x=multipart', 'text/plain; boundary=XyZ123; x=multipart'],
      ['application/x-multipart', 'application/x-multipart; boundary=XyZ123'],
      ['a MULTIPART parameter name', 'application/octet-stream; MULTIPART=1; boundary=XyZ123'],
    ])('a Content-Type naming multipart that is not multipart/* (%s) is refused (415)', async (_n, ct) => {
      for (const otherMultipart of ['refuse', 'whole'] as const) {
        await withApp(framework, profile({ failAction, otherMultipart }), async (app) => {
          const r = await send(app.url, '/upload', {
            body: base64Form(),
            headers: { 'content-type': ct, accept: 'application/json' },
          });
          expect(r.status).toBe(415);
          expect(app.handled).toEqual([]);
          expect(reqmods()).toEqual([]);
          expect(app.logs[0]).toMatchObject({
            action: 'ICAP_BLOCKED',
            error_code: 'ICAP_ERR_MULTIPART',
            http_response_code: 415,
          });
          expect(app.logs[0]!.significance).toContain('MULTIPART_REFUSED');
        });
      }
    });

    describe('method override readings (rules: scan PUT, skip the rest)', () => {
      const rules = [
        { name: 'scan-put', match: { method: ['PUT'] }, action: 'enable-icap' as const },
        { name: 'skip-rest', action: 'skip' as const },
      ];
      const octets = { 'content-type': 'application/octet-stream' };

      it('a POST without an override is still skipped (control)', async () => {
        await withApp(framework, profile({ failAction, rules }), async (app) => {
          const r = await send(app.url, '/upload', { body: eicar(), headers: octets });
          expect(r.status).toBe(200);
          expect(reqmods()).toEqual([]);
          expect(app.logs[0]).toMatchObject({ action: 'ICAP_DISABLED', rule_name: 'skip-rest' });
        });
      });

      it.each([
        '/upload?_method=PUT',
        '/upload?_method=put',
        '/upload?%5Fmethod=PUT',
        '/upload?_method=%50UT',
        '/upload?a=1&_method=GET&_method=PUT',
      ])('POST %s is scanned (EICAR is blocked)', async (path) => {
        await withApp(framework, profile({ failAction, rules }), async (app) => {
          const r = await send(app.url, path, { method: 'POST', body: eicar(), headers: octets });
          expect(r.status).toBe(403);
          expect(app.handled).toEqual([]);
          expect(reqmods()).toHaveLength(1);
          expect(app.logs[0]).toMatchObject({ action: 'ICAP_BLOCKED', rule_name: 'scan-put' });
        });
      });

      it.each([
        ['urlencoded', 'application/x-www-form-urlencoded', Buffer.from(`_method=PUT&f=${E}`)],
        ['multipart', `multipart/form-data; boundary=${BOUNDARY}`, formWith('_method', 'PUT', eicar())],
      ])('a POST with a %s body (which may carry _method) is scanned', async (_n, ct, body) => {
        await withApp(framework, profile({ failAction, rules }), async (app) => {
          const r = await send(app.url, '/upload', { body, headers: { 'content-type': ct } });
          expect(r.status).toBe(403);
          expect(app.handled).toEqual([]);
          expect(reqmods().length).toBeGreaterThan(0);
          expect(app.logs[0]).toMatchObject({ action: 'ICAP_BLOCKED', rule_name: 'scan-put' });
        });
      });
    });
  });
});

describe('end to end with the parsers that read the body differently (Express 5)', () => {
  it("method-override's query getter cannot route a skipped POST to the PUT handler", async () => {
    const logs: IcapLog[] = [];
    const got: Buffer[] = [];
    const mw = expressIcap(
      profile({
        failAction: 'fail-open',
        onLog: (l) => logs.push(l),
        rules: [
          { name: 'scan-put', match: { method: ['PUT'] }, action: 'enable-icap' },
          { name: 'skip-rest', action: 'skip' },
        ],
      }),
    );
    const app = express5();
    app.use(mw);
    // method-override('_method') as documented: its query getter (querystring.parse, first value).
    app.use((req, _res, next) => {
      const q = req.url.indexOf('?');
      const v =
        req.method === 'POST' && q !== -1 ? parseQueryString(req.url.slice(q + 1))._method : undefined;
      const m = Array.isArray(v) ? v[0] : v;
      if (m !== undefined) req.method = m.toUpperCase();
      next();
    });
    app.put('/files', express5.raw({ type: () => true }), (req, res) => {
      got.push(req.body as Buffer);
      res.json({ ok: true });
    });
    const server = app.listen(0, '127.0.0.1');
    await new Promise<void>((resolve) => server.once('listening', () => resolve()));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    try {
      icap.reset();
      const octets = { 'content-type': 'application/octet-stream' };
      const clean = await send(url, '/files?_method=PUT', { method: 'POST', body: 'clean', headers: octets });
      expect(clean.status).toBe(200);
      expect(got.map((b) => b.toString())).toEqual(['clean']);
      const bad = await send(url, '/files?_method=PUT', { method: 'POST', body: eicar(), headers: octets });
      expect(bad.status).toBe(403);
      expect(got).toHaveLength(1);
      expect(reqmods()).toHaveLength(2);
      expect(logs.map((l) => `${l.action}/${l.rule_name}`)).toEqual([
        'ICAP_PASSED/scan-put',
        'ICAP_BLOCKED/scan-put',
      ]);
    } finally {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await mw.close();
    }
  });

  it('express.json decoding UTF-16 never hands the handler an unscanned signature', async () => {
    const seen: unknown[] = [];
    const json = express5.json({ type: () => true });
    const after = (req: express5.Request, res: express5.Response, next: express5.NextFunction) =>
      json(req, res, (err?: unknown) => {
        if (err === undefined) seen.push(req.body);
        next(err);
      });
    await withApp(
      'express5',
      profile(),
      async (app) => {
        const body = utf16le(JSON.stringify({ x: E }));
        const r = await send(app.url, '/upload', {
          body,
          headers: { 'content-type': 'application/json; charset=utf-16le' },
        });
        expect(r.status).toBe(415);
        expect(seen).toEqual([]);
        // The same JSON in UTF-8 is scanned and reaches the handler.
        const plain = await send(app.url, '/upload', {
          body: JSON.stringify({ x: 'hello' }),
          headers: { 'content-type': 'application/json; charset=utf-8' },
        });
        expect(plain.status).toBe(200);
        expect(seen).toEqual([{ x: 'hello' }]);
      },
      { after },
    );
  });

  it('formidable never parses a substring-multipart body into a decoded file', async () => {
    const files: Buffer[] = [];
    const after = (req: express5.Request, _res: express5.Response, next: express5.NextFunction) => {
      const form = formidable({ fileWriteStreamHandler: () => collector(files) });
      form.parse(req, (err) => next(err));
    };
    for (const ct of [
      'text/plain; boundary=XyZ123; x=multipart',
      'application/x-multipart; boundary=XyZ123',
    ]) {
      await withApp(
        'express5',
        profile({ failAction: 'fail-open' }),
        async (app) => {
          const r = await send(app.url, '/upload', { body: base64Form(), headers: { 'content-type': ct } });
          // Without the refusal formidable hands over the base64-decoded EICAR, never scanned.
          expect(Buffer.concat(files).toString('latin1')).toBe('');
          expect(r.status).toBe(415);
          expect(app.handled).toEqual([]);
        },
        { after },
      );
    }
    expect(files).toEqual([]);
  });
});

const BOUNDARY = 'XyZ123';

/** A form whose one file is EICAR in base64 (formidable decodes Content-Transfer-Encoding). */
function base64Form(): Buffer {
  return Buffer.from(
    `--${BOUNDARY}\r\nContent-Disposition: form-data; name="f"; filename="e.txt"\r\n` +
      'Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n' +
      `${eicar().toString('base64')}\r\n--${BOUNDARY}--\r\n`,
  );
}

/** A form with one field and one file. */
function formWith(field: string, value: string, file: Buffer): Buffer {
  return Buffer.concat([
    Buffer.from(`--${BOUNDARY}\r\nContent-Disposition: form-data; name="${field}"\r\n\r\n${value}\r\n`),
    Buffer.from(
      `--${BOUNDARY}\r\nContent-Disposition: form-data; name="f"; filename="e.bin"\r\n` +
        'Content-Type: application/octet-stream\r\n\r\n',
    ),
    file,
    Buffer.from(`\r\n--${BOUNDARY}--\r\n`),
  ]);
}

/** A writable that keeps what formidable writes for a file. */
function collector(into: Buffer[]): Writable {
  return new Writable({
    write(chunk: Buffer, _enc, cb) {
      into.push(chunk);
      cb();
    },
  });
}
