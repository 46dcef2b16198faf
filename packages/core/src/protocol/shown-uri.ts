/**
 * An ICAP URI (or a service path) as icapkit shows it (log records, error messages, warnings,
 * telemetry, status): its arguments' values masked. A service path may carry a credential in
 * its query (`/scan?apikey=…`, a token a vendor's gateway expects), or after a `;` or a `#`,
 * and nothing icapkit writes about a request repeats it. Everything from the first `?`, `;` or
 * `#` on is arguments: their names are kept (they say which options of the service were asked
 * for), each value becomes `***`, and an argument without `=` is masked whole. Only the URI sent
 * to the server has them as configured. `maskUrl` is the stricter form for URLs a user wrote
 * (server URLs, templates): credentials and the whole query or fragment masked.
 */

const MASK = '***';
const ARGUMENTS = /[?;#]/;
const SEPARATOR = /[?;#&]/;

export function maskQuery(uri: string): string {
  const start = uri.search(ARGUMENTS);
  if (start === -1) return uri;
  let out = uri.slice(0, start);
  let i = start;
  while (i < uri.length) {
    // A separator, then an argument up to the next one.
    out += uri[i];
    i++;
    let end = i;
    while (end < uri.length && !SEPARATOR.test(uri[end]!)) end++;
    const part = uri.slice(i, end);
    if (part !== '') {
      const eq = part.indexOf('=');
      out += eq === -1 ? MASK : `${part.slice(0, eq)}=${MASK}`;
    }
    i = end;
  }
  return out;
}

/**
 * A URL (or text meant as one) for an error message, with anything that may be a password
 * masked, whether or not the text parses: the text between `//` (or the scheme's `:`) and the
 * last `@`, and any query or fragment, become `***`.
 * `icaps://user:pass@host:11344/?key=k` -> `icaps://***@host:11344/?***`.
 */
export function maskUrl(text: string): string {
  const at = text.lastIndexOf('@');
  let out = text;
  if (at >= 0) {
    const slashes = text.indexOf('//');
    const colon = /^[a-zA-Z][a-zA-Z0-9+.-]*:/.exec(text)?.[0].length ?? 0;
    const start = slashes >= 0 && slashes < at ? slashes + 2 : colon;
    out = `${text.slice(0, start)}***${text.slice(at)}`;
  }
  // A query or fragment may carry a key too (`?apikey=...`): only its first character is shown.
  return out.replace(/([?#])[\s\S]*$/, '$1***');
}
