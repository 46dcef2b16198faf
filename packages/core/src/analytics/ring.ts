import type { IcapLog } from '../engine/log.js';
import { IcapError, IcapErrorCodes } from '../errors.js';
import { ANALYTICS_DIMENSIONS, type Dimension, logValues } from './values.js';

/**
 * A bounded in-memory ring of the most recent `icap_log` records, for the log analytics page.
 *
 * Each record is copied when it is stored (later changes to the original do not show) and
 * cut to fit: every string at most `maxStringLength` characters (ICAP header blocks, error
 * messages, file names), every list at most `maxListLength` items, and the whole record at most
 * `maxRecordLength` characters of strings plus a small fixed cost per value. So the ring never
 * holds more than about `capacity × maxRecordLength` characters, whatever the records contain;
 * a record that was cut is marked `truncated`. Every string is a fresh copy: a string cut from a
 * larger one (a file name from a part's header line) would otherwise keep its whole parent.
 *
 * What the page counts and filters on (the record's values per dimension: its threats, files,
 * servers...) is read from the whole record when it is stored, before the rest is copied, so a
 * record cut to fit still counts the threat that blocked it however long its list of entries.
 */

export interface LogRingOptions {
  /** Records kept; the oldest is dropped when a new one arrives. Default 1000 (1-100000). */
  capacity?: number | undefined;
  /** Longest string kept in a record, in characters; longer ones are cut. Default 4096 (64-1048576). */
  maxStringLength?: number | undefined;
  /** Most items kept of a list in a record (request_logs, violations, file_names). Default 50 (1-10000). */
  maxListLength?: number | undefined;
  /** Size budget of one record, in characters (strings, plus 16 per value). Default 16384 (1024-16777216). */
  maxRecordLength?: number | undefined;
}

export interface StoredLog {
  /** Sequence number, from 1, unique within the ring. */
  id: number;
  /** Some string, list or value of the record was cut to fit the limits. */
  truncated: boolean;
  /** The (bounded) copy of the record. */
  log: IcapLog;
  /**
   * The record's values per dimension (aggregate.ts `logValues`), read from the whole record
   * when it was stored, each list and value bounded as the copy's are.
   */
  values: Record<Dimension, string[]>;
}

export const LOG_RING_DEFAULTS = {
  capacity: 1000,
  maxStringLength: 4096,
  maxListLength: 50,
  maxRecordLength: 16_384,
} as const;

/** Cost of one value besides its characters, so many tiny values also exhaust the budget. */
const VALUE_COST = 16;
/** Deepest nesting kept (an icap_log is 5 deep: record, request_logs, entry, opswat_log, violations). */
const MAX_DEPTH = 8;
/** Most fields kept of one object (a record has about 25). */
const MAX_KEYS = 64;
/** Appended to a string that was cut. */
export const TRUNCATION_MARK = '…[truncated]';

export class LogRing {
  readonly capacity: number;
  readonly maxStringLength: number;
  readonly maxListLength: number;
  readonly maxRecordLength: number;
  readonly #slots: Array<StoredLog | undefined>;
  /** Index of the slot the next record goes to. */
  #next = 0;
  #size = 0;
  #lastId = 0;

  constructor(options: LogRingOptions = {}) {
    this.capacity = intOption(options.capacity, 'capacity', LOG_RING_DEFAULTS.capacity, 1, 100_000);
    this.maxStringLength = intOption(
      options.maxStringLength,
      'maxStringLength',
      LOG_RING_DEFAULTS.maxStringLength,
      64,
      1_048_576,
    );
    this.maxListLength = intOption(
      options.maxListLength,
      'maxListLength',
      LOG_RING_DEFAULTS.maxListLength,
      1,
      10_000,
    );
    this.maxRecordLength = intOption(
      options.maxRecordLength,
      'maxRecordLength',
      LOG_RING_DEFAULTS.maxRecordLength,
      1024,
      16_777_216,
    );
    this.#slots = new Array<StoredLog | undefined>(this.capacity).fill(undefined);
  }

  /** Records held now (at most `capacity`). */
  get size(): number {
    return this.#size;
  }

  /** Stores a bounded copy of the record, dropping the oldest when full. Returns the stored entry. */
  push(log: Readonly<IcapLog>): StoredLog {
    const cut = { truncated: false };
    // The values first, from at most half of the budget; the copy has the rest.
    const half = Math.floor(this.maxRecordLength / 2);
    const valueBudget = { left: half };
    const values = {} as Record<Dimension, string[]>;
    for (const d of ANALYTICS_DIMENSIONS)
      values[d] = this.#copy(logValues(log, d), 1, valueBudget, cut) as string[];
    const budget = { left: this.maxRecordLength - (half - Math.max(0, valueBudget.left)) };
    const copy = this.#copy(log, 0, budget, cut);
    // Fresh, flat strings (see above): what is kept is bounded, and so is what it holds on to.
    const fresh = JSON.parse(JSON.stringify({ values, copy })) as { values: typeof values; copy: IcapLog };
    const stored: StoredLog = {
      id: ++this.#lastId,
      truncated: cut.truncated,
      log: fresh.copy,
      values: fresh.values,
    };
    this.#slots[this.#next] = stored;
    this.#next = (this.#next + 1) % this.capacity;
    if (this.#size < this.capacity) this.#size++;
    return stored;
  }

  /** The records held, newest first. */
  records(): StoredLog[] {
    const out: StoredLog[] = [];
    for (let i = 1; i <= this.#size; i++) {
      const s = this.#slots[(this.#next - i + this.capacity) % this.capacity];
      if (s !== undefined) out.push(s);
    }
    return out;
  }

  /** The record with this id, while it is still held. */
  get(id: number): StoredLog | undefined {
    if (!Number.isSafeInteger(id) || id < 1 || id > this.#lastId || id <= this.#lastId - this.#size) {
      return undefined;
    }
    // The newest (#lastId) is in the slot before #next; ids are consecutive backwards from there.
    const s = this.#slots[(this.#next - 1 - (this.#lastId - id) + this.capacity * 2) % this.capacity];
    return s?.id === id ? s : undefined;
  }

  /** Forgets every record (ids keep counting). */
  clear(): void {
    this.#slots.fill(undefined);
    this.#size = 0;
    this.#next = 0;
  }

  /** A copy of `value` within the limits: strings cut, lists shortened, the budget spent in order. */
  #copy(value: unknown, depth: number, budget: { left: number }, cut: { truncated: boolean }): unknown {
    budget.left -= VALUE_COST;
    if (typeof value === 'string') return this.#cutString(value, budget, cut);
    if (typeof value === 'number' || typeof value === 'boolean' || value === null) return value;
    if (typeof value !== 'object' || depth >= MAX_DEPTH) {
      cut.truncated = true;
      return null;
    }
    if (Array.isArray(value)) {
      const out: unknown[] = [];
      for (const item of value) {
        if (out.length >= this.maxListLength || budget.left <= 0) {
          cut.truncated = true;
          break;
        }
        const c = this.#copy(item, depth + 1, budget, cut);
        if (c !== undefined) out.push(c);
      }
      return out;
    }
    // Plain values first, then nested ones: a record's own fields (path, action, error) are
    // never pushed out by a long list of ICAP entries. Key order stays the original one.
    const entries = Object.entries(value as Record<string, unknown>).filter(([, v]) => v !== undefined);
    const copied = new Map<string, unknown>();
    for (const pass of [false, true]) {
      for (const [k, v] of entries) {
        const nested = typeof v === 'object' && v !== null;
        if (nested !== pass) continue;
        if (budget.left <= 0 || copied.size >= MAX_KEYS) {
          cut.truncated = true;
          continue;
        }
        budget.left -= k.length;
        copied.set(k, this.#copy(v, depth + 1, budget, cut));
      }
    }
    const out: Record<string, unknown> = {};
    for (const [k] of entries) if (copied.has(k)) out[k] = copied.get(k);
    return out;
  }

  #cutString(s: string, budget: { left: number }, cut: { truncated: boolean }): string {
    const limit = Math.max(0, Math.min(this.maxStringLength, budget.left));
    if (s.length <= limit) {
      budget.left -= s.length;
      return s;
    }
    cut.truncated = true;
    let end = limit;
    // Do not leave half of a surrogate pair at the end.
    const last = s.charCodeAt(end - 1);
    if (end > 0 && last >= 0xd800 && last <= 0xdbff) end--;
    budget.left -= end;
    return s.slice(0, end) + TRUNCATION_MARK;
  }
}

function intOption(v: number | undefined, name: string, def: number, min: number, max: number): number {
  if (v === undefined) return def;
  if (!Number.isInteger(v) || v < min || v > max) {
    throw new IcapError(
      IcapErrorCodes.INVALID_ARGUMENT,
      `log analytics option ${name} must be an integer from ${min} to ${max} (got ${String(v)})`,
      { field: name },
    );
  }
  return v;
}
