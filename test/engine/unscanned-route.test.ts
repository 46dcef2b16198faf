/**
 * `ScanOptions.unscannedRoute`, for framework integrations that choose the scan's settings
 * before the framework routes (@icapkit/nestjs on Express): a request with a body that may
 * reach routes scanned with different settings is refused (403, ICAP_ERR_UNSCANNED_ROUTE)
 * whatever the rules decide, before its body is read; one without a body has nothing to scan
 * and goes by the rules (campaign-af AF2). The reason given is bounded and its control
 * characters escaped before it reaches the log and the refusal's message (AF4).
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createEngine, type IcapLog, refusalOf } from '@icapkit/core';
import { type IcapTestServer, startIcapServer } from '@icapkit/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { send } from '../support/http-client.js';

let icap: IcapTestServer;
beforeAll(async () => {
  icap = await startIcapServer({ recordBodies: false });
});
afterAll(() => icap?.close());

async function withServer(
  reason: string,
  fn: (url: string, logs: IcapLog[], said: string[]) => Promise<void>,
) {
  const logs: IcapLog[] = [];
  const said: string[] = [];
  const engine = createEngine({
    name: 'routes',
    poolGroup: icap.url(),
    serviceUri: '/avscan',
    onLog: (l) => logs.push(l),
  });
  const server: Server = createServer(async (req, res) => {
    const o = await engine.scan(req, { unscannedRoute: reason });
    if (o.kind === 'respond') {
      said.push(refusalOf(o).message);
      res.writeHead(o.status, o.headers.flat());
      res.end(o.body);
    } else {
      req.resume();
      res.end(`passed ${o.action}`);
    }
    o.dispose();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  try {
    await fn(`http://127.0.0.1:${(server.address() as AddressInfo).port}`, logs, said);
  } finally {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await engine.close();
  }
}

describe('unscannedRoute', () => {
  it('refuses a request with a body (403) before reading it, whatever the rules; one without a body goes by the rules', async () => {
    await withServer('two routes differ', async (url, logs) => {
      const before = icap.requests.length;
      const posted = await send(url, '/x', { body: 'hello', headers: { 'content-type': 'text/plain' } });
      expect(posted.status).toBe(403);
      expect(logs.at(-1)).toMatchObject({ action: 'ICAP_BLOCKED', error_code: 'ICAP_ERR_UNSCANNED_ROUTE' });
      for (const method of ['GET', 'HEAD', 'DELETE']) {
        const r = await send(url, '/x', { method });
        expect([method, r.status]).toEqual([method, 200]);
      }
      const empty = await send(url, '/x', {
        method: 'POST',
        body: '',
        headers: { 'content-type': 'text/plain' },
      });
      expect(empty.status).toBe(200);
      expect(icap.requests.length - before).toBe(0);
    });
  });

  it('keeps at most 300 characters of the reason, control characters escaped; an empty one gets a sentence', async () => {
    await withServer(`\x1b[31m${'x'.repeat(5000)}\r\nInjected: yes`, async (url, logs, said) => {
      expect((await send(url, '/x', { body: 'hello' })).status).toBe(403);
      const message = logs.at(-1)!.error_message!;
      expect(message.length).toBeLessThanOrEqual(300);
      expect(message).not.toMatch(/[\x00-\x1f\x7f]/);
      expect(message.startsWith('\\x1b[31m')).toBe(true);
      expect(said[0]).not.toMatch(/[\x00-\x1f\x7f]/);
    });
    // Line separators and bidirectional overrides would reorder or break what a terminal shows.
    await withServer('a\u2028b\u202ec\u2066d', async (url, logs, said) => {
      expect((await send(url, '/x', { body: 'hello' })).status).toBe(403);
      expect(logs.at(-1)!.error_message).toBe('a\\u2028b\\u202ec\\u2066d');
      expect(said.join('\n')).not.toMatch(/[\u2028\u202e\u2066]/);
    });
    await withServer('  ', async (url, logs) => {
      expect((await send(url, '/x', { body: 'hello' })).status).toBe(403);
      expect(logs.at(-1)!.error_message).toBe(
        'this request may reach routes scanned with different settings',
      );
    });
  });
});
