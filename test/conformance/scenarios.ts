/**
 * The conformance scenarios: one list, run against every framework adapter over real
 * sockets, once per ICAP backend (real c-icap, and the embedded server, which can also
 * rewrite bodies and misbehave on purpose).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { IcapLog, IcapProfile } from '@icapkit/core';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { refusingPort } from '../support/c-icap.js';
import { EICAR_THREAT, eicarBytes } from '../support/eicar.js';
import { abortMidUpload, multipart, send } from '../support/http-client.js';
import { type App, FRAMEWORKS, type Framework, startApp } from './apps.js';

export interface Backend {
  name: string;
  start(): Promise<void>;
  stop(): Promise<void>;
  /** `icap://host:port` of the running server. */
  url(): string;
  serviceUri: string;
  /** Threat name the server reports for EICAR. */
  eicarThreat: string;
  /** Optional extras of the embedded server. */
  modify?: { serviceUri: string; from: string; to: string };
  faults?: {
    /** A profile whose server hangs / resets / answers 500 for every request. */
    profile(
      kind: 'hang' | 'reset' | 'status-500',
    ): Promise<{ poolGroup: string; serviceUri: string; done(): Promise<void> }>;
  };
}

function text(n: number, seed = 0): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = 0x61 + ((i + seed) % 26);
  return b;
}

export function defineConformance(backend: Backend): void {
  beforeAll(() => backend.start(), 60_000);
  afterAll(() => backend.stop());

  describe.each(FRAMEWORKS)('%s', (framework: Framework) => {
    let app: App | undefined;
    let logs: IcapLog[] = [];
    afterEach(async () => {
      await app?.close();
      app = undefined;
      logs = [];
    });

    async function start(
      profile: Partial<IcapProfile> = {},
      options: { http2?: boolean; koaParser?: '@koa/bodyparser' } = {},
    ) {
      app = await startApp(
        framework,
        {
          name: 'conformance',
          poolGroup: backend.url(),
          serviceUri: backend.serviceUri,
          onLog: (l) => logs.push(l),
          ...profile,
        },
        options,
      );
      return app;
    }

    it('clean raw upload: the handler receives exactly the bytes sent (length and chunked)', async () => {
      const a = await start();
      const body = text(700_000, 1);
      expect(
        (await send(a.url, '/raw', { body, headers: { 'content-type': 'application/octet-stream' } })).status,
      ).toBe(200);
      expect(
        (
          await send(a.url, '/raw', {
            body,
            chunked: 65_536,
            headers: { 'content-type': 'application/octet-stream' },
          })
        ).status,
      ).toBe(200);
      expect(a.seen).toHaveLength(2);
      for (const s of a.seen) {
        expect(s.raw!.equals(body)).toBe(true);
        expect(s.icap?.action).toBe('ICAP_PASSED');
        expect(Number(s.headers['content-length'])).toBe(body.length);
      }
      expect(logs.map((l) => l.action)).toEqual(['ICAP_PASSED', 'ICAP_PASSED']);
    });

    it('clean JSON and form bodies reach the downstream body parsers', async () => {
      const a = await start();
      const doc = { name: 'report', tags: ['a', 'b'], text: 'x'.repeat(20_000) };
      expect(
        (
          await send(a.url, '/json', {
            body: JSON.stringify(doc),
            headers: { 'content-type': 'application/json' },
          })
        ).status,
      ).toBe(200);
      expect(a.seen[0]!.parsed).toEqual(doc);
      if (framework !== 'fastify') {
        expect(
          (
            await send(a.url, '/form', {
              body: 'a=1&b=hello+world',
              headers: { 'content-type': 'application/x-www-form-urlencoded' },
            })
          ).status,
        ).toBe(200);
        expect(a.seen[1]!.parsed).toEqual({ a: '1', b: 'hello world' });
      }
    });

    if (framework.startsWith('koa')) {
      it('@koa/bodyparser reads the approved body', async () => {
        const a = await start({}, { koaParser: '@koa/bodyparser' });
        const doc = { n: 42, s: 'é'.repeat(1000) };
        expect(
          (
            await send(a.url, '/json', {
              body: JSON.stringify(doc),
              headers: { 'content-type': 'application/json' },
            })
          ).status,
        ).toBe(200);
        expect(a.seen[0]!.parsed).toEqual(doc);
      });
    }

    it('clean multipart upload reaches multer / @fastify/multipart / koa-body with files and fields', async () => {
      const a = await start();
      const pdf = text(150_000, 9);
      const form = multipart([
        { name: 'title', data: 'Quarterly report' },
        { name: 'doc', filename: 'report.pdf', type: 'application/pdf', data: pdf },
        { name: 'note', filename: 'note.txt', type: 'text/plain', data: 'hello' },
      ]);
      const r = await send(a.url, '/multipart', {
        body: form.body,
        headers: { 'content-type': form.contentType },
      });
      expect(r.status).toBe(200);
      const s = a.seen[0]!;
      // formidable lists files in the order their temp files were written: compare sorted.
      const files = [...(s.files ?? [])].sort((x, y) => x.field.localeCompare(y.field));
      expect(files.map((f) => [f.field, f.name, f.type, f.data.length])).toEqual([
        ['doc', 'report.pdf', 'application/pdf', pdf.length],
        ['note', 'note.txt', 'text/plain', 5],
      ]);
      expect(files[0]!.data.equals(pdf)).toBe(true);
      expect(s.fields).toMatchObject({ title: 'Quarterly report' });
    });

    it('EICAR: 403 as HTML or JSON by Accept, the handler is never called, ICAP_BLOCKED with the threat', async () => {
      const a = await start();
      const html = await send(a.url, '/raw', {
        body: eicarBytes(),
        headers: { 'content-type': 'application/octet-stream' },
      });
      expect(html.status).toBe(403);
      expect(String(html.headers['content-type'])).toMatch(/^text\/html/);
      expect(html.text).toContain(backend.eicarThreat);
      const json = await send(a.url, '/raw', {
        body: eicarBytes(),
        headers: { 'content-type': 'application/octet-stream', accept: 'application/json' },
      });
      expect(json.status).toBe(403);
      expect(String(json.headers['content-type'])).toMatch(/^application\/problem\+json/);
      expect(JSON.parse(json.text)).toMatchObject({ status: 403, threat: backend.eicarThreat });
      const form = multipart([{ name: 'f', filename: 'eicar.com', data: eicarBytes() }]);
      expect(
        (await send(a.url, '/multipart', { body: form.body, headers: { 'content-type': form.contentType } }))
          .status,
      ).toBe(403);
      expect(a.seen).toHaveLength(0);
      expect(logs.slice(0, 2).map((l) => [l.action, l.request_logs.at(-1)?.threat_id])).toEqual([
        ['ICAP_BLOCKED', backend.eicarThreat],
        ['ICAP_BLOCKED', backend.eicarThreat],
      ]);
    });

    for (const exceed of ['fail-closed', 'fail-open'] as const) {
      it(`body over bufferSize (${exceed}): declared length and chunked`, async () => {
        const a = await start({ bufferSize: 100_000, bufferSizeExceedAction: exceed });
        const body = text(400_000, 3);
        const headers = { 'content-type': 'application/octet-stream' };
        const r1 = await send(a.url, '/raw', { body, headers });
        const r2 = await send(a.url, '/raw', { body, headers, chunked: 32_768 });
        if (exceed === 'fail-closed') {
          expect([r1.status, r2.status]).toEqual([413, 413]);
          expect(a.seen).toHaveLength(0);
        } else {
          expect([r1.status, r2.status]).toEqual([200, 200]);
          expect(a.seen.map((s) => s.raw!.equals(body))).toEqual([true, true]);
        }
        for (const l of logs) expect(l.significance).toContain('BUFFER_SIZE_EXCEEDED');
      });
    }

    for (const failAction of ['fail-closed', 'fail-open'] as const) {
      it(`ICAP server down: ${failAction === 'fail-closed' ? '503' : 'the body passes'}`, async () => {
        const a = await start({ failAction, poolGroup: `icap://127.0.0.1:${await refusingPort()}` });
        const body = text(5000);
        const r = await send(a.url, '/raw', {
          body,
          headers: { 'content-type': 'application/octet-stream' },
        });
        expect(r.status).toBe(failAction === 'fail-closed' ? 503 : 200);
        expect(a.seen.length).toBe(failAction === 'fail-closed' ? 0 : 1);
        if (failAction === 'fail-open') expect(a.seen[0]!.raw!.equals(body)).toBe(true);
        expect(logs[0]).toMatchObject({
          action: 'ICAP_FAILED',
          significant: true,
          error_code: 'ICAP_ERR_CONNECT',
        });
      });
    }

    it('requests without a body, and requests no rule matches, pass untouched (ICAP_DISABLED)', async () => {
      const a = await start({
        rules: [{ name: 'uploads-only', match: { path: '/multipart' }, action: 'enable-icap' }],
      });
      expect((await send(a.url, '/health')).status).toBe(200);
      const body = eicarBytes();
      expect(
        (await send(a.url, '/raw', { body, headers: { 'content-type': 'application/octet-stream' } })).status,
      ).toBe(200);
      expect(a.seen.map((s) => [s.route, s.icap?.action])).toEqual([
        ['health', 'ICAP_DISABLED'],
        ['raw', 'ICAP_DISABLED'],
      ]);
      expect(a.seen[1]!.raw!.equals(body)).toBe(true);
      expect(logs.map((l) => l.policy_reason)).toEqual(['no-rule-matched', 'no-rule-matched']);
    });

    it('Expect: 100-continue', async () => {
      const a = await start();
      const body = text(50_000);
      const ok = await send(a.url, '/raw', {
        body,
        expectContinue: true,
        headers: { 'content-type': 'application/octet-stream' },
      });
      expect(ok.status).toBe(200);
      expect(a.seen[0]!.raw!.equals(body)).toBe(true);
      const blocked = await send(a.url, '/raw', {
        body: eicarBytes(),
        expectContinue: true,
        headers: { 'content-type': 'application/octet-stream' },
      });
      expect(blocked.status).toBe(403);
    });

    it('a client that aborts mid-upload: nothing reaches the handler, nothing is logged as passed, no ICAP transaction is left', async () => {
      const a = await start();
      await abortMidUpload(a.url, '/raw', text(1_000_000), 300_000);
      const deadline = Date.now() + 5000;
      while (logs.length === 0 && Date.now() < deadline) await sleep(20);
      expect(a.seen).toHaveLength(0);
      expect(logs).toHaveLength(1);
      expect(logs[0]!.action).toBe('ICAP_FAILED');
      expect(logs[0]!.significance).toContain('CLIENT_ABORTED');
      // The service still works afterwards.
      expect(
        (
          await send(a.url, '/raw', {
            body: text(100),
            headers: { 'content-type': 'application/octet-stream' },
          })
        ).status,
      ).toBe(200);
    });

    if (
      framework === 'fastify' ||
      framework.startsWith('koa') ||
      framework === 'hono' ||
      framework === 'web' ||
      framework === 'nest-fastify'
    ) {
      it('HTTP/2: clean upload passes with its bytes, EICAR is blocked', async () => {
        const a = await start({}, { http2: true });
        const body = text(200_000, 5);
        const ok = await send(a.url, '/raw', {
          http2: true,
          body,
          headers: { 'content-type': 'application/octet-stream' },
        });
        expect(ok.status).toBe(200);
        expect(a.seen[0]!.raw!.equals(body)).toBe(true);
        const blocked = await send(a.url, '/raw', {
          http2: true,
          body: eicarBytes(),
          headers: { 'content-type': 'application/octet-stream' },
        });
        expect(blocked.status).toBe(403);
        const json = await send(a.url, '/json', {
          http2: true,
          body: '{"a":[1,2]}',
          headers: { 'content-type': 'application/json' },
        });
        expect(json.status).toBe(200);
        expect(a.seen.at(-1)!.parsed).toEqual({ a: [1, 2] });
      });
    }

    const modify = backend.modify;
    if (modify !== undefined) {
      it('a modified request from the ICAP server: the handler and its parser see the new body, headers and Content-Length', async () => {
        const a = await start({ serviceUri: modify.serviceUri });
        const original = JSON.stringify({ note: `before ${modify.from} after`, n: 1 });
        const r = await send(a.url, '/json', {
          body: original,
          headers: { 'content-type': 'application/json' },
        });
        expect(r.status).toBe(200);
        const s = a.seen[0]!;
        expect(s.parsed).toEqual({ note: `before ${modify.to} after`, n: 1 });
        expect(Number(s.headers['content-length'])).toBe(
          Buffer.byteLength(original.replace(modify.from, modify.to)),
        );
        expect(s.icap?.action).toBe('ICAP_MODIFIED');
        expect(logs[0]!.request_logs[0]!.modified_content_length).toBe(
          Buffer.byteLength(original.replace(modify.from, modify.to)),
        );
      });
    }

    const faults = backend.faults;
    if (faults !== undefined) {
      for (const kind of ['hang', 'reset', 'status-500'] as const) {
        for (const failAction of ['fail-closed', 'fail-open'] as const) {
          it(`ICAP server ${kind}: ${failAction === 'fail-closed' ? '503' : 'pass'}`, async () => {
            const f = await faults.profile(kind);
            try {
              const a = await start({
                failAction,
                poolGroup: f.poolGroup,
                serviceUri: f.serviceUri,
                responseTimeout: 500,
              });
              const body = text(3000);
              const r = await send(a.url, '/raw', {
                body,
                headers: { 'content-type': 'application/octet-stream' },
              });
              expect(r.status).toBe(failAction === 'fail-closed' ? 503 : 200);
              if (failAction === 'fail-open') expect(a.seen[0]!.raw!.equals(body)).toBe(true);
              expect(logs[0]!.action).toBe('ICAP_FAILED');
            } finally {
              await f.done();
            }
          });
        }
      }
    }
  });
}

export const EICAR = { threat: EICAR_THREAT };
