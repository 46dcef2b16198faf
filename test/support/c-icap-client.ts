/**
 * Runs Debian's `c-icap-client` (package c-icap), a reference ICAP client, and turns its
 * verbose output into a verdict. Used to check the test server itself and to compare
 * icapkit's behaviour with an independent client.
 *
 * What c-icap-client 0.5.10 prints with `-v` (to stderr; the returned body goes to stdout):
 *
 *     ICAP server:127.0.0.1, ip:127.0.0.1, port:1344
 *     <blank>
 *     No modification needed (Allow 204 response)      (only for a 204)
 *     <blank>
 *     ICAP HEADERS:
 *     \tICAP/1.0 200 OK
 *     \tX-Infection-Found: Type=0; Resolution=2; Threat=Eicar-Test-Signature.UNOFFICIAL;
 *     \tX-Violations-Found: 1
 *     \t-                                               (continuation lines of a folded header
 *     \tEicar-Test-Signature.UNOFFICIAL                  are printed as lines of their own)
 *     \tEncapsulated: res-hdr=0, res-body=108
 *     <blank>
 *     RESPMOD HEADERS:                                  (REQMOD HEADERS: for a returned request)
 *     \tHTTP/1.0 403 Forbidden
 *     ...
 *
 * For a 204 the "REQMOD HEADERS" section repeats the request that was sent. When the server
 * answers with an ICAP error (e.g. 404 for an unknown service) the ICAP HEADERS section is
 * empty and the exit code is still 0. It exits with 255 when it cannot connect.
 */
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';

export type CIcapClientVerdict = 'clean' | 'blocked' | 'modified' | 'error';

export interface CIcapClientOptions {
  host: string;
  port: number;
  service: string;
  /** File to send. Without it c-icap-client only sends OPTIONS. */
  file?: string;
  /** Preview size (-w). Default: what the server's OPTIONS advertised. */
  preview?: number;
  /** Send no preview at all (-nopreview). */
  noPreview?: boolean;
  /** Do not offer `Allow: 204` outside the preview (-no204). */
  no204?: boolean;
  /** ICAPS (-tls). Without caFile the certificate is not verified (-tls-no-verify). */
  tls?: boolean;
  /** With tls: verify the server certificate against this PEM (passed as SSL_CERT_FILE). */
  caFile?: string;
  /** REQMOD (`-req <url>`); default RESPMOD (`-resp <url>`). */
  reqmod?: boolean;
  /** URL of the encapsulated HTTP message. Default http://localhost/icapkit-upload. */
  url?: string;
  /** HTTP method of the encapsulated request for REQMOD (-method). c-icap-client defaults to GET. */
  method?: string;
  /** Extra ICAP request headers (-x), e.g. 'X-Client-IP: 127.0.0.1'. */
  icapHeaders?: string[];
  /** Kill the client after this long. Default 30 s. */
  timeoutMs?: number;
}

export interface CIcapClientResult {
  verdict: CIcapClientVerdict;
  /** ICAP status code (null when none was printed: connection failure or ICAP error status). */
  status: number | null;
  /** Threat name from `X-Infection-Found: ...; Threat=NAME;`. */
  threat: string | null;
  stdout: string;
  stderr: string;
  /** Exit code of c-icap-client (null if it was killed). */
  exitCode: number | null;
  /** ICAP response headers, names lower-cased, folded values joined with a space. */
  icapHeaders: Record<string, string>;
  /** Status line of the encapsulated HTTP message the server returned, if any. */
  httpStatusLine: string | null;
  /** Status code of an encapsulated HTTP response (e.g. 403 for a block page). */
  httpStatus: number | null;
  /** With a file and a 200: whether the returned body equals the file (null otherwise). */
  bodyEqualsInput: boolean | null;
}

interface Sections {
  icap: string[];
  http: string[];
  allow204Message: boolean;
}

function splitSections(text: string): Sections {
  const icap: string[] = [];
  const http: string[] = [];
  let current: string[] | null = null;
  let allow204Message = false;
  for (const raw of text.split(/\r?\n/)) {
    if (raw === 'ICAP HEADERS:') {
      current = icap;
      continue;
    }
    if (raw === 'REQMOD HEADERS:' || raw === 'RESPMOD HEADERS:') {
      current = http;
      continue;
    }
    if (raw.startsWith('No modification needed')) allow204Message = true;
    if (raw.startsWith('\t') && current) current.push(raw.slice(1));
    else current = raw.trim() === '' ? current : null;
  }
  return { icap, http, allow204Message };
}

const HEADER_LINE = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+):\s*(.*)$/;

function parseHeaders(lines: string[]): Record<string, string> {
  const headers: Record<string, string> = {};
  let last: string | null = null;
  for (const line of lines) {
    const m = HEADER_LINE.exec(line);
    if (m?.[1] !== undefined) {
      last = m[1].toLowerCase();
      const value = (m[2] ?? '').trim();
      headers[last] = headers[last] !== undefined ? `${headers[last]}, ${value}` : value;
    } else if (last !== null && line.trim() !== '') {
      // c-icap-client prints the continuation lines of a folded header on lines of their own.
      headers[last] = `${headers[last]} ${line.trim()}`.trim();
    }
  }
  return headers;
}

/** Parses c-icap-client's verbose output (exported for unit tests of the parser itself). */
export function parseCIcapClientOutput(
  stderr: string,
  exitCode: number | null,
): Omit<CIcapClientResult, 'stdout' | 'stderr' | 'exitCode' | 'bodyEqualsInput'> {
  const { icap, http } = splitSections(stderr);
  const statusLine = icap.find((l) => /^ICAP\/\d\.\d \d{3}/.test(l)) ?? null;
  const status = statusLine ? Number(statusLine.slice(9, 12)) : null;
  const icapHeaders = parseHeaders(icap.filter((l) => l !== statusLine));
  const threat = /Threat=([^;]+);?/.exec(icapHeaders['x-infection-found'] ?? '')?.[1]?.trim() ?? null;

  // For a 204 the HTTP section only repeats what was sent, so it says nothing about the answer.
  const httpStatusLine = status === 200 || status === 206 ? (http[0] ?? null) : null;
  const httpStatusMatch = httpStatusLine ? /^HTTP\/\d\.\d (\d{3})/.exec(httpStatusLine) : null;
  const httpStatus = httpStatusMatch?.[1] !== undefined ? Number(httpStatusMatch[1]) : null;

  let verdict: CIcapClientVerdict;
  if (exitCode !== 0 || status === null) verdict = 'error';
  else if (icapHeaders['x-infection-found'] !== undefined || httpStatus === 403) verdict = 'blocked';
  else if (status === 204) verdict = 'clean';
  else if (status === 200 || status === 206) verdict = 'modified';
  else verdict = 'error';
  return { verdict, status, threat, icapHeaders, httpStatusLine, httpStatus };
}

/** Runs c-icap-client once. Never rejects for ICAP-level outcomes; rejects only if it cannot be spawned. */
export async function runCIcapClient(opts: CIcapClientOptions): Promise<CIcapClientResult> {
  const args = ['-i', opts.host, '-p', String(opts.port), '-s', opts.service, '-v'];
  if (opts.file !== undefined) {
    args.push('-f', opts.file);
    const url = opts.url ?? 'http://localhost/icapkit-upload';
    args.push(opts.reqmod ? '-req' : '-resp', url);
    if (opts.reqmod && opts.method) args.push('-method', opts.method);
  }
  if (opts.preview !== undefined) args.push('-w', String(opts.preview));
  if (opts.noPreview) args.push('-nopreview');
  if (opts.no204) args.push('-no204');
  if (opts.tls) {
    args.push('-tls');
    if (opts.caFile === undefined) args.push('-tls-no-verify');
  }
  for (const h of opts.icapHeaders ?? []) args.push('-x', h);

  const env: NodeJS.ProcessEnv = { ...process.env };
  if (opts.tls && opts.caFile !== undefined) env.SSL_CERT_FILE = opts.caFile;

  const { stdout, stderr, exitCode } = await new Promise<{
    stdout: Buffer;
    stderr: string;
    exitCode: number | null;
  }>((resolve, reject) => {
    execFile(
      'c-icap-client',
      args,
      {
        env,
        encoding: 'buffer',
        timeout: opts.timeoutMs ?? 30_000,
        killSignal: 'SIGKILL',
        maxBuffer: 256 * 1024 * 1024,
      },
      (err, out, errOut) => {
        const code = err === null ? 0 : typeof err.code === 'number' ? err.code : null;
        if (err !== null && typeof err.code === 'string') {
          reject(new Error(`c-icap-client could not run: ${err.message}`));
          return;
        }
        resolve({ stdout: out, stderr: errOut.toString('utf8'), exitCode: code });
      },
    );
  });

  const parsed = parseCIcapClientOutput(stderr, exitCode);
  let bodyEqualsInput: boolean | null = null;
  if (opts.file !== undefined && parsed.status === 200) {
    bodyEqualsInput = stdout.equals(await readFile(opts.file));
  }
  return { ...parsed, stdout: stdout.toString('utf8'), stderr, exitCode, bodyEqualsInput };
}
