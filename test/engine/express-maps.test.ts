/**
 * The Express adapter puts each request whose prototype Express swapped into dictionary mode
 * before reading it (packages/express/src/shared-maps.ts): all of them then share one V8 map, so
 * property reads stop missing their inline caches once per request. What the application sees
 * must not change: the same own keys in the same order, the same values, nothing of ours left
 * behind. Checked with V8's own answer (natives syntax, enabled for the test) on Express 5 and
 * 4, and on the objects the adapter must leave alone.
 */
import { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Socket } from 'node:net';
import { setFlagsFromString } from 'node:v8';
import { icap as expressIcap } from '@icapkit/express';
import { type IcapTestServer, startIcapServer } from '@icapkit/testing';
import express5 from 'express';
import express4 from 'express4';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { shareRequestMap, shareResponseMap } from '../../packages/express/src/shared-maps.js';
import { send } from '../support/http-client.js';

setFlagsFromString('--allow-natives-syntax');
const hasFastProperties = new Function('o', 'return %HasFastProperties(o)') as (o: object) => boolean;
const haveSameMap = new Function('a', 'b', 'return %HaveSameMap(a, b)') as (a: object, b: object) => boolean;

const REQUESTS = 20;

/** How many distinct V8 maps the objects have. */
function mapsAmong(objects: object[]): number {
  const kinds: object[] = [];
  for (const o of objects) if (!kinds.some((k) => haveSameMap(k, o))) kinds.push(o);
  return kinds.length;
}

let icap: IcapTestServer;
beforeAll(async () => {
  icap = await startIcapServer();
});
afterAll(async () => {
  await icap.close();
});

interface Seen {
  req: object;
  res: object;
  /** The response's own keys just before icap() and in the handler after it, and those whose value changed. */
  resBefore: Array<string | symbol>;
  resAfter: Array<string | symbol>;
  resChanged: string[];
  /** Own keys (strings and symbols) just before icap() and in the handler after it. */
  before: Array<string | symbol>;
  after: Array<string | symbol>;
  /** Keys present before icap() whose value in the handler is another. */
  changed: string[];
  body: string;
}

async function withApp(
  framework: 'express5' | 'express4',
  scanned: boolean,
  run: (url: string, seen: Seen[]) => Promise<void>,
): Promise<void> {
  const express = (framework === 'express5' ? express5 : express4) as unknown as typeof express5;
  const app = express();
  const seen: Seen[] = [];
  const mw = expressIcap({ name: 'maps', poolGroup: icap.url(), serviceUri: '/avscan' });
  let before: Array<string | symbol> = [];
  let values: unknown[] = [];
  let resBefore: Array<string | symbol> = [];
  let resValues: unknown[] = [];
  app.use((req, res, next) => {
    before = Reflect.ownKeys(req);
    values = before.map((k) => (req as unknown as Record<string | symbol, unknown>)[k]);
    resBefore = Reflect.ownKeys(res);
    resValues = resBefore.map((k) => (res as unknown as Record<string | symbol, unknown>)[k]);
    next();
  });
  if (scanned) app.use(mw);
  app.post('/up', (req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const r = req as unknown as Record<string | symbol, unknown>;
      const o = res as unknown as Record<string | symbol, unknown>;
      seen.push({
        req,
        res,
        resBefore,
        resAfter: Reflect.ownKeys(res),
        resChanged: resBefore.filter((k, i) => o[k] !== resValues[i]).map(String),
        before,
        after: Reflect.ownKeys(req),
        changed: before.filter((k, i) => r[k] !== values[i]).map(String),
        body: Buffer.concat(chunks).toString(),
      });
      res.status(201).send('ok');
    });
  });
  const server = app.listen(0, '127.0.0.1');
  await new Promise<void>((r) => server.once('listening', () => r()));
  try {
    await run(`http://127.0.0.1:${(server.address() as AddressInfo).port}`, seen);
  } finally {
    server.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
    await mw.close();
  }
}

const OCTETS = { 'content-type': 'application/octet-stream' };

/**
 * The requests, with no assertion between them: an `expect()` normalizes objects through the same
 * V8 cache (chai's proxy), and its entry, when it falls on the requests' slot of that 128-entry
 * table, evicts theirs at every request (4 test processes in 60 with a CPU burner, as in CI).
 */
async function sendAll(url: string): Promise<void> {
  const statuses: number[] = [];
  for (let i = 0; i < REQUESTS; i++)
    statuses.push((await send(url, '/up', { method: 'POST', headers: OCTETS, body: `body ${i}` })).status);
  expect(statuses).toEqual(Array(REQUESTS).fill(201));
}

describe.each(['express5', 'express4'] as const)('%s', (framework) => {
  /** Keys Express itself changes between the first middleware and the handler (its router's). */
  let routerChanges: string[] = [];
  /** Keys of the response whose value changes between the first middleware and the handler without icap(). */
  let resAnswerChanges: string[] = [];

  it('without icap(), two requests have maps of their own (why the adapter does this)', async () => {
    await withApp(framework, false, async (url, seen) => {
      await sendAll(url);
      expect(seen).toHaveLength(REQUESTS);
      expect(mapsAmong(seen.map((s) => s.req))).toBe(REQUESTS);
      routerChanges = seen[0]!.changed;
      resAnswerChanges = seen[0]!.resChanged;
    });
  });

  it('without icap(), two responses have maps of their own too', async () => {
    await withApp(framework, false, async (url, seen) => {
      await sendAll(url);
      expect(mapsAmong(seen.map((s) => s.res))).toBe(REQUESTS);
    });
  });

  it('with icap(), the requests share one map, the responses another, and the application sees the same keys and values', async () => {
    // The two maps come from one 128-entry cache of V8's: when their entries fall on one slot
    // (2 fresh processes in 80), each evicts the other and both get maps of their own at every
    // request, as without icap() (shared-maps.ts). So a fresh app, with fresh prototypes, up to
    // four times: the sharing must show in one of them (all four colliding: about 1 in 2.5
    // million), and the application sees nothing of it in every one.
    let shared = false;
    for (let app = 0; app < 4 && !shared; app++) {
      await withApp(framework, true, async (url, seen) => {
        await sendAll(url);
        expect(seen.map((s) => s.body)).toEqual(Array.from({ length: REQUESTS }, (_, i) => `body ${i}`));
        // Every request and response in dictionary mode. V8 empties its normalized-map cache at
        // a full garbage collection: one falling inside the twenty requests starts a second map;
        // a few at most.
        expect(seen.every((s) => !hasFastProperties(s.req) && !hasFastProperties(s.res))).toBe(true);
        const reqMaps = mapsAmong(seen.map((s) => s.req));
        const resMaps = mapsAmong(seen.map((s) => s.res));
        shared = reqMaps <= 3 && resMaps <= 3;
        for (const s of seen) {
          // Nothing of ours is left, and the keys each object had keep their order.
          for (const [before, after] of [
            [s.before, s.after],
            [s.resBefore, s.resAfter],
          ] as const) {
            expect(
              after.filter((k) => typeof k === 'symbol' && String(k).includes('icapkit.shareMap')),
            ).toEqual([]);
            const positions = before.map((k) => after.indexOf(k));
            expect(positions.every((p) => p >= 0)).toBe(true);
            expect([...positions].sort((x, y) => x - y)).toEqual(positions);
          }
          // Besides the router's, only what the hand-off replaces: the stream's state and reader,
          // the head it rewrites (content-length) and the listeners of the body store it removed.
          const handoff = ['_readableState', '_read', 'rawHeaders', '_events', '_eventsCount'];
          expect(s.changed.filter((k) => !routerChanges.includes(k) && !handoff.includes(k))).toEqual([]);
          expect(s.after).toContain('icap');
          // The response: besides what Express changes, only the listener of icapkit's response watch.
          const watch = ['_events', '_eventsCount'];
          expect(s.resChanged.filter((k) => !resAnswerChanges.includes(k) && !watch.includes(k))).toEqual([]);
        }
      });
    }
    expect(shared).toBe(true);
  });
});

describe('shareRequestMap leaves alone what it must', () => {
  it("a request and a response with Node's own prototypes keep their fast properties", () => {
    const req = new IncomingMessage(new Socket());
    shareRequestMap(req);
    expect(hasFastProperties(req)).toBe(true);
    const res = new ServerResponse(req);
    shareResponseMap(res);
    expect(hasFastProperties(res)).toBe(true);
  });

  it('a frozen request and a proxy that refuses properties: no exception, nothing added', () => {
    const proto = Object.create(IncomingMessage.prototype) as object;
    const frozen = Object.freeze(Object.setPrototypeOf({ a: 1 }, proto)) as IncomingMessage;
    const refusing = new Proxy(Object.setPrototypeOf({ b: 2 }, proto) as object, {
      defineProperty: () => false,
      set: () => false,
    }) as unknown as IncomingMessage;
    expect(() => shareRequestMap(frozen)).not.toThrow();
    expect(() => shareRequestMap(refusing)).not.toThrow();
    expect(Reflect.ownKeys(frozen)).toEqual(['a']);
    expect(Reflect.ownKeys(refusing)).toEqual(['b']);
  });

  it('a swapped prototype: dictionary mode, same keys in the same order, same values', () => {
    const proto = Object.create(IncomingMessage.prototype) as object;
    const make = () => {
      const o = Object.setPrototypeOf({ first: 1, second: 'two' }, proto) as Record<string, unknown>;
      o.third = [3];
      return o;
    };
    const a = make();
    const b = make();
    const third = a.third;
    expect(haveSameMap(a, b)).toBe(false);
    shareRequestMap(a as unknown as IncomingMessage);
    shareRequestMap(b as unknown as IncomingMessage);
    expect(hasFastProperties(a)).toBe(false);
    expect(haveSameMap(a, b)).toBe(true);
    expect(Reflect.ownKeys(a)).toEqual(['first', 'second', 'third']);
    expect([a.first, a.second, a.third]).toEqual([1, 'two', third]);
    expect(a.third).toBe(third);
  });
});
