/**
 * Decoded size is never a fail-open trigger: with `bufferSizeExceedAction: 'fail-open'`, a
 * small compressed body that decodes past bufferSize is answered 413 (the body parsers
 * downstream decompress it too, so passing it unscanned would let a 2 KiB upload switch
 * fail-open on). Only the wire size may fail open: a plain body over bufferSize still passes
 * untouched, as the profile asks. Express 5, Fastify and Koa 3, in both failure actions, with a
 * declared length and chunked.
 */
import { gzipSync } from 'node:zlib';
import type { IcapLog, IcapProfile } from '@icapkit/core';
import { eicar, type IcapTestServer, startIcapServer } from '@icapkit/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type App, type Framework, startApp } from '../conformance/apps.js';
import { send } from '../support/http-client.js';

const FRAMEWORKS: Framework[] = ['express5', 'fastify', 'koa3'];
const BUFFER_SIZE = 64 * 1024;

describe('a body that decodes past bufferSize is 413, whatever bufferSizeExceedAction says', () => {
  let server: IcapTestServer;
  const apps = new Map<string, App>();
  const logs: IcapLog[] = [];

  beforeAll(async () => {
    server = await startIcapServer({ recordBodies: false });
    for (const framework of FRAMEWORKS) {
      for (const failAction of ['fail-open', 'fail-closed'] as const) {
        const profile: IcapProfile = {
          name: `decoded-${framework}-${failAction}`,
          poolGroup: server.url(),
          serviceUri: '/avscan',
          failAction,
          bufferSizeExceedAction: 'fail-open',
          bufferSize: BUFFER_SIZE,
          onLog: (l) => logs.push(l),
        };
        apps.set(`${framework}/${failAction}`, await startApp(framework, profile));
      }
    }
  });

  afterAll(async () => {
    await Promise.all([...apps.values()].map((a) => a.close()));
    await server?.close();
  });

  // EICAR after 256 KiB of zeros: beyond bufferSize once decoded, about 300 bytes on the wire.
  const bomb = gzipSync(Buffer.concat([Buffer.alloc(256 * 1024), eicar()]));

  for (const framework of FRAMEWORKS) {
    for (const failAction of ['fail-open', 'fail-closed'] as const) {
      for (const chunked of [false, true]) {
        it(`${framework}, failAction ${failAction}, ${chunked ? 'chunked' : 'with a length'}: 413, the handler is not called`, async () => {
          expect(bomb.length).toBeLessThan(2048);
          const app = apps.get(`${framework}/${failAction}`)!;
          const before = logs.length;
          const r = await send(app.url, '/raw', {
            body: bomb,
            headers: { 'content-type': 'application/octet-stream', 'content-encoding': 'gzip' },
            ...(chunked ? { chunked: 256 } : {}),
            timeoutMs: 10_000,
          });
          expect(r.status).toBe(413);
          expect(app.seen).toHaveLength(0);
          const log = logs.slice(before).at(-1)!;
          expect(log.significance).toContain('BUFFER_SIZE_EXCEEDED');
          expect(log.significance).not.toContain('FAIL_OPEN');
          expect(log.fail_action).toBe('fail-closed');
          expect(log.error_code).toBe('ICAP_ERR_REQUEST_TOO_LARGE');
        });
      }
    }
    it(`${framework}: a plain body over bufferSize still passes unscanned (the wire size may fail open)`, async () => {
      const app = apps.get(`${framework}/fail-closed`)!;
      const before = logs.length;
      const body = Buffer.alloc(BUFFER_SIZE + 1024, 'a');
      const r = await send(app.url, '/raw', {
        body,
        headers: { 'content-type': 'application/octet-stream' },
        timeoutMs: 10_000,
      });
      expect(r.status).toBe(200);
      expect(app.seen.at(-1)?.raw?.equals(body)).toBe(true);
      app.seen.length = 0;
      expect(logs.slice(before).at(-1)!.significance).toContain('FAIL_OPEN');
    });
  }
});
