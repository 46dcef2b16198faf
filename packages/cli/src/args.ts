import { isToken, maskUrl } from '@icapkit/core';

export const VERSION = '0.1.0';

/** Exit codes of the icapkit command. */
export const ExitCode = {
  /** Every file clean (or modified by the server, or skipped by its Transfer-Ignore). */
  OK: 0,
  /** At least one file blocked, and no error. */
  BLOCKED: 1,
  /** At least one file could not be scanned (server down, timeout, protocol error, ICAP error status, unreadable file). */
  ERROR: 2,
  /** Bad arguments (sysexits EX_USAGE). */
  USAGE: 64,
} as const;

export type ExitCode = (typeof ExitCode)[keyof typeof ExitCode];

export const USAGE = `Usage:
  icapkit scan <file...> --server <icap-url> [options]
  icapkit options <icap-url> [--json] [connection options]
  icapkit --help | --version`;

export const HELP = `icapkit ${VERSION}: scan files with an ICAP (RFC 3507) server

${USAGE}

The ICAP URL names the server and the service: icap://host[:port]/service, or
icaps://host[:port]/service for ICAP over TLS (default ports 1344 and 11344),
for example icap://127.0.0.1:1344/avscan. ICAPKIT_SERVER is used when --server
(or the URL of "options") is not given.

scan: sends each file in a REQMOD (an encapsulated "POST /<file name>" with its
Content-Type, Content-Length and Content-Disposition) and prints one line per file,
in the order given:
  CLEAN    path
  BLOCKED  path  threat=<threat> reason=<reason>
  MODIFIED path (n bytes)              the server returned a different body
  SKIPPED  path  (Transfer-Ignore: ext, not sent)
  ERROR    path  ICAP_ERR_<CODE>: message

  --server <url>        ICAP server and service (or ICAPKIT_SERVER)
  --vendor <name>       how verdicts are read: generic (default), opswat, nsx-defender,
                        c-icap, kaspersky, eset, symantec, mcafee, trend-micro, sophos, f-secure
  --preview <n>         preview size in bytes (default 4096, capped by the server's Preview)
  --no-preview          send the whole file without a preview
  --no-204              do not offer Allow: 204 (the server returns the file)
  --header 'N: v'       extra ICAP request header (repeatable), e.g. an API key
  --timeout <ms>        time limit per file, response included (default 300000)
  --concurrency <n>     files scanned at once (default 4)
  --output-dir <dir>    write the bodies the server modified there, under their file names
  --transfer-ignore     skip (not send) files whose extension the server's Transfer-Ignore
                        lists; by default every file is sent (a file name is no verdict)
  --scan-all            send every file (the default; overrides --transfer-ignore)
  --json                one JSON object per file and line (no progress, no summary)

options: prints the service's OPTIONS (Methods, ISTag, Service, Preview, Allow 204,
Options-TTL, Max-Connections, Transfer-*). --json prints one JSON object. An answer
without the required ISTag or Methods header is printed, named on stderr, and exits 2.

Connection options (both commands):
  --tls-ca <file>       PEM CA certificate(s) to verify an icaps:// server with
  --tls-insecure        do not verify the icaps:// server certificate (testing only)
  --header, --timeout   as above

Exit codes:
  0   every file clean (or modified, or skipped); options: the OPTIONS were read
  1   at least one file blocked, and no error
  2   at least one error: the scan is incomplete (takes precedence over 1)
  64  bad arguments
  130 interrupted by SIGINT (143: SIGTERM); no temp file is left in --output-dir
`;

/** A problem with the command line: message and short usage on stderr, exit 64. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

/** A whole number in [min, max], for the option `name`. */
export function parseIntOption(value: string, name: string, min: number, max: number): number {
  const v = value.trim();
  if (!/^\d+$/.test(v)) throw new UsageError(`--${name} needs a whole number (got ${JSON.stringify(value)})`);
  const n = Number(v);
  if (n < min || n > max) throw new UsageError(`--${name} must be between ${min} and ${max} (got ${n})`);
  return n;
}

/** Headers set by the client itself, which --header must not repeat or override. */
const RESERVED_HEADERS = new Set(['host', 'encapsulated', 'preview', 'allow', 'connection']);

export interface ParsedHeaders {
  headers: Array<[string, string]>;
  /** A `User-Agent` given with --header replaces the client's. */
  userAgent: string | undefined;
}

/** `--header 'Name: value'` values. */
export function parseHeaders(values: readonly string[]): ParsedHeaders {
  const headers: Array<[string, string]> = [];
  let userAgent: string | undefined;
  for (const raw of values) {
    const colon = raw.indexOf(':');
    const name = colon === -1 ? raw.trim() : raw.slice(0, colon).trim();
    const value = colon === -1 ? '' : raw.slice(colon + 1).trim();
    if (colon === -1 || !isToken(name)) {
      throw new UsageError(`--header needs 'Name: value' (got ${headerShown(raw)})`);
    }
    if (/[\r\n\0]/.test(value)) throw new UsageError(`--header ${name} has CR, LF or NUL in its value`);
    const key = name.toLowerCase();
    if (RESERVED_HEADERS.has(key)) {
      throw new UsageError(`--header cannot set ${name}: the client sets it (see --preview, --no-204)`);
    }
    if (key === 'user-agent') userAgent = value;
    else headers.push([name, value]);
  }
  return { headers, userAgent };
}

/**
 * What a malformed --header is shown as: only what looks like its name (the text before the
 * first space or colon, at most 40 characters), never the rest, which may be a secret. A single
 * word without a colon may be the value alone (an API key), so it is not shown at all.
 */
function headerShown(raw: string): string {
  const text = raw.trim();
  const end = text.search(/[\s:]/);
  if (end === -1) return 'a value without a name';
  const name = text.slice(0, end);
  if (name === '' || !isToken(name)) return 'no header name';
  return `a header named ${JSON.stringify(name.length > 40 ? `${name.slice(0, 40)}...` : name)}`;
}

export interface IcapUrl {
  /** `icap://host:port` (what IcapClient takes). */
  server: string;
  /** Path and query: the service, e.g. `/avscan` or `/srv?mode=x`. */
  service: string;
  secure: boolean;
  /** The URL as given, for messages. */
  href: string;
}

/** An ICAP URL that names a service. */
export function parseIcapUrl(value: string, what: string): IcapUrl {
  // The URL as shown in messages: any user:password@ masked, whether or not it parses.
  const shown = JSON.stringify(maskUrl(value));
  let u: URL;
  try {
    u = new URL(value);
  } catch {
    throw new UsageError(`${what} is not a URL: ${shown} (expected icap://host:1344/service)`);
  }
  if (u.protocol !== 'icap:' && u.protocol !== 'icaps:') {
    throw new UsageError(`${what} must start with icap:// or icaps:// (got ${shown})`);
  }
  if (u.hostname === '') throw new UsageError(`${what} has no host: ${shown}`);
  if (u.username !== '' || u.password !== '') {
    throw new UsageError(`${what} cannot carry credentials; send them with --header`);
  }
  const path = u.pathname === '' ? '/' : u.pathname;
  if (path === '/') {
    throw new UsageError(`${what} must name the ICAP service, e.g. ${u.protocol}//${u.host}/avscan`);
  }
  return {
    server: `${u.protocol}//${u.host}`,
    service: `${path}${u.search}`,
    secure: u.protocol === 'icaps:',
    href: value,
  };
}
