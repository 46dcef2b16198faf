/**
 * The scan's bounds in time with its one timer (bodyDeadline while the body arrives,
 * responseTimeout from its end) and the attempt watch with and without somewhere else to go:
 * the same outcomes and log records as with a timer per bound and a signal per attempt.
 */
import { Readable } from 'node:stream';
import {
  createEngine,
  type IcapEngine,
  type IcapLog,
  type IcapProfile,
  type ScanRequest,
} from '@icapkit/core';
import { type IcapTestServer, startIcapServer } from '@icapkit/testing';
import { afterEach, describe, expect, it } from 'vitest';

const servers: IcapTestServer[] = [];
let engine: IcapEngine | undefined;
afterEach(async () => {
  await engine?.close();
  engine = undefined;
  for (const s of servers.splice(0)) await s.close();
});

async function server(hang = false): Promise<IcapTestServer> {
  const s = await startIcapServer({
    recordBodies: false,
    script: (r) => (hang && r.method === 'REQMOD' ? { kind: 'hang' } : undefined),
  });
  servers.push(s);
  return s;
}

function make(profile: Partial<IcapProfile>, urls: string[], logs: IcapLog[]): IcapEngine {
  engine = createEngine({
    name: 'timers',
    poolGroup: { name: 'g', pools: [{ name: 'p', servers: urls }] },
    serviceUri: '/avscan',
    onLog: (l) => logs.push(l),
    ...profile,
  } as IcapProfile);
  return engine;
}

/** A request whose body arrives in `chunks` pieces, `gap` ms apart (ended unless `endless`). */
function trickle(size: number, chunks: number, gap: number, endless = false): ScanRequest {
  const req = new Readable({ read() {} }) as ScanRequest & Readable;
  Object.assign(req, {
    method: 'POST',
    url: '/upload',
    httpVersion: '1.1',
    headers: {
      host: '127.0.0.1',
      'content-type': 'application/octet-stream',
      'content-length': String(size),
    },
    rawHeaders: [
      'Host',
      '127.0.0.1',
      'Content-Type',
      'application/octet-stream',
      'Content-Length',
      String(size),
    ],
    socket: { remoteAddress: '127.0.0.1' },
  });
  const piece = Math.ceil(size / chunks);
  let sent = 0;
  let n = 0;
  const next = () => {
    if (req.destroyed) return;
    if (endless || sent < size) {
      const len = endless ? 1 : Math.min(piece, size - sent);
      req.push(Buffer.alloc(len, 0x61));
      sent += len;
      n++;
      if (endless && n > 200) return; // bounded: the test ends long before
      setTimeout(next, gap).unref();
    } else req.push(null);
  };
  next();
  return req;
}

async function drain(body: Readable | null): Promise<number> {
  let n = 0;
  if (body !== null) for await (const c of body) n += (c as Buffer).length;
  return n;
}

describe('one timer per scan', () => {
  it('an upload slower than responseTimeout is not a slow scan: the response clock starts at its end', async () => {
    const s = await server();
    const logs: IcapLog[] = [];
    const e = make({ responseTimeout: 300, bodyDeadline: 5000, bodyTimeout: 2000 }, [s.url()], logs);
    const outcome = await e.scan(trickle(4000, 5, 180));
    expect(outcome.kind).toBe('pass');
    expect(outcome.action).toBe('ICAP_PASSED');
    expect(outcome.kind === 'pass' ? await drain(outcome.body) : -1).toBe(4000);
    outcome.dispose();
    expect(logs).toHaveLength(1);
    expect(logs[0]!.error_code).toBeUndefined();
    expect(logs[0]!.duration).toBeGreaterThanOrEqual(700);
  });

  it('a trickle past bodyDeadline is a 408 (BODY_TIMEOUT), however short responseTimeout is', async () => {
    const s = await server();
    const logs: IcapLog[] = [];
    const e = make({ responseTimeout: 200, bodyDeadline: 700, bodyTimeout: 2000 }, [s.url()], logs);
    const outcome = await e.scan(trickle(100_000, 0, 50, true));
    expect(outcome.kind).toBe('respond');
    expect(outcome.kind === 'respond' ? outcome.status : 0).toBe(408);
    outcome.dispose();
    expect(logs[0]!.error_code).toBe('ICAP_ERR_BODY_TIMEOUT');
    expect(logs[0]!.error_message).toContain('bodyDeadline (700 ms)');
    expect(logs[0]!.duration).toBeGreaterThanOrEqual(650);
    expect(logs[0]!.duration).toBeLessThan(5000);
  });

  it('a body here at once and a server that never answers: responseTimeout (fail-closed 503)', async () => {
    const s = await server(true);
    const logs: IcapLog[] = [];
    // ioTimeout (default: responseTimeout) longer, else the socket's idle timer, restarted by the
    // body's last write, can win the tie on a busy machine (ICAP_ERR_IO_TIMEOUT).
    const e = make(
      {
        responseTimeout: 400,
        bodyDeadline: 600_000,
        connection: { ioTimeout: 10_000 },
      } as Partial<IcapProfile>,
      [s.url()],
      logs,
    );
    const outcome = await e.scan(trickle(1000, 1, 0));
    expect(outcome.kind === 'respond' ? outcome.status : 0).toBe(503);
    outcome.dispose();
    expect(logs[0]!.error_code).toBe('ICAP_ERR_TIMEOUT');
    expect(logs[0]!.error_message).toContain('responseTimeout (400 ms)');
    expect(logs[0]!.duration).toBeGreaterThanOrEqual(380);
    expect(logs[0]!.duration).toBeLessThan(5000);
  });
});

describe('the attempt watch', () => {
  it('one server: a stalled answer is waited for up to responseTimeout (nowhere else to go), never ICAP_ERR_STALLED', async () => {
    const s = await server(true);
    const logs: IcapLog[] = [];
    const e = make(
      { responseTimeout: 900, connection: { stallTimeout: 150, ioTimeout: 10_000 } } as Partial<IcapProfile>,
      [s.url()],
      logs,
    );
    const outcome = await e.scan(trickle(1000, 1, 0));
    expect(outcome.kind === 'respond' ? outcome.status : 0).toBe(503);
    outcome.dispose();
    expect(logs[0]!.error_code).toBe('ICAP_ERR_TIMEOUT');
    expect(logs[0]!.request_logs).toHaveLength(1);
    expect(logs[0]!.request_logs[0]!.error_code).toBe('ICAP_ERR_TIMEOUT');
  });

  it('two servers: the stalled one is given up after stallTimeout and the other answers', async () => {
    const stalled = await server(true);
    const good = await server();
    const logs: IcapLog[] = [];
    const e = make(
      { responseTimeout: 5000, connection: { stallTimeout: 150 } } as Partial<IcapProfile>,
      [stalled.url(), good.url()],
      logs,
    );
    // Round-robin or least-loaded: make sure the stalled server is tried first at least once.
    let sawStall = false;
    for (let i = 0; i < 4 && !sawStall; i++) {
      const outcome = await e.scan(trickle(1000, 1, 0));
      expect(outcome.action).toBe('ICAP_PASSED');
      expect(outcome.kind === 'pass' ? await drain(outcome.body) : -1).toBe(1000);
      outcome.dispose();
      const log = logs.at(-1)!;
      if (log.request_logs.length === 2) {
        sawStall = true;
        expect(log.request_logs[0]!.error_code).toBe('ICAP_ERR_STALLED');
        expect(log.request_logs[1]!.action).toBe('ICAP_PASSED');
      }
    }
    expect(sawStall).toBe(true);
  });
});
