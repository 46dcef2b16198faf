/**
 * A threat the ICAP server names after a part of its answer that the engine used to stop reading
 * blocks, in both failure modes (the invariant "a threat verdict is never lost"), found by an
 * attack campaign with a scripted server (each case failed before its fix):
 *
 * - in the trailer after a clean answer's body (or an error answer's page) over 64 KiB: such a
 *   body was dropped at 64 KiB, so its trailer was never read, and the head's clean verdict stood
 *   (or the error took fail-open). It is now read to its end, bounded in time only;
 * - in the trailer after an echoed body over bufferSize: the over-size failure took fail-open
 *   before the trailer was read. The rest is now read (and discarded) to its end first;
 * - in the encapsulated HTTP head (the request a 200 echoes, or a page) of an answer whose
 *   encapsulated section breaks a rule (a line without a colon): the error carried the ICAP head
 *   only. Its lines are now read leniently, for a threat.
 *
 * And what must not change: a large clean answer passes, an echo over bufferSize without a threat
 * is the failure it was, a broken section naming no threat is an ICAP failure, and a clean answer
 * whose body never ends is one too (it used to pass after 64 KiB, even under fail-closed).
 */
import type { IcapLog } from '@icapkit/core';
import { afterEach, describe, expect, it } from 'vitest';
import type { App, Framework } from '../conformance/apps.js';
import { scriptedApp } from '../support/scripted-app.js';
import { chunked, type Handler, type Req } from '../support/scripted-icap.js';

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const FRAMEWORKS: Framework[] = ['express5', 'fastify', 'koa3', 'hono'];
const MODES = ['fail-open', 'fail-closed'] as const;
const UPLOAD = Buffer.from('some upload');
const THREAT = 'X-Infection-Found: Type=0; Resolution=2; Threat=EICAR;\r\n';
const MIB = Buffer.alloc(1024 * 1024, 0x41);

async function setup(
  framework: Framework,
  failAction: (typeof MODES)[number],
  handler: Handler,
  extra: Record<string, unknown> = {},
) {
  const profile = { failAction, responseTimeout: 3000, connection: { ioTimeout: 2000 }, ...extra };
  const s = await scriptedApp(framework, handler, profile, cleanups);
  return { app: s.app, logs: s.logs, post: () => s.post(UPLOAD) };
}

function expectBlocked(status: number, app: App, log: IcapLog | undefined): void {
  expect(status).toBe(403);
  expect(app.seen).toHaveLength(0);
  expect(log?.action).toBe('ICAP_BLOCKED');
}

/** What a failed exchange gives: fail-open passes the original upload, fail-closed 503. */
function expectFailure(
  mode: (typeof MODES)[number],
  status: number,
  app: App,
  log: IcapLog | undefined,
): void {
  expect(log?.action).toBe('ICAP_FAILED');
  if (mode === 'fail-closed') {
    expect(status).toBe(503);
    expect(app.seen).toHaveLength(0);
  } else {
    expect(status).toBe(200);
    expect(app.seen[0]?.raw).toEqual(UPLOAD);
  }
}

const ALLOWED =
  'ICAP/1.0 200 OK\r\nISTag: "x1"\r\nX-Response-Info: Allowed\r\nEncapsulated: req-body=0\r\n\r\n';
const PAGE200 = 'HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n';
const ERROR500 = `ICAP/1.0 500 Server Error\r\nISTag: "x1"\r\nEncapsulated: res-hdr=0, res-body=${PAGE200.length}\r\n\r\n${PAGE200}`;

/** A 200 echoing the request head (plus `extra` lines) and `body`, then `trailer`. */
function echo(r: Req, body: Buffer, extra = '', trailer = ''): string {
  const reqHdr = r.encap.toString('latin1').replace(/\r\n\r\n$/, `\r\n${extra}\r\n`);
  return `ICAP/1.0 200 OK\r\nISTag: "x1"\r\nEncapsulated: req-hdr=0, req-body=${reqHdr.length}\r\n\r\n${reqHdr}${chunked(body)}0\r\n${trailer}\r\n`;
}

/** An answer of `status` announcing a body (`res-body`) after a 403 page with `extra` lines. */
function pageWithBody(status: string, extra: string): string {
  const p = `HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\n${extra}\r\n`;
  return `ICAP/1.0 ${status}\r\nISTag: "x1"\r\nEncapsulated: res-hdr=0, res-body=${p.length}\r\n\r\n${p}4\r\ngone\r\n0\r\n\r\n`;
}

/** An answer of `status` carrying a 403 page (with `extra` lines) and no body. */
function page(status: string, extra: string): string {
  const p = `HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n${extra}\r\n`;
  return `ICAP/1.0 ${status}\r\nISTag: "x1"\r\nEncapsulated: res-hdr=0, null-body=${p.length}\r\n\r\n${p}`;
}

describe.each(FRAMEWORKS)('%s', (framework) => {
  for (const mode of MODES) {
    describe(mode, () => {
      // ---------------------------------------------------- a body over 64 KiB, then a trailer

      it('a clean 200 with a 1 MiB body and a threat in its trailer is blocked', async () => {
        const { app, logs, post } = await setup(framework, mode, (r) =>
          r.sock.write(`${ALLOWED}${chunked(MIB)}0\r\n${THREAT}\r\n`),
        );
        expectBlocked((await post()).status, app, logs[0]);
        expect(logs[0]?.request_logs[0]?.threat_id).toBe('EICAR');
      });

      it('an ICAP 500 with a 1 MiB page and a threat in its trailer is blocked', async () => {
        const { app, logs, post } = await setup(framework, mode, (r) =>
          r.sock.write(`${ERROR500}${chunked(MIB)}0\r\n${THREAT}\r\n`),
        );
        expectBlocked((await post()).status, app, logs[0]);
      });

      it('control: a clean 200 with a 1 MiB body and a harmless trailer passes', async () => {
        const { app, logs, post } = await setup(framework, mode, (r) =>
          r.sock.write(`${ALLOWED}${chunked(MIB)}0\r\nX-Scan-Time: 12\r\n\r\n`),
        );
        const res = await post();
        expect(res.status).toBe(200);
        expect(app.seen[0]?.raw).toEqual(UPLOAD);
        expect(logs[0]?.action).toBe('ICAP_PASSED');
      });

      it('a clean 200 whose body never ends is an ICAP failure, never a pass by itself', async () => {
        const { app, logs, post } = await setup(
          framework,
          mode,
          (r) => r.sock.write(`${ALLOWED}${(2 * MIB.length).toString(16)}\r\n${MIB.toString('latin1')}`),
          { responseTimeout: 1000, connection: { ioTimeout: 500 } },
        );
        expectFailure(mode, (await post()).status, app, logs[0]);
      });

      // ---------------------------------------------- an echo over bufferSize, then a trailer

      it('an echo over bufferSize with a threat in its trailer is blocked', async () => {
        const { app, logs, post } = await setup(
          framework,
          mode,
          (r) => r.sock.write(echo(r, Buffer.alloc(4096, 0x41), '', THREAT)),
          { bufferSize: 1024 },
        );
        expectBlocked((await post()).status, app, logs[0]);
        expect(logs[0]?.request_logs[0]?.threat_id).toBe('EICAR');
      });

      it('control: an echo over bufferSize without a threat is the over-size failure it was, never fail-open', async () => {
        const { app, logs, post } = await setup(
          framework,
          mode,
          (r) => r.sock.write(echo(r, Buffer.alloc(4096, 0x41))),
          { bufferSize: 1024 },
        );
        // A rewrite too large to hold from a server that answers its health check: the upload
        // made it so (a CDR unpacking a bomb). 503 in both modes: the original never passes in
        // place of a rewrite icapkit could not hold.
        expect((await post()).status).toBe(503);
        expect(app.seen).toHaveLength(0);
        expect(logs[0]?.action).toBe('ICAP_FAILED');
        expect(logs[0]?.request_logs[0]?.error_message).toMatch(/larger than bufferSize/);
        expect(logs[0]?.significance.includes('CONTENT_PROVOKED')).toBe(mode === 'fail-open');
      });

      // ------------------------- a threat in an encapsulated head with a line without a colon

      const BROKEN: Record<string, (r: Req) => string> = {
        'an echo with X-Blocked (Sophos) in its request head': (r) =>
          echo(r, r.body, 'X-Blocked: Virus found during virus scan\r\njunk\r\n'),
        'an echo with X-Infection-Found in its request head': (r) => echo(r, r.body, `${THREAT}junk\r\n`),
        'an echo with X-Virus-ID in its request head': (r) =>
          echo(r, r.body, 'X-Virus-ID: EICAR\r\njunk\r\n'),
        'an ICAP 500 with a 403 page naming a threat': () => page('500 Server Error', `${THREAT}junk\r\n`),
        'an ICAP 204 with a 403 page naming a threat': () => page('204 No Content', `${THREAT}junk\r\n`),
      };
      for (const [name, make] of Object.entries(BROKEN)) {
        it(`${name} and a malformed line there is blocked`, async () => {
          const { app, logs, post } = await setup(framework, mode, (r) => r.sock.write(make(r)));
          expectBlocked((await post()).status, app, logs[0]);
        });
      }

      // ------ a 204 that announces a body (a status that must carry none), a block page first

      for (const [name, extra] of [
        ['naming a threat', THREAT],
        ['alone', ''],
      ] as const) {
        it(`an ICAP 204 announcing a body after a 403 page ${name} is blocked (campaign-ai AI2)`, async () => {
          const { app, logs, post } = await setup(framework, mode, (r) =>
            r.sock.write(pageWithBody('204 No Content', extra)),
          );
          expectBlocked((await post()).status, app, logs[0]);
        });
      }

      // ---- the real answer right after a head the client refuses or reads past (campaign-al AL1)

      const THREAT_ANSWER = `ICAP/1.0 200 OK\r\nISTag: "x1"\r\n${THREAT}Encapsulated: null-body=0\r\n\r\n`;
      const CLEAN_204 = 'ICAP/1.0 204 No Content\r\nISTag: "x1"\r\nEncapsulated: null-body=0\r\n\r\n';
      const FIRSTS: Record<string, { head: string; profile?: Record<string, unknown> }> = {
        'a 100 Continue without a preview': { head: 'ICAP/1.0 100 Continue\r\n\r\n' },
        'two 100 Continue heads': { head: 'ICAP/1.0 100 Continue\r\n\r\nICAP/1.0 100 Continue\r\n\r\n' },
        'a 204 Allow: 204 did not offer': {
          head: 'ICAP/1.0 204 No Content\r\nISTag: "x1"\r\nEncapsulated: null-body=0\r\n\r\n',
          profile: { allow204: false },
        },
        'a 204 announcing a body': {
          head: 'ICAP/1.0 204 No Content\r\nISTag: "x1"\r\nEncapsulated: res-body=0\r\n\r\n',
        },
        'an unknown status (999)': {
          head: 'ICAP/1.0 999 What\r\nISTag: "x1"\r\nEncapsulated: null-body=0\r\n\r\n',
        },
        // campaign-am AM1: bare 100s are read past however many; fielded ones past 8 fail, and
        // what follows goes with the error, however many heads it holds.
        '25 bare 100 Continue heads': { head: 'ICAP/1.0 100 Continue\r\n\r\n'.repeat(25) },
        // Past 64 of them (campaign-an AN2: a flood held a core until responseTimeout), a failure.
        '2,000 bare 100 Continue heads': { head: 'ICAP/1.0 100 Continue\r\n\r\n'.repeat(2000) },

        '30 100 Continue heads with a field': {
          head: 'ICAP/1.0 100 Continue\r\nX-Note: working\r\n\r\n'.repeat(30),
        },
      };
      for (const [name, first] of Object.entries(FIRSTS)) {
        it(`a threat answer in the same write after ${name} is blocked`, async () => {
          const { app, logs, post } = await setup(
            framework,
            mode,
            (r) => r.sock.write(first.head + THREAT_ANSWER),
            first.profile,
          );
          expectBlocked((await post()).status, app, logs[0]);
        });
      }

      // AO2 (campaign-ao): the refused head ends its read, the answer comes in a later write.
      for (const name of [
        'a 204 Allow: 204 did not offer',
        'a 204 announcing a body',
        'an unknown status (999)',
        '65 bare 100 Continue heads, the last one past the bound',
      ]) {
        it(`a threat answer in a later write after ${name} is blocked`, async () => {
          const first = FIRSTS[name] ?? { head: 'ICAP/1.0 100 Continue\r\n\r\n'.repeat(65) };
          const { app, logs, post } = await setup(
            framework,
            mode,
            (r) => {
              r.sock.write(first.head);
              setTimeout(() => r.sock.write(THREAT_ANSWER), 40);
            },
            first.profile,
          );
          expectBlocked((await post()).status, app, logs[0]);
        });
      }

      it('control: a refused head and nothing after it, the connection left open: its own failure after the wait', async () => {
        const { app, logs, post } = await setup(framework, mode, (r) =>
          r.sock.write(FIRSTS['an unknown status (999)']!.head),
        );
        expectFailure(mode, (await post()).status, app, logs[0]);
        // The refused head's error, not the responseTimeout's: the wait is short and bounded.
        expect(logs[0]?.request_logs[0]?.error_message).toMatch(/999/);
      });

      // ---- campaign-aq: what the lenient readings, the 100s' merge and the waits let through

      const C100 = (http: string) =>
        `ICAP/1.0 100 Continue\r\nISTag: "x1"\r\nEncapsulated: res-hdr=0, null-body=${http.length}\r\n\r\n${http}`;
      const PLAIN_100 = 'ICAP/1.0 100 Continue\r\nISTag: "x1"\r\n\r\n';
      const HTTP_200 = 'HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n';
      const echoHead = (r: Req) => {
        const reqHdr = r.encap.toString('latin1');
        return `ICAP/1.0 200 OK\r\nISTag: "x1"\r\nEncapsulated: req-hdr=0, req-body=${reqHdr.length}\r\n\r\n${reqHdr}`;
      };
      /** Answers in one write, or `[first, later]`: the second 40 ms after the first. */
      const AQ: Record<string, (r: Req) => string | Buffer | string[]> = {
        'two 100s, the first naming X-Virus-ID in its encapsulated head, then a 204 (AQ2)': () =>
          C100('HTTP/1.1 200 OK\r\nX-Virus-ID: EICAR\r\n\r\n') + PLAIN_100 + CLEAN_204,
        'two 100s, the first with a 403 page head, then a 204 (AQ2)': () =>
          C100('HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\n\r\n') + PLAIN_100 + CLEAN_204,
        'two 100s both with encapsulated heads, the first naming X-Virus-ID (AQ2)': () =>
          C100('HTTP/1.1 200 OK\r\nX-Virus-ID: EICAR\r\n\r\n') + C100(HTTP_200) + CLEAN_204,
        'an unknown status with its HTTP head, the threat answer in a later write (AQ3)': () => [
          `ICAP/1.0 999 What\r\nISTag: "x1"\r\nEncapsulated: res-hdr=0, null-body=${HTTP_200.length}\r\n\r\n${HTTP_200}`,
          THREAT_ANSWER,
        ],
        'a clean 204 and an HTTP-like head after it, the threat answer in a later write (AQ3)': () => [
          CLEAN_204 + HTTP_200,
          THREAT_ANSWER,
        ],
        'an echo whose trailer holds a field with two bare CRs, then the threat (AQ5)': (r) =>
          echo(r, r.body, '', `X-Note: a\r\rb\r\n${THREAT}`),
        'two 100s, the first with a bare-CR field then the threat, then a 204 (AQ5)': () =>
          `ICAP/1.0 100 Continue\r\nX-Note: a\r\rb\r\n${THREAT}\r\n${PLAIN_100}${CLEAN_204}`,
        'two 100s, the first with UTF-8 "ĊĊ" in a field then the threat, then a 204 (AQ5)': () =>
          Buffer.from(
            `ICAP/1.0 100 Continue\r\nX-Note: aĊĊb\r\n${THREAT}\r\n${PLAIN_100}${CLEAN_204}`,
            'utf8',
          ),
        'an unknown status with a bare-CR field, then the threat in its head (AQ5)': () =>
          `ICAP/1.0 999 What\r\nX-Note: a\r\rb\r\n${THREAT}Encapsulated: null-body=0\r\n\r\n`,
        'an echo with a bad chunk size line, then the threat answer (AQ6)': (r) =>
          `${echoHead(r)}zz\r\n${THREAT_ANSWER}`,
        'an echo with a chunk longer than its size, then the threat answer (AQ6)': (r) =>
          `${echoHead(r)}2\r\nabc\r\n0\r\n\r\n${THREAT_ANSWER}`,
        // campaign-ar AR2: a line the strict parser reads as a field line must not end the lenient reading.
        'an echo whose trailer has a line of one CR, then the threat (AR2)': (r) =>
          echo(r, r.body, '', `X-A: 1\r\n\r\r\n${THREAT}`),
        'an echo whose trailer has the threat line starting with a CR (AR2)': (r) =>
          echo(r, r.body, '', `X-A: 1\r\n\r${THREAT}`),
        'a clean 204, then an answer whose threat line starts with a CR (AR2)': () =>
          `${CLEAN_204}ICAP/1.0 200 OK\r\nX-A: 1\r\n\r${THREAT}Encapsulated: null-body=0\r\n\r\n`,
        'an unknown status whose threat line starts with a CR (AR2)': () =>
          `ICAP/1.0 999 What\r\nX-A: 1\r\n\r${THREAT}Encapsulated: null-body=0\r\n\r\n`,
        'two 100s both with encapsulated heads, the second naming X-Virus-ID (AR5)': () =>
          C100(HTTP_200) + C100('HTTP/1.1 200 OK\r\nX-Virus-ID: EICAR\r\n\r\n') + CLEAN_204,
        'an echo with a bad chunk size line, the threat answer in a later write (AQ6)': (r) => [
          `${echoHead(r)}zz\r\n`,
          THREAT_ANSWER,
        ],
        // campaign-ar AR1, AR3, AR4: what follows a broken body is searched from where it broke,
        // and heads in it (which may be the upload's own bytes) end no wait.
        'an echo whose body holds a clean ICAP head, a bad chunk size line, the threat later (AR1)': (r) => [
          `${echoHead(r)}${chunked(Buffer.from('x\nICAP/1.0 200 OK\n\n'))}zz\r\n`,
          THREAT_ANSWER,
        ],
        'an echo whose body holds a clean 204 head, a bad chunk size line in the next write, the threat later (AR1)':
          (r) => [`${echoHead(r)}${chunked(Buffer.from(`x\r\n${CLEAN_204}`))}`, 'zz\r\n', THREAT_ANSWER],
        'an echo whose chunk runs on into clean 204 heads, the threat answer later (AR1)': (r) => [
          `${echoHead(r)}2\r\nab\n${CLEAN_204.repeat(3000)}`,
          THREAT_ANSWER,
        ],
        'an echo with a bad chunk size line holding a bare-CR threat answer, its LF later (AR3)': (r) => [
          `${echoHead(r)}zz\rICAP/1.0 200 OK\r${THREAT.trimEnd()}\rEncapsulated: null-body=0\r\r`,
          '\r\n',
        ],
        // campaign-as: the answer's first bytes taken for a short chunk's (AS1), an answer not at a
        // line start (AS2), after an error status whose body is not read (AS7), after a head over
        // maxHeaderSize (AS8), after an echo the upload's own bytes closed (AS10).
        "an echo whose short chunk took the answer's first bytes (AS1)": (r) =>
          `${echoHead(r)}5\r\nab${THREAT_ANSWER}`,
        "an echo whose short chunk took the CRLF and the answer's first byte (AS1)": (r) =>
          `${echoHead(r)}5\r\nab\r\n${THREAT_ANSWER}`,
        "an echo whose short chunk takes the answer's first bytes in a later write (AS1)": (r) => [
          `${echoHead(r)}5\r\nab`,
          THREAT_ANSWER,
        ],
        "an echo whose chunk of 5 is the answer's ICAP/ (AS1)": (r) =>
          `${echoHead(r)}5;\u0001\r\n${THREAT_ANSWER}`,
        'an echo with a bad chunk size line, bytes with no line end, then the answer (AS2)': (r) => [
          `${echoHead(r)}zz\r\n`,
          'aaaa',
          THREAT_ANSWER,
        ],
        'an echo whose chunk-size line runs into the answer (AS2)': (r) => `${echoHead(r)}10${THREAT_ANSWER}`,
        'an echo with a bad chunk size line, then the answer after a space (AS2)': (r) =>
          `${echoHead(r)}zz\r\n ${THREAT_ANSWER}`,
        'an echo with a bad chunk size line, then the answer in lower case (AS2)': (r) =>
          `${echoHead(r)}zz\r\n${THREAT_ANSWER.replace('ICAP/', 'icap/')}`,
        'a 500 whose body does not fit, then the answer (AS7)': () =>
          `ICAP/1.0 500 Server Error\r\nISTag: "x1"\r\nEncapsulated: opt-body=0\r\n\r\n0\r\n\r\n${THREAT_ANSWER}`,
        'a 503 whose body does not fit, the answer in a later write (AS7)': () => [
          `ICAP/1.0 503 Busy\r\nISTag: "x1"\r\nEncapsulated: opt-body=0\r\n\r\n0\r\n\r\n`,
          THREAT_ANSWER,
        ],
        'a head over maxHeaderSize, then the answer (AS8)': () =>
          `ICAP/1.0 200 OK\r\nX-A: ${'a'.repeat(70 * 1024)}\r\n\r\n${THREAT_ANSWER}`,
        "an echo the upload's bytes closed, a clean 204 head from them, the answer later (AS10)": (r) => [
          `${echoHead(r)}1\r\nA\r\n0\r\n\r\n${CLEAN_204}\r\n0\r\n\r\n`,
          THREAT_ANSWER,
        ],
        'an echo with a bad chunk size line, 100 KiB more body, then the threat answer (AR4)': (r) => [
          `${echoHead(r)}zz\r\n`,
          `${'a'.repeat(100 * 1024)}\r\n0\r\n\r\n`,
          THREAT_ANSWER,
        ],
      };
      for (const [name, make] of Object.entries(AQ)) {
        it(`${name}: blocked`, async () => {
          const { app, logs, post } = await setup(framework, mode, (r) => {
            const answer = make(r);
            if (!Array.isArray(answer)) return r.sock.write(answer);
            for (const [k, part] of answer.entries())
              setTimeout(() => r.sock.destroyed || r.sock.write(part), 40 * k);
          });
          expectBlocked((await post()).status, app, logs[0]);
        });
      }

      it('a threat answer cut in its threat line after a refused head is read to its head end (StrayWait)', async () => {
        const { app, logs, post } = await setup(framework, mode, (r) => {
          const all = FIRSTS['an unknown status (999)']!.head + THREAT_ANSWER;
          const cut = all.indexOf('Threat=') + 3;
          r.sock.write(all.slice(0, cut));
          setTimeout(() => r.sock.write(all.slice(cut)), 30);
        });
        expectBlocked((await post()).status, app, logs[0]);
      });

      it('a 100 Continue nobody asked for, the threat answer in a later write: read past, blocked', async () => {
        const { app, logs, post } = await setup(framework, mode, (r) => {
          r.sock.write('ICAP/1.0 100 Continue\r\n\r\n');
          setTimeout(() => r.sock.write(THREAT_ANSWER), 30);
        });
        expectBlocked((await post()).status, app, logs[0]);
      });

      it('control: a 100 Continue nobody asked for, then a clean 204, passes the upload', async () => {
        const { app, logs, post } = await setup(framework, mode, (r) =>
          r.sock.write(`ICAP/1.0 100 Continue\r\n\r\n${CLEAN_204}`),
        );
        expect((await post()).status).toBe(200);
        expect(app.seen[0]?.raw).toEqual(UPLOAD);
        expect(logs[0]?.action).toBe('ICAP_PASSED');
      });

      if (mode === 'fail-closed')
        it('a 100 and a 204 Allow: 204 did not offer in one read after a preview: the protocol error (campaign-am AM3)', async () => {
          const s = await scriptedApp(
            framework,
            () => {},
            { failAction: mode, allow204: false, previewMinBodySize: 0, responseTimeout: 3000 },
            cleanups,
            { optionsHeaders: 'Preview: 4\r\n', continueHead: `ICAP/1.0 100 Continue\r\n\r\n${CLEAN_204}` },
          );
          expect((await s.post(UPLOAD)).status).toBe(503);
          expect(s.app.seen).toHaveLength(0);
          expect(s.logs[0]?.error_code).toBe('ICAP_ERR_PROTOCOL');
          expect(s.logs[0]?.request_logs[0]?.error_message).toMatch(/Allow: 204 was not offered/);
        });

      it('the 100 Continue past the bound names the threat, a clean 204 after it: blocked (campaign-ao AO1)', async () => {
        const { app, logs, post } = await setup(framework, mode, (r) =>
          r.sock.write(
            `${'ICAP/1.0 100 Continue\r\n\r\n'.repeat(57)}ICAP/1.0 100 Continue\r\n${THREAT}\r\n${CLEAN_204}`,
          ),
        );
        expectBlocked((await post()).status, app, logs[0]);
      });

      it('a flood of bare 100 Continue heads and no answer fails at the 65th, not at responseTimeout (campaign-an AN2)', async () => {
        const { app, logs, post } = await setup(framework, mode, (r) =>
          r.sock.write('ICAP/1.0 100 Continue\r\n\r\n'.repeat(100)),
        );
        expectFailure(mode, (await post()).status, app, logs[0]);
        expect(logs[0]?.request_logs[0]?.error_message).toMatch(/too many 100 Continue heads/);
      });

      it('control: a clean 204 after a refused head passes nothing by itself: the failure stands', async () => {
        const { app, logs, post } = await setup(framework, mode, (r) =>
          r.sock.write(FIRSTS['an unknown status (999)']!.head + CLEAN_204),
        );
        expectFailure(mode, (await post()).status, app, logs[0]);
        expect(logs[0]?.request_logs[0]?.error_message).toMatch(/999/);
      });

      it('control: an echo with a malformed line and no threat is an ICAP failure', async () => {
        const { app, logs, post } = await setup(framework, mode, (r) =>
          r.sock.write(echo(r, r.body, 'X-Scan-Time: 12\r\njunk\r\n')),
        );
        expectFailure(mode, (await post()).status, app, logs[0]);
        expect(logs[0]?.request_logs[0]?.error_message).toMatch(/malformed header line/);
      });
    });
  }
});
