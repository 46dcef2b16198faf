/**
 * A Fastify 5 upload service whose uploads are scanned by an ICAP server (antivirus) before
 * @fastify/multipart or the handler see a byte of them.
 *
 *   node examples/fastify/server.js                              # with the embedded ICAP server
 *   ICAP_URL=icap://127.0.0.1:1344 node examples/fastify/server.js  # with c-icap
 *
 * POST /upload (multipart, file in the field `file`) answers
 * `{ ok, file, size, sha256, icap: { action } }`; blocked uploads get icapkit's 403 (an HTML
 * page, or problem+json for `Accept: application/json`). GET / is the upload page,
 * GET /icap-analytics/ the log analytics page.
 */
import multipart from '@fastify/multipart';
import { icap, icapAnalytics, loopbackOnly, tokenGuard } from '@icapkit/fastify';
import { eicar, startIcapServer } from '@icapkit/testing';
import Fastify from 'fastify';
import {
  ANALYTICS_PATH,
  acceptedPage,
  analyticsGuard,
  isMain,
  main,
  NO_FILE,
  scanLogger,
  uploadPage,
  uploadResult,
  wantsHtml,
  withDefaults,
} from '../shared/demo.js';

export async function start(options = {}) {
  const config = withDefaults(options);
  // No ICAP_URL: an embedded ICAP server on a free loopback port (it detects EICAR).
  /** @type {string | undefined} */
  let icapUrl = config.icapUrl;
  let embedded = null;
  if (icapUrl === undefined) {
    embedded = await startIcapServer({ host: '127.0.0.1' });
    icapUrl = embedded.url();
  }

  const app = Fastify();
  // Scans in a preParsing hook placed before any other: multipart reads only approved bodies.
  await app.register(icap, {
    name: 'uploads',
    poolGroup: icapUrl, // icap://host:1344, or a list of servers, or pools by priority
    serviceUri: config.serviceUri, // /avscan
    bufferSize: config.maxUpload, // larger uploads: 413
    failAction: config.failOpen ? 'fail-open' : 'fail-closed', // ICAP server down: 503, or pass unscanned
    connection: { connectTimeout: 2000 }, // fail fast when the ICAP server is unreachable
    // The start-up check (OPTIONS to each server): the demo starts anyway when the ICAP server is
    // down, and says so; 'fail' (the default) would refuse to start.
    startupCheck: 'warn',
    onLog: scanLogger(config.print), // one line per scan
  });
  // The log analytics page (the last scans, every value a filter); its routes are not scanned:
  // local connections only, or ICAP_ANALYTICS_TOKEN.
  await app.register(icapAnalytics, {
    prefix: ANALYTICS_PATH,
    guard: analyticsGuard(config, { loopbackOnly, tokenGuard }),
  });
  await app.register(multipart, { limits: { files: 1, fileSize: config.maxUpload } });

  // GET has no body, so nothing is scanned; `config: { icap: false }` would opt a route out.
  app.get('/', async (_request, reply) => reply.type('text/html; charset=utf-8').send(uploadPage));

  app.post('/upload', async (request, reply) => {
    const part = request.isMultipart() ? await request.file() : undefined;
    if (part === undefined || part.fieldname !== 'file') return reply.code(400).send(NO_FILE);
    const result = uploadResult(part.filename, await part.toBuffer(), request.icap);
    if (wantsHtml(request.headers.accept))
      return reply.type('text/html; charset=utf-8').send(acceptedPage(result));
    return result;
  });

  app.addHook('onClose', async () => {
    await embedded?.close();
  });

  try {
    await app.listen({ port: config.port, host: config.host });
  } catch (err) {
    await app.close(); // the engine and the embedded ICAP server too
    throw err; // e.g. EADDRINUSE
  }
  const { port } = /** @type {import('node:net').AddressInfo} */ (app.server.address());
  let closed;
  return {
    framework: 'Fastify',
    url: `http://${config.host}:${port}`,
    analyticsUrl: `http://${config.host}:${port}${ANALYTICS_PATH}/`,
    icapUrl,
    embedded: embedded !== null,
    close() {
      // Closes the HTTP server, then the icapkit engine (its onClose hook), then the ICAP server.
      closed ??= app.close();
      return closed;
    },
  };
}

// `node server.js`: settings from the environment, a banner saying how to try it, Ctrl-C to stop.
if (isMain(import.meta.url)) await main(start, eicar());
