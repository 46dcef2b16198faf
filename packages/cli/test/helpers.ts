import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';
import { main } from '@icapkit/cli';

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the command in-process with string collectors for stdout and stderr. */
export async function run(
  argv: string[],
  opts: { tty?: boolean; env?: Record<string, string | undefined> } = {},
): Promise<RunResult> {
  let stdout = '';
  let stderr = '';
  const code = await main(argv, {
    stdout: {
      write: (s: string) => {
        stdout += s;
        return true;
      },
    },
    stderr: {
      write: (s: string) => {
        stderr += s;
        return true;
      },
      isTTY: opts.tty ?? false,
      columns: 200,
    },
    env: opts.env ?? {},
  });
  return { code, stdout, stderr };
}

/** Text bytes (a-z repeated), deterministic. */
export function text(n: number, offset = 0): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = 0x61 + ((i + offset) % 26);
  return b;
}

/** Writes a file of `size` bytes 1 MiB at a time; returns its sha256. */
export async function writeBigFile(path: string, size: number): Promise<string> {
  const fh = await open(path, 'w');
  const hash = createHash('sha256');
  try {
    const block = text(1024 * 1024);
    let left = size;
    while (left > 0) {
      const part = left >= block.length ? block : block.subarray(0, left);
      await fh.write(part);
      hash.update(part);
      left -= part.length;
    }
  } finally {
    await fh.close();
  }
  return hash.digest('hex');
}
