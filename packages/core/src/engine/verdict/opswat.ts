import { analyse, decide } from './generic.js';
import type { OpswatLog, Verdict, VerdictInput } from './types.js';
import { VENDOR_RULES } from './vendors.js';

/**
 * OPSWAT MetaDefender ICAP: the generic reading (X-Response-Info: Blocked, X-Blocked-Reason,
 * X-Infection-Found Type 0/2, X-Violations-Found, encapsulated block page) plus `opswat_log`.
 * `X-Response-Info: Allowed` on a 200 echo stays `adapted` (the engine compares bodies: "200 OK
 * does not mean the file is clean"); on a 204 it is clean. An ICAP 403 (FILEMOD) is an error, unless it names a threat.
 */
export function readOpswat(input: VerdictInput): Verdict {
  const rules = VENDOR_RULES.opswat;
  const a = analyse(input, rules);
  const verdict = decide(a, rules);
  const log: OpswatLog = { violations: a.violations };
  const reason = a.blockedReason ?? a.responseDesc;
  if (reason !== undefined) log.reason = reason;
  const threat = a.virusId ?? a.infections.find((i) => i.threat !== undefined)?.threat;
  if (threat !== undefined) log.threat_id = threat;
  verdict.opswat_log = log;
  return verdict;
}
