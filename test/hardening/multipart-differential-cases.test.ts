/**
 * Regression cases of the multipart differential fuzz (test/fuzz/multipart.differential.test.ts),
 * each a minimal body the property shrank to, or a shape of issue 11, kept as a fixed case:
 * sent to POST /raw of Express 5 and 4, Fastify and Koa 3 and 2, in per-file and whole mode,
 * the bytes each handler received are run through multer, @fastify/busboy (@fastify/multipart),
 * formidable (koa-body), busboy and @koa/bodyparser. Whatever any of them extracts must have been
 * scanned, none may get EICAR, the answer is one of 200/400/403/413/415, and nothing may throw
 * into the process.
 *
 * "Found" says what the cases did before canonical delivery and strict parsing (the original
 * form was replayed once busboy's reading of it was clean):
 */
import { request as h1request } from 'node:http';
import type { IcapProfile } from '@icapkit/core';
import { eicar, type IcapTestServer, startIcapServer } from '@icapkit/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type App, type Framework, startApp } from '../conformance/apps.js';
import { startCaptureApp } from '../fuzz/multipart-apps.js';
import { exchange, phase, showOutcome } from '../fuzz/multipart-check.js';
import { send } from '../support/http-client.js';

const E = eicar().toString('latin1');
const B = 'AaB03x';
const CT = `multipart/form-data; boundary=${B}`;

interface Case {
  name: string;
  found: string;
  contentType: string;
  body: string;
}

const CASES: Case[] = [
  {
    name: 'a file part without a name (the 97-byte request)',
    found: 'busboy threw in its file handler: unhandled error event, the process exited',
    contentType: 'multipart/form-data; boundary=b',
    body: '--b\r\nContent-Disposition: form-data; filename="a.txt"\r\nContent-Type: text/plain\r\n\r\nhello\r\n--b--\r\n',
  },
  {
    name: 'disposition type in capitals and `filename = "x.bin"` (spaces around =), EICAR',
    found: 'busboy skipped the part (nothing scanned); @fastify/busboy extracted the file: EICAR',
    contentType: CT,
    body: `--${B}\r\nContent-Disposition: FORM-DATA; name="f0"; filename = "x.bin"\r\n\r\n${E}\r\n--${B}--`,
  },
  {
    name: 'a trailing `;` after the name',
    found: 'busboy skipped the field; @fastify/busboy extracted it (unscanned)',
    contentType: CT,
    body: `--${B}\r\nContent-Disposition: form-data; name="f0";\r\n\r\nclean-0-0\r\n--${B}--\r\n`,
  },
  {
    name: 'a quoted boundary with a trailing space, a utf-8 field holding Latin-1 bytes',
    found: 'formidable extracted a file (a field with a Content-Type) whose bytes nobody scanned',
    contentType: `multipart/form-data; boundary="${B}" `,
    body: `--${B}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Disposition: FORM-DATA; name="f0"\r\n\r\nclean-0-0 caf\u00e9 \u00ff\r\n--${B}--\r\n`,
  },
  {
    name: 'a line `--BOUNDARYQ` inside a field',
    found: 'formidable read the field up to the next real delimiter: content nobody scanned',
    contentType: CT,
    body: `--${B}\r\nContent-Disposition: form-data; name="f0"\r\n\r\nclean-0-0\r\n--${B}Q\r\nContent-Disposition: form-data; name="hidden"; filename="h.com"\r\n\r\nclean-0-0-hidden\r\n--${B}--\r\n`,
  },
  {
    name: 'a delimiter followed by `-X`, hiding an EICAR part',
    found: 'busboy took the line for content; formidable extracted the hidden part: EICAR',
    contentType: CT,
    body: `--${B}\r\nContent-Disposition: form-data; name="f2"; filename="a.txt"\r\n\r\nclean-1\r\n--${B}-X\r\nContent-Disposition: form-data; name="hidden"; filename="h.com"\r\n\r\n${E}\r\n--${B}--\r\n`,
  },
  {
    name: 'a base64 field holding EICAR (Content-Transfer-Encoding: base64)',
    found: 'the scanner saw base64; formidable decoded the field: EICAR',
    contentType: CT,
    body: `--${B}\r\nContent-Disposition: form-data; name="f0"\r\nContent-Transfer-Encoding: base64\r\n\r\n${eicar().toString('base64')}\r\n--${B}--\r\n`,
  },
  {
    name: 'a field with Content-Transfer-Encoding: 7bit',
    found: 'formidable builds a StringDecoder("7bit"): an unhandled rejection (a koa-body app exits)',
    contentType: CT,
    body: `--${B}\r\nContent-Transfer-Encoding: 7bit\r\nContent-Disposition: form-data; name="f0"\r\n\r\nclean\r\n--${B}--\r\n`,
  },
  {
    name: 'a field with Content-Transfer-Encoding: 8bit',
    found: 'formidable builds a StringDecoder("8bit"): an unhandled rejection (a koa-body app exits)',
    contentType: CT,
    body: `--${B}\r\nContent-Disposition: form-data; name="f0"\r\nContent-Transfer-Encoding: 8bit\r\n\r\nclean\r\n--${B}--\r\n`,
  },
  {
    name: 'a quoted-printable field',
    found: 'formidable builds a StringDecoder("quoted-printable"): an unhandled rejection',
    contentType: CT,
    body: `--${B}\r\nContent-Disposition: form-data; name="f0"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n=63lean\r\n--${B}--\r\n`,
  },
  {
    name: 'a part after the close delimiter, with EICAR',
    found: 'only "the body ends with --B--" was checked',
    contentType: CT,
    body: `--${B}\r\nContent-Disposition: form-data; name="a"\r\n\r\nclean\r\n--${B}--\r\n--${B}\r\nContent-Disposition: form-data; name="late"; filename="late.com"\r\n\r\n${E}\r\n--${B}--\r\n`,
  },
  {
    name: '`boundary*=` besides `boundary=`, parts under the other boundary',
    found: 'parsers disagree on which boundary counts',
    contentType: `multipart/form-data; boundary*=utf-8''Zq9; boundary=${B}`,
    body: `--${B}\r\nContent-Disposition: form-data; name="a"\r\n\r\nclean\r\n--${B}--\r\n--Zq9\r\nContent-Disposition: form-data; name="f"; filename="e.com"\r\n\r\n${E}\r\n--Zq9--\r\n`,
  },
  {
    name: 'a field in utf-16be holding EICAR',
    found: 'busboy could not decode the charset: an empty value was scanned',
    contentType: CT,
    body: `--${B}\r\nContent-Disposition: form-data; name="f0"\r\nContent-Type: text/plain; charset=utf-16be\r\n\r\n${[...E].map((c) => `\u0000${c}`).join('')}\r\n--${B}--\r\n`,
  },
  {
    name: 'a well-formed form: clean file and field (delivered, every parser agrees)',
    found: '(control case)',
    contentType: CT,
    body: `--${B}\r\nContent-Disposition: form-data; name="doc"; filename="a.txt"\r\nContent-Type: text/plain\r\n\r\nclean file\r\n--${B}\r\nContent-Disposition: form-data; name="note"\r\n\r\nclean field\r\n--${B}--\r\n`,
  },
];

const FRAMEWORKS: Framework[] = ['express5', 'express4', 'fastify', 'koa3', 'koa2'];
const MODES = ['per-file', 'whole'] as const;

let icap: IcapTestServer;
const crashes: string[] = [];
const onUncaught = (err: unknown) => crashes.push(`uncaughtException while ${phase.now}: ${String(err)}`);
const onRejection = (err: unknown) => crashes.push(`unhandledRejection while ${phase.now}: ${String(err)}`);

beforeAll(async () => {
  process.on('uncaughtException', onUncaught);
  process.on('unhandledRejection', onRejection);
  icap = await startIcapServer({ recordBodies: true });
});
afterAll(async () => {
  await icap?.close();
  process.off('uncaughtException', onUncaught);
  process.off('unhandledRejection', onRejection);
});

const profile = (multipart: 'per-file' | 'whole'): IcapProfile => ({
  name: 'cases',
  poolGroup: icap.url(),
  serviceUri: '/avscan',
  multipart,
  onLog: () => {},
});

describe.each(MODES)('multipart differential cases, %s mode', (mode) => {
  it.each(FRAMEWORKS)(
    '%s: every case is refused or delivers only scanned content to all five parsers',
    async (framework) => {
      const app = await startCaptureApp(framework, profile(mode));
      try {
        const failures: string[] = [];
        for (const c of CASES) {
          const before = crashes.length;
          const o = await exchange(app, icap, {
            contentType: c.contentType,
            body: Buffer.from(c.body, 'latin1'),
          });
          const crashed = crashes.slice(before);
          if (o.violations.length > 0 || crashed.length > 0)
            failures.push(`${c.name} (found: ${c.found})\n${showOutcome(o)}\n${crashed.join('\n')}`);
          if (c.found === '(control case)' && o.status !== 200)
            failures.push(`control case: status ${o.status}`);
        }
        expect(failures, failures.join('\n\n')).toEqual([]);
      } finally {
        await app.close();
      }
    },
  );
});

// ---------------------------------------------------------------- the 97-byte request

const NAMELESS =
  '--b\r\nContent-Disposition: form-data; filename="a.txt"\r\nContent-Type: text/plain\r\n\r\nhello\r\n--b--\r\n';

/** POST with a Content-Length, on a fresh connection; resolves with the status, or the error. */
function post1(url: string, path: string, body: string, contentType: string): Promise<number | string> {
  return new Promise((resolve) => {
    const req = h1request(new URL(path, url), {
      method: 'POST',
      headers: {
        'content-type': contentType,
        'content-length': Buffer.byteLength(body),
        connection: 'close',
      },
      timeout: 10_000,
    });
    req.on('response', (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (e) => resolve(e.message));
    req.end(body);
  });
}

const VARIANTS: Array<{ framework: Framework; http2: boolean }> = [
  { framework: 'express5', http2: false },
  { framework: 'express4', http2: false },
  { framework: 'fastify', http2: false },
  { framework: 'fastify', http2: true },
  { framework: 'koa3', http2: false },
  { framework: 'koa2', http2: false },
];

describe('the 97-byte request (a file part without a name)', () => {
  it.each(VARIANTS)(
    '$framework (http2: $http2): 400, the handler never runs, and the process keeps serving',
    async ({ framework, http2 }) => {
      expect(Buffer.byteLength(NAMELESS)).toBe(97);
      let app: App | undefined;
      try {
        app = await startApp(framework, profile('per-file'), { http2 });
        const before = crashes.length;
        const first = http2
          ? (
              await send(app.url, '/multipart', {
                body: NAMELESS,
                headers: { 'content-type': 'multipart/form-data; boundary=b' },
                http2: true,
              })
            ).status
          : await post1(app.url, '/multipart', NAMELESS, 'multipart/form-data; boundary=b');
        expect(first).toBe(400);
        expect(app.seen.filter((s) => s.route === 'multipart')).toEqual([]);
        // The process keeps serving: a well-formed upload on a new connection is scanned and handled.
        const form =
          '--b\r\nContent-Disposition: form-data; name="doc"; filename="a.txt"\r\nContent-Type: text/plain\r\n\r\nhello\r\n--b--\r\n';
        const second = await send(app.url, '/multipart', {
          body: form,
          headers: { 'content-type': 'multipart/form-data; boundary=b' },
          http2,
        });
        expect(second.status).toBe(200);
        const seen = app.seen.filter((s) => s.route === 'multipart');
        expect(seen).toHaveLength(1);
        expect(seen[0]!.files?.map((f) => [f.field, f.name, f.data.toString()])).toEqual([
          ['doc', 'a.txt', 'hello'],
        ]);
        expect(crashes.slice(before)).toEqual([]);
      } finally {
        await app?.close();
      }
    },
  );
});
