/**
 * `engine.addLogListener`: several consumers get every icap_log record besides the profile's
 * onLog (which keeps working), a listener that throws breaks neither the scan nor the others,
 * and unsubscribing stops the delivery. Against the embedded ICAP server, over real sockets.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createEngine, type IcapEngine, type IcapLog, type PinoLike } from '@icapkit/core';
import { EICAR_NAME, eicar, type IcapTestServer, startIcapServer } from '@icapkit/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { send } from '../support/http-client.js';

describe('engine.addLogListener', () => {
  let icapServer: IcapTestServer;
  let engine: IcapEngine;
  let server: Server;
  let url: string;
  const onLog: IcapLog[] = [];
  const loggerErrors: Array<{ obj: unknown; msg: string | undefined }> = [];
  const logger: PinoLike = {
    debug: () => {},
    info: () => {},
    warn: () => {},
    error: (obj, msg) => loggerErrors.push({ obj, msg }),
  };

  beforeAll(async () => {
    icapServer = await startIcapServer({ host: '127.0.0.1' });
    engine = createEngine({
      name: 'uploads',
      poolGroup: icapServer.url(),
      serviceUri: '/avscan',
      onLog: (log) => onLog.push(log),
      logger,
    });
    // A plain node:http server that answers what the engine decided.
    server = createServer((req, res) => {
      void engine.scan(req).then((outcome) => {
        res.on('close', () => outcome.dispose());
        if (outcome.kind === 'respond')
          res.writeHead(outcome.status, outcome.headers.flat()).end(outcome.body);
        else if (outcome.kind === 'aborted') res.destroy();
        else res.end(outcome.action);
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  afterAll(async () => {
    server?.closeAllConnections();
    await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
    await engine?.close();
    await icapServer?.close();
  });

  it('delivers every record to each listener, after onLog, which still gets it', async () => {
    const a: IcapLog[] = [];
    const b: IcapLog[] = [];
    const order: string[] = [];
    const offA = engine.addLogListener((log) => {
      a.push(log);
      order.push(`a:${onLog.includes(log)}`);
    });
    const offB = engine.addLogListener((log) => b.push(log));
    const before = onLog.length;
    expect((await send(url, '/upload', { body: 'hello' })).text).toBe('ICAP_PASSED');
    const blocked = await send(url, '/upload', { body: eicar() });
    expect(blocked.status).toBe(403);
    expect((await send(url, '/')).text).toBe('ICAP_DISABLED');
    expect(a.map((l) => l.action)).toEqual(['ICAP_PASSED', 'ICAP_BLOCKED', 'ICAP_DISABLED']);
    expect(b).toEqual(a);
    expect(onLog.slice(before)).toEqual(a);
    expect(order).toEqual(['a:true', 'a:true', 'a:true']);
    expect(a[1]!.request_logs[0]!.threat_id).toBe(EICAR_NAME);
    offA();
    offB();
  });

  it('a listener that throws breaks neither the scan nor the other listeners', async () => {
    const got: string[] = [];
    const offBad = engine.addLogListener(() => {
      throw new Error('listener bug');
    });
    const offGood = engine.addLogListener((log) => got.push(log.action));
    const errorsBefore = loggerErrors.length;
    const res = await send(url, '/upload', { body: 'clean bytes' });
    expect(res.status).toBe(200);
    expect(res.text).toBe('ICAP_PASSED');
    expect(got).toEqual(['ICAP_PASSED']);
    expect(loggerErrors.slice(errorsBefore)).toEqual([
      {
        obj: { err: expect.objectContaining({ message: 'listener bug' }) },
        msg: 'icapkit: a log listener threw',
      },
    ]);
    offBad();
    offGood();
  });

  it('unsubscribing stops the delivery (twice is harmless; the same function twice is two listeners)', async () => {
    const got: string[] = [];
    const fn = (log: Readonly<IcapLog>) => got.push(log.uri_path);
    const off1 = engine.addLogListener(fn);
    const off2 = engine.addLogListener(fn);
    await send(url, '/one', { body: 'x' });
    expect(got).toEqual(['/one', '/one']);
    off1();
    off1();
    await send(url, '/two', { body: 'x' });
    expect(got).toEqual(['/one', '/one', '/two']);
    off2();
    await send(url, '/three', { body: 'x' });
    expect(got).toEqual(['/one', '/one', '/two']);
  });

  it('records refused before the body (Expect: 100-continue preflight) reach the listeners too', async () => {
    const small = createEngine({
      name: 'small',
      poolGroup: icapServer.url(),
      serviceUri: '/avscan',
      bufferSize: 10,
    });
    const got: IcapLog[] = [];
    const off = small.addLogListener((log) => got.push(log));
    const refusal = await small.preflight({
      method: 'POST',
      url: '/upload',
      headers: { host: 'app', 'content-length': '1000', expect: '100-continue' },
      socket: { remoteAddress: '127.0.0.1' },
    } as never);
    expect(refusal?.status).toBe(413);
    expect(got).toHaveLength(1);
    expect(got[0]).toMatchObject({ action: 'ICAP_FAILED', significance: ['BUFFER_SIZE_EXCEEDED'] });
    off();
    await small.close();
  });
});
