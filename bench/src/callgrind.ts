import { readFileSync, rmSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { Agent, request } from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { MULTIPART_FILE_SIZE, MULTIPART_FILES, multipart } from './bodies.js';
import { startCIcap } from './cicap.js';
import { holdFloorEnv } from './holdfloor.js';
import { reportAllocations } from './profile.js';
import { findOnPath, killAllChildren, startChild } from './util.js';
import { dump, dumpIr } from './valgrind.js';

const HERE = dirname(fileURLToPath(import.meta.url));

/** What each request sends. */
interface Payload {
  body: Buffer;
  contentType: string;
  label: string;
}

function payload(bodySize: number, form: boolean): Payload {
  if (!form)
    return {
      body: Buffer.alloc(bodySize, 'x'),
      contentType: 'application/octet-stream',
      label: `${bodySize}-byte POST`,
    };
  const boundary = '----icapkitbench7MA4YWxkTrZu0gW';
  // Fixed content (not random): every run counts the same bytes.
  const files = Array.from({ length: MULTIPART_FILES }, (_, i) => Buffer.alloc(MULTIPART_FILE_SIZE, 97 + i));
  return {
    body: multipart(files, boundary),
    contentType: `multipart/form-data; boundary=${boundary}`,
    label: `multipart form (${MULTIPART_FILES} x ${MULTIPART_FILE_SIZE / 1024} KiB)`,
  };
}

function post(agent: Agent, port: number, body: Payload): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port,
        path: '/upload',
        method: 'POST',
        agent,
        timeout: 120_000,
        headers: { 'content-type': body.contentType, 'content-length': body.body.length },
      },
      (res) => {
        res.resume();
        res.once('end', () => resolve(res.statusCode ?? 0));
        res.once('error', reject);
      },
    );
    req.once('timeout', () => req.destroy(new Error('timeout')));
    req.once('error', reject);
    req.end(body.body);
  });
}

/** More arguments of the embedded ICAP server (`--slow-read=<KiB/s>`: a scanner slower than the app). */
const icapArgs: string[] = [];

/** The embedded ICAP server: answering 204, or (`echo`) 200 with the request returned unchanged. */
function startIcap(echo: boolean) {
  const args = [join(HERE, 'icap204.js'), ...icapArgs];
  if (echo) args.push('--echo');
  return startChild(process.execPath, args, { timeoutMs: 20_000 });
}

export interface IrRow {
  framework: string;
  scanned: boolean;
  /** Main thread instructions per request. */
  irPerRequest: number;
  /** Other threads' (compiler, GC helpers, thread pool) per request. */
  otherPerRequest: number;
}

export async function countInstructions(
  frameworks: string[],
  bodySize: number,
  warm: number,
  n: number,
  variants: boolean[] = [false, true],
  form = false,
  echo = false,
  nodeFlags: string[] = [],
  hold = false,
  cicap = false,
): Promise<IrRow[]> {
  if (findOnPath('valgrind') === null) throw new Error('valgrind is not installed');
  const body = payload(bodySize, form);
  // c-icap's own echo service (its 4 KiB chunks, its 204 after every other preview) instead of
  // the embedded server.
  const real = cicap ? await startCIcap() : undefined;
  const icap = real ? { ready: { port: real.port }, stop: () => real.stop() } : await startIcap(echo);
  const service = real ? '/echo' : '/avscan';
  const rows: IrRow[] = [];
  try {
    for (const framework of frameworks) {
      for (const scanned of variants) {
        const dir = await mkdtemp(join(tmpdir(), 'icapkit-callgrind-'));
        const args = [
          '--tool=callgrind',
          '--smc-check=all-non-file',
          '--separate-threads=yes',
          `--callgrind-out-file=${join(dir, 'cg.out')}`,
          process.execPath,
          ...nodeFlags,
          join(HERE, 'app.js'),
          framework,
        ];
        if (scanned) args.push(`icap://127.0.0.1:${icap.ready.port as number}`, service);
        if (scanned && hold) args.push('--hold-floor');
        const app = await startChild('valgrind', args, {
          timeoutMs: 180_000,
          ...(scanned && hold && echo ? { env: { ...process.env, ...holdFloorEnv('echo') } } : {}),
        });
        const agent = new Agent({ keepAlive: true, maxSockets: 1 });
        try {
          const port = app.ready.port as number;
          const pid = app.ready.pid as number;
          for (let i = 0; i < warm; i++) await post(agent, port, body);
          await dump(pid, dir, 1);
          for (let i = 0; i < n; i++) {
            const status = await post(agent, port, body);
            if (status !== 200) throw new Error(`${framework}: status ${status}`);
          }
          const ir = dumpIr(dir, await dump(pid, dir, 2));
          rows.push({ framework, scanned, irPerRequest: ir.main / n, otherPerRequest: ir.other / n });
          console.error(
            `callgrind: ${framework}${scanned ? (hold ? ' + the hold floor' : ' + icapkit') : ''}: ${(ir.main / n / 1000).toFixed(0)} k instructions per request on the main thread, ${(ir.other / n / 1000).toFixed(0)} k on others`,
          );
        } finally {
          agent.destroy();
          await app.stop();
          if (process.env.CALLGRIND_KEEP === '1') console.error(`callgrind: files kept in ${dir}`);
          else rmSync(dir, { recursive: true, force: true });
        }
      }
    }
  } finally {
    await icap.stop();
  }
  return rows;
}

/**
 * KiB of JavaScript heap allocated per request (garbage included), without valgrind: V8's
 * sampling heap profiler over the warm-up and the counted requests alike (all divided by their
 * number), so the figure includes the warm-up's compilation garbage, spread thin.
 */
export async function countAllocations(
  frameworks: string[],
  bodySize: number,
  warm: number,
  n: number,
  variants: boolean[],
  form: boolean,
  file: string,
  echo = false,
): Promise<void> {
  const body = payload(bodySize, form);
  const icap = await startIcap(echo);
  try {
    for (const framework of frameworks) {
      for (const scanned of variants) {
        const out = `${file}.${framework}${scanned ? '-icapkit' : ''}.heapprofile`;
        const args = [join(HERE, 'app.js'), framework];
        if (scanned) args.push(`icap://127.0.0.1:${icap.ready.port as number}`, '/avscan');
        const app = await startChild(process.execPath, args, {
          timeoutMs: 20_000,
          env: { ...process.env, BENCH_ALLOC_PROFILE: out },
        });
        const agent = new Agent({ keepAlive: true, maxSockets: 1 });
        try {
          const port = app.ready.port as number;
          for (let i = 0; i < warm + n; i++) {
            const status = await post(agent, port, body);
            if (status !== 200) throw new Error(`${framework}: status ${status}`);
          }
        } finally {
          agent.destroy();
          await app.stop();
        }
        const p = JSON.parse(readFileSync(out, 'utf8')) as {
          head: Parameters<typeof reportAllocations>[0];
        };
        console.log(`\n## ${framework}${scanned ? ' + icapkit' : ''}, ${body.label} (${out})\n`);
        console.log(reportAllocations(p.head, warm + n));
      }
    }
  } finally {
    await icap.stop();
  }
}

export function renderInstructions(
  rows: IrRow[],
  bodySize: number,
  form = false,
  echo = false,
  hold = false,
  cicap = false,
): string {
  const server = cicap
    ? "c-icap's echo service"
    : `the embedded ${echo ? 'echo (200 with the body returned)' : '204'} server`;
  const lines = [
    `Instructions per ${form ? payload(0, true).label : `${bodySize}-byte POST`} on the main thread (callgrind, one client, kept-alive; ${hold ? 'the hold floor (in the icapkit column)' : 'icapkit'} against ${server}):`,
    '',
    '| Framework | plain: k instr. / req | icapkit: k instr. / req | icapkit above plain | ratio | other threads plain / icapkit |',
    '| --------- | --------------------: | ----------------------: | ------------------: | ----: | ----------------------------: |',
  ];
  for (const f of [...new Set(rows.map((r) => r.framework))]) {
    const plain = rows.find((r) => r.framework === f && !r.scanned);
    const scanned = rows.find((r) => r.framework === f && r.scanned);
    if (!plain || !scanned) continue;
    lines.push(
      `| ${f} | ${(plain.irPerRequest / 1000).toFixed(0)} | ${(scanned.irPerRequest / 1000).toFixed(0)} | ${((scanned.irPerRequest - plain.irPerRequest) / 1000).toFixed(0)} | ${(scanned.irPerRequest / plain.irPerRequest).toFixed(2)}× | ${(plain.otherPerRequest / 1000).toFixed(0)} / ${(scanned.otherPerRequest / 1000).toFixed(0)} |`,
    );
  }
  return lines.join('\n');
}

if (process.argv[1]?.endsWith('callgrind.js') === true) {
  let frameworks = ['express', 'fastify', 'koa'];
  let bodySize = 10 * 1024;
  let warm = 1500;
  let n = 300;
  let variants = [false, true];
  let form = false;
  let echo = false;
  const nodeFlags: string[] = [];
  let alloc: string | undefined;
  let hold = false;
  let cicap = false;
  for (const arg of process.argv.slice(2)) {
    if (arg.startsWith('--frameworks=')) frameworks = arg.slice(13).split(',');
    else if (arg.startsWith('--body=')) bodySize = Number(arg.slice(7));
    else if (arg.startsWith('--warm=')) warm = Number(arg.slice(7));
    else if (arg.startsWith('--n=')) n = Number(arg.slice(4));
    else if (arg === '--scanned-only') variants = [true];
    else if (arg === '--multipart') form = true;
    else if (arg === '--echo') echo = true;
    // The hold floor (holdfloor.ts) instead of icapkit in the scanned runs.
    else if (arg === '--hold') hold = true;
    // Real c-icap's echo service instead of the embedded server (implies --echo).
    else if (arg === '--cicap') cicap = echo = true;
    // V8 compiles on the main thread, at the same request whatever else runs on the machine:
    // counts that compare two builds on a busy machine (and that include the compiler's work).
    else if (arg === '--single-threaded') nodeFlags.push('--single-threaded');
    // Any other Node/V8 option for the application (e.g. --v8=--no-allocation-site-pretenuring).
    else if (arg.startsWith('--v8=')) nodeFlags.push(arg.slice(5));
    else if (arg.startsWith('--alloc=')) alloc = arg.slice(8);
    else if (arg.startsWith('--slow-read=')) icapArgs.push(arg);
    else throw new Error(`unknown argument ${arg}`);
  }
  const run =
    alloc !== undefined
      ? countAllocations(frameworks, bodySize, warm, n, variants, form, alloc, echo).then(() => undefined)
      : countInstructions(frameworks, bodySize, warm, n, variants, form, echo, nodeFlags, hold, cicap);
  run
    .then((rows) => {
      if (rows === undefined) return;
      console.log(renderInstructions(rows, bodySize, form, echo, hold, cicap));
      console.log(`RESULT ${JSON.stringify(rows)}`);
    })
    .catch((err: unknown) => {
      console.error(err);
      killAllChildren();
      process.exit(1);
    });
}
