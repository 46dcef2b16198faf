import { type Headers, namesBlocked, pageBlocks } from '../../protocol/headers.js';
import {
  cleanText,
  contentDispositionFilename,
  type InfectionFound,
  infectionResolution,
  lastPathSegment,
  parseInfectionFound,
  parseViolations,
} from './fields.js';
import type { Verdict, VerdictInput, Violation } from './types.js';
import { VENDOR_RULES, type VendorRules } from './vendors.js';

/**
 * The generic reading of an ICAP response (the rules are written down in index.ts). The OPSWAT
 * and NSX Defender readers start from the same {@link Analysis} and add their logs.
 */

/** Standard reason phrases, for an error reason when the status line had none. */
const STATUS_PHRASES: Readonly<Record<number, string>> = {
  100: 'Continue',
  200: 'OK',
  201: 'Created',
  202: 'Accepted',
  204: 'No Content',
  206: 'Partial Content',
  400: 'Bad Request',
  403: 'Forbidden',
  404: 'ICAP Service Not Found',
  405: 'Method Not Allowed For Service',
  408: 'Request Timeout',
  418: 'Bad Composition',
  500: 'Server Error',
  501: 'Method Not Implemented',
  502: 'Bad Gateway',
  503: 'Service Overloaded',
  505: 'ICAP Version Not Supported By Server',
  539: 'Aborted - No AV scanning license',
};

const UNSCANNABLE_ERROR_CODES: ReadonlySet<string> = new Set([
  'decode_error',
  'max_archive_layers_exceeded',
  'password_protected',
]);
/** X-Error-Code values that are a refusal by policy, not a failure: a block. */
const BLOCKING_ERROR_CODES: ReadonlySet<string> = new Set(['file_type_blocked', 'file_extension_blocked']);
const ALLOW_RESPONSE_INFO: ReadonlySet<string> = new Set(['allowed', 'passed', 'clean']);

export interface Analysis {
  input: VerdictInput;
  /** Every X-Infection-Found of the ICAP headers, parsed. */
  infections: InfectionFound[];
  /** The ICAP X-Virus-ID, unless empty or a clean marker (`no threats`). */
  virusId: string | undefined;
  violations: Violation[];
  blockedReason: string | undefined;
  responseDesc: string | undefined;
  responseDescription: string | undefined;
  /** A threat or refusal signal is present (decides `blocked`, whatever the ICAP status). */
  blocked: boolean;
  /**
   * Every threat reported says it was repaired (Resolution=1, violations REPAIRED or section
   * removed), the answer carries the returned message and nothing else refuses it: a
   * modification, when the vendor's rules read Resolution=1 that way.
   */
  repaired: boolean;
  /** An infection, violation or virus name was reported ('Infected' as the fallback reason). */
  infected: boolean;
  /** The server said explicitly that the message is fine. */
  explicitAllow: boolean;
  threatId: string | undefined;
  unscannable: boolean;
  /** The encapsulated X-Blocked value (Sophos), for a reason. */
  httpBlocked: string | undefined;
  /** An X-Error-Code that refuses by policy (`file_type_blocked`), for a reason. */
  errorCodeBlock: string | undefined;
}

export function readGeneric(input: VerdictInput, rules: VendorRules = VENDOR_RULES.generic): Verdict {
  // The common answer: a bare 204 with no extension field (every signal read above is an
  // `X-` field, of the ICAP head or an encapsulated one, and a 204 has none encapsulated) is
  // clean, as decide(analyse()) would find after reading each field in turn.
  if (
    input.status === 204 &&
    input.httpRequest === null &&
    input.httpResponse === null &&
    !Object.hasOwn(rules.statuses, 204) &&
    !hasExtensionField(input.headers)
  ) {
    return {
      kind: 'clean',
      reason: undefined,
      threat_id: undefined,
      violations: [],
      unscannable: false,
      client_headers: [],
    };
  }
  return decide(analyse(input, rules), rules);
}

/** Whether any field's name starts with `X-` (any case). */
function hasExtensionField(headers: Headers): boolean {
  for (const [name] of headers) {
    if (name.length > 1 && name.charCodeAt(1) === 0x2d && (name.charCodeAt(0) | 0x20) === 0x78) return true;
  }
  return false;
}

export function analyse(input: VerdictInput, rules: VendorRules = VENDOR_RULES.generic): Analysis {
  const h = input.headers;
  const heads: Headers[] = [];
  if (input.httpResponse !== null) heads.push(input.httpResponse.headers);
  if (input.httpRequest !== null) heads.push(input.httpRequest.headers);

  // ICAP-level signals.
  const infections = h.getAll('x-infection-found').map(parseInfectionFound);
  // Every value of a field counts (a threat in a second field is still a threat).
  const virusId = firstThreat(h.getAll('x-virus-id'));
  // McAfee (custom rules) and owncloud-style clients: X-Virus-Name, read like X-Virus-ID.
  const virusName = firstThreat(h.getAll('x-virus-name'));
  const blockedReason = firstText([
    ...h.getAll('x-blocked-reason'),
    ...h.getAll('x-block-reason'),
    ...h.getAll('x-mwg-block-reason'),
  ]);
  const responseDesc = cleanText(h.get('x-response-desc'));
  const responseDescription = cleanText(h.get('x-response-description'));
  const responseInfos = h.getAll('x-response-info').map((v) => v.trim().toLowerCase());
  const fsecure = h.getAll('x-fsecure-scan-result').map((v) => v.trim().toLowerCase());
  // F-Secure names the infection in a field of its own: named, it is one, whatever the result says.
  const fsecureName = firstText(h.getAll('x-fsecure-infection-name'));
  const fsecureInfected =
    fsecure.some((v) => v !== 'clean') ||
    fsecureName !== undefined ||
    firstText(h.getAll('x-fsecure-infected-filename')) !== undefined;
  const errorCodes = h
    .getAll('x-error-code')
    .flatMap((v) => v.split(','))
    .map((code) => code.trim().toLowerCase());
  const errorCodeBlock = errorCodes.find((code) => BLOCKING_ERROR_CODES.has(code));

  // Every X-Violations-Found field (a threat in a second one is still a threat). Each signals
  // with a count above 0, or with any text after its first line (a count of 0 followed by a
  // violation contradicts itself: read as the violation), or, without a count, with any text.
  const violationFields = h.linesAll('x-violations-found');
  const parsedFields = violationFields.map((lines) => ({ lines, parsed: parseViolations(lines) }));
  const violationsSignal = parsedFields.some(
    ({ lines, parsed }) =>
      (parsed.count !== undefined && parsed.count > 0) ||
      lines.some((l, i) => (i > 0 || parsed.count === undefined) && l.trim() !== ''),
  );
  const parsed =
    parsedFields.length === 0
      ? undefined
      : {
          complete: parsedFields.every(
            (f) => f.parsed.count !== undefined && f.parsed.count === f.parsed.violations.length,
          ),
          violations: parsedFields.flatMap((f) => f.parsed.violations),
        };

  // Signals in the encapsulated HTTP headers.
  // Sophos's X-Blocked is an HTTP field; in the ICAP head it refuses as well.
  let httpBlocked: string | undefined = h.has('x-blocked') ? cleanText(h.get('x-blocked')) : undefined;
  let httpBlockedPresent = h.has('x-blocked');
  let httpVirusId: string | undefined;
  const httpInfections: InfectionFound[] = [];
  for (const hh of heads) {
    if (hh.has('x-blocked')) {
      httpBlockedPresent = true;
      httpBlocked ??= cleanText(hh.get('x-blocked'));
    }
    httpVirusId ??= firstThreat(hh.getAll('x-virus-id'));
    for (const v of hh.getAll('x-infection-found')) httpInfections.push(parseInfectionFound(v));
  }

  // Violations: the X-Violations-Found lines, else one built from X-Infection-Found.
  let violations = parsed?.violations ?? [];
  const firstInfection = infections[0] ?? httpInfections[0];
  if (violations.length === 0 && firstInfection !== undefined) {
    violations = [
      {
        file_name: fileNameOf(input) ?? '',
        threat_name: firstInfection.threat ?? virusId ?? virusName ?? httpVirusId ?? '',
        resolution: infectionResolution(firstInfection.resolution),
      },
    ];
  }

  const infectionPresent = infections.length > 0 || httpInfections.length > 0;
  const satisfaction = satisfactionBlock(input);
  // Refusals: signals that say "blocked" whatever was (or was not) repaired.
  const refused =
    satisfaction ||
    h.has('x-blocked-reason') ||
    blockedReason !== undefined ||
    responseInfos.some(namesBlocked) ||
    errorCodeBlock !== undefined ||
    httpBlockedPresent ||
    fsecureInfected;
  const infected =
    infectionPresent ||
    violationsSignal ||
    virusId !== undefined ||
    virusName !== undefined ||
    httpVirusId !== undefined ||
    fsecureInfected;
  const blocked = refused || infected;

  // A repair: every report carries a resolution and every one says repaired, and the answer
  // returns the message (REQMOD: the request; RESPMOD: the response, not a block page).
  const allInfections = [...infections, ...httpInfections];
  const parsedViolations = parsed?.violations ?? [];
  const violationsComplete = parsed === undefined || parsed.complete;
  const returnsMessage =
    input.method === 'RESPMOD'
      ? input.httpResponse !== null
      : input.httpRequest !== null && input.httpResponse === null;
  const repaired =
    rules.repairs &&
    !refused &&
    returnsMessage &&
    violationsComplete &&
    allInfections.length + parsedViolations.length > 0 &&
    allInfections.every((i) => i.resolution === 1) &&
    parsedViolations.every((v) => v.resolution !== 'ICAP_FILE_NOT_REPAIRED');

  const explicitAllow =
    !blocked &&
    (responseInfos.some((v) => ALLOW_RESPONSE_INFO.has(v)) ||
      fsecure.includes('clean') ||
      h.get('x-virus-id')?.trim().toLowerCase() === 'no threats');

  const threatId =
    infections.find((i) => i.threat !== undefined)?.threat ??
    virusId ??
    virusName ??
    (fsecureInfected ? fsecureName : undefined) ??
    httpVirusId ??
    httpInfections.find((i) => i.threat !== undefined)?.threat ??
    violations.find((v) => v.threat_name !== '')?.threat_name;

  const unscannable =
    infections.some((i) => i.type === 2) ||
    httpInfections.some((i) => i.type === 2) ||
    errorCodes.some((code) => UNSCANNABLE_ERROR_CODES.has(code));

  return {
    input,
    infections,
    virusId,
    violations,
    blockedReason,
    responseDesc,
    responseDescription,
    blocked,
    repaired,
    infected,
    explicitAllow,
    threatId,
    unscannable,
    httpBlocked,
    errorCodeBlock,
  };
}

/**
 * The verdict from an analysis (no vendor logs, no client headers). A threat signal decides
 * first, whatever the ICAP status; then the vendor's status rules; then the status.
 */
export function decide(a: Analysis, rules: VendorRules = VENDOR_RULES.generic): Verdict {
  const { input } = a;
  const status = input.status;
  const described = a.blockedReason ?? a.responseDesc ?? a.responseDescription;
  const success = status === 200 || status === 201;
  if (a.blocked) {
    if (a.repaired && success) return verdictOf('adapted', described, a, true);
    return verdictOf('blocked', blockReason(a, described), a);
  }
  const rule = Object.hasOwn(rules.statuses, status) ? rules.statuses[status] : undefined;
  const ruleApplies =
    rule !== undefined && (rule.phrase === undefined || rule.phrase.test(input.reasonPhrase ?? ''));
  if (ruleApplies && rule.kind === 'blocked') {
    return verdictOf('blocked', described ?? rule.reason ?? statusText(input), a);
  }
  if (status === 204) return verdictOf('clean', described, a);
  if (success) {
    if (input.httpRequest !== null || input.httpResponse !== null) return verdictOf('adapted', described, a);
    if (a.explicitAllow) return verdictOf('clean', described, a);
    return verdictOf('error', `${statusText(input)} without an encapsulated HTTP message`, a);
  }
  const verdict = verdictOf('error', statusText(input), a);
  if (ruleApplies && rule.unscannable === true) verdict.unscannable = true;
  return verdict;
}

/**
 * A verdict of `kind` with the analysis's threat, violations and unscannable flag: one literal
 * with its fields in one order (no spread: outcome.ts disposeOnce says why).
 */
function verdictOf(kind: Verdict['kind'], reason: string | undefined, a: Analysis, repair?: true): Verdict {
  const v: Verdict = {
    kind,
    reason,
    threat_id: a.threatId,
    violations: a.violations,
    unscannable: a.unscannable,
    client_headers: [],
  };
  if (repair === true) v.repair = true;
  return v;
}

/** An error verdict carrying nothing but a reason (used when reading the response failed). */
export function errorVerdict(input: VerdictInput, detail: string): Verdict {
  let prefix = 'ICAP';
  try {
    prefix = statusText(input);
  } catch {
    // keep the bare prefix
  }
  return {
    kind: 'error',
    reason: cleanText(`${prefix}: ${detail}`),
    threat_id: undefined,
    violations: [],
    unscannable: false,
    client_headers: [],
  };
}

/** `ICAP <status> <reason phrase>`. */
export function statusText(input: VerdictInput): string {
  const status = Number.isInteger(input.status) ? input.status : 0;
  const phrase = cleanText(input.reasonPhrase) ?? STATUS_PHRASES[status];
  return phrase === undefined ? `ICAP ${status}` : `ICAP ${status} ${phrase}`;
}

function blockReason(a: Analysis, described: string | undefined): string | undefined {
  if (described !== undefined) return described;
  if (a.infected) return 'Infected';
  if (a.httpBlocked !== undefined) return a.httpBlocked;
  if (a.errorCodeBlock !== undefined) return a.errorCodeBlock;
  const res = a.input.httpResponse;
  if (res !== null) return cleanText(res.reason) ?? `HTTP ${res.status}`;
  return undefined;
}

/**
 * The encapsulated HTTP response is a block page. On a 200/201 in REQMOD, any response
 * (request satisfaction: the upload is not forwarded, whatever the page's status). Otherwise (a
 * RESPMOD 200/201, where the response is the adapted one, and every other ICAP status, where a
 * page may come with an error): a 403, a redirect, or a reason phrase naming a virus or a block
 * (McAfee's `403 VirusFound`).
 */
function satisfactionBlock(input: VerdictInput): boolean {
  const res = input.httpResponse;
  const satisfies = input.method !== 'RESPMOD' && (input.status === 200 || input.status === 201);
  // A page announced in the Encapsulated field whose head could not be read (the answer broke
  // off in it, or broke a rule there) is still the server answering in the upload's place.
  if (res === null) return satisfies && announcesResponse(input.headers);
  if (satisfies) return true;
  return pageBlocks(res);
}

/** The Encapsulated field lists a `res-hdr`: the answer carries an HTTP response. */
function announcesResponse(headers: Headers): boolean {
  for (const value of headers.getAll('encapsulated'))
    if (/(?:^|,)[ \t]*res-hdr[ \t]*=/i.test(value)) return true;
  return false;
}

/** The first of the values that names a threat. */
function firstThreat(values: readonly string[]): string | undefined {
  for (const v of values) {
    const t = notCleanVirusId(v);
    if (t !== undefined) return t;
  }
  return undefined;
}

/** The first of the values with text. */
function firstText(values: readonly string[]): string | undefined {
  for (const v of values) {
    const t = cleanText(v);
    if (t !== undefined) return t;
  }
  return undefined;
}

/** An X-Virus-ID value naming a threat: not empty and not Kaspersky's `no threats`. */
function notCleanVirusId(value: string | undefined): string | undefined {
  const v = cleanText(value);
  if (v === undefined || v.toLowerCase() === 'no threats') return undefined;
  return v;
}

/** The scanned file's name, as far as the encapsulated heads tell it. */
function fileNameOf(input: VerdictInput): string | undefined {
  return (
    contentDispositionFilename(input.httpRequest?.headers.get('content-disposition')) ??
    // In RESPMOD the encapsulated response is the scanned one; in REQMOD it is a block page.
    (input.method === 'RESPMOD'
      ? contentDispositionFilename(input.httpResponse?.headers.get('content-disposition'))
      : undefined) ??
    lastPathSegment(input.httpRequest?.target) ??
    cleanText(input.fileName)
  );
}
