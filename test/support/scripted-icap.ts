/**
 * A raw ICAP server scripted per request, for answers no real server sends: it reads each
 * request (OPTIONS answered at once; a preview gets 100 Continue) and hands it, with its
 * socket, to the test's handler, which writes whatever bytes it wants.
 */
import { type AddressInfo, createServer, type Server, type Socket } from 'node:net';

export interface Req {
  conn: number;
  index: number;
  method: string;
  head: string;
  encap: Buffer;
  body: Buffer;
  sock: Socket;
}
export type Handler = (r: Req) => void;

/** A scripted ICAP server: its URL, the requests it got, close(). */
export interface ScriptedIcap {
  url: string;
  server: Server;
  requests: Req[];
  /** Previews answered so far (100 Continue or `continueHead`), before their request is whole. */
  readonly previewsAnswered: number;
  close: () => Promise<void>;
}

/** A raw ICAP server: parses requests (preview: 100 Continue automatically) and hands them to `handler`. */
export interface ScriptedOptions {
  /** Extra header lines of the OPTIONS answer, each ending in CRLF (e.g. 'Preview: 4\r\n'). */
  optionsHeaders?: string;
  /** What answers a preview that did not end the body (default: a bare 100 Continue). */
  continueHead?: string;
  /** Writes the OPTIONS `answer` itself (when, and what else): by default at once. */
  options?: (r: Req, answer: string) => void;
}

export async function scripted(handler: Handler, opts: ScriptedOptions = {}): Promise<ScriptedIcap> {
  const requests: Req[] = [];
  let previewsAnswered = 0;
  const socks = new Set<Socket>();
  let connNo = 0;
  const server = createServer((sock) => {
    socks.add(sock);
    sock.on('close', () => socks.delete(sock));
    sock.on('error', () => {});
    const conn = ++connNo;
    let index = 0;
    let buf = Buffer.alloc(0);
    let state: 'head' | 'encap' | 'chunks' = 'head';
    let head = '';
    let encapLen = 0;
    let encap = Buffer.alloc(0);
    let body: Buffer[] = [];
    let method = '';
    let hasBody = false;
    const step = (): boolean => {
      if (state === 'head') {
        const e = buf.indexOf('\r\n\r\n');
        if (e < 0) return false;
        head = buf.subarray(0, e + 4).toString('latin1');
        buf = buf.subarray(e + 4);
        method = head.split(' ')[0]!;
        const m = /\r\nEncapsulated: *([^\r]*)/i.exec(head);
        const entries = (m?.[1] ?? 'null-body=0').split(',').map((s) => s.trim().split('='));
        const last = entries[entries.length - 1]!;
        encapLen = Number(last[1]);
        hasBody = last[0] !== 'null-body';
        body = [];
        state = 'encap';
        return true;
      }
      if (state === 'encap') {
        if (buf.length < encapLen) return false;
        encap = buf.subarray(0, encapLen);
        buf = buf.subarray(encapLen);
        if (!hasBody) {
          done();
          return true;
        }
        state = 'chunks';
        return true;
      }
      const nl = buf.indexOf('\r\n');
      if (nl < 0) return false;
      const line = buf.subarray(0, nl).toString('latin1');
      const size = Number.parseInt(line, 16);
      if (size === 0) {
        if (buf.length < nl + 4) return false;
        buf = buf.subarray(nl + 4);
        const ieof = /ieof/.test(line);
        if (/\r\nPreview:/i.test(head) && !ieof) {
          sock.write(opts.continueHead ?? 'ICAP/1.0 100 Continue\r\n\r\n');
          previewsAnswered++;
          head = head.replace(/\r\nPreview:[^\r]*/i, '');
          return true;
        }
        done();
        return true;
      }
      if (buf.length < nl + 2 + size + 2) return false;
      body.push(buf.subarray(nl + 2, nl + 2 + size));
      buf = buf.subarray(nl + 2 + size + 2);
      return true;
    };
    const done = () => {
      const r: Req = { conn, index: index++, method, head, encap, body: Buffer.concat(body), sock };
      requests.push(r);
      state = 'head';
      if (method === 'OPTIONS') {
        const answer = `ICAP/1.0 200 OK\r\nMethods: REQMOD\r\nISTag: "x1"\r\nAllow: 204\r\n${opts.optionsHeaders ?? ''}Encapsulated: null-body=0\r\n\r\n`;
        if (opts.options === undefined) sock.write(answer);
        else opts.options(r, answer);
        return;
      }
      handler(r);
    };
    sock.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      while (step()) {}
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `icap://127.0.0.1:${port}`,
    server,
    requests,
    get previewsAnswered() {
      return previewsAnswered;
    },
    close: async () => {
      for (const s of socks) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

export function chunked(b: Buffer): string {
  return b.length === 0 ? '' : `${b.length.toString(16)}\r\n${b.toString('latin1')}\r\n`;
}
