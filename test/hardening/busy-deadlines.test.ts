/**
 * Deadlines on a busy machine (campaign-bd): a process stalled past a deadline (a long
 * synchronous task, a busy machine) reads what came in time before acting on it
 * (packages/core/src/client/deadline.ts). Each case has the server (or the HTTP client) write in
 * time, then stalls the process past the deadline from the check phase, so that the next turn
 * opens with the timers phase: every deadline due runs before the poll phase reads what was
 * written. (A stall inside a timer callback would not do: Node runs the timers that came due
 * meanwhile in the next turn, after the poll phase.)
 */
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { connect } from 'node:net';
import { IcapClient, type IcapLog, type IcapProfile } from '@icapkit/core';
import { afterEach, describe, expect, it } from 'vitest';
import { type Framework, startApp } from '../conformance/apps.js';
import { send } from '../support/http-client.js';
import { scriptedApp } from '../support/scripted-app.js';
import { chunked, type Req, type ScriptedOptions, scripted } from '../support/scripted-icap.js';

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const MODES = ['fail-open', 'fail-closed'] as const;
const UPLOAD = Buffer.from('some upload');
const THREAT_ANSWER =
  'ICAP/1.0 200 OK\r\nISTag: "x1"\r\nX-Infection-Found: Type=0; Resolution=2; Threat=EICAR;\r\nEncapsulated: null-body=0\r\n\r\n';
const CLEAN_204 = 'ICAP/1.0 204 No Content\r\nISTag: "x1"\r\nEncapsulated: null-body=0\r\n\r\n';
const SERVER_500 = 'ICAP/1.0 500 Server Error\r\nISTag: "x1"\r\nEncapsulated: null-body=0\r\n\r\n';

function spin(ms: number): void {
  const until = performance.now() + ms;
  while (performance.now() < until) {
    // stalled
  }
}

/** At `at` ms: `write()`, then the process stalls for `ms`, from the check phase (see above). */
function writeThenStall(at: number, write: () => void, ms: number): void {
  setTimeout(
    () =>
      setImmediate(() => {
        write();
        spin(ms);
      }),
    at,
  );
}

/** An OPTIONS answer whose head never ends: a byte every ms, for 5 s at most. */
function trickledOptions(q: Req): void {
  q.sock.write('ICAP/1.0 200 OK\r\nMethods: REQMOD\r\nX-Slow: ');
  let n = 0;
  const t = setInterval(() => {
    if (q.sock.destroyed || ++n > 5_000) clearInterval(t);
    else q.sock.write('z');
  }, 1);
}

/** An OPTIONS answer whose opt-body never ends: 64 KiB every ms, for 6 s at most. */
function endlessOptions(q: Req): void {
  q.sock.write('ICAP/1.0 200 OK\r\nMethods: REQMOD\r\nISTag: "x1"\r\nEncapsulated: opt-body=0\r\n\r\n');
  const piece = `10000\r\n${'z'.repeat(0x10000)}\r\n`;
  const end = performance.now() + 6_000;
  const t = setInterval(() => {
    if (q.sock.destroyed || performance.now() > end) clearInterval(t);
    else q.sock.write(piece);
  }, 1);
}

/** The upload's echo (200, its request head and body) with the threat named in the trailer only. */
function echoWithTrailerThreat(r: Req): string {
  const reqHdr = r.encap.toString('latin1');
  return (
    `ICAP/1.0 200 OK\r\nISTag: "x1"\r\nEncapsulated: req-hdr=0, req-body=${reqHdr.length}\r\n\r\n${reqHdr}` +
    `${chunked(r.body)}0\r\nX-Infection-Found: Type=0; Resolution=2; Threat=EICAR;\r\n\r\n`
  );
}

/** Servers `a` (`handler`, `options`) and, with `two`, `b` answering 204: the app scanning with both. */
async function twoOrOne(
  handler: (r: Req) => void,
  profile: Partial<IcapProfile>,
  options: ScriptedOptions,
  two: boolean,
) {
  const a = await scripted(handler, options);
  const b = await scripted((r) => r.sock.write(CLEAN_204));
  cleanups.push(a.close, b.close);
  const logs: IcapLog[] = [];
  const app = await startApp('express5', {
    name: 't',
    poolGroup: two ? [a.url, b.url] : a.url,
    serviceUri: '/avscan',
    onLog: (l: IcapLog) => logs.push(l),
    ...profile,
  } as IcapProfile);
  cleanups.push(app.close);
  const res = await send(app.url, '/raw', {
    method: 'POST',
    headers: { 'content-type': 'application/octet-stream' },
    body: UPLOAD,
  });
  const reqmods = (x: typeof a) => x.requests.filter((r) => r.method === 'REQMOD').length;
  return { res, logs, app, a: reqmods(a), b: reqmods(b) };
}

/** Express 5 scanning with servers `a` then `b` (`profile` added): `post` sends a body as the upload. */
async function withServers(a: { url: string }, b: { url: string }, profile: Partial<IcapProfile>) {
  const app = await startApp('express5', {
    name: 't',
    poolGroup: [a.url, b.url],
    serviceUri: '/avscan',
    ...profile,
  } as IcapProfile);
  cleanups.push(app.close);
  const post = (body: string) =>
    send(app.url, '/raw', {
      method: 'POST',
      headers: { 'content-type': 'application/octet-stream' },
      body: Buffer.from(body),
    });
  return { app, post };
}

/** An IcapClient's REQMOD of `body` (no preview), `heard` its count when given. */
function reqmod(client: IcapClient, body: Buffer, heard?: unknown) {
  return client.request({
    method: 'REQMOD',
    service: '/avscan',
    httpRequest: { method: 'POST', target: '/u', headers: [['host', 'x']] },
    body,
    preview: false,
    ...(heard === undefined ? {} : { heard: heard as { heard: number } }),
  });
}

describe.each(['express5', 'fastify', 'koa3'] as Framework[])('%s: responseTimeout', (framework) => {
  for (const mode of MODES)
    for (const size of [300 * 1024, 1024 * 1024])
      it(`${mode}: an answer of ${size >> 10} KiB naming the threat in its trailer, written before the deadline, read after a stall past it (BD1)`, async () => {
        const s = await scriptedApp(
          framework,
          (r) => writeThenStall(350, () => r.sock.destroyed || r.sock.write(echoWithTrailerThreat(r)), 400),
          { failAction: mode, responseTimeout: 500, enablePreview: false },
          cleanups,
        );
        const res = await s.post(Buffer.alloc(size, 0x61));
        expect(res.status).toBe(403);
        expect(s.app.seen).toHaveLength(0);
        expect(s.logs[0]?.action).toBe('ICAP_BLOCKED');
      });
});

describe('the deadlines before the answer', () => {
  /** The OPTIONS answer at 100 ms, then a stall of `ms`; `close`: it says Connection: close (the REQMOD needs a new connection). */
  const stalledOptions = (ms: number, close = false): ScriptedOptions => ({
    options: (r, answer) =>
      writeThenStall(
        100,
        () =>
          r.sock.write(close ? answer.replace('Encapsulated', 'Connection: close\r\nEncapsulated') : answer),
        ms,
      ),
  });
  const connection = { stallTimeout: 300, queueTimeout: 100, connectTimeout: 100 };
  for (const mode of MODES) {
    for (const [two, close, id] of [
      [false, false, 'BD2'],
      [true, false, 'BD2'],
      [true, true, 'BH1'],
    ] as const)
      it(`${mode}, ${two ? 'two servers' : 'one server'}: the OPTIONS answer${close ? ' (Connection: close)' : ''} written in time, read after a stall past its bound: the upload goes to that server (${id})`, async () => {
        const r = await twoOrOne(
          (q) => q.sock.write(THREAT_ANSWER),
          { failAction: mode, responseTimeout: 3000, connection },
          stalledOptions(600, close),
          two,
        );
        expect(r.res.status).toBe(403);
        expect(r.logs[0]?.action).toBe('ICAP_BLOCKED');
        expect([r.a, r.b]).toEqual([1, 0]);
      });

    for (const [two, id] of [
      [false, 'BF3'],
      [true, 'BF4, its OPTIONS form'],
    ] as const)
      it(`${mode}, ${two ? 'two servers' : 'one server'}: an OPTIONS answer with a 256 KiB body written in time, read after a stall past its bound: the upload goes to that server (${id})`, async () => {
        const body = Buffer.alloc(256 * 1024, 0x6f);
        const answer = `ICAP/1.0 200 OK\r\nMethods: REQMOD\r\nISTag: "x1"\r\nAllow: 204\r\nEncapsulated: opt-body=0\r\n\r\n${chunked(body)}0\r\n\r\n`;
        const r = await twoOrOne(
          (q) => q.sock.write(THREAT_ANSWER),
          { failAction: mode, responseTimeout: 3000, connection },
          { options: (q) => writeThenStall(100, () => q.sock.write(answer), 600) },
          two,
        );
        expect(r.res.status).toBe(403);
        expect([r.a, r.b]).toEqual([1, 0]);
      });

    it(`${mode}, two servers: the kept-alive connection closed as the REQMOD came, the process stalled past stallTimeout: the upload is retried on that server, not moved (BF4)`, async () => {
      const a = await scripted((q) => {
        if (q.body.toString() === 'warm') q.sock.write(CLEAN_204);
        else if (q.conn === 1) writeThenStall(100, () => q.sock.destroy(), 600);
        else q.sock.write(THREAT_ANSWER);
      });
      const b = await scripted((q) => q.sock.write(CLEAN_204));
      cleanups.push(a.close, b.close);
      const { app, post } = await withServers(a, b, { failAction: mode, responseTimeout: 3000, connection });
      // One to each server (they take turns): the upload then goes to a, on its kept-alive connection.
      expect((await post('warm')).status).toBe(200);
      expect((await post('warm')).status).toBe(200);
      const res = await post('some upload');
      expect(a.requests.filter((q) => q.method === 'REQMOD').map((q) => q.conn)).toEqual([1, 1, 2]);
      expect(res.status).toBe(403);
      expect(app.seen.filter((x) => x.raw?.toString() === 'some upload')).toHaveLength(0);
      expect(b.requests.filter((q) => q.method === 'REQMOD').map((q) => q.body.toString())).toEqual(['warm']);
    });

    it(`${mode}, two servers: a server that never answers is left for the next while other uploads keep it busy (campaign-bg BG1)`, async () => {
      const a = await scripted(() => {});
      const b = await scripted((q) =>
        q.sock.write(q.body.toString().includes('EICAR') ? THREAT_ANSWER : CLEAN_204),
      );
      cleanups.push(a.close, b.close);
      const { app, post } = await withServers(a, b, {
        failAction: mode,
        loadBalancing: 'round-robin',
        responseTimeout: 3000,
        connection: { stallTimeout: 300, queueTimeout: 200, connectTimeout: 200, maxConnections: 1 },
      });
      const first = post('first upload EICAR');
      // Another upload every 100 ms while the first waits (a's one connection is the first's).
      const others: Array<Promise<unknown>> = [];
      const feed = setInterval(() => others.push(post('other').catch(() => undefined)), 100);
      cleanups.push(async () => clearInterval(feed));
      const res = await first;
      clearInterval(feed);
      await Promise.all(others);
      expect(res?.status).toBe(403);
      expect(app.seen.filter((x) => x.raw?.toString().includes('EICAR'))).toHaveLength(0);
    });

    // The upload answered 500; the server answers its health check, after a stall or slowly: the
    // failure is the upload's (503). `check` answers the check's REQMOD, `options` the OPTIONS
    // (the second one is the check's: a client of its own).
    for (const [what, check, options] of [
      [
        'the health check after a 500 answered in time, read after a stall past its bound (BD3)',
        (q: Req) => writeThenStall(250, () => q.sock.write(CLEAN_204), 400),
        (q: Req, answer: string) => q.sock.write(answer),
      ],
      [
        "the health check's OPTIONS answered in time, read after a stall past stallTimeout (BF4's OPTIONS form)",
        (q: Req) => q.sock.write(CLEAN_204),
        (q: Req, answer: string, nth: number) =>
          nth === 2 ? writeThenStall(100, () => q.sock.write(answer), 600) : q.sock.write(answer),
      ],
      [
        "the health check's OPTIONS and REQMOD each answered within stallTimeout, their sum past it (campaign-bi BI3)",
        (q: Req) => setTimeout(() => q.sock.write(CLEAN_204), 200),
        (q: Req, answer: string, nth: number) => setTimeout(() => q.sock.write(answer), nth === 2 ? 200 : 0),
      ],
    ] as const)
      it(`${mode}: ${what}: the failure is the upload's (503)`, async () => {
        let checks = 0;
        let optionsSeen = 0;
        const r = await twoOrOne(
          (q) => {
            if (!q.encap.includes('icapkit.invalid')) q.sock.write(SERVER_500);
            else {
              checks++;
              check(q);
            }
          },
          { failAction: mode, responseTimeout: 3000, connection },
          { options: (q, answer) => options(q, answer, ++optionsSeen) },
          false,
        );
        expect(r.res.status).toBe(503);
        expect(r.app.seen).toHaveLength(0);
        // Under fail-open the check runs, and finds the server answering.
        expect(checks).toBe(mode === 'fail-open' ? 1 : 0);
        if (mode === 'fail-open')
          expect(r.logs[0]?.error_message).toContain('answered its health check afterwards');
      });

    for (const [what, options, id] of [
      ['an OPTIONS answer trickled a byte at a time does not hold', trickledOptions, 'campaign-bi'],
      ['an endless OPTIONS body written fast holds', endlessOptions, 'campaign-bk BK1'],
    ] as const)
      it(`${mode}, two servers: ${what} the upload one stallTimeout more at most: the next server blocks it (${id})`, async () => {
        const a = await scripted((q) => q.sock.write(THREAT_ANSWER), { options: (q) => options(q) });
        const b = await scripted((q) => q.sock.write(THREAT_ANSWER));
        cleanups.push(a.close, b.close);
        // connectTimeout at its default: the OPTIONS's own bound is responseTimeout.
        const { app, post } = await withServers(a, b, {
          failAction: mode,
          responseTimeout: 3000,
          connection: { stallTimeout: 300 },
        });
        const started = performance.now();
        const res = await post('some upload');
        expect(res.status).toBe(403);
        expect(performance.now() - started).toBeLessThan(2_500);
        expect(app.seen).toHaveLength(0);
        expect(b.requests.filter((q) => q.method === 'REQMOD')).toHaveLength(1);
      });

    it(`${mode}: the health check's endless OPTIONS body ends the check within the request's responseTimeout (campaign-bk BK3)`, async () => {
      let optionsSeen = 0;
      // The second OPTIONS is the check's.
      const a = await scripted((q) => q.sock.write(SERVER_500), {
        options: (q, answer) => (++optionsSeen === 1 ? q.sock.write(answer) : endlessOptions(q)),
      });
      cleanups.push(a.close);
      const app = await startApp('express5', {
        name: 't',
        poolGroup: a.url,
        serviceUri: '/avscan',
        failAction: mode,
        responseTimeout: 3000,
        connection: { stallTimeout: 300 },
      } as IcapProfile);
      cleanups.push(app.close);
      const started = performance.now();
      const res = await send(app.url, '/raw', {
        method: 'POST',
        headers: { 'content-type': 'application/octet-stream' },
        body: UPLOAD,
      });
      // The check fails (its server broken as far as it can see): the failure action.
      expect(res.status).toBe(mode === 'fail-open' ? 200 : 503);
      expect(performance.now() - started).toBeLessThan(2_500);
    });

    it(`${mode}: the connection made during a stall past connectTimeout is used (BD4)`, async () => {
      let armed = false;
      let sockets = 0;
      // The first socket is the test's HTTP client, the second the ICAP connection.
      const onSocket = () => {
        if (armed && ++sockets === 2) process.nextTick(() => process.nextTick(() => spin(400)));
      };
      subscribe('net.client.socket', onSocket);
      try {
        const s = await scriptedApp(
          'express5',
          (q) => q.sock.write(THREAT_ANSWER),
          { failAction: mode, responseTimeout: 3000, connection: { connectTimeout: 100 } },
          cleanups,
        );
        armed = true;
        const res = await s.post(UPLOAD);
        expect(sockets).toBe(2);
        expect(res.status).toBe(403);
        expect(s.logs[0]?.action).toBe('ICAP_BLOCKED');
      } finally {
        unsubscribe('net.client.socket', onSocket);
      }
    });

    const cases = [
      ['bodyDeadline', 5, 'BD6'],
      ['bodyTimeout', 5, 'BD6'],
      ['bodyDeadline', 1024 * 1024, 'BE2'],
    ] as const;
    for (const [limit, size, id] of cases)
      it(`${mode}: the HTTP client's last ${size} bytes sent in time, read after a stall past ${limit}: scanned, not refused (${id})`, async () => {
        const s = await scriptedApp(
          'express5',
          (q) => q.sock.write(CLEAN_204),
          { failAction: mode, responseTimeout: 3000, enablePreview: false, [limit]: 500 },
          cleanups,
        );
        const u = new URL(s.app.url);
        const sock = connect(Number(u.port), u.hostname);
        cleanups.push(async () => {
          sock.destroy();
        });
        let out = '';
        sock.on('data', (d: Buffer) => {
          out += d.toString('latin1');
        });
        await new Promise((r) => sock.once('connect', r));
        sock.write(
          `POST /raw HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: ${5 + size}\r\n\r\nabcde`,
        );
        writeThenStall(350, () => sock.write(Buffer.alloc(size, 0x61)), 400);
        const deadline = Date.now() + 5000;
        while (!out.includes('\r\n\r\n') && Date.now() < deadline)
          await new Promise((r) => setTimeout(r, 20));
        expect(out.split('\r\n')[0]).toBe('HTTP/1.1 200 OK');
        expect(s.app.seen).toHaveLength(1);
        expect(s.logs[0]?.action).toBe('ICAP_PASSED');
      });
  }
});

/** Another scan in the same process whose answer streams a byte every ms until stopped. */
async function streamingElsewhere(): Promise<() => Promise<void>> {
  const timers: NodeJS.Timeout[] = [];
  const s = await scriptedApp(
    'express5',
    (r) => {
      const reqHdr = r.encap.toString('latin1');
      r.sock.write(
        `ICAP/1.0 200 OK\r\nISTag: "x1"\r\nEncapsulated: req-hdr=0, req-body=${reqHdr.length}\r\n\r\n${reqHdr}`,
      );
      const t = setInterval(() => (r.sock.destroyed ? clearInterval(t) : r.sock.write('1\r\na\r\n')), 1);
      timers.push(t);
    },
    {
      failAction: 'fail-closed',
      responseTimeout: 60_000,
      connection: { ioTimeout: 60_000, stallTimeout: 60_000 },
    },
    cleanups,
  );
  const pending = s.post(UPLOAD).catch(() => undefined);
  const deadline = Date.now() + 5000;
  while (timers.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  expect(timers).toHaveLength(1);
  return async () => {
    for (const t of timers) clearInterval(t);
    for (const q of s.icap.requests) q.sock.destroy();
    await pending;
  };
}

describe("other scans' traffic does not hold a deadline (campaign-be BE1)", () => {
  it('fail-closed: a server that never answers ends at responseTimeout, not a grace later', async () => {
    const stop = await streamingElsewhere();
    try {
      const s = await scriptedApp(
        'express5',
        () => {},
        { failAction: 'fail-closed', responseTimeout: 500, connection: { ioTimeout: 30_000 } },
        cleanups,
      );
      const t0 = performance.now();
      const res = await s.post(UPLOAD);
      const took = performance.now() - t0;
      expect(res.status).toBe(503);
      expect(s.logs[0]?.error_code).toBe('ICAP_ERR_TIMEOUT');
      // The bound is responseTimeout plus a turn; the grace (here 500 ms more) is not taken.
      expect(took).toBeLessThan(900);
    } finally {
      await stop();
    }
  });

  for (const mode of MODES)
    it(`${mode}: a 204 written 300 ms after responseTimeout is too late, whatever else streams`, async () => {
      const stop = await streamingElsewhere();
      try {
        const s = await scriptedApp(
          'express5',
          (r) => setTimeout(() => r.sock.destroyed || r.sock.write(CLEAN_204), 800),
          { failAction: mode, responseTimeout: 500, connection: { ioTimeout: 10_000 } },
          cleanups,
        );
        const res = await s.post(UPLOAD);
        expect(s.logs[0]?.error_code).toBe('ICAP_ERR_TIMEOUT');
        expect(res.status).toBe(mode === 'fail-open' ? 200 : 503);
      } finally {
        await stop();
      }
    });
});

describe('IcapClient', () => {
  for (const [size, lateBy, what, id] of [
    [1024 * 1024, 0, 'read at once', 'BD2'],
    [256 * 1024, 40, 'a reader that starts late (the answer waits in its paused socket)', 'BF2'],
  ] as const)
    it(`a request timeout: the answer written before it, read after a stall past it, ${what}, is the answer to its trailer (${id})`, async () => {
      const body = Buffer.alloc(size, 0x61);
      // Written as soon as the request is read (well before the timeout, however long sending
      // took on a loaded machine), then a stall past the timeout.
      const server = await scripted((r) =>
        writeThenStall(0, () => r.sock.write(echoWithTrailerThreat(r)), 1_000),
      );
      cleanups.push(server.close);
      const client = new IcapClient({ url: server.url, timeout: 800, useOptions: false });
      cleanups.push(async () => client.destroy());
      const res = await reqmod(client, body);
      if (!('status' in res)) throw new Error('skipped');
      if (lateBy > 0) await new Promise((r) => setTimeout(r, lateBy));
      let got = 0;
      for await (const c of res.body!) got += (c as Buffer).length;
      expect(got).toBe(body.length);
      expect(res.status).toBe(200);
      expect((await res.done).trailer?.headers.get('x-infection-found')).toContain('EICAR');
    });

  it("heard: a count reused after a request whose answer waited for its reader does not stretch the next one's timeout (campaign-bg BG2)", async () => {
    let n = 0;
    const server = await scripted((r) => {
      if (++n === 1) r.sock.write(echoWithTrailerThreat(r));
    });
    cleanups.push(server.close);
    const client = new IcapClient({ url: server.url, timeout: 500, useOptions: false });
    cleanups.push(async () => client.destroy());
    const heard = { heard: 0 };
    const one = (body: Buffer) => reqmod(client, body, heard);
    // The answer is never read: it waits in its paused socket until the timeout.
    const first = await one(Buffer.alloc(1024 * 1024, 0x61));
    if (!('status' in first)) throw new Error('skipped');
    await expect(first.done).rejects.toMatchObject({ code: 'ICAP_ERR_TIMEOUT' });
    expect(heard.held).not.toBe(true);
    // The second server never answers: the timeout acts after one look, not a grace later.
    const t0 = performance.now();
    await expect(one(UPLOAD)).rejects.toMatchObject({ code: 'ICAP_ERR_TIMEOUT' });
    expect(performance.now() - t0).toBeLessThan(850);
  });

  it('heard: a value the caller made unwritable never reaches the process; one not an object is refused (BF1)', async () => {
    const server = await scripted((r) => r.sock.write(THREAT_ANSWER));
    cleanups.push(server.close);
    const client = new IcapClient({ url: server.url, timeout: 2000, useOptions: false });
    cleanups.push(async () => client.destroy());
    const send1 = (heard: unknown) => reqmod(client, UPLOAD, heard);
    const odd = [
      Object.freeze({ heard: 0 }),
      {
        get heard() {
          return 0;
        },
      },
      {
        get heard() {
          return 0;
        },
        set heard(_v: number) {
          throw new Error('boom');
        },
      },
    ];
    for (const heard of odd) {
      const res = await send1(heard);
      if (!('status' in res)) throw new Error('skipped');
      expect(res.headers.get('x-infection-found')).toContain('EICAR');
      await res.done;
    }
    for (const heard of [5, 'abc', null])
      await expect(send1(heard)).rejects.toMatchObject({ code: 'ICAP_ERR_INVALID_ARGUMENT' });
  });

  it('queueTimeout: a connection freed by an answer written before it, read after a stall past it, serves the waiter (BD5)', async () => {
    let n = 0;
    const server = await scripted((r) => {
      if (++n === 1) writeThenStall(60, () => r.sock.write(CLEAN_204), 400);
      else r.sock.write(CLEAN_204);
    });
    cleanups.push(server.close);
    const client = new IcapClient({ url: server.url, maxConnections: 1, queueTimeout: 150 });
    cleanups.push(async () => client.destroy());
    const one = () => reqmod(client, UPLOAD);
    const [a, b] = await Promise.allSettled([one(), one()]);
    expect(a.status).toBe('fulfilled');
    expect(b.status === 'rejected' ? String(b.reason) : 'fulfilled').toBe('fulfilled');
    expect(n).toBe(2);
  });
});
