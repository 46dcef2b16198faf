import { connect, type Socket } from 'node:net';
import { IcapClient, type IcapResponse, isSkipped } from '@icapkit/core';
import { afterEach, describe, expect, it } from 'vitest';
import {
  eicar,
  generateTestCertificate,
  type IcapServerOptions,
  type IcapTestServer,
  startIcapServer,
} from '../src/index.js';

let server: IcapTestServer | undefined;
let client: IcapClient | undefined;

afterEach(async () => {
  client?.destroy();
  await server?.close();
  client = undefined;
  server = undefined;
});

async function start(options: IcapServerOptions = {}) {
  server = await startIcapServer(options);
  client = new IcapClient({ url: server.url() });
  return { server, client };
}

async function reqmod(
  c: IcapClient,
  service: string,
  body: Buffer | null,
  extra: { preview?: number | false; allow204?: boolean } = {},
) {
  const r = await c.request({
    method: 'REQMOD',
    service,
    httpRequest: {
      method: 'POST',
      target: 'http://app/upload/report.txt',
      headers: {
        host: 'app',
        'content-type': 'text/plain',
        'content-disposition': 'attachment; filename="report.txt"',
      },
    },
    body,
    preview: extra.preview,
    allow204: extra.allow204,
  });
  if (isSkipped(r)) throw new Error('skipped');
  const chunks: Buffer[] = [];
  if (r.body !== null) for await (const c2 of r.body as AsyncIterable<Buffer>) chunks.push(c2);
  await r.done;
  return { r, body: Buffer.concat(chunks) };
}

/** Writes raw bytes and collects what the server sends until it is quiet or closes. */
function exchange(
  port: number,
  bytes: Buffer | string,
  quietMs = 150,
): Promise<{ data: string; closed: boolean }> {
  return new Promise((resolve) => {
    const s: Socket = connect(port, '127.0.0.1');
    let data = '';
    let closed = false;
    let timer: NodeJS.Timeout;
    const done = () => {
      clearTimeout(timer);
      s.destroy();
      resolve({ data, closed });
    };
    const arm = () => {
      clearTimeout(timer);
      timer = setTimeout(done, quietMs);
    };
    s.on('data', (d) => {
      data += d.toString('latin1');
      arm();
    });
    s.on('error', () => {});
    s.on('close', () => {
      closed = true;
      done();
    });
    s.write(bytes);
    arm();
  });
}

const text = (n: number) => Buffer.alloc(n, 0x61);

describe('embedded ICAP server', () => {
  it('answers OPTIONS like a real service', async () => {
    const { client: c } = await start({ preview: 2048, maxConnections: 7, optionsTtl: 60 });
    const o = await c.options('/avscan');
    expect(o).toMatchObject({
      methods: ['REQMOD', 'RESPMOD'],
      preview: 2048,
      allow204: true,
      maxConnections: 7,
      optionsTtl: 60,
    });
    expect(o.istag).toBe('ICAPKIT-TEST-0001');
    expect(o.transferPreview).toEqual(['*']);
  });

  it('clean: 204 in and after the preview; 200 echo without Allow: 204', async () => {
    const { client: c, server: s } = await start();
    expect((await reqmod(c, '/avscan', text(100))).r.status).toBe(204);
    expect((await reqmod(c, '/avscan', text(5000))).r.status).toBe(204);
    const echo = await reqmod(c, '/avscan', text(5000), { allow204: false });
    expect(echo.r.status).toBe(200);
    expect(echo.body.equals(text(5000))).toBe(true);
    expect(
      s.requests.filter((r) => r.method === 'REQMOD').map((r) => [r.preview, r.ieof, r.continued]),
    ).toEqual([
      [100, true, false],
      [1024, false, true],
      [1024, false, true],
    ]);
  });

  it('EICAR inside the preview: an early block, without asking for the rest', async () => {
    const { client: c, server: s } = await start();
    const body = Buffer.concat([eicar(), text(50_000)]);
    const { r, body: page } = await reqmod(c, '/avscan', body);
    expect(r.status).toBe(200);
    expect(r.headers.get('x-infection-found')).toBe('Type=0; Resolution=2; Threat=Eicar-Test-Signature;');
    expect(r.headers.lines('x-violations-found')).toEqual([
      '1',
      'report.txt',
      'Eicar-Test-Signature',
      '0',
      '0',
    ]);
    expect(r.httpResponse?.status).toBe(403);
    expect(page.toString()).toContain('VIRUS FOUND');
    expect(s.requests[0]!.continued).toBe(false);
    expect(r.answeredInPreview).toBe(true);
  });

  it('EICAR split across chunks after the preview is found', async () => {
    const { client: c } = await start();
    const e = eicar();
    async function* parts() {
      yield text(3000);
      yield e.subarray(0, 30);
      yield e.subarray(30);
      yield text(10);
    }
    const r = await c.request({
      method: 'REQMOD',
      service: '/avscan',
      httpRequest: { method: 'POST', target: '/u', headers: { host: 'a' } },
      body: parts(),
    });
    if (isSkipped(r)) throw new Error('skipped');
    r.body?.resume();
    await r.done;
    expect(r.headers.get('x-infection-found')).toContain('Threat=Eicar-Test-Signature;');
  });

  it('words blocks like OPSWAT and NSX Defender', async () => {
    const { client: c } = await start({ vendor: 'opswat' });
    const o = (await reqmod(c, '/avscan', eicar())).r;
    expect(o.headers.get('x-response-info')).toBe('Blocked');
    expect(o.headers.get('x-blocked-reason')).toBe('Infected');
    expect(o.headers.get('x-virus-id')).toBe('Eicar-Test-Signature');
    expect((await reqmod(c, '/avscan', text(10))).r.headers.get('x-response-info')).toBe('Allowed');
    client?.destroy();
    await server?.close();
    const n = await start({ vendor: 'nsx-defender' });
    const x = (await reqmod(n.client, '/avscan', eicar())).r;
    expect(x.headers.get('x-infection-found')).toMatch(
      /^Type=0;Resolution=1;Threat=LastlineArtifact\(score=100;md5=44d88612fea8a8f36de82e1278abb02f;uuid=[0-9a-f]{32}\)$/,
    );
    expect(x.httpResponse?.headers.get('x-lastline-score')).toBe('100');
  });

  it('echo streams a 5 MiB body back while it arrives', async () => {
    const { client: c } = await start();
    const body = Buffer.alloc(5 * 1024 * 1024);
    for (let i = 0; i < body.length; i++) body[i] = i % 251;
    const { r, body: back } = await reqmod(c, '/echo', body, { preview: false });
    expect(r.status).toBe(200);
    expect(r.httpRequest?.headers.get('via')).toBe('1.0 icapkit-testing');
    expect(back.equals(body)).toBe(true);
  });

  it('modify rewrites the body and recomputes Content-Length', async () => {
    const { client: c } = await start({ rewrite: { from: 'secret', to: 'REDACTED-VALUE' } });
    const { r, body } = await reqmod(c, '/modify', Buffer.from('a secret and another secret'));
    expect(r.status).toBe(200);
    expect(body.toString()).toBe('a REDACTED-VALUE and another REDACTED-VALUE');
    expect(r.httpRequest?.headers.get('content-length')).toBe(String(body.length));
    expect((await reqmod(c, '/modify', Buffer.from('nothing to change'))).r.status).toBe(204);
  });

  it('answers RESPMOD, 404 for an unknown service, and keeps connections alive after clean answers', async () => {
    const { client: c, server: s } = await start();
    const r = await c.request({
      method: 'RESPMOD',
      service: '/avscan',
      httpRequest: { method: 'GET', target: '/f' },
      httpResponse: { status: 200, reason: 'OK', headers: { 'content-type': 'text/plain' } },
      body: eicar(),
    });
    if (isSkipped(r)) throw new Error('skipped');
    r.body?.resume();
    await r.done;
    expect((r as IcapResponse).httpResponse?.status).toBe(403);
    await expect(c.options('/nope')).rejects.toMatchObject({ code: 'ICAP_ERR_SERVER_STATUS', status: 404 });
    for (let i = 0; i < 5; i++) await reqmod(c, '/avscan', text(10));
    // The client keeps a connection only after an answer that passes the message (not after the
    // block nor the 404: client/answer.ts keepsConnection); the five clean REQMODs share one.
    expect(s.connections.accepted).toBe(3);
  });

  it('closes after maxKeepAliveRequests with Connection: close', async () => {
    const { server: s } = await start({ maxKeepAliveRequests: 2 });
    const opt = `OPTIONS icap://127.0.0.1:${s.port}/avscan ICAP/1.0\r\nHost: x\r\nEncapsulated: null-body=0\r\n\r\n`;
    const { data, closed } = await exchange(s.port, opt + opt + opt);
    expect(data.match(/ICAP\/1.0 200/g)).toHaveLength(2);
    expect(data).toContain('Connection: close');
    expect(closed).toBe(true);
  });

  it('records the exact bytes of each request', async () => {
    const { server: s } = await start();
    const req =
      `REQMOD icap://127.0.0.1:${s.port}/avscan ICAP/1.0\r\nHost: x\r\nAllow: 204\r\nEncapsulated: req-hdr=0, req-body=19\r\n\r\n` +
      'POST / HTTP/1.1\r\n\r\n5\r\nhello\r\n0\r\n\r\n';
    const { data } = await exchange(s.port, req);
    expect(data).toMatch(/^ICAP\/1.0 204/);
    const rec = s.requests[0]!;
    expect(rec.raw?.toString()).toBe(req);
    expect(rec.rawHead.toString()).toBe(req.slice(0, req.indexOf('5\r\nhello')));
    expect(rec.body?.toString()).toBe('hello');
  });

  it('answers an unparsable request with 400 and closes', async () => {
    const { server: s } = await start();
    const { data, closed } = await exchange(s.port, 'GARBAGE\r\n\r\n');
    expect(data).toMatch(/^ICAP\/1.0 400 Bad Request/);
    expect(closed).toBe(true);
  });

  it('serves ICAPS', async () => {
    const cert = await generateTestCertificate();
    try {
      server = await startIcapServer({ tls: { cert: cert.cert, key: cert.key } });
      client = new IcapClient({ url: server.url(), tls: { ca: cert.ca } });
      expect(server.url()).toMatch(/^icaps:\/\//);
      expect((await reqmod(client, '/avscan', eicar())).r.httpResponse?.status).toBe(403);
      const wrong = await generateTestCertificate({ names: ['DNS:elsewhere.test'] });
      const other = await startIcapServer({ tls: { cert: wrong.cert, key: wrong.key } });
      const c2 = new IcapClient({ url: other.url(), tls: { ca: wrong.ca } });
      await expect(reqmod(c2, '/avscan', text(1))).rejects.toMatchObject({ code: 'ICAP_ERR_TLS' });
      c2.destroy();
      await other.close();
      await wrong.cleanup();
    } finally {
      await cert.cleanup();
    }
  });

  it('close() leaves no open handle behind', async () => {
    const tcp = () =>
      process.getActiveResourcesInfo().filter((r) => r === 'TCPSocketWrap' || r === 'TCPServerWrap').length;
    const s = await startIcapServer({ script: () => ({ kind: 'hang' }) });
    const c = new IcapClient({ url: s.url(), timeout: 200 });
    await expect(reqmod(c, '/avscan', text(10))).rejects.toMatchObject({ code: 'ICAP_ERR_TIMEOUT' });
    c.destroy();
    await s.close();
    await new Promise((r) => setTimeout(r, 50));
    expect(tcp()).toBe(0);
  });
});
