/**
 * `icapkit` output hygiene and file-system safety: names and server-sent text never put a
 * control character in the text output (no forged lines, no terminal escapes), a file rewritten
 * while it is sent is no verdict, --output-dir through a symlink does not overwrite the input,
 * and SIGINT/SIGTERM leave no temp file behind.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import {
  link,
  mkdir,
  mkdtemp,
  open,
  readdir,
  readFile,
  rm,
  symlink,
  utimes,
  writeFile,
} from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { eicar, type IcapTestServer, startIcapServer } from '@icapkit/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run, writeBigFile } from './helpers.js';

/** Any control character but the line feed that ends each line (C0, DEL, C1). */
const CONTROL = /[\u0000-\u0009\u000b-\u001f\u007f-\u009f]/;

const BIN = fileURLToPath(new URL('../dist/bin.js', import.meta.url));

let dir: string;
let server: IcapTestServer;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'icapkit-cli-hygiene-'));
  server = await startIcapServer({ rewrite: { from: 'secret', to: 'XXXXXX' } });
});

afterAll(async () => {
  await server?.close();
  await rm(dir, { recursive: true, force: true });
});

interface Exchange {
  sock: Socket;
  /** 'preview': the preview ended without ieof, `cont()` reads the rest; 'full': the body ended. */
  phase: 'preview' | 'full';
  body: Buffer;
  cont: () => void;
}

interface Scripted {
  url: string;
  close(): Promise<void>;
}

/**
 * A scripted ICAP server on loopback that answers with exact bytes: `onOptions` writes the
 * OPTIONS answer (a default one without it), `onReqmod` is called when a REQMOD's preview or
 * body is complete.
 */
async function scripted(handlers: {
  options?: string;
  onOptions?: (sock: Socket) => void;
  onReqmod?: (x: Exchange) => void;
}): Promise<Scripted> {
  const sockets = new Set<Socket>();
  const srv: Server = createServer((sock) => {
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    sock.on('error', () => {});
    let buf = Buffer.alloc(0);
    let state: 'head' | 'encapsulated' | 'chunk' | 'wait' = 'head';
    let need = 0;
    let x: Exchange | undefined;
    const pump = () => {
      for (;;) {
        if (state === 'wait') return;
        if (state === 'head') {
          const i = buf.indexOf('\r\n\r\n');
          if (i < 0) return;
          const head = buf.subarray(0, i).toString('latin1');
          buf = buf.subarray(i + 4);
          if (head.startsWith('OPTIONS')) {
            if (handlers.onOptions) handlers.onOptions(sock);
            else {
              sock.write(
                `ICAP/1.0 200 OK\r\nMethods: REQMOD\r\nISTag: "s1"\r\nAllow: 204\r\n${handlers.options ?? ''}Encapsulated: null-body=0\r\n\r\n`,
              );
            }
            continue;
          }
          const m = /(req-body|null-body)=(\d+)/.exec(head);
          need = m ? Number(m[2]) : 0;
          const exchange: Exchange = {
            sock,
            phase: /\r\nPreview:/i.test(head) ? 'preview' : 'full',
            body: Buffer.alloc(0),
            cont: () => {
              exchange.phase = 'full';
              state = 'chunk';
              pump();
            },
          };
          x = exchange;
          state = 'encapsulated';
        } else if (state === 'encapsulated') {
          if (buf.length < need) return;
          buf = buf.subarray(need);
          state = 'chunk';
        } else {
          const i = buf.indexOf('\r\n');
          if (i < 0) return;
          const line = buf.subarray(0, i).toString('latin1');
          const size = Number.parseInt(line, 16);
          if (size === 0) {
            if (buf.length < i + 4) return;
            buf = buf.subarray(i + 4);
            if (x!.phase === 'preview' && !/ieof/.test(line)) state = 'wait';
            else {
              x!.phase = 'full';
              state = 'head';
            }
            handlers.onReqmod?.(x!);
            continue;
          }
          if (buf.length < i + 2 + size + 2) return;
          x!.body = Buffer.concat([x!.body, buf.subarray(i + 2, i + 2 + size)]);
          buf = buf.subarray(i + 2 + size + 2);
        }
      }
    };
    sock.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      pump();
    });
  });
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const { port } = srv.address() as { port: number };
  return {
    url: `icap://127.0.0.1:${port}/svc`,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        srv.close(() => resolve());
      }),
  };
}

const NO_CONTENT = 'ICAP/1.0 204 No Content\r\nISTag: "s1"\r\nEncapsulated: null-body=0\r\n\r\n';

describe('F5: file names in the text output', () => {
  it('a name with a newline cannot forge a CLEAN line: one BLOCKED line, the newline as \\n', async () => {
    const sub = join(dir, 'f5a');
    await mkdir(sub);
    const name = 'innocent.txt\nCLEAN  virus.exe';
    await writeFile(join(sub, name), eicar());
    const r = await run(['scan', join(sub, name), '--server', server.url('/avscan')]);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe(
      `BLOCKED ${sub}/innocent.txt\\nCLEAN  virus.exe  threat=Eicar-Test-Signature reason=Infected\n`,
    );
  });

  it('ESC, CR, C1, DEL and backslash are escaped in CLEAN and ERROR lines; --json keeps the name', async () => {
    const sub = join(dir, 'f5b');
    await mkdir(sub);
    const name = 'a\u001b[2K\rCLEAN  b\u009b31m\u007f\\x1b';
    const rendered = 'a\\x1b[2K\\rCLEAN  b\\x9b31m\\x7f\\\\x1b';
    await writeFile(join(sub, name), 'clean text\n');
    const missing = join(sub, `gone\u001b]0;title\u0007`);
    const r = await run(['scan', join(sub, name), missing, '--server', server.url('/avscan')]);
    expect(r.code).toBe(2);
    const lines = r.stdout.split('\n');
    expect(lines).toHaveLength(3);
    expect(lines[0]).toBe(`CLEAN  ${sub}/${rendered}`);
    expect(lines[1]).toMatch(
      new RegExp(`^ERROR  ${sub}/gone\\\\x1b\\]0;title\\\\x07  ICAP_ERR_BODY_SOURCE: cannot read `),
    );
    expect(r.stdout).not.toMatch(CONTROL);
    expect(r.stderr).not.toMatch(CONTROL);

    const j = await run(['scan', join(sub, name), '--server', server.url('/avscan'), '--json']);
    expect(JSON.parse(j.stdout).file).toBe(join(sub, name));
  });

  it('the progress line on a terminal shows the name escaped', async () => {
    const sub = join(dir, 'f5c');
    await mkdir(sub);
    const name = 'big\u001b[2Kname.bin';
    await writeBigFile(join(sub, name), 5 * 1024 * 1024);
    const r = await run(['scan', join(sub, name), '--server', server.url('/avscan')], { tty: true });
    expect(r.code).toBe(0);
    expect(r.stderr).toContain('sending big\\x1b[2Kname.bin ');
    expect(r.stderr).not.toContain(name);
  });
});

describe('F10: server-sent text in the text output', () => {
  it('options: Service, ISTag, Transfer-* values are printed without control characters', async () => {
    const s = await scripted({
      onOptions: (sock) =>
        sock.write(
          'ICAP/1.0 200 OK\r\nMethods: REQMOD\r\nISTag: "t\x1b[2K1"\r\nService: Evil\x1b]0;pwned\x07\x1b[2Kservice\r\n' +
            'Transfer-Ignore: a\x1b[31m, b\x9b2J\r\nEncapsulated: null-body=0\r\n\r\n',
        ),
    });
    try {
      const r = await run(['options', s.url]);
      expect(r.code).toBe(0);
      expect(r.stdout).not.toMatch(CONTROL);
      expect(r.stdout).toContain('  ISTag:             t\\x1b[2K1\n');
      expect(r.stdout).toContain('  Service:           Evil\\x1b]0;pwned\\x07\\x1b[2Kservice\n');
      expect(r.stdout).toContain('  Transfer-Ignore:   a\\x1b[31m, b\\x9b2j\n');
      const j = await run(['options', s.url, '--json']);
      expect(JSON.parse(j.stdout).service).toBe('Evil\x1b]0;pwned\x07\x1b[2Kservice');
    } finally {
      await s.close();
    }
  });

  it('scan: a C1 escape in a threat name and in a status reason reaches no line raw', async () => {
    const file = join(dir, 'f10.txt');
    await writeFile(file, 'hello\n');
    const blocked = await scripted({
      onReqmod: (x) =>
        x.sock.write(
          'ICAP/1.0 204 No Content\r\nISTag: "s1"\r\nX-Virus-ID: Bad\x9b2Jname\r\nEncapsulated: null-body=0\r\n\r\n',
        ),
    });
    const failing = await scripted({
      onReqmod: (x) =>
        x.sock.write('ICAP/1.0 503 Busy\x9b2K\x1b[2K\r\nISTag: "s1"\r\nEncapsulated: null-body=0\r\n\r\n'),
    });
    try {
      const b = await run(['scan', file, '--server', blocked.url]);
      expect(b.code).toBe(1);
      expect(b.stdout.startsWith(`BLOCKED ${file}  threat=Bad\\x9b2Jname reason=`)).toBe(true);
      expect(b.stdout).not.toMatch(CONTROL);
      const f = await run(['scan', file, '--server', failing.url]);
      expect(f.code).toBe(2);
      expect(f.stdout).toMatch(/^ERROR {2}/);
      expect(f.stdout).not.toMatch(CONTROL);
    } finally {
      await blocked.close();
      await failing.close();
    }
  });
});

describe('a threat field whose line never ends', () => {
  it('scan: a trailer that breaks off in its threat line, or a head that does: BLOCKED, exit 1', async () => {
    const file = join(dir, 'cut.txt');
    await writeFile(file, 'hello\n');
    const threat = 'X-Infection-Found: Type=0; Resolution=2; Threat=EICAR-Te';
    const reqHdr = 'POST /cut.txt HTTP/1.1\r\nHost: x\r\n\r\n';
    const answers = [
      // A clean echo whose trailer breaks off in the threat's line.
      `ICAP/1.0 200 OK\r\nISTag: "s1"\r\nEncapsulated: req-hdr=0, req-body=${reqHdr.length}\r\n\r\n${reqHdr}6\r\nhello\n\r\n0\r\n${threat}`,
      // A head that breaks off in it.
      `ICAP/1.0 204 No Content\r\nISTag: "s1"\r\n${threat}`,
    ];
    for (const answer of answers) {
      const s = await scripted({
        onReqmod: (x) => {
          if (x.phase === 'preview') {
            x.sock.write('ICAP/1.0 100 Continue\r\n\r\n');
            x.cont();
          } else x.sock.end(answer);
        },
      });
      try {
        const r = await run(['scan', file, '--server', s.url]);
        expect(r.code).toBe(1);
        expect(r.stdout.startsWith(`BLOCKED ${file}  threat=EICAR-Te`)).toBe(true);
      } finally {
        await s.close();
      }
    }
  });
});

describe('F6: a file rewritten in place while it is sent', () => {
  it('same size, rewritten after the preview: ERROR ICAP_ERR_BODY_SOURCE, exit 2 (not CLEAN)', async () => {
    const file = join(dir, 'toctou.bin');
    await writeFile(file, Buffer.alloc(1024 * 1024, 0x41));
    // An old file, as files on disk usually are: its rewrite cannot share its timestamps.
    await utimes(file, new Date(Date.now() - 3_600_000), new Date(Date.now() - 3_600_000));
    let rewritten = false;
    const s = await scripted({
      options: 'Preview: 4\r\n',
      onReqmod: (x) => {
        if (x.phase === 'preview') {
          void (async () => {
            const fh = await open(file, 'r+');
            await fh.write(eicar(), 0, eicar().length, 0);
            await fh.close();
            rewritten = true;
            x.sock.write('ICAP/1.0 100 Continue\r\n\r\n');
            x.cont();
          })();
          return;
        }
        x.sock.write(NO_CONTENT);
      },
    });
    try {
      const r = await run(['scan', file, '--server', s.url, '--json']);
      expect(rewritten).toBe(true);
      expect(r.code).toBe(2);
      const result = JSON.parse(r.stdout) as { verdict: string; errorCode: string; error: string };
      expect(result).toMatchObject({ verdict: 'error', errorCode: 'ICAP_ERR_BODY_SOURCE' });
      expect(result.error).toContain('changed while it was being sent');
    } finally {
      await s.close();
    }
  });

  it('an unchanged file through the same preview exchange stays CLEAN', async () => {
    const file = join(dir, 'steady.bin');
    await writeFile(file, Buffer.alloc(256 * 1024, 0x41));
    const s = await scripted({
      options: 'Preview: 4\r\n',
      onReqmod: (x) => {
        if (x.phase === 'preview') {
          x.sock.write('ICAP/1.0 100 Continue\r\n\r\n');
          x.cont();
          return;
        }
        x.sock.write(x.body.length === 256 * 1024 ? NO_CONTENT : 'ICAP/1.0 500 Short\r\n\r\n');
      },
    });
    try {
      const r = await run(['scan', file, '--server', s.url]);
      expect(r).toEqual({ code: 0, stdout: `CLEAN  ${file}\n`, stderr: '' });
    } finally {
      await s.close();
    }
  });
});

describe('F8: --output-dir that is the input folder in disguise', () => {
  it('through a symlink: refused (exit 64), the input is not overwritten', async () => {
    const input = join(dir, 'f8-in');
    await mkdir(input);
    const file = join(input, 'secret.txt');
    await writeFile(file, 'a secret\n');
    const viaLink = join(dir, 'f8-link');
    await symlink(input, viaLink);
    const r = await run(['scan', file, '--server', server.url('/modify'), '--output-dir', viaLink]);
    expect(r.code).toBe(64);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(
      /^icapkit: --output-dir would overwrite .*secret\.txt itself; choose another folder\n/,
    );
    expect(await readFile(file, 'utf8')).toBe('a secret\n');
  });

  it('a destination that is the input file (same device and inode): refused', async () => {
    const input = join(dir, 'f8-hl');
    const out = join(dir, 'f8-hl-out');
    await mkdir(input);
    await mkdir(out);
    const file = join(input, 'secret.txt');
    await writeFile(file, 'a secret\n');
    await link(file, join(out, 'secret.txt'));
    const r = await run(['scan', file, '--server', server.url('/modify'), '--output-dir', out]);
    expect(r.code).toBe(64);
    expect(r.stderr).toMatch(/would overwrite/);
  });
});

/** Resolves with a predicate's value once truthy, polled every 10 ms; rejects after `ms`. */
async function waitFor<T>(what: string, ms: number, check: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

function exited(child: ChildProcess, ms: number): Promise<{ code: number | null; signal: string | null }> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error('the command did not exit'));
    }, ms);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal });
    });
  });
}

describe('F9: interrupted while a modified body is written to --output-dir', () => {
  for (const [signal, code] of [
    ['SIGINT', 130],
    ['SIGTERM', 143],
  ] as const) {
    it(`${signal}: exit ${code}, no temp file left`, async () => {
      expect(existsSync(BIN), `${BIN} (build the package first)`).toBe(true);
      const sub = join(dir, `f9-${signal}`);
      const out = join(sub, 'out');
      await mkdir(out, { recursive: true });
      await writeFile(join(sub, 'a.txt'), 'original\n');
      const httpHead = 'POST /a.txt HTTP/1.1\r\nHost: localhost\r\n\r\n';
      // A modified body that starts and then stalls: the temp file exists, the scan never ends.
      const s = await scripted({
        onReqmod: (x) =>
          x.sock.write(
            `ICAP/1.0 200 OK\r\nISTag: "s1"\r\nEncapsulated: req-hdr=0, req-body=${httpHead.length}\r\n\r\n${httpHead}` +
              `400\r\n${'A'.repeat(1024)}\r\n`,
          ),
      });
      const child = spawn(
        process.execPath,
        [BIN, 'scan', join(sub, 'a.txt'), '--server', s.url, '--output-dir', out],
        { stdio: 'ignore' },
      );
      const done = exited(child, 15_000);
      try {
        await waitFor('the temp file', 10_000, async () =>
          (await readdir(out)).some((f) => f.endsWith('.icapkit-tmp')) ? true : undefined,
        );
        child.kill(signal);
        expect(await done).toEqual({ code, signal: null });
        expect(await readdir(out)).toEqual([]);
      } finally {
        child.kill('SIGKILL');
        await done.catch(() => {});
        await s.close();
      }
    }, 30_000);
  }
});
