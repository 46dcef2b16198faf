/**
 * The exchange's cheaper bookkeeping behaves as before: the redaction of logged header blocks
 * (now remembered for the last few blocks) returns what the line-by-line reading returns for
 * any sequence of blocks and name sets; the servers a request tried (now the exchange itself,
 * a Set only from a second attempt on) are each tried once, in order, failing over across
 * three servers, and ending with the last error when all failed; and a request
 * with no preview (no `onContinue` hook then) and one with a preview both pass.
 */
import { Readable } from 'node:stream';
import { createEngine, type IcapEngine, type IcapLog, type ScanRequest } from '@icapkit/core';
import { type IcapTestServer, startIcapServer } from '@icapkit/testing';
import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import { redactHeaderBlock } from '../../packages/core/src/engine/log.js';

/** A POST with its whole body already here (as engine-micro sends). */
function bodyRequest(body: Buffer): ScanRequest {
  const req = new Readable({ read() {} }) as ScanRequest;
  req.method = 'POST';
  req.url = '/upload';
  req.httpVersion = '1.1';
  req.rawHeaders = [
    'Host',
    'app',
    'Content-Type',
    'application/octet-stream',
    'Content-Length',
    String(body.length),
  ];
  req.headers = {
    host: 'app',
    'content-type': 'application/octet-stream',
    'content-length': String(body.length),
  };
  req.socket = { remoteAddress: '127.0.0.1' };
  req.push(body);
  req.push(null);
  return req;
}

/** The slow path: every line looked at. */
function reference(raw: string, names: ReadonlySet<string>): string {
  return raw.replace(/^([^:\r\n]+):[ \t]*([^\r\n]*)/gm, (line, name: string) =>
    names.has(name.trim().toLowerCase()) ? `${name}: [REDACTED]` : line,
  );
}

const toClose: Array<{ close(): Promise<unknown> | unknown }> = [];
afterEach(async () => {
  for (const c of toClose.splice(0).reverse()) await c.close();
});

describe('redactHeaderBlock, remembered blocks', () => {
  const SETS = [
    new Set(['authorization', 'cookie']),
    new Set(['istag']),
    new Set(['x-api-key', 'authorization']),
  ];
  const BLOCKS = [
    'Host: icap\r\nAuthorization: Basic abc\r\n',
    'ISTag: "x1"\r\nEncapsulated: null-body=0\r\n',
    'ISTag: "x2"\r\nEncapsulated: null-body=0\r\n',
    'Cookie: a=b\r\nX-Api-Key: k\r\n',
    'Host: icap\r\nAuthorization: Basic abd\r\n',
    'Encapsulated: null-body=0\r\n',
  ];

  it('agrees with the line-by-line reading over any sequence of blocks and name sets', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.nat(BLOCKS.length - 1), fc.nat(SETS.length - 1), fc.boolean()), {
          minLength: 1,
          maxLength: 30,
        }),
        (calls) => {
          for (const [b, s, fresh] of calls) {
            // A block equal to one seen before but a string of its own (as each request's is).
            const raw = fresh ? [...BLOCKS[b]!].join('') : BLOCKS[b]!;
            expect(redactHeaderBlock(raw, SETS[s]!)).toBe(reference(raw, SETS[s]!));
          }
        },
      ),
      { numRuns: 300 },
    );
  });

  it('keeps the result of one set of names from another set given the same block', () => {
    const raw = 'ISTag: "x"\r\nAuthorization: t\r\n';
    expect(redactHeaderBlock(raw, SETS[0]!)).toBe('ISTag: "x"\r\nAuthorization: [REDACTED]\r\n');
    expect(redactHeaderBlock(raw, SETS[1]!)).toBe('ISTag: [REDACTED]\r\nAuthorization: t\r\n');
    expect(redactHeaderBlock(raw, SETS[0]!)).toBe('ISTag: "x"\r\nAuthorization: [REDACTED]\r\n');
  });
});

async function server(fail: boolean): Promise<IcapTestServer> {
  const s = await startIcapServer({
    recordBodies: false,
    script: fail ? () => ({ kind: 'reset', when: 'on-head' }) : undefined,
  });
  toClose.push(s);
  return s;
}

function engineOf(
  urls: string[],
  extra: Record<string, unknown> = {},
): { engine: IcapEngine; logs: IcapLog[] } {
  const logs: IcapLog[] = [];
  const engine = createEngine({
    name: 'exchange-fast',
    // One pool per server, by priority: tried in this order.
    poolGroup: { pools: urls.map((u, i) => ({ name: `p${i}`, priority: 100 - i, servers: [u] })) },
    serviceUri: '/avscan',
    failAction: 'fail-closed',
    onLog: (l) => logs.push(l),
    ...extra,
  });
  toClose.push(engine);
  return { engine, logs };
}

describe('the servers a request tried', () => {
  it('fails over across three servers, each tried once, in order', async () => {
    const bad1 = await server(true);
    const bad2 = await server(true);
    const good = await server(false);
    const urls = [bad1, bad2, good].map((s) => `icap://127.0.0.1:${s.port}`);
    const { engine, logs } = engineOf(urls);
    const outcome = await engine.scan(bodyRequest(Buffer.alloc(2048, 0x61)));
    expect(outcome.kind).toBe('pass');
    outcome.dispose();
    const entries = logs[0]!.request_logs;
    expect(entries.map((e) => e.icap_absolute_uri)).toEqual(urls.map((u) => `${u}/avscan`));
    expect(entries.map((e) => e.action)).toEqual(['ICAP_FAILED', 'ICAP_FAILED', 'ICAP_PASSED']);
  });

  it("tries each once and ends with the last one's error when none could answer", async () => {
    const servers = [await server(true), await server(true)];
    const { engine, logs } = engineOf(servers.map((s) => `icap://127.0.0.1:${s.port}`));
    const outcome = await engine.scan(bodyRequest(Buffer.alloc(2048, 0x61)));
    expect(outcome.kind).toBe('respond');
    outcome.dispose();
    const log = logs[0]!;
    expect(log.request_logs.length).toBe(2);
    expect(log.error_code).toBe('ICAP_ERR_RESET');
  });
});

describe('with and without a preview', () => {
  for (const size of [1024, 200 * 1024]) {
    it(`passes a ${size}-byte body and logs its preview size as sent`, async () => {
      const s = await server(false);
      const { engine, logs } = engineOf([`icap://127.0.0.1:${s.port}`], { previewMinBodySize: 64 * 1024 });
      const outcome = await engine.scan(bodyRequest(Buffer.alloc(size, 0x62)));
      expect(outcome.kind).toBe('pass');
      outcome.dispose();
      const entry = logs[0]!.request_logs[0]!;
      expect(entry.action).toBe('ICAP_PASSED');
      if (size > 64 * 1024) expect(entry.preview_size).toBeGreaterThan(0);
      else expect(entry.preview_size).toBeUndefined();
    });
  }
});
