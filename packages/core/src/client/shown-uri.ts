/**
 * A service URI as icapkit shows it (log records, error messages, warnings, telemetry, status):
 * its query's values masked. A service path may carry a credential in its query (`/scan?apikey=…`,
 * a token a vendor's gateway expects), and nothing icapkit writes about a request repeats it. The
 * parameters' names are kept (they say which options of the service were asked for); each value
 * becomes `***`, and a part without `=` is masked whole. Only the URI sent to the server has
 * the query as configured.
 */

const MASK = '***';

export function maskQuery(uri: string): string {
  const q = uri.indexOf('?');
  if (q === -1) return uri;
  let out = uri.slice(0, q + 1);
  const parts = uri.slice(q + 1).split('&');
  for (let i = 0; i < parts.length; i++) {
    const part = parts[i]!;
    if (i > 0) out += '&';
    if (part === '') continue;
    const eq = part.indexOf('=');
    out += eq === -1 ? MASK : `${part.slice(0, eq)}=${MASK}`;
  }
  return out;
}
