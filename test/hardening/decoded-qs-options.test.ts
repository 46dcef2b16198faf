/**
 * "Scanned equals delivered" for urlencoded bodies an application reads with qs options of its
 * own (body-parser's `defaultCharset`, `charsetSentinel`, `interpretNumericEntities`, koa-body's
 * `queryString`), where qs reads `%XX` as Latin-1 whatever the Content-Type says and `&#NNN;` as
 * a character, and for Content-Types formidable parses as forms or JSON without the usual media
 * type (`/urlencoded/i`, `/json/i`). EICAR (or a UTF-8 signature) built through each trick is
 * refused; a clean field with the same trick passes with the string the parser decodes.
 */
import type { IncomingMessage } from 'node:http';
import type { IcapProfile } from '@icapkit/core';
import { eicar, type IcapTestServer, startIcapServer } from '@icapkit/testing';
import express5 from 'express';
import formidable from 'formidable';
import type Koa from 'koa';
import { koaBody } from 'koa-body';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { send } from '../support/http-client.js';
import { expressReader, koaReader, type Reader } from './decoded-apps.js';

/** A signature of UTF-8 text above U+007F: what an application writes a Latin-1-decoded ö as. */
const SIG = 'Bösartig!';
let icap: IcapTestServer;
beforeAll(async () => {
  icap = await startIcapServer({
    recordBodies: true,
    signatures: [{ name: 'Utf8.Text.Sig', pattern: Buffer.from(SIG, 'utf8') }],
  });
});
afterAll(() => icap?.close());

const E = eicar().toString('latin1');
const enc = encodeURIComponent;
/** qs's sentinel for a body in ISO-8859-1 (`utf8=` + `&#10003;` percent-encoded). */
const ISO_SENTINEL = 'utf8=%26%2310003%3B';
const FORM = 'application/x-www-form-urlencoded';
/** `&#NNN;` percent-encoded as a form sends it, with leading zeros (parseInt ignores them). */
const entity = (c: string, zeros = 0) => `%26%23${'0'.repeat(zeros)}${c.charCodeAt(0)}%3B`;

const profile = (over: Partial<IcapProfile> = {}): IcapProfile => ({
  name: 'qs-options',
  poolGroup: icap.url(),
  serviceUri: '/avscan',
  startupCheck: 'off',
  ...over,
});

const reqmods = () => icap.requests.filter((r) => r.method === 'REQMOD');

const urlencoded5 = (o: object) => () => express5.urlencoded(o as never);
const koaForm = (queryString: object) => () => koaBody({ queryString } as never) as unknown as Koa.Middleware;

/** [reader, Content-Type, body of the trick with `payload` in place, what the clean body reads]. */
type Trick = [string, Reader, string, (payload: string) => string];

const TRICKS: Trick[] = [
  [
    'interpretNumericEntities, a Latin-1 Content-Type',
    expressReader('e5', 'form', 'express5', urlencoded5({ extended: true, interpretNumericEntities: true })),
    `${FORM}; charset=iso-8859-1`,
    (p) => `f=${entity(p[0]!)}${enc(p.slice(1))}`,
  ],
  [
    'interpretNumericEntities + charsetSentinel, no charset',
    expressReader(
      'e5',
      'form',
      'express5',
      urlencoded5({ extended: true, interpretNumericEntities: true, charsetSentinel: true }),
    ),
    FORM,
    (p) => `${ISO_SENTINEL}&f=${entity(p[0]!, 6)}${enc(p.slice(1))}`,
  ],
  [
    'interpretNumericEntities + defaultCharset iso-8859-1 (extended: false)',
    expressReader(
      'e5',
      'form',
      'express5',
      urlencoded5({ extended: false, interpretNumericEntities: true, defaultCharset: 'iso-8859-1' }),
    ),
    FORM,
    (p) => `f=${entity(p[0]!)}${enc(p.slice(1))}`,
  ],
  [
    'koa-body queryString { charset: iso-8859-1, interpretNumericEntities }',
    koaReader('koa', 'form', koaForm({ charset: 'iso-8859-1', interpretNumericEntities: true })),
    FORM,
    (p) => `f=${entity(p[0]!)}${enc(p.slice(1))}`,
  ],
];

/** [reader, Content-Type, body]: a UTF-8 signature that qs decodes from Latin-1 escapes or bytes. */
const LATIN1: Array<[string, Reader, string, string | Buffer]> = [
  [
    'charsetSentinel overriding charset=utf-8',
    expressReader('e5', 'form', 'express5', urlencoded5({ extended: false, charsetSentinel: true })),
    `${FORM}; charset=utf-8`,
    `${ISO_SENTINEL}&f=B%F6sartig!`,
  ],
  [
    'defaultCharset iso-8859-1, an escape',
    expressReader('e5', 'form', 'express5', urlencoded5({ extended: true, defaultCharset: 'iso-8859-1' })),
    FORM,
    'f=B%F6sartig!',
  ],
  [
    'defaultCharset iso-8859-1, a raw byte',
    expressReader('e5', 'form', 'express5', urlencoded5({ extended: true, defaultCharset: 'iso-8859-1' })),
    FORM,
    Buffer.from('f=B\xf6sartig!', 'latin1'),
  ],
  [
    'charsetSentinel in a UTF-8 body: raw UTF-8 beside a Latin-1 escape',
    expressReader('e5', 'form', 'express5', urlencoded5({ extended: true, charsetSentinel: true })),
    FORM,
    Buffer.from(`${ISO_SENTINEL}&f=B\xc3\xb6sar%74ig%21`, 'latin1'),
  ],
  [
    'koa-body queryString { charset: iso-8859-1 }',
    koaReader('koa', 'form', koaForm({ charset: 'iso-8859-1' })),
    FORM,
    'f=B%F6sartig!',
  ],
];

async function post(reader: Reader, type: string, body: string | Buffer) {
  const app = await reader.start(profile());
  try {
    icap.reset();
    const r = await send(app.url, '/upload', { method: 'POST', headers: { 'content-type': type }, body });
    return { status: r.status, delivered: app.delivered, log: app.logs.at(-1)!, sent: reqmods() };
  } finally {
    await app.close();
  }
}

describe("qs's options: the value qs decodes is scanned", () => {
  it.each(TRICKS)('%s: EICAR is refused (403)', async (_c, reader, type, body) => {
    const r = await post(reader, type, body(E));
    expect(r.status).toBe(403);
    expect(r.delivered).toEqual([]);
    expect(r.log.significance).toEqual(expect.arrayContaining(['ICAP_BLOCKED', 'DECODED_STRINGS']));
    expect(r.sent).toHaveLength(2);
    expect(r.sent[1]!.verdict).toBe('infected');
  });

  it.each(TRICKS)('%s: a clean field passes with the string qs decodes', async (_c, reader, type, body) => {
    const r = await post(reader, type, body('Xclean value'));
    expect(r.status).toBe(200);
    expect(r.delivered[0]).toContain('Xclean value');
    expect(r.sent).toHaveLength(2);
    expect(r.sent[1]!.body!.toString('utf8')).toContain('Xclean value');
  });

  it.each(LATIN1)(
    '%s: a UTF-8 signature qs decodes from Latin-1 is refused (403)',
    async (_c, reader, type, body) => {
      const r = await post(reader, type, body);
      expect(r.status).toBe(403);
      expect(r.delivered).toEqual([]);
      expect(r.sent.at(-1)!.verdict).toBe('infected');
      expect(r.sent.at(-1)!.body!.includes(Buffer.from(SIG, 'utf8'))).toBe(true);
    },
  );

  it('a clean Latin-1 field under charsetSentinel passes as qs decodes it', async () => {
    const [, reader, type] = LATIN1[0]!;
    const r = await post(reader, type, `${ISO_SENTINEL}&f=caf%E9`);
    expect(r.status).toBe(200);
    expect(r.delivered[0]).toEqual(['f', 'café']);
    expect(r.sent[1]!.body!.toString('utf8')).toContain('café');
  });
});

/** formidable in Express, its fields as the handler gets them. */
const formidableApp = expressReader('formidable', 'form', 'express5', () => {
  return (req: IncomingMessage & { body?: unknown }, _res: unknown, next: (e?: unknown) => void) => {
    formidable({}).parse(req, (err, fields) => {
      if (err) return next(Object.assign(err as object, { status: 400 }));
      req.body = fields;
      next();
    });
  };
});

describe('Content-Types formidable reads as a form (/urlencoded/i) or as JSON (/json/i)', () => {
  it.each([
    'application/urlencoded',
    'text/urlencoded',
    'application/x-urlencoded',
    'text/plain; charset=utf-8; format=urlencoded',
  ])('%s: EICAR percent-encoded is refused (403), a clean field passes', async (type) => {
    const bad = await post(formidableApp, type, `file=${enc(E)}`);
    expect(bad.status).toBe(403);
    expect(bad.delivered).toEqual([]);
    expect(bad.log.significance).toContain('DECODED_STRINGS');
    const good = await post(formidableApp, type, `file=caf%C3%A9+au+lait`);
    expect(good.status).toBe(200);
    expect(good.delivered[0]).toEqual(['file', 'café au lait']);
    expect(good.sent[1]!.body!.toString('utf8')).toContain('café au lait');
  });

  it.each(['text/plain; format=json', 'application/x-json-ish', 'text/jsonl'])(
    '%s: EICAR in JSON escapes is refused (403), a clean string passes',
    async (type) => {
      const bad = await post(formidableApp, type, `{"file":${JSON.stringify(E)}}`);
      expect(bad.status).toBe(403);
      expect(bad.delivered).toEqual([]);
      expect(bad.log.significance).toContain('DECODED_STRINGS');
      const good = await post(formidableApp, type, '{"file":"caf\\u00e9"}');
      expect(good.status).toBe(200);
      expect(good.delivered[0]).toEqual(['file', 'café']);
      expect(good.sent[1]!.body!.toString('utf8')).toContain('café');
    },
  );
});
