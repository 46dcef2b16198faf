/**
 * What the three example servers share: configuration from the environment, the ICAP profile
 * (with an `onLog` that prints one line per scan), the upload page, the JSON answer, the
 * start-up banner and a clean shutdown on Ctrl-C / SIGTERM. Plain Node, no dependencies, so
 * each example's server.js shows only what is specific to its framework.
 */
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { readFileSync, realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** The upload page (one file for the three frameworks), read once at start-up. */
export const uploadPage = readFileSync(new URL('./upload.html', import.meta.url), 'utf8');

/** Largest upload, in bytes: the ICAP profile's bufferSize (larger ones get 413). */
export const DEFAULT_MAX_UPLOAD = 50 * 1024 * 1024;

/**
 * Options of an example server, from the environment:
 *
 *   PORT            HTTP port (default 3000; 0 picks a free one)
 *   HOST            address to listen on (default 127.0.0.1)
 *   ICAP_URL        icap://host[:1344][/service] of a real ICAP server; unset: the embedded one
 *   ICAP_SERVICE    ICAP service path (default /avscan, or the path given in ICAP_URL)
 *   ICAP_FAIL_OPEN  1: pass uploads unscanned when the ICAP server fails (default: answer 503)
 *   MAX_UPLOAD      largest upload in bytes or '10mb' (default 50mb): larger ones get 413
 *   ICAP_ANALYTICS_TOKEN  a secret of 16+ characters: the log analytics page wants it (HTTP Basic
 *                   password, any user name, or `Authorization: Bearer`) instead of answering
 *                   local connections only
 */
export function configFromEnv(env = process.env) {
  const icapUrl = env.ICAP_URL?.trim() || undefined;
  let serviceUri = env.ICAP_SERVICE?.trim() || undefined;
  let server = icapUrl;
  if (icapUrl !== undefined) {
    // icap://host:1344/avscan names the service too: split it off.
    const m = /^(icaps?:\/\/[^/?#]+)(\/[^#]*)?$/i.exec(icapUrl);
    if (m === null) throw new Error(`ICAP_URL must look like icap://host:1344 (got ${icapUrl})`);
    server = m[1];
    if (serviceUri === undefined && m[2] !== undefined && m[2] !== '/') serviceUri = m[2];
  }
  return {
    port: env.PORT === undefined || env.PORT === '' ? 3000 : Number(env.PORT),
    host: env.HOST?.trim() || '127.0.0.1',
    icapUrl: server,
    serviceUri: serviceUri ?? '/avscan',
    failOpen: env.ICAP_FAIL_OPEN === '1' || env.ICAP_FAIL_OPEN === 'true',
    maxUpload: parseSize(env.MAX_UPLOAD?.trim() || DEFAULT_MAX_UPLOAD),
    analyticsToken: env.ICAP_ANALYTICS_TOKEN?.trim() || undefined,
  };
}

/** Where the examples serve the log analytics page (mounted before the scanning middleware). */
export const ANALYTICS_PATH = '/icap-analytics';

/**
 * Who may see the log analytics page: with a token (ICAP_ANALYTICS_TOKEN), whoever presents it;
 * without one, connections from this machine only. `guards` are the adapter's `loopbackOnly`
 * and `tokenGuard`.
 */
export function analyticsGuard(config, { loopbackOnly, tokenGuard }) {
  return config.analyticsToken === undefined ? loopbackOnly : tokenGuard(config.analyticsToken);
}

/** Fills in what `start(options)` was not given (tests pass only a few options). */
export function withDefaults(options = {}) {
  return {
    port: 3000,
    host: '127.0.0.1',
    icapUrl: undefined,
    serviceUri: '/avscan',
    failOpen: false,
    maxUpload: DEFAULT_MAX_UPLOAD,
    analyticsToken: undefined,
    print: (line) => console.log(line),
    ...options,
  };
}

/**
 * The profile's `onLog`: one line per scan (requests without a body, such as GET /, are not
 * scanned; their ICAP_DISABLED records are left out).
 */
export function scanLogger(print) {
  return (log) => {
    if (log.action !== 'ICAP_DISABLED') print(logLine(log));
  };
}

/** Bytes from a number or a size such as '50mb', '512kb' (as bufferSize takes it). */
export function parseSize(size) {
  if (typeof size === 'number') return size;
  const m = /^\s*(\d+(?:\.\d+)?)\s*(b|kb|mb|gb)?\s*$/i.exec(size);
  if (m === null) throw new Error(`not a size: ${size} (use bytes or e.g. 10mb)`);
  const unit = { b: 1, kb: 1024, mb: 1024 ** 2, gb: 1024 ** 3 }[(m[2] ?? 'b').toLowerCase()];
  return Math.floor(Number(m[1]) * unit);
}

/**
 * One line per scan from the icap_log record, e.g.
 *   [icap] ICAP_BLOCKED POST /upload threat=Eicar-Test-Signature file=eicar.com 184 B 3 ms
 */
export function logLine(log) {
  const last = log.request_logs.at(-1);
  const violation = last?.violations?.[0];
  const parts = [
    `[icap] ${log.action.padEnd(13)}`,
    `${log.http_method.replace(/^HTTP_METHOD_/, '')} ${log.uri_path}`,
  ];
  const threat = violation?.threat_name || last?.threat_id;
  if (threat) parts.push(`threat=${threat}`);
  const files = log.file_names ?? (violation?.file_name ? [violation.file_name] : []);
  if (files.length > 0) parts.push(`file=${files.join(',')}`);
  if (log.request_body_length !== undefined) parts.push(formatSize(log.request_body_length));
  if (log.error_code !== undefined) parts.push(`error=${log.error_code}`);
  if (log.http_response_code !== undefined) parts.push(`-> ${log.http_response_code}`);
  if (log.fail_action === 'fail-open' && log.significance.includes('FAIL_OPEN'))
    parts.push('(passed unscanned)');
  parts.push(`${log.duration} ms`);
  return parts.join(' ');
}

/** The JSON answer of POST /upload, for a file the ICAP server approved. */
export function uploadResult(fileName, data, icapInfo) {
  return {
    ok: true,
    file: fileName,
    size: data.length,
    sha256: createHash('sha256').update(data).digest('hex'),
    icap: { action: icapInfo?.action ?? 'ICAP_DISABLED' },
  };
}

/** The answer when the form had no file in the field `file`. */
export const NO_FILE = { ok: false, error: 'Send a multipart form with the file in the field "file".' };

/**
 * Whether the client asked for HTML rather than JSON (a browser submitting the form without
 * JavaScript): such clients get a small page instead of the JSON. curl (Accept: *\/*) and
 * fetch with Accept: application/json get JSON.
 */
export function wantsHtml(accept) {
  if (typeof accept !== 'string') return false;
  const q = (type) => {
    let best = -1;
    for (const part of accept.toLowerCase().split(',')) {
      const [t, ...params] = part.trim().split(';');
      if (t.trim() !== type) continue;
      const qp = params.map((p) => /^\s*q=([0-9.]+)\s*$/.exec(p)).find((m) => m !== null);
      best = Math.max(best, qp ? Number(qp[1]) : 1);
    }
    return best;
  };
  const html = q('text/html');
  return html > 0 && html > q('application/json');
}

/** The page a browser gets for an accepted upload when it posted the form without JavaScript. */
export function acceptedPage(result) {
  const passedUnscanned = result.icap.action === 'ICAP_FAILED';
  const heading = passedUnscanned
    ? `Accepted without a scan — ${result.file} (${formatSize(result.size)})`
    : `Clean — ${result.file} (${formatSize(result.size)}) was accepted`;
  return (
    '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">' +
    '<meta name="viewport" content="width=device-width, initial-scale=1">' +
    `<title>${escapeHtml(heading)}</title>` +
    '<style>body{font-family:system-ui,sans-serif;max-width:40rem;margin:4rem auto;padding:0 1rem;color:#222}' +
    `h1{font-size:1.4rem;color:${passedUnscanned ? '#8a5300' : '#17692f'}}code{font-size:.85rem;word-break:break-all}</style>` +
    `</head><body><h1>${escapeHtml(heading)}</h1>` +
    (passedUnscanned
      ? '<p>The content scanner could not be reached and the service is configured to let uploads through (ICAP_FAIL_OPEN=1).</p>'
      : '<p>The content scanner found no threat in this file.</p>') +
    `<p>SHA-256: <code>${result.sha256}</code></p><p>Scan: ${escapeHtml(result.icap.action)}</p>` +
    '<p><a href="/">Upload another file</a></p></body></html>\n'
  );
}

/** "68 bytes", "12.3 KB", "4.0 MB". */
export function formatSize(n) {
  if (n < 1024) return `${n} ${n === 1 ? 'byte' : 'bytes'}`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

export function escapeHtml(s) {
  return String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/**
 * What to print once the server listens: where the page is and how to try it with curl. The
 * EICAR test string is put together from its two halves by printf, so that no file of the
 * repository contains it (antivirus on developer machines would quarantine the file).
 */
export function banner({
  framework,
  url,
  icapUrl,
  serviceUri,
  embedded,
  failOpen,
  eicar,
  analyticsUrl,
  analyticsToken,
}) {
  const text = eicar.toString('latin1');
  const half = Math.floor(text.length / 2);
  const quote = (s) => `'${s.replace(/'/g, `'\\''`)}'`;
  const upload = `${url}/upload`;
  return [
    '',
    `icapkit ${framework} example: every upload is scanned by an ICAP server before the handler sees it`,
    '',
    `  upload page   ${url}/`,
    `  ICAP server   ${icapUrl}${serviceUri}${embedded ? '  (embedded @icapkit/testing server; ICAP_URL=icap://host:1344 for a real one)' : ''}`,
    `  on failure    ${failOpen ? 'fail-open: uploads pass unscanned' : 'fail-closed: 503 (ICAP_FAIL_OPEN=1 lets uploads pass unscanned)'}`,
    ...(analyticsUrl === undefined
      ? []
      : [
          `  log analytics ${analyticsUrl}  ${
            analyticsToken === undefined
              ? '(connections from this machine only; set ICAP_ANALYTICS_TOKEN to require a token instead)'
              : '(token required: any user name, the ICAP_ANALYTICS_TOKEN value as password)'
          }`,
        ]),
    '',
    'Try it:',
    `  curl -F file=@README.md ${upload}`,
    `  printf '%s%s' ${quote(text.slice(0, half))} ${quote(text.slice(half))} > /tmp/eicar.com`,
    `  curl -F file=@/tmp/eicar.com ${upload}`,
    '',
    'Ctrl-C stops it.',
    '',
  ].join('\n');
}

/** Runs `close` on Ctrl-C or SIGTERM; a second signal (or a close stuck for 10 s) exits at once. */
/**
 * Listens with a node:http server and returns the example's handle: its address, and close()
 * that stops the server, then each of `closers` (the analytics page, the middleware's ICAP
 * connections, the embedded ICAP server).
 */
export async function serve(server, { framework, config, icapUrl, embedded, closers }) {
  const closeAll = async () => {
    for (const close of closers) await close();
  };
  server.listen(config.port, config.host);
  try {
    await once(server, 'listening');
  } catch (err) {
    await closeAll();
    throw err; // e.g. EADDRINUSE
  }
  const { port } = server.address();
  let closed;
  return {
    framework,
    url: `http://${config.host}:${port}`,
    analyticsUrl: `http://${config.host}:${port}${ANALYTICS_PATH}/`,
    icapUrl,
    embedded,
    close() {
      closed ??= (async () => {
        server.closeAllConnections();
        await new Promise((resolve) => server.close(() => resolve()));
        await closeAll();
      })();
      return closed;
    },
  };
}

export function closeOnSignal(close, print = (line) => console.log(line)) {
  let closing = false;
  const onSignal = (signal) => {
    if (closing) process.exit(130);
    closing = true;
    print(`\n${signal}: closing the HTTP server, the ICAP connections and the ICAP server...`);
    setTimeout(() => {
      print('still not closed after 10 s: exiting');
      process.exit(1);
    }, 10_000).unref();
    close().then(
      () => {
        print('closed.');
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
      },
      (err) => {
        console.error(err);
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
}

/**
 * What `node examples/<name>/server.js` does: reads the settings from the environment, starts
 * the server (`start(config)` of the example), prints how to try it, and closes everything on
 * Ctrl-C / SIGTERM. A start-up problem (a port in use, a bad ICAP_URL) is one line, exit code 1.
 */
export async function main(start, eicar) {
  let config;
  let demo;
  try {
    config = configFromEnv();
    demo = await start(config);
  } catch (err) {
    if (err?.code === 'EADDRINUSE')
      console.error(
        `Port ${config.port} on ${config.host} is in use: set PORT to another one (PORT=0 picks a free one).`,
      );
    else console.error(`Could not start: ${err?.message ?? err}`);
    process.exit(1);
  }
  console.log(banner({ ...config, ...demo, eicar }));
  closeOnSignal(() => demo.close());
}

/** Whether the module at `moduleUrl` is the script node was started with. */
export function isMain(moduleUrl) {
  if (process.argv[1] === undefined) return false;
  try {
    return realpathSync(process.argv[1]) === realpathSync(fileURLToPath(moduleUrl));
  } catch {
    return false;
  }
}
