import { createHash, randomBytes } from 'node:crypto';
import { type BigIntStats, constants, createReadStream, createWriteStream } from 'node:fs';
import { access, mkdir, realpath, rename, stat, unlink } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import { finished } from 'node:stream/promises';
import { parseArgs } from 'node:util';
import {
  DEFAULT_NSX_STATUS_URL,
  type HeadReading,
  IcapClient,
  IcapError,
  IcapErrorCodes,
  type IcapResponse,
  isSkipped,
  threatAfterHead,
  threatInError,
  threatInHead,
  unrepairedVerdict,
  VENDORS,
  type Vendor,
  type Verdict,
  verdictOfHead,
} from '@icapkit/core';
import { ExitCode, type IcapUrl, parseIcapUrl, parseIntOption, UsageError } from './args.js';
import { CONNECTION_OPTIONS, clientOptions } from './connection.js';
import { fileBody, identityOf } from './file-source.js';
import { type CliIo, Progress, type ProgressTracker } from './io.js';
import { contentTypeOf } from './mime.js';
import { removeTempFiles, tempFiles } from './temp-files.js';
import { renderText } from './text.js';

/** What happened to one file; `--json` prints it as is, one object per line. */
export interface FileResult {
  /** The path as given on the command line. */
  file: string;
  /**
   * clean: 204, an explicit allow, or a 200 returning the file unchanged; blocked: the server
   * refused it; modified: the server returned a different body; skipped: the server's
   * Transfer-Ignore lists its extension (not sent; only with --transfer-ignore); error: no verdict.
   */
  verdict: 'clean' | 'blocked' | 'modified' | 'skipped' | 'error';
  /** ICAP status of the final response. */
  status: number | null;
  istag: string | null;
  /** Threat name reported by the server (also on a clean answer from a server in monitoring mode). */
  threat: string | null;
  reason: string | null;
  /** File size in bytes. */
  size: number | null;
  /** Size of the body the server returned, for a modified file. */
  modifiedSize: number | null;
  /** Where the modified body was written (--output-dir). */
  output: string | null;
  /** Wall-clock ms for the file, response body included. */
  ms: number;
  /** An IcapError code (ICAP_ERR_...) for an error. */
  errorCode: string | null;
  error: string | null;
}

const SCAN_OPTIONS = {
  ...CONNECTION_OPTIONS,
  server: { type: 'string' },
  vendor: { type: 'string' },
  preview: { type: 'string' },
  'no-preview': { type: 'boolean' },
  'no-204': { type: 'boolean' },
  json: { type: 'boolean' },
  concurrency: { type: 'string', short: 'j' },
  'output-dir': { type: 'string', short: 'o' },
  'scan-all': { type: 'boolean' },
  'transfer-ignore': { type: 'boolean' },
} as const;

const DEFAULT_TIMEOUT = 300_000;
const DEFAULT_CONCURRENCY = 4;
const DEFAULT_PREVIEW = 4096;

interface ScanSettings {
  url: IcapUrl;
  files: string[];
  vendor: Vendor;
  preview: number | false;
  allow204: boolean;
  json: boolean;
  concurrency: number;
  outputDir: string | undefined;
  scanAll: boolean;
  client: ConstructorParameters<typeof IcapClient>[0] & { timeout: number };
}

/** `icapkit scan ...` without the command word. Throws UsageError for bad arguments. */
export function parseScanArgs(argv: string[], env: CliIo['env']): ScanSettings | 'help' {
  const { values, positionals } = parseArgs({
    args: argv,
    options: SCAN_OPTIONS,
    allowPositionals: true,
    strict: true,
  });
  if (values.help) return 'help';
  if (positionals.length === 0) throw new UsageError('scan needs at least one file');
  const server = values.server ?? env.ICAPKIT_SERVER;
  if (server === undefined || server === '') {
    throw new UsageError('scan needs --server icap://host[:port]/service (or ICAPKIT_SERVER)');
  }
  const url = parseIcapUrl(server, '--server');
  const vendor = (values.vendor ?? 'generic') as Vendor;
  if (!VENDORS.includes(vendor)) {
    throw new UsageError(
      `--vendor must be one of ${VENDORS.join(', ')} (got ${JSON.stringify(values.vendor)})`,
    );
  }
  if (values['no-preview'] && values.preview !== undefined) {
    throw new UsageError('--preview and --no-preview exclude each other');
  }
  const preview = values['no-preview']
    ? false
    : values.preview === undefined
      ? DEFAULT_PREVIEW
      : parseIntOption(values.preview, 'preview', 0, 1024 * 1024 * 1024);
  const concurrency =
    values.concurrency === undefined
      ? DEFAULT_CONCURRENCY
      : parseIntOption(values.concurrency, 'concurrency', 1, 256);
  const outputDir = values['output-dir'];
  if (outputDir === '') throw new UsageError('--output-dir needs a folder');
  if (outputDir !== undefined) {
    const names = new Map<string, string>();
    for (const f of positionals) {
      const name = basename(f);
      const other = names.get(name);
      if (other !== undefined && resolve(other) !== resolve(f)) {
        throw new UsageError(
          `--output-dir: ${other} and ${f} have the same file name; scan them in separate runs`,
        );
      }
      names.set(name, f);
      if (resolve(outputDir, name) === resolve(f)) {
        throw new UsageError(overwriteMessage(f));
      }
    }
  }
  return {
    url,
    files: positionals,
    vendor,
    preview,
    allow204: values['no-204'] !== true,
    json: values.json === true,
    concurrency,
    outputDir,
    // A file's name is no verdict: files are sent whatever their extension unless asked.
    scanAll: values['scan-all'] === true || values['transfer-ignore'] !== true,
    client: clientOptions(url, values, { timeout: DEFAULT_TIMEOUT, maxConnections: concurrency }),
  };
}

export async function runScan(argv: string[], io: CliIo, help: () => number): Promise<number> {
  const s = parseScanArgs(argv, io.env);
  if (s === 'help') return help();
  if (s.outputDir !== undefined) {
    try {
      await mkdir(s.outputDir, { recursive: true });
    } catch (err) {
      io.stderr.write(
        `icapkit: cannot create --output-dir ${renderText(s.outputDir)}: ${renderText((err as Error).message)}\n`,
      );
      return ExitCode.ERROR;
    }
    await refuseOverwrite(s.outputDir, s.files);
  }
  const client = new IcapClient(s.client);
  const progress = new Progress(io.stderr, !s.json && io.stderr.isTTY === true);
  // Interrupted (Ctrl-C, a cancelled CI job, timeout(1)): no temp file is left in --output-dir.
  const onSignal = (signal: NodeJS.Signals) => {
    progress.clear();
    client.destroy();
    removeTempFiles();
    process.exit(signal === 'SIGINT' ? 130 : 143);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const results: Array<FileResult | undefined> = new Array(s.files.length);
  try {
    // One OPTIONS up front (the client would fetch it with the first file anyway): a server
    // that is down or a wrong service fails every file at once instead of once per file.
    let preflight: IcapError | undefined;
    try {
      await client.options(s.url.service);
    } catch (err) {
      preflight = asIcapError(err);
    }
    let printed = 0;
    const flush = () => {
      for (let r = results[printed]; r !== undefined; r = results[printed]) {
        progress.clear();
        io.stdout.write(s.json ? `${JSON.stringify(r)}\n` : formatResult(r));
        printed++;
      }
    };
    let next = 0;
    const worker = async () => {
      while (next < s.files.length) {
        const i = next++;
        const file = s.files[i]!;
        results[i] =
          preflight === undefined ? await scanFile(client, s, file, progress) : failed(file, preflight, 0);
        flush();
      }
    };
    await Promise.all(Array.from({ length: Math.min(s.concurrency, s.files.length) }, worker));
  } finally {
    process.removeListener('SIGINT', onSignal);
    process.removeListener('SIGTERM', onSignal);
    progress.clear();
    client.destroy();
  }
  const done = results.filter((r): r is FileResult => r !== undefined);
  if (!s.json && done.length > 1) io.stderr.write(`icapkit: ${summary(done)}\n`);
  return exitCodeOf(done);
}

function overwriteMessage(file: string): string {
  return `--output-dir would overwrite ${file} itself; choose another folder`;
}

/**
 * The lexical check of parseScanArgs misses a folder reached through a symlink (or a bind
 * mount): once it exists, compare real paths, and device and inode where the destination exists.
 */
async function refuseOverwrite(outputDir: string, files: readonly string[]): Promise<void> {
  const dir = await realpath(outputDir);
  for (const f of files) {
    // An input that cannot be resolved is reported as an ERROR for that file, later.
    const input = await realpath(f).catch(() => undefined);
    if (input === undefined) continue;
    const dest = join(dir, basename(f));
    if (dest === input) throw new UsageError(overwriteMessage(f));
    const [a, b] = await Promise.all([stat(dest).catch(() => undefined), stat(input).catch(() => undefined)]);
    if (a !== undefined && b !== undefined && a.dev === b.dev && a.ino === b.ino) {
      throw new UsageError(overwriteMessage(f));
    }
  }
}

/** 2 when any file has no verdict (the scan is incomplete), else 1 when any is blocked, else 0. */
export function exitCodeOf(results: readonly FileResult[]): ExitCode {
  if (results.some((r) => r.verdict === 'error')) return ExitCode.ERROR;
  if (results.some((r) => r.verdict === 'blocked')) return ExitCode.BLOCKED;
  return ExitCode.OK;
}

function summary(results: readonly FileResult[]): string {
  const counts = new Map<string, number>();
  for (const r of results) counts.set(r.verdict, (counts.get(r.verdict) ?? 0) + 1);
  const parts = (['clean', 'blocked', 'modified', 'skipped', 'error'] as const)
    .filter((v) => counts.has(v))
    .map((v) => `${counts.get(v)} ${v === 'error' && counts.get(v)! > 1 ? 'errors' : v}`);
  return `${results.length} files: ${parts.join(', ')}`;
}

/** The text line for a result. */
export function formatResult(r: FileResult): string {
  // Names and server-sent text are rendered without control characters: one line per file.
  const file = renderText(r.file);
  const t = (v: string | null) => (v === null ? null : renderText(v));
  switch (r.verdict) {
    case 'clean':
      return `CLEAN  ${file}\n`;
    case 'blocked':
      return `BLOCKED ${file}  threat=${t(r.threat) ?? '-'} reason=${t(r.reason) ?? '-'}${repairedCopy(r)}\n`;
    case 'modified':
      return `MODIFIED ${file} (${r.modifiedSize} bytes)${r.output === null ? '' : ` -> ${t(r.output)}`}\n`;
    case 'skipped':
      return `SKIPPED ${file}  (${t(r.reason) ?? 'Transfer-Ignore'}, not sent)\n`;
    default:
      return `ERROR  ${file}  ${t(r.errorCode)}: ${t(r.error)}\n`;
  }
}

/** A blocked file the server returned a repaired copy of: its size, and where it was kept. */
function repairedCopy(r: FileResult): string {
  if (r.modifiedSize === null) return '';
  return ` (repaired copy: ${r.modifiedSize} bytes${r.output === null ? '' : ` -> ${renderText(r.output)}`})`;
}

function emptyResult(file: string): FileResult {
  return {
    file,
    verdict: 'error',
    status: null,
    istag: null,
    threat: null,
    reason: null,
    size: null,
    modifiedSize: null,
    output: null,
    ms: 0,
    errorCode: null,
    error: null,
  };
}

function failed(file: string, err: IcapError, ms: number, base?: FileResult): FileResult {
  return {
    ...(base ?? emptyResult(file)),
    verdict: 'error',
    ms,
    errorCode: err.code,
    error: err.message,
    status: base?.status ?? err.status ?? null,
  };
}

function asIcapError(err: unknown): IcapError {
  if (err instanceof IcapError) return err;
  return new IcapError(IcapErrorCodes.PROTOCOL, err instanceof Error ? err.message : String(err), {
    cause: err,
  });
}

/** `attachment; filename="..."` with an RFC 8187 `filename*` when the name is not plain ASCII. */
export function contentDisposition(name: string): string {
  const ascii = name.replace(/[^\x20-\x7e]/g, '_').replace(/["\\]/g, '_');
  const plain = ascii === name;
  return plain
    ? `attachment; filename="${ascii}"`
    : `attachment; filename="${ascii}"; filename*=UTF-8''${encodeRfc8187(name)}`;
}

function encodeRfc8187(s: string): string {
  return encodeURIComponent(s).replace(/['()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

async function scanFile(
  client: IcapClient,
  s: ScanSettings,
  file: string,
  progress: Progress,
): Promise<FileResult> {
  const started = performance.now();
  const result = emptyResult(file);
  let tracker: ProgressTracker | undefined;
  try {
    let st: BigIntStats;
    try {
      st = await stat(file, { bigint: true });
      if (!st.isFile()) throw new Error(st.isDirectory() ? 'is a directory' : 'is not a regular file');
      await access(file, constants.R_OK);
    } catch (err) {
      throw new IcapError(IcapErrorCodes.BODY_SOURCE, `cannot read ${file}: ${(err as Error).message}`, {
        cause: err,
      });
    }
    const size = Number(st.size);
    result.size = size;
    const name = basename(file);
    tracker = progress.track(name, size);
    const r = await client.request({
      method: 'REQMOD',
      service: s.url.service,
      httpRequest: {
        method: 'POST',
        target: `/${encodeURIComponent(name)}`,
        headers: [
          ['Host', 'localhost'],
          ['Content-Type', contentTypeOf(name)],
          ['Content-Disposition', contentDisposition(name)],
        ],
      },
      body: fileBody(file, identityOf(st), tracker),
      bodyLength: size,
      preview: s.preview,
      allow204: s.allow204,
      honourTransferIgnore: !s.scanAll,
      // What follows a failure or an answer is kept by this verdict's reading.
      strayBlocks: (h) => threatInHead(readingFor(s, file), h) !== null,
    });
    if (isSkipped(r)) {
      result.verdict = 'skipped';
      result.istag = r.options.istag ?? null;
      result.reason = `Transfer-Ignore: ${r.extension}`;
    } else {
      await readResponse(client, s, r, file, size, result);
    }
    result.ms = Math.round(performance.now() - started);
    return result;
  } catch (err) {
    const ms = Math.round(performance.now() - started);
    const error = asIcapError(err);
    // The head of an answer that then broke a rule or broke off still names its verdict: a
    // threat (or an unscannable file) in it blocks; anything else stays the error it was.
    const named = threatInError(readingFor(s, file), error);
    if (named === null) return failed(file, error, ms, result);
    blocked(result, named.verdict);
    return { ...result, status: named.head.status, ms, errorCode: error.code, error: error.message };
  } finally {
    tracker?.end();
  }
}

/** How the CLI reads an answer's heads (the engine's rules, @icapkit/core's beyond-head). */
function readingFor(s: ScanSettings, file: string): HeadReading {
  return {
    vendor: s.vendor,
    options: { nsxStatusUrl: DEFAULT_NSX_STATUS_URL, forwardLastlineHeaders: false },
    fileName: basename(file),
  };
}

/**
 * Reads the verdict of a response into `result`; throws for an error verdict or a broken body.
 * A threat named anywhere in the exchange blocks, as in the middleware: in a 100 Continue, in
 * the final head, in the trailer or a second answer after it (the answer is read to its end for
 * them), and a repair that handed the file back unchanged.
 */
async function readResponse(
  client: IcapClient,
  s: ScanSettings,
  res: IcapResponse,
  file: string,
  size: number,
  result: FileResult,
): Promise<void> {
  result.status = res.status;
  result.istag = res.istag ?? null;
  const reading = readingFor(s, file);
  // A threat named in the server's 100 Continue blocks, whatever its final answer says.
  const continued = res.continueHead == null ? null : threatInHead(reading, res.continueHead);
  if (continued !== null) {
    res.body?.destroy();
    blocked(result, continued);
    return;
  }
  const verdict = verdictOfHead(reading, res, res.httpRequest);
  result.threat = verdict.threat_id ?? null;
  result.reason = verdict.reason ?? null;
  switch (verdict.kind) {
    case 'blocked':
      // The verdict is in the head; the rest (a block page) is read only to end the exchange.
      await settle(res);
      result.verdict = 'blocked';
      return;
    case 'error':
      if (verdict.unscannable) {
        // The file could not be scanned (an encrypted archive...): about the file, not a
        // failure of the server; blocked, as the middleware blocks it.
        await settle(res);
        blocked(result, verdict);
        return;
      }
      break;
    case 'clean':
      break;
    case 'adapted': {
      const returned = await readAdapted(res, s.outputDir, basename(file));
      const late = await threatAfterHead(reading, res);
      if (late !== null) {
        await returned.discard();
        blocked(result, late.verdict);
        return;
      }
      const identical = returned.length === size && returned.sha256 === (await sha256File(file));
      if (identical) {
        await returned.discard();
        // A threat reported repaired, and the file handed back as it was: nothing was repaired.
        if (verdict.repair === true) blocked(result, unrepairedVerdict(verdict));
        else result.verdict = 'clean';
        return;
      }
      result.modifiedSize = returned.length;
      result.output = await returned.keep();
      // A repair: the server disinfected its copy (kept with --output-dir); the file itself
      // still holds the threats it named.
      if (verdict.repair === true) blocked(result, unrepairedVerdict(verdict));
      else result.verdict = 'modified';
      return;
    }
  }
  // Clean or an error status: read to its end (a clean answer that breaks off is no verdict),
  // then a threat named after it (its trailer, a second answer) blocks.
  await readToEnd(res);
  const late = await threatAfterHead(reading, res);
  if (late !== null) {
    blocked(result, late.verdict);
    return;
  }
  if (verdict.kind === 'clean') {
    result.verdict = 'clean';
    return;
  }
  throw new IcapError(
    IcapErrorCodes.SERVER_STATUS,
    `${client.shownUri(s.url.service)} answered ${res.status} ${res.reason}`.trim(),
    { status: res.status },
  );
}

/** A verdict that blocks, in `result`. An unscannable file's reason says so. */
function blocked(result: FileResult, v: Verdict): void {
  result.verdict = 'blocked';
  result.threat = v.threat_id ?? null;
  result.reason = v.kind === 'error' ? `unscannable (${v.reason ?? 'ICAP error'})` : (v.reason ?? 'Infected');
}

async function settle(res: IcapResponse): Promise<void> {
  res.body?.resume();
  await res.done.catch(() => {});
}

/** Reads an answer's body to its end; throws when the exchange fails. */
async function readToEnd(res: IcapResponse): Promise<void> {
  if (res.body !== null) for await (const _ of res.body as AsyncIterable<Buffer>);
  await res.done;
}

interface Returned {
  length: number;
  sha256: string;
  /** Moves the body to its place in --output-dir; its path (null without --output-dir). */
  keep(): Promise<string | null>;
  discard(): Promise<void>;
}

/** Reads the returned body to its end: its length and hash, and with an output folder a temp file. */
async function readAdapted(
  res: IcapResponse,
  outputDir: string | undefined,
  name: string,
): Promise<Returned> {
  const hash = createHash('sha256');
  let length = 0;
  const tmp =
    outputDir === undefined
      ? undefined
      : join(outputDir, `.${name}.${process.pid}-${randomBytes(4).toString('hex')}.icapkit-tmp`);
  if (tmp !== undefined) tempFiles.add(tmp);
  const out = tmp === undefined ? undefined : createWriteStream(tmp, { flags: 'wx' });
  const outDone = out === undefined ? undefined : finished(out);
  outDone?.catch(() => {});
  try {
    if (res.body !== null) {
      for await (const chunk of res.body as AsyncIterable<Buffer>) {
        hash.update(chunk);
        length += chunk.length;
        if (out !== undefined && !out.write(chunk)) await drainOrFail(out);
      }
    }
    await res.done;
    if (out !== undefined) {
      out.end();
      try {
        await outDone;
      } catch (err) {
        throw new IcapError(IcapErrorCodes.SPOOL, `cannot write ${tmp}: ${(err as Error).message}`, {
          cause: err,
        });
      }
    }
  } catch (err) {
    out?.destroy();
    if (tmp !== undefined) await unlink(tmp).catch(() => {});
    if (tmp !== undefined) tempFiles.delete(tmp);
    throw err;
  }
  return {
    length,
    sha256: hash.digest('hex'),
    keep: async () => {
      if (tmp === undefined || outputDir === undefined) return null;
      const dest = join(outputDir, name);
      try {
        await rename(tmp, dest);
        tempFiles.delete(tmp);
      } catch (err) {
        await unlink(tmp).catch(() => {});
        tempFiles.delete(tmp);
        throw new IcapError(IcapErrorCodes.SPOOL, `cannot write ${dest}: ${(err as Error).message}`, {
          cause: err,
        });
      }
      return dest;
    },
    discard: async () => {
      if (tmp !== undefined) await unlink(tmp).catch(() => {});
      if (tmp !== undefined) tempFiles.delete(tmp);
    },
  };
}

function drainOrFail(out: NodeJS.WritableStream & { destroyed?: boolean }): Promise<void> {
  return new Promise((resolvePromise, reject) => {
    const onDrain = () => {
      out.removeListener('error', onError);
      resolvePromise();
    };
    const onError = (err: Error) => {
      out.removeListener('drain', onDrain);
      reject(
        new IcapError(IcapErrorCodes.SPOOL, `cannot write the modified body: ${err.message}`, { cause: err }),
      );
    };
    out.once('drain', onDrain);
    out.once('error', onError);
  });
}

async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  try {
    for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  } catch (err) {
    throw new IcapError(IcapErrorCodes.BODY_SOURCE, `cannot read ${path} again: ${(err as Error).message}`, {
      cause: err,
    });
  }
  return hash.digest('hex');
}
