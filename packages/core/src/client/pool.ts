import { IcapError, IcapErrorCodes } from '../errors.js';
import { Connection, type ServerEndpoint, type SocketOwner } from './connection.js';
import { actAfterReading } from './deadline.js';

export interface PoolOptions {
  /** Most connections open at once to this server (further requests wait). */
  maxConnections: number;
  /** An idle connection is closed after this many ms. */
  keepAliveTimeout: number;
  connectTimeout: number;
  /**
   * ms a request may wait for a connection while all of them are busy (at the limit); then it
   * is rejected with ICAP_ERR_SATURATED. Default: no limit.
   */
  queueTimeout?: number | undefined;
}

export interface PoolStats {
  /** Connections open now (busy + idle). */
  open: number;
  busy: number;
  idle: number;
  /** Connections being established. */
  connecting: number;
  /** Requests waiting for a connection. */
  pending: number;
  /** Connections created since the pool started. */
  created: number;
  /** The limit in force: the configured one or the server's `Max-Connections`, whichever is lower. */
  limit: number;
}

export interface Lease {
  connection: Connection;
  /** True when the connection already served a transaction (it may have gone stale). */
  reused: boolean;
}

interface Waiter {
  resolve: (lease: Lease) => void;
  reject: (err: unknown) => void;
  signal: AbortSignal | undefined;
  onAbort: () => void;
  fresh: boolean;
  /** Bounds the wait in the queue (queueTimeout). */
  timer: NodeJS.Timeout | undefined;
}

/**
 * Keep-alive connections to one ICAP server. One transaction per connection at a time (ICAP
 * has no pipelining); the most recently used idle connection is handed out first, so the
 * others age out. Idle sockets are unreferenced (they never keep the process alive), watched
 * for the server closing them, and closed after `keepAliveTimeout`.
 */
export class Pool {
  readonly endpoint: ServerEndpoint;
  readonly #options: PoolOptions;
  readonly #idle: Connection[] = [];
  readonly #busy = new Set<Connection>();
  readonly #waiters: Waiter[] = [];
  /** The pool's watch over each idle connection (made once per connection, kept while it lives). */
  readonly #idleOwners = new WeakMap<Connection, SocketOwner>();
  #connecting = 0;
  #created = 0;
  #serverLimit = Number.POSITIVE_INFINITY;
  #closed = false;
  /** Called with each new connection (for metrics and diagnostics). */
  onConnect: ((connection: Connection) => void) | undefined;

  constructor(endpoint: ServerEndpoint, options: PoolOptions) {
    this.endpoint = endpoint;
    this.#options = options;
  }

  get limit(): number {
    return Math.max(1, Math.min(this.#options.maxConnections, this.#serverLimit));
  }

  /** Applies the server's `Max-Connections` (from OPTIONS). */
  setServerLimit(max: number | undefined): void {
    this.#serverLimit = max === undefined || !(max > 0) ? Number.POSITIVE_INFINITY : max;
  }

  get stats(): PoolStats {
    return {
      open: this.#busy.size + this.#idle.length,
      busy: this.#busy.size,
      idle: this.#idle.length,
      connecting: this.#connecting,
      pending: this.#waiters.length,
      created: this.#created,
      limit: this.limit,
    };
  }

  /**
   * A connection for one transaction. `fresh` skips idle connections (used to retry after a
   * stale keep-alive connection failed). `queueTimeout` overrides the pool's for this wait
   * (`Infinity`: no limit).
   */
  acquire(signal?: AbortSignal, fresh = false, queueTimeout = this.#options.queueTimeout): Promise<Lease> {
    if (this.#closed) return Promise.reject(closedError());
    if (signal?.aborted) return Promise.reject(signal.reason);
    if (!fresh) {
      const lease = this.#takeIdle();
      if (lease !== undefined) return Promise.resolve(lease);
    }
    return new Promise<Lease>((resolve, reject) => {
      const waiter: Waiter = {
        resolve,
        reject,
        signal,
        fresh,
        timer: undefined,
        onAbort: () => {
          const at = this.#waiters.indexOf(waiter);
          if (at !== -1) this.#waiters.splice(at, 1);
          if (waiter.timer !== undefined) clearTimeout(waiter.timer);
          reject(signal!.reason);
        },
      };
      signal?.addEventListener('abort', waiter.onAbort, { once: true });
      this.#waiters.push(waiter);
      this.#dispatch();
      const wait = queueTimeout;
      if (wait !== undefined && Number.isFinite(wait) && this.#waiters.includes(waiter)) {
        // Still queued: every connection is busy. The wait is bounded, so the caller can go elsewhere.
        const timedOut = () => {
          const at = this.#waiters.indexOf(waiter);
          if (at === -1) return;
          this.#waiters.splice(at, 1);
          signal?.removeEventListener('abort', waiter.onAbort);
          reject(
            new IcapError(
              IcapErrorCodes.SATURATED,
              `all ${this.limit} connections to ICAP server ${this.endpoint.host}:${this.endpoint.port} stayed busy for queueTimeout (${wait} ms)`,
            ),
          );
        };
        // A connection freed by an answer read late (a stalled process) is taken (campaign-bd BD5).
        const served = () => !this.#waiters.includes(waiter);
        waiter.timer = setTimeout(
          () => actAfterReading(wait, served, timedOut, () => this.#busyRead()),
          wait,
        );
      }
    });
  }

  /** Bytes the busy connections have read: the answers that will free them, while they come. */
  #busyRead(): number {
    let n = 0;
    for (const c of this.#busy) n += c.socket.bytesRead;
    return n;
  }

  /**
   * The lease acquire() would resolve with at once (an idle connection, not `fresh`), without
   * the promise; undefined when it would not (none idle, the pool closed, the signal aborted):
   * then acquire() waits, or says why not.
   */
  takeIdleNow(signal: AbortSignal | undefined): Lease | undefined {
    if (this.#closed || signal?.aborted) return undefined;
    return this.#takeIdle();
  }

  /** Returns a connection after a transaction; `reusable` false closes it. */
  release(connection: Connection, reusable: boolean): void {
    if (!this.#busy.delete(connection)) return;
    if (reusable && !this.#closed && connection.usable && this.#busy.size + this.#idle.length < this.limit) {
      connection.requests++;
      const waiter = this.#nextWaiter(false);
      if (waiter !== undefined) {
        this.#busy.add(connection);
        waiter.resolve({ connection, reused: true });
      } else {
        this.#park(connection);
      }
    } else {
      connection.destroy();
    }
    this.#dispatch();
  }

  /** Closes idle connections now, fails waiting requests; busy ones close when released. */
  close(): void {
    this.#closed = true;
    for (const c of this.#idle.splice(0)) this.#unpark(c, true);
    for (const w of this.#waiters.splice(0)) {
      w.signal?.removeEventListener('abort', w.onAbort);
      if (w.timer !== undefined) clearTimeout(w.timer);
      w.reject(closedError());
    }
  }

  /** Destroys every connection, busy ones included. */
  destroy(): void {
    this.close();
    for (const c of this.#busy) c.destroy();
    this.#busy.clear();
  }

  /**
   * The connection idle longest first: ICAP answers carry no request id, so an answer a server
   * sends late (a second one after a clean 204) is only told apart while its connection is idle
   * (any byte then closes it); the longest idle has had the most time to show one.
   */
  #takeIdle(): Lease | undefined {
    while (this.#idle.length > 0) {
      const c = this.#idle.shift()!;
      this.#unpark(c, false);
      if (c.usable) {
        this.#busy.add(c);
        return { connection: c, reused: true };
      }
      c.destroy();
    }
    return undefined;
  }

  #nextWaiter(fresh: boolean): Waiter | undefined {
    const at = this.#waiters.findIndex((w) => w.fresh === fresh);
    if (at === -1) return undefined;
    const [w] = this.#waiters.splice(at, 1);
    w!.signal?.removeEventListener('abort', w!.onAbort);
    if (w!.timer !== undefined) clearTimeout(w!.timer);
    return w;
  }

  /** Starts connections for waiting requests while under the limit. */
  #dispatch(): void {
    while (this.#waiters.length > 0 && !this.#closed) {
      const first = this.#waiters[0]!;
      if (!first.fresh && this.#idle.length > 0) {
        const lease = this.#takeIdle();
        if (lease !== undefined) {
          this.#nextWaiter(false)!.resolve(lease);
          continue;
        }
      }
      // Over the limit, an idle connection is closed to make room for a new one.
      if (this.#busy.size + this.#connecting + this.#idle.length >= this.limit && this.#idle.length > 0) {
        this.#unpark(this.#idle.shift()!, true);
      }
      if (this.#busy.size + this.#connecting >= this.limit) return;
      const waiter = this.#waiters.shift()!;
      waiter.signal?.removeEventListener('abort', waiter.onAbort);
      if (waiter.timer !== undefined) clearTimeout(waiter.timer);
      this.#connect(waiter);
    }
  }

  #connect(waiter: Waiter): void {
    this.#connecting++;
    Connection.open(this.endpoint, this.#options.connectTimeout, waiter.signal).then(
      (connection) => {
        this.#connecting--;
        this.#created++;
        if (this.#closed || waiter.signal?.aborted) {
          connection.destroy();
          waiter.reject(waiter.signal?.aborted ? waiter.signal.reason : closedError());
          this.#dispatch();
          return;
        }
        this.#busy.add(connection);
        this.onConnect?.(connection);
        waiter.resolve({ connection, reused: false });
      },
      (err: unknown) => {
        this.#connecting--;
        waiter.reject(err);
        this.#dispatch();
      },
    );
  }

  #park(c: Connection): void {
    const socket = c.socket;
    let owner = this.#idleOwners.get(c);
    if (owner === undefined) {
      const drop = () => {
        const at = this.#idle.indexOf(c);
        if (at !== -1) this.#idle.splice(at, 1);
        this.#unpark(c, true);
      };
      // Any byte from the server while idle is a protocol violation; a close or error means
      // the server ended the keep-alive connection.
      owner = {
        socketData: drop,
        socketEnd: drop,
        socketClose: drop,
        socketError: drop,
        socketTimeout: drop,
      };
      this.#idleOwners.set(c, owner);
    }
    c.setOwner(owner);
    socket.setTimeout(this.#options.keepAliveTimeout);
    socket.unref();
    socket.resume();
    this.#idle.push(c);
  }

  #unpark(c: Connection, destroy: boolean): void {
    const owner = this.#idleOwners.get(c);
    if (owner !== undefined && c.owner === owner) {
      c.setOwner(null);
      // keepAliveTimeout's timer stays armed (see Transaction's cleanup): destroyed next, or
      // replaced by the transaction's ioTimeout; a 'timeout' before then reaches no owner.
      c.socket.ref();
    }
    if (destroy) c.destroy();
  }
}

function closedError(): IcapError {
  return new IcapError(IcapErrorCodes.CLOSED_CLIENT, 'the ICAP client was closed');
}
