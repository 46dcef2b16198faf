/**
 * The engine alone, in process: `engine.scan()` on fake requests (a 10 KiB body complete on
 * arrival, the default profile) against the embedded 204 server in a child process, one after
 * the other; the replayed body is read to its end and the outcome disposed, as an adapter does.
 * Prints CPU µs per request (this process, user + system) and, with `--alloc`, KiB of
 * JavaScript heap allocated per request (V8's sampling heap profiler, garbage included).
 * A quick A/B loop for the engine's per-request path; callgrind.js stays the reference.
 *
 *   node bench/dist/engine-micro.js [--n=20000] [--warm=5000] [--body=10240] [--alloc] [--top=25] [--echo]
 *                                   [--kind=octet|json|json-escaped|form|form-escaped]
 *
 * `--echo`: the server answers 200 with the request returned unchanged (icap204.js --echo).
 * `--kind`: the body (about `--body` bytes): `octet` (default, application/octet-stream); `json`, a
 * JSON text of many short strings without escapes; `json-escaped`, the same with an escape in
 * every value (`\"`, `\n`, `\u00e9`: a second ICAP request, for the decoded strings); `form`,
 * an urlencoded form without escapes; `form-escaped`, the same with `+` and `%XX` in each value.
 */
import { Session } from 'node:inspector';
import { dirname, join } from 'node:path';
import { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { createEngine, type IcapEngine } from '@icapkit/core';
import { reportAllocations } from './profile.js';
import { killAllChildren, startChild } from './util.js';

const HERE = dirname(fileURLToPath(import.meta.url));

type Kind = 'octet' | 'json' | 'json-escaped' | 'form' | 'form-escaped';

/** A body of about `size` bytes of the given kind, and its content type. */
function makeBody(kind: Kind, size: number): { body: Buffer; type: string } {
  if (kind === 'octet') return { body: Buffer.alloc(size, 0x61), type: 'application/octet-stream' };
  const form = kind.startsWith('form');
  const escaped = kind.endsWith('escaped');
  const items: string[] = [];
  let length = 2;
  for (let i = 0; length < size; i++) {
    const item = form
      ? `field${i}=${escaped ? `value+${i}%2C+caf%C3%A9` : `value-${i}-cafe`}`
      : `{"id":${i},"name":"name ${i}","text":"${escaped ? `line \\"${i}\\"\\ncaf\\u00e9` : `plain text ${i}`}"}`;
    items.push(item);
    length += item.length + 1;
  }
  return form
    ? { body: Buffer.from(items.join('&')), type: 'application/x-www-form-urlencoded' }
    : { body: Buffer.from(`[${items.join(',')}]`), type: 'application/json' };
}

function fakeRequest(body: Buffer, type: string): Readable & Record<string, unknown> {
  const req = new Readable({ read() {} }) as Readable & Record<string, unknown>;
  req.method = 'POST';
  req.url = '/upload';
  req.httpVersion = '1.1';
  req.httpVersionMajor = 1;
  req.headers = {
    host: '127.0.0.1:3000',
    'content-type': type,
    'content-length': String(body.length),
    connection: 'keep-alive',
  };
  req.rawHeaders = [
    'Host',
    '127.0.0.1:3000',
    'Content-Type',
    type,
    'Content-Length',
    String(body.length),
    'Connection',
    'keep-alive',
  ];
  req.socket = { remoteAddress: '::ffff:127.0.0.1', encrypted: false };
  req.complete = false;
  req.push(body);
  req.push(null);
  return req;
}

async function one(engine: IcapEngine, body: Buffer, type: string): Promise<void> {
  const ac = new AbortController();
  const outcome = await engine.scan(fakeRequest(body, type) as never, { signal: ac.signal, requestId: '1' });
  if (outcome.kind !== 'pass' || outcome.action !== 'ICAP_PASSED')
    throw new Error(`unexpected outcome ${outcome.kind} ${outcome.action} ${outcome.log.error_message}`);
  const stream = outcome.body;
  if (stream !== null) {
    await new Promise<void>((resolve, reject) => {
      stream.on('data', () => {});
      stream.once('end', resolve);
      stream.once('error', reject);
    });
  }
  outcome.dispose();
}

function post(session: Session, method: string, params?: object): Promise<unknown> {
  return new Promise((resolve, reject) =>
    session.post(method, params ?? {}, (err, result) => (err ? reject(err) : resolve(result))),
  );
}

async function main(): Promise<void> {
  const opts = new Map<string, string>();
  for (const a of process.argv.slice(2)) {
    const m = /^--([^=]+)(?:=(.*))?$/.exec(a);
    if (!m) throw new Error(`unknown argument ${a}`);
    opts.set(m[1]!, m[2] ?? 'true');
  }
  const n = Number(opts.get('n') ?? 20_000);
  const warm = Number(opts.get('warm') ?? 5_000);
  const kind = (opts.get('kind') ?? 'octet') as Kind;
  const { body, type } = makeBody(kind, Number(opts.get('body') ?? 10_240));
  const server = await startChild(
    process.execPath,
    opts.has('echo') ? [join(HERE, 'icap204.js'), '--echo'] : [join(HERE, 'icap204.js')],
  );
  const engine = createEngine({
    name: 'micro',
    poolGroup: `icap://127.0.0.1:${server.ready.port as number}`,
    serviceUri: '/avscan',
  });
  try {
    await engine.ready();
    for (let i = 0; i < warm; i++) await one(engine, body, type);
    let session: Session | undefined;
    if (opts.has('alloc')) {
      session = new Session();
      session.connect();
      await post(session, 'HeapProfiler.enable');
      await post(session, 'HeapProfiler.startSampling', {
        samplingInterval: 1024,
        includeObjectsCollectedByMajorGC: true,
        includeObjectsCollectedByMinorGC: true,
      });
    }
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    for (let i = 0; i < n; i++) await one(engine, body, type);
    const c = process.cpuUsage(c0);
    const wall = performance.now() - t0;
    console.log(
      `engine-micro (${kind}, ${body.length} bytes): ${n} requests, CPU ${((c.user + c.system) / n).toFixed(1)} µs/request, ` +
        `wall ${((wall * 1000) / n).toFixed(1)} µs/request`,
    );
    if (session !== undefined) {
      const r = (await post(session, 'HeapProfiler.stopSampling')) as { profile: { head: never } };
      session.disconnect();
      console.log(reportAllocations(r.profile.head, n, Number(opts.get('top') ?? 25)));
    }
  } finally {
    await engine.close();
    await server.stop();
    killAllChildren();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
