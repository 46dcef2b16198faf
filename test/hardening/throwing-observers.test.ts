/**
 * What observes a scan cannot change it: a logger whose methods throw (pino on a full disk) or
 * reject, an `onLog` that is async and rejects, an `onLog` that freezes the record. Before, a
 * throwing logger turned a clean request's 200 and a threat's 403 into a 503 (the record said
 * ICAP_FAILED, and onLog got two records); a rejecting onLog was an unhandled rejection that
 * ended the process; a frozen record threw from the response's close listener. Now each is
 * caught where icapkit calls it: the status, the record and the process stay as without it.
 * Campaign-t's findings.
 */
import type { IcapLog, IcapProfile, PinoLike } from '@icapkit/core';
import { eicar, type IcapTestServer, startIcapServer } from '@icapkit/testing';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { type Framework, startApp } from '../conformance/apps.js';
import { send } from '../support/http-client.js';

const FRAMEWORKS: Framework[] = ['express5', 'fastify', 'koa3', 'hono'];

let icap: IcapTestServer;
const escaped: unknown[] = [];
const onEscape = (err: unknown) => escaped.push(err);
beforeAll(async () => {
  icap = await startIcapServer({ recordBodies: false });
  process.on('unhandledRejection', onEscape);
  process.on('uncaughtException', onEscape);
});
afterAll(async () => {
  process.off('unhandledRejection', onEscape);
  process.off('uncaughtException', onEscape);
  await icap?.close();
});
afterEach(() => {
  escaped.length = 0;
});

const throwing: PinoLike = {
  debug: () => {
    throw new Error('ENOSPC: the log destination is full');
  },
  info: () => {
    throw new Error('ENOSPC: the log destination is full');
  },
  warn: () => {
    throw new Error('ENOSPC: the log destination is full');
  },
  error: () => {
    throw new Error('ENOSPC: the log destination is full');
  },
};
const rejecting = {
  debug: () => Promise.reject(new Error('the log transport failed')),
  info: () => Promise.reject(new Error('the log transport failed')),
  warn: () => Promise.reject(new Error('the log transport failed')),
  error: () => Promise.reject(new Error('the log transport failed')),
} as unknown as PinoLike;

interface Observer {
  name: string;
  profile: (records: IcapLog[]) => Partial<IcapProfile>;
}

const OBSERVERS: Observer[] = [
  {
    name: 'a logger whose methods throw',
    profile: (records) => ({ logger: throwing, onLog: (l) => records.push(l) }),
  },
  {
    name: 'a logger whose methods return rejected promises',
    profile: (records) => ({ logger: rejecting, onLog: (l) => records.push(l) }),
  },
  {
    name: 'an async onLog that rejects',
    profile: (records) => ({
      onLog: (async (l: IcapLog) => {
        records.push(l);
        throw new Error('the log shipper is down');
      }) as unknown as (l: IcapLog) => void,
    }),
  },
  {
    name: 'an onLog that freezes the record',
    profile: (records) => ({
      onLog: (l) => {
        records.push(l);
        Object.freeze(l);
      },
    }),
  },
];

/** Polls until `check` holds or `ms` pass. */
async function until(check: () => boolean, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
}

describe('observers of a scan cannot change it', () => {
  for (const framework of FRAMEWORKS) {
    for (const o of OBSERVERS) {
      it(`${framework}: ${o.name}`, async () => {
        const records: IcapLog[] = [];
        const app = await startApp(framework, {
          name: 'observers',
          poolGroup: icap.url(),
          serviceUri: '/avscan',
          ...o.profile(records),
        } as IcapProfile);
        try {
          const post = (body: Buffer) =>
            send(app.url, '/raw', {
              method: 'POST',
              headers: { 'content-type': 'application/octet-stream' },
              body,
            });
          const clean = await post(Buffer.from('a clean upload'));
          const threat = await post(eicar());
          expect({ clean: clean.status, threat: threat.status, handled: app.seen.length }).toEqual({
            clean: 200,
            threat: 403,
            handled: 1,
          });
          await until(() => records.length >= 2, 2_000);
          // An escape would come from the responses' close listeners or a rejection: give one
          // 200 ms to show (it does within a turn or two of the event loop before the fix).
          await until(() => escaped.length > 0, 200);
          expect(records.map((r) => r.action)).toEqual(['ICAP_PASSED', 'ICAP_BLOCKED']);
          expect(escaped).toEqual([]);
        } finally {
          await app.close();
        }
      });
    }
  }
});
