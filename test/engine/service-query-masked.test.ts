/**
 * A serviceUri may carry a credential in its query (`/scan?apikey=…`). The server is sent the
 * query as configured; everything icapkit writes about a request shows it with its values
 * masked (`?apikey=***`): the log record's icap_absolute_uri, the transaction channels, the
 * start-up check's error, the client's error messages (a timeout, an OPTIONS answered 500) and
 * its OPTIONS warnings.
 */
import * as dc from 'node:diagnostics_channel';
import { createServer, type Server } from 'node:http';
import { type AddressInfo, createServer as createTcpServer, type Socket } from 'node:net';
import { createEngine, IcapClient, IcapError, type IcapLog } from '@icapkit/core';
import { type IcapTestServer, startIcapServer } from '@icapkit/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { maskQuery } from '../../packages/core/src/protocol/shown-uri.js';
import { send } from '../support/http-client.js';

const SECRET = 'S3CRET-KEY-4711';
const SERVICE = `/avscan?apikey=${SECRET}&mode=fast&${SECRET}`;
const SHOWN = '/avscan?apikey=***&mode=***&***';

let icap: IcapTestServer;
beforeAll(async () => {
  icap = await startIcapServer({ recordBodies: false });
});
afterAll(() => icap?.close());

/** A TCP server that answers every ICAP request with `answer` (null: never answers). */
async function scripted(answer: string | null): Promise<{ port: number; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const server = createTcpServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
    s.on('data', () => {
      if (answer !== null) s.write(answer);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as AddressInfo).port,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

describe('maskQuery', () => {
  it('masks every value of the query and keeps the path and the names', () => {
    expect(maskQuery('/avscan')).toBe('/avscan');
    expect(maskQuery('/avscan?')).toBe('/avscan?');
    expect(maskQuery('/a?key=1')).toBe('/a?key=***');
    expect(maskQuery('/a?key=')).toBe('/a?key=***');
    expect(maskQuery('/a?k=1&&token')).toBe('/a?k=***&&***');
    expect(maskQuery('/a?k=x=y&m=%20')).toBe('/a?k=***&m=***');
    expect(maskQuery(`icap://h:1344${SERVICE}`)).toBe(`icap://h:1344${SHOWN}`);
    // Arguments after a ';' or a '#' too (campaign-aj AJ4).
    expect(maskQuery('/a;apikey=s3cret')).toBe('/a;apikey=***');
    expect(maskQuery('/a#token=s3cret')).toBe('/a#token=***');
    expect(maskQuery('/a?x=1;y=2#z')).toBe('/a?x=***;y=***#***');
  });

  it('a serviceUri with a control character fails at start-up naming the field, its arguments masked (campaign-aj AJ1, AJ2)', () => {
    for (const serviceUri of [
      `/avscan?apikey=${SECRET}\u0001`,
      `/avscan?apikey=${SECRET}\x7f`,
      `/a b?k=${SECRET}`,
    ]) {
      let thrown: unknown;
      try {
        createEngine({ name: 'bad', poolGroup: 'icap://127.0.0.1:1344', serviceUri });
      } catch (err) {
        thrown = err;
      }
      expect(thrown).toMatchObject({ code: 'ICAP_ERR_INVALID_PROFILE', field: 'profile.serviceUri' });
      expect((thrown as Error).message).not.toContain(SECRET);
    }
  });
});

describe('a serviceUri with a credential in its query', () => {
  it('is sent to the server as configured, and the log record and the transaction channel show it masked', async () => {
    const logs: IcapLog[] = [];
    const services: string[] = [];
    const onStart = (m: unknown) => services.push((m as { service: string }).service);
    dc.subscribe('icapkit:transaction:start', onStart);
    const engine = createEngine({
      name: 'masked',
      poolGroup: icap.url(),
      serviceUri: SERVICE,
      onLog: (l) => logs.push(l),
    });
    const server: Server = createServer(async (req, res) => {
      const o = await engine.scan(req);
      if (o.kind === 'respond') {
        res.writeHead(o.status, o.headers.flat());
        res.end(o.body);
      } else {
        req.resume();
        res.end('passed');
      }
      o.dispose();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
      const before = icap.requests.length;
      const r = await send(url, '/up', { body: 'hello', headers: { 'content-type': 'text/plain' } });
      expect(r.status).toBe(200);
      const sent = icap.requests.slice(before).filter((q) => q.method === 'REQMOD');
      expect(sent.length).toBe(1);
      expect(sent[0]!.uri).toContain(`apikey=${SECRET}`);
      expect(logs.length).toBe(1);
      expect(logs[0]!.request_logs[0]?.icap_absolute_uri).toBe(`${icap.url()}${SHOWN}`);
      expect(JSON.stringify(logs)).not.toContain(SECRET);
      expect(services).toEqual([SHOWN]);
      expect(JSON.stringify(engine.status())).not.toContain(SECRET);
    } finally {
      dc.unsubscribe('icapkit:transaction:start', onStart);
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
      await engine.close();
    }
  });

  it("the start-up check's error names it masked", async () => {
    const dead = await scripted(null);
    await dead.close();
    const engine = createEngine({
      name: 'masked-startup',
      poolGroup: `icap://127.0.0.1:${dead.port}`,
      serviceUri: SERVICE,
      startupCheck: 'fail',
    });
    try {
      const err = await engine.ready().then(
        () => null,
        (e: unknown) => e as Error,
      );
      expect(err).not.toBeNull();
      expect(err!.message).toContain(`did not answer OPTIONS ${SHOWN}`);
      expect(err!.message).not.toContain(SECRET);
    } finally {
      await engine.close();
    }
  });

  it("the client's messages show it masked: a timeout, OPTIONS answered 500, an OPTIONS warning", async () => {
    const silent = await scripted(null);
    const failing = await scripted('ICAP/1.0 500 Server Error\r\nEncapsulated: null-body=0\r\n\r\n');
    const lacking = await scripted('ICAP/1.0 200 OK\r\nEncapsulated: null-body=0\r\n\r\n');
    const warnings: Array<{ message: string; service: string }> = [];
    const clients = [
      new IcapClient({ url: `icap://127.0.0.1:${silent.port}`, timeout: 150 }),
      new IcapClient({ url: `icap://127.0.0.1:${failing.port}` }),
      new IcapClient({
        url: `icap://127.0.0.1:${lacking.port}`,
        onWarning: (message, details) => warnings.push({ message, service: details.service }),
      }),
    ];
    try {
      const errors: IcapError[] = [];
      for (const c of clients.slice(0, 2)) {
        errors.push(
          await c.options(SERVICE).then(
            () => {
              throw new Error('expected a failure');
            },
            (e: unknown) => e as IcapError,
          ),
        );
      }
      expect(errors.map((e) => e.code)).toEqual(['ICAP_ERR_TIMEOUT', 'ICAP_ERR_SERVER_STATUS']);
      for (const e of errors) {
        expect(e).toBeInstanceOf(IcapError);
        expect(e.message).toContain(SHOWN);
        expect(e.message).not.toContain(SECRET);
      }
      await clients[2]!.options(SERVICE);
      expect(warnings.length).toBe(1);
      expect(warnings[0]!.message).toContain(`OPTIONS icap://127.0.0.1:${lacking.port}${SHOWN} lacks`);
      expect(warnings[0]!.service).toBe(SHOWN);
    } finally {
      for (const c of clients) c.destroy();
      await Promise.all([silent.close(), failing.close(), lacking.close()]);
    }
  });
});
