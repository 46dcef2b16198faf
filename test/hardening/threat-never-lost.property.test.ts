/**
 * "A threat verdict is never lost", property-based: an ICAP answer that names a threat blocks,
 * in both failure modes, whatever its status line and whatever breaks after the threat was named.
 *
 * Each run builds an answer that names a threat (c-icap's X-Infection-Found, X-Virus-ID, a
 * folded X-Violations-Found, X-Blocked-Reason) in one of several shapes (a 200 with a block
 * page, a 200 whose block page has no body, a 403, a 204, a 500, a 100 Continue naming it before
 * a 204), the threat at any place among the ICAP fields, and then breaks it one way:
 * - cut anywhere after the line naming the threat, the connection closed;
 * - cut inside that line, anywhere from its value's first byte (its line end never sent: the
 *   connection closed there);
 * - a line that is not a field inserted among the ICAP fields, or into the block page's head
 *   (its Encapsulated offsets no longer fitting);
 * - the status line replaced by one the strict parser refuses;
 * - the Encapsulated value replaced by garbage or by an offset past what is sent, then closed.
 * The embedded ICAP server sends it as the answer to one upload, through the real middleware of
 * Express 5, Fastify, Koa 3 and Hono, in fail-open and fail-closed mode: the client must get 403
 * (a lost threat would be 200 or 503), the handler nothing, and the log record says ICAP_BLOCKED.
 *
 * `ICAPKIT_THREAT_RUNS` sets the number of answers per framework (default 40).
 */
import type { IcapLog } from '@icapkit/core';
import { type Fault, type IcapTestServer, startIcapServer } from '@icapkit/testing';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type App, type Framework, startApp } from '../conformance/apps.js';
import { checkAsyncProperty, runsFromEnv } from '../fuzz/support.js';
import { send } from '../support/http-client.js';

const RUNS = runsFromEnv('ICAPKIT_THREAT_RUNS', 40);
const FRAMEWORKS: Framework[] = ['express5', 'fastify', 'koa3', 'hono'];
const MODES = ['fail-open', 'fail-closed'] as const;
type FailAction = (typeof MODES)[number];
/** Larger than the preview: the answer comes after the preview, a 100 Continue can follow it. */
const BODY = Buffer.alloc(12_000, 'b');

const THREATS = [
  'X-Infection-Found: Type=0; Resolution=2; Threat=Eicar-Test-Signature;',
  'X-Virus-ID: Eicar-Test-Signature',
  'X-Violations-Found: 1\r\n\tupload.bin\r\n\tEicar-Test-Signature\r\n\t0\r\n\t0',
  'X-Blocked-Reason: Infected',
];

const PAGE_HEAD = 'HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\n\r\n';
const PAGE_BODY = '7\r\nBlocked\r\n0\r\n\r\n';

type Shape = '200-page' | '200-page-no-body' | '403' | '204' | '500' | '100-then-204';
type Breakage =
  | { kind: 'cut'; at: number }
  | { kind: 'cut-in-line'; at: number }
  | { kind: 'junk-field'; line: string; at: number }
  | { kind: 'junk-page'; line: string }
  | { kind: 'status'; line: string }
  | { kind: 'encapsulated'; value: string };

interface Answer {
  /** The answer's bytes. */
  text: string;
  /** Where the line naming the threat ends (its CRLF included). */
  threatEnd: number;
  /** Where that line's value begins. */
  valueStart: number;
}

/** Each shape: its status line, its Encapsulated value (none: a 100), what follows its head. */
const SHAPES: Record<Shape, { status: string; encapsulated?: string; after: string }> = {
  '200-page': {
    status: 'ICAP/1.0 200 OK',
    encapsulated: `res-hdr=0, res-body=${PAGE_HEAD.length}`,
    after: PAGE_HEAD + PAGE_BODY,
  },
  '200-page-no-body': {
    status: 'ICAP/1.0 200 OK',
    encapsulated: `res-hdr=0, null-body=${PAGE_HEAD.length}`,
    after: PAGE_HEAD,
  },
  '403': { status: 'ICAP/1.0 403 Forbidden', encapsulated: 'null-body=0', after: '' },
  '204': { status: 'ICAP/1.0 204 No Content', encapsulated: 'null-body=0', after: '' },
  '500': { status: 'ICAP/1.0 500 Server Error', encapsulated: 'null-body=0', after: '' },
  '100-then-204': {
    status: 'ICAP/1.0 100 Continue',
    after: 'ICAP/1.0 204 No Content\r\nISTag: "T"\r\nEncapsulated: null-body=0\r\n\r\n',
  },
};

/** The answer, well-formed, with the threat among the fields at `threatAt`. */
function answer(shape: Shape, threat: string, threatAt: number, fields: string[]): Answer {
  const { status, encapsulated, after } = SHAPES[shape];
  const at = Math.min(threatAt, fields.length);
  const head = [status, ...fields.slice(0, at), threat];
  const threatEnd = `${head.join('\r\n')}\r\n`.length;
  const valueStart = threatEnd - 2 - threat.length + threat.indexOf(':') + 2;
  head.push(...fields.slice(at));
  if (encapsulated !== undefined) head.push(`Encapsulated: ${encapsulated}`);
  return { text: `${head.join('\r\n')}\r\n\r\n${after}`, threatEnd, valueStart };
}

/** The answer broken as `b` says, and whether the server closes the connection after it. */
function broken(a: Answer, b: Breakage): { bytes: string; close: boolean } {
  const t = a.text;
  switch (b.kind) {
    case 'cut':
      return { bytes: t.slice(0, a.threatEnd + Math.floor(b.at * (t.length - a.threatEnd))), close: true };
    case 'cut-in-line': {
      // From the value's first byte to its last, or its CR: the line end never whole.
      const from = a.valueStart + 1;
      return { bytes: t.slice(0, from + Math.floor(b.at * (a.threatEnd - 1 - from))), close: true };
    }
    case 'junk-field': {
      const headEnd = t.indexOf('\r\n\r\n');
      const lineStarts = [...t.slice(0, headEnd).matchAll(/\r\n/g)].map((m) => m.index! + 2);
      const at = lineStarts[Math.floor(b.at * lineStarts.length)] ?? headEnd + 2;
      return { bytes: `${t.slice(0, at)}${b.line}\r\n${t.slice(at)}`, close: false };
    }
    case 'junk-page': {
      const page = t.indexOf(PAGE_HEAD);
      if (page === -1) return broken(a, { kind: 'junk-field', line: b.line, at: 0.5 });
      const at = page + 'HTTP/1.1 403 Forbidden\r\n'.length;
      return { bytes: `${t.slice(0, at)}${b.line}\r\n${t.slice(at)}`, close: false };
    }
    case 'status': {
      const eol = t.indexOf('\r\n');
      return { bytes: `${b.line}${t.slice(eol)}`, close: false };
    }
    case 'encapsulated': {
      const m = /Encapsulated: [^\r]*/.exec(t);
      if (m === null) return { bytes: t, close: true };
      return {
        bytes: `${t.slice(0, m.index)}Encapsulated: ${b.value}${t.slice(m.index + m[0].length)}`,
        close: true,
      };
    }
  }
}

/** A line that is not a field: no colon, or a name that is not a token. */
const junkLine = fc.oneof(
  fc.stringMatching(/^[A-Za-z][A-Za-z0-9 ._-]{0,30}$/),
  fc.stringMatching(/^[A-Za-z-]{1,12} [A-Za-z-]{1,12}: [ -~]{0,20}$/),
  fc.stringMatching(/^[A-Za-z-]{1,12} : [ -~]{0,20}$/),
);

const breakage: fc.Arbitrary<Breakage> = fc.oneof(
  fc.record({ kind: fc.constant('cut' as const), at: fc.double({ min: 0, max: 1, noNaN: true }) }),
  fc.record({ kind: fc.constant('cut-in-line' as const), at: fc.double({ min: 0, max: 1, noNaN: true }) }),
  fc.record({
    kind: fc.constant('junk-field' as const),
    line: junkLine,
    at: fc.double({ min: 0, max: 0.999, noNaN: true }),
  }),
  fc.record({ kind: fc.constant('junk-page' as const), line: junkLine }),
  fc.record({
    kind: fc.constant('status' as const),
    line: fc.constantFrom(
      'icap/1.0 200 OK',
      'ICAP/1.0 2000 OK',
      'ICAP/1.0 20 OK',
      'ICAP 200 OK',
      'ICAP/1.0  OK',
      'ICAP/1.0 200OK',
      'HTTP/1.1 200 OK',
      'ICAP/1.0 999 Whatever',
    ),
  }),
  fc.record({
    kind: fc.constant('encapsulated' as const),
    value: fc.constantFrom('garbage', 'res-hdr=0, null-body=99999', 'res-hdr=5, res-body=2', 'null-body=x'),
  }),
);

const answerArb = fc.record({
  shape: fc.constantFrom<Shape>('200-page', '200-page-no-body', '403', '204', '500', '100-then-204'),
  threat: fc.constantFrom(...THREATS),
  threatAt: fc.nat({ max: 3 }),
  fields: fc.shuffledSubarray([
    'ISTag: "T"',
    'Service: scanner 1.0',
    'X-Apparent-Size: 12000',
    'Date: today',
  ]),
  breakage,
});

let icap: IcapTestServer;

beforeAll(async () => {
  icap = await startIcapServer();
});

afterAll(async () => {
  await icap?.close();
});

describe.each(FRAMEWORKS)('a threat verdict is never lost: %s', (framework) => {
  const apps = new Map<FailAction, App>();
  const logs: IcapLog[] = [];

  beforeAll(async () => {
    for (const failAction of MODES)
      apps.set(
        failAction,
        await startApp(framework, {
          name: `threat-${failAction}`,
          poolGroup: icap.url(),
          serviceUri: '/avscan',
          failAction,
          previewMinBodySize: 0,
          adaptivePreview: false,
          responseTimeout: 2000,
          connection: { ioTimeout: 1000 },
          // Broken answers are protocol errors: none may take the server out of service here.
          health: { failureLimit: 1000 },
          onLog: (l) => logs.push(l),
        }),
      );
  });

  afterAll(async () => {
    icap?.setScript(undefined);
    for (const app of apps.values()) await app.close();
  });

  it('an answer naming a threat blocks in both failure modes, however it breaks afterwards', async () => {
    await checkAsyncProperty(
      `threat never lost (${framework})`,
      fc.asyncProperty(
        answerArb,
        fc.constantFrom(...MODES),
        async ({ shape, threat, threatAt, fields, breakage: b }, mode) => {
          const app = apps.get(mode)!;
          const { bytes, close } = broken(answer(shape, threat, threatAt, fields), b);
          const fault: Fault = close ? { kind: 'garbage', bytes } : { kind: 'raw', response: bytes };
          icap.setScript((r) => (r.method === 'REQMOD' ? fault : undefined));
          const seenBefore = app.seen.length;
          const logsBefore = logs.length;
          const res = await send(app.url, '/raw', {
            body: BODY,
            headers: { 'content-type': 'application/octet-stream' },
            timeoutMs: 10_000,
          });
          expect(res.status).toBe(403);
          expect(app.seen.length).toBe(seenBefore);
          const deadline = Date.now() + 3000;
          while (logs.length === logsBefore && Date.now() < deadline)
            await new Promise((r) => setTimeout(r, 10));
          expect(logs.at(-1)?.action).toBe('ICAP_BLOCKED');
        },
      ),
      RUNS,
    );
  }, 120_000);
});
