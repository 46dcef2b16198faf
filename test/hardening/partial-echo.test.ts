/**
 * A returned body cut short is never a modification (campaign-bs BS6). c-icap's virus_scan with
 * data trickling (virus_scan.SendPercentData / StartSendPercentDataAfter, Debian's shipped
 * values 5 / 2M, a service called without `mode=simple`) starts its 200 echo before it has
 * scanned the whole upload; when ClamAV then finds a virus it can neither add a threat header
 * nor send a block page, and ends the echo early ("partiallyblocked"): a well-framed 200 whose
 * returned head still declares the upload's Content-Length and whose body is a prefix of it,
 * sent unscanned. icapkit delivered that prefix (EICAR included) as ICAP_MODIFIED, in both
 * failure modes. Now: a returned head declaring a Content-Length its body does not have, or a
 * body that is a strict prefix of the original under the head sent, blocks (403, both modes).
 */
import type { IcapLog } from '@icapkit/core';
import { eicar } from '@icapkit/testing';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { type Framework, startApp } from '../conformance/apps.js';
import { type CIcapServer, describeWithCIcap, startCIcap } from '../support/c-icap.js';
import { multipart, send } from '../support/http-client.js';
import { scriptedApp } from '../support/scripted-app.js';
import { chunked, type Req } from '../support/scripted-icap.js';

const cleanups: Array<() => Promise<void>> = [];
const cleanUp = async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
};
afterEach(cleanUp);

const MODES = ['fail-closed', 'fail-open'] as const;
const PARTIAL = /partial body/;

/**
 * c-icap's answer: the request head as received (plus its Via), then the first `keep` bytes of
 * the body, well framed. `length`: the Content-Length the returned head declares instead.
 */
function partialEcho(r: Req, keep: number, length?: number): void {
  let h = r.encap
    .toString('latin1')
    .replace(/\r\n\r\n$/, '\r\nVia: ICAP/1.0 vm (C-ICAP/0.5.10 Antivirus service )\r\n\r\n');
  if (length !== undefined) h = h.replace(/content-length: \d+/i, `Content-Length: ${length}`);
  const prefix = r.body.subarray(0, keep);
  r.sock.write(
    Buffer.concat([
      Buffer.from(
        `ICAP/1.0 200 OK\r\nServer: C-ICAP/0.5.10\r\nConnection: keep-alive\r\nISTag: "CI0001-x"\r\nEncapsulated: req-hdr=0, req-body=${h.length}\r\n\r\n${h}`,
        'latin1',
      ),
      Buffer.from(chunked(prefix), 'latin1'),
      Buffer.from('0\r\n\r\n'),
    ]),
  );
}

const UPLOAD = Buffer.concat([eicar(), Buffer.alloc(100_000, 0x20)]);

/** Where the body is held while it is scanned: in memory (compared on the fly), spooled, streamed. */
const HOLDING = {
  'in memory': {},
  'spooled to disk': { memoryThreshold: 8192 },
  'streamed (allow204 off, preview)': { allow204: false, previewSize: 1024, previewMinBodySize: 0 },
} as const;

describe('a returned body cut short blocks (scripted, c-icap partiallyblocked shape)', () => {
  for (const [holding, profile] of Object.entries(HOLDING)) {
    it(`${holding}: the returned head still declares the upload's length`, async () => {
      for (const framework of ['express5', 'fastify', 'koa3', 'hono'] as Framework[]) {
        for (const failAction of MODES) {
          const s = await scriptedApp(
            framework,
            (r) => partialEcho(r, 4096),
            { failAction, responseTimeout: 3000, ...profile },
            cleanups,
          );
          const res = await s.post(UPLOAD);
          const at = `${framework} ${failAction}`;
          expect(s.app.seen, at).toEqual([]);
          expect(res.status, at).toBe(403);
          expect(s.logs[0]?.action, at).toBe('ICAP_BLOCKED');
          expect(s.logs[0]?.request_logs.at(-1)?.error_message, at).toMatch(PARTIAL);
          await cleanUp();
        }
      }
    });
  }

  for (const [holding, profile] of Object.entries(HOLDING)) {
    it(`${holding}: a prefix under the head sent, its length declared, or none (a chunked upload)`, async () => {
      for (const failAction of MODES) {
        for (const declared of [true, false]) {
          const s = await scriptedApp(
            'express5',
            (r) => partialEcho(r, 4096, declared ? 4096 : undefined),
            { failAction, responseTimeout: 3000, ...profile },
            cleanups,
          );
          // Without a declared length: sent chunked, while it arrives (no Content-Length to echo).
          const res = declared
            ? await s.post(UPLOAD)
            : await send(s.app.url, '/raw', {
                body: UPLOAD,
                chunked: 8192,
                headers: { 'content-type': 'application/octet-stream' },
              });
          const at = `${failAction} ${declared ? 'declared' : 'chunked'}`;
          expect(s.app.seen, at).toEqual([]);
          expect(res.status, at).toBe(403);
          expect(s.logs[0]?.request_logs.at(-1)?.error_message, at).toMatch(PARTIAL);
          await cleanUp();
        }
      }
    });
  }

  it('multipart per-file: a file part echoed in part blocks the form', async () => {
    const s = await scriptedApp(
      'express5',
      (r) => partialEcho(r, r.body.includes('X5O') ? 1024 : r.body.length),
      { failAction: 'fail-open', responseTimeout: 3000 },
      cleanups,
    );
    const form = multipart([
      { name: 'note', data: 'hello' },
      { name: 'f', filename: 'big.bin', data: UPLOAD },
    ]);
    const res = await send(s.app.url, '/multipart', {
      body: form.body,
      headers: { 'content-type': form.contentType },
    });
    expect(s.app.seen).toEqual([]);
    expect(res.status).toBe(403);
  });

  it('controls: a whole modification (its own length, not a prefix) and an identical echo (even under a wrong length) are delivered', async () => {
    const s = await scriptedApp(
      'express5',
      (r) => {
        const body = r.body.toString('latin1');
        if (body.startsWith('echo')) return partialEcho(r, r.body.length);
        // The upload byte for byte under a wrong length: an echo all the same.
        if (body.startsWith('lying')) return partialEcho(r, r.body.length, 999);
        const h = r.encap.toString('latin1').replace(/content-length: \d+/i, 'Content-Length: 7');
        r.sock.write(
          `ICAP/1.0 200 OK\r\nISTag: "x1"\r\nEncapsulated: req-hdr=0, req-body=${h.length}\r\n\r\n${h}7\r\ncleaned\r\n0\r\n\r\n`,
        );
      },
      { failAction: 'fail-closed', responseTimeout: 3000 },
      cleanups,
    );
    expect((await s.post(Buffer.from('to be cleaned'))).status).toBe(200);
    expect((await s.post(Buffer.from('echo me'))).status).toBe(200);
    expect((await s.post(Buffer.from('lying echo'))).status).toBe(200);
    expect(s.app.seen.map((x) => x.raw?.toString())).toEqual(['cleaned', 'echo me', 'lying echo']);
    expect(s.logs.map((l) => l.action)).toEqual(['ICAP_MODIFIED', 'ICAP_PASSED', 'ICAP_PASSED']);
  });
});

describeWithCIcap(
  'real c-icap + ClamAV with data trickling (SendPercentData 5, StartSendPercentDataAfter 2M)',
  () => {
    let cicap: CIcapServer | undefined;
    beforeAll(async () => {
      cicap = await startCIcap({
        extraConfig: [
          'ServiceAlias avtrickle virus_scan?allow204=on&sizelimit=off',
          'ServiceAlias avstreamed virus_scan?allow204=on&sizelimit=off&mode=streamed',
          'virus_scan.SendPercentData 5',
          'virus_scan.StartSendPercentDataAfter 2M',
        ].join('\n'),
      });
    }, 60_000);
    afterAll(async () => {
      await cicap?.stop();
    });

    /** An app scanning with c-icap's `service`; its records go to `logs`. */
    async function appOn(
      service: string,
      failAction: (typeof MODES)[number],
      logs: IcapLog[],
      allow204 = true,
    ) {
      const app = await startApp('express5', {
        name: 'trickle',
        poolGroup: `icap://127.0.0.1:${cicap!.port}`,
        serviceUri: service,
        failAction,
        allow204,
        responseTimeout: 20_000,
        onLog: (l: IcapLog) => logs.push(l),
      });
      cleanups.push(app.close);
      return app;
    }

    /** EICAR first, then 3 MiB: past StartSendPercentDataAfter, c-icap has started its echo when ClamAV finds it. */
    const BIG = Buffer.concat([eicar(), Buffer.alloc(3 * 1024 * 1024, 0x20)]);

    // Chunked in streaming mode (allow204 off): sent while it arrives, the head declares no length
    // (nor does c-icap's echo), and the original is not kept to compare: shorter under the head
    // sent blocks.
    for (const [service, failAction, streamed] of [
      ['/avtrickle', 'fail-closed', false],
      ['/avtrickle', 'fail-open', false],
      ['/avstreamed', 'fail-open', false],
      ['/avtrickle', 'fail-open', true],
    ] as const) {
      const how = streamed ? ', sent chunked in streaming mode' : '';
      it(`${service} ${failAction}${how}: EICAR at the start of a 3 MiB upload is never delivered`, async () => {
        const logs: IcapLog[] = [];
        const app = await appOn(service, failAction, logs, !streamed);
        const res = await send(app.url, '/raw', {
          body: BIG,
          headers: { 'content-type': 'application/octet-stream' },
          timeoutMs: 30_000,
          ...(streamed ? { chunked: 16_384 } : {}),
        });
        const deadline = Date.now() + 5000;
        while (logs.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
        expect(app.seen).toEqual([]);
        expect(res.status).toBe(403);
        expect(logs[0]?.action).toBe('ICAP_BLOCKED');
        // c-icap's partial answer it was (not a whole block page: that would name the threat).
        expect(logs[0]?.request_logs.at(-1)?.error_message).toMatch(PARTIAL);
      }, 60_000);
    }

    it('/avscan (mode=simple), the same trickling settings: a whole block naming the threat', async () => {
      const logs: IcapLog[] = [];
      const app = await appOn('/avscan', 'fail-open', logs);
      const res = await send(app.url, '/raw', {
        body: BIG,
        headers: { 'content-type': 'application/octet-stream' },
        timeoutMs: 30_000,
      });
      const deadline = Date.now() + 5000;
      while (logs.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      expect(app.seen).toEqual([]);
      expect(res.status).toBe(403);
      const entry = logs[0]?.request_logs.at(-1);
      expect(entry?.threat_id).toBeDefined();
      expect(entry?.error_message ?? '').not.toMatch(PARTIAL);
    }, 60_000);

    it('/avtrickle, multipart per-file: the infected file part is never delivered', async () => {
      const logs: IcapLog[] = [];
      const app = await appOn('/avtrickle', 'fail-open', logs);
      const form = multipart([
        { name: 'note', data: 'hello' },
        { name: 'f', filename: 'big.bin', data: BIG },
      ]);
      const res = await send(app.url, '/multipart', {
        body: form.body,
        headers: { 'content-type': form.contentType },
        timeoutMs: 30_000,
      });
      expect(app.seen).toEqual([]);
      expect(res.status).toBe(403);
    }, 60_000);
  },
);
