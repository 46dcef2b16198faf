/** The request bodies, written once to a temp folder (wrk and autocannon read them from files). */
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export type BodyId = '10k' | '1m' | '32m' | 'mp5';

export interface Body {
  id: BodyId;
  label: string;
  file: string;
  size: number;
  contentType: string;
  sha1: string;
}

const KiB = 1024;
const MiB = 1024 * KiB;
/** Each file of the multipart body. */
export const MULTIPART_FILE_SIZE = 200 * KiB;
export const MULTIPART_FILES = 5;

export function multipart(files: Buffer[], boundary: string): Buffer {
  const parts: Buffer[] = [];
  parts.push(
    Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="title"\r\n\r\nbench upload\r\n`),
  );
  files.forEach((f, i) => {
    parts.push(
      Buffer.from(
        `--${boundary}\r\nContent-Disposition: form-data; name="file${i + 1}"; filename="doc${i + 1}.bin"\r\n` +
          'Content-Type: application/octet-stream\r\n\r\n',
      ),
      f,
      Buffer.from('\r\n'),
    );
  });
  parts.push(Buffer.from(`--${boundary}--\r\n`));
  return Buffer.concat(parts);
}

export async function makeBodies(
  ids: readonly BodyId[],
): Promise<{ dir: string; bodies: Map<BodyId, Body> }> {
  const dir = await mkdtemp(join(tmpdir(), 'icapkit-bench-bodies-'));
  const bodies = new Map<BodyId, Body>();
  for (const id of ids) {
    let data: Buffer;
    let contentType = 'application/octet-stream';
    let label: string;
    if (id === 'mp5') {
      const boundary = '----icapkitbench7MA4YWxkTrZu0gW';
      data = multipart(
        Array.from({ length: MULTIPART_FILES }, () => randomBytes(MULTIPART_FILE_SIZE)),
        boundary,
      );
      contentType = `multipart/form-data; boundary=${boundary}`;
      label = `multipart ${MULTIPART_FILES}x${MULTIPART_FILE_SIZE / KiB} KiB`;
    } else {
      const size = id === '10k' ? 10 * KiB : id === '1m' ? MiB : 32 * MiB;
      data = randomBytes(size);
      label = id === '10k' ? '10 KiB' : id === '1m' ? '1 MiB' : '32 MiB';
    }
    const file = join(dir, `${id}.bin`);
    await writeFile(file, data);
    bodies.set(id, {
      id,
      label,
      file,
      size: data.length,
      contentType,
      sha1: createHash('sha1').update(data).digest('hex'),
    });
  }
  return { dir, bodies };
}
