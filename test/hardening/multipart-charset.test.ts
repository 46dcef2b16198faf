/**
 * A part's charset is where parsers may decode a part into text the scanner never saw:
 *
 * - F1: `filename=""` with `Content-Type: text/plain; charset=utf-16le` (or utf16le, ucs2,
 *   ucs-2, any case). icapkit reads a file (a filename is there) and scans its raw UTF-16LE
 *   bytes; busboy 1.6 (multer) reads a field (the filename is empty) and decodes it by the
 *   charset: EICAR in req.body. In per-file mode the file's Content-Type is delivered as sent,
 *   in whole mode only fields had their charset checked.
 * - F2: whole mode, `charset*=utf-8''utf-16le` on a field: @fastify/busboy reads it as an
 *   RFC 2231 charset and decodes the field; a strict reader sees a parameter `charset*`.
 *
 * Both are refused (400, ICAP_ERR_MULTIPART, the handler never runs) in per-file and whole mode
 * on Express 5 + multer, Fastify + @fastify/multipart, Koa + koa-body (formidable) and Hono
 * (undici's form parser, which parseBody uses); a form with ordinary charsets passes, each value
 * the handler gets being bytes the ICAP server scanned.
 */
import type { IcapLog } from '@icapkit/core';
import { eicar, type IcapTestServer, startIcapServer } from '@icapkit/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type App, startApp } from '../conformance/apps.js';
import { send } from '../support/http-client.js';

const E = eicar().toString('latin1');
const U16 = Buffer.from(E, 'utf16le').toString('latin1');
const B = 'AaB03x';
const CT = `multipart/form-data; boundary=${B}`;
const part = (disposition: string, contentType: string | undefined, content: string) =>
  `--${B}\r\nContent-Disposition: form-data; ${disposition}\r\n${
    contentType === undefined ? '' : `Content-Type: ${contentType}\r\n`
  }\r\n${content}\r\n`;
const close = `--${B}--\r\n`;

/** [name, body]: each hides EICAR as UTF-16LE behind a charset some parser decodes by. */
const REFUSED: Array<[string, string]> = [
  ...['utf-16le', 'UTF16LE', 'ucs2', 'UCS-2'].map((cs): [string, string] => [
    `F1: filename="" with charset=${cs}`,
    part('name="f0"; filename=""', `text/plain; charset=${cs}`, U16) + close,
  ]),
  [
    'a named file with charset=utf-16le (its label reaches the handler)',
    part('name="f0"; filename="a.txt"', 'text/plain; charset=utf-16le', U16) + close,
  ],
  [
    "F2: a field with charset*=utf-8''utf-16le",
    part('name="f0"', "text/plain; charset*=utf-8''utf-16le", U16) + close,
  ],
  ["F2: CHARSET*=''utf-16le", part('name="f0"', "text/plain; CHARSET*=''utf-16le", U16) + close],
  [
    'F2 on filename="": charset*=utf-8\'\'utf-16le',
    part('name="f0"; filename=""', "text/plain; charset*=utf-8''utf-16le", U16) + close,
  ],
  [
    'a charset= inside another parameter',
    part('name="f0"; filename=""', 'text/plain; x="charset=utf-16le"', U16) + close,
  ],
];

const FRAMEWORKS = ['express5', 'fastify', 'koa3', 'hono'] as const;
const MODES = ['per-file', 'whole'] as const;

let icap: IcapTestServer;
beforeAll(async () => {
  icap = await startIcapServer({ recordBodies: true });
});
afterAll(() => icap?.close());

/** What the handler extracted that is not among the bytes the ICAP server was sent. */
function unscanned(app: App, scanned: Buffer[]): string[] {
  const out: string[] = [];
  const seen = app.seen.find((s) => s.route === 'multipart');
  const values: Array<[string, string]> = [];
  for (const f of seen?.files ?? []) values.push([`file ${f.field}`, f.data.toString('latin1')]);
  for (const [k, v] of Object.entries(seen?.fields ?? {}))
    for (const x of Array.isArray(v) ? v : [v]) values.push([`field ${k}`, String(x)]);
  for (const [what, content] of values) {
    if (content.includes('EICAR')) out.push(`EICAR in ${what}`);
    // Text a parser decoded from scanned bytes (as latin1, or as UTF-8: a Latin-1 field whose
    // label per-file delivery drops reads with U+FFFD, which is no ASCII the scanner missed).
    const texts = scanned.flatMap((s) => [s.toString('latin1'), s.toString('utf8')]);
    if (!texts.some((t) => t.includes(content))) out.push(`unscanned ${what}`);
  }
  return out;
}

describe.each(FRAMEWORKS)('%s', (framework) => {
  describe.each(MODES)('multipart: %s', (mode) => {
    let app: App;
    const logs: IcapLog[] = [];
    beforeAll(async () => {
      app = await startApp(framework, {
        name: 'charset',
        poolGroup: icap.url(),
        serviceUri: '/avscan',
        multipart: mode,
        onLog: (l) => logs.push(l),
      });
    });
    afterAll(() => app?.close());

    it.each(REFUSED)('%s: 400 ICAP_ERR_MULTIPART, the handler never runs', async (_name, body) => {
      logs.length = 0;
      app.seen.length = 0;
      const r = await send(app.url, '/multipart', {
        body: Buffer.from(body, 'latin1'),
        headers: { 'content-type': CT },
      });
      expect(r.status).toBe(400);
      expect(app.seen).toEqual([]);
      expect(logs.map((l) => l.error_code)).toEqual(['ICAP_ERR_MULTIPART']);
    });

    it('ordinary charsets pass; every value the handler gets was scanned', async () => {
      logs.length = 0;
      app.seen.length = 0;
      const first = icap.requests.length;
      const body =
        part('name="title"', 'text/plain; charset=utf-8', 'caf\xc3\xa9 title') +
        // Whole mode passes the form as sent: a field there must be UTF-8 (checked before).
        (mode === 'per-file' ? part('name="latin"', 'text/plain; charset=iso-8859-1', 'caf\xe9') : '') +
        part('name="doc"; filename="notes.txt"', 'text/plain; charset=utf-8', 'some notes') +
        part('name="old"; filename="old.txt"', 'text/plain; charset=ISO-8859-1', 'ancien \xe9t\xe9') +
        part('name="blank"; filename=""', undefined, 'no name given') +
        close;
      const r = await send(app.url, '/multipart', {
        body: Buffer.from(body, 'latin1'),
        headers: { 'content-type': CT },
      });
      expect(r.status).toBe(200);
      expect(logs.map((l) => l.action)).toEqual(['ICAP_PASSED']);
      const seen = app.seen.find((s) => s.route === 'multipart');
      expect(seen).toBeDefined();
      const scanned = icap.requests
        .slice(first)
        .filter((q) => q.method === 'REQMOD')
        .map((q) => q.body ?? Buffer.alloc(0));
      expect(unscanned(app, scanned)).toEqual([]);
      // The named files reach every parser as their bytes.
      const files = Object.fromEntries((seen?.files ?? []).map((f) => [f.field, f.data.toString('latin1')]));
      expect(files).toMatchObject({ doc: 'some notes', old: 'ancien \xe9t\xe9' });
    });
  });
});

/**
 * campaign-bj BJ1: @fastify/multipart JSON.parses a field labelled application/json, so escapes
 * decode into a value the scanner saw only escaped (EICAR written `\u0045ICAR`). Per-file mode
 * drops a field's Content-Type (canonical.ts); whole mode passes the form as sent, so it refuses
 * such a field (400), on every framework.
 */
describe.each(FRAMEWORKS)('%s: a field labelled JSON (BJ1)', (framework) => {
  const escaped = JSON.stringify(E).replace('EICAR', '\\u0045ICAR');
  for (const mode of MODES)
    for (const ct of ['application/json', 'application/json; charset=utf-8', 'application/ld+json'])
      it(`multipart: ${mode}, a field with Content-Type ${ct} holding escaped EICAR: ${mode === 'whole' ? '400, the handler never runs' : 'what the handler gets was scanned'}`, async () => {
        const logs: IcapLog[] = [];
        const app = await startApp(framework, {
          name: 'bj1',
          poolGroup: icap.url(),
          serviceUri: '/avscan',
          multipart: mode,
          onLog: (l) => logs.push(l),
        });
        try {
          const first = icap.requests.length;
          const r = await send(app.url, '/multipart', {
            body: Buffer.from(part('name="doc"', ct, escaped) + close, 'latin1'),
            headers: { 'content-type': CT },
          });
          if (mode === 'whole') {
            expect(r.status).toBe(400);
            expect(app.seen).toEqual([]);
            expect(logs.map((l) => l.error_code)).toEqual(['ICAP_ERR_MULTIPART']);
          } else {
            const scanned = icap.requests
              .slice(first)
              .filter((q) => q.method === 'REQMOD')
              .map((q) => q.body ?? Buffer.alloc(0));
            expect(unscanned(app, scanned)).toEqual([]);
          }
        } finally {
          await app.close();
        }
      });
});
