import { unlinkSync } from 'node:fs';

/** The temp files of --output-dir being written or not yet renamed: removed on SIGINT/SIGTERM. */
export const tempFiles = new Set<string>();

/** Removes every temp file in flight, synchronously (from a signal handler, before exiting). */
export function removeTempFiles(): void {
  for (const tmp of tempFiles) {
    try {
      unlinkSync(tmp);
    } catch {
      // Gone already, or never created.
    }
  }
  tempFiles.clear();
}
