/**
 * "Scanned equals delivered" for what body parsers decode, property-based: every string a
 * body parser hands the handler (keys and values) was sent to the ICAP server in that form
 * (its UTF-8 bytes are in the body as sent or in its decoded strings), whatever the escaping.
 *
 * Each run makes a JSON value or a form of random strings (ASCII, the characters JSON and
 * forms escape, Latin-1, BMP and astral characters, lone surrogates in JSON) and writes every
 * character its own way: raw, `\uXXXX` (either case), short escapes, `%XX` (either case),
 * `%uXXXX`, `+` for a space, stray bytes that are not UTF-8, malformed `%` sequences; forms
 * also go as `charset=iso-8859-1` when they are ASCII. Each reader (decoded-apps.ts: Express 4
 * and 5, Fastify, Koa, Hono with their JSON and urlencoded parsers, formidable, JSON parsed
 * from text/plain) gets its kind of body; what its handler got is compared with the bodies the
 * embedded ICAP server recorded for that request.
 *
 * `ICAPKIT_DECODED_RUNS` sets the number of bodies per reader (default 30).
 */
import type { IcapProfile } from '@icapkit/core';
import { type IcapTestServer, startIcapServer } from '@icapkit/testing';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkAsyncProperty, runsFromEnv } from '../fuzz/support.js';
import { send } from '../support/http-client.js';
import { READERS } from './decoded-apps.js';

const RUNS = runsFromEnv('ICAPKIT_DECODED_RUNS', 30);

let icap: IcapTestServer;
beforeAll(async () => {
  icap = await startIcapServer({ recordBodies: true });
});
afterAll(() => icap?.close());

const profile = (): IcapProfile => ({
  name: 'decoded-property',
  poolGroup: icap.url(),
  serviceUri: '/avscan',
  startupCheck: 'off',
});

const CHARS = ['a', 'Z', '0', ' ', '"', '\\', '/', '&', '=', '+', '%', '\n', '\u0001', 'é', 'ÿ', '€', '😀'];

/** How one character is written: an index into the ways its kind of body allows. */
const charArb = fc.tuple(fc.constantFrom(...CHARS, '\ud800'), fc.nat(5));
const stringArb = fc.array(charArb, { maxLength: 10 });

const hex4 = (n: number, upper: boolean) => {
  const h = n.toString(16).padStart(4, '0');
  return upper ? h.toUpperCase() : h;
};

const SHORT: Record<string, string> = {
  '"': '\\"',
  '\\': '\\\\',
  '/': '\\/',
  '\n': '\\n',
  '\u0001': '\\u0001',
};

/** A JSON string literal, each character written the way its index says. */
function jsonString(chars: Chars): Buffer {
  const out: Buffer[] = [Buffer.from('"')];
  for (const [c, way] of chars) {
    const mustEscape = c === '"' || c === '\\' || c < ' ';
    if (way === 0 && !mustEscape) out.push(Buffer.from(c));
    else if (way === 1 && SHORT[c] !== undefined) out.push(Buffer.from(SHORT[c]!));
    else if (way === 2 && !mustEscape)
      out.push(Buffer.from([0xff]), Buffer.from(c)); // a stray byte
    else
      out.push(
        Buffer.from(
          [...Array(c.length).keys()].map((i) => `\\u${hex4(c.charCodeAt(i), way % 2 === 1)}`).join(''),
        ),
      );
  }
  out.push(Buffer.from('"'));
  return Buffer.concat(out);
}

/** A urlencoded name or value, each character written the way its index says. */
function formString(chars: Chars, asciiOnly: boolean): Buffer {
  const out: Buffer[] = [];
  for (const [c0, way] of chars) {
    const c = c0 === '\ud800' ? 'x' : c0;
    const bytes = Buffer.from(c);
    const special = '&=+%'.includes(c);
    const high = bytes[0]! > 0x7f;
    if (c === ' ' && way < 3) out.push(Buffer.from('+'));
    else if (way === 0 && !special && !(high && asciiOnly)) out.push(bytes);
    else if (way === 1 && c.length === 1) out.push(Buffer.from(`%u${hex4(c.charCodeAt(0), true)}`));
    else if (way === 2 && !special)
      out.push(Buffer.from('%zz'), asciiOnly && high ? pct(bytes, true) : bytes);
    else out.push(pct(bytes, way % 2 === 0));
  }
  return Buffer.concat(out);
}

const pct = (bytes: Buffer, upper: boolean) =>
  Buffer.from(
    [...bytes]
      .map((b) => {
        const h = b.toString(16).padStart(2, '0');
        return `%${upper ? h.toUpperCase() : h}`;
      })
      .join(''),
  );

type Chars = Array<[string, number]>;
const valueArb = fc.oneof(
  stringArb.map((one) => ({ one })),
  fc.array(stringArb, { maxLength: 3 }).map((list) => ({ list })),
);

const jsonBodyArb = fc.array(fc.tuple(stringArb, valueArb), { minLength: 1, maxLength: 4 }).map((entries) => {
  const parts: Buffer[] = [Buffer.from('{')];
  entries.forEach(([key, value], i) => {
    if (i > 0) parts.push(Buffer.from(','));
    // Distinct keys: a duplicate key's first value is never delivered (nothing to compare).
    parts.push(jsonString([...key, [String.fromCharCode(0x41 + i), 0]]), Buffer.from(':'));
    if ('one' in value) parts.push(jsonString(value.one));
    else {
      const list = (value.list as Chars[]).map(jsonString);
      parts.push(Buffer.from(`[${list.map((x) => x.toString('latin1')).join(',')}]`, 'latin1'));
    }
  });
  parts.push(Buffer.from('}'));
  return Buffer.concat(parts);
});

const formBodyArb = fc
  .tuple(fc.array(fc.tuple(stringArb, stringArb), { minLength: 1, maxLength: 4 }), fc.boolean())
  .map(([pairs, latin1]) => {
    const body = Buffer.concat(
      pairs.flatMap(([k, v], i) => [
        ...(i > 0 ? [Buffer.from('&')] : []),
        formString([...k, [String.fromCharCode(0x41 + i), 0]], latin1),
        Buffer.from('='),
        formString(v, latin1),
      ]),
    );
    return { body, type: `application/x-www-form-urlencoded${latin1 ? '; charset=iso-8859-1' : ''}` };
  });

describe.each(READERS.map((r) => [r.name, r] as const))('%s', (_name, reader) => {
  it('every string the parser delivers was sent to the ICAP server in that form', async () => {
    const app = await reader.start(profile());
    try {
      const arb =
        reader.kind === 'form'
          ? formBodyArb
          : jsonBodyArb.map((body) => ({
              body,
              type: reader.kind === 'json' ? 'application/json' : 'text/plain',
            }));
      await checkAsyncProperty(
        `decoded strings: ${reader.name}`,
        fc.asyncProperty(arb, async ({ body, type }) => {
          icap.reset();
          app.delivered.length = 0;
          const r = await send(app.url, '/upload', {
            method: 'POST',
            headers: { 'content-type': type },
            body,
          });
          // 400 / 415: the parser refused the body (a JSON text it cannot read, a charset it does
          // not take); nothing was delivered.
          expect([200, 400, 415]).toContain(r.status);
          if (r.status !== 200) {
            expect(app.delivered).toEqual([]);
            return;
          }
          const scanned = icap.requests
            .filter((q) => q.method === 'REQMOD')
            .map((q) => q.body ?? Buffer.alloc(0));
          expect(scanned.length).toBeGreaterThan(0);
          for (const s of app.delivered[0] ?? []) {
            const bytes = Buffer.from(s);
            if (!scanned.some((b) => b.includes(bytes)))
              throw new Error(`${JSON.stringify(s)} was delivered but not scanned in that form`);
          }
        }),
        RUNS,
      );
    } finally {
      await app.close();
    }
  }, 120_000);
});
