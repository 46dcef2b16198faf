/**
 * A real c-icap server (Debian packages `c-icap` and `libc-icap-mod-virus-scan`) on loopback,
 * for interop tests and benchmarks: plain ICAP and ICAPS (TLS) ports, the `echo` service and a
 * ClamAV-backed `avscan` service (and `avscan_no204`) that detects EICAR through a local test
 * signature, since no signature database can be downloaded here.
 *
 * Everything lives in a fresh temp folder (config, certificates, pid file, commands socket,
 * logs, c-icap's TmpDir) that stop() removes. The only files written outside it are the ClamAV
 * signatures `/var/lib/clamav/icapkit-eicar.{hdb,ndb}`: libclamav has no DataDir option in
 * c-icap's clamav_mod, so they have to be in the default database folder (root, usually). They
 * are left in place (other servers started concurrently may be reading them).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { accessSync, constants as fsConstants, readFileSync, statSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { createServer, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import { eicar } from './signatures.js';
import { generateTestCertificate } from './tls.js';

const LOOPBACK = '127.0.0.1';

/** The name ClamAV reports for EICAR with these signatures (unsigned local ones get `.UNOFFICIAL`). */
export const CICAP_EICAR_THREAT = 'Eicar-Test-Signature.UNOFFICIAL';

/** ClamAV's default database folder, read by c-icap's clamav_mod. */
const CLAMAV_DB_DIR = '/var/lib/clamav';
const EICAR_SIGNATURE_FILE = join(CLAMAV_DB_DIR, 'icapkit-eicar.hdb');
const EICAR_SIGNATURE = `${createHash('md5').update(eicar()).digest('hex')}:${eicar().length}:Eicar-Test-Signature\n`;
/**
 * The .hdb signature matches a file that is exactly EICAR; this body signature (.ndb,
 * `Name:TargetType:Offset:Hex`) also finds it inside a larger body (a multipart form, an
 * archive member), as ClamAV's real EICAR signature does. Built at runtime, not stored.
 */
const EICAR_BODY_SIGNATURE_FILE = join(CLAMAV_DB_DIR, 'icapkit-eicar.ndb');
const EICAR_BODY_SIGNATURE = `Eicar-Test-Signature:0:*:${eicar().toString('hex')}\n`;

const MODULE_DIR_CANDIDATES = [
  '/usr/lib/x86_64-linux-gnu/c_icap',
  '/usr/lib/aarch64-linux-gnu/c_icap',
  '/usr/lib/c_icap',
  '/usr/local/lib/c_icap',
  '/usr/lib64/c_icap',
];
const TEMPLATE_DIR_CANDIDATES = ['/usr/share/c_icap/templates', '/usr/local/share/c_icap/templates'];
const MAGIC_FILE_CANDIDATES = ['/etc/c-icap/c-icap.magic', '/usr/local/etc/c-icap.magic'];
const REQUIRED_MODULES = ['srv_echo.so', 'virus_scan.so', 'clamav_mod.so'];

const STOP_GRACE_MS = 3_000;
const OUTPUT_KEEP_BYTES = 64 * 1024;

export interface StartCIcapOptions {
  /** Plain ICAP port; a free loopback port when omitted. */
  port?: number;
  /** ICAPS (TLS) port; a free loopback port when omitted. */
  tlsPort?: number;
  /** c-icap `MaxKeepAliveRequests` (requests per connection before the server closes it). Default 100. */
  maxKeepAliveRequests?: number;
  /**
   * c-icap `KeepAliveTimeout` in seconds. Measured with 0.5.10: an idle kept-alive connection is
   * closed (silent FIN) after about `keepAliveTimeout + timeout` seconds, not `keepAliveTimeout`.
   * Default 600.
   */
  keepAliveTimeout?: number;
  /** c-icap `Timeout` in seconds (network read/write timeout; also adds to the idle keep-alive close). Default 60. */
  timeout?: number;
  /** c-icap `DebugLevel` (its server.log). Default 1. */
  debugLevel?: number;
  /** Lines appended to the generated c-icap.conf (later directives override earlier ones). */
  extraConfig?: string;
  /** How long to wait for both ports to accept connections. Default 15 s. */
  startTimeoutMs?: number;
}

export interface CIcapServer {
  host: '127.0.0.1';
  port: number;
  /** The main c-icap process (its workers are in its process group). */
  pid: number;
  tlsPort: number;
  /** PEM file of the test CA that signed the server certificate; clients must trust it. */
  caFile: string;
  /** Folder holding ca.crt, server.crt and server.key. */
  certDir: string;
  /** Folder holding everything of this instance (removed by stop()). */
  dir: string;
  /** `icap://127.0.0.1:<port>/<service>` or, with tls, `icaps://127.0.0.1:<tlsPort>/<service>`. */
  url(service: string, tls?: boolean): string;
  /** Server log, access log and the process's own stdout/stderr, for failure messages. */
  logs(): Promise<string>;
  /** Stops c-icap (SIGTERM, SIGKILL after 3 s) and removes the temp folder. Idempotent. */
  stop(): Promise<void>;
}

/* ------------------------------------------------------------------ availability */

function findOnPath(name: string): string | null {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (!dir) continue;
    const candidate = join(dir, name);
    try {
      accessSync(candidate, fsConstants.X_OK);
      if (statSync(candidate).isFile()) return candidate;
    } catch {
      // not there
    }
  }
  return null;
}

function firstExisting(paths: readonly string[]): string | null {
  for (const p of paths) {
    try {
      statSync(p);
      return p;
    } catch {
      // next
    }
  }
  return null;
}

function moduleDir(): string | null {
  for (const dir of MODULE_DIR_CANDIDATES) {
    if (REQUIRED_MODULES.every((m) => firstExisting([join(dir, m)]) !== null)) return dir;
  }
  return null;
}

/** What is missing to start c-icap here (empty when everything is installed). */
export function cIcapMissing(): string[] {
  const missing: string[] = [];
  if (!findOnPath('c-icap')) missing.push('c-icap binary (Debian package c-icap)');
  if (!findOnPath('c-icap-client')) missing.push('c-icap-client binary (Debian package c-icap)');
  if (!moduleDir()) missing.push(`c-icap modules ${REQUIRED_MODULES.join(', ')} (libc-icap-mod-virus-scan)`);
  if (!findOnPath('openssl')) missing.push('openssl binary (Debian package openssl)');
  return missing;
}

/* ------------------------------------------------------------------ helpers */

/** A loopback port that was free a moment ago (bind to port 0, read it, close). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen(0, LOOPBACK, () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => (port > 0 ? resolve(port) : reject(new Error('freePort: no port assigned'))));
    });
  });
}

/** Writes the EICAR signatures into ClamAV's database folder (no-op when already there). */
async function installEicarSignature(): Promise<void> {
  for (const [file, content] of [
    [EICAR_SIGNATURE_FILE, EICAR_SIGNATURE],
    [EICAR_BODY_SIGNATURE_FILE, EICAR_BODY_SIGNATURE],
  ] as const) {
    await installSignature(file, content);
  }
}

async function installSignature(file: string, content: string): Promise<void> {
  try {
    if (readFileSync(file, 'utf8') === content) return;
  } catch {
    // absent: write it
  }
  try {
    await mkdir(CLAMAV_DB_DIR, { recursive: true });
    const tmp = `${file}.${process.pid}.tmp`;
    await writeFile(tmp, content, { mode: 0o644 });
    await rename(tmp, file);
  } catch (err) {
    const why = err instanceof Error ? err.message : String(err);
    throw new Error(
      `Cannot install the ClamAV EICAR signature ${EICAR_SIGNATURE_FILE} (${why}). c-icap's clamav_mod only ` +
        `reads ${CLAMAV_DB_DIR}; run the interop tests as root, or create the file once as root with the ` +
        `line "${EICAR_SIGNATURE.trim()}".`,
    );
  }
}

function canConnect(port: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = new Socket();
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once('error', () => done(false));
    socket.connect(port, LOOPBACK, () => done(true));
  });
}

/** A full TLS handshake against the test CA (a bare TCP probe makes c-icap log an SSL error). */
function canHandshake(port: number, ca: Buffer, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = tlsConnect({ host: LOOPBACK, port, ca, servername: 'localhost' });
    let settled = false;
    const done = (ok: boolean) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (ok) socket.end();
      else socket.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    socket.once('secureConnect', () => done(socket.authorized));
    socket.once('error', () => done(false));
    // Ignore anything after the verdict (e.g. a reset while closing).
    socket.on('error', () => {});
  });
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function buildConfig(o: {
  dir: string;
  port: number;
  tlsPort: number;
  cert: string;
  key: string;
  modules: string;
  templates: string;
  magic: string | null;
  maxKeepAliveRequests: number;
  keepAliveTimeout: number;
  timeout: number;
  debugLevel: number;
  extraConfig: string;
}): string {
  const lines = [
    '# Generated by @icapkit/testing (startCIcap)',
    `PidFile ${join(o.dir, 'c-icap.pid')}`,
    `CommandsSocket ${join(o.dir, 'c-icap.ctl')}`,
    `ServerLog ${join(o.dir, 'server.log')}`,
    `AccessLog ${join(o.dir, 'access.log')}`,
    `TmpDir ${join(o.dir, 'tmp')}`,
    `Port ${LOOPBACK}:${o.port}`,
    `TlsPort ${LOOPBACK}:${o.tlsPort} cert=${o.cert} key=${o.key}`,
    `Timeout ${o.timeout}`,
    `MaxKeepAliveRequests ${o.maxKeepAliveRequests}`,
    `KeepAliveTimeout ${o.keepAliveTimeout}`,
    'StartServers 1',
    'MaxServers 4',
    'ThreadsPerChild 20',
    'MinSpareThreads 4',
    'MaxSpareThreads 40',
    'MaxRequestsPerChild 0',
    'ServerAdmin icapkit-tests@localhost',
    'ServerName icapkit-test',
    'MaxMemObject 131072',
    `DebugLevel ${o.debugLevel}`,
    `ModulesDir ${o.modules}`,
    `ServicesDir ${o.modules}`,
    `TemplateDir ${o.templates}/`,
    'TemplateDefaultLanguage en',
    ...(o.magic ? [`LoadMagicFile ${o.magic}`] : []),
    'Service echo srv_echo.so',
    'Module common clamav_mod.so',
    'Service antivirus_module virus_scan.so',
    'ServiceAlias avscan virus_scan?allow204=on&sizelimit=off&mode=simple',
    'ServiceAlias avscan_no204 virus_scan?allow204=off&sizelimit=off&mode=simple',
    'virus_scan.ScanFileTypes TEXT DATA EXECUTABLE ARCHIVE GIF JPEG MSOFFICE',
    'virus_scan.MaxObjectSize 200M',
    'virus_scan.DefaultEngine clamav',
    'clamav_mod.MaxScanSize 200M',
    o.extraConfig,
    '',
  ];
  return lines.join('\n');
}

function killGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    // group already gone
  }
}

function groupAlive(pid: number): boolean {
  try {
    process.kill(-pid, 0);
    return true;
  } catch {
    return false;
  }
}

/* ------------------------------------------------------------------ start */

const running = new Set<number>();
let exitHookInstalled = false;
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // Last resort if a test process ends without calling stop(): no c-icap outlives it.
  process.once('exit', () => {
    for (const pid of running) killGroup(pid, 'SIGKILL');
  });
}

/**
 * Starts c-icap in the foreground (`c-icap -N -f <conf> -D -d <debugLevel>`) in its own process group
 * and resolves once the ICAP port accepts TCP connections and the ICAPS port completes a TLS
 * handshake verified against the generated CA (bounded by `startTimeoutMs`, default 15 s).
 */
export async function startCIcap(opts: StartCIcapOptions = {}): Promise<CIcapServer> {
  const missing = cIcapMissing();
  if (missing.length > 0) throw new Error(`c-icap cannot start, missing: ${missing.join('; ')}`);
  const modules = moduleDir()!;
  const templates = firstExisting(TEMPLATE_DIR_CANDIDATES) ?? '/usr/share/c_icap/templates';
  const magic = firstExisting(MAGIC_FILE_CANDIDATES);

  await installEicarSignature();

  const dir = await mkdtemp(join(tmpdir(), 'icapkit-cicap-'));
  try {
    await mkdir(join(dir, 'tmp'));
    const certs = await generateTestCertificate();
    const certDir = join(dir, 'certs');
    await rename(certs.dir, certDir).catch(async () => {
      // another file system: copy what c-icap and clients need
      await mkdir(certDir);
      await Promise.all([
        writeFile(join(certDir, 'ca.crt'), certs.ca),
        writeFile(join(certDir, 'server.crt'), certs.cert),
        writeFile(join(certDir, 'server.key'), certs.key, { mode: 0o600 }),
      ]);
      await certs.cleanup();
    });
    const caFile = join(certDir, 'ca.crt');
    const cert = join(certDir, 'server.crt');
    const key = join(certDir, 'server.key');
    // Ports picked here can be taken by someone else before c-icap binds them: retry then.
    const autoPorts = opts.port === undefined || opts.tlsPort === undefined;
    const attempts = autoPorts ? 3 : 1;
    let lastError: Error | null = null;
    for (let attempt = 1; attempt <= attempts; attempt++) {
      const port = opts.port ?? (await freePort());
      let tlsPort = opts.tlsPort ?? (await freePort());
      while (opts.tlsPort === undefined && tlsPort === port) tlsPort = await freePort();
      if (tlsPort === port) throw new Error(`startCIcap: port and tlsPort are both ${port}`);
      const conf = join(dir, 'c-icap.conf');
      await writeFile(
        conf,
        buildConfig({
          dir,
          port,
          tlsPort,
          cert,
          key,
          modules,
          templates,
          magic,
          maxKeepAliveRequests: opts.maxKeepAliveRequests ?? 100,
          keepAliveTimeout: opts.keepAliveTimeout ?? 600,
          timeout: opts.timeout ?? 60,
          debugLevel: opts.debugLevel ?? 1,
          extraConfig: opts.extraConfig ?? '',
        }),
      );
      await rm(join(dir, 'c-icap.pid'), { force: true });
      try {
        const child = await launch(
          dir,
          conf,
          port,
          tlsPort,
          caFile,
          opts.startTimeoutMs ?? 15_000,
          opts.debugLevel ?? 1,
        );
        return makeHandle(dir, certDir, caFile, port, tlsPort, child);
      } catch (err) {
        lastError = err instanceof Error ? err : new Error(String(err));
        // Only a lost race for an auto-picked port is worth another try.
        if (!/exited early/.test(lastError.message) || !/bind/i.test(lastError.message)) break;
      }
    }
    throw lastError ?? new Error('startCIcap failed');
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
}

interface Launched {
  child: ChildProcess;
  output: () => string;
  exited: Promise<void>;
}

async function readTail(path: string, maxBytes: number): Promise<string> {
  try {
    const text = await readFile(path, 'utf8');
    return text.length > maxBytes ? text.slice(-maxBytes) : text;
  } catch {
    return '';
  }
}

async function launch(
  dir: string,
  conf: string,
  port: number,
  tlsPort: number,
  caFile: string,
  timeoutMs: number,
  debugLevel: number,
): Promise<Launched> {
  const ca = await readFile(caFile);
  const child = spawn('c-icap', ['-N', '-f', conf, '-D', '-d', String(debugLevel)], {
    cwd: dir,
    detached: true, // own process group, so stop() can reach the worker children too
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  const keep = (chunk: Buffer) => {
    output += chunk.toString('utf8');
    if (output.length > OUTPUT_KEEP_BYTES) output = output.slice(-OUTPUT_KEEP_BYTES);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  let exitInfo: string | null = null;
  const exited = new Promise<void>((resolve) => {
    child.once('exit', (code, signal) => {
      exitInfo = `code ${code} signal ${signal}`;
      if (child.pid !== undefined) running.delete(child.pid);
      resolve();
    });
    child.once('error', (err) => {
      exitInfo = `spawn error ${err.message}`;
      resolve();
    });
  });
  if (child.pid !== undefined) {
    running.add(child.pid);
    installExitHook();
  }
  const launched: Launched = { child, output: () => output, exited };

  const failure = async (what: string): Promise<Error> => {
    const log = await readTail(join(dir, 'server.log'), 4000);
    const lastLines = (s: string) => s.split('\n').slice(-25).join('\n');
    return new Error(
      `c-icap ${what} (ports ${port}/${tlsPort})\n--- c-icap output ---\n${lastLines(output)}\n` +
        `--- server.log ---\n${lastLines(log)}`,
    );
  };

  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (exitInfo !== null) throw await failure(`exited early (${exitInfo})`);
    const [plain, tls] = await Promise.all([canConnect(port, 500), canHandshake(tlsPort, ca, 1000)]);
    if (plain && tls) return launched;
    await sleep(100);
  }
  if (exitInfo !== null) throw await failure(`exited early (${exitInfo})`);
  const err = await failure(`did not accept connections within ${timeoutMs} ms`);
  await terminate(launched);
  throw err;
}

async function terminate(l: Launched): Promise<void> {
  const pid = l.child.pid;
  if (pid === undefined) return;
  killGroup(pid, 'SIGTERM');
  const timedOut = await Promise.race([l.exited.then(() => false), sleep(STOP_GRACE_MS).then(() => true)]);
  if (timedOut || groupAlive(pid)) {
    // The main process is gone or stuck; make sure no worker child survives it.
    if (!timedOut) await sleep(200);
    if (groupAlive(pid)) killGroup(pid, 'SIGKILL');
    await Promise.race([l.exited, sleep(STOP_GRACE_MS)]);
  }
  running.delete(pid);
  l.child.stdout?.destroy();
  l.child.stderr?.destroy();
}

function makeHandle(
  dir: string,
  certDir: string,
  caFile: string,
  port: number,
  tlsPort: number,
  launched: Launched,
): CIcapServer {
  let stopping: Promise<void> | null = null;
  return {
    host: LOOPBACK,
    port,
    pid: launched.child.pid ?? 0,
    tlsPort,
    caFile,
    certDir,
    dir,
    url(service: string, tls = false): string {
      const path = service.replace(/^\/+/, '');
      return tls ? `icaps://${LOOPBACK}:${tlsPort}/${path}` : `icap://${LOOPBACK}:${port}/${path}`;
    },
    async logs(): Promise<string> {
      const server = await readTail(join(dir, 'server.log'), 256 * 1024);
      const access = await readTail(join(dir, 'access.log'), 256 * 1024);
      return (
        `--- server.log ---\n${server}\n--- access.log ---\n${access}\n` +
        `--- c-icap stdout/stderr ---\n${launched.output()}`
      );
    },
    stop(): Promise<void> {
      stopping ??= (async () => {
        await terminate(launched);
        await rm(dir, { recursive: true, force: true });
      })();
      return stopping;
    },
  };
}
