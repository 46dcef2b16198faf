/**
 * Raw ICAP responses (as the server sends them, CRLF included) for the verdict tests. Encapsulated
 * offsets are computed on bytes from the HTTP heads they frame, so the parser checks every one.
 * Sources: the NSX Advanced Load Balancer ICAP guide (log examples, NSX Defender headers) and the
 * vendor table in shared/reference/vendor-verdicts.md; names, UUIDs and bodies are made up.
 */

const CRLF = '\r\n';

/** A chunked body (one chunk) followed by the last chunk. */
export function chunked(body: string): string {
  const n = Buffer.byteLength(body);
  return n === 0 ? `0${CRLF}${CRLF}` : `${n.toString(16)}${CRLF}${body}${CRLF}0${CRLF}${CRLF}`;
}

function len(s: string): number {
  return Buffer.byteLength(s);
}

export const EICAR_MD5 = '44d88612fea8a8f36de82e1278abb02f';
export const NSX_UUID = 'a3f5c2e19b8d4f7e8c1d2b3a4f5e6d7c';

// ------------------------------------------------------------------ seed examples (OPSWAT)

/** The header lines the seed's blocked log shows, as far as the log shows them. */
export const SEED_BLOCKED_HEADERS_PREFIX =
  'Date: Thu, 19 Nov 2020 13:55:00 G11T\r\nServer: Metadefender Core V4\r\nISTag: "001605794100"\r\nX-ICAP-Profile: File process\r\nX-Response-Info: Blocked\r\nX-Response-Desc: Infected\r\nX-Blocked-Reason: Infected\r\nX-Infection-Found: Type=0';

const OPSWAT_BLOCK_PAGE = '<html><body>Blocked: Infected</body></html>';
const OPSWAT_BLOCK_HTTP =
  'HTTP/1.1 403 Forbidden\r\n' +
  'Content-Type: text/html\r\n' +
  `Content-Length: ${len(OPSWAT_BLOCK_PAGE)}\r\n` +
  '\r\n';

/** Seed 1: OPSWAT MetaDefender blocks an EICAR upload (ICAP 200, encapsulated 403). */
export const OPSWAT_BLOCKED =
  'ICAP/1.0 200 OK\r\n' +
  'Date: Thu, 19 Nov 2020 13:55:00 G11T\r\n' +
  'Server: Metadefender Core V4\r\n' +
  'ISTag: "001605794100"\r\n' +
  'X-ICAP-Profile: File process\r\n' +
  'X-Response-Info: Blocked\r\n' +
  'X-Response-Desc: Infected\r\n' +
  'X-Blocked-Reason: Infected\r\n' +
  'X-Infection-Found: Type=0; Resolution=2; Threat=EICAR-Test-File (not a virus);\r\n' +
  'X-Virus-ID: EICAR-Test-File (not a virus)\r\n' +
  'X-Violations-Found: 1\r\n' +
  '\teicar.com\r\n' +
  '\tEICAR-Test-File (not a virus)\r\n' +
  '\t0\r\n' +
  '\t0\r\n' +
  `Encapsulated: res-hdr=0, res-body=${len(OPSWAT_BLOCK_HTTP)}\r\n` +
  '\r\n' +
  OPSWAT_BLOCK_HTTP +
  chunked(OPSWAT_BLOCK_PAGE);

/** The seed's passed log: its received headers, exactly. */
export const SEED_PASSED_HEADERS =
  'Date: Wed, 18 Nov 2020 12:54:06 G11T\r\nServer: Metadefender Core V4\r\nISTag: "000000000096"\r\nX-Response-Info: Allowed\r\nEncapsulated: null-body=0\r\n';

/** Seed 2: OPSWAT lets the upload through (204). */
export const OPSWAT_PASSED = `ICAP/1.0 204 No Content\r\n${SEED_PASSED_HEADERS}\r\n`;

/** 91 bytes, as the seed's `res-body=91` requires. */
export const NO_RULE_BODY = 'Forbidden: No security rule matched';
export const NO_RULE_HTTP =
  'HTTP/1.1 403 Forbidden\r\n' +
  'Content-Type: text/html; charset=iso-8859-1\r\n' +
  `Content-Length: ${len(NO_RULE_BODY)}\r\n` +
  '\r\n';

/** The seed's misconfiguration log: its received headers, exactly. */
export const SEED_NO_RULE_HEADERS =
  'Date: Thu, 19 Nov 2020 13:25:15 G11T\r\nServer: Metadefender Core V4\r\nISTag: "001605792300"\r\nX-Response-Info: Blocked\r\nX-Response-Desc: No security rule matched\r\nEncapsulated: res-hdr=0, res-body=91\r\n';

/** Seed 3: a misconfigured OPSWAT answers "No security rule matched" with a block page. */
export const OPSWAT_NO_RULE = `ICAP/1.0 200 OK\r\n${SEED_NO_RULE_HEADERS}\r\n${NO_RULE_HTTP}${chunked(NO_RULE_BODY)}`;

// ------------------------------------------------------------------ c-icap virus_scan (ClamAV)

const CICAP_PAGE =
  '<html><head><title>VIRUS FOUND</title></head><body>Eicar-Test-Signature.UNOFFICIAL</body></html>';
const CICAP_HTTP =
  'HTTP/1.1 403 Forbidden\r\n' +
  'Server: C-ICAP\r\n' +
  'Connection: close\r\n' +
  'Content-Type: text/html\r\n' +
  'Content-Language: en\r\n' +
  `Content-Length: ${len(CICAP_PAGE)}\r\n` +
  '\r\n';

export const CICAP_EICAR =
  'ICAP/1.0 200 OK\r\n' +
  'Server: C-ICAP/0.5.10\r\n' +
  'Connection: keep-alive\r\n' +
  'ISTag: "CI0001-2-virus_scan-27"\r\n' +
  'X-Infection-Found: Type=0; Resolution=2; Threat=Eicar-Test-Signature.UNOFFICIAL;\r\n' +
  'X-Violations-Found: 1\r\n' +
  '\teicar_com.zip\r\n' +
  '\tEicar-Test-Signature.UNOFFICIAL\r\n' +
  '\t0\r\n' +
  '\t0\r\n' +
  `Encapsulated: res-hdr=0, res-body=${len(CICAP_HTTP)}\r\n` +
  '\r\n' +
  CICAP_HTTP +
  chunked(CICAP_PAGE);

// ------------------------------------------------------------------ NSX Defender (Lastline)

const NSX_PAGE = '<html><body>This file was blocked by NSX Defender</body></html>';
const NSX_HTTP =
  'HTTP/1.1 403 Forbidden\r\n' +
  'Content-Type: text/html\r\n' +
  'X-Lastline-Status: known\r\n' +
  'X-Lastline-Score: 100\r\n' +
  `X-Lastline-Task: ${NSX_UUID}\r\n` +
  `Content-Length: ${len(NSX_PAGE)}\r\n` +
  '\r\n';

/** Both ICAP header forms of the NSX guide, and the X-Lastline-* HTTP headers on the block page. */
export const NSX_BLOCKED =
  'ICAP/1.0 200 OK\r\n' +
  'ISTag: "LL-ICAP-0001"\r\n' +
  `X-Infection-Found: Type=0;Resolution=1;Threat=LastlineArtifact(score=100;md5=${EICAR_MD5};uuid=${NSX_UUID})\r\n` +
  `X-Virus-ID: LastlineArtifact(score=100;md5=${EICAR_MD5};task_uuid=${NSX_UUID})\r\n` +
  `Encapsulated: res-hdr=0, res-body=${len(NSX_HTTP)}\r\n` +
  '\r\n' +
  NSX_HTTP +
  chunked(NSX_PAGE);

const NSX_BARE_HTTP = 'HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n';

/** Only the X-Virus-ID form (task_uuid=), no X-Lastline-* headers. */
export const NSX_VIRUS_ID_ONLY =
  'ICAP/1.0 200 OK\r\n' +
  'ISTag: "LL-ICAP-0001"\r\n' +
  `X-Virus-ID: LastlineArtifact(score=87;md5=${EICAR_MD5};task_uuid=${NSX_UUID})\r\n` +
  `Encapsulated: res-hdr=0, null-body=${len(NSX_BARE_HTTP)}\r\n` +
  '\r\n' +
  NSX_BARE_HTTP;

const UPLOAD_BODY = 'hello world, nothing to see';
const NSX_KNOWN_REQ =
  'POST /upload HTTP/1.1\r\n' +
  'Host: app.example\r\n' +
  'Content-Type: application/octet-stream\r\n' +
  `Content-Length: ${len(UPLOAD_BODY)}\r\n` +
  'X-Lastline-Status: known\r\n' +
  'X-Lastline-Score: 85\r\n' +
  `X-Lastline-Task: ${NSX_UUID}\r\n` +
  '\r\n';

/** NSX Defender in a passive mode: the modified request carries X-Lastline-* but nothing blocks. */
export const NSX_KNOWN_NOT_BLOCKED =
  'ICAP/1.0 200 OK\r\n' +
  'ISTag: "LL-ICAP-0001"\r\n' +
  `Encapsulated: req-hdr=0, req-body=${len(NSX_KNOWN_REQ)}\r\n` +
  '\r\n' +
  NSX_KNOWN_REQ +
  chunked(UPLOAD_BODY);

const NSX_BAD_REQ =
  'POST /upload HTTP/1.1\r\n' +
  'Host: app.example\r\n' +
  `Content-Length: ${len(UPLOAD_BODY)}\r\n` +
  'X-Lastline-Status: pwned\r\n' +
  'X-Lastline-Score: 101\r\n' +
  'X-Lastline-Task: ../../etc/passwd\r\n' +
  'X-Lastline-Other: 1\r\n' +
  '\r\n';

/** X-Lastline-* values outside what the guide documents. */
export const NSX_BAD_LASTLINE_VALUES =
  'ICAP/1.0 200 OK\r\n' +
  'ISTag: "LL-ICAP-0001"\r\n' +
  `Encapsulated: req-hdr=0, req-body=${len(NSX_BAD_REQ)}\r\n` +
  '\r\n' +
  NSX_BAD_REQ +
  chunked(UPLOAD_BODY);

// ------------------------------------------------------------------ other vendors

const FORBIDDEN_HTTP = 'HTTP/1.1 403 Forbidden\r\nContent-Type: text/html\r\nContent-Length: 9\r\n\r\n';
const FORBIDDEN_BODY = 'Forbidden';

/** Symantec (avscan): two policy violations, Type=1. */
export const SYMANTEC_MULTI =
  'ICAP/1.0 200 OK\r\n' +
  'ISTag: "SYMC-4d2a7f"\r\n' +
  'X-Infection-Found: Type=1; Resolution=2; Threat=File policy violation File Size Blocked;\r\n' +
  'X-Violations-Found: 2\r\n' +
  '\tno.file\r\n' +
  '\tFile policy violation File Size Blocked\r\n' +
  '\t-1\r\n' +
  '\t0\r\n' +
  '\tpayload/macro.docm\r\n' +
  '\tFile policy violation File Extension Blocked\r\n' +
  '\t-1\r\n' +
  '\t2\r\n' +
  'X-Outer-Container-Is-Mime: 0\r\n' +
  `Encapsulated: res-hdr=0, res-body=${len(FORBIDDEN_HTTP)}\r\n` +
  '\r\n' +
  FORBIDDEN_HTTP +
  chunked(FORBIDDEN_BODY);

/** Symantec SYMCScanResp-AV: 201 Created with the block page as the adapted response (RESPMOD). */
export const SYMANTEC_201_RESPMOD =
  'ICAP/1.0 201 Created\r\n' +
  'ISTag: "SYMC-4d2a7f"\r\n' +
  'X-Infection-Found: Type=0; Resolution=2; Threat=EICAR Test String;\r\n' +
  `Encapsulated: res-hdr=0, res-body=${len(FORBIDDEN_HTTP)}\r\n` +
  '\r\n' +
  FORBIDDEN_HTTP +
  chunked(FORBIDDEN_BODY);

/** Symantec SYMCScanReq-AV: 201 with request satisfaction and no vendor header at all. */
export const SYMANTEC_201_REQMOD =
  'ICAP/1.0 201 Created\r\n' +
  'ISTag: "SYMC-4d2a7f"\r\n' +
  `Encapsulated: res-hdr=0, res-body=${len(FORBIDDEN_HTTP)}\r\n` +
  '\r\n' +
  FORBIDDEN_HTTP +
  chunked(FORBIDDEN_BODY);

export const SYMANTEC_539 =
  'ICAP/1.0 539 Aborted - No AV scanning license\r\n' +
  'ISTag: "SYMC-4d2a7f"\r\n' +
  'Encapsulated: null-body=0\r\n' +
  '\r\n';

const KAV_REQ =
  'POST /files/report.pdf HTTP/1.1\r\n' +
  'Host: app.example\r\n' +
  'Content-Type: application/pdf\r\n' +
  `Content-Length: ${len(UPLOAD_BODY)}\r\n` +
  '\r\n';

/** Kaspersky (KWTS) clean with Allow204 off: a 200 echo with `X-Virus-ID: no threats`. */
export const KASPERSKY_CLEAN_ECHO =
  'ICAP/1.0 200 OK\r\n' +
  'ISTag: "KAV-1700000000"\r\n' +
  'X-Virus-ID: no threats\r\n' +
  'X-Response-Info: passed\r\n' +
  `Encapsulated: req-hdr=0, req-body=${len(KAV_REQ)}\r\n` +
  '\r\n' +
  KAV_REQ +
  chunked(UPLOAD_BODY);

/** Kaspersky block: several threats in one comma list, X-Virus-ID with the first only. */
export const KASPERSKY_BLOCK =
  'ICAP/1.0 200 OK\r\n' +
  'ISTag: "KAV-1700000000"\r\n' +
  'X-Virus-ID: EICAR-Test-File\r\n' +
  'X-Infection-Found: Type=0; Resolution=0; Threat=EICAR-Test-File,HEUR:Trojan.Script.Generic;\r\n' +
  'X-Response-Info: blocked\r\n' +
  `Encapsulated: res-hdr=0, res-body=${len(FORBIDDEN_HTTP)}\r\n` +
  '\r\n' +
  FORBIDDEN_HTTP +
  chunked(FORBIDDEN_BODY);

const ESET_HTTP = 'HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n';

/** ESET: localised, UTF-8 X-Virus-ID and X-Response-Description. */
export const ESET_BLOCK =
  'ICAP/1.0 200 OK\r\n' +
  'ISTag: "ESET-1"\r\n' +
  'X-Infection-Found: Type=0; Resolution=0; Threat=Eicar;\r\n' +
  'X-Virus-ID: Testdatei\r\n' +
  'X-Response-Info: Blocked\r\n' +
  'X-Response-Description: Gelöscht\r\n' +
  `Encapsulated: res-hdr=0, null-body=${len(ESET_HTTP)}\r\n` +
  '\r\n' +
  ESET_HTTP;

const REDIRECT_HTTP =
  'HTTP/1.0 307 Temporary Redirect\r\n' +
  'Location: http://proxy.example/cgi-bin/clwarn.cgi?url=http://app.example/upload&virus=Eicar-Test-Signature\r\n' +
  '\r\n';

/** SquidClamav: the block is a redirect to its warning page. */
export const SQUIDCLAMAV_REDIRECT =
  'ICAP/1.0 200 OK\r\n' +
  'ISTag: "SQUIDCLAMAV-7.3"\r\n' +
  'X-Infection-Found: Type=0; Resolution=2; Threat=Eicar-Test-Signature;\r\n' +
  'X-Virus-ID: Eicar-Test-Signature\r\n' +
  `Encapsulated: res-hdr=0, null-body=${len(REDIRECT_HTTP)}\r\n` +
  '\r\n' +
  REDIRECT_HTTP;

/** The same redirect without any vendor header. */
export const BARE_REDIRECT =
  'ICAP/1.0 200 OK\r\n' +
  'ISTag: "SQUIDCLAMAV-7.3"\r\n' +
  `Encapsulated: res-hdr=0, null-body=${len(REDIRECT_HTTP)}\r\n` +
  '\r\n' +
  REDIRECT_HTTP;

const MCAFEE_PAGE = '<html><body><h1>Virus Found</h1></body></html>';
const MCAFEE_HTTP =
  'HTTP/1.1 403 VirusFound\r\n' +
  'Content-Type: text/html\r\n' +
  'Cache-Control: no-cache\r\n' +
  `Content-Length: ${len(MCAFEE_PAGE)}\r\n` +
  '\r\n';

/** McAfee Web Gateway: no ICAP vendor header, only the encapsulated `403 VirusFound` page. */
export const MCAFEE_VIRUSFOUND =
  'ICAP/1.0 200 OK\r\n' +
  'ISTag: "00000001-2-3"\r\n' +
  `Encapsulated: res-hdr=0, res-body=${len(MCAFEE_HTTP)}\r\n` +
  '\r\n' +
  MCAFEE_HTTP +
  chunked(MCAFEE_PAGE);

export const MCAFEE_418 =
  'ICAP/1.0 418 Bad composition\r\nISTag: "00000001-2-3"\r\nEncapsulated: null-body=0\r\n\r\n';

const SOPHOS_PAGE = '<html><body>Virus found</body></html>';
const SOPHOS_HTTP =
  'HTTP/1.1 200 OK\r\n' +
  'Content-Type: text/html\r\n' +
  'X-Blocked: Virus found during virus scan\r\n' +
  'X-Blocked-By: Sophos Anti-Virus\r\n' +
  `Content-Length: ${len(SOPHOS_PAGE)}\r\n` +
  '\r\n';

/** Sophos SAVDI (RESPMOD): the verdict is only in the encapsulated HTTP headers. */
export const SOPHOS_BLOCK =
  'ICAP/1.0 200 OK\r\n' +
  'ISTag: "SAVDI-5.98"\r\n' +
  `Encapsulated: res-hdr=0, res-body=${len(SOPHOS_HTTP)}\r\n` +
  '\r\n' +
  SOPHOS_HTTP +
  chunked(SOPHOS_PAGE);

const ECHO_HTTP =
  'HTTP/1.1 200 OK\r\n' +
  'Content-Type: application/octet-stream\r\n' +
  'Content-Disposition: attachment; filename="eicar.com"\r\n' +
  `Content-Length: ${len(UPLOAD_BODY)}\r\n` +
  '\r\n';

/** F-Secure (RESPMOD): X-FSecure-Scan-Result: infected on an echo of the response. */
export const FSECURE_INFECTED =
  'ICAP/1.0 200 OK\r\n' +
  'ISTag: "FSIGK-5.40"\r\n' +
  'X-FSecure-Scan-Result: infected\r\n' +
  'X-FSecure-Infection-Name: EICAR_Test_File\r\n' +
  'X-FSecure-Infected-Filename: eicar.com\r\n' +
  `Encapsulated: res-hdr=0, res-body=${len(ECHO_HTTP)}\r\n` +
  '\r\n' +
  ECHO_HTTP +
  chunked(UPLOAD_BODY);

/** F-Secure clean echo. */
export const FSECURE_CLEAN =
  'ICAP/1.0 200 OK\r\n' +
  'ISTag: "FSIGK-5.40"\r\n' +
  'X-FSecure-Scan-Result: clean\r\n' +
  `Encapsulated: res-hdr=0, res-body=${len(ECHO_HTTP)}\r\n` +
  '\r\n' +
  ECHO_HTTP +
  chunked(UPLOAD_BODY);

/** OPSWAT: an encrypted archive cannot be scanned (Type=2). */
export const OPSWAT_ENCRYPTED =
  'ICAP/1.0 200 OK\r\n' +
  'Server: Metadefender Core V4\r\n' +
  'ISTag: "001605794100"\r\n' +
  'X-ICAP-Profile: File process\r\n' +
  'X-Response-Info: Blocked\r\n' +
  'X-Response-Desc: Encrypted Archive\r\n' +
  'X-Blocked-Reason: Encrypted Archive\r\n' +
  'X-Infection-Found: Type=2; Resolution=2; Threat=Encrypted Archive;\r\n' +
  `Encapsulated: res-hdr=0, res-body=${len(FORBIDDEN_HTTP)}\r\n` +
  '\r\n' +
  FORBIDDEN_HTTP +
  chunked(FORBIDDEN_BODY);

const SANITIZED_BODY = 'sanitized document bytes';
const SANITIZED_REQ =
  'POST /upload HTTP/1.1\r\n' +
  'Host: app.example\r\n' +
  'Content-Type: application/pdf\r\n' +
  `Content-Length: ${len(SANITIZED_BODY)}\r\n` +
  '\r\n';

/** OPSWAT allows the upload as a 200 carrying the (possibly sanitised) request. */
export const OPSWAT_ALLOWED_200 =
  'ICAP/1.0 200 OK\r\n' +
  'Server: Metadefender Core V4\r\n' +
  'ISTag: "001605794100"\r\n' +
  'X-ICAP-Profile: File process\r\n' +
  'X-Response-Info: Allowed\r\n' +
  `Encapsulated: req-hdr=0, req-body=${len(SANITIZED_REQ)}\r\n` +
  '\r\n' +
  SANITIZED_REQ +
  chunked(SANITIZED_BODY);

/** OPSWAT FILEMOD refusal: ICAP 403 is an error, not a block. */
export const OPSWAT_403 =
  'ICAP/1.0 403 Forbidden\r\nServer: Metadefender Core V4\r\nISTag: "001605794100"\r\nEncapsulated: null-body=0\r\n\r\n';

/** Nextcloud-seen server: 500 with X-Error-Code. */
export const ERROR_PASSWORD_PROTECTED =
  'ICAP/1.0 500 Internal Server Error\r\n' +
  'ISTag: "GEN-1"\r\n' +
  'X-Error-Code: password_protected\r\n' +
  'Encapsulated: null-body=0\r\n' +
  '\r\n';

export const STATUS_206 =
  'ICAP/1.0 206 Partial Content\r\nISTag: "GEN-1"\r\nEncapsulated: null-body=0\r\n\r\n';
export const STATUS_202 = 'ICAP/1.0 202 Accepted\r\nISTag: "GEN-1"\r\nEncapsulated: null-body=0\r\n\r\n';
export const STATUS_503_NO_PHRASE = 'ICAP/1.0 503\r\nISTag: "GEN-1"\r\n\r\n';

/** A 200 without any encapsulated message but an explicit allow. */
export const ALLOWED_200_NO_MESSAGE =
  'ICAP/1.0 200 OK\r\nISTag: "GEN-1"\r\nX-Response-Info: Allowed\r\nEncapsulated: null-body=0\r\n\r\n';

/** A 200 without any encapsulated message and nothing said. */
export const BARE_200_NO_MESSAGE = 'ICAP/1.0 200 OK\r\nISTag: "GEN-1"\r\nEncapsulated: null-body=0\r\n\r\n';

// ------------------------------------------------------------------ robustness

const ROBUST_REQ_BODY = 'x';

/** A modified request whose upload name is in Content-Disposition (RFC 8187 form) and in the target. */
const NAMED_REQ =
  'POST /upload/files/report%20v2.docx?session=1 HTTP/1.1\r\n' +
  'Host: app.example\r\n' +
  "Content-Disposition: attachment; filename*=UTF-8''r%C3%A9sum%C3%A9.pdf\r\n" +
  'Content-Length: 1\r\n' +
  '\r\n';

export const INFECTION_WITH_NAMED_REQUEST =
  'ICAP/1.0 200 OK\r\n' +
  'ISTag: "GEN-1"\r\n' +
  'X-Infection-Found: Type=0; Resolution=1; Threat=W97M.Downloader;\r\n' +
  `Encapsulated: req-hdr=0, req-body=${len(NAMED_REQ)}\r\n` +
  '\r\n' +
  NAMED_REQ +
  chunked(ROBUST_REQ_BODY);

const TARGET_REQ =
  'PUT /dav/home/report%20v2.docx?session=1 HTTP/1.1\r\nHost: app.example\r\nContent-Length: 1\r\n\r\n';

export const INFECTION_WITH_TARGET_ONLY =
  'ICAP/1.0 200 OK\r\n' +
  'ISTag: "GEN-1"\r\n' +
  'X-Infection-Found: Type=0; Resolution=2; Threat=W97M.Downloader\r\n' +
  `Encapsulated: req-hdr=0, req-body=${len(TARGET_REQ)}\r\n` +
  '\r\n' +
  TARGET_REQ +
  chunked(ROBUST_REQ_BODY);

function violationsResponse(violationLines: string[]): string {
  return (
    'ICAP/1.0 200 OK\r\n' +
    'ISTag: "GEN-1"\r\n' +
    violationLines.join('') +
    `Encapsulated: res-hdr=0, res-body=${len(FORBIDDEN_HTTP)}\r\n` +
    '\r\n' +
    FORBIDDEN_HTTP +
    chunked(FORBIDDEN_BODY)
  );
}

/** Count 3, but only two lines follow. */
export const VIOLATIONS_COUNT_3_TWO_LINES = violationsResponse([
  'X-Violations-Found: 3\r\n',
  '\tfirst.exe\r\n',
  '\tTrojan.Agent\r\n',
]);

/** Count 3, but only two complete violations follow. */
export const VIOLATIONS_COUNT_3_EIGHT_LINES = violationsResponse([
  'X-Violations-Found: 3\r\n',
  '\ta.exe\r\n\tTrojan.A\r\n\t11\r\n\t1\r\n',
  '\tb.exe\r\n\tTrojan.B\r\n\t12\r\n\t7\r\n',
]);

/** A count that is not a number. */
export const VIOLATIONS_NON_NUMERIC = violationsResponse([
  'X-Violations-Found: many\r\n',
  '\tc.exe\r\n\tTrojan.C\r\n\t-1\r\n\tx\r\n',
]);

/** Count 0 on an echo: no violation, not a block. */
export const VIOLATIONS_ZERO_ECHO =
  'ICAP/1.0 200 OK\r\n' +
  'ISTag: "GEN-1"\r\n' +
  'X-Violations-Found: 0\r\n' +
  `Encapsulated: req-hdr=0, req-body=${len(TARGET_REQ)}\r\n` +
  '\r\n' +
  TARGET_REQ +
  chunked(ROBUST_REQ_BODY);

/** X-Infection-Found without Threat=, with spaces around `=`. */
export const INFECTION_NO_THREAT = violationsResponse(['X-Infection-Found: Type = 0 ; Resolution = 2\r\n']);

/** Threat with unbalanced parentheses, and a UTF-8 (non-ASCII) name. */
export const INFECTION_ODD_THREAT = violationsResponse([
  'X-Infection-Found: Type=0; Threat=Virüs(Foo; Resolution=2\r\n',
]);
