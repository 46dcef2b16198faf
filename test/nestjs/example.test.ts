/**
 * examples/nestjs as a Nest user builds and runs it: TypeScript compiled by tsc to CommonJS with
 * legacy decorators and emitDecoratorMetadata (`pnpm run build`), `node dist/main.js`
 * require()-ing @icapkit/nestjs (an ES module) on Node >= 20.19. On both platforms: a clean
 * upload is answered with its SHA-256, EICAR gets 403, the @SkipIcap route is not scanned, the
 * @IcapOptions route scans, and SIGTERM closes everything so the process exits by itself.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { EICAR_NAME, eicar } from '@icapkit/testing';
import { describe, expect, it } from 'vitest';
import { eventually, postFile, send } from '../demo/helpers.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const MAIN = join(ROOT, 'examples', 'nestjs', 'dist', 'main.js');
const built = existsSync(MAIN) && existsSync(join(ROOT, 'packages', 'nestjs', 'dist', 'index.js'));

describe.skipIf(!built && process.env.CI !== 'true')(
  'node examples/nestjs/dist/main.js (CommonJS, decorators)',
  () => {
    it.each(['express', 'fastify'])(
      'PLATFORM=%s: scans uploads, skips and overrides per route, exits on SIGTERM',
      async (platform) => {
        const child = spawn(process.execPath, [MAIN], {
          cwd: ROOT,
          env: {
            ...process.env,
            PORT: '0',
            PLATFORM: platform,
            ICAP_URL: '',
            ICAP_SERVICE: '',
            ICAP_FAIL_OPEN: '',
          },
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
          await eventually(() => expect(out).toMatch(/listening on http:\/\/127\.0\.0\.1:\d+ /), 20_000);
          const url = /listening on (http:\/\/127\.0\.0\.1:\d+) \((\w+)\)/.exec(out);
          expect(url?.[2]).toBe(platform);
          const base = url![1]!;
          const data = Buffer.from('quarterly notes\n'.repeat(500));
          const ok = await postFile(`${base}/upload`, { name: 'notes.txt', data }, 'application/json');
          expect(ok.status).toBe(200);
          expect(ok.json()).toEqual({
            ok: true,
            file: 'notes.txt',
            size: data.length,
            sha256: createHash('sha256').update(data).digest('hex'),
            icap: { action: 'ICAP_PASSED' },
          });
          expect(
            (await postFile(`${base}/upload`, { name: 'eicar.com', data: eicar() }, 'application/json'))
              .status,
          ).toBe(403);
          expect(
            (await postFile(`${base}/upload/large`, { name: 'eicar.com', data: eicar() }, 'application/json'))
              .status,
          ).toBe(403);
          const icapLines = () => out.split('\n').filter((l) => l.startsWith('icap '));
          await eventually(() =>
            expect(icapLines()).toEqual([
              'icap ICAP_PASSED HTTP_METHOD_POST /upload',
              `icap ICAP_BLOCKED HTTP_METHOD_POST /upload ${EICAR_NAME}`,
              `icap ICAP_BLOCKED HTTP_METHOD_POST /upload/large ${EICAR_NAME}`,
            ]),
          );
          const skipped = await send(`${base}/telemetry`, {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body: Buffer.from('{"event":"view"}'),
          });
          expect(skipped.status).toBe(204);
          const status = await send(`${base}/status`);
          expect(status.json()).toMatchObject({ platform, servers: [{ state: 'up' }] });
          // The skipped route made no scan (no log line; GET /status may log ICAP_DISABLED, no body).
          expect(icapLines().filter((l) => l.includes('/telemetry'))).toEqual([]);
          child.kill('SIGTERM');
          // Exits on its own: app.close() closed the HTTP server and IcapModule's ICAP connections.
          expect(await exited).toBe(0);
          expect(out).toContain('closed');
        } finally {
          child.kill('SIGKILL');
        }
      },
    );
  },
);
