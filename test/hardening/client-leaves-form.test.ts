/**
 * Per-file multipart: a client that sends its whole form and goes away while the ICAP server
 * still scans a part (held in a temp file) stops the part scans. Before, the scans went on once
 * the form was parsed, their pass came after the response had closed, nothing disposed it, and
 * every such request left the part's temp file and an open fd behind for good (and the handler
 * ran for a client that was gone). Found by an attack campaign. Control: the same request with
 * the client waiting gets its 200 and leaves nothing either.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { IcapLog } from '@icapkit/core';
import { type IcapTestServer, startIcapServer } from '@icapkit/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Framework, startApp } from '../conformance/apps.js';
import { leftoverSpoolFiles } from '../support/leaks.js';
import { rawExchange } from '../support/raw-http.js';

let icap: IcapTestServer;
beforeAll(async () => {
  icap = await startIcapServer();
  // Every REQMOD answered after 400 ms: the client leaves 150 ms after its form, mid-scan.
  icap.setScript((r) => (r.method === 'OPTIONS' ? undefined : { kind: 'delay', ms: 400 }));
});
afterAll(() => icap?.close());

const FILE = 'a'.repeat(20_000);
const FORM = `--b\r\nContent-Disposition: form-data; name="f"; filename="a.bin"\r\nContent-Type: application/octet-stream\r\n\r\n${FILE}\r\n--b--\r\n`;
const HEAD = `POST /multipart HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: ${FORM.length}\r\n\r\n`;

const FRAMEWORKS: Framework[] = ['express5', 'fastify', 'koa3', 'hono', 'nest-express'];

describe.each(FRAMEWORKS)('%s', (framework) => {
  for (const leaves of [true, false]) {
    it(`a spooled part, the client ${leaves ? 'goes away' : 'waits'} while it is scanned: no temp file or fd left`, async () => {
      const spoolDir = await mkdtemp(join(tmpdir(), 'icapkit-leaves-'));
      const logs: IcapLog[] = [];
      const app = await startApp(framework, {
        name: 'leaves',
        poolGroup: icap.url(),
        serviceUri: '/avscan',
        memoryThreshold: 1024,
        spoolDir,
        onLog: (l) => logs.push(l),
      } as never);
      try {
        const r = await rawExchange(
          app.url,
          [HEAD, FORM, { pause: 150 }],
          leaves ? { finally: 'destroy' } : { responses: 1, waitMs: 5000 },
        );
        if (!leaves) expect(r.responses[0]?.status).toBe(200);
        expect(await leftoverSpoolFiles(spoolDir, { withinMs: 5000 })).toEqual([]);
        if (leaves) expect(app.seen).toHaveLength(0);
        else expect(app.seen).toHaveLength(1);
      } finally {
        await app.close();
        await rm(spoolDir, { recursive: true, force: true });
      }
    }, 20_000);
  }
});
