/** The conformance scenarios against a real c-icap 0.5 + ClamAV. */
import { type CIcapServer, describeWithCIcap, startCIcap } from '../support/c-icap.js';
import { EICAR_THREAT } from '../support/eicar.js';
import { defineConformance } from './scenarios.js';

describeWithCIcap('conformance with real c-icap', () => {
  let server: CIcapServer | undefined;
  defineConformance({
    name: 'c-icap',
    start: async () => {
      server = await startCIcap({ maxKeepAliveRequests: 100_000 });
    },
    stop: async () => {
      await server?.stop();
    },
    url: () => `icap://127.0.0.1:${server!.port}`,
    serviceUri: '/avscan',
    eicarThreat: EICAR_THREAT,
  });
});
