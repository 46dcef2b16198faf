import { parseArgs } from 'node:util';
import { IcapClient, IcapError, type IcapServiceOptions, maskUrl } from '@icapkit/core';
import { ExitCode, parseIcapUrl, UsageError } from './args.js';
import { CONNECTION_OPTIONS, clientOptions } from './connection.js';
import type { CliIo } from './io.js';
import { renderText } from './text.js';

const OPTIONS_OPTIONS = {
  ...CONNECTION_OPTIONS,
  json: { type: 'boolean' },
} as const;

const DEFAULT_TIMEOUT = 30_000;

/** What `icapkit options --json` prints. */
export interface OptionsReport {
  url: string;
  methods: string[];
  istag: string | null;
  /** The `Service` header: the server's description of the service. */
  service: string | null;
  serviceId: string | null;
  /** Preview bytes the server wants; null: it takes no preview. */
  preview: number | null;
  allow204: boolean;
  /** Seconds. */
  optionsTtl: number | null;
  maxConnections: number | null;
  transferPreview: string[];
  transferIgnore: string[];
  transferComplete: string[];
  xInclude: string[];
  /** Every OPTIONS response header, names lower-cased. */
  headers: Record<string, string | string[]>;
  /** Required headers (RFC 3507 §4.10.2: `ISTag`, `Methods`) the response lacks; the exit code is then 2. */
  missingHeaders: string[];
  /** Numeric headers whose value is not a whole number (`Name: "value"`), read as absent; the exit code is then 2. */
  malformedHeaders: string[];
}

export function optionsReport(url: string, o: IcapServiceOptions): OptionsReport {
  return {
    url,
    methods: o.methods,
    istag: o.istag ?? null,
    service: o.service ?? null,
    serviceId: o.serviceId ?? null,
    preview: o.preview ?? null,
    allow204: o.allow204,
    optionsTtl: o.optionsTtl ?? null,
    maxConnections: o.maxConnections ?? null,
    transferPreview: o.transferPreview,
    transferIgnore: o.transferIgnore,
    transferComplete: o.transferComplete,
    xInclude: o.include,
    headers: o.headers.toObject(),
    missingHeaders: o.missingHeaders,
    malformedHeaders: o.malformedHeaders,
  };
}

export function formatOptions(r: OptionsReport): string {
  // Every value the server sent is rendered without control characters (`\x1b` and so on).
  const list = (v: string[]) => (v.length === 0 ? '-' : v.map(renderText).join(', '));
  const one = (v: string | null) => (v === null ? '-' : renderText(v));
  const rows: Array<[string, string]> = [
    ['Methods', list(r.methods)],
    ['ISTag', one(r.istag)],
    ['Service', one(r.service)],
    ['Service-ID', one(r.serviceId)],
    ['Preview', r.preview === null ? 'none (no preview)' : `${r.preview} bytes`],
    ['Allow 204', r.allow204 ? 'yes' : 'no'],
    ['Options-TTL', r.optionsTtl === null ? '-' : `${r.optionsTtl} s`],
    ['Max-Connections', r.maxConnections === null ? '-' : String(r.maxConnections)],
    ['Transfer-Preview', list(r.transferPreview)],
    ['Transfer-Ignore', list(r.transferIgnore)],
    ['Transfer-Complete', list(r.transferComplete)],
  ];
  if (r.xInclude.length > 0) rows.push(['X-Include', list(r.xInclude)]);
  const width = Math.max(...rows.map(([k]) => k.length)) + 2;
  return `${renderText(r.url)}\n${rows.map(([k, v]) => `  ${`${k}:`.padEnd(width)}${v}\n`).join('')}`;
}

/** `icapkit options <url>` without the command word. */
export async function runOptions(argv: string[], io: CliIo, help: () => number): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: OPTIONS_OPTIONS,
    allowPositionals: true,
    strict: true,
  });
  if (values.help) return help();
  if (positionals.length > 1) throw new UsageError('options takes one ICAP URL');
  const given = positionals[0] ?? io.env.ICAPKIT_SERVER;
  if (given === undefined || given === '') {
    throw new UsageError('options needs an ICAP URL, e.g. icap://127.0.0.1:1344/avscan');
  }
  const url = parseIcapUrl(given, 'the ICAP URL');
  const client = new IcapClient(clientOptions(url, values, { timeout: DEFAULT_TIMEOUT, maxConnections: 1 }));
  try {
    // The URL as shown: credentials and arguments masked (a key in its query stays out of logs).
    const report = optionsReport(maskUrl(given), await client.options(url.service));
    io.stdout.write(values.json ? `${JSON.stringify(report)}\n` : formatOptions(report));
    if (report.missingHeaders.length > 0) {
      // Not an ICAP server as RFC 3507 describes one: say which headers, and fail.
      io.stderr.write(
        `icapkit: the OPTIONS response lacks required header${report.missingHeaders.length > 1 ? 's' : ''}: ${report.missingHeaders.join(', ')}\n`,
      );
    }
    if (report.malformedHeaders.length > 0) {
      io.stderr.write(
        `icapkit: the OPTIONS response has ${renderText(report.malformedHeaders.join(', '))}, not a whole number (read as absent)\n`,
      );
    }
    if (report.missingHeaders.length > 0 || report.malformedHeaders.length > 0) return ExitCode.ERROR;
    return ExitCode.OK;
  } catch (err) {
    const code = err instanceof IcapError ? err.code : 'ICAP_ERR_PROTOCOL';
    const message = err instanceof Error ? err.message : String(err);
    if (values.json)
      io.stdout.write(`${JSON.stringify({ url: maskUrl(given), errorCode: code, error: message })}\n`);
    else io.stderr.write(`icapkit: ${code}: ${renderText(message)}\n`);
    return ExitCode.ERROR;
  } finally {
    client.destroy();
  }
}
