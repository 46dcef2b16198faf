/**
 * holdfloor.ts, the least an in-process ICAP middleware does, against the embedded server: it
 * must send the held body as one well-formed REQMOD, keep its connection for the next request,
 * and refuse whatever is not a bare 204 (the bench would otherwise read a broken floor as cheap).
 */
import { Readable } from 'node:stream';
import { eicar, startIcapServer } from '@icapkit/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HoldFloor, holdAndAsk } from '../src/holdfloor.js';

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

  it('refuses an answer that is not a bare 204 (an infected body, an echo)', async () => {
    expect(await ask(floor, [eicar()])).toBeInstanceOf(Error);
    const echo = new HoldFloor(server.url(), '/echo');
    try {
      expect(await ask(echo, [Buffer.from('x')])).toBeInstanceOf(Error);
    } finally {
      echo.close();
    }
    // A refused answer broke only its own connection: the next request is fine.
    expect(await ask(floor, [Buffer.from('after')])).toBeNull();
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
});
