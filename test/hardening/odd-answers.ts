/**
 * Shared set-up of the tests of legal-but-unusual ICAP answer shapes (campaign-bs: interim 1xx,
 * ICAP trailers, over-size heads, an error then the real answer): an application scanning with
 * a scripted server, one upload, and what it did (status, handler, record).
 */
import type { IcapLog } from '@icapkit/core';
import { expect } from 'vitest';
import type { Framework } from '../conformance/apps.js';
import { scriptedApp } from '../support/scripted-app.js';
import type { Handler, Req, ScriptedOptions } from '../support/scripted-icap.js';

export const FRAMEWORKS: Framework[] = ['express5', 'fastify', 'koa3'];
export const MODES = ['fail-open', 'fail-closed'] as const;
export type Mode = (typeof MODES)[number];

export const UPLOAD = Buffer.from('infected upload X5O!P%@AP');
export const THREAT = 'X-Infection-Found: Type=0; Resolution=2; Threat=EICAR;\r\n';
const PAGE = 'HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n';
/** A 200 block page naming EICAR. */
export const BLOCK = `ICAP/1.0 200 OK\r\nISTag: "x1"\r\n${THREAT}Encapsulated: res-hdr=0, null-body=${PAGE.length}\r\n\r\n${PAGE}`;
export const CLEAN_204 = 'ICAP/1.0 204 No Content\r\nISTag: "x1"\r\nEncapsulated: null-body=0\r\n\r\n';

/** `s` written on the request's connection `ms` later (a later TCP segment). */
export function later(r: Req, ms: number, s: string): void {
  setTimeout(() => {
    if (!r.sock.destroyed) r.sock.write(s);
  }, ms);
}

export interface Outcome {
  status: number;
  /** The raw bodies the handler got. */
  seen: Array<string | undefined>;
  log: IcapLog | undefined;
}

/** One upload through `framework` scanning with `handler`'s answers under `failAction`. */
export async function upload(
  framework: Framework,
  failAction: Mode,
  handler: Handler,
  cleanups: Array<() => Promise<void>>,
  profile: Record<string, unknown> = {},
  options: ScriptedOptions = {},
): Promise<Outcome> {
  const s = await scriptedApp(
    framework,
    handler,
    { failAction, responseTimeout: 3000, connection: { ioTimeout: 2000 }, ...profile },
    cleanups,
    options,
  );
  const res = await s.post(UPLOAD);
  const deadline = Date.now() + 3000;
  while (s.logs.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  return { status: res.status, seen: s.app.seen.map((x) => x.raw?.toString('latin1')), log: s.logs[0] };
}

/** Blocked for EICAR: 403, the handler not called, ICAP_BLOCKED with the threat in the record. */
export function expectBlocked(out: Outcome): void {
  expect(out.seen).toEqual([]);
  expect(out.status).toBe(403);
  expect(out.log?.action).toBe('ICAP_BLOCKED');
  expect(out.log?.request_logs.at(-1)?.threat_id).toBe('EICAR');
}

/** Passed clean: 200, the handler got the upload, ICAP_PASSED. */
export function expectPassed(out: Outcome): void {
  expect(out.status).toBe(200);
  expect(out.seen).toEqual([UPLOAD.toString('latin1')]);
  expect(out.log?.action).toBe('ICAP_PASSED');
}
