/**
 * Per-stage CPU and wall time of a scan, for profiling (the benchmark's per-stage column).
 *
 * A scan is four stages, one after the other (scan.ts): `admission` (the request's facts, the
 * policy decision, the checks on the head), `intake` (the body stored until the exchange can
 * start), `exchange` (the ICAP attempts up to the verdict; a multipart form's parts are scanned
 * while it arrives, so there intake is part of this stage) and `outcome` (applying the verdict,
 * finishing and emitting the icap_log record). When something subscribes to the
 * diagnostics channel `icapkit:scan:stage`, the engine publishes one {@link ScanStageEvent} per
 * stage reached with the CPU time of the whole process (`process.cpuUsage()`, user + system)
 * and the wall time elapsed since the previous stage ended. With nobody subscribed a scan costs
 * one `hasSubscribers` check and no clock reading.
 *
 * The CPU figure is the process's, not the request's: it is this request's alone only when
 * one request is in flight at a time (measure with one client); the wall time is the request's
 * at any concurrency.
 */
import * as dc from 'node:diagnostics_channel';

export type ScanStage = 'admission' | 'intake' | 'exchange' | 'outcome';

export interface ScanStageEvent {
  stage: ScanStage;
  /** CPU µs (user + system) of the process since the previous stage of this scan ended. */
  cpuUs: number;
  /** Wall µs since the previous stage of this scan ended. */
  wallUs: number;
}

export const stageChannel = dc.channel('icapkit:scan:stage');

/** Laps of one scan: `lap(stage)` publishes the time since the last lap (or the start). */
export class StageClock {
  #cpu: number;
  #wall: number;

  private constructor() {
    const c = process.cpuUsage();
    this.#cpu = c.user + c.system;
    this.#wall = performance.now();
  }

  /** A clock when someone listens, else undefined (so call sites read `clock?.lap(...)`). */
  static start(): StageClock | undefined {
    return stageChannel.hasSubscribers ? new StageClock() : undefined;
  }

  lap(stage: ScanStage): void {
    const c = process.cpuUsage();
    const cpu = c.user + c.system;
    const wall = performance.now();
    if (stageChannel.hasSubscribers) {
      const event: ScanStageEvent = {
        stage,
        cpuUs: cpu - this.#cpu,
        wallUs: Math.round((wall - this.#wall) * 1000),
      };
      stageChannel.publish(event);
    }
    this.#cpu = cpu;
    this.#wall = wall;
  }
}
