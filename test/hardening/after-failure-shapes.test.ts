/**
 * Shapes of what a server sends after a failure, from campaign-at (an attack on c255f96): a
 * block page whose ICAP head carries c-icap's `Server: C-ICAP/0.5.10` (AT1), a vendor's status
 * block (ESET's 405) with more of the upload after it (AT1b), an answer inside a chunk longer than
 * what came, over two reads or with a byte after it (AT2), a short chunk that eats the answer's
 * first lines or all of it but its end (AT11), a read boundary inside the threat line (AT3), an
 * echo whose rest trickles for seconds before the answer (AT4), an ICAP 500 whose encapsulated
 * HTTP 403 page is the block (AT10), after an HTTP request head too (AU2), or whose page names
 * the threat in a field (AU3); any of those at a line's start after other lines (AX2, AX3). Each
 * blocks under both failure actions.
 */
import type { IcapLog } from '@icapkit/core';
import { afterEach, describe, expect, it } from 'vitest';
import type { App, Framework } from '../conformance/apps.js';
import { send } from '../support/http-client.js';
import { scriptedApp } from '../support/scripted-app.js';
import type { Req } from '../support/scripted-icap.js';

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});
const FRAMEWORKS: Framework[] = ['express5', 'fastify'];
const MODES = ['fail-open', 'fail-closed'] as const;
const UPLOAD = Buffer.from('some upload');
const THREAT = 'X-Infection-Found: Type=0; Resolution=2; Threat=EICAR;\r\n';
const THREAT_ANSWER = `ICAP/1.0 200 OK\r\nISTag: "x1"\r\n${THREAT}Encapsulated: null-body=0\r\n\r\n`;
const echoHead = (r: Req) => {
  const reqHdr = r.encap.toString('latin1');
  return `ICAP/1.0 200 OK\r\nISTag: "x1"\r\nEncapsulated: req-hdr=0, req-body=${reqHdr.length}\r\n\r\n${reqHdr}`;
};
// c-icap's answer shape (packages/core/test/engine/verdict/fixtures.ts CICAP_EICAR) without the
// threat fields: a block page by request satisfaction (squidclamav / a URL-check service).
const PAGE =
  'HTTP/1.1 403 Forbidden\r\nServer: C-ICAP\r\nContent-Type: text/html\r\nContent-Length: 5\r\n\r\n';
const CICAP_PAGE_ANSWER = `ICAP/1.0 200 OK\r\nServer: C-ICAP/0.5.10\r\nConnection: keep-alive\r\nISTag: "CI0001-2-x-27"\r\nEncapsulated: res-hdr=0, res-body=${PAGE.length}\r\n\r\n${PAGE}5\r\nBlock\r\n0\r\n\r\n`;

function expectBlocked(status: number, app: App, log: IcapLog | undefined): void {
  const got = {
    status,
    seen: app.seen.length,
    action: log?.action,
    err: log?.request_logs[0]?.error_message,
  };
  if (status !== 403) throw new Error(`NOT BLOCKED ${JSON.stringify(got)}`);
  expect(got).toMatchObject({ status: 403, seen: 0, action: 'ICAP_BLOCKED' });
}

type Parts = string | Buffer | Array<string | Buffer | { wait: number }>;
const trickle = (ms: number, every: number) => {
  const out: Array<string | { wait: number }> = [];
  for (let t = 0; t < ms; t += every) out.push({ wait: every }, 'x');
  return out;
};
const PAGE403 = 'HTTP/1.1 403 VirusFound\r\nContent-Type: text/html\r\nContent-Length: 5\r\n\r\n';
const ERR_PAGE_ANSWER = `ICAP/1.0 500 Server Error\r\nISTag: "m1"\r\nEncapsulated: res-hdr=0, res-body=${PAGE403.length}\r\n\r\n${PAGE403}5\r\nBlock\r\n0\r\n\r\n`;
const REQ_HEAD = 'GET / HTTP/1.1\r\nHost: x\r\n\r\n';
const REQ_THEN_PAGE = `ICAP/1.0 500 Server Error\r\nEncapsulated: req-hdr=0, res-hdr=${REQ_HEAD.length}, res-body=${REQ_HEAD.length + PAGE403.length}\r\n\r\n${REQ_HEAD}${PAGE403}5\r\nBlock\r\n0\r\n\r\n`;
const NAMED_PAGE = 'HTTP/1.1 200 OK\r\nX-Virus-Name: EICAR-Test-File\r\nContent-Length: 5\r\n\r\n';
const NAMED_PAGE_ANSWER = `ICAP/1.0 500 Server Error\r\nISTag: "m1"\r\nEncapsulated: res-hdr=0, res-body=${NAMED_PAGE.length}\r\n\r\n${NAMED_PAGE}5\r\nBlock\r\n0\r\n\r\n`;
const NO_CONTENT = 'ICAP/1.0 204 No Content\r\nISTag: "x"\r\nEncapsulated: null-body=0\r\n\r\n';
const ESET_405 = 'ICAP/1.0 405 Forbidden\r\nISTag: "e"\r\nEncapsulated: null-body=0\r\n\r\n';
/** An upload's bytes as a server echoes them, ending in a line end. */
const LINE_UPLOAD = 'some upload\n';
/** The server goes idle inside a chunk: the idle bound ends the exchange. */
const IDLE = { connection: { ioTimeout: 1000 } };
const CASES: Record<string, [(r: Req) => Parts, Record<string, unknown>?]> = {
  'control: ICAP 500 + HTTP 403 VirusFound page as the answer': [() => ERR_PAGE_ANSWER],
  'ICAP 500 + HTTP 403 VirusFound page after a broken echo (AT10)': [
    (r) => `${echoHead(r)}zz\r\n${ERR_PAGE_ANSWER}`,
  ],
  'ICAP 500 + HTTP 403 page after an HTTP request head (req-hdr, then res-hdr), after a broken echo (AU2)': [
    (r) => `${echoHead(r)}zz\r\n${REQ_THEN_PAGE}`,
  ],
  'ICAP 500 + a 200 page naming the threat in X-Virus-Name, after a broken echo (AU3)': [
    (r) => `${echoHead(r)}zz\r\n${NAMED_PAGE_ANSWER}`,
  ],
  'ICAP 500 + a 200 page naming the threat in X-Virus-Name, after a clean 204 in the same read (AU3)': [
    () => `ICAP/1.0 204 No Content\r\nISTag: "x"\r\nEncapsulated: null-body=0\r\n\r\n${NAMED_PAGE_ANSWER}`,
  ],
  'ICAP 500 + HTTP 403 page inside a chunk longer than what came, after its first bytes, the server idle (AW2)':
    [(r) => `${echoHead(r)}2000\r\nab${ERR_PAGE_ANSWER}`],
  'ICAP 500 + HTTP 403 VirusFound page after a short chunk (AT10)': [
    (r) => `${echoHead(r)}5\r\nab${ERR_PAGE_ANSWER}`,
  ],
  // An answer at a line's start after other lines, no blank line before it (campaign-ax AX2):
  // inside a chunk longer than what came, the server idle (strayInChunk).
  'ICAP 500 + HTTP 403 page at a line start inside a chunk longer than what came (AX2)': [
    (r) => `${echoHead(r)}2000\r\nab\r\n${ERR_PAGE_ANSWER}`,
    IDLE,
  ],
  'ICAP 500 + HTTP 403 page after a bare CR inside a chunk longer than what came (AX2)': [
    (r) => `${echoHead(r)}2000\r\nab\r${ERR_PAGE_ANSWER}`,
    IDLE,
  ],
  'c-icap block page after the upload echoed with a line end, inside a long chunk (AX2)': [
    (r) => `${echoHead(r)}2000\r\n${LINE_UPLOAD}${CICAP_PAGE_ANSWER}`,
    IDLE,
  ],
  'eset 405 Forbidden after the upload echoed with a line end, inside a long chunk (AX2)': [
    (r) => `${echoHead(r)}2000\r\n${LINE_UPLOAD}${ESET_405}`,
    { vendor: 'eset', ...IDLE },
  ],
  // ... and after a clean 204 in the same read (AX3).
  'ICAP 500 + HTTP 403 page after a clean 204 and one line (AX3)': [
    () => `${NO_CONTENT}x\r\n${ERR_PAGE_ANSWER}`,
  ],
  'ICAP 500 + HTTP 403 page after a clean 204 and the upload written back with a line end (AX3)': [
    () => `${NO_CONTENT}${LINE_UPLOAD}${ERR_PAGE_ANSWER}`,
  ],
  'c-icap block page after a clean 204 and the upload written back (AX3)': [
    () => `${NO_CONTENT}${LINE_UPLOAD}${CICAP_PAGE_ANSWER}`,
  ],
  'eset 405 Forbidden after a clean 204 and the upload written back (AX3)': [
    () => `${NO_CONTENT}${LINE_UPLOAD}${ESET_405}`,
    { vendor: 'eset' },
  ],
  // control: the page answer as the answer itself
  'control: c-icap block page as the answer': [() => CICAP_PAGE_ANSWER],
  'c-icap block page after a broken echo (Server: C-ICAP/ splits it)': [
    (r) => `${echoHead(r)}zz\r\n${CICAP_PAGE_ANSWER}`,
  ],
  'c-icap block page after a short chunk (AS1 shape)': [(r) => `${echoHead(r)}5\r\nab${CICAP_PAGE_ANSWER}`],
  'c-icap block page after an ignored-body 500 (AS7 shape)': [
    () => `ICAP/1.0 500 Server Error\r\nEncapsulated: opt-body=0\r\n\r\n0\r\n\r\n${CICAP_PAGE_ANSWER}`,
  ],
  'eset 405 Forbidden after a broken echo, upload echoed on with icap/': [
    (r) => [
      `${echoHead(r)}zz\r\n`,
      { wait: 30 },
      'ICAP/1.0 405 Forbidden\r\nISTag: "e"\r\nEncapsulated: null-body=0\r\n\r\n',
      { wait: 30 },
      '/icap/x',
    ],
    { vendor: 'eset' },
  ],
  'control: eset 405 Forbidden after a broken echo': [
    (r) => [
      `${echoHead(r)}zz\r\n`,
      { wait: 30 },
      'ICAP/1.0 405 Forbidden\r\nISTag: "e"\r\nEncapsulated: null-body=0\r\n\r\n',
    ],
    { vendor: 'eset' },
  ],
  // strayInChunk reads only the last body read
  'answer inside a declared 8 KiB chunk in two writes, then close': [
    (r) => [
      `${echoHead(r)}2000\r\nab`,
      { wait: 40 },
      THREAT_ANSWER.slice(0, 60),
      { wait: 40 },
      THREAT_ANSWER.slice(60),
    ],
  ],
  'answer inside a declared 8 KiB chunk, then one more byte, then close': [
    (r) => [`${echoHead(r)}2000\r\nab${THREAT_ANSWER}`, { wait: 40 }, '\r\n'],
  ],
  'answer inside a declared 8 KiB chunk, server idle; responseTimeout 800 (abort in chunk data)': [
    (r) => `${echoHead(r)}2000\r\nab${THREAT_ANSWER}`,
    { responseTimeout: 800, connection: { ioTimeout: 5000 } },
  ],
  // the chunk's data eats exactly the answer's status line; its CRLF ends the chunk; the threat line is read as a chunk size
  'short chunk eating exactly the status line, threat line first': [
    (r) =>
      `${echoHead(r)}11\r\nabICAP/1.0 200 OK\r\n${THREAT}ISTag: "x1"\r\nEncapsulated: null-body=0\r\n\r\n`,
  ],
  'control: short chunk eating the status line + 1 byte, threat line first': [
    (r) =>
      `${echoHead(r)}12\r\nabICAP/1.0 200 OK\r\n${THREAT}ISTag: "x1"\r\nEncapsulated: null-body=0\r\n\r\n`,
  ],
  'short chunk eating the status and ISTag lines (standard THREAT_ANSWER)': [
    (r) => `${echoHead(r)}1e\r\nab${THREAT_ANSWER}`,
  ],
  'short chunk eating the whole answer but its blank line (then `\\r\\n` as a chunk size)': [
    (r) => `${echoHead(r)}${(2 + THREAT_ANSWER.length - 4).toString(16)}\r\nab${THREAT_ANSWER}`,
  ],
  'short chunk eating the whole answer but its last CRLF, then the server closes': [
    (r) => `${echoHead(r)}${(2 + THREAT_ANSWER.length - 2).toString(16)}\r\nab${THREAT_ANSWER}`,
  ],
  // ChunkDataEnd failure: the chunk's start in an earlier read
  'short chunk spanning reads: the answer split inside the eaten bytes': [
    (r) => [
      `${echoHead(r)}30\r\nabcdefghij`,
      { wait: 40 },
      THREAT_ANSWER.slice(0, 20),
      { wait: 40 },
      THREAT_ANSWER.slice(20),
    ],
  ],
  'short chunk spanning reads: the read boundary inside the threat line': [
    (r) => [
      `${echoHead(r)}30\r\nabcdefghij`,
      { wait: 40 },
      THREAT_ANSWER.slice(0, 35),
      { wait: 40 },
      THREAT_ANSWER.slice(35),
    ],
  ],
  // the idle-extended wait: an echo trickling for longer than 20 x 250 ms
  'broken echo trickling 1 byte/100 ms for 6 s, then the answer': [
    (r) => [`${echoHead(r)}zz\r\n`, ...trickle(6000, 100), THREAT_ANSWER],
    { responseTimeout: 20000 },
  ],
  'threat answer with the break, then trickling on; responseTimeout 1000 (settleNow)': [
    (r) => [`${echoHead(r)}zz\r\n${THREAT_ANSWER}`, ...trickle(3000, 50)],
    { responseTimeout: 1000 },
  ],
  'broken echo trickling 1 byte/100 ms for 4 s, then the answer': [
    (r) => [`${echoHead(r)}zz\r\n`, ...trickle(4000, 100), THREAT_ANSWER],
    { responseTimeout: 20000 },
  ],
};

describe.each(FRAMEWORKS)('%s', (framework) => {
  for (const mode of MODES) {
    describe(mode, () => {
      for (const [name, [make, extra]] of Object.entries(CASES)) {
        it(name, { timeout: 30000 }, async () => {
          const profile = {
            failAction: mode,
            responseTimeout: 3000,
            connection: { ioTimeout: 2000 },
            ...extra,
          };
          const s = await scriptedApp(
            framework,
            (r) => {
              const a = make(r);
              const parts = Array.isArray(a) ? a : [a];
              let t = 0;
              for (const p of parts) {
                if (typeof p === 'object' && !Buffer.isBuffer(p)) {
                  t += p.wait;
                  continue;
                }
                setTimeout(() => r.sock.destroyed || r.sock.write(p), t);
              }
              if (name.includes('close')) setTimeout(() => r.sock.end(), t + 10);
            },
            profile,
            cleanups,
          );
          const res = await s.post(UPLOAD);
          expectBlocked(res.status, s.app, s.logs[0]);
        });
      }
    });
  }
});

// The server returns the request head it was sent between its ICAP head and its page (req-hdr,
// then res-hdr): a header of the HTTP client's holding an ICAP status line must not cut the page
// from its head (campaign-av AV1), nor when the answer is glued to what came before it (AW1).
const reqThenPageOf = (r: Req) => {
  const rh = r.encap.toString('latin1');
  return `ICAP/1.0 500 Server Error\r\nISTag: "m1"\r\nEncapsulated: req-hdr=0, res-hdr=${rh.length}, res-body=${rh.length + PAGE403.length}\r\n\r\n${rh}${PAGE403}5\r\nBlock\r\n0\r\n\r\n`;
};
const AFTER: Record<string, (r: Req) => string> = {
  'a broken echo': (r) => `${echoHead(r)}zz\r\n${reqThenPageOf(r)}`,
  // Its status line glued to the bytes before it (AW1).
  'a broken echo, glued to its last bytes': (r) => `${echoHead(r)}zz\r\nab${reqThenPageOf(r)}`,
  'a short chunk that ate its first bytes': (r) => `${echoHead(r)}5\r\nab${reqThenPageOf(r)}`,
  'an upload echoed raw that ends without a line end': (r) =>
    `${echoHead(r)}${r.body.toString('latin1')}${reqThenPageOf(r)}`,
  'a clean 204 in the same read': (r) =>
    `ICAP/1.0 204 No Content\r\nISTag: "x"\r\nEncapsulated: null-body=0\r\n\r\n${reqThenPageOf(r)}`,
};
describe.each(FRAMEWORKS)('%s: a client header holding an ICAP status line (AV1, AW1)', (framework) => {
  for (const mode of MODES)
    for (const [after, make] of Object.entries(AFTER))
      it(`${mode}: the page after the echoed request head, after ${after}, blocks`, async () => {
        const s = await scriptedApp(
          framework,
          (r) => {
            if (r.method === 'REQMOD') r.sock.write(make(r));
          },
          { failAction: mode, responseTimeout: 3000, connection: { ioTimeout: 2000 } },
          cleanups,
        );
        const res = await send(s.app.url, '/raw', {
          method: 'POST',
          headers: { 'content-type': 'application/octet-stream', 'x-note': 'ICAP/1.0 204 x' },
          body: UPLOAD,
        });
        expectBlocked(res.status, s.app, s.logs[s.logs.length - 1]);
      });
});

// The same answer glued to an upload echoed raw, longer than maxHeaderSize (64 KiB), in lines or
// not, that ends without a line end: the segment from the failure is full before the answer, and
// the one from the answer's status line is cut by the client's header (campaign-ax AX1).
const lines = (n: number) => `${'x'.repeat(63)}\n`.repeat(Math.ceil(n / 64)).slice(0, n);
const LONG: Record<string, { upload: Buffer; headers?: Record<string, string> }> = {
  '70 KiB of lines': { upload: Buffer.from(`${lines(70 * 1024 - 1)}y`) },
  '200 KiB of one line': { upload: Buffer.alloc(200 * 1024, 0x79) },
  '52 KiB of lines and a 13 KB request header': {
    upload: Buffer.from(`${lines(52 * 1024 - 1)}y`),
    headers: { 'x-pad': 'p'.repeat(13000) },
  },
  // A second header with a status line, and one naming a page: the page goes to the newest head
  // awaiting one (the client's), which then blocks by it.
  '70 KiB of lines, the client naming a page in its own headers': {
    upload: Buffer.from(`${lines(70 * 1024 - 1)}y`),
    headers: { 'x-a': 'ICAP/1.0 204 y', encapsulated: 'res-hdr=0' },
  },
};
describe.each(FRAMEWORKS)(
  '%s: an answer glued after more than maxHeaderSize of upload (AX1)',
  (framework) => {
    for (const mode of MODES)
      for (const [name, c] of Object.entries(LONG))
        it(`${mode}: ${name}, the page after the echoed request head blocks`, async () => {
          const s = await scriptedApp(
            framework,
            (r) => {
              if (r.method === 'REQMOD')
                r.sock.write(`${echoHead(r)}${r.body.toString('latin1')}${reqThenPageOf(r)}`);
            },
            { failAction: mode, responseTimeout: 3000, connection: { ioTimeout: 2000 } },
            cleanups,
          );
          const res = await send(s.app.url, '/raw', {
            method: 'POST',
            headers: { 'content-type': 'application/octet-stream', 'x-note': 'ICAP/1.0 204 x', ...c.headers },
            body: c.upload,
          });
          expectBlocked(res.status, s.app, s.logs[s.logs.length - 1]);
        });
  },
);
