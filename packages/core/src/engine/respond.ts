/**
 * What the HTTP client sees when the middleware answers instead of the application: a small
 * HTML page or RFC 9457 problem details (JSON), chosen by `Accept`. Nothing about the ICAP
 * server (address, service, ISTag, raw headers) is revealed; the threat name and file name
 * are, since they help the person who uploaded the file.
 */

export type ResponseKind =
  | 'blocked'
  | 'too-large'
  | 'unavailable'
  | 'bad-request'
  | 'unsupported-type'
  | 'unsupported-transfer-coding'
  | 'timeout'
  | 'too-many'
  | 'misconfigured'
  | 'unscanned-route';

export interface ClientResponse {
  status: number;
  headers: Array<[string, string]>;
  body: Buffer;
}

export interface ResponseDetails {
  threat?: string | undefined;
  fileName?: string | undefined;
  /** Shown to the user in place of the default sentence. */
  detail?: string | undefined;
  /** Request id to quote to support. */
  requestId?: string | undefined;
  /** The request body was not read to its end: the connection must close after the response. */
  closeConnection?: boolean | undefined;
}

const TEXT: Record<ResponseKind, { status: number; title: string; detail: string }> = {
  blocked: {
    status: 403,
    title: 'Upload blocked',
    detail: 'The content scanner found a threat in this upload, so it was not accepted.',
  },
  'too-large': {
    status: 413,
    title: 'Upload too large to scan',
    detail: 'This upload is larger than the largest size the content scanner accepts.',
  },
  unavailable: {
    status: 503,
    title: 'Upload scanning unavailable',
    detail: 'The content scanner could not check this upload right now. Please try again later.',
  },
  'bad-request': {
    status: 400,
    title: 'Malformed upload',
    detail: 'This upload could not be read.',
  },
  'unsupported-type': {
    status: 415,
    title: 'Upload type not accepted',
    detail: 'This kind of upload is not accepted here.',
  },
  'unsupported-transfer-coding': {
    status: 501,
    title: 'Upload framing not supported',
    detail: 'This upload uses a transfer coding that is not supported here.',
  },
  timeout: {
    status: 408,
    title: 'Upload timed out',
    detail: 'This upload stopped arriving before it was complete, so it was not accepted.',
  },
  'too-many': {
    status: 429,
    title: 'Too many uploads at once',
    detail: 'Too many uploads from this address are still arriving. Please try again later.',
  },
  misconfigured: {
    status: 500,
    title: 'Upload not checked',
    detail: 'This server could not check this upload because of a configuration problem.',
  },
  'unscanned-route': {
    status: 403,
    title: 'Upload not accepted',
    detail:
      'This upload could not be matched to the checks its destination requires, so it was not accepted.',
  },
};

/** Whether the client prefers JSON over HTML (by `Accept` q-values). */
export function prefersJson(accept: string | undefined): boolean {
  if (accept === undefined || accept.trim() === '') return false;
  let json = -1;
  let html = -1;
  for (const part of accept.split(',')) {
    const [type, ...params] = part.trim().toLowerCase().split(';');
    let q = 1;
    for (const p of params) {
      const m = /^\s*q=([0-9.]+)\s*$/.exec(p);
      if (m !== null) q = Number(m[1]);
    }
    const t = (type ?? '').trim();
    if (t === 'application/json' || t === 'application/problem+json' || t.endsWith('+json'))
      json = Math.max(json, q);
    else if (t === 'text/html' || t === 'application/xhtml+xml') html = Math.max(html, q);
  }
  return json > 0 && json >= html;
}

export function buildResponse(
  kind: ResponseKind,
  accept: string | undefined,
  details: ResponseDetails = {},
): ClientResponse {
  const t = TEXT[kind];
  const detail = details.detail ?? t.detail;
  const headers: Array<[string, string]> = [
    ['Cache-Control', 'no-store'],
    ['X-Content-Type-Options', 'nosniff'],
  ];
  if (details.closeConnection) headers.push(['Connection', 'close']);
  if (kind === 'unavailable') headers.push(['Retry-After', '30']);
  let body: Buffer;
  if (prefersJson(accept)) {
    const problem: Record<string, unknown> = {
      type: `urn:icapkit:problem:${kind}`,
      title: t.title,
      status: t.status,
      detail,
    };
    if (details.threat !== undefined) problem.threat = details.threat;
    if (details.fileName !== undefined) problem.file = details.fileName;
    if (details.requestId !== undefined) problem.instance = `urn:request:${details.requestId}`;
    body = Buffer.from(JSON.stringify(problem));
    headers.push(['Content-Type', 'application/problem+json']);
  } else {
    const rows: string[] = [];
    if (details.fileName !== undefined)
      rows.push(`<p>File: <strong>${escapeHtml(details.fileName)}</strong></p>`);
    if (details.threat !== undefined)
      rows.push(`<p>Threat: <strong>${escapeHtml(details.threat)}</strong></p>`);
    if (details.requestId !== undefined)
      rows.push(`<p class="id">Reference: ${escapeHtml(details.requestId)}</p>`);
    body = Buffer.from(
      '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">' +
        '<meta name="viewport" content="width=device-width, initial-scale=1">' +
        `<title>${t.status} ${escapeHtml(t.title)}</title>` +
        '<style>body{font-family:system-ui,sans-serif;max-width:40rem;margin:4rem auto;padding:0 1rem;color:#222}' +
        'h1{font-size:1.4rem}.id{color:#666;font-size:.9rem}</style></head><body>' +
        `<h1>${escapeHtml(t.title)}</h1><p>${escapeHtml(detail)}</p>${rows.join('')}</body></html>\n`,
    );
    headers.push(['Content-Type', 'text/html; charset=utf-8']);
    headers.push(['Content-Security-Policy', "default-src 'none'; style-src 'unsafe-inline'"]);
  }
  headers.push(['Content-Length', String(body.length)]);
  return { status: t.status, headers, body };
}

export function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}
