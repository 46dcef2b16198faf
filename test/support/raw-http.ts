/**
 * An HTTP/1.1 client on a bare socket, for what well-behaved clients never do: send slowly,
 * stall, send more or fewer bytes than `Content-Length`, half-close. It writes the given steps
 * and collects every response the server sends until the server closes or `waitMs` passes.
 */
import { connect } from 'node:net';

export type Step = Buffer | string | { pause: number };

export interface RawResponse {
  status: number;
  headers: Record<string, string>;
  body: Buffer;
}

export interface RawExchange {
  responses: RawResponse[];
  /** The server closed the connection (rather than the wait running out). */
  closedByServer: boolean;
}

export interface RawOptions {
  /** After the steps: keep the socket open ('keep'), half-close it ('fin'), or destroy it ('destroy'). */
  finally?: 'keep' | 'fin' | 'destroy';
  /** How long to wait for the server after the steps. Default 5000 ms. */
  waitMs?: number;
  /** Stop waiting once this many complete responses arrived. */
  responses?: number;
}

export function rawExchange(url: string, steps: Step[], options: RawOptions = {}): Promise<RawExchange> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve) => {
    const socket = connect({ host: hostname, port: Number(port), allowHalfOpen: true });
    const received: Buffer[] = [];
    let closedByServer = false;
    let timer: NodeJS.Timeout | undefined;
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      resolve({ responses: parseResponses(Buffer.concat(received)), closedByServer });
    };
    socket.on('data', (d: Buffer) => {
      received.push(d);
      const want = options.responses;
      if (want !== undefined && parseResponses(Buffer.concat(received), true).length >= want) finish();
    });
    const onServerClose = () => {
      if (!done) closedByServer = true;
      finish();
    };
    socket.on('end', onServerClose);
    socket.on('close', onServerClose);
    socket.on('error', onServerClose);
    const run = async () => {
      for (const step of steps) {
        if (done) return;
        if (typeof step === 'object' && !Buffer.isBuffer(step)) {
          await new Promise((r) => setTimeout(r, step.pause));
        } else {
          await new Promise<void>((r) => socket.write(step, () => r()));
        }
      }
      if (done) return;
      if (options.finally === 'fin') socket.end();
      if (options.finally === 'destroy') {
        socket.destroy();
        finish();
        return;
      }
      timer = setTimeout(finish, options.waitMs ?? 5000);
    };
    socket.once('connect', () => void run());
  });
}

/**
 * Splits a byte stream into HTTP/1.1 responses (Content-Length framed; otherwise to the end).
 * `completeOnly`: leave out a last response whose body has not fully arrived.
 */
export function parseResponses(data: Buffer, completeOnly = false): RawResponse[] {
  const out: RawResponse[] = [];
  let at = 0;
  while (at < data.length) {
    const end = data.indexOf('\r\n\r\n', at);
    if (end < 0) break;
    const lines = data.subarray(at, end).toString('latin1').split('\r\n');
    const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(lines[0] ?? '')?.[1]);
    const headers: Record<string, string> = {};
    for (const line of lines.slice(1)) {
      const i = line.indexOf(':');
      if (i > 0) headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
    }
    let bodyEnd = data.length;
    if (headers['content-length'] !== undefined) bodyEnd = end + 4 + Number(headers['content-length']);
    else if (completeOnly) break;
    if (completeOnly && bodyEnd > data.length) break;
    const body = data.subarray(end + 4, Math.min(bodyEnd, data.length));
    // Interim responses (100 Continue) have no body.
    if (status >= 100 && status < 200) {
      at = end + 4;
      continue;
    }
    out.push({ status, headers, body });
    at = bodyEnd;
  }
  return out;
}

/** A request head with a Content-Length. */
export function postHead(path: string, contentLength: number, extra: Record<string, string> = {}): string {
  const lines = [
    `POST ${path} HTTP/1.1`,
    'Host: 127.0.0.1',
    'Content-Type: application/octet-stream',
    `Content-Length: ${contentLength}`,
    ...Object.entries(extra).map(([n, v]) => `${n}: ${v}`),
  ];
  return `${lines.join('\r\n')}\r\n\r\n`;
}
