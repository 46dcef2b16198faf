/**
 * A threat field whose line the server never finishes still names a threat (the invariant "a
 * threat verdict is never lost"), in both failure modes and every framework:
 * - the answer's head breaks off inside the line (the connection closes there): it used to be
 *   ICAP_ERR_CLOSED, which fail-open passed;
 * - a second answer after a clean 204 whose head stops inside the line, the server then silent
 *   past the client's wait for it: the 204 used to stand;
 * - the answer breaks off in its encapsulated HTTP head (a 200 echoing the request with a threat
 *   field in it), in the threat's line or after it: only the ICAP head went with the failure;
 * - the trailer after an answer's chunked body (a clean echo, a rewritten body, an error page)
 *   breaks off, in the threat's line or after it: the fields received were dropped with the
 *   failure (ICAP_ERR_CLOSED, which fail-open passed).
 * Every offset from the value's first byte to its line end is tried, for the threat fields of
 * several vendors. And the other side: a head that breaks off before any threat field is an
 * ICAP failure as before (fail-open passes it), and a 204 followed by nothing passes.
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { Framework } from '../conformance/apps.js';
import { scriptedApp } from '../support/scripted-app.js';
import { chunked, type Req } from '../support/scripted-icap.js';

const FRAMEWORKS: Framework[] = ['express5', 'fastify', 'koa3', 'hono'];
const MODES = ['fail-open', 'fail-closed'] as const;
const START = 'ICAP/1.0 200 OK\r\nISTag: "x1"\r\n';
const NO_CONTENT = 'ICAP/1.0 204 No Content\r\nISTag: "x1"\r\nEncapsulated: null-body=0\r\n\r\n';
const THREAT_LINES = [
  'X-Infection-Found: Type=0; Resolution=2; Threat=EICAR-Test-File;',
  'X-Virus-ID: EICAR-Test-Signature',
  'X-Violations-Found: 1',
  'X-Blocked-Reason: Infected',
];
/** The client's bound on the wait for a second answer's head (client/answer.ts STRAY_WAIT_MS). */
const STRAY_WAIT_MS = 250;

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/**
 * Each cut of `line` from its value's first byte to its whole value, its line end never sent.
 * (A cut before the value begins reads as the field with an empty value, which names nothing,
 * as it does when whole.)
 */
function cuts(line: string): string[] {
  const out: string[] = [];
  for (let k = line.indexOf(':') + 3; k <= line.length; k++) out.push(line.slice(0, k));
  return out;
}

const UPLOAD = Buffer.from('upload');
const THREAT = 'X-Infection-Found: Type=0; Resolution=2; Threat=EICAR-Test-File;';

/**
 * An app whose scripted server answers each REQMOD with `answer` (set per upload), then closes
 * the connection (or, with `keep`, leaves it open and silent).
 */
async function appWith(framework: Framework, failAction: (typeof MODES)[number], keep = false) {
  let answer: (r: Req) => string = () => '';
  const s = await scriptedApp(
    framework,
    (r) => (keep ? r.sock.write(answer(r)) : r.sock.end(answer(r))),
    { failAction, responseTimeout: 3000, connection: { ioTimeout: 2000 } },
    cleanups,
  );
  return {
    app: s.app,
    /** Whether the upload was blocked (403, ICAP_BLOCKED) while the server answered `a`. */
    async blocks(a: (r: Req) => string): Promise<boolean> {
      answer = a;
      const before = s.logs.length;
      const res = await s.post(UPLOAD);
      return res.status === 403 && s.logs[before]?.action === 'ICAP_BLOCKED';
    },
    /** While the server answers `a`, the upload is the ICAP failure it was (ICAP_ERR_CLOSED). */
    async fails(a: (r: Req) => string): Promise<void> {
      answer = a;
      const before = s.logs.length;
      const res = await s.post(UPLOAD);
      expect(res.status).toBe(failAction === 'fail-open' ? 200 : 503);
      expect(s.logs[before]?.error_code).toBe('ICAP_ERR_CLOSED');
    },
  };
}

/** Answers to a REQMOD whose chunked body is followed by `tail` (a trailer cut off). */
const BODIES: Record<string, (r: Req, tail: string) => string> = {
  'a clean echo': (r, tail) => echo(r, 'upload', tail),
  'a rewritten body': (r, tail) => echo(r, 'upl0ad', tail),
  'an error page': (_r, tail) => {
    const page = 'HTTP/1.1 500 Error\r\nContent-Type: text/plain\r\n\r\n';
    return `ICAP/1.0 500 Server Error\r\nISTag: "x1"\r\nEncapsulated: res-hdr=0, res-body=${page.length}\r\n\r\n${page}${chunked(Buffer.from('oops'))}0\r\n${tail}`;
  },
};

/** A 200 echoing the request's head and `body`, then the trailer `tail`. */
function echo(r: Req, body: string, tail: string): string {
  const reqHdr = r.encap.toString('latin1');
  return `ICAP/1.0 200 OK\r\nISTag: "x1"\r\nEncapsulated: req-hdr=0, req-body=${reqHdr.length}\r\n\r\n${reqHdr}${chunked(Buffer.from(body))}0\r\n${tail}`;
}

describe('a threat field line cut short', () => {
  for (const framework of FRAMEWORKS)
    for (const failAction of MODES)
      it(`blocks when the head breaks off in it, at every offset (${framework}, ${failAction})`, async () => {
        const t = await appWith(framework, failAction);
        const passed: string[] = [];
        for (const line of THREAT_LINES)
          for (const cut of cuts(line)) if (!(await t.blocks(() => START + cut))) passed.push(cut);
        expect(passed).toEqual([]);
        expect(t.app.seen).toHaveLength(0);
        // A head that breaks off before any threat field is an ICAP failure, as before.
        await t.fails(() => START.slice(0, -5));
      }, 60_000);

  for (const framework of FRAMEWORKS)
    for (const failAction of MODES)
      it(`blocks when a second answer after a 204 stops in it past the wait (${framework}, ${failAction})`, async () => {
        const t = await appWith(framework, failAction, true);
        const passed: string[] = [];
        for (const line of THREAT_LINES) {
          const all = cuts(line);
          // Three cuts per field: the value's first byte, its middle, all of it.
          for (const cut of new Set([all[0]!, all[Math.floor(all.length / 2)]!, all.at(-1)!])) {
            const t0 = performance.now();
            if (!(await t.blocks(() => NO_CONTENT + START + cut))) passed.push(cut);
            // It waited for the rest of the head (the server stays silent), then settled.
            expect(performance.now() - t0).toBeGreaterThanOrEqual(STRAY_WAIT_MS - 20);
          }
        }
        expect(passed).toEqual([]);
        expect(t.app.seen).toHaveLength(0);
        // A 204 and nothing after it passes.
        expect(await t.blocks(() => NO_CONTENT)).toBe(false);
        expect(t.app.seen).toHaveLength(1);
      }, 60_000);

  const TAILS = [`X-Other: 1\r\n${THREAT}\r\n`, `${THREAT}\r\nX-Other: 1`, THREAT, THREAT.slice(0, 25)];
  for (const framework of FRAMEWORKS)
    for (const failAction of MODES)
      it(`blocks when the trailer after the body breaks off, in the threat's line or after it (${framework}, ${failAction})`, async () => {
        const t = await appWith(framework, failAction);
        const passed: string[] = [];
        for (const [what, body] of Object.entries(BODIES))
          for (const tail of TAILS)
            if (!(await t.blocks((r) => body(r, tail)))) passed.push(`${what}: ${JSON.stringify(tail)}`);
        expect(passed).toEqual([]);
        expect(t.app.seen).toHaveLength(0);
        // A trailer naming nothing that breaks off is the failure it was.
        await t.fails((r) => echo(r, 'upload', 'X-Other: 1\r\nX-Mor'));
      }, 60_000);

  for (const framework of FRAMEWORKS)
    for (const failAction of MODES)
      it(`blocks when the answer breaks off in its encapsulated HTTP head, in the threat's line or after it (${framework}, ${failAction})`, async () => {
        const t = await appWith(framework, failAction);
        /** A 200 echoing the request's head with the threat field in it, cut by `cut`. */
        const answer = (cut: (h: string, at: number) => string) => (r: Req) => {
          const echoed = r.encap
            .toString('latin1')
            .replace(/\r\n\r\n$/, `\r\n${THREAT}\r\nX-Other: 1\r\n\r\n`);
          const encap = `Encapsulated: req-hdr=0, req-body=${echoed.length}`;
          return `ICAP/1.0 200 OK\r\nISTag: "x1"\r\n${encap}\r\n\r\n${cut(echoed, echoed.indexOf(THREAT))}`;
        };
        const passed: string[] = [];
        const cuts: Array<[string, (h: string, at: number) => string]> = [
          ['in the line', (h, at) => h.slice(0, at + 30)],
          ['at its end', (h, at) => h.slice(0, at + THREAT.length)],
          ['after it', (h, at) => h.slice(0, at + THREAT.length + 5)],
        ];
        for (const [what, c] of cuts) if (!(await t.blocks(answer(c)))) passed.push(what);
        expect(passed).toEqual([]);
        expect(t.app.seen).toHaveLength(0);
        // Cut before the threat's line: the failure it was.
        await t.fails(answer((h, at) => h.slice(0, at - 3)));
      }, 60_000);
});

describe('campaign-x: a threat named in a head or trailer over the bound, after other heads, or with bare-CR line ends', () => {
  /** A Symantec-style list of infected entries, folded, of about `bytes`. */
  const violations = (bytes: number) => {
    let s = 'X-Violations-Found: 400\r\n';
    for (let i = 0; s.length < bytes; i++)
      s += `\tarchive/${'n'.repeat(120)}-${i}.com\r\n\tEICAR Test String\r\n\t11101\r\n\t0\r\n`;
    return s;
  };
  const ANSWERS: Record<string, { keep?: boolean; answer: (r: Req) => string }> = {
    // X1: the threat fields first, then a list of entries past maxHeaderSize (64 KiB).
    'a head over maxHeaderSize, its threat first': {
      answer: () =>
        `ICAP/1.0 200 OK\r\nISTag: "x1"\r\n${THREAT}\r\n${violations(70_000)}Encapsulated: null-body=0\r\n\r\n`,
    },
    // X2: a trailer past the parser's 16 KiB default, its threat last.
    'a trailer of 17 KiB, its threat last': {
      answer: (r) => echo(r, 'upload', `${'X-Pad: '.padEnd(17_000, 'a')}\r\n${THREAT}\r\n\r\n`),
    },
    // X3: bare CR line ends, the head cut.
    'a head with bare-CR line ends, cut': { answer: () => `ICAP/1.0 200 OK\rISTag: "x1"\r${THREAT}\r` },
    // campaign-al AL2: CR CR LF line ends (CRLF written through a text-mode stream), on the
    // status line only or on every line (no head end the framing knows: read when it closes).
    'a head with CR CR LF after its status line': {
      answer: () => `ICAP/1.0 200 OK\r\r\nISTag: "x1"\r\n${THREAT}Encapsulated: null-body=0\r\n\r\n`,
    },
    'a head with CR CR LF line ends': {
      answer: () =>
        `ICAP/1.0 200 OK\r\nISTag: "x1"\r\n${THREAT}Encapsulated: null-body=0\r\n\r\n`.replaceAll(
          '\r\n',
          '\r\r\n',
        ),
    },
    // X9: a second answer after a 204, behind blank lines, a 100 Continue, or another 204.
    '204, two blank lines, then the threat answer': {
      keep: true,
      answer: () => `${NO_CONTENT}\r\n\r\n${START}${THREAT}\r\nEncapsulated: null-body=0\r\n\r\n`,
    },
    '204, 100 Continue, then the threat answer': {
      keep: true,
      answer: () =>
        `${NO_CONTENT}ICAP/1.0 100 Continue\r\n\r\n${START}${THREAT}\r\nEncapsulated: null-body=0\r\n\r\n`,
    },
    // campaign-am AM1: heads after the answer are read however many (their bytes bound them).
    '204, twenty 100 Continue heads, then the threat answer': {
      keep: true,
      answer: () =>
        `${NO_CONTENT}${'ICAP/1.0 100 Continue\r\n\r\n'.repeat(20)}${START}${THREAT}\r\nEncapsulated: null-body=0\r\n\r\n`,
    },
    '204, 204, then the threat answer': {
      keep: true,
      answer: () => `${NO_CONTENT}${NO_CONTENT}${START}${THREAT}\r\nEncapsulated: null-body=0\r\n\r\n`,
    },
  };
  for (const framework of FRAMEWORKS)
    for (const failAction of MODES)
      it(`blocks (${framework}, ${failAction})`, async () => {
        const passed: string[] = [];
        for (const keep of [false, true]) {
          const t = await appWith(framework, failAction, keep);
          for (const [what, a] of Object.entries(ANSWERS))
            if ((a.keep ?? false) === keep && !(await t.blocks(a.answer))) passed.push(what);
          expect(t.app.seen).toHaveLength(0);
        }
        expect(passed).toEqual([]);
      }, 60_000);
});

describe('a status line that blocks alone, cut before its line end by the close (campaign-ba BA2)', () => {
  // ESET blocks with a bare `405 Forbidden`, Symantec with `539`: a start line the connection's
  // end cut before its line end was not read at all (ICAP_ERR_CLOSED: fail-open delivered).
  const SHAPES: Array<['eset' | 'symantec', string]> = [
    ['eset', 'ICAP/1.0 405 Forbidden'],
    ['symantec', 'ICAP/1.0 539 Aborted - No AV scanning license'],
    ['symantec', 'ICAP/1.0 539'],
  ];
  for (const framework of FRAMEWORKS)
    for (const failAction of MODES)
      it(`blocks; a start line cut in its code or a 204's is the failure it was (${framework}, ${failAction})`, async () => {
        for (const vendor of ['eset', 'symantec'] as const) {
          let answer = '';
          const s = await scriptedApp(
            framework,
            (r) => r.sock.end(answer),
            { failAction, vendor, responseTimeout: 3000, connection: { ioTimeout: 2000 } },
            cleanups,
          );
          for (const [v, line] of SHAPES.filter(([v]) => v === vendor)) {
            answer = line;
            const before = s.logs.length;
            const res = await s.post(UPLOAD);
            expect(res.status, `${v}: ${line}`).toBe(403);
            expect(s.logs[before]?.action, line).toBe('ICAP_BLOCKED');
          }
          // A 4xx cut in its reason (ESET's 405 whose phrase never came) is the server refusing
          // the upload, as with its line end: 503 in both actions, never delivered (campaign-bb BB1).
          answer = 'ICAP/1.0 405 Forb';
          const refused = await s.post(UPLOAD);
          expect(refused.status).toBe(503);
          for (const line of ['ICAP/1.0 40', 'ICAP/1.0 204 No Content']) {
            answer = line;
            const before = s.logs.length;
            const res = await s.post(UPLOAD);
            expect(res.status, line).toBe(failAction === 'fail-open' ? 200 : 503);
            expect(s.logs[before]?.error_code, line).toBe('ICAP_ERR_CLOSED');
          }
          expect(s.app.seen).toHaveLength(failAction === 'fail-open' ? 2 : 0);
          for (const c of cleanups.splice(0).reverse()) await c();
        }
      });
});
