import type { Headers } from '../../protocol/headers.js';
import {
  type LastlineArtifact,
  parseLastlineArtifact,
  parseLastlineStatus,
  parseScore,
  parseTaskUuid,
} from './fields.js';
import { analyse, decide } from './generic.js';
import type { NsxDefenderLog, Verdict, VerdictInput, VerdictOptions } from './types.js';
import { VENDOR_RULES } from './vendors.js';

export const DEFAULT_NSX_STATUS_URL = 'https://user.lastline.com/portal#/analyst/task/$uuid/overview';

/**
 * NSX Defender (Lastline): the generic reading plus `nsx_defender_log` and the X-Lastline-*
 * client headers.
 *
 * - ICAP headers: `X-Infection-Found: Type=0;Resolution=1;Threat=LastlineArtifact(score=NN;md5=..;uuid=..)`
 *   and `X-Virus-ID: LastlineArtifact(score=NN;md5=..;task_uuid=..)`; either one blocks (generic rules).
 * - HTTP headers (in the encapsulated response or modified request, when the Defender's
 *   "X-LASTLINE HEADER" is on): X-Lastline-Status (new|known|blacklist|timeout|error),
 *   X-Lastline-Score (0-100), X-Lastline-Task (task UUID). They never block by themselves.
 *
 * score and task uuid come from the artifact in Threat=, then from X-Virus-ID, then from the
 * X-Lastline-* headers; status_url is the template with `$uuid` replaced, only when a uuid is
 * known. With forwarding on, the X-Lastline-* headers that validate go to client_headers.
 */
export function readNsxDefender(input: VerdictInput, options: VerdictOptions): Verdict {
  const rules = VENDOR_RULES['nsx-defender'];
  const a = analyse(input, rules);
  const verdict = decide(a, rules);

  const artifacts: LastlineArtifact[] = [];
  for (const i of a.infections) {
    const art = parseLastlineArtifact(i.threat);
    if (art !== undefined) artifacts.push(art);
  }
  const fromVirusId = parseLastlineArtifact(input.headers.get('x-virus-id'));
  if (fromVirusId !== undefined) artifacts.push(fromVirusId);

  const sources: Headers[] = [];
  if (input.httpResponse !== null) sources.push(input.httpResponse.headers);
  if (input.httpRequest !== null) sources.push(input.httpRequest.headers);
  sources.push(input.headers);
  // A returned request carries the client's own fields too, ahead of what the Defender adds:
  // as many values of a field as the client sent are its own, not the Defender's (a score of 0,
  // a task of the client's choosing in the log).
  const echoed = input.httpRequest?.headers;
  const sent = options.sentHeaders;
  const clients = (headers: Headers, name: string) =>
    headers === echoed && sent !== undefined ? sent.getAll(name).length : 0;
  const status = firstValid(sources, 'x-lastline-status', parseLastlineStatus, clients);
  const score = firstValid(sources, 'x-lastline-score', parseScore, clients);
  const task = firstValid(sources, 'x-lastline-task', parseTaskUuid, clients);

  const log: NsxDefenderLog = {};
  const logScore = artifacts.find((x) => x.score !== undefined)?.score ?? score;
  const logTask = artifacts.find((x) => x.uuid !== undefined)?.uuid ?? task;
  if (logScore !== undefined) log.score = logScore;
  if (logTask !== undefined) {
    log.task_uuid = logTask;
    const template = typeof options.nsxStatusUrl === 'string' ? options.nsxStatusUrl : DEFAULT_NSX_STATUS_URL;
    log.status_url = template.split('$uuid').join(logTask);
  }
  if (status !== undefined) log.status = status;
  verdict.nsx_defender_log = log;

  if (options.forwardLastlineHeaders) {
    if (status !== undefined) verdict.client_headers.push(['X-Lastline-Status', status]);
    if (score !== undefined) verdict.client_headers.push(['X-Lastline-Score', String(score)]);
    if (task !== undefined) verdict.client_headers.push(['X-Lastline-Task', task]);
  }
  return verdict;
}

/** The first value of `name`, across the header sets in order (past the client's own in each), that `parse` accepts. */
function firstValid<T>(
  sources: readonly Headers[],
  name: string,
  parse: (v: string) => T | undefined,
  clients: (headers: Headers, name: string) => number,
): T | undefined {
  for (const headers of sources) {
    for (const value of headers.getAll(name).slice(clients(headers, name))) {
      const parsed = parse(value);
      if (parsed !== undefined) return parsed;
    }
  }
  return undefined;
}
