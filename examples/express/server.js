/**
 * An Express 5 upload service whose uploads are scanned by an ICAP server (antivirus) before
 * multer or the handler see a byte of them.
 *
 *   node examples/express/server.js                              # with the embedded ICAP server
 *   ICAP_URL=icap://127.0.0.1:1344 node examples/express/server.js  # with c-icap
 *
 * POST /upload (multipart, file in the field `file`) answers
 * `{ ok, file, size, sha256, icap: { action } }`; blocked uploads get icapkit's 403 (an HTML
 * page, or problem+json for `Accept: application/json`). GET / is the upload page,
 * GET /icap-analytics/ the log analytics page.
 */
import { createServer } from 'node:http';
import { icap, icapAnalytics, loopbackOnly, tokenGuard } from '@icapkit/express';
import { eicar, startIcapServer } from '@icapkit/testing';
import express from 'express';
import multer from 'multer';
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
  // The log analytics page (the last scans, every value a filter), before the scanner so its
  // own requests are not logged: local connections only, or ICAP_ANALYTICS_TOKEN.
  const analytics = icapAnalytics(scan, { guard: analyticsGuard(config, { loopbackOnly, tokenGuard }) });
  const app = express();
  app.use(ANALYTICS_PATH, analytics);
  // Then: nothing reads the body before the ICAP server approved it.
  app.use(scan);

  app.get('/', (_req, res) => {
    res.type('html').send(uploadPage);
  });

  // multer parses the approved body (icapkit answered 413 already for one above MAX_UPLOAD).
  const upload = multer({
    storage: multer.memoryStorage(),
    limits: { files: 1, fileSize: config.maxUpload },
  });
  app.post('/upload', upload.single('file'), (req, res) => {
    if (req.file === undefined) {
      res.status(400).json(NO_FILE);
      return;
    }
    const result = uploadResult(req.file.originalname, req.file.buffer, req.icap);
    if (wantsHtml(req.headers.accept)) res.type('html').send(acceptedPage(result));
    else res.json(result);
  });

  // multer errors (another field name, two files, a broken form): 400 in JSON.
  /**
   * @param {any} err
   * @param {import('express').Request} _req
   * @param {import('express').Response} res
   * @param {import('express').NextFunction} _next
   */
  const onError = (err, _req, res, _next) => {
    const status = err instanceof multer.MulterError ? 400 : (err.status ?? err.statusCode ?? 500);
    res.status(status).json({ ok: false, error: status === 500 ? 'Internal error' : err.message });
  };
  app.use(onError);

  return serve(createServer(app), {
    framework: 'Express',
    config,
    icapUrl,
    embedded: embedded !== null,
    closers: [() => analytics.close(), () => scan.close(), async () => embedded?.close()],
  });
}

// `node server.js`: settings from the environment, a banner saying how to try it, Ctrl-C to stop.
if (isMain(import.meta.url)) await main(start, eicar());
