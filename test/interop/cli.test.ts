/**
 * The `icapkit` command against real c-icap 0.5 + ClamAV (started by the test): exit codes a CI
 * pipeline or cron job can rely on (clean 0, blocked 1 with the threat name, server down 2), the
 * same verdicts as Debian's c-icap-client for the same files, OPTIONS, ICAPS with a CA file, and
 * the built executable itself.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { run } from '../../packages/cli/test/helpers.js';
import { type CIcapServer, describeWithCIcap, refusingPort, startCIcap } from '../support/c-icap.js';
import { runCIcapClient } from '../support/c-icap-client.js';
import { EICAR_THREAT, eicarBytes } from '../support/eicar.js';

const BIN = fileURLToPath(new URL('../../packages/cli/dist/bin.js', import.meta.url));

function text(n: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = 0x61 + (i % 26);
  return b;
}

describeWithCIcap('icapkit command against real c-icap', () => {
  let server: CIcapServer;
  let dir: string;
  const files: Record<string, Buffer> = {
    'clean.txt': text(4000),
    'eicar.com': eicarBytes(),
    'random.bin': randomBytes(300_000),
    'empty.txt': Buffer.alloc(0),
    'tiny.txt': Buffer.from('x'),
    'big.bin': randomBytes(3 * 1024 * 1024),
  };
  const path = (name: string) => join(dir, name);

  beforeAll(async () => {
    server = await startCIcap();
    dir = await mkdtemp(join(tmpdir(), 'icapkit-cli-interop-'));
    for (const [name, data] of Object.entries(files)) await writeFile(path(name), data);
  }, 60_000);

  afterAll(async () => {
    await server?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('a clean file: exit 0 and a CLEAN line', async () => {
    const r = await run(['scan', path('clean.txt'), '--server', server.url('avscan')]);
    expect(r).toMatchObject({ code: 0, stdout: `CLEAN  ${path('clean.txt')}\n` });
  });

  it('EICAR: exit 1, the ClamAV threat name on the BLOCKED line', async () => {
    const r = await run(['scan', path('clean.txt'), path('eicar.com'), '--server', server.url('avscan')]);
    expect(r.code).toBe(1);
    const lines = r.stdout.trim().split('\n');
    expect(lines[0]).toBe(`CLEAN  ${path('clean.txt')}`);
    expect(lines[1]).toMatch(/^BLOCKED +\S+ +threat=\S+/);
    expect(lines[1]).toContain(`${path('eicar.com')}  threat=${EICAR_THREAT}`);
  });

  it('server down: exit 2, distinct from blocked, with ICAP_ERR_CONNECT', async () => {
    const port = await refusingPort();
    const r = await run(['scan', path('eicar.com'), '--server', `icap://127.0.0.1:${port}/avscan`]);
    expect(r.code).toBe(2);
    expect(r.stdout).toContain('ICAP_ERR_CONNECT');
  });

  it('an unknown service: exit 2 with the ICAP error', async () => {
    const r = await run(['scan', path('clean.txt'), '--server', server.url('no-such-service')]);
    expect(r.code).toBe(2);
    expect(r.stdout).toMatch(/^ERROR {2}.*ICAP_ERR_/);
  });

  it('the same verdicts and threat names as c-icap-client for the same files, with and without 204', async () => {
    for (const name of Object.keys(files)) {
      for (const no204 of [false, true]) {
        const reference = await runCIcapClient({
          host: '127.0.0.1',
          port: server.port,
          service: 'avscan',
          file: path(name),
          reqmod: true,
          method: 'POST',
          no204,
        });
        const ours = await run([
          'scan',
          path(name),
          '--server',
          server.url('avscan'),
          '--json',
          ...(no204 ? ['--no-204'] : []),
        ]);
        const o = JSON.parse(ours.stdout) as { verdict: string; threat: string | null; status: number };
        const label = `${name}${no204 ? ' -no204' : ''}`;
        expect(o.verdict === 'blocked', label).toBe(reference.verdict === 'blocked');
        // A 200 that returns the file unchanged is clean for both.
        if (reference.verdict === 'modified') expect(reference.bodyEqualsInput, label).toBe(true);
        expect(o.verdict, label).not.toBe('modified');
        expect(o.threat, label).toBe(reference.threat);
        expect(ours.code, label).toBe(o.verdict === 'blocked' ? 1 : 0);
      }
    }
  }, 120_000);

  it('options: the service OPTIONS', async () => {
    const r = await run(['options', server.url('avscan'), '--json']);
    expect(r.code).toBe(0);
    const o = JSON.parse(r.stdout) as Record<string, unknown>;
    expect(o).toMatchObject({
      methods: ['RESPMOD', 'REQMOD'],
      preview: 1024,
      allow204: true,
      optionsTtl: 3600,
    });
    expect(String(o.istag)).toMatch(/^CI0001-/);
  });

  it('ICAPS: --tls-ca verifies c-icap certificate; without it the scan fails with ICAP_ERR_TLS', async () => {
    const ok = await run([
      'scan',
      path('eicar.com'),
      '--server',
      server.url('avscan', true),
      '--tls-ca',
      server.caFile,
    ]);
    expect(ok.code).toBe(1);
    expect(ok.stdout).toContain(EICAR_THREAT);
    const untrusted = await run(['scan', path('clean.txt'), '--server', server.url('avscan', true)]);
    expect(untrusted.code).toBe(2);
    expect(untrusted.stdout).toContain('ICAP_ERR_TLS');
  });

  it.skipIf(!existsSync(BIN) && process.env.CI !== 'true')(
    'the built executable: exit codes and output as a shell sees them',
    async () => {
      const exec = (args: string[]) =>
        new Promise<{ code: number; stdout: string }>((resolve) => {
          execFile(process.execPath, [BIN, ...args], { timeout: 30_000 }, (err, stdout) =>
            resolve({ code: err ? ((err as { code?: number }).code ?? -1) : 0, stdout }),
          );
        });
      const clean = await exec(['scan', path('clean.txt'), '--server', server.url('avscan')]);
      expect(clean).toEqual({ code: 0, stdout: `CLEAN  ${path('clean.txt')}\n` });
      const blocked = await exec(['scan', path('eicar.com'), '--server', server.url('avscan')]);
      expect(blocked.code).toBe(1);
      expect(blocked.stdout).toContain(EICAR_THREAT);
      const down = await exec([
        'scan',
        path('clean.txt'),
        '--server',
        `icap://127.0.0.1:${await refusingPort()}/avscan`,
      ]);
      expect(down.code).toBe(2);
    },
    60_000,
  );
});
