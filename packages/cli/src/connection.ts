import { readFileSync } from 'node:fs';
import { type IcapClientOptions, type IcapTlsOptions, maskUrl } from '@icapkit/core';
import { type IcapUrl, parseHeaders, parseIntOption, UsageError, VERSION } from './args.js';

/** Options shared by `scan` and `options`: how to reach the server. */
export const CONNECTION_OPTIONS = {
  'tls-ca': { type: 'string' },
  'tls-insecure': { type: 'boolean' },
  header: { type: 'string', multiple: true, short: 'H' },
  timeout: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

export interface ConnectionValues {
  'tls-ca'?: string | undefined;
  'tls-insecure'?: boolean | undefined;
  header?: string[] | undefined;
  timeout?: string | undefined;
}

/** IcapClient options from the command line. */
export function clientOptions(
  url: IcapUrl,
  values: ConnectionValues,
  defaults: { timeout: number; maxConnections: number },
): IcapClientOptions & { timeout: number } {
  const timeout =
    values.timeout === undefined
      ? defaults.timeout
      : parseIntOption(values.timeout, 'timeout', 1, 86_400_000);
  const { headers, userAgent } = parseHeaders(values.header ?? []);
  const caFile = values['tls-ca'];
  const insecure = values['tls-insecure'] === true;
  if ((caFile !== undefined || insecure) && !url.secure) {
    throw new UsageError(`--tls-ca and --tls-insecure need an icaps:// URL (got ${maskUrl(url.href)})`);
  }
  if (caFile !== undefined && insecure)
    throw new UsageError('--tls-ca and --tls-insecure exclude each other');
  let tls: IcapTlsOptions | undefined;
  if (url.secure) {
    tls = {};
    if (caFile !== undefined) {
      try {
        tls.ca = readFileSync(caFile);
      } catch (err) {
        throw new UsageError(`cannot read --tls-ca ${caFile}: ${(err as Error).message}`);
      }
    }
    if (insecure) tls.rejectUnauthorized = false;
  }
  return {
    url: url.server,
    tls,
    // Each file on a connection of its own, closed after its answer: ICAP answers carry no
    // request id, so an answer a server sends after its first (a second 204, a late block)
    // could otherwise be read as the next file's verdict on a kept-alive connection.
    headers: [...headers, ['Connection', 'close']],
    userAgent: userAgent ?? `icapkit-cli/${VERSION}`,
    timeout,
    // A slow connect should not use up the whole time of a file.
    connectTimeout: Math.min(timeout, 10_000),
    ioTimeout: Math.min(timeout, 60_000),
    maxConnections: defaults.maxConnections,
  };
}
