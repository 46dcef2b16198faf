/**
 * Checks the interop harness itself against a real c-icap + ClamAV: the server starts, its
 * services answer, Debian's c-icap-client (an independent reference client) gets the
 * expected verdicts, ICAPS works, and the TCP counter proxies and counts connections.
 * If these fail, the icapkit interop tests built on the harness cannot be trusted.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { connect as netConnect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import { afterAll, beforeAll, expect, it, type TestContext } from 'vitest';
import { type CIcapServer, describeWithCIcap, startCIcap } from '../support/c-icap.js';
import { runCIcapClient } from '../support/c-icap-client.js';
import { EICAR_THREAT, eicarBytes } from '../support/eicar.js';
import { startTcpCounter } from '../support/tcp-counter.js';

interface Head {
  statusLine: string;
  status: number;
  headers: Map<string, string>;
}

/** Reads one ICAP response head (status line + headers, no body) from a socket, bounded in time. */
function readHead(socket: Socket, timeoutMs = 5_000): Promise<Head> {
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    const cleanup = () => {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('error', onError);
      socket.off('end', onEnd);
    };
    const timer = setTimeout(() => {
      cleanup();
      reject(
        new Error(`no complete ICAP head within ${timeoutMs} ms; got ${JSON.stringify(buf.toString())}`),
      );
    }, timeoutMs);
    const onError = (err: Error) => {
      cleanup();
      reject(err);
    };
    const onEnd = () => {
      cleanup();
      reject(new Error(`connection closed before a complete head: ${JSON.stringify(buf.toString())}`));
    };
    const onData = (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      cleanup();
      const [statusLine = '', ...lines] = buf.subarray(0, end).toString('latin1').split('\r\n');
      const headers = new Map<string, string>();
      let last = '';
      for (const line of lines) {
        if (/^[ \t]/.test(line) && last) {
          headers.set(last, `${headers.get(last)} ${line.trim()}`);
          continue;
        }
        const colon = line.indexOf(':');
        last = line.slice(0, colon).trim().toLowerCase();
        headers.set(last, line.slice(colon + 1).trim());
      }
      resolve({ statusLine, status: Number(statusLine.split(' ')[1]), headers });
    };
    socket.on('data', onData);
    socket.once('error', onError);
    socket.once('end', onEnd);
  });
}

function optionsRequest(server: CIcapServer, service: string): string {
  return (
    `OPTIONS icap://${server.host}:${server.port}/${service} ICAP/1.0\r\n` +
    `Host: ${server.host}:${server.port}\r\n` +
    'Encapsulated: null-body=0\r\n\r\n'
  );
}

function connectPlain(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = netConnect(port, '127.0.0.1');
    s.once('connect', () => resolve(s));
    s.once('error', reject);
  });
}

describeWithCIcap('interop harness: c-icap + ClamAV + c-icap-client', () => {
  let server: CIcapServer;
  let dir: string;
  let cleanFile: string;
  let eicarFile: string;

  beforeAll(async () => {
    server = await startCIcap();
    dir = await mkdtemp(join(tmpdir(), 'icapkit-harness-'));
    cleanFile = join(dir, 'clean.txt');
    eicarFile = join(dir, 'eicar.com');
    await writeFile(cleanFile, 'icapkit interop harness: a small clean text file.\n'.repeat(4));
    await writeFile(eicarFile, eicarBytes());
  });

  afterAll(async () => {
    await server?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const logsOnFailure = (ctx: TestContext) =>
    ctx.onTestFailed(async () => {
      console.error(await server.logs());
    });

  it('answers OPTIONS on avscan over a raw socket', async (ctx) => {
    logsOnFailure(ctx);
    const socket = await connectPlain(server.port);
    try {
      socket.write(optionsRequest(server, 'avscan'));
      const head = await readHead(socket);
      expect(head.status).toBe(200);
      expect(head.headers.get('methods')).toMatch(/REQMOD/);
      expect(head.headers.get('istag')).toMatch(/^"[^"]+"$/);
      expect(head.headers.get('allow')).toBe('204');
      expect(head.headers.get('encapsulated')).toBe('null-body=0');
      expect(Number(head.headers.get('preview'))).toBeGreaterThan(0);
    } finally {
      socket.destroy();
    }
  });

  it('answers OPTIONS on echo over ICAPS, verifying the certificate against caFile', async (ctx) => {
    logsOnFailure(ctx);
    const ca = await readFile(server.caFile);
    const socket = await new Promise<Socket>((resolve, reject) => {
      const s = tlsConnect({ host: server.host, port: server.tlsPort, ca, servername: 'localhost' });
      s.once('secureConnect', () => resolve(s));
      s.once('error', reject);
    });
    try {
      socket.write(optionsRequest(server, 'echo'));
      const head = await readHead(socket);
      expect(head.status).toBe(200);
      expect(head.headers.get('service')).toMatch(/Echo/);
    } finally {
      socket.destroy();
    }
  });

  it('c-icap-client: a small text file is clean (204)', async (ctx) => {
    logsOnFailure(ctx);
    const r = await runCIcapClient({ ...target(), service: 'avscan', file: cleanFile, reqmod: true });
    expect(r.verdict, r.stderr).toBe('clean');
    expect(r.status).toBe(204);
    expect(r.threat).toBeNull();
  });

  it('c-icap-client: EICAR is blocked by ClamAV with the expected threat name', async (ctx) => {
    logsOnFailure(ctx);
    const r = await runCIcapClient({ ...target(), service: 'avscan', file: eicarFile, reqmod: true });
    expect(r.verdict, r.stderr).toBe('blocked');
    expect(r.status).toBe(200);
    expect(r.threat).toBe(EICAR_THREAT);
    expect(r.httpStatus).toBe(403);
    expect(r.icapHeaders['x-violations-found']).toContain(EICAR_THREAT);
    expect(r.stdout).toContain('VIRUS FOUND');
  });

  it('c-icap-client: EICAR is blocked in RESPMOD and without preview too', async (ctx) => {
    logsOnFailure(ctx);
    const resp = await runCIcapClient({ ...target(), service: 'avscan', file: eicarFile });
    expect(resp.verdict, resp.stderr).toBe('blocked');
    expect(resp.threat).toBe(EICAR_THREAT);
    const noPreview = await runCIcapClient({
      ...target(),
      service: 'avscan',
      file: eicarFile,
      reqmod: true,
      noPreview: true,
    });
    expect(noPreview.verdict, noPreview.stderr).toBe('blocked');
  });

  it('c-icap-client: echo returns the request (modified path) with the same body', async (ctx) => {
    logsOnFailure(ctx);
    const r = await runCIcapClient({ ...target(), service: 'echo', file: cleanFile, reqmod: true });
    expect(r.verdict, r.stderr).toBe('modified');
    expect(r.status).toBe(200);
    expect(r.icapHeaders.encapsulated).toMatch(/^req-hdr=0, req-body=\d+$/);
    expect(r.httpStatusLine).toMatch(/^GET http:\/\/localhost\/icapkit-upload HTTP\/1\.[01]$/);
    expect(r.bodyEqualsInput).toBe(true);
  });

  it('c-icap-client: avscan_no204 returns a clean request in full (200) and still blocks EICAR', async (ctx) => {
    logsOnFailure(ctx);
    const clean = await runCIcapClient({
      ...target(),
      service: 'avscan_no204',
      file: cleanFile,
      reqmod: true,
      no204: true,
    });
    expect(clean.verdict, clean.stderr).toBe('modified');
    expect(clean.status).toBe(200);
    expect(clean.bodyEqualsInput).toBe(true);
    const eicar = await runCIcapClient({
      ...target(),
      service: 'avscan_no204',
      file: eicarFile,
      reqmod: true,
    });
    expect(eicar.verdict, eicar.stderr).toBe('blocked');
  });

  it('c-icap-client: an unknown service is an error', async (ctx) => {
    logsOnFailure(ctx);
    const r = await runCIcapClient({
      ...target(),
      service: 'no-such-service',
      file: cleanFile,
      reqmod: true,
    });
    expect(r.verdict).toBe('error');
  });

  it('c-icap-client over ICAPS: verified with caFile, and with -tls-no-verify', async (ctx) => {
    logsOnFailure(ctx);
    const tlsTarget = { host: server.host, port: server.tlsPort, tls: true };
    const verified = await runCIcapClient({
      ...tlsTarget,
      caFile: server.caFile,
      service: 'avscan',
      file: eicarFile,
      reqmod: true,
    });
    expect(verified.verdict, verified.stderr).toBe('blocked');
    expect(verified.threat).toBe(EICAR_THREAT);
    const unverified = await runCIcapClient({
      ...tlsTarget,
      service: 'avscan',
      file: cleanFile,
      reqmod: true,
    });
    expect(unverified.verdict, unverified.stderr).toBe('clean');
    // Without the CA and without -tls-no-verify the self-signed chain must be rejected.
    const rejected = await new Promise<number | null>((resolve) => {
      execFile(
        'c-icap-client',
        ['-i', server.host, '-p', String(server.tlsPort), '-tls', '-s', 'avscan'],
        { timeout: 15_000, env: { ...process.env, SSL_CERT_FILE: '/nonexistent' } },
        (err) => resolve(err === null ? 0 : typeof err.code === 'number' ? err.code : null),
      );
    });
    expect(rejected).not.toBe(0);
  });

  it('tcp-counter forwards to c-icap and counts one kept-alive connection for three requests', async (ctx) => {
    logsOnFailure(ctx);
    const counter = await startTcpCounter(server.host, server.port);
    try {
      const socket = await connectPlain(counter.port);
      try {
        for (let i = 0; i < 3; i++) {
          socket.write(optionsRequest(server, 'avscan'));
          expect((await readHead(socket)).status).toBe(200);
        }
        expect(counter.accepted()).toBe(1);
        expect(counter.open()).toBe(1);
      } finally {
        socket.destroy();
      }
      await waitFor(() => counter.open() === 0, 3_000);
      // A second client is a second connection.
      const second = await connectPlain(counter.port);
      second.write(optionsRequest(server, 'echo'));
      expect((await readHead(second)).status).toBe(200);
      second.destroy();
      expect(counter.accepted()).toBe(2);
    } finally {
      await counter.close();
    }
  });

  function target(): { host: string; port: number } {
    return { host: server.host, port: server.port };
  }
});

async function waitFor(cond: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
