/**
 * A Koa 3 upload service whose uploads are scanned by an ICAP server (antivirus) before
 * koa-body or the handler see a byte of them.
 *
 *   node examples/koa/server.js                              # with the embedded ICAP server
 *   ICAP_URL=icap://127.0.0.1:1344 node examples/koa/server.js  # with c-icap
 *
 * POST /upload (multipart, file in the field `file`) answers
 * `{ ok, file, size, sha256, icap: { action } }`; blocked uploads get icapkit's 403 (an HTML
 * page, or problem+json for `Accept: application/json`). GET / is the upload page,
 * GET /icap-analytics/ the log analytics page.
 */

import { readFile, rm } from 'node:fs/promises';
import { createServer } from 'node:http';
import { icap, icapAnalytics, loopbackOnly, tokenGuard } from '@icapkit/koa';
import { eicar, startIcapServer } from '@icapkit/testing';
import Koa from 'koa';
import { koaBody } from 'koa-body';
import {
  ANALYTICS_PATH,
  acceptedPage,
  analyticsGuard,
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
  /** @type {string | undefined} */
  let icapUrl = config.icapUrl;
  let embedded = null;
  if (icapUrl === undefined) {
    embedded = await startIcapServer({ host: '127.0.0.1' });
    icapUrl = embedded.url();
  }

  const scan = icap({
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
  await scan.ready();
  const app = new Koa();

  // Errors of the body parser (a broken form, a file over the limit) as JSON.
  app.use(async (ctx, next) => {
    try {
      await next();
    } catch (caught) {
      const err =
        /** @type {{ status?: number, statusCode?: number, httpCode?: number, message?: string }} */ (caught);
      ctx.status = err.status ?? err.statusCode ?? err.httpCode ?? 500; // formidable: httpCode
      ctx.body = { ok: false, error: ctx.status === 500 ? 'Internal error' : err.message };
      if (ctx.status === 500) ctx.app.emit('error', err, ctx);
    }
  });
  // The log analytics page (the last scans, every value a filter), before the scanner so its
  // own requests are not logged: local connections only, or ICAP_ANALYTICS_TOKEN.
  const analytics = icapAnalytics(scan, {
    prefix: ANALYTICS_PATH,
    guard: analyticsGuard(config, { loopbackOnly, tokenGuard }),
  });
  app.use(analytics);
  // Before any body parser: nothing reads the body before the ICAP server approved it.
  app.use(scan);
  // koa-body (formidable) parses the approved body into temporary files.
  app.use(koaBody({ multipart: true, formidable: { maxFiles: 1, maxFileSize: config.maxUpload } }));

  app.use(async (ctx) => {
    if (ctx.method === 'GET' && ctx.path === '/') {
      ctx.type = 'html';
      ctx.body = uploadPage;
      return;
    }
    if (ctx.method === 'POST' && ctx.path === '/upload') {
      const files = ctx.request.files ?? {};
      const file = [files.file].flat()[0];
      try {
        if (file === undefined) {
          ctx.status = 400;
          ctx.body = NO_FILE;
          return;
        }
        const result = uploadResult(
          file.originalFilename ?? 'upload',
          await readFile(file.filepath),
          ctx.state.icap,
        );
        if (wantsHtml(ctx.get('accept'))) {
          ctx.type = 'html';
          ctx.body = acceptedPage(result);
        } else ctx.body = result;
      } finally {
        // formidable wrote every file of the form to a temporary file: remove them.
        for (const f of Object.values(files).flat()) await rm(f.filepath, { force: true });
      }
      return;
    }
    ctx.status = 404;
    ctx.body = { ok: false, error: 'Not found' };
  });

  return serve(createServer(app.callback()), {
    framework: 'Koa',
    config,
    icapUrl,
    embedded: embedded !== null,
    closers: [() => analytics.close(), () => scan.close(), async () => embedded?.close()],
  });
}

// `node server.js`: settings from the environment, a banner saying how to try it, Ctrl-C to stop.
if (isMain(import.meta.url)) await main(start, eicar());
