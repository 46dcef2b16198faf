/**
 * What the middleware says about a body read before the scan (ICAP_ERR_BODY_CONSUMED): its
 * process warnings and its logger's errors, captured for the body-consumed tests.
 */
import type { IcapLog, PinoLike } from '@icapkit/core';
import { expect } from 'vitest';

export interface Captured {
  warnings: Error[];
  errors: Array<{ obj: unknown; msg: string }>;
  /** A logger to give the middleware (its `error` calls are captured). */
  logger: PinoLike;
  /** Stops listening for warnings. */
  stop(): void;
}

export function capture(): Captured {
  const warnings: Error[] = [];
  const errors: Array<{ obj: unknown; msg: string }> = [];
  const onWarning = (w: Error) => {
    if ((w as { code?: string }).code === 'ICAP_ERR_BODY_CONSUMED') warnings.push(w);
  };
  process.on('warning', onWarning);
  const noop = () => {};
  const logger = {
    debug: noop,
    info: noop,
    warn: noop,
    error: (obj: unknown, msg: string) => errors.push({ obj, msg }),
  } as unknown as PinoLike;
  return { warnings, errors, logger, stop: () => process.off('warning', onWarning) };
}

/** Each record is the refusal of a body read before the scan: 500, nothing sent to the ICAP server. */
export function expectConsumedRecords(logs: readonly IcapLog[]): void {
  for (const log of logs) {
    expect(log.action).toBe('ICAP_FAILED');
    expect(log.http_response_code).toBe(500);
    expect(log.error_code).toBe('ICAP_ERR_BODY_CONSUMED');
    expect(log.error_message).toContain('mount icap() before body parsers');
    expect(log.request_logs).toEqual([]); // nothing was sent to the ICAP server
  }
}
