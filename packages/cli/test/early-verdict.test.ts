/**
 * `icapkit scan` against a scanner that answers from the first bytes of a large file and then
 * closes (FIN) or resets (RST) the connection without reading the rest: BLOCKED, exit 1, every
 * time (not ERROR ICAP_ERR_RESET because the next write of the file failed).
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { eicar, type IcapTestServer, startIcapServer } from '@icapkit/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run, text } from './helpers.js';

let dir: string;
let file: string;
let server: IcapTestServer;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'icapkit-cli-early-'));
  file = join(dir, 'big-infected.bin');
  // EICAR first, then 8 MiB: the server answers long before the file is sent.
  await writeFile(file, Buffer.concat([eicar(), text(8 * 1024 * 1024)]));
  server = await startIcapServer({ recordBodies: false });
});

afterAll(async () => {
  await server?.close();
  await rm(dir, { recursive: true, force: true });
});

describe('scan: early verdict, then the server goes away', () => {
  for (const then of ['close', 'reset'] as const) {
    for (const withContinue of [true, false]) {
      it(`then ${then === 'close' ? 'FIN' : 'RST'}${withContinue ? ' (after 100 Continue)' : ' (no 100 Continue)'}: BLOCKED in 20 of 20 runs`, async () => {
        server.setScript((q) =>
          q.method === 'OPTIONS'
            ? undefined
            : { kind: 'early-verdict', ending: then, continue: withContinue, after: 1 },
        );
        try {
          for (let i = 0; i < 20; i++) {
            const r = await run(['scan', file, '--server', server.url('/avscan'), '--json']);
            const result = JSON.parse(r.stdout) as {
              verdict: string;
              errorCode: string | null;
              threat: string;
            };
            expect({ run: i, verdict: result.verdict, errorCode: result.errorCode }).toEqual({
              run: i,
              verdict: 'blocked',
              errorCode: null,
            });
            expect(result.threat).toMatch(/eicar/i);
            expect(r.code).toBe(1);
          }
        } finally {
          server.setScript(undefined);
        }
      }, 60_000);
    }
  }
});

describe('options: an answer without the required headers', () => {
  it('names ISTag and Methods on stderr and exits 2 (text and --json)', async () => {
    const s = await startIcapServer({ incompleteOptions: true });
    try {
      const r = await run(['options', s.url('/avscan')]);
      expect(r.code).toBe(2);
      expect(r.stdout).toContain('  Methods:           -\n');
      expect(r.stderr).toBe('icapkit: the OPTIONS response lacks required headers: ISTag, Methods\n');
      const j = await run(['options', s.url('/avscan'), '--json']);
      expect(j.code).toBe(2);
      expect(JSON.parse(j.stdout)).toMatchObject({ missingHeaders: ['ISTag', 'Methods'], istag: null });
    } finally {
      await s.close();
    }
  });

  it('a complete answer: exit 0, missingHeaders and malformedHeaders empty', async () => {
    const r = await run(['options', server.url('/avscan'), '--json']);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout).missingHeaders).toEqual([]);
    expect(JSON.parse(r.stdout).malformedHeaders).toEqual([]);
  });

  it('a Preview or Options-TTL that is not a whole number: named on stderr, read as absent, exit 2', async () => {
    const answer =
      'ICAP/1.0 200 OK\r\nISTag: "n"\r\nMethods: REQMOD\r\nPreview: 4096 bytes\r\n' +
      'Options-TTL: \x1b[31m9\r\nEncapsulated: null-body=0\r\n\r\n';
    const s = await startIcapServer({
      script: (q) => (q.method === 'OPTIONS' ? { kind: 'raw', response: answer } : undefined),
    });
    try {
      const r = await run(['options', s.url('/avscan')]);
      expect(r.code).toBe(2);
      expect(r.stdout).toContain('  Preview:           none (no preview)\n');
      // The server's bytes rendered without their control characters.
      expect(r.stderr).toMatch(
        /^icapkit: the OPTIONS response has Preview: "4096 bytes", Options-TTL: ".*", not a whole number \(read as absent\)\n$/,
      );
      expect(r.stderr).not.toContain('\x1b');
      const j = await run(['options', s.url('/avscan'), '--json']);
      expect(j.code).toBe(2);
      expect(JSON.parse(j.stdout)).toMatchObject({
        preview: null,
        optionsTtl: null,
        malformedHeaders: ['Preview: "4096 bytes"', 'Options-TTL: "\\u001b[31m9"'],
      });
    } finally {
      await s.close();
    }
  });
});
