/**
 * A disposed body leaves no temp file behind by the time the request is answered: the file's
 * name is removed synchronously by dispose() once the file exists (a write still under way goes
 * to the nameless file), and as soon as it is created otherwise.
 */
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openSpoolFiles } from '@icapkit/core';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BodyStore } from '../../packages/core/src/engine/body.js';
import { leftoverSpoolFiles } from '../support/leaks.js';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'icapkit-spool-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function until(condition: () => boolean, withinMs = 5000): Promise<boolean> {
  const deadline = Date.now() + withinMs;
  while (!condition() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  return condition();
}

describe('spool file removal', () => {
  it('dispose() removes an existing temp file before it returns, writes still pending', async () => {
    const store = new BodyStore({ limit: 1 << 30, retainAll: true, memoryThreshold: 0, spoolDir: dir });
    store.push(Buffer.alloc(64 * 1024, 1));
    const path = store.spoolPath!;
    expect(await until(() => existsSync(path))).toBe(true);
    // More writes queued behind the open file, then disposed at once.
    for (let i = 0; i < 16; i++) store.push(Buffer.alloc(64 * 1024, 2));
    store.dispose();
    expect(existsSync(path)).toBe(false);
    expect(openSpoolFiles()).not.toContain(path);
    expect(await readdir(dir)).toEqual([]);
  });

  it('a body disposed before its temp file exists: the file goes once it is created', async () => {
    const store = new BodyStore({ limit: 1 << 30, retainAll: true, memoryThreshold: 0, spoolDir: dir });
    store.push(Buffer.alloc(1024, 1));
    store.dispose();
    expect(await leftoverSpoolFiles(dir)).toEqual([]);
  });
});
