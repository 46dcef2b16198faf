/**
 * The benchmark's c-icap: @icapkit/testing's launcher (services `avscan` with ClamAV and
 * allow204, and `echo`), with a configuration sized for load: enough children and threads that
 * c-icap is not an artificial bottleneck, and unlimited requests per keep-alive connection (so
 * "connections opened" counts the client's behaviour, not c-icap's `MaxKeepAliveRequests`).
 */
import { readdirSync, readFileSync } from 'node:fs';
import { type CIcapServer, startCIcap as startTestingCIcap } from '@icapkit/testing';

export { cIcapMissing, eicar as eicarBytes } from '@icapkit/testing';
export type CIcap = CIcapServer;

/** c-icap settings used by the benchmark (also printed in bench/README.md). */
export const CICAP_TUNING = {
  StartServers: 2,
  MaxServers: 4,
  ThreadsPerChild: 64,
  MinSpareThreads: 16,
  MaxSpareThreads: 256,
  MaxKeepAliveRequests: -1,
  KeepAliveTimeout: 600,
  MaxMemObject: 1048576,
} as const;

export function startCIcap(): Promise<CIcap> {
  return startTestingCIcap({
    maxKeepAliveRequests: CICAP_TUNING.MaxKeepAliveRequests,
    keepAliveTimeout: CICAP_TUNING.KeepAliveTimeout,
    debugLevel: 0,
    // Later directives override the launcher's defaults.
    extraConfig: Object.entries(CICAP_TUNING)
      .filter(([k]) => k !== 'MaxKeepAliveRequests' && k !== 'KeepAliveTimeout')
      .map(([k, v]) => `${k} ${v}`)
      .join('\n'),
  });
}

/** Processes of a process group (pgid = leader pid), from /proc. */
export function groupPids(pgid: number): number[] {
  const out: number[] = [];
  let entries: string[] = [];
  try {
    entries = readdirSync('/proc');
  } catch {
    return out;
  }
  for (const e of entries) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const stat = readFileSync(`/proc/${e}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(fields[2]) === pgid) out.push(Number(e));
    } catch {
      // gone
    }
  }
  return out;
}
