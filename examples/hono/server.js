/**
 * A Hono upload service (on @hono/node-server) whose uploads are scanned by an ICAP server
 * (antivirus) before a handler sees a byte of them.
 *
 *   node examples/hono/server.js                               # with the embedded ICAP server
 *   ICAP_URL=icap://127.0.0.1:1344 node examples/hono/server.js  # with c-icap
 *
 * POST /upload (multipart, file in the field `file`) answers
 * `{ ok, file, size, sha256, icap: { action } }`; blocked uploads get icapkit's 403 (an HTML
 * page, or problem+json for `Accept: application/json`). GET / is the upload page.
 */

import { createServer } from 'node:http';
import { getRequestListener } from '@hono/node-server';
import { icap } from '@icapkit/hono';
import { eicar, startIcapServer } from '@icapkit/testing';
import { Hono } from 'hono';
import {
  acceptedPage,
  isMain,
  main,
  NO_FILE,
  scanLogger,
  serve,
  uploadPage,
  uploadResult,
  wantsHtml,
  withDefaults,
} from '../shared/demo.js';

export async function start(options = {}) {
  const config = withDefaults(options);
  // No ICAP_URL: an embedded ICAP server on a free loopback port (it detects EICAR).
  const embedded = config.icapUrl === undefined ? await startIcapServer({ host: '127.0.0.1' }) : null;
  const icapUrl = config.icapUrl ?? embedded.url();

  const scan = icap({
    name: 'uploads',
    poolGroup: icapUrl, // icap://host:1344, or a list of servers, or pools by priority
    serviceUri: config.serviceUri, // /avscan
    bufferSize: config.maxUpload, // larger uploads: 413
    failAction: config.failOpen ? 'fail-open' : 'fail-closed', // ICAP server down: 503, or pass unscanned
    connection: { connectTimeout: 2000 }, // fail fast when the ICAP server is unreachable
    onLog: scanLogger(config.print), // one line per scan
  });

  const app = new Hono();
  app.get('/', (c) => c.html(uploadPage));
  // Before any handler reads the body: c.req.raw becomes the approved request.
  app.use('/upload', scan);
  app.post('/upload', async (c) => {
    const form = await c.req.parseBody(); // undici's form parser, over the scanned bytes
    const file = form.file;
    if (!(file instanceof File)) return c.json(NO_FILE, 400);
    const result = uploadResult(file.name || 'upload', Buffer.from(await file.arrayBuffer()), c.var.icap);
    return wantsHtml(c.req.header('accept')) ? c.html(acceptedPage(result)) : c.json(result);
  });
  app.notFound((c) => c.json({ ok: false, error: 'Not found' }, 404));

  const server = createServer(getRequestListener(app.fetch));
  // Requests with `Expect: 100-continue` that would be refused anyway (413, 415) are answered
  // before they send their body (only those the app routes through `scan`).
  scan.guardExpectContinue(server, app);
  const handle = await serve(server, {
    framework: 'Hono',
    config,
    icapUrl,
    embedded: embedded !== null,
    closers: [() => scan.close(), async () => embedded?.close()],
  });
  // The log analytics page is a Node handler (the other examples mount it); not served here.
  return { ...handle, analyticsUrl: undefined };
}

// `node server.js`: settings from the environment, a banner saying how to try it, Ctrl-C to stop.
if (isMain(import.meta.url)) await main(start, eicar());
