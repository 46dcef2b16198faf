/**
 * holdfloor.ts, the least an in-process ICAP middleware does, against the embedded server: it
 * must send the held body as one well-formed REQMOD, keep its connection for the next request,
 * and refuse whatever is not a bare 204 (the bench would otherwise read a broken floor as cheap).
 */

import type { AddressInfo } from 'node:net';
import { createServer } from 'node:net';
import { Readable } from 'node:stream';
import { eicar, startIcapServer } from '@icapkit/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { multipart } from '../src/bodies.js';
import { HoldFloor, holdAndAsk, holdFloorEnv, MULTIPART_PARTS_AT_ONCE } from '../src/holdfloor.js';

const server = await startIcapServer();

function ask(floor: HoldFloor, chunks: Buffer[]): Promise<Error | null> {
  const length = chunks.reduce((n, c) => n + c.length, 0);
  return new Promise((resolve) => floor.ask('application/octet-stream', chunks, length, resolve));
}

describe('the hold floor', () => {
  let floor: HoldFloor;
  beforeAll(() => {
    floor = new HoldFloor(server.url(), '/avscan');
  });
  afterAll(async () => {
    floor.close();
    await server.close();
  });

  it('sends the held chunks as the encapsulated body and takes the 204', async () => {
    const before = server.requests.length;
    const chunks = [Buffer.from('hello '), Buffer.alloc(10_000, 7), Buffer.from(' world')];
    expect(await ask(floor, chunks)).toBeNull();
    const rec = server.requests[before]!;
    expect(rec.method).toBe('REQMOD');
    expect(rec.service).toBe('/avscan');
    expect(rec.allow204).toBe(true);
    expect(rec.httpRequest?.headers.get('content-length')).toBe('10012');
    expect(rec.body?.equals(Buffer.concat(chunks))).toBe(true);
  });

  it('reuses its kept-alive connection for the next request', async () => {
    const before = server.requests.length;
    expect(await ask(floor, [Buffer.from('one')])).toBeNull();
    const accepted = server.connections.accepted;
    expect(await ask(floor, [Buffer.from('two')])).toBeNull();
    expect(await ask(floor, [Buffer.from('three')])).toBeNull();
    const recs = server.requests.slice(before);
    expect(recs.map((r) => r.body?.toString())).toEqual(['one', 'two', 'three']);
    expect(server.connections.accepted).toBe(accepted);
  });

  it('refuses an answer that neither is a bare 204 nor returns the request (an infected body)', async () => {
    expect(await ask(floor, [eicar()])).toBeInstanceOf(Error);
    // A refused answer broke only its own connection: the next request is fine.
    expect(await ask(floor, [Buffer.from('after')])).toBeNull();
  });

  describe('a 200 that returns the request (echo, a rewrite)', () => {
    function held(f: HoldFloor, parts: Buffer[]): Promise<{ err: Error | null; chunks?: Buffer[] }> {
      return new Promise((resolve) =>
        holdAndAsk(f, Readable.from(parts), 'application/octet-stream', (err, chunks) =>
          resolve({ err, chunks }),
        ),
      );
    }

    it("hands over the answer's de-chunked body, on one kept-alive connection", async () => {
      const echo = new HoldFloor(server.url(), '/echo');
      try {
        const accepted = server.connections.accepted;
        // c-icap and the embedded server echo a large body in many chunks, while it arrives.
        const big = Buffer.alloc(300_000);
        for (let i = 0; i < big.length; i++) big[i] = (i * 31) & 255;
        for (const body of [big, Buffer.from('small'), big.subarray(0, 65_537)]) {
          const got = await held(echo, [body.subarray(0, 1000), body.subarray(1000)]);
          expect(got.err).toBeNull();
          expect(Buffer.concat(got.chunks!).equals(body)).toBe(true);
        }
        expect(server.connections.accepted - accepted).toBe(1);
      } finally {
        echo.close();
      }
    });

    it('hands over the rewritten body, not the held one', async () => {
      const modifying = await startIcapServer({ rewrite: { from: 'secret', to: 'XXXXXXXX' } });
      const f = new HoldFloor(modifying.url(), '/modify');
      try {
        const got = await held(f, [Buffer.from('a secret in '), Buffer.from('the body')]);
        expect(got.err).toBeNull();
        expect(Buffer.concat(got.chunks!).toString()).toBe('a XXXXXXXX in the body');
      } finally {
        f.close();
        await modifying.close();
      }
    });

    it("previews against echo only, as much as icapkit sends c-icap (its OPTIONS' 1024)", () => {
      expect(holdFloorEnv('echo')).toEqual({ BENCH_HOLD_PREVIEW: '1024' });
      expect(holdFloorEnv('/echo')).toEqual({ BENCH_HOLD_PREVIEW: '1024' });
      expect(holdFloorEnv('avscan')).toEqual({});
    });

    it('previews as icapkit does: the first bytes, the rest on a 100 Continue', async () => {
      const f = new HoldFloor(server.url(), '/echo', { preview: 1024 });
      try {
        const body = Buffer.alloc(300_000);
        for (let i = 0; i < body.length; i++) body[i] = (i * 7) & 255;
        // The preview ends inside the second chunk.
        const got = await held(f, [body.subarray(0, 500), body.subarray(500, 3500), body.subarray(3500)]);
        expect(got.err).toBeNull();
        expect(Buffer.concat(got.chunks!).equals(body)).toBe(true);
        const rec = server.requests.at(-1)!;
        expect([rec.preview, rec.previewBytes, rec.continued]).toEqual([1024, 1024, true]);
        expect(rec.body?.equals(body)).toBe(true);
        // A body no larger than the preview goes whole, without one.
        const small = await held(f, [Buffer.from('tiny')]);
        expect(Buffer.concat(small.chunks!).toString()).toBe('tiny');
        expect(server.requests.at(-1)!.preview).toBeUndefined();
      } finally {
        f.close();
      }
    });

    it('a 204 after the preview: the rest is never sent, the held body goes on, the connection stays', async () => {
      const received: Buffer[] = [];
      let connections = 0;
      const tcp = createServer((socket) => {
        connections++;
        let seen = Buffer.alloc(0);
        socket.on('data', (c: Buffer) => {
          received.push(c);
          seen = Buffer.concat([seen, c]);
          if (!seen.subarray(-7).equals(Buffer.from('\r\n0\r\n\r\n'))) return;
          seen = Buffer.alloc(0);
          socket.write('ICAP/1.0 204 No Content\r\nISTag: "x"\r\n\r\n');
        });
      });
      await new Promise<void>((r) => tcp.listen(0, '127.0.0.1', () => r()));
      const f = new HoldFloor(`icap://127.0.0.1:${(tcp.address() as AddressInfo).port}`, '/echo', {
        preview: 1024,
      });
      try {
        const body = Buffer.alloc(50_000, 5);
        for (let round = 0; round < 2; round++) {
          const got = await held(f, [body.subarray(0, 2000), body.subarray(2000)]);
          expect(got.err).toBeNull();
          expect(Buffer.concat(got.chunks!).equals(body)).toBe(true);
        }
        const wire = Buffer.concat(received).toString('latin1');
        expect(wire.match(/Preview: 1024\r\n/g)).toHaveLength(2);
        // Two heads and two previews of 1024 bytes: nothing of the rest.
        expect(Buffer.concat(received).length).toBeLessThan(2 * 1024 + 2 * 400);
        expect(connections).toBe(1);
      } finally {
        f.close();
        await new Promise<void>((r) => tcp.close(() => r()));
      }
    });

    it('reads an answer cut anywhere: one byte at a time', async () => {
      const body = Buffer.from('echoed body, in three chunks');
      const httpHead = 'POST /upload HTTP/1.1\r\nHost: app\r\n\r\n';
      const answer = Buffer.from(
        `ICAP/1.0 200 OK\r\nISTag: "x"\r\nEncapsulated: req-hdr=0, req-body=${httpHead.length}\r\n\r\n` +
          `${httpHead}6\r\n${body.subarray(0, 6)}\r\n10;ieof\r\n${body.subarray(6, 22)}\r\n` +
          `${(body.length - 22).toString(16)}\r\n${body.subarray(22)}\r\n0\r\n\r\n`,
        'latin1',
      );
      const tcp = createServer((socket) => {
        let seen = Buffer.alloc(0);
        socket.on('data', (c: Buffer) => {
          seen = Buffer.concat([seen, c]);
          if (!seen.subarray(-7).equals(Buffer.from('\r\n0\r\n\r\n'))) return;
          seen = Buffer.alloc(0);
          let i = 0;
          const drip = () => {
            if (i < answer.length) socket.write(answer.subarray(i, ++i), () => setImmediate(drip));
          };
          drip();
        });
      });
      await new Promise<void>((r) => tcp.listen(0, '127.0.0.1', () => r()));
      const f = new HoldFloor(`icap://127.0.0.1:${(tcp.address() as AddressInfo).port}`, '/echo');
      try {
        for (let round = 0; round < 2; round++) {
          const got = await held(f, [Buffer.from('anything')]);
          expect(got.err).toBeNull();
          expect(Buffer.concat(got.chunks!).equals(body)).toBe(true);
        }
      } finally {
        f.close();
        await new Promise<void>((r) => tcp.close(() => r()));
      }
    });
  });

  it('holds a stream to its end before asking, and hands back what it held', async () => {
    const parts = [Buffer.from('a'), Buffer.from('bc'), Buffer.from('def')];
    const got = await new Promise<{ err: Error | null; chunks: Buffer[] | undefined }>((resolve) =>
      holdAndAsk(floor, Readable.from(parts), 'text/plain', (err, chunks) => resolve({ err, chunks })),
    );
    expect(got.err).toBeNull();
    expect(Buffer.concat(got.chunks!).toString()).toBe('abcdef');
    expect(server.requests.at(-1)?.body?.toString()).toBe('abcdef');
  });

  describe('part by part (--hold-floor-parts)', () => {
    const boundary = 'floorBoundary42';
    const type = `multipart/form-data; boundary=${boundary}`;

    function holdParts(parts: HoldFloor, form: Buffer): Promise<{ err: Error | null; chunks?: Buffer[] }> {
      // The form in uneven pieces, as a socket hands it over.
      const pieces = [form.subarray(0, 7), form.subarray(7, 5000), form.subarray(5000)];
      return new Promise((resolve) =>
        holdAndAsk(parts, Readable.from(pieces), type, (err, chunks) => resolve({ err, chunks })),
      );
    }

    it('asks about each part in a REQMOD of its own, named as icapkit names it, and hands the form over', async () => {
      const parts = new HoldFloor(server.url(), '/avscan', { parts: true });
      try {
        const files = [Buffer.alloc(3000, 1), Buffer.from('second file'), Buffer.alloc(9000, 3)];
        const form = multipart(files, boundary);
        const before = server.requests.length;
        const got = await holdParts(parts, form);
        expect(got.err).toBeNull();
        expect(Buffer.concat(got.chunks!).equals(form)).toBe(true);
        const recs = server.requests.slice(before);
        // The text field and the three files; the order of answers may differ (four at once).
        expect(recs.map((r) => r.body?.toString('latin1')).sort()).toEqual(
          ['bench upload', ...files.map((f) => f.toString('latin1'))].sort(),
        );
        const second = recs.find((r) => r.body?.toString() === 'second file')!;
        expect(second.httpRequest?.headers.get('content-type')).toBe('application/octet-stream');
        expect(second.httpRequest?.headers.get('content-disposition')).toBe(
          'attachment; filename="doc2.bin"',
        );
        expect(second.httpRequest?.headers.get('content-length')).toBe('11');
      } finally {
        parts.close();
      }
    });

    it(`has at most ${MULTIPART_PARTS_AT_ONCE} parts in flight: eight parts open no more connections than that`, async () => {
      const parts = new HoldFloor(server.url(), '/avscan', { parts: true });
      try {
        const accepted = server.connections.accepted;
        const form = multipart(
          Array.from({ length: 7 }, (_, i) => Buffer.alloc(2000, i)),
          boundary,
        );
        expect((await holdParts(parts, form)).err).toBeNull();
        expect(server.connections.accepted - accepted).toBe(MULTIPART_PARTS_AT_ONCE);
      } finally {
        parts.close();
      }
    });

    it('refuses a part answered by a 200 (it would have to put the form together again)', async () => {
      const parts = new HoldFloor(server.url(), '/echo', { parts: true });
      try {
        expect((await holdParts(parts, multipart([Buffer.from('clean')], boundary))).err).toBeInstanceOf(
          Error,
        );
      } finally {
        parts.close();
      }
    });

    it('fails when one part is refused, and a body that is not a form is asked about whole', async () => {
      const parts = new HoldFloor(server.url(), '/avscan', { parts: true });
      try {
        const refused = await holdParts(parts, multipart([Buffer.from('clean'), eicar()], boundary));
        expect(refused.err).toBeInstanceOf(Error);
        const before = server.requests.length;
        const plain = await new Promise<Error | null>((resolve) =>
          holdAndAsk(parts, Readable.from([Buffer.from('not a form')]), 'text/plain', (err) => resolve(err)),
        );
        expect(plain).toBeNull();
        expect(server.requests.slice(before).map((r) => r.body?.toString())).toEqual(['not a form']);
      } finally {
        parts.close();
      }
    });
  });
});
