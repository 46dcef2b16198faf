/**
 * "A threat verdict is never lost", property-based, for a scanner that miscounts the chunks of
 * the upload it echoes: the bytes after the break are the upload's own (generated here: junk,
 * clean ICAP heads, status lines glued anywhere, line ends, `0\r\n\r\n`), then the server's
 * answer naming the threat, the whole split into writes at generated points. Through Express 5,
 * Fastify, Koa 3 and Hono, in both failure actions: 403, the handler gets nothing (client/stray.ts;
 * campaigns ar, as, at).
 */
import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import type { Framework } from '../conformance/apps.js';
import { checkAsyncProperty, runsFromEnv } from '../fuzz/support.js';
import { scriptedApp } from '../support/scripted-app.js';
import { chunked, type Req } from '../support/scripted-icap.js';

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const RUNS = runsFromEnv('ICAPKIT_BROKEN_ECHO_RUNS', 12);
const FRAMEWORKS: Framework[] = ['express5', 'fastify', 'koa3', 'hono'];
const MODES = ['fail-open', 'fail-closed'] as const;
const CLEAN_204 = 'ICAP/1.0 204 No Content\r\nISTag: "x1"\r\nEncapsulated: null-body=0\r\n\r\n';
const THREAT_ANSWER =
  'ICAP/1.0 200 OK\r\nISTag: "x1"\r\nX-Infection-Found: Type=0; Resolution=2; Threat=EICAR;\r\nEncapsulated: null-body=0\r\n\r\n';

/** What an upload may hold to look like an answer, or like the echo's end. */
const upload = fc
  .array(
    fc.oneof(
      fc.string({ maxLength: 30 }),
      fc.constantFrom(
        '\r\n',
        '\n',
        '\r',
        '0\r\n\r\n',
        'ICAP/1.0 200 OK\r\n',
        'icap/1.0 204 x\n\n',
        CLEAN_204,
      ),
    ),
    { minLength: 1, maxLength: 12 },
  )
  .map((p) => Buffer.from(p.join(''), 'latin1'))
  // An empty body is not scanned (nothing to send): not this property's input.
  .filter((b) => b.length > 0);

/** How the server breaks its echo of `body`: the bytes before its answer. */
const breaks: Array<(r: Req, body: Buffer) => string> = [
  // A chunk-size line that is none, then the rest of the upload.
  (r, b) => `${echoHead(r)}zz\r\n${b.toString('latin1')}`,
  // A chunk announced shorter than what follows (the upload runs on past it).
  (r, b) => `${echoHead(r)}1\r\n${b.toString('latin1')}`,
  // A whole echo, then the upload once more (sent twice).
  (r, b) => `${echoHead(r)}${chunked(b)}0\r\n\r\n${b.toString('latin1')}`,
];

function echoHead(r: Req): string {
  const reqHdr = r.encap.toString('latin1');
  return `ICAP/1.0 200 OK\r\nISTag: "x1"\r\nEncapsulated: req-hdr=0, req-body=${reqHdr.length}\r\n\r\n${reqHdr}`;
}

describe.each(FRAMEWORKS)('%s', (framework) => {
  for (const mode of MODES)
    it(`${mode}: the threat answer after a broken echo of any upload blocks`, {
      timeout: 120_000,
    }, async () => {
      let plan = { kind: 0, cuts: [] as number[] };
      const s = await scriptedApp(
        framework,
        (r) => {
          const broken = breaks[plan.kind]!(r, r.body);
          const bytes = Buffer.from(`${broken}\r\n${THREAT_ANSWER}`, 'latin1');
          // A whole echo is followed by a byte in its own read (else its connection is done,
          // and an answer in a later read is the documented limit of a second answer).
          const min = plan.kind === 2 ? broken.length - r.body.length + 1 : 0;
          const at = [...new Set(plan.cuts.map((c) => min + (c % (bytes.length - min))))].sort(
            (a, b) => a - b,
          );
          let from = 0;
          for (const [k, cut] of [...at, bytes.length].entries()) {
            const part = bytes.subarray(from, cut);
            from = cut;
            setTimeout(() => r.sock.destroyed || r.sock.write(part), 20 * k);
          }
        },
        { failAction: mode, responseTimeout: 5000, connection: { ioTimeout: 3000 } },
        cleanups,
      );
      await checkAsyncProperty(
        `broken echo ${framework} ${mode}`,
        fc.asyncProperty(
          upload,
          fc.nat(breaks.length - 1),
          fc.array(fc.nat(), { maxLength: 3 }),
          async (body, kind, cuts) => {
            plan = { kind, cuts };
            const seen = s.app.seen.length;
            const logs = s.logs.length;
            const res = await s.post(body);
            expect(res.status).toBe(403);
            expect(s.app.seen.length).toBe(seen);
            expect(s.logs[logs]?.action).toBe('ICAP_BLOCKED');
          },
        ),
        RUNS,
      );
    });
});
