/**
 * A threat the ICAP server names anywhere in what it sends for an exchange blocks, in both
 * failure modes (the invariant "a threat verdict is never lost"), found by an attack campaign
 * with a scripted server (each case failed before its fix):
 *
 * - in the trailer fields after the chunked body of an echo (the head alone says clean);
 * - in a second answer sent after a 204 in the same write (the 204 alone says clean);
 * - in a block answer followed, later, by a stray 204: the connection a block came on is not
 *   kept, so the stray cannot become the verdict of the next upload on that connection, however
 *   the block is named (a second value of a field, an empty refusal field, the echoed request
 *   head, the trailer: campaign-ap AP4);
 * - as a block page (a REQMOD 200 with `res-hdr`) whose HTTP head cannot be read: the server
 *   answered in the upload's place; and an ICAP 4xx whose answer breaks off is the server's
 *   refusal still (503 fail-closed, never fail-open's pass).
 *
 * And what must not change: a clean 204 keeps its connection (one connection for many uploads),
 * Kaspersky's clean `X-Virus-ID: no threats` too, and harmless trailer fields pass.
 */
import type { Socket } from 'node:net';
import type { IcapLog } from '@icapkit/core';
import { eicar } from '@icapkit/testing';
import { afterEach, describe, expect, it } from 'vitest';
import type { App, Framework } from '../conformance/apps.js';
import { scriptedApp } from '../support/scripted-app.js';
import { chunked, type Handler, type Req } from '../support/scripted-icap.js';

const BLOCK_PAGE = 'HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: 7\r\n\r\n';
function blockAnswer(): string {
  return (
    'ICAP/1.0 200 OK\r\nISTag: "x1"\r\nX-Infection-Found: Type=0; Resolution=2; Threat=EICAR;\r\n' +
    `Encapsulated: res-hdr=0, res-body=${BLOCK_PAGE.length}\r\n\r\n${BLOCK_PAGE}7\r\nblocked\r\n0\r\n\r\n`
  );
}
const NO_CONTENT = 'ICAP/1.0 204 No Content\r\nISTag: "x1"\r\nEncapsulated: null-body=0\r\n\r\n';

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const FRAMEWORKS: Framework[] = ['express5', 'fastify', 'koa3', 'hono'];
const EICAR = eicar();
const PAGE = 'HTTP/1.1 403 VirusFound\r\nContent-Type: text/html\r\nContent-Length: 7\r\n\r\n';

async function setup(
  framework: Framework,
  failAction: 'fail-open' | 'fail-closed',
  handler: Handler,
  connection: Record<string, number> = {},
) {
  const profile = { failAction, responseTimeout: 1500, connection: { ioTimeout: 500, ...connection } };
  const s = await scriptedApp(framework, handler, profile, cleanups);
  return { ...s, post: (body: Buffer = EICAR) => s.post(body) };
}

/** Refused, the handler never ran, the record says blocked. */
function expectBlocked(status: number, app: App, log: IcapLog | undefined): void {
  expect(status).toBe(403);
  expect(app.seen).toHaveLength(0);
  expect(log?.action).toBe('ICAP_BLOCKED');
}

/** An echo of the request, its body chunked, then `trailer` (field lines) after the last chunk. */
function echoWithTrailer(r: Req, trailer: string): string {
  const reqHdr = r.encap.toString('latin1');
  return (
    `ICAP/1.0 200 OK\r\nISTag: "x1"\r\nEncapsulated: req-hdr=0, req-body=${reqHdr.length}\r\n\r\n${reqHdr}` +
    `${chunked(r.body)}0\r\n${trailer}\r\n`
  );
}

describe.each(FRAMEWORKS)('%s', (framework) => {
  for (const failAction of ['fail-open', 'fail-closed'] as const) {
    it(`a threat named only in the trailer of an echo blocks (${failAction})`, async () => {
      const { app, icap, logs, post } = await setup(framework, failAction, (r) =>
        r.sock.write(
          echoWithTrailer(
            r,
            'X-Infection-Found: Type=0; Resolution=2; Threat=EICAR;\r\nX-Virus-ID: EICAR\r\n',
          ),
        ),
      );
      const res = await post();
      expect(Buffer.compare(icap.requests.find((r) => r.method === 'REQMOD')!.body, EICAR)).toBe(0);
      expectBlocked(res.status, app, logs[0]);
      expect(logs[0]!.request_logs[0]!.threat_id).toBe('EICAR');
    });

    it(`a block answer after a 204 in the same write blocks (${failAction})`, async () => {
      const { app, logs, post } = await setup(framework, failAction, (r) =>
        r.sock.write(NO_CONTENT + blockAnswer()),
      );
      expectBlocked((await post()).status, app, logs[0]);
    });

    // The blocks whose connection the reuse check used to keep (campaign-ap AP4), beside the first one.
    const BLOCKS: Record<string, (r: Req) => string> = {
      'a block page naming the threat': () => blockAnswer(),
      'a 204 with X-Response-Info Allowed, then Blocked': () =>
        'ICAP/1.0 204 No Content\r\nISTag: "x1"\r\nX-Response-Info: Allowed\r\nX-Response-Info: Blocked\r\nEncapsulated: null-body=0\r\n\r\n',
      'a 204 with an empty X-Blocked-Reason': () =>
        'ICAP/1.0 204 No Content\r\nISTag: "x1"\r\nX-Blocked-Reason:\r\nEncapsulated: null-body=0\r\n\r\n',
      'a 204 with X-FSecure-Scan-Result clean, then infected': () =>
        'ICAP/1.0 204 No Content\r\nISTag: "x1"\r\nX-FSecure-Scan-Result: clean\r\nX-FSecure-Scan-Result: infected\r\nEncapsulated: null-body=0\r\n\r\n',
      'a 204 with a second X-Violations-Found counting one': () =>
        'ICAP/1.0 204 No Content\r\nISTag: "x1"\r\nX-Violations-Found: 0\r\nX-Violations-Found: 1\r\n\tupload.bin\r\n\tEICAR Test String\r\n\t-1\r\n\t0\r\nEncapsulated: null-body=0\r\n\r\n',
      'an echo whose request head names X-Virus-ID': (r) => {
        const reqHdr = r.encap.toString('latin1').replace(/\r\n\r\n$/, '\r\nX-Virus-ID: EICAR\r\n\r\n');
        return `ICAP/1.0 200 OK\r\nISTag: "x1"\r\nEncapsulated: req-hdr=0, req-body=${reqHdr.length}\r\n\r\n${reqHdr}${chunked(r.body)}0\r\n\r\n`;
      },
      'an echo naming the threat in its trailer': (r) =>
        echoWithTrailer(r, 'X-Infection-Found: Type=0; Resolution=2; Threat=EICAR;\r\n'),
      // campaign-aq AQ1: heads the parser did not read, read by the verdict as a block page.
      'an echo with a second Encapsulated field naming a response': (r) => {
        const reqHdr = r.encap.toString('latin1');
        return `ICAP/1.0 200 OK\r\nISTag: "x1"\r\nEncapsulated: req-hdr=0, req-body=${reqHdr.length}\r\nEncapsulated: res-hdr=0, null-body=0\r\n\r\n${reqHdr}${chunked(r.body)}0\r\n\r\n`;
      },
      'an echo whose trailer names an encapsulated response': (r) =>
        echoWithTrailer(r, 'Encapsulated: res-hdr=0\r\n'),
      'a 100 Continue with a 403 page head, then a clean 204': () =>
        `ICAP/1.0 100 Continue\r\nISTag: "x1"\r\nEncapsulated: res-hdr=0, null-body=${PAGE.length}\r\n\r\n${PAGE}${NO_CONTENT}`,
      'a 100 Continue whose encapsulated head names X-Virus-ID, then a clean 204': () => {
        const h = 'HTTP/1.1 200 OK\r\nX-Virus-ID: EICAR\r\n\r\n';
        return `ICAP/1.0 100 Continue\r\nISTag: "x1"\r\nEncapsulated: res-hdr=0, null-body=${h.length}\r\n\r\n${h}${NO_CONTENT}`;
      },
    };
    for (const [name, block] of Object.entries(BLOCKS)) {
      it(`a stray 204 after ${name} cannot answer the next upload (${failAction})`, async () => {
        const { app, icap, logs, post } = await setup(
          framework,
          failAction,
          (r) => {
            // The first exchange's block, then the stray on its connection; the next one's block late.
            if (r.index === 1) {
              r.sock.write(block(r));
              setTimeout(() => {
                if (!r.sock.destroyed) r.sock.write(NO_CONTENT);
              }, 60);
            } else
              setTimeout(() => {
                if (!r.sock.destroyed) r.sock.write(blockAnswer());
              }, 150);
          },
          { maxConnections: 1, ioTimeout: 2000 },
        );
        const first = await post();
        const second = await post();
        expect(first.status).toBe(403);
        expect(second.status).toBe(403);
        expect(app.seen).toHaveLength(0);
        expect(logs.map((l) => l.action)).toEqual(['ICAP_BLOCKED', 'ICAP_BLOCKED']);
        // The block's connection was not kept: the second REQMOD came on a connection of its own.
        const reqmods = icap.requests.filter((r) => r.method === 'REQMOD');
        expect(new Set(reqmods.map((r) => r.conn)).size).toBe(2);
      });
    }
  }

  const BROKEN_PAGE: Record<string, (s: Socket) => void> = {
    'its head cut, then FIN': (s) =>
      s.end(
        `ICAP/1.0 200 OK\r\nISTag: "x1"\r\nEncapsulated: res-hdr=0, res-body=${PAGE.length}\r\n\r\n${PAGE.slice(0, 30)}`,
      ),
    'its head cut, then silence (ioTimeout)': (s) =>
      s.write(
        `ICAP/1.0 200 OK\r\nISTag: "x1"\r\nEncapsulated: res-hdr=0, res-body=${PAGE.length}\r\n\r\n${PAGE.slice(0, 30)}`,
      ),
    'an Encapsulated offset 2 bytes short': (s) =>
      s.write(
        `ICAP/1.0 200 OK\r\nISTag: "x1"\r\nEncapsulated: res-hdr=0, res-body=${PAGE.length - 2}\r\n\r\n${PAGE}7\r\nblocked\r\n0\r\n\r\n`,
      ),
    'a line without a colon in its head': (s) =>
      s.write(
        `ICAP/1.0 200 OK\r\nISTag: "x1"\r\nEncapsulated: res-hdr=0, res-body=${PAGE.length + 6}\r\n\r\n${PAGE.replace('Content-Type', 'junk\r\nContent-Type')}7\r\nblocked\r\n0\r\n\r\n`,
      ),
  };
  for (const [name, write] of Object.entries(BROKEN_PAGE)) {
    it(`a REQMOD 200 with a block page (no threat field), ${name}: blocked under fail-open`, async () => {
      const { app, logs, post } = await setup(framework, 'fail-open', (r) => write(r.sock));
      expectBlocked((await post()).status, app, logs[0]);
    });
  }

  it('an ICAP 403 whose page is cut off is a refusal (503), or a block once its head says 403 VirusFound: never a pass under fail-open', async () => {
    let cut = 0;
    const { app, logs, post } = await setup(framework, 'fail-open', (r) =>
      r.sock.end(
        `ICAP/1.0 403 Forbidden\r\nISTag: "x1"\r\nEncapsulated: res-hdr=0, res-body=${PAGE.length}\r\n\r\n${PAGE.slice(0, cut)}`,
      ),
    );
    for (const [at, status] of [
      [5, 503],
      [30, 403],
    ] as const) {
      cut = at;
      const before = logs.length;
      const res = await post();
      expect(res.status).toBe(status);
      expect(logs[before]?.action).toBe(status === 403 ? 'ICAP_BLOCKED' : 'ICAP_FAILED');
    }
    expect(app.seen).toHaveLength(0);
  });

  it('clean 204s keep one connection; a harmless trailer passes', async () => {
    const clean = Buffer.from('clean upload');
    const { app, icap, logs, post } = await setup(framework, 'fail-closed', (r) =>
      r.sock.write(
        r.index % 2 === 1
          ? 'ICAP/1.0 204 No Content\r\nISTag: "x1"\r\nX-Virus-ID: no threats\r\nEncapsulated: null-body=0\r\n\r\n'
          : echoWithTrailer(r, 'X-Checksum: 1234\r\n'),
      ),
    );
    for (let i = 0; i < 4; i++) expect((await post(clean)).status).toBe(200);
    expect(app.seen).toHaveLength(4);
    for (const s of app.seen) expect(s.raw?.toString()).toBe('clean upload');
    expect(logs.map((l) => l.action)).toEqual(Array(4).fill('ICAP_PASSED'));
    const reqmods = icap.requests.filter((r) => r.method === 'REQMOD');
    expect(new Set(reqmods.map((r) => r.conn)).size).toBe(1);
  });
});
