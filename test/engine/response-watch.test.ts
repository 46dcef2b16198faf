/**
 * The response watch tells the engine the application's status (`respondedOnFinish`) from its
 * one 'close' listener, as a 'finish' listener did: once, only for a response that finished,
 * before the held outcome is disposed, and never for a response that closed without finishing
 * (the client went away) or closed before it was asked. Over a real node:http server too.
 */
import { EventEmitter } from 'node:events';
import { createServer, request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { watchResponse } from '@icapkit/core';
import { describe, expect, it } from 'vitest';

class FakeResponse extends EventEmitter {
  writableFinished = false;
  statusCode = 200;
}

function recorder() {
  const calls: string[] = [];
  return {
    calls,
    engine: {
      responded: (log: object, status: number) =>
        calls.push(`responded ${(log as { id: string }).id} ${status}`),
    },
    outcome: { dispose: () => calls.push('dispose') },
  };
}

describe('respondedOnFinish', () => {
  it('a finished response: the status once, then the outcome disposed', () => {
    const res = new FakeResponse();
    const { calls, engine, outcome } = recorder();
    const watch = watchResponse(res);
    watch.hold(outcome);
    watch.respondedOnFinish(engine, { id: 'a' });
    res.statusCode = 404;
    res.writableFinished = true;
    res.emit('finish');
    res.emit('close');
    res.emit('close');
    expect(calls).toEqual(['responded a 404', 'dispose']);
  });

  it('a response closed before it finished: no status, the outcome disposed', () => {
    const res = new FakeResponse();
    const { calls, engine, outcome } = recorder();
    const watch = watchResponse(res);
    watch.hold(outcome);
    watch.respondedOnFinish(engine, { id: 'b' });
    res.emit('close');
    expect(calls).toEqual(['dispose']);
  });

  it('asked after the response closed: nothing', () => {
    const res = new FakeResponse();
    const { calls, engine } = recorder();
    const watch = watchResponse(res);
    res.writableFinished = true;
    res.emit('close');
    watch.respondedOnFinish(engine, { id: 'c' });
    res.emit('close');
    expect(calls).toEqual([]);
  });

  it('over node:http: the status the application answered, once', async () => {
    const { calls, engine, outcome } = recorder();
    const server = createServer((_req, res) => {
      const watch = watchResponse(res);
      watch.hold(outcome);
      watch.respondedOnFinish(engine, { id: 'd' });
      res.statusCode = 201;
      res.end('ok');
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const status = await new Promise<number>((resolve, reject) => {
        const req = request({ port: (server.address() as AddressInfo).port, host: '127.0.0.1' }, (res) => {
          res.resume();
          res.on('end', () => resolve(res.statusCode ?? 0));
        });
        req.on('error', reject);
        req.end();
      });
      expect(status).toBe(201);
      const deadline = Date.now() + 5000;
      while (calls.length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
      expect(calls).toEqual(['responded d 201', 'dispose']);
    } finally {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    }
  });
});
