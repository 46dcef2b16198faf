import * as net from 'node:net';
import * as tls from 'node:tls';
import { fromSocketError, IcapError, IcapErrorCodes } from '../errors.js';
import { actAfterReading } from './deadline.js';

/** TLS settings for ICAPS, the usual Node TLS options. */
export interface IcapTlsOptions {
  ca?: string | Buffer | Array<string | Buffer> | undefined;
  cert?: string | Buffer | Array<string | Buffer> | undefined;
  key?: string | Buffer | Array<string | Buffer> | undefined;
  passphrase?: string | undefined;
  pfx?: string | Buffer | undefined;
  /** SNI name and the name the certificate is checked against; defaults to the host. */
  servername?: string | undefined;
  ciphers?: string | undefined;
  minVersion?: tls.SecureVersion | undefined;
  maxVersion?: tls.SecureVersion | undefined;
  /** Defaults to true. Turning it off accepts any certificate: for tests only. */
  rejectUnauthorized?: boolean | undefined;
  /**
   * Returns an Error to refuse the certificate (as Node's `tls.checkServerIdentity`); one that
   * throws refuses it too (ICAP_ERR_TLS), never ending the process.
   */
  checkServerIdentity?: ((host: string, cert: tls.PeerCertificate) => Error | undefined) | undefined;
}

/** Where one ICAP server listens. */
export interface ServerEndpoint {
  host: string;
  port: number;
  /** ICAPS: TLS from the first byte (RFC 3507 §4.3.1 upgrade is not used in the field). */
  tls?: IcapTlsOptions | false | undefined;
}

export function endpointLabel(e: ServerEndpoint): string {
  const host = e.host.includes(':') ? `[${e.host}]` : e.host;
  return `${e.tls ? 'icaps' : 'icap'}://${host}:${e.port}`;
}

let nextId = 1;

/**
 * Who reads a connection's socket events now: the transaction that borrowed it, or the pool
 * watching it idle. One set of socket listeners per connection forwards to it (not listeners
 * added and removed for every transaction and every idle spell).
 */
export interface SocketOwner {
  socketData(data: Buffer): void;
  socketEnd(): void;
  socketClose(): void;
  socketError(err: Error): void;
  socketTimeout(): void;
}

/** One socket to an ICAP server. Transactions borrow it from the pool one at a time. */
export class Connection {
  readonly id = nextId++;
  readonly socket: net.Socket;
  readonly label: string;
  /** Completed transactions on this connection. */
  requests = 0;
  readonly createdAt = Date.now();
  #owner: SocketOwner | null = null;
  #listening = false;

  private constructor(socket: net.Socket, label: string) {
    this.socket = socket;
    this.label = label;
  }

  get owner(): SocketOwner | null {
    return this.#owner;
  }

  /**
   * Hands the socket's events to `owner` (null: nobody; they are dropped, as they were with no
   * listener). The listeners go on at the first owner, so bytes that come before it wait in
   * the socket as they did.
   */
  setOwner(owner: SocketOwner | null): void {
    this.#owner = owner;
    if (owner === null || this.#listening) return;
    this.#listening = true;
    const s = this.socket;
    s.on('data', (data: Buffer) => this.#owner?.socketData(data));
    s.on('end', () => this.#owner?.socketEnd());
    s.on('error', (err: Error) => this.#owner?.socketError(err));
    s.on('close', () => this.#owner?.socketClose());
    s.on('timeout', () => this.#owner?.socketTimeout());
  }

  get remoteAddress(): string | undefined {
    return this.socket.remoteAddress;
  }
  get remotePort(): number | undefined {
    return this.socket.remotePort;
  }
  get localPort(): number | undefined {
    return this.socket.localPort;
  }

  /** Still usable: not destroyed, and neither side has half-closed it. */
  get usable(): boolean {
    const s = this.socket;
    return !s.destroyed && s.readable && s.writable && s.readyState === 'open';
  }

  destroy(): void {
    this.socket.destroy();
  }

  static open(endpoint: ServerEndpoint, connectTimeout: number, signal?: AbortSignal): Promise<Connection> {
    const label = endpointLabel(endpoint);
    return new Promise<Connection>((resolve, reject) => {
      if (signal?.aborted) {
        reject(signal.reason);
        return;
      }
      let socket: net.Socket;
      const tlsOpts = endpoint.tls;
      try {
        if (tlsOpts) {
          const servername = tlsOpts.servername ?? (net.isIP(endpoint.host) ? undefined : endpoint.host);
          const check = tlsOpts.checkServerIdentity;
          socket = tls.connect({
            host: endpoint.host,
            port: endpoint.port,
            ...stripUndefined(tlsOpts),
            ...(servername === undefined ? {} : { servername }),
            ...(check === undefined ? {} : { checkServerIdentity: guardedIdentityCheck(check) }),
          });
        } else {
          socket = net.connect({ host: endpoint.host, port: endpoint.port });
        }
      } catch (err) {
        reject(fromSocketError(err, 'connect', label));
        return;
      }
      // A connection made while the process stalled past the deadline is taken (campaign-bd BD4).
      let settled = false;
      const timer = setTimeout(() => {
        actAfterReading(
          connectTimeout,
          () => settled,
          () =>
            finish(
              new IcapError(
                IcapErrorCodes.CONNECT_TIMEOUT,
                `connecting to ICAP server ${label} took longer than ${connectTimeout} ms`,
              ),
            ),
        );
      }, connectTimeout);
      const onAbort = () => finish(signal!.reason);
      // With TLS, an error after the TCP connection is up is a TLS (handshake, certificate) error.
      let tcpUp = false;
      const onTcp = () => {
        tcpUp = true;
      };
      const onError = (err: Error) =>
        finish(
          tlsOpts && tcpUp && !(err instanceof IcapError)
            ? new IcapError(IcapErrorCodes.TLS, `TLS with ICAP server ${label} failed: ${err.message}`, {
                cause: err,
              })
            : fromSocketError(err, 'connect', label),
        );
      const onClose = () =>
        finish(
          new IcapError(IcapErrorCodes.CONNECT, `ICAP server ${label} closed the connection during connect`),
        );
      const onConnect = () => finish(null);
      const finish = (err: unknown) => {
        settled = true;
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        socket.removeListener('error', onError);
        socket.removeListener('close', onClose);
        socket.removeListener(tlsOpts ? 'secureConnect' : 'connect', onConnect);
        socket.removeListener('connect', onTcp);
        if (err !== null) {
          socket.destroy();
          reject(err);
          return;
        }
        socket.setNoDelay(true);
        socket.setKeepAlive(true, 30_000);
        // A safety net: an error that races with a listener being swapped (pool <-> transaction)
        // must never crash the process; the owners' own listeners act on it.
        socket.on('error', ignoreError);
        resolve(new Connection(socket, label));
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      socket.once('error', onError);
      socket.once('close', onClose);
      socket.once(tlsOpts ? 'secureConnect' : 'connect', onConnect);
      if (tlsOpts) socket.once('connect', onTcp);
    });
  }
}

function ignoreError(): void {}

/**
 * A `checkServerIdentity` of the user's, as Node may call it: Node calls it inside its TLS
 * socket's handshake callback, where a throw is uncaught and ends the process. A check that
 * throws (a certificate pin written with `throw`, a check tripping over an unexpected
 * certificate) fails the handshake as a returned Error does: ICAP_ERR_TLS.
 */
function guardedIdentityCheck(
  check: NonNullable<IcapTlsOptions['checkServerIdentity']>,
): (host: string, cert: tls.PeerCertificate) => Error | undefined {
  return (host, cert) => {
    try {
      const result: unknown = check(host, cert);
      if (result === undefined || result === null || result === false) return undefined;
      return result instanceof Error ? result : new Error(`checkServerIdentity refused: ${String(result)}`);
    } catch (err) {
      return err instanceof Error ? err : new Error(`checkServerIdentity threw: ${String(err)}`);
    }
  };
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  const out: Partial<T> = {};
  for (const [k, v] of Object.entries(o)) if (v !== undefined) (out as Record<string, unknown>)[k] = v;
  return out;
}
