/**
 * An echo that the upload's own bytes end early, its rest arriving later (campaign-at AT5): a
 * server that miscounts its chunks (here: it echoes the upload unframed) lets an upload holding
 * `1\r\nA\r\n0\r\n\r\n` end the echo, and the rest of the upload (a clean 204 head) comes in a
 * later read. Had the connection gone back to the pool, the next upload's exchange would read
 * that 204 as its own answer and the server's real one (naming a threat) would be lost, under
 * both failure actions. A returned body shorter than the one sent ends the connection; an
 * echo of the whole body keeps it.
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { Framework } from '../conformance/apps.js';
import { scriptedApp } from '../support/scripted-app.js';
import type { Req } from '../support/scripted-icap.js';

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const FRAMEWORKS: Framework[] = ['express5', 'fastify', 'koa3', 'hono'];
const MODES = ['fail-open', 'fail-closed'] as const;
const THREAT_ANSWER =
  'ICAP/1.0 200 OK\r\nISTag: "x1"\r\nX-Infection-Found: Type=0; Resolution=2; Threat=EICAR;\r\nEncapsulated: null-body=0\r\n\r\n';
const CLEAN_204 = 'ICAP/1.0 204 No Content\r\nISTag: "x1"\r\nEncapsulated: null-body=0\r\n\r\n';
const echoHead = (r: Req) => {
  const reqHdr = r.encap.toString('latin1');
  return `ICAP/1.0 200 OK\r\nISTag: "x1"\r\nEncapsulated: req-hdr=0, req-body=${reqHdr.length}\r\n\r\n${reqHdr}`;
};
/** Upload A: the bytes that end a miscounted echo, then a clean head of its own. */
const UPLOAD_A = Buffer.from(`A\r\n0\r\n\r\n${CLEAN_204}`);
const UPLOAD_B = Buffer.from('the second upload, which the server finds infected');

/**
 * One server thread per connection (each request answered after the one before). A: the echo
 * up to the upload's fake end at once, the rest 150 ms later. B: the threat answer after 400 ms.
 */
function miscountingServer() {
  const busy = new WeakMap<object, Promise<void>>();
  return (r: Req) => {
    if (r.method !== 'REQMOD') return;
    const prev = busy.get(r.sock) ?? Promise.resolve();
    const next = prev.then(
      () =>
        new Promise<void>((done) => {
          const later = (ms: number, bytes: string) =>
            setTimeout(() => {
              r.sock.destroyed || r.sock.write(bytes);
              done();
            }, ms);
          const first = r.body.subarray(0, 1).toString();
          if (first === 'w') later(0, CLEAN_204);
          else if (first === 'A') {
            r.sock.write(`${echoHead(r)}1\r\nA\r\n0\r\n\r\n`);
            later(150, `${CLEAN_204}\r\n0\r\n\r\n`);
          } else later(400, THREAT_ANSWER);
        }),
    );
    busy.set(r.sock, next);
  };
}

describe.each(FRAMEWORKS)('%s', (framework) => {
  for (const mode of MODES)
    describe(mode, () => {
      const profile = { failAction: mode, responseTimeout: 5000, connection: { ioTimeout: 4000 } } as const;

      it('the next upload does not read the rest of a short echo as its answer', async () => {
        const s = await scriptedApp(framework, miscountingServer(), profile, cleanups);
        const a = await s.post(UPLOAD_A);
        expect(a.status).toBe(200);
        const b = await s.post(UPLOAD_B);
        expect(b.status).toBe(403);
        expect(s.logs[1]?.action).toBe('ICAP_BLOCKED');
        expect(s.app.seen.map((x) => x.raw?.toString('latin1'))).not.toContain(UPLOAD_B.toString('latin1'));
      });

      it('nor the upload queued for the only connection (Max-Connections: 1), handed it as A settles', async () => {
        const s = await scriptedApp(framework, miscountingServer(), profile, cleanups, {
          optionsHeaders: 'Max-Connections: 1\r\n',
        });
        // A first exchange reads the OPTIONS (the limit); the server answers it 204.
        await s.post(Buffer.from('warm-up'));
        const seenBefore = s.app.seen.length;
        const pa = s.post(UPLOAD_A);
        // B is sent once A's request has reached the server: it waits for the one connection.
        const deadline = Date.now() + 5000;
        while (s.icap.requests.filter((r) => r.method === 'REQMOD').length < 2 && Date.now() < deadline)
          await new Promise((r) => setTimeout(r, 5));
        const pb = s.post(UPLOAD_B);
        const [a, b] = await Promise.all([pa, pb]);
        expect(a.status).toBe(200);
        expect(b.status).toBe(403);
        const delivered = s.app.seen.slice(seenBefore).map((x) => x.raw?.toString('latin1'));
        expect(delivered).not.toContain(UPLOAD_B.toString('latin1'));
      });
    });

  it('an echo of the whole body keeps the connection; an adapted body of another length ends it', async () => {
    const s = await scriptedApp(
      framework,
      (r) => {
        if (r.method !== 'REQMOD') return;
        const body = r.body.toString('latin1');
        const back = body.startsWith('shorten') ? 'short' : body;
        r.sock.write(`${echoHead(r)}${back.length.toString(16)}\r\n${back}\r\n0\r\n\r\n`);
      },
      { failAction: 'fail-closed' },
      cleanups,
    );
    for (const upload of ['echo one', 'echo two', 'shorten this', 'echo three']) {
      expect((await s.post(Buffer.from(upload))).status).toBe(200);
    }
    const conns = s.icap.requests.filter((r) => r.method === 'REQMOD').map((r) => r.conn);
    // The two echoes share one connection, the shortened answer ends it, the next opens another.
    expect(conns[0]).toBe(conns[1]);
    expect(conns[1]).toBe(conns[2]);
    expect(conns[3]).not.toBe(conns[2]);
    expect(s.logs.map((l) => l.action)).toEqual([
      'ICAP_PASSED',
      'ICAP_PASSED',
      'ICAP_MODIFIED',
      'ICAP_PASSED',
    ]);
  });
});
