/**
 * A multipart form passed after its per-file scan (multipart/parts.ts's FormPass): the
 * canonical form's stream is made only when read; the adapters take its Buffers through the
 * outcome's held replay (`handoffBody`) instead. Either way the application gets the same bytes
 * and headers, the same log record; disposed before it is read, neither way gives bytes or an
 * end; a failure passed open and a stripped part (rewrite) read the same form.
 */
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Readable } from 'node:stream';
import {
  createEngine,
  handoffBody,
  type IcapEngine,
  type IcapProfile,
  rearmRequest,
  type ScanOutcome,
} from '@icapkit/core';
import { eicar, type IcapTestServer, startIcapServer } from '@icapkit/testing';
import { afterEach, describe, expect, it } from 'vitest';
import { emittedSoon, readBody } from '../../packages/core/test/engine/held-body.js';
import { multipart } from '../support/http-client.js';

/** How the handler hands the outcome's body to the request, and when it disposes of it. */
type Way = 'handoffBody' | 'outcome.body';

interface Result {
  status: number;
  bytes: string;
  headers: IncomingMessage['headers'];
  emitted?: { chunks: number; ended: boolean };
}

let icap: IcapTestServer | undefined;
let engine: IcapEngine | undefined;
let server: Server | undefined;
const outcomes: ScanOutcome[] = [];
/** Whether each body handed over was a stream (the outcome's `body`) or the held form. */
const givenStream: boolean[] = [];

afterEach(async () => {
  if (server !== undefined) {
    server.closeAllConnections();
    await new Promise<void>((r) => server!.close(() => r()));
  }
  await engine?.close();
  await icap?.close();
  server = engine = icap = undefined;
  outcomes.length = 0;
  givenStream.length = 0;
});

async function setup(profile: Partial<IcapProfile> = {}, icapUp = true): Promise<string> {
  icap = await startIcapServer({});
  let url = icap.url();
  if (!icapUp) {
    // A server that is gone: every REQMOD fails to connect.
    await icap.close();
    icap = undefined;
  }
  engine = createEngine({ name: 'form-pass', poolGroup: url, serviceUri: '/avscan', ...profile });
  const e = engine;
  server = createServer(async (req, res) => {
    const way = req.headers['x-way'] as Way;
    const disposeFirst = req.headers['x-dispose-first'] === '1';
    const outcome = await e.scan(req);
    outcomes.push(outcome);
    if (outcome.kind !== 'pass' && outcome.kind !== 'rewrite') {
      outcome.dispose();
      res.writeHead(outcome.kind === 'respond' ? outcome.status : 500);
      res.end();
      return;
    }
    if (outcome.kind === 'rewrite') {
      rearmRequest(req, {
        body: outcome.body,
        contentLength: outcome.contentLength,
        headers: outcome.headers,
        method: outcome.method,
        url: outcome.url,
      });
    } else {
      const body = way === 'handoffBody' ? handoffBody(outcome) : outcome.body;
      givenStream.push(typeof (body as Readable).on === 'function');
      rearmRequest(req, { body: body!, contentLength: outcome.contentLength ?? 0, headers: outcome.headers });
    }
    if (disposeFirst) {
      // What the adapters' dispose does when the response closes before the application read.
      outcome.dispose();
      const emitted = await emittedSoon(req);
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ bytes: '', headers: req.headers, emitted }));
      return;
    }
    const { bytes } = await readBody(req);
    outcome.dispose();
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ bytes: bytes.toString('hex'), headers: req.headers }));
  });
  await new Promise<void>((r) => server!.listen(0, '127.0.0.1', r));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return url;
}

async function post(
  url: string,
  form: { body: Buffer; contentType: string },
  way: Way,
  disposeFirst = false,
) {
  const res = await fetch(`${url}/upload`, {
    method: 'POST',
    body: form.body,
    headers: { 'content-type': form.contentType, 'x-way': way, 'x-dispose-first': disposeFirst ? '1' : '0' },
  });
  const text = await res.text();
  const out: Result = { status: res.status, bytes: '', headers: {} };
  if (res.status === 200) Object.assign(out, JSON.parse(text) as Partial<Result>);
  return out;
}

function pattern(n: number, seed: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed + (i >> 8)) & 0xff;
  return b;
}

const FORM = multipart([
  { name: 'title', data: 'five files' },
  ...[70 * 1024, 1, 0, 200 * 1024, 3000].map((n, i) => ({
    name: `f${i}`,
    filename: `d${i}.bin`,
    type: 'application/octet-stream',
    data: pattern(n, i),
  })),
]);

/** The form with its boundary (fresh per request) replaced, and the headers that name it. */
function comparable(r: Result) {
  const ct = String(r.headers['content-type']);
  const boundary = ct.slice(ct.indexOf('boundary=') + 9);
  return {
    status: r.status,
    bytes: Buffer.from(r.bytes, 'hex').toString('latin1').replaceAll(boundary, 'B'),
    length: r.headers['content-length'],
    type: ct.replace(boundary, 'B'),
    emitted: r.emitted,
  };
}

/** The log records without what differs between two requests (times, ports, the boundary). */
function logShape(o: ScanOutcome) {
  return {
    action: o.log.action,
    significance: o.log.significance,
    file_names: o.log.file_names,
    requests: o.log.request_logs.map((e) => [e.action, e.icap_response_code, e.file_name]),
  };
}

describe('a multipart form passed without its stream made', () => {
  it('clean: the same form, headers and log record either way; the parts as sent', async () => {
    const url = await setup();
    const a = await post(url, FORM, 'handoffBody');
    const b = await post(url, FORM, 'outcome.body');
    expect(a.status).toBe(200);
    expect(comparable(a)).toEqual(comparable(b));
    expect(logShape(outcomes[0]!)).toEqual(logShape(outcomes[1]!));
    expect(outcomes[0]!.action).toBe('ICAP_PASSED');
    // The first was handed over without a stream (the held form), the second as the stream.
    expect(givenStream).toEqual([false, true]);
    const bytes = Buffer.from(a.bytes, 'hex');
    expect(String(bytes.length)).toBe(a.headers['content-length']);
    expect(bytes.includes(pattern(200 * 1024, 3))).toBe(true);
  });

  it('disposed before the application read it: no bytes and no end, either way', async () => {
    const url = await setup();
    const a = await post(url, FORM, 'handoffBody', true);
    const b = await post(url, FORM, 'outcome.body', true);
    expect(a.emitted).toEqual({ chunks: 0, ended: false });
    expect(b.emitted).toEqual(a.emitted);
  });

  it('ICAP failing with fail-open: the same form either way (ICAP_FAILED)', async () => {
    const url = await setup({ failAction: 'fail-open' }, false);
    const a = await post(url, FORM, 'handoffBody');
    const b = await post(url, FORM, 'outcome.body');
    expect(a.status).toBe(200);
    // (The records differ by the server's health: the second request finds it suspended.)
    expect(outcomes.map((o) => o.action)).toEqual(['ICAP_FAILED', 'ICAP_FAILED']);
    expect(comparable(a)).toEqual(comparable(b));
  });

  it('a threat in one part with infectedPartAction strip: the rest of the form, read through its stream', async () => {
    const url = await setup({ infectedPartAction: 'strip' });
    const form = multipart([
      { name: 'title', data: 'one bad file' },
      { name: 'good', filename: 'good.bin', data: pattern(100 * 1024, 1) },
      { name: 'bad', filename: 'bad.com', data: eicar() },
    ]);
    const r = await post(url, form, 'handoffBody');
    expect(r.status).toBe(200);
    expect(outcomes[0]!.kind).toBe('rewrite');
    const bytes = Buffer.from(r.bytes, 'hex');
    expect(String(bytes.length)).toBe(r.headers['content-length']);
    expect(bytes.includes(pattern(100 * 1024, 1))).toBe(true);
    expect(bytes.includes(eicar())).toBe(false);
  });
});
