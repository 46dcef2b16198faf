import { renderText } from './text.js';

/** Where the command writes: process.stdout/stderr in the bin, string collectors in tests. */
export interface CliStream {
  write(chunk: string): unknown;
  /** A terminal: progress is shown on stderr only then. */
  isTTY?: boolean | undefined;
  /** Terminal width, to keep the progress line on one line. */
  columns?: number | undefined;
}

export interface CliIo {
  stdout: CliStream;
  stderr: CliStream;
  env: Readonly<Record<string, string | undefined>>;
}

const MIB = 1024 * 1024;

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < MIB) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1024 * MIB) return `${(n / MIB).toFixed(1)} MiB`;
  return `${(n / (1024 * MIB)).toFixed(2)} GiB`;
}

export interface ProgressTracker {
  /** n more bytes were sent. */
  add(n: number): void;
  /** The body is sent again from its first byte (a retry on a fresh connection). */
  restart(): void;
  end(): void;
}

interface Transfer {
  name: string;
  sent: number;
  total: number;
}

/**
 * One status line on stderr (a terminal) for the large files being sent: `bytes sent / total`
 * for each, redrawn at most every `intervalMs`. It is wiped before any other output is written
 * and drawn again on the next update.
 */
export class Progress {
  readonly #stream: CliStream;
  readonly #enabled: boolean;
  readonly #minSize: number;
  readonly #intervalMs: number;
  readonly #active = new Set<Transfer>();
  #shown = false;
  #lastDraw = 0;

  constructor(stream: CliStream, enabled: boolean, options: { minSize?: number; intervalMs?: number } = {}) {
    this.#stream = stream;
    this.#enabled = enabled;
    this.#minSize = options.minSize ?? 4 * MIB;
    this.#intervalMs = options.intervalMs ?? 200;
  }

  /** Starts tracking a file; returns the callback for bytes sent, or undefined when not shown. */
  track(name: string, total: number): ProgressTracker | undefined {
    if (!this.#enabled || total < this.#minSize) return undefined;
    const t: Transfer = { name, sent: 0, total };
    this.#active.add(t);
    return {
      add: (n: number) => {
        t.sent = Math.min(t.total, t.sent + n);
        this.#update(false);
      },
      restart: () => {
        t.sent = 0;
      },
      end: () => {
        if (!this.#active.delete(t)) return;
        if (this.#active.size === 0) this.clear();
        else this.#update(true);
      },
    };
  }

  /** Wipes the status line (before other output). */
  clear(): void {
    if (!this.#shown) return;
    this.#stream.write('\r\x1b[K');
    this.#shown = false;
  }

  #update(force: boolean): void {
    const now = performance.now();
    if (!force && this.#shown && now - this.#lastDraw < this.#intervalMs) return;
    if (!force && !this.#shown && this.#lastDraw !== 0 && now - this.#lastDraw < this.#intervalMs) return;
    this.#lastDraw = now;
    const parts: string[] = [];
    for (const t of this.#active) {
      const pct = t.total === 0 ? 100 : Math.floor((t.sent / t.total) * 100);
      parts.push(`${renderText(t.name)} ${formatBytes(t.sent)} / ${formatBytes(t.total)} (${pct}%)`);
    }
    if (parts.length === 0) return;
    let line = `sending ${parts.join(', ')}`;
    const width = (this.#stream.columns ?? 80) - 1;
    if (width > 10 && line.length > width) line = `${line.slice(0, width - 1)}…`;
    this.#stream.write(`\r\x1b[K${line}`);
    this.#shown = true;
  }
}
