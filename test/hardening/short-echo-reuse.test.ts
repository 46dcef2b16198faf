/**
 * An echo that the upload's own bytes end early, its rest arriving later (campaign-at AT5): a
 * server that miscounts its chunks (here: it echoes the upload unframed) lets an upload holding
 * `1\r\nA\r\n0\r\n\r\n` end the echo, and the rest of the upload (a clean 204 head) comes in a
 * later read. Had the connection gone back to the pool, the next upload's exchange would read
 * that 204 as its own answer and the server's real one (naming a threat) would be lost, under
 * both failure actions. Counting the bytes is not enough: a server that frames its echo twice, or
 * writes its chunk sizes in decimal, has its own framing read as data, and the upload can end the
 * echo at exactly as many bytes as were sent (campaign-au AU1). A returned body that is not the
 * one sent, byte for byte, ends the connection; an echo of the whole body keeps it.
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

/** How the server miscounts: its echo of the upload, and where the client's parser ends it. */
interface Miscount {
  upload: Buffer;
  echo(body: Buffer): Buffer;
  /** Bytes of `echo` up to the early end (the rest is written later). */
  cut: number;
}
const PIECE = 4096;
const rechunk = (x: Buffer, size: (n: number) => string) => {
  const parts: Buffer[] = [];
  for (let i = 0; i < x.length; i += PIECE) {
    const p = x.subarray(i, i + PIECE);
    parts.push(Buffer.from(`${size(p.length)}\r\n`), p, Buffer.from('\r\n'));
  }
  return parts;
};

/** The upload echoed under a size line of one byte: the data read is shorter than what was sent (AT5). */
const UNFRAMED: Miscount = {
  upload: UPLOAD_A,
  echo: (body) => Buffer.concat([Buffer.from('1\r\n'), body]),
  cut: '1\r\nA\r\n0\r\n\r\n'.length,
};
/**
 * One size line for the whole body, then the body re-chunked under it: the inner size lines are
 * read as data, and an upload whose last bytes end the echo returns exactly as many bytes as
 * were sent, other bytes (campaign-au AU1).
 */
const DOUBLE: Miscount = (() => {
  const n = PIECE * 10;
  const end = '\r\n0\r\n\r\n';
  const tail = `${end}${CLEAN_204}`.padEnd(8 * 10 - 2, ' ');
  const upload = Buffer.concat([Buffer.alloc(n - tail.length, 'A'), Buffer.from(tail, 'latin1')]);
  return {
    upload,
    echo: (body) =>
      Buffer.concat([
        Buffer.from(`${body.length.toString(16)}\r\n`),
        ...rechunk(body, (k) => k.toString(16)),
        Buffer.from('0\r\n\r\n\r\n0\r\n\r\n'),
      ]),
    cut: `${n.toString(16)}\r\n`.length + n + end.length,
  };
})();
/**
 * The body re-chunked with decimal size lines (`4096`, read as 0x4096): the first chunk takes in
 * the server's next size lines as data; the upload declares a second chunk that ends the body at
 * exactly as many bytes as were sent (campaign-au AU1).
 */
const DECIMAL: Miscount = (() => {
  const second = 29522;
  const first = 0x4096;
  // Where the echo's byte `o` comes from in the upload (pieces of 4096 behind a `4096\r\n`).
  const uploadAt = (o: number) => Math.floor(o / 4104) * 4096 + (o % 4104) - 6;
  const crlfAt = 6 + first;
  const sizeLine = `\r\n${second.toString(16)}\r\n`;
  const upload = Buffer.alloc(first + second, 'A');
  upload.write(sizeLine, uploadAt(crlfAt), 'latin1');
  upload.write(`\r\n0\r\n\r\n${CLEAN_204}`, uploadAt(crlfAt + sizeLine.length + second), 'latin1');
  return {
    upload,
    echo: (body) => Buffer.concat([...rechunk(body, String), Buffer.from('0\r\n\r\n')]),
    cut: crlfAt + sizeLine.length + second + '\r\n0\r\n\r\n'.length,
  };
})();
const MISCOUNTS = { unframed: UNFRAMED, 'framed twice': DOUBLE, 'decimal sizes': DECIMAL };

/**
 * One server thread per connection (each request answered after the one before). A: the echo
 * up to the upload's early end at once, the rest 150 ms later. B: the threat answer after 400 ms.
 */
function miscountingServer(m: Miscount) {
  const busy = new WeakMap<object, Promise<void>>();
  return (r: Req) => {
    if (r.method !== 'REQMOD') return;
    const prev = busy.get(r.sock) ?? Promise.resolve();
    const next = prev.then(
      () =>
        new Promise<void>((done) => {
          const later = (ms: number, bytes: string | Buffer) =>
            setTimeout(() => {
              r.sock.destroyed || r.sock.write(bytes);
              done();
            }, ms);
          const first = r.body.subarray(0, 1).toString();
          if (first === 'w') later(0, CLEAN_204);
          else if (first === 'A') {
            const echo = m.echo(r.body);
            r.sock.write(Buffer.concat([Buffer.from(echoHead(r), 'latin1'), echo.subarray(0, m.cut)]));
            later(150, echo.subarray(m.cut));
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

      for (const [name, m] of Object.entries(MISCOUNTS))
        it(`the next upload does not read the rest of an echo ended early as its answer (${name})`, async () => {
          const s = await scriptedApp(framework, miscountingServer(m), profile, cleanups);
          const a = await s.post(m.upload);
          // Unframed, the echo ends after one byte of the upload: a partial answer, blocked
          // (campaign-bs BS6); the other miscounts return as many bytes as were sent.
          expect(a.status).toBe(m === UNFRAMED ? 403 : 200);
          const b = await s.post(UPLOAD_B);
          expect(b.status).toBe(403);
          expect(s.logs[1]?.action).toBe('ICAP_BLOCKED');
          expect(s.app.seen.map((x) => x.raw?.toString('latin1'))).not.toContain(UPLOAD_B.toString('latin1'));
        });

      it('nor the upload queued for the only connection (Max-Connections: 1), handed it as A settles', async () => {
        const s = await scriptedApp(framework, miscountingServer(DECIMAL), profile, cleanups, {
          optionsHeaders: 'Max-Connections: 1\r\n',
        });
        // A first exchange reads the OPTIONS (the limit); the server answers it 204.
        await s.post(Buffer.from('warm-up'));
        const seenBefore = s.app.seen.length;
        const pa = s.post(DECIMAL.upload);
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

  it("a body over the profile's memoryThreshold is not held to compare with its echo: the echo ends the connection (AX4)", async () => {
    const s = await scriptedApp(
      framework,
      (r) => {
        if (r.method !== 'REQMOD') return;
        const body = r.body.toString('latin1');
        r.sock.write(`${echoHead(r)}${body.length.toString(16)}\r\n${body}\r\n0\r\n\r\n`);
      },
      { failAction: 'fail-closed', memoryThreshold: '8kb' },
      cleanups,
    );
    const small = Buffer.alloc(6 * 1024, 0x61);
    const large = Buffer.alloc(12 * 1024, 0x62);
    for (const upload of [small, small, large, small, small]) {
      const res = await s.post(upload);
      expect(res.status).toBe(200);
    }
    expect(s.app.seen.map((x) => x.raw.length)).toEqual([6144, 6144, 12288, 6144, 6144]);
    const conns = s.icap.requests.filter((r) => r.method === 'REQMOD').map((r) => r.conn);
    expect(conns[1]).toBe(conns[0]);
    expect(conns[2]).toBe(conns[1]);
    expect(conns[3]).not.toBe(conns[2]);
    expect(conns[4]).toBe(conns[3]);
  });

  it('an echo of the whole body keeps the connection; an adapted body ends it', async () => {
    const s = await scriptedApp(
      framework,
      (r) => {
        if (r.method !== 'REQMOD') return;
        const body = r.body.toString('latin1');
        const back = body.startsWith('shorten')
          ? 'short'
          : body.startsWith('adapt')
            ? body.toUpperCase()
            : body;
        r.sock.write(`${echoHead(r)}${back.length.toString(16)}\r\n${back}\r\n0\r\n\r\n`);
      },
      { failAction: 'fail-closed' },
      cleanups,
    );
    for (const upload of ['echo one', 'echo two', 'shorten this', 'echo three', 'adapt this', 'echo four']) {
      // The shortened answer is a prefix of the upload under its head: a partial answer (BS6).
      expect((await s.post(Buffer.from(upload))).status).toBe(upload === 'shorten this' ? 403 : 200);
    }
    const conns = s.icap.requests.filter((r) => r.method === 'REQMOD').map((r) => r.conn);
    // Echoes share a connection; a shortened answer, or one of the same length with other bytes,
    // ends it, and the next upload opens another.
    expect(conns[0]).toBe(conns[1]);
    expect(conns[1]).toBe(conns[2]);
    expect(conns[3]).not.toBe(conns[2]);
    expect(conns[4]).toBe(conns[3]);
    expect(conns[5]).not.toBe(conns[4]);
    const actions = s.logs.map((l) => l.action);
    expect(actions).toEqual([
      'ICAP_PASSED',
      'ICAP_PASSED',
      'ICAP_BLOCKED',
      'ICAP_PASSED',
      'ICAP_MODIFIED',
      'ICAP_PASSED',
    ]);
  });
});
