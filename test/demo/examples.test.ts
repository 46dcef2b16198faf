/**
 * The three examples (examples/express, examples/fastify, examples/koa) as a person runs them:
 * each started on a free port with the embedded ICAP server, a clean upload answered with its
 * SHA-256, EICAR refused with 403, and everything closed afterwards (no server or socket left).
 */
import { execFile, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { EICAR_NAME, eicar } from '@icapkit/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { banner, configFromEnv, logLine, parseSize, wantsHtml } from '../../examples/shared/demo.js';
import { describeWithCIcap, startCIcap } from '../support/c-icap.js';
import {
  deadIcapUrl,
  EXAMPLES,
  type Example,
  type ExampleName,
  eventually,
  postFile,
  send,
  tcpHandles,
} from './helpers.js';

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe.each(Object.keys(EXAMPLES) as ExampleName[])('examples/%s', (name) => {
  let demo: Example;
  let baseline: number;
  const lines: string[] = [];

  beforeAll(async () => {
    baseline = tcpHandles();
    demo = await EXAMPLES[name]({ port: 0, print: (line) => lines.push(line) });
  });

  afterAll(async () => {
    await demo?.close();
  });

  it('starts the embedded ICAP server on loopback', () => {
    expect(demo.embedded).toBe(true);
    expect(demo.icapUrl).toMatch(/^icap:\/\/127\.0\.0\.1:\d+$/);
    expect(demo.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
  });

  it('serves the upload page', async () => {
    const res = await send(`${demo.url}/`);
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toMatch(/^text\/html/);
    expect(res.text).toContain(
      '<form id="upload" action="/upload" method="post" enctype="multipart/form-data">',
    );
    expect(res.text).toContain('name="file"');
  });

  it('accepts a clean file and answers its size and SHA-256', async () => {
    const data = randomBytes(200_000);
    const res = await postFile(`${demo.url}/upload`, { name: 'photo.jpg', data });
    expect(res.status).toBe(200);
    expect(res.json()).toEqual({
      ok: true,
      file: 'photo.jpg',
      size: data.length,
      sha256: sha256(data),
      icap: { action: 'ICAP_PASSED' },
    });
  });

  it('refuses EICAR with 403: problem+json for JSON clients, a page for the others', async () => {
    const json = await postFile(
      `${demo.url}/upload`,
      { name: 'eicar.com', data: eicar() },
      'application/json',
    );
    expect(json.status).toBe(403);
    expect(json.headers['content-type']).toBe('application/problem+json');
    expect(json.json()).toMatchObject({ status: 403, title: 'Upload blocked', threat: EICAR_NAME });

    const html = await postFile(`${demo.url}/upload`, { name: 'eicar.com', data: eicar() });
    expect(html.status).toBe(403);
    expect(html.headers['content-type']).toMatch(/^text\/html/);
    expect(html.text).toContain('<h1>Upload blocked</h1>');
    expect(html.text).toContain(EICAR_NAME);
  });

  it('answers a browser posting the form without JavaScript with a page', async () => {
    const data = Buffer.from('hello, world\n');
    const res = await postFile(
      `${demo.url}/upload`,
      { name: 'hello.txt', data },
      'text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8',
    );
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toMatch(/^text\/html/);
    expect(res.text).toContain('Clean — hello.txt (13 bytes) was accepted');
    expect(res.text).toContain(sha256(data));
  });

  it('answers 400 when the file is not in the field "file"', async () => {
    const res = await postFile(`${demo.url}/upload`, {
      name: 'a.txt',
      data: Buffer.from('a'),
      field: 'other',
    });
    expect(res.status).toBe(400);
    expect(res.json()).toMatchObject({ ok: false });
  });

  it('prints one line per scan through onLog', () => {
    const scans = lines.filter((l) => l.startsWith('[icap]'));
    expect(scans.length).toBeGreaterThanOrEqual(5);
    expect(scans.some((l) => /ICAP_PASSED +POST \/upload .*\d+ ms$/.test(l))).toBe(true);
    expect(scans.some((l) => l.includes('ICAP_BLOCKED') && l.includes(`threat=${EICAR_NAME}`))).toBe(true);
    // GET / has no body: not scanned, so no line.
    expect(scans.some((l) => l.includes('GET /'))).toBe(false);
  });

  it('closes the HTTP server, the engine and the embedded ICAP server', async () => {
    await demo.close();
    await demo.close(); // twice is fine (a second Ctrl-C, or close after a signal)
    await eventually(() => expect(tcpHandles()).toBeLessThanOrEqual(baseline));
    await expect(send(`${demo.url}/`)).rejects.toThrow(/ECONNREFUSED/);
  });
});

describe('examples when the ICAP server is down or the upload too large', () => {
  const started: Example[] = [];
  const start = async (...args: Parameters<(typeof EXAMPLES)['express']>) => {
    const demo = await EXAMPLES.express(...args);
    started.push(demo);
    return demo;
  };
  afterAll(async () => {
    await Promise.all(started.map((d) => d.close()));
  });

  it.each(Object.keys(EXAMPLES) as ExampleName[])('%s: fail-closed answers 503', async (name) => {
    const demo = await EXAMPLES[name]({ port: 0, icapUrl: await deadIcapUrl(), print: () => {} });
    started.push(demo);
    expect(demo.embedded).toBe(false);
    const res = await postFile(
      `${demo.url}/upload`,
      { name: 'a.txt', data: Buffer.from('a') },
      'application/json',
    );
    expect(res.status).toBe(503);
    expect(res.headers['retry-after']).toBeDefined();
    expect(res.json()).toMatchObject({ status: 503, title: 'Upload scanning unavailable' });
  });

  it('ICAP_FAIL_OPEN=1 passes the upload unscanned (action ICAP_FAILED)', async () => {
    const lines: string[] = [];
    const demo = await start({
      port: 0,
      icapUrl: await deadIcapUrl(),
      failOpen: true,
      print: (l) => lines.push(l),
    });
    const data = Buffer.from('not scanned');
    const res = await postFile(`${demo.url}/upload`, { name: 'a.txt', data });
    expect(res.status).toBe(200);
    expect(res.json()).toMatchObject({ ok: true, sha256: sha256(data), icap: { action: 'ICAP_FAILED' } });
    expect(lines.join('\n')).toMatch(/ICAP_FAILED .*error=ICAP_ERR_CONNECT.*\(passed unscanned\)/);
  });

  it('answers 413 above MAX_UPLOAD', async () => {
    const demo = await start({ port: 0, maxUpload: 64 * 1024, print: () => {} });
    const res = await postFile(
      `${demo.url}/upload`,
      { name: 'big.bin', data: randomBytes(100 * 1024) },
      'application/json',
    );
    expect(res.status).toBe(413);
    expect(res.json()).toMatchObject({ status: 413 });
  });
});

describeWithCIcap('examples with a real c-icap (ICAP_URL)', () => {
  let cicap: Awaited<ReturnType<typeof startCIcap>>;
  beforeAll(async () => {
    cicap = await startCIcap();
  });
  afterAll(async () => {
    await cicap?.stop();
  });

  it.each(Object.keys(EXAMPLES) as ExampleName[])('%s: clean passes, EICAR is blocked', async (name) => {
    const lines: string[] = [];
    const demo = await EXAMPLES[name]({
      port: 0,
      icapUrl: `icap://127.0.0.1:${cicap.port}`,
      print: (l) => lines.push(l),
    });
    try {
      expect(demo.embedded).toBe(false);
      const data = randomBytes(50_000);
      const clean = await postFile(`${demo.url}/upload`, { name: 'data.bin', data });
      expect(clean.status).toBe(200);
      expect(clean.json()).toMatchObject({ sha256: sha256(data), icap: { action: 'ICAP_PASSED' } });
      const blocked = await postFile(
        `${demo.url}/upload`,
        { name: 'eicar.com', data: eicar() },
        'application/json',
      );
      expect(blocked.status).toBe(403);
      expect(blocked.json()).toMatchObject({ threat: expect.stringMatching(/^Eicar-Test-Signature/) });
      expect(lines.some((l) => l.includes('ICAP_BLOCKED') && l.includes('threat=Eicar-Test-Signature'))).toBe(
        true,
      );
    } finally {
      await demo.close();
    }
  });
});

// `node examples/<name>/server.js` runs against the packages' dist (`pnpm build`), as `pnpm demo` does.
const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const built = ['core', 'testing', 'express', 'fastify', 'koa'].every((p) =>
  existsSync(join(ROOT, 'packages', p, 'dist', 'index.js')),
);

describe.skipIf(!built && process.env.CI !== 'true')('node examples/<name>/server.js', () => {
  it.each(Object.keys(EXAMPLES) as ExampleName[])(
    '%s: prints how to try it, serves, and exits by itself on SIGTERM',
    async (name) => {
      const child = spawn(process.execPath, [join(ROOT, 'examples', name, 'server.js')], {
        cwd: ROOT,
        env: { ...process.env, PORT: '0', ICAP_URL: '', ICAP_SERVICE: '', ICAP_FAIL_OPEN: '' },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let out = '';
      child.stdout.on('data', (d: Buffer) => {
        out += d.toString();
      });
      child.stderr.on('data', (d: Buffer) => {
        out += d.toString();
      });
      const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
      try {
        await eventually(() => expect(out).toContain('Ctrl-C stops it.'), 15_000);
        const url = /upload page +(http:\/\/127\.0\.0\.1:\d+)\//.exec(out)?.[1];
        expect(url).toBeDefined();
        expect(out).toMatch(/ICAP server +icap:\/\/127\.0\.0\.1:\d+\/avscan +\(embedded/);
        expect(out).toContain(`curl -F file=@README.md ${url}/upload`);
        const res = await postFile(`${url}/upload`, { name: 'eicar.com', data: eicar() }, 'application/json');
        expect(res.status).toBe(403);
        await eventually(() => expect(out).toMatch(/\[icap\] ICAP_BLOCKED +POST \/upload threat=/));
        child.kill('SIGTERM');
        // Exits on its own: nothing (server, ICAP connection, embedded ICAP server) is left open.
        expect(await exited).toBe(0);
        expect(out).toContain('closed.');
      } finally {
        child.kill('SIGKILL');
      }
    },
  );
});

describe('examples/shared', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'icapkit-banner-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('prints a printf line that writes the EICAR test file', async () => {
    const text: string = banner({
      framework: 'Express',
      url: 'http://127.0.0.1:3000',
      icapUrl: 'icap://127.0.0.1:1344',
      serviceUri: '/avscan',
      embedded: true,
      failOpen: false,
      eicar: eicar(),
    });
    expect(text).toContain('http://127.0.0.1:3000/');
    expect(text).toContain('curl -F file=@README.md http://127.0.0.1:3000/upload');
    expect(text).toContain('curl -F file=@/tmp/eicar.com http://127.0.0.1:3000/upload');
    // The banner never holds the string whole (only its two halves).
    expect(text).not.toContain(eicar().toString('latin1'));
    const printf = text.split('\n').find((l) => l.trim().startsWith('printf'))!;
    const target = join(dir, 'eicar.com');
    await promisify(execFile)('sh', ['-c', printf.trim().replace('/tmp/eicar.com', target)]);
    expect((await readFile(target)).equals(eicar())).toBe(true);
  });

  it('reads ICAP_URL, ICAP_SERVICE, ICAP_FAIL_OPEN, PORT and MAX_UPLOAD', () => {
    expect(configFromEnv({})).toMatchObject({
      port: 3000,
      host: '127.0.0.1',
      icapUrl: undefined,
      serviceUri: '/avscan',
      failOpen: false,
      maxUpload: 50 * 1024 * 1024,
    });
    expect(
      configFromEnv({ ICAP_URL: 'icap://10.0.0.5:1344/srv_clamav', ICAP_FAIL_OPEN: '1', PORT: '8080' }),
    ).toMatchObject({
      icapUrl: 'icap://10.0.0.5:1344',
      serviceUri: '/srv_clamav',
      failOpen: true,
      port: 8080,
    });
    expect(configFromEnv({ ICAP_URL: 'icap://h:1344/x', ICAP_SERVICE: '/avscan' }).serviceUri).toBe(
      '/avscan',
    );
    expect(() => configFromEnv({ ICAP_URL: 'http://h' })).toThrow(/ICAP_URL/);
    expect(parseSize('10mb')).toBe(10 * 1024 * 1024);
    expect(parseSize('512kb')).toBe(512 * 1024);
  });

  it('tells browser navigations (HTML) from API clients (JSON)', () => {
    expect(wantsHtml('text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8')).toBe(true);
    expect(wantsHtml('*/*')).toBe(false);
    expect(wantsHtml('application/json')).toBe(false);
    expect(wantsHtml(undefined)).toBe(false);
  });

  it('formats one log line per scan', () => {
    const line: string = logLine({
      action: 'ICAP_BLOCKED',
      http_method: 'HTTP_METHOD_POST',
      uri_path: '/upload',
      request_body_length: 300,
      http_response_code: 403,
      significance: ['ICAP_BLOCKED'],
      duration: 4,
      request_logs: [{ violations: [{ file_name: 'eicar.com', threat_name: EICAR_NAME }] }],
    });
    expect(line).toBe(
      `[icap] ICAP_BLOCKED  POST /upload threat=${EICAR_NAME} file=eicar.com 300 bytes -> 403 4 ms`,
    );
  });
});
