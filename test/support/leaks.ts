/**
 * What a test leaves behind: handles (sockets, servers, timers) compared with a baseline taken
 * before the test, spool files, and MaxListenersExceeded warnings.
 */
import { readdir } from 'node:fs/promises';
import { Socket } from 'node:net';
import { openSpoolFiles } from '@icapkit/core';

/** Counts of active handles and requests by type (`process.getActiveResourcesInfo()`). */
export function activeResources(): Map<string, number> {
  const counts = new Map<string, number>();
  for (const r of process.getActiveResourcesInfo()) counts.set(r, (counts.get(r) ?? 0) + 1);
  return counts;
}

/**
 * Types whose count is above the baseline, as `type: before -> now` (sockets with their ports).
 * Server-side sockets of in-process test servers listening on `serverPorts` are not counted:
 * they are the peer's, not the code under test's.
 */
export function resourcesAbove(baseline: Map<string, number>, serverPorts: number[] = []): string[] {
  const above: string[] = [];
  const peers = openSockets().filter((s) => s.localPort !== undefined && serverPorts.includes(s.localPort));
  for (const [type, n] of activeResources()) {
    const before = baseline.get(type) ?? 0;
    const mine = type === 'TCPSocketWrap' ? n - peers.length : n;
    if (mine > before) above.push(`${type}: ${before} -> ${mine}`);
  }
  if (above.some((a) => a.startsWith('TCPSocketWrap'))) {
    for (const s of openSockets())
      if (s.localPort !== undefined) above.push(`socket ${s.localPort} -> ${s.remotePort}`);
  }
  return above;
}

function openSockets(): Socket[] {
  const handles = (process as unknown as { _getActiveHandles(): unknown[] })._getActiveHandles();
  return handles.filter((h): h is Socket => h instanceof Socket && !h.destroyed);
}

/** Waits (bounded) until no handle type is above the baseline; returns what is still above. */
export async function settleResources(
  baseline: Map<string, number>,
  options: { serverPorts?: number[]; withinMs?: number } = {},
): Promise<string[]> {
  const deadline = Date.now() + (options.withinMs ?? 2000);
  let above = resourcesAbove(baseline, options.serverPorts);
  while (above.length > 0 && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 25));
    above = resourcesAbove(baseline, options.serverPorts);
  }
  return above;
}

/** Files in a spool folder, plus spool files the engine still has open anywhere. */
async function spoolFilesNow(dir: string): Promise<string[]> {
  return [...(await readdir(dir)), ...openSpoolFiles()];
}

/**
 * Files left in a spool folder, plus spool files the engine still has open anywhere, after
 * waiting (bounded) for them to go: a body store removes its file when it is disposed, but one
 * whose creation is still under way (the fs thread pool is busy on a loaded machine) is removed
 * once it exists, a moment after the request's end.
 */
export async function leftoverSpoolFiles(
  dir: string,
  options: { withinMs?: number } = {},
): Promise<string[]> {
  const deadline = Date.now() + (options.withinMs ?? 2000);
  let left = await spoolFilesNow(dir);
  while (left.length > 0 && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 25));
    left = await spoolFilesNow(dir);
  }
  return left;
}

/** Collects MaxListenersExceededWarning while installed. */
export function listenerWarnings(): { warnings: string[]; stop(): void } {
  const warnings: string[] = [];
  const onWarning = (w: Error) => {
    if (w.name === 'MaxListenersExceededWarning') warnings.push(w.message);
  };
  process.on('warning', onWarning);
  return { warnings, stop: () => process.removeListener('warning', onWarning) };
}
