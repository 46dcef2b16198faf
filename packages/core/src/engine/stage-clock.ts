/**
 * Per-stage CPU and wall time of a scan, for profiling (the benchmark's per-stage column).
 *
 * A scan is four stages, one after the other: `admission` (the policy decision, the early
 * checks, waiting for a connection slot), `intake` (the body read from the HTTP client into its
 * store), `exchange` (the ICAP transactions up to the verdict) and `outcome` (applying the
 * verdict: the answer or the body the handler gets). When something subscribes to the
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
