/**
 * The wait for what follows a failure (client/stray.ts) against the bounds around it: the
 * request's responseTimeout, the stall watchdog that moves a request to another server, an
 * answer that breaks off inside a chunk, and bytes that would make the wait's work grow faster
 * than they do (campaign-as AS3, AS4, AS5, AS9). A threat the server named blocks in every one,
 * under both failure actions; the wait costs time on failing exchanges only.
 */
import { monitorEventLoopDelay } from 'node:perf_hooks';
import type { IcapLog, IcapProfile } from '@icapkit/core';
import { afterEach, describe, expect, it } from 'vitest';
import { type Framework, startApp } from '../conformance/apps.js';
import { send } from '../support/http-client.js';
import { scriptedApp } from '../support/scripted-app.js';
import { type Req, scripted } from '../support/scripted-icap.js';

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const FRAMEWORKS: Framework[] = ['express5', 'fastify', 'koa3', 'hono'];
const MODES = ['fail-open', 'fail-closed'] as const;
const UPLOAD = Buffer.from('some upload');
const THREAT_ANSWER =
  'ICAP/1.0 200 OK\r\nISTag: "x1"\r\nX-Infection-Found: Type=0; Resolution=2; Threat=EICAR;\r\nEncapsulated: null-body=0\r\n\r\n';
const CLEAN_204 = 'ICAP/1.0 204 No Content\r\nISTag: "x1"\r\nEncapsulated: null-body=0\r\n\r\n';
/** Heads that may name a threat by reuse.ts's mayName, and that every vendor's verdict reads as clean. */
const EVICTING: Record<string, string> = {
  'X-Error-Code: 1': '\nICAP/1.0 200 OK\nX-Error-Code: 1\n\n',
  'Encapsulated: res-hdr (ICAP 200, no page)': '\nICAP/1.0 200 OK\nEncapsulated: res-hdr=0\n\n',
};
/** At `at` ms, the process stalls for `ms` (a busy machine): the timers due meanwhile come due in one turn. */
function stallAt(at: number, ms: number): void {
  setTimeout(() => {
    const until = performance.now() + ms;
    while (performance.now() < until) {
      // stalled
    }
  }, at);
}
const echoHead = (r: Req) => {
  const reqHdr = r.encap.toString('latin1');
  return `ICAP/1.0 200 OK\r\nISTag: "x1"\r\nEncapsulated: req-hdr=0, req-body=${reqHdr.length}\r\n\r\n${reqHdr}`;
};

describe.each(FRAMEWORKS)('%s', (framework) => {
  for (const mode of MODES) {
    describe(mode, () => {
      it('a broken echo and the threat answer 150 ms before responseTimeout: blocked, not timed out (AS4)', async () => {
        const s = await scriptedApp(
          framework,
          (r) =>
            setTimeout(() => r.sock.destroyed || r.sock.write(`${echoHead(r)}zz\r\n${THREAT_ANSWER}`), 350),
          { failAction: mode, responseTimeout: 500, connection: { ioTimeout: 2000 } },
          cleanups,
        );
        expect((await s.post(UPLOAD)).status).toBe(403);
        expect(s.app.seen).toHaveLength(0);
        expect(s.logs[0]?.action).toBe('ICAP_BLOCKED');
      });

      // The server's write and the client's deadline come due in one turn of the event loop (a
      // stall, as on a busy CI machine): the client read the socket only after the deadline had
      // passed the upload on under fail-open; with the default ioTimeout (= responseTimeout) the
      // socket's idle bound came due in the same turn too (campaign-bc BC1).
      for (const [which, connection] of [
        ['', { ioTimeout: 2000 }],
        [', the default ioTimeout (campaign-bc BC1)', {}],
      ] as const)
        it(`the threat answer written just before responseTimeout, the process then stalled past it${which}: blocked (a busy machine)`, async () => {
          const s = await scriptedApp(
            framework,
            (r) => {
              stallAt(330, 300);
              setTimeout(() => r.sock.destroyed || r.sock.write(THREAT_ANSWER), 350);
            },
            { failAction: mode, responseTimeout: 500, connection },
            cleanups,
          );
          expect((await s.post(UPLOAD)).status).toBe(403);
          expect(s.app.seen).toHaveLength(0);
          expect(s.logs[0]?.action).toBe('ICAP_BLOCKED');
        });

      for (const end of ['closes', 'goes quiet'] as const)
        it(`the threat answer inside a chunk longer than what came, then the server ${end}: blocked (AS3)`, async () => {
          const s = await scriptedApp(
            framework,
            (r) => {
              r.sock.write(`${echoHead(r)}2000\r\nab\r\n${THREAT_ANSWER}`);
              if (end === 'closes') r.sock.end();
            },
            { failAction: mode, responseTimeout: 3000, connection: { ioTimeout: 300 } },
            cleanups,
          );
          expect((await s.post(UPLOAD)).status).toBe(403);
          expect(s.app.seen).toHaveLength(0);
        });

      // Heads the client's wide reading (mayName) keeps but the verdict reads as clean, 300 KiB of
      // them echoed before the server's answer and again as the body that answer returns: kept by
      // the verdict's reading, the answer cannot be pushed out of what the wait keeps (AT6).
      for (const [name, unit] of Object.entries(EVICTING))
        it(`the threat answer between 300 KiB of clean heads shaped ${name}: blocked (AT6)`, async () => {
          const s = await scriptedApp(
            framework,
            (r) => {
              r.sock.write(Buffer.concat([Buffer.from(`${echoHead(r)}zz\r\n`), r.body]));
              const answer = `${THREAT_ANSWER.replace('Encapsulated: null-body=0', `Encapsulated: req-hdr=0, req-body=${r.encap.length}`)}${r.encap.toString('latin1')}`;
              const body = `${r.body.length.toString(16)}\r\n${r.body.toString('latin1')}\r\n0\r\n\r\n`;
              setTimeout(() => r.sock.destroyed || r.sock.write(Buffer.from(answer + body, 'latin1')), 30);
            },
            { failAction: mode, responseTimeout: 10000, connection: { ioTimeout: 2000 } },
            cleanups,
          );
          const upload = Buffer.from(unit.repeat(Math.ceil((300 * 1024) / unit.length)), 'latin1');
          expect((await s.post(upload)).status).toBe(403);
          expect(s.app.seen).toHaveLength(0);
          expect(s.logs[0]?.action).toBe('ICAP_BLOCKED');
        });
    });
  }
});

/**
 * Two servers, `a` first: an upload goes to `a` (`handler`), and would pass on `b` (a 204).
 * `a` names the threat: the upload is blocked there, in one attempt, never moved to `b`.
 */
async function blockedOnTheFirst(
  mode: (typeof MODES)[number],
  handler: (r: Req) => void,
  connection: Record<string, number>,
): Promise<void> {
  const a = await scripted(handler);
  const b = await scripted((r) => r.sock.write(CLEAN_204));
  cleanups.push(a.close, b.close);
  const logs: IcapLog[] = [];
  const app = await startApp('express5', {
    name: 't',
    poolGroup: [a.url, b.url],
    serviceUri: '/avscan',
    failAction: mode,
    responseTimeout: 3000,
    connection: { ioTimeout: 2000, ...connection },
    onLog: (l: IcapLog) => logs.push(l),
  } as unknown as IcapProfile);
  cleanups.push(app.close);
  const res = await send(app.url, '/raw', {
    method: 'POST',
    headers: { 'content-type': 'application/octet-stream' },
    body: UPLOAD,
  });
  const reqmods = (x: typeof a) => x.requests.filter((r) => r.method === 'REQMOD');
  expect(reqmods(a)).toHaveLength(1);
  expect(res.status).toBe(403);
  expect(logs[0]?.action).toBe('ICAP_BLOCKED');
  expect(logs[0]?.request_logs).toHaveLength(1);
  expect(reqmods(b)).toHaveLength(0);
}

describe('the stall watchdog during the wait', () => {
  for (const mode of MODES) {
    it(`${mode}: the threat written just before stallTimeout, the process stalled past it (campaign-bc BC2)`, () =>
      blockedOnTheFirst(
        mode,
        (r) => {
          stallAt(280, 300);
          setTimeout(() => r.sock.destroyed || r.sock.write(THREAT_ANSWER), 290);
        },
        { stallTimeout: 300 },
      ));

    it(`${mode}: a broken echo and the threat in one write, stallTimeout 150 ms (AS9)`, () =>
      blockedOnTheFirst(mode, (r) => r.sock.write(`${echoHead(r)}zz\r\n${THREAT_ANSWER}`), {
        stallTimeout: 150,
      }));

    it(`${mode}: the rest of a broken echo trickles, the answer after the default stallTimeout (AT7)`, () =>
      blockedOnTheFirst(
        mode,
        (r) => {
          r.sock.write(`${echoHead(r)}zz\r\n`);
          for (let t = 50; t < 1500; t += 50) setTimeout(() => r.sock.destroyed || r.sock.write('x'), t);
          setTimeout(() => r.sock.destroyed || r.sock.write(THREAT_ANSWER), 1500);
        },
        {},
      ));
  }
});

describe('the wait does work linear in the bytes (AS5)', () => {
  for (const unit of ['\nICAP/', '\nICAP/\nX-A: 1\n\n'])
    it(`1 MiB of ${JSON.stringify(unit)} echoed after a broken chunk-size line keeps the event loop moving`, async () => {
      const s = await scriptedApp(
        'express5',
        (r) => r.sock.write(Buffer.concat([Buffer.from(`${echoHead(r)}zz\r\n`), r.body])),
        { failAction: 'fail-closed', responseTimeout: 60_000, connection: { ioTimeout: 2000 } },
        cleanups,
      );
      const upload = Buffer.from(unit.repeat(Math.floor((1024 * 1024) / unit.length)), 'latin1');
      const delay = monitorEventLoopDelay({ resolution: 10 });
      delay.enable();
      const res = await s.post(upload);
      delay.disable();
      expect(res.status).toBe(503);
      // A sieve quadratic in a read's heads held the loop for seconds (5.4 s for 256 KiB).
      expect(delay.max / 1e6).toBeLessThan(2000);
    }, 60_000);
});
