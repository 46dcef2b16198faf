/**
 * The embedded server's vendor styles on the wire: for an EICAR upload, each style answers with
 * its ICAP status, its headers, its Encapsulated shape (or none) and its block page; a clean
 * upload gets the style's clean headers.
 */
import { IcapClient, isSkipped } from '@icapkit/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  EICAR_NAME,
  eicar,
  type IcapTestServer,
  startIcapServer,
  VENDOR_STYLES,
  type VendorStyle,
} from '../src/index.js';

interface Shape {
  status: number;
  /** The Encapsulated header, as a pattern; null: none. */
  encapsulated: RegExp | null;
  /** Encapsulated HTTP status line, when there is one. */
  http?: string;
  /** ICAP headers that must be there (value or pattern). */
  headers: Record<string, string | RegExp>;
  /** Encapsulated HTTP headers that must be there. */
  httpHeaders?: Record<string, string>;
  /** Headers of the clean answer. */
  clean?: Record<string, string>;
}

const PAGE = /^res-hdr=0, res-body=\d+$/;
const SHAPES: Record<VendorStyle, Shape> = {
  'c-icap': {
    status: 200,
    encapsulated: PAGE,
    http: '403 Forbidden',
    headers: {
      'x-infection-found': `Type=0; Resolution=2; Threat=${EICAR_NAME};`,
      'x-violations-found': /^1 /,
    },
  },
  opswat: {
    status: 200,
    encapsulated: PAGE,
    http: '403 Forbidden',
    headers: { 'x-response-info': 'Blocked', 'x-blocked-reason': 'Infected' },
    clean: { 'x-response-info': 'Allowed' },
  },
  'nsx-defender': {
    status: 200,
    encapsulated: PAGE,
    http: '403 Forbidden',
    headers: { 'x-infection-found': /^Type=0;Resolution=1;Threat=LastlineArtifact\(/ },
  },
  kaspersky: {
    status: 200,
    encapsulated: PAGE,
    http: '403 Forbidden',
    headers: { 'x-virus-id': EICAR_NAME, 'x-response-info': 'blocked' },
    clean: { 'x-virus-id': 'no threats', 'x-response-info': 'passed' },
  },
  eset: {
    status: 200,
    encapsulated: /^res-hdr=0, null-body=\d+$/,
    http: '403 Forbidden',
    headers: {
      'x-infection-found': `Type=0; Resolution=0; Threat=${EICAR_NAME};`,
      'x-virus-id': 'Testdatei',
      'x-response-description': 'Gelöscht',
    },
    httpHeaders: { 'content-length': '0' },
  },
  symantec: {
    status: 201,
    encapsulated: PAGE,
    http: '403 Forbidden',
    headers: { 'x-infection-found': /Threat=Eicar-Test-Signature;/, 'x-violations-found': /^1 / },
  },
  mcafee: {
    status: 200,
    encapsulated: PAGE,
    http: '403 VirusFound',
    headers: { 'x-virus-name': EICAR_NAME, 'x-mwg-block-reason': 'Virus found' },
  },
  'trend-micro': {
    status: 200,
    encapsulated: PAGE,
    http: '403 Forbidden (TMWS Blocked)',
    headers: { 'x-virus-id': EICAR_NAME },
  },
  sophos: {
    status: 200,
    encapsulated: PAGE,
    http: '403 Forbidden',
    headers: { 'x-virus-id': EICAR_NAME },
    httpHeaders: { 'x-blocked': 'Virus found during virus scan', 'x-blocked-by': 'Sophos Anti-Virus' },
  },
  'f-secure': {
    status: 200,
    encapsulated: PAGE,
    http: '403 Forbidden',
    headers: { 'x-fsecure-scan-result': 'infected', 'x-fsecure-infection-name': EICAR_NAME },
    clean: { 'x-fsecure-scan-result': 'clean' },
  },
  squidclamav: {
    status: 200,
    encapsulated: /^res-hdr=0, null-body=\d+$/,
    http: '307 Temporary Redirect',
    headers: { 'x-virus-id': EICAR_NAME },
    httpHeaders: { location: 'http://127.0.0.1/virus-found.html' },
  },
  'icap-403': {
    status: 403,
    encapsulated: null,
    headers: { 'x-blocked-reason': 'Infected', 'x-infection-found': /Threat=Eicar-Test-Signature;/ },
  },
  'icap-405': { status: 405, encapsulated: /^null-body=0$/, headers: { 'x-virus-id': EICAR_NAME } },
  'icap-418': { status: 418, encapsulated: /^null-body=0$/, headers: { 'x-virus-id': EICAR_NAME } },
  'icap-539': {
    status: 539,
    encapsulated: /^null-body=0$/,
    headers: { 'x-infection-found': /Threat=Eicar/, 'x-violations-found': /^1 / },
  },
  'icap-500': { status: 500, encapsulated: /^null-body=0$/, headers: { 'x-blocked-reason': 'Infected' } },
  'icap-204': { status: 204, encapsulated: null, headers: { 'x-virus-id': EICAR_NAME } },
};

const servers = new Map<VendorStyle, IcapTestServer>();

beforeAll(async () => {
  for (const style of VENDOR_STYLES) servers.set(style, await startIcapServer({ vendor: style }));
}, 30_000);

afterAll(async () => {
  for (const s of servers.values()) await s.close();
});

async function reqmod(style: VendorStyle, body: Buffer) {
  const client = new IcapClient({ url: servers.get(style)!.url() });
  try {
    const r = await client.request({
      method: 'REQMOD',
      service: '/avscan',
      httpRequest: { method: 'POST', target: '/upload/eicar.com', headers: { host: 'app' } },
      body,
      allow204: true,
    });
    if (isSkipped(r)) throw new Error('skipped');
    const chunks: Buffer[] = [];
    if (r.body !== null) for await (const c of r.body as AsyncIterable<Buffer>) chunks.push(c);
    await r.done;
    return { r, page: Buffer.concat(chunks) };
  } finally {
    client.destroy();
  }
}

describe.each(VENDOR_STYLES)('vendor style %s', (style) => {
  const shape = SHAPES[style];

  it('answers an EICAR upload in its shape', async () => {
    const { r, page } = await reqmod(style, eicar());
    expect(r.status).toBe(shape.status);
    const encapsulated = r.headers.get('encapsulated');
    if (shape.encapsulated === null) expect(encapsulated).toBeUndefined();
    else expect(encapsulated).toMatch(shape.encapsulated);
    for (const [name, value] of Object.entries(shape.headers)) {
      if (typeof value === 'string') expect(r.headers.get(name), name).toBe(value);
      else expect(r.headers.get(name), name).toMatch(value);
    }
    if (shape.http === undefined) {
      expect(r.httpResponse).toBeNull();
    } else {
      expect(`${r.httpResponse?.status} ${r.httpResponse?.reason}`).toBe(shape.http);
      for (const [name, value] of Object.entries(shape.httpHeaders ?? {}))
        expect(r.httpResponse?.headers.get(name), name).toBe(value);
      if (shape.encapsulated?.source.includes('res-body')) expect(page.toString()).toContain('VIRUS FOUND');
      else expect(page.length).toBe(0);
    }
    expect(servers.get(style)!.requests.at(-1)?.status).toBe(shape.status);
  });

  it('answers a clean upload with a 204 and its clean headers', async () => {
    const { r } = await reqmod(style, Buffer.from('nothing to see'));
    expect(r.status).toBe(204);
    for (const [name, value] of Object.entries(shape.clean ?? {}))
      expect(r.headers.get(name), name).toBe(value);
    if (shape.clean === undefined) expect(r.headers.has('x-virus-id')).toBe(false);
  });
});
