import { afterEach, describe, expect, it } from 'vitest';
import type { Framework } from '../conformance/apps.js';
import { activeResources, settleResources } from '../support/leaks.js';
import { scriptedApp } from '../support/scripted-app.js';
import type { Handler, Req } from '../support/scripted-icap.js';

const BLOCK_PAGE = 'HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: 7\r\n\r\n';
const BLOCK =
  'ICAP/1.0 200 OK\r\nISTag: "x1"\r\nX-Infection-Found: Type=0; Resolution=2; Threat=EICAR;\r\n' +
  `Encapsulated: res-hdr=0, res-body=${BLOCK_PAGE.length}\r\n\r\n${BLOCK_PAGE}7\r\nblocked\r\n0\r\n\r\n`;
const NO_CONTENT = 'ICAP/1.0 204 No Content\r\nISTag: "x1"\r\nEncapsulated: null-body=0\r\n\r\n';
/** Just past the LF that ends the threat line. */
const THREAT_END = BLOCK.indexOf('\n', BLOCK.indexOf('X-Infection-Found')) + 1;
/** Every offset inside the block up to the threat line's end, and a few beyond. */
const OFFSETS = [
  ...Array.from({ length: THREAT_END }, (_, k) => k + 1),
  THREAT_END + 5,
  BLOCK.indexOf('\r\n\r\n') + 2,
  BLOCK.length - 1,
];
/** The client's bound on the wait for what follows an answer (client/answer.ts STRAY_WAIT_MS). */
const STRAY_WAIT_MS = 250;
const IO_TIMEOUT = 2000;

const FRAMEWORKS: Framework[] = ['express5', 'fastify', 'koa3', 'hono'];
const MODES = ['fail-open', 'fail-closed'] as const;

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function setup(framework: Framework, failAction: (typeof MODES)[number], handler: Handler) {
  const profile = { failAction, responseTimeout: 4000, connection: { ioTimeout: IO_TIMEOUT } };
  const s = await scriptedApp(framework, handler, profile, cleanups);
  const post = () => s.post(Buffer.from('upload'));
  const close = async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  };
  return { ...s, post, close };
}

/** After everything was closed: nothing of the app, the engine or its connections left open. */
async function expectNothingLeft(baseline: Map<string, number>): Promise<void> {
  expect(await settleResources(baseline)).toEqual([]);
}

/** Resolves when `check` holds, polled; fails the test past the deadline. */
async function until(check: () => boolean, withinMs = 3000): Promise<void> {
  const deadline = Date.now() + withinMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}

/**
 * Posts one upload per offset to an app whose server answers a 204 and the first `offset`
 * bytes of a block in one segment, the rest 20 ms later (and with `stallMs`, stalls the process
 * that long 5 ms after): the offsets whose upload was not blocked.
 */
async function splitBlock(
  framework: Framework,
  failAction: (typeof MODES)[number],
  offsets: number[],
  stallMs = 0,
) {
  let k = 0;
  const s = await setup(framework, failAction, (r) => {
    r.sock.setNoDelay(true);
    r.sock.write(NO_CONTENT + BLOCK.slice(0, k));
    const rest = BLOCK.slice(k);
    // A later segment: the client reads the first one alone.
    setTimeout(() => {
      if (!r.sock.destroyed) r.sock.write(rest);
    }, 20);
    if (stallMs > 0)
      setTimeout(() => {
        const until = performance.now() + stallMs;
        while (performance.now() < until) {
          // the process stalls (a busy machine)
        }
      }, 5);
  });
  const passed: number[] = [];
  for (const offset of offsets) {
    k = offset;
    const before = s.logs.length;
    const res = await s.post();
    if (res.status !== 403 || s.logs[before]?.action !== 'ICAP_BLOCKED') passed.push(offset);
  }
  return { ...s, passed };
}

describe('a block answer after a 204, split by TCP', () => {
  for (const framework of FRAMEWORKS)
    for (const failAction of MODES)
      it(`blocks at every split offset (${framework}, ${failAction})`, async () => {
        const baseline = activeResources();
        const { app, logs, passed, close } = await splitBlock(framework, failAction, OFFSETS);
        expect(passed).toEqual([]);
        expect(app.seen).toHaveLength(0);
        expect(logs).toHaveLength(OFFSETS.length);
        await close();
        await expectNothingLeft(baseline);
      }, 60_000);
});

describe('a block answer after a 204, split by TCP, while the process stalls', () => {
  // The rest is written 20 ms later, and the process then stalls past the client's wait: when
  // the event loop runs again, the write's timer and the wait's timer are both due. The client
  // must read what arrived before it settles (it settled first once, on a busy CI machine).
  for (const framework of FRAMEWORKS)
    for (const failAction of MODES)
      it(`blocks (${framework}, ${failAction})`, async () => {
        const { app, passed, close } = await splitBlock(
          framework,
          failAction,
          [3, 49, THREAT_END - 1],
          STRAY_WAIT_MS + 150,
        );
        expect(passed).toEqual([]);
        expect(app.seen).toHaveLength(0);
        await close();
      }, 60_000);
});

describe('what follows an answer, otherwise', () => {
  for (const framework of FRAMEWORKS)
    for (const failAction of MODES) {
      it(`a block trickled in small pieces after a 204 blocks (${framework}, ${failAction})`, async () => {
        const { app, logs, post } = await setup(framework, failAction, (r) => {
          r.sock.setNoDelay(true);
          r.sock.write(NO_CONTENT);
          let at = 0;
          const step = () => {
            if (r.sock.destroyed || at >= BLOCK.length) return;
            r.sock.write(BLOCK.slice(at, at + 9));
            at += 9;
            setTimeout(step, 3);
          };
          step();
        });
        const res = await post();
        expect(res.status).toBe(403);
        expect(app.seen).toHaveLength(0);
        expect(logs[0]?.action).toBe('ICAP_BLOCKED');
      });

      it(`a threat line whole before the server stalls blocks (${framework}, ${failAction})`, async () => {
        const { app, logs, post } = await setup(framework, failAction, (r) => {
          // The head of the second answer never ends: the bound ends the wait.
          r.sock.write(NO_CONTENT + BLOCK.slice(0, THREAT_END));
        });
        const res = await post();
        expect(res.status).toBe(403);
        expect(app.seen).toHaveLength(0);
        expect(logs[0]?.action).toBe('ICAP_BLOCKED');
      });

      it(`a whole clean head after a 204 does not end the wait: the threat answer after it blocks (${framework}, ${failAction})`, async () => {
        // The upload written back after a bodyless answer, holding a whole clean head (campaign-ax
        // AX5), then the server's real answer.
        const { app, logs, post } = await setup(framework, failAction, (r) => {
          r.sock.write(`${NO_CONTENT}${r.body.toString('latin1')}\r\n\r\n${NO_CONTENT}`);
          setTimeout(() => r.sock.destroyed || r.sock.write(BLOCK), 60);
        });
        const res = await post();
        expect(res.status).toBe(403);
        expect(app.seen).toHaveLength(0);
        expect(logs[0]?.action).toBe('ICAP_BLOCKED');
      });

      it(`a 204 with nothing after it passes without waiting (${framework}, ${failAction})`, async () => {
        const baseline = activeResources();
        const { icap, app, logs, post, close } = await setup(framework, failAction, (r) =>
          r.sock.write(NO_CONTENT),
        );
        await post(); // warm up (OPTIONS, the first connection)
        const times: number[] = [];
        for (let n = 0; n < 5; n++) {
          const t0 = performance.now();
          const res = await post();
          times.push(performance.now() - t0);
          expect(res.status).toBe(200);
        }
        // Far under the wait for what follows an answer: none was made.
        expect(Math.min(...times)).toBeLessThan(STRAY_WAIT_MS / 2);
        expect(app.seen).toHaveLength(6);
        expect(logs.every((l) => l.action === 'ICAP_PASSED')).toBe(true);
        // One connection served them all: nothing followed an answer.
        expect(new Set(icap.requests.filter((r) => r.method === 'REQMOD').map((r) => r.conn)).size).toBe(1);
        await close();
        await expectNothingLeft(baseline);
      });

      it(`junk after a 204 passes, bounded by the short wait (${framework}, ${failAction})`, async () => {
        const baseline = activeResources();
        let junk = '';
        let closeAfter = false;
        const { icap, app, logs, post, close } = await setup(framework, failAction, (r) => {
          r.sock.write(NO_CONTENT + junk);
          if (closeAfter) r.sock.end();
        });
        const cases: Array<[string, boolean, number]> = [
          // no blank line, the connection stays open: the short bound ends the wait
          ['X-Junk: 1\r\npartial', false, IO_TIMEOUT / 2],
          ['\r\n', false, IO_TIMEOUT / 2],
          // a blank line after no ICAP head is no answer (campaign-aq AQ3): the short bound too
          ['junk\r\n\r\n', false, IO_TIMEOUT / 2],
          ['0\r\n\r\n', false, IO_TIMEOUT / 2],
          // a whole clean ICAP head does not end it (the upload's bytes may hold one: campaign-ax
          // AX5); the connection's end does, at once
          [
            'ICAP/1.0 204 No Content\r\nISTag: "x1"\r\nEncapsulated: null-body=0\r\n\r\n',
            false,
            IO_TIMEOUT / 2,
          ],
          ['X-Junk: 1\r\npartial', true, STRAY_WAIT_MS],
        ];
        for (const [bytes, closes, withinMs] of cases) {
          junk = bytes;
          closeAfter = closes;
          const t0 = performance.now();
          const res = await post();
          const took = performance.now() - t0;
          expect(res.status, JSON.stringify(bytes)).toBe(200);
          expect(took, JSON.stringify(bytes)).toBeLessThan(withinMs);
        }
        expect(app.seen).toHaveLength(cases.length);
        expect(logs.map((l) => l.action)).toEqual(cases.map(() => 'ICAP_PASSED'));
        // A connection that carried bytes after its answer is not reused.
        const conns = icap.requests.filter((r) => r.method === 'REQMOD').map((r) => r.conn);
        expect(new Set(conns).size).toBe(cases.length);
        await close();
        await expectNothingLeft(baseline);
      });

      it(`a stray answer on an idle pooled connection closes it (${framework}, ${failAction})`, async () => {
        let served = 0;
        const { icap, app, logs, post } = await setup(framework, failAction, (r) => {
          r.sock.write(NO_CONTENT);
          served++;
        });
        expect((await post()).status).toBe(200);
        const first = icap.requests.find((r) => r.method === 'REQMOD')!;
        const closed = new Promise<void>((resolve) => first.sock.once('close', () => resolve()));
        // While the connection idles in the pool: the pool closes it (its current handling).
        first.sock.write(BLOCK);
        await closed;
        await until(() => app.engine.status().every((s) => s.connections.idle === 0));
        expect((await post()).status).toBe(200);
        expect(served).toBe(2);
        const second = icap.requests.filter((r) => r.method === 'REQMOD')[1]!;
        expect(second.conn).not.toBe(first.conn);
        expect(logs.map((l) => l.action)).toEqual(['ICAP_PASSED', 'ICAP_PASSED']);
      });
    }
});

describe('a head that blocks by its status line alone, with no field line, then another answer (campaign-az AZ2)', () => {
  // ESET answers a threat with a bare `405 Forbidden`: the sieve dropped a part without a field
  // line (a `:`), so the 204 after it was the verdict (delivered in both failure actions).
  const BARE_405 = 'ICAP/1.0 405 Forbidden\r\n\r\n';
  const echoHead = (r: Req) => {
    const reqHdr = r.encap.toString('latin1');
    return `ICAP/1.0 200 OK\r\nISTag: "x1"\r\nEncapsulated: req-hdr=0, req-body=${reqHdr.length}\r\n\r\n${reqHdr}`;
  };
  const SHAPES: Array<[string, (r: Req) => string]> = [
    ['after a 204', () => `${NO_CONTENT}${BARE_405}${NO_CONTENT}`],
    ['after an echo whose chunk framing breaks', (r) => `${echoHead(r)}zz\r\n${BARE_405}${NO_CONTENT}`],
  ];
  for (const framework of FRAMEWORKS)
    for (const failAction of MODES)
      it(`blocks (${framework}, ${failAction})`, async () => {
        for (const [shape, answer] of SHAPES) {
          const s = await scriptedApp(
            framework,
            (r) => {
              if (r.method === 'REQMOD') r.sock.write(answer(r));
            },
            { failAction, vendor: 'eset', responseTimeout: 4000, connection: { ioTimeout: IO_TIMEOUT } },
            cleanups,
          );
          const res = await s.post(Buffer.from('some upload'));
          expect(res.status, shape).toBe(403);
          expect(
            s.logs.map((l) => l.action),
            shape,
          ).toEqual(['ICAP_BLOCKED']);
          expect(s.app.seen, shape).toEqual([]);
          for (const c of cleanups.splice(0).reverse()) await c();
        }
      });
});
