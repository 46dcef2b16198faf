/**
 * A "repair" must repair: an answer that names threats and says every one was repaired (a 200
 * returning the request, `X-Infection-Found ... Resolution=1`, violations REPAIRED) is read as an
 * adaptation, and the engine delivers what the server returned. When that returned body is byte
 * for byte the infected upload, nothing was repaired: the threats it names stand, and the request
 * is blocked (403, ICAP_BLOCKED), in both failure actions, under every vendor setting, whether or
 * not the returned head changed, for a whole body and for a file of a form. A real repair (the
 * body changed) is still delivered, rewritten. Found by an attack campaign: the unchanged
 * "repair" reached the handler (200, ICAP_PASSED with a threat_id, or ICAP_MODIFIED).
 */
import { VENDORS } from '@icapkit/core';
import { eicar } from '@icapkit/testing';
import { afterEach, describe, expect, it } from 'vitest';
import type { Framework } from '../conformance/apps.js';
import { multipart, send } from '../support/http-client.js';
import { scriptedApp } from '../support/scripted-app.js';
import { chunked, type Req } from '../support/scripted-icap.js';

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const EICAR = eicar();
const FRAMEWORKS: Framework[] = ['express5', 'fastify', 'koa3', 'hono'];

/**
 * A 200 returning the request with `body` (its head as sent, or with a field added; its
 * Content-Length the body's, as a whole answer declares it), and `fields`.
 */
function returned(r: Req, fields: string, body: Buffer, newHead = false): string {
  let reqHdr = r.encap.toString('latin1').replace(/content-length: \d+/i, `Content-Length: ${body.length}`);
  if (newHead) reqHdr = reqHdr.replace(/\r\n\r\n$/, '\r\nX-Disinfected: yes\r\n\r\n');
  return (
    `ICAP/1.0 200 OK\r\nISTag: "x1"\r\n${fields}Encapsulated: req-hdr=0, req-body=${reqHdr.length}\r\n\r\n${reqHdr}` +
    `${chunked(body)}0\r\n\r\n`
  );
}

const REPAIRS: Record<string, string> = {
  'X-Infection-Found Resolution=1':
    'X-Infection-Found: Type=0; Resolution=1; Threat=Eicar-Test-Signature;\r\n',
  'a violation REPAIRED (Symantec)':
    'X-Infection-Found: Type=0; Resolution=1; Threat=EICAR Test String;\r\nX-Violations-Found: 1\r\n\tupload.bin\r\n\tEICAR Test String\r\n\t0\r\n\t1\r\n',
  'Resolution=1 with X-Response-Info: Allowed':
    'X-Infection-Found: Type=0; Resolution=1; Threat=Eicar;\r\nX-Response-Info: Allowed\r\n',
};

async function appOn(framework: Framework, fields: string, opts: Record<string, unknown>, answer = 'same') {
  const { app, logs } = await scriptedApp(
    framework,
    (r) =>
      r.sock.write(
        answer === 'repaired'
          ? returned(r, fields, Buffer.from('disinfected'))
          : returned(r, fields, r.body, answer === 'new-head'),
      ),
    { responseTimeout: 3000, ...opts },
    cleanups,
  );
  return { app, logs };
}

const post = (url: string) =>
  send(url, '/raw', { method: 'POST', headers: { 'content-type': 'application/octet-stream' }, body: EICAR });

describe.each(FRAMEWORKS)('%s', (framework) => {
  for (const failAction of ['fail-open', 'fail-closed'] as const) {
    for (const [what, fields] of Object.entries(REPAIRS)) {
      for (const answer of ['same', 'new-head'] as const) {
        it(`${what}, the infected body returned unchanged${answer === 'new-head' ? ' under a changed head' : ''}: 403 (${failAction})`, async () => {
          const { app, logs } = await appOn(framework, fields, { failAction }, answer);
          const res = await post(app.url);
          expect(res.status).toBe(403);
          expect(app.seen).toHaveLength(0);
          expect(logs[0]?.action).toBe('ICAP_BLOCKED');
          expect(logs[0]?.request_logs.at(-1)?.threat_id).toBeDefined();
        });
      }
    }
  }

  it('a real repair (the body changed) is delivered rewritten', async () => {
    const { app, logs } = await appOn(framework, REPAIRS['X-Infection-Found Resolution=1']!, {}, 'repaired');
    const res = await post(app.url);
    expect(res.status).toBe(200);
    expect(app.seen.map((s) => s.raw?.toString())).toEqual(['disinfected']);
    expect(logs[0]?.action).toBe('ICAP_MODIFIED');
  });
});

describe('every vendor setting (Express 5)', () => {
  it.each(VENDORS)('%s: an unchanged repair is a block', async (vendor) => {
    const { app, logs } = await appOn('express5', REPAIRS['X-Infection-Found Resolution=1']!, {
      failAction: 'fail-open',
      vendor,
    });
    expect((await post(app.url)).status).toBe(403);
    expect(app.seen).toHaveLength(0);
    expect(logs[0]?.action).toBe('ICAP_BLOCKED');
  });
});

describe('multipart, per-file', () => {
  it('a file of a form "repaired" unchanged: 403, the form never reaches the handler', async () => {
    const { app, logs } = await appOn('express5', REPAIRS['X-Infection-Found Resolution=1']!, {
      failAction: 'fail-closed',
    });
    const form = multipart([
      { name: 'note', data: 'hi' },
      { name: 'file', filename: 'eicar.com', data: EICAR },
    ]);
    const res = await send(app.url, '/multipart', {
      method: 'POST',
      headers: { 'content-type': form.contentType },
      body: form.body,
    });
    expect(res.status).toBe(403);
    expect(app.seen).toHaveLength(0);
    expect(logs[0]?.action).toBe('ICAP_BLOCKED');
  });
});
