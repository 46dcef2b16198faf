/**
 * The embedded ICAP server of @icapkit/testing in its own process, answering 204 to every clean
 * REQMOD (after reading the whole body, as c-icap's avscan does): the ICAP side costs almost
 * nothing, so what is left is our own overhead. Prints `READY {"port":N}`.
 */
import { startIcapServer } from '@icapkit/testing';

const server = await startIcapServer({
  host: '127.0.0.1',
  port: 0,
  recordBodies: false,
  keepAliveTimeout: 600_000,
});
const stop = () => {
  server.close().finally(() => process.exit(0));
  setTimeout(() => process.exit(0), 2000).unref();
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
// recordBodies:false keeps bodies out; the per-request records still pile up: forget them.
setInterval(() => server.reset(), 1000).unref();
process.stdout.write(`READY ${JSON.stringify({ port: server.port, pid: process.pid })}\n`);
