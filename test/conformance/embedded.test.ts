/** The conformance scenarios against the embedded ICAP server, which can also modify requests and misbehave. */
import { EICAR_NAME, type Fault, type IcapTestServer, startIcapServer } from '@icapkit/testing';
import { describe } from 'vitest';
import { defineConformance } from './scenarios.js';

const FAULTS: Record<'hang' | 'reset' | 'status-500', Fault> = {
  hang: { kind: 'hang' },
  reset: { kind: 'reset', when: 'on-head' },
  'status-500': { kind: 'status', status: 500 },
};

describe('conformance with the embedded ICAP server', () => {
  let server: IcapTestServer | undefined;
  defineConformance({
    name: 'embedded',
    start: async () => {
      server = await startIcapServer({ rewrite: { from: 'EVIL', to: 'GOOD-LONGER' }, recordBodies: false });
    },
    stop: async () => {
      await server?.close();
    },
    url: () => server!.url(),
    serviceUri: '/avscan',
    eicarThreat: EICAR_NAME,
    modify: { serviceUri: '/modify', from: 'EVIL', to: 'GOOD-LONGER' },
    faults: {
      profile: async (kind) => {
        const faulty = await startIcapServer({
          script: (req) => (req.method === 'OPTIONS' ? undefined : FAULTS[kind]),
        });
        return { poolGroup: faulty.url(), serviceUri: '/avscan', done: () => faulty.close() };
      },
    },
  });
});
