/**
 * Instructions (and bytes allocated) per ICAP transaction of the raw IcapClient, no HTTP in
 * front: `IcapClient.request()` REQMODs against the embedded 204 server (bench/dist/icap204.js,
 * which runs natively, outside valgrind). The client process runs under
 * `valgrind --tool=callgrind`; it sends `--warm` requests (V8 compiles the hot code), the
 * counters are dumped and zeroed, it sends `--n` more, and they are dumped again: the second
 * dump over n is the cost of one transaction (main thread; other threads apart).
 *
 *   node bench/dist/callgrind-client.js [--body=10240] [--preview=N|none] [--chunk=N] [--c=1]
 *                                       [--warm=1500] [--n=300] [--alloc] [--no-valgrind] [--echo]
 *
 * --body      body bytes (known length); default 10240
 * --preview   preview bytes, or `none` (default: none up to 64 KiB, 5000 above, as rawload.js)
 * --chunk     the body is given as a replayable source of chunks of this size (as the engine's
 *             body store hands it over); default: one Buffer up to 64 KiB, 64 KiB chunks above
 * --c         concurrent request loops (each its own connection); default 1
 * --alloc     also run the client natively with V8's sampling heap profiler (garbage included)
 *             and print the bytes allocated per transaction, with the top allocating functions
 * --no-valgrind  only the allocation figure
 * --echo      the server answers 200 with the request returned (icap204.js --echo), read to its end
 *
 * Needs valgrind for the instruction count (apt-get install valgrind). The figure moves by up to
 * ±15% from run to run (how the native server's answers fall into the counted process's event
 * loop turns, GC and tier-up timing): compare the ranges of two or three runs, not one figure.
 */
import { spawn } from 'node:child_process';
import { rmSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { IcapClient, isSkipped, type ReplayableBody } from '@icapkit/core';
import { findOnPath, killAllChildren, sleep, startChild } from './util.js';
import { dump, dumpIr } from './valgrind.js';

const HERE = dirname(fileURLToPath(import.meta.url));

interface Params {
  body: number;
  preview: number | false;
  chunk: number;
  c: number;
  warm: number;
  n: number;
}

function parseArgs(
  argv: string[],
): Params & { alloc: boolean; valgrind: boolean; echo: boolean; child: string | undefined } {
  const p = {
    body: 10 * 1024,
    preview: undefined as number | false | undefined,
    chunk: undefined as number | undefined,
    c: 1,
    warm: 1500,
    n: 300,
    alloc: false,
    echo: false,
    valgrind: true,
    child: undefined as string | undefined,
  };
  for (const a of argv) {
    const [k, v] = a.includes('=') ? [a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)] : [a, ''];
    if (k === '--body') p.body = Number(v);
    else if (k === '--preview') p.preview = v === 'none' ? false : Number(v);
    else if (k === '--chunk') p.chunk = Number(v);
    else if (k === '--c') p.c = Number(v);
    else if (k === '--warm') p.warm = Number(v);
    else if (k === '--n') p.n = Number(v);
    else if (k === '--alloc') p.alloc = true;
    else if (k === '--no-valgrind') p.valgrind = false;
    else if (k === '--echo') p.echo = true;
    else if (k === '--child') p.child = v;
    else throw new Error(`unknown argument ${a}`);
  }
  return {
    ...p,
    preview: p.preview ?? (p.body <= 64 * 1024 ? false : 5000),
    chunk: p.chunk ?? (p.body <= 64 * 1024 ? 0 : 64 * 1024),
  };
}

/* ------------------------------------------------------------------ the client process */

/** A body as the engine hands one over: replayable, known length, in chunks. */
function chunkedBody(body: Buffer, chunk: number): ReplayableBody {
  const pieces: Buffer[] = [];
  for (let at = 0; at < body.length; at += chunk) pieces.push(body.subarray(at, at + chunk));
  return {
    replayable: true,
    length: body.length,
    open() {
      let i = 0;
      return {
        next: () =>
          Promise.resolve(
            i < pieces.length
              ? { done: false as const, value: pieces[i++]! }
              : { done: true as const, value: undefined },
          ),
      };
    },
  };
}

async function clientMain(url: string, p: ReturnType<typeof parseArgs>): Promise<void> {
  const body = Buffer.alloc(p.body, 'x');
  const input = p.chunk > 0 ? chunkedBody(body, p.chunk) : body;
  const client = new IcapClient({ url, maxConnections: Math.max(1, p.c) });
  const headers: Array<[string, string]> = [
    ['Host', 'app'],
    ['Content-Type', 'application/octet-stream'],
    ['Content-Length', String(body.length)],
  ];
  // As the engine: a signal of its own (one per scan there; one for all here, so the figure is
  // the client's own cost), and no client timeout.
  const signal = new AbortController().signal;
  const one = async () => {
    const res = await client.request({
      method: 'REQMOD',
      service: '/avscan',
      httpRequest: { method: 'POST', target: '/upload', httpVersion: '1.1', headers },
      body: input,
      bodyLength: body.length,
      preview: p.preview,
      allow204: true,
      signal,
      timeout: 2_147_483_647,
    });
    if (isSkipped(res)) throw new Error('transfer-ignore');
    if (res.status !== (p.echo ? 200 : 204)) throw new Error(`ICAP status ${res.status}`);
    res.body?.resume();
    await res.done;
  };
  const run = async (count: number) => {
    const per = Math.ceil(count / p.c);
    await Promise.all(
      Array.from({ length: p.c }, async () => {
        for (let i = 0; i < per; i++) await one();
      }),
    );
    return per * p.c;
  };
  // A signal handler does not keep the process alive: a timer does, while it waits.
  const waitGo = () =>
    new Promise<void>((r) => {
      const keep = setInterval(() => {}, 60_000);
      process.once('SIGUSR2', () => {
        clearInterval(keep);
        r();
      });
    });
  process.on('SIGUSR2', () => {});
  process.stdout.write(`READY ${JSON.stringify({ pid: process.pid })}\n`);
  await run(p.warm);
  if (p.child === 'alloc') {
    const sampling = await startSampling();
    const done = await run(p.n);
    const profile = (await sampling()) as { head: HeapNode };
    const { reportAllocations } = await import('./profile.js');
    process.stdout.write(`${reportAllocations(profile.head as never, done, 25)}\n`);
    process.stdout.write(`ALLOC ${JSON.stringify({ bytesPerTx: sumSelf(profile.head) / done })}\n`);
  } else {
    process.stdout.write('WARMED\n');
    await waitGo();
    const done = await run(p.n);
    process.stdout.write(`COUNTED ${done}\n`);
    await waitGo();
  }
  client.destroy();
  process.exit(0);
}

interface HeapNode {
  selfSize: number;
  children: HeapNode[];
}

function sumSelf(n: HeapNode): number {
  let t = n.selfSize;
  for (const c of n.children) t += sumSelf(c);
  return t;
}

async function startSampling(): Promise<() => Promise<unknown>> {
  const { Session } = await import('node:inspector');
  const session = new Session();
  session.connect();
  const post = (method: string, params?: object) =>
    new Promise<unknown>((resolve, reject) =>
      session.post(method, params ?? {}, (err, result) => (err ? reject(err) : resolve(result))),
    );
  await post('HeapProfiler.enable');
  await post('HeapProfiler.startSampling', {
    samplingInterval: 256,
    includeObjectsCollectedByMajorGC: true,
    includeObjectsCollectedByMinorGC: true,
  });
  return async () => {
    const r = (await post('HeapProfiler.stopSampling')) as { profile: unknown };
    session.disconnect();
    return r.profile;
  };
}

/* ------------------------------------------------------------------ the parent */

/** Spawns a process and resolves the lines it prints, one waiter per awaited prefix. */
function lines(cmd: string, args: string[]) {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let buf = '';
  const waiters: Array<{ prefix: string; resolve: (line: string) => void }> = [];
  const seen: string[] = [];
  child.stdout.setEncoding('utf8');
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (s: string) => {
    out = (out + s).slice(-8000);
  });
  child.stdout.on('data', (s: string) => {
    out = (out + s).slice(-8000);
    buf += s;
    let i = buf.indexOf('\n');
    while (i !== -1) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      seen.push(line);
      for (let k = waiters.length - 1; k >= 0; k--) {
        if (line.startsWith(waiters[k]!.prefix)) waiters.splice(k, 1)[0]!.resolve(line);
      }
      i = buf.indexOf('\n');
    }
  });
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  return {
    child,
    seen,
    output: () => out,
    wait(prefix: string, ms: number): Promise<string> {
      const already = seen.find((l) => l.startsWith(prefix));
      if (already !== undefined) return Promise.resolve(already);
      return new Promise<string>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no ${prefix} within ${ms} ms\n${out}`)), ms);
        waiters.push({
          prefix,
          resolve: (l) => {
            clearTimeout(timer);
            resolve(l);
          },
        });
        void exited.then((code) => {
          clearTimeout(timer);
          reject(new Error(`${cmd} exited (${code}) before ${prefix}\n${out}`));
        });
      });
    },
    exited,
  };
}

function childArgs(p: ReturnType<typeof parseArgs>, url: string, mode: string): string[] {
  return [
    join(HERE, 'callgrind-client.js'),
    `--child=${mode}`,
    ...(p.echo ? ['--echo'] : []),
    `--body=${p.body}`,
    `--preview=${p.preview === false ? 'none' : p.preview}`,
    `--chunk=${p.chunk}`,
    `--c=${p.c}`,
    `--warm=${p.warm}`,
    `--n=${p.n}`,
    url,
  ];
}

async function parentMain(p: ReturnType<typeof parseArgs>): Promise<void> {
  const icap = await startChild(process.execPath, [join(HERE, 'icap204.js'), ...(p.echo ? ['--echo'] : [])], {
    timeoutMs: 20_000,
  });
  const url = `icap://127.0.0.1:${icap.ready.port as number}`;
  const label = `${p.echo ? 'echo, ' : ''}${p.body} B body, preview ${p.preview === false ? 'none' : p.preview}, ${p.chunk > 0 ? `${p.chunk} B chunks` : 'one Buffer'}, c=${p.c}`;
  const result: Record<string, unknown> = { ...p };
  try {
    if (p.alloc) {
      const a = lines(process.execPath, childArgs(p, url, 'alloc'));
      const line = await a.wait('ALLOC ', 600_000);
      const report = a.seen.slice(
        a.seen.findIndex((l) => l.startsWith('Allocated:')),
        -1,
      );
      console.error(report.join('\n'));
      const bytes = (JSON.parse(line.slice(6)) as { bytesPerTx: number }).bytesPerTx;
      result.kibPerTx = bytes / 1024;
      console.error(`callgrind-client: ${label}: ${(bytes / 1024).toFixed(2)} KiB allocated per transaction`);
      await a.exited;
    }
    if (p.valgrind) {
      if (findOnPath('valgrind') === null) throw new Error('valgrind is not installed');
      const dir = await mkdtemp(join(tmpdir(), 'icapkit-cgclient-'));
      const v = lines('valgrind', [
        '--tool=callgrind',
        '--smc-check=all-non-file',
        '--separate-threads=yes',
        `--callgrind-out-file=${join(dir, 'cg.out')}`,
        process.execPath,
        // V8 flags for the counted process, e.g. CALLGRIND_NODE_FLAGS=--single-threaded (all of
        // V8's work on the main thread: a steadier figure, since none of it moves between threads).
        ...(process.env.CALLGRIND_NODE_FLAGS ?? '').split(' ').filter((f) => f !== ''),
        ...childArgs(p, url, 'count'),
      ]);
      try {
        const ready = await v.wait('READY ', 180_000);
        const pid = (JSON.parse(ready.slice(6)) as { pid: number }).pid;
        await v.wait('WARMED', 1_200_000);
        await dump(pid, dir, 1);
        process.kill(pid, 'SIGUSR2');
        const counted = Number((await v.wait('COUNTED ', 1_200_000)).slice(8));
        const ir = dumpIr(dir, await dump(pid, dir, 2));
        process.kill(pid, 'SIGUSR2');
        result.kInstrPerTx = ir.main / counted / 1000;
        result.kInstrOtherPerTx = ir.other / counted / 1000;
        console.error(
          `callgrind-client: ${label}: ${(ir.main / counted / 1000).toFixed(1)} k instructions per transaction on the main thread, ${(ir.other / counted / 1000).toFixed(1)} k on others (n=${counted})`,
        );
        await Promise.race([v.exited, sleep(30_000)]);
      } finally {
        if (v.child.exitCode === null && v.child.pid !== undefined) v.child.kill('SIGKILL');
        if (process.env.CALLGRIND_KEEP === '1') console.error(`callgrind-client: files kept in ${dir}`);
        else rmSync(dir, { recursive: true, force: true });
      }
    }
  } finally {
    await icap.stop();
  }
  console.log(`RESULT ${JSON.stringify(result)}`);
}

if (process.argv[1]?.endsWith('callgrind-client.js') === true) {
  const argv = process.argv.slice(2);
  const url = argv.find((a) => a.startsWith('icap://'));
  const p = parseArgs(argv.filter((a) => !a.startsWith('icap://')));
  (p.child !== undefined ? clientMain(url!, p) : parentMain(p)).catch((err: unknown) => {
    console.error(err);
    killAllChildren();
    process.exit(1);
  });
}
