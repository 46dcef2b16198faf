/**
 * `icapkit scan`: a threat named anywhere in the exchange makes the file BLOCKED and the exit
 * code 1, as the middleware blocks it (the rules of @icapkit/core's beyond-head.ts): in a 100
 * Continue, in the trailer of the answer's body, in a second answer after it, in the head of
 * an answer that then broke off, a repair that handed the file back unchanged, and a repair
 * that changed it (the file on disk is still the infected one). An unscannable file is blocked
 * too. The controls: what carries no threat stays clean, modified or an error.
 */
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chunked, type Req, type ScriptedOptions, scripted } from '../../../test/support/scripted-icap.js';
import { run } from './helpers.js';

let dir: string;
let file: string;
const CONTENT = Buffer.from('the file as it is on disk, whatever the server says\n');

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'icapkit-cli-rules-'));
  file = join(dir, 'upload.bin');
  await writeFile(file, CONTENT);
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const INFECTED = 'X-Infection-Found: Type=0; Resolution=2; Threat=Named.Threat;\r\n';
const REPAIRED = 'X-Infection-Found: Type=0; Resolution=1; Threat=Named.Threat;\r\n';
const NO_BODY = 'ICAP/1.0 204 No Content\r\nISTag: "x1"\r\nEncapsulated: null-body=0\r\n\r\n';

/** A 200 returning the request's own head with `body`, its ICAP fields and a trailer. */
function returned(r: Req, body: Buffer, icap = '', trailer = ''): string {
  const head = r.encap.toString('latin1');
  return (
    `ICAP/1.0 200 OK\r\nISTag: "x1"\r\n${icap}Encapsulated: req-hdr=0, req-body=${head.length}\r\n\r\n` +
    `${head}${chunked(body)}0\r\n${trailer}\r\n`
  );
}

interface Outcome {
  code: number;
  verdict: string;
  threat: string | null;
  modifiedSize: number | null;
  output: string | null;
  text: string;
}

/** Scans the file against a server scripted by `answer`, in --json and in text; both must agree. */
async function scan(
  answer: (r: Req) => void,
  opts: ScriptedOptions = {},
  args: string[] = [],
): Promise<Outcome> {
  const server = await scripted(answer, opts);
  try {
    const j = await run(['scan', file, '--server', `${server.url}/avscan`, '--json', ...args]);
    const t = await run(['scan', file, '--server', `${server.url}/avscan`, ...args]);
    const result = JSON.parse(j.stdout) as Outcome;
    expect(t.code).toBe(j.code);
    return {
      code: j.code,
      verdict: result.verdict,
      threat: result.threat,
      modifiedSize: result.modifiedSize,
      output: result.output,
      text: t.stdout,
    };
  } finally {
    await server.close();
  }
}

function expectBlocked(o: Outcome, threat: string | null = 'Named.Threat'): void {
  expect({ code: o.code, verdict: o.verdict, threat: o.threat }).toEqual({
    code: 1,
    verdict: 'blocked',
    threat,
  });
  expect(o.text).toMatch(/^BLOCKED /);
}

describe('scan: a threat named outside the final head blocks', () => {
  for (const vendor of ['generic', 'c-icap', 'opswat', 'kaspersky']) {
    it(`a repair that returns the file unchanged (--vendor ${vendor})`, async () => {
      const o = await scan((r) => r.sock.write(returned(r, r.body, REPAIRED)), {}, ['--vendor', vendor]);
      expectBlocked(o);
      expect(o.modifiedSize).toBeNull();
    });
  }

  it('a repair that changed the file: blocked (the file on disk is the infected one), the copy kept', async () => {
    const out = join(dir, 'repaired');
    const copy = Buffer.from('disinfected\n');
    const o = await scan((r) => r.sock.write(returned(r, copy, REPAIRED)), {}, ['--output-dir', out]);
    expectBlocked(o);
    expect(o.modifiedSize).toBe(copy.length);
    expect(o.output).toBe(join(out, 'upload.bin'));
    expect(await readFile(join(out, 'upload.bin'))).toEqual(copy);
    expect(o.text).toContain(`(repaired copy: ${copy.length} bytes -> ${join(out, 'upload.bin')})`);
    expect(await readFile(file)).toEqual(CONTENT);
  });

  // campaign-al AL1: the real answer right after a head the client refuses or reads past.
  const THREAT_ANSWER = `ICAP/1.0 200 OK\r\nISTag: "x1"\r\n${INFECTED}Encapsulated: null-body=0\r\n\r\n`;
  for (const [name, first, args] of [
    ['a 100 Continue without a preview', 'ICAP/1.0 100 Continue\r\n\r\n', []],
    ['a 204 --no-204 did not offer', NO_BODY, ['--no-204']],
    ['an unknown status (999)', 'ICAP/1.0 999 What\r\nISTag: "x1"\r\nEncapsulated: null-body=0\r\n\r\n', []],
  ] as const) {
    it(`a threat answer in the same write after ${name}`, async () => {
      expectBlocked(await scan((r) => r.sock.write(first + THREAT_ANSWER), {}, [...args]));
    });
  }

  it('a threat in the 100 Continue, then a 204', async () => {
    const o = await scan((r) => r.sock.write(NO_BODY), {
      optionsHeaders: 'Preview: 4\r\n',
      continueHead: `ICAP/1.0 100 Continue\r\n${INFECTED}\r\n`,
    });
    expectBlocked(o);
  });

  it('a threat in the trailer of an echo', async () => {
    const o = await scan((r) => r.sock.write(returned(r, r.body, '', INFECTED)));
    expectBlocked(o);
  });

  it('a threat in the trailer of a modified body (no temp file left)', async () => {
    const out = join(dir, 'trailer-out');
    const o = await scan(
      (r) => r.sock.write(returned(r, Buffer.from('rewritten'), '', 'X-Virus-ID: Named.Threat\r\n')),
      {},
      ['--output-dir', out],
    );
    expectBlocked(o);
    expect(o.output).toBeNull();
    expect(await readdir(out)).toEqual([]);
  });

  it('a threat in the trailer of a clean 200 (X-Response-Info: Allowed) with a body', async () => {
    const o = await scan((r) =>
      r.sock.write(
        `ICAP/1.0 200 OK\r\nISTag: "x1"\r\nX-Response-Info: Allowed\r\nEncapsulated: req-body=0\r\n\r\n` +
          `${chunked(Buffer.from('note'))}0\r\n${INFECTED}\r\n`,
      ),
    );
    expectBlocked(o);
  });

  it('a 204, then a second answer naming a threat in the same write', async () => {
    const o = await scan((r) =>
      r.sock.write(`${NO_BODY}ICAP/1.0 200 OK\r\n${INFECTED}Encapsulated: null-body=0\r\n\r\n`),
    );
    expectBlocked(o);
  });

  it('a threat in the head of an answer whose Encapsulated field is broken', async () => {
    const o = await scan((r) =>
      r.sock.write(
        `ICAP/1.0 200 OK\r\nISTag: "x1"\r\nX-Virus-ID: Named.Threat\r\nEncapsulated: bogus\r\n\r\n`,
      ),
    );
    expectBlocked(o);
  });

  it('a threat in a head cut off by the server closing (no blank line)', async () => {
    const o = await scan((r) => r.sock.end('ICAP/1.0 200 OK\r\nISTag: "x1"\r\nX-Virus-ID: Named.Threat\r\n'));
    expectBlocked(o);
  });

  it('a threat in the head of an answer whose block page breaks off (reset)', async () => {
    const o = await scan((r) =>
      r.sock.write(
        `ICAP/1.0 200 OK\r\nISTag: "x1"\r\n${INFECTED}Encapsulated: res-hdr=0, res-body=19\r\n\r\nHTTP/1.1 403 X\r\n\r\n10\r\nabc`,
        () => r.sock.resetAndDestroy(),
      ),
    );
    expectBlocked(o);
  });

  it('an unscannable file (500 with X-Error-Code: password_protected)', async () => {
    const o = await scan((r) =>
      r.sock.write(
        'ICAP/1.0 500 Server Error\r\nISTag: "x1"\r\nX-Error-Code: password_protected\r\nEncapsulated: null-body=0\r\n\r\n',
      ),
    );
    expectBlocked(o, null);
    expect(o.text).toContain('reason=unscannable (');
  });
});

describe("scan: an answer the server sends after its first never becomes another file's verdict", () => {
  /** Two files (the second EICAR-named), one at a time: each on a connection of its own. */
  async function twoFiles(answer: (r: Req, index: number) => void) {
    const second = join(dir, 'second.com');
    await writeFile(second, 'second file');
    let n = 0;
    const server = await scripted((r) => answer(r, n++));
    try {
      const out = await run([
        'scan',
        file,
        second,
        '--server',
        `${server.url}/avscan`,
        '--concurrency',
        '1',
        '--json',
      ]);
      const lines = out.stdout
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as { verdict: string; threat: string | null });
      return {
        code: out.code,
        verdicts: lines.map((l) => l.verdict),
        reqmods: server.requests.filter((q) => q.method === 'REQMOD').length,
      };
    } finally {
      await server.close();
    }
  }

  it('a 204 sent twice (the second in a later write): the next file still gets its own answer (a block)', async () => {
    const o = await twoFiles((r, i) => {
      if (i === 0) {
        r.sock.write(NO_BODY);
        setTimeout(() => r.sock.writable && r.sock.write(NO_BODY), 20);
      }
      // The second file's own answer comes after the stray one would have.
      else
        setTimeout(
          () =>
            r.sock.writable &&
            r.sock.write(`ICAP/1.0 200 OK\r\nISTag: "x1"\r\n${INFECTED}Encapsulated: null-body=0\r\n\r\n`),
          150,
        );
    });
    expect(o).toEqual({ code: 1, verdicts: ['clean', 'blocked'], reqmods: 2 });
  });

  it('a block sent after a 204 (in a later write) does not land on the next file', async () => {
    const o = await twoFiles((r, i) => {
      if (i === 1) {
        setTimeout(() => r.sock.writable && r.sock.write(NO_BODY), 150);
        return;
      }
      r.sock.write(NO_BODY);
      if (i === 0)
        setTimeout(
          () =>
            r.sock.writable &&
            r.sock.write(`ICAP/1.0 200 OK\r\n${INFECTED}Encapsulated: null-body=0\r\n\r\n`),
          20,
        );
    });
    expect(o).toEqual({ code: 0, verdicts: ['clean', 'clean'], reqmods: 2 });
  });
});

describe('scan: the controls', () => {
  it('a bare 204: CLEAN, exit 0', async () => {
    const o = await scan((r) => r.sock.write(NO_BODY));
    expect({ code: o.code, verdict: o.verdict }).toEqual({ code: 0, verdict: 'clean' });
  });

  it('an echo without a threat: CLEAN, exit 0', async () => {
    const o = await scan((r) => r.sock.write(returned(r, r.body)));
    expect({ code: o.code, verdict: o.verdict }).toEqual({ code: 0, verdict: 'clean' });
  });

  it('a modification without a threat (CDR): MODIFIED, exit 0', async () => {
    const o = await scan((r) => r.sock.write(returned(r, Buffer.from('sanitised'))));
    expect({ code: o.code, verdict: o.verdict, size: o.modifiedSize }).toEqual({
      code: 0,
      verdict: 'modified',
      size: 9,
    });
  });

  it('a 100 Continue without a threat, then a 204: CLEAN', async () => {
    const o = await scan((r) => r.sock.write(NO_BODY), { optionsHeaders: 'Preview: 4\r\n' });
    expect({ code: o.code, verdict: o.verdict }).toEqual({ code: 0, verdict: 'clean' });
  });

  it('a 500 without a threat: ERROR, exit 2', async () => {
    const o = await scan((r) =>
      r.sock.write('ICAP/1.0 500 Server Error\r\nISTag: "x1"\r\nEncapsulated: null-body=0\r\n\r\n'),
    );
    expect({ code: o.code, verdict: o.verdict }).toEqual({ code: 2, verdict: 'error' });
  });

  it('a clean 200 whose body breaks off: ERROR, exit 2 (no verdict), never CLEAN', async () => {
    const o = await scan((r) =>
      r.sock.write(
        'ICAP/1.0 200 OK\r\nISTag: "x1"\r\nX-Response-Info: Allowed\r\nEncapsulated: req-body=0\r\n\r\n10\r\nabc',
        () => r.sock.resetAndDestroy(),
      ),
    );
    expect({ code: o.code, verdict: o.verdict }).toEqual({ code: 2, verdict: 'error' });
  });
});
