/**
 * `bodyConsumedReason` reads a Node stream's state directly (one property of the request
 * instead of the `readableEnded`/`readableDidRead`/`readableFlowing` getters and
 * `listenerCount`) when the request inherits those from Node's Readable. That is the same
 * check: for every request shape and stream state here, it gives what the getters give (the
 * reference below is the check as it reads them), including requests with another prototype
 * (as Express gives them) and requests whose getters are not Node's (where it reads the getters).
 */
import { IncomingMessage } from 'node:http';
import { Socket } from 'node:net';
import { Readable } from 'node:stream';
import { bodyConsumedReason } from '@icapkit/core';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';

/** The check through the getters (as it read before the state path). */
function reference(req: unknown, parsed?: unknown): string | undefined {
  if (typeof req !== 'object' || req === null) return undefined;
  const r = req as Readable & { _body?: unknown; body?: unknown; readableDidRead?: boolean };
  if (r._body === true) return 'a body parser already parsed it (req._body is set)';
  if (r.readableEnded === true) return 'the request stream was already read to its end';
  if (r.readableDidRead === true) return 'part of the request stream was already read';
  if (r.readableFlowing === true) return 'the request stream is already being read (flowing)';
  if (typeof r.listenerCount === 'function') {
    const readers = r.listenerCount('data') + r.listenerCount('readable');
    if (readers > 0)
      return `the request stream already has ${readers} reader(s) ('data'/'readable' listeners)`;
  }
  const body = r.body;
  const holds = (b: unknown) => {
    if (b === undefined || b === null) return false;
    if (typeof b !== 'object') return true;
    if (Buffer.isBuffer(b)) return b.length > 0;
    const proto = Object.getPrototypeOf(b);
    if (proto !== Object.prototype && proto !== null) return true;
    return Object.keys(b).length > 0;
  };
  if (holds(body)) return 'req.body was already set by a body parser';
  if (holds(parsed)) return 'a parsed body is already set for the request';
  return undefined;
}

const EXPRESS_LIKE = Object.create(IncomingMessage.prototype) as object;
const OVERRIDDEN = Object.create(IncomingMessage.prototype, {
  readableEnded: { get: () => true },
}) as object;
class Subclass extends IncomingMessage {
  override listenerCount(): number {
    return 3;
  }
}

type Kind = 'incoming' | 'express' | 'readable' | 'overridden' | 'subclass' | 'own-getter';

function makeRequest(kind: Kind): Readable {
  const socket = new Socket();
  switch (kind) {
    case 'incoming':
      return new IncomingMessage(socket);
    case 'express': {
      const req = new IncomingMessage(socket);
      Object.setPrototypeOf(req, EXPRESS_LIKE);
      Object.assign(req, { originalUrl: '/', baseUrl: '', params: {}, query: {} });
      return req;
    }
    case 'readable':
      return new Readable({ read() {} });
    case 'overridden': {
      const req = new IncomingMessage(socket);
      Object.setPrototypeOf(req, OVERRIDDEN);
      return req;
    }
    case 'subclass':
      return new Subclass(socket);
    case 'own-getter': {
      const req = new IncomingMessage(socket);
      Object.defineProperty(req, 'readableFlowing', { get: () => true });
      return req;
    }
  }
}

type Step =
  | 'push'
  | 'end'
  | 'read'
  | 'resume'
  | 'pause'
  | 'onData'
  | 'offData'
  | 'onReadable'
  | 'onceData'
  | 'body'
  | 'emptyBody'
  | '_body';

const noop = () => {};

function apply(req: Readable, step: Step): void {
  const r = req as Readable & { body?: unknown; _body?: unknown };
  switch (step) {
    case 'push':
      if (!r.readableEnded && !r.destroyed) r.push(Buffer.from('abc'));
      break;
    case 'end':
      if (!r.readableEnded && !r.destroyed) r.push(null);
      break;
    case 'read':
      r.read();
      break;
    case 'resume':
      r.resume();
      break;
    case 'pause':
      r.pause();
      break;
    case 'onData':
      r.on('data', noop);
      break;
    case 'offData':
      r.off('data', noop);
      break;
    case 'onReadable':
      r.on('readable', noop);
      break;
    case 'onceData':
      r.once('data', noop);
      break;
    case 'body':
      r.body = { a: 1 };
      break;
    case 'emptyBody':
      r.body = {};
      break;
    case '_body':
      r._body = true;
      break;
  }
}

const kinds: Kind[] = ['incoming', 'express', 'readable', 'overridden', 'subclass', 'own-getter'];
const steps: Step[] = [
  'push',
  'end',
  'read',
  'resume',
  'pause',
  'onData',
  'offData',
  'onReadable',
  'onceData',
  'body',
  'emptyBody',
  '_body',
];

describe('bodyConsumedReason through the stream state', () => {
  it('an untouched request of every shape: nothing consumed', () => {
    for (const kind of kinds) {
      const req = makeRequest(kind);
      expect(bodyConsumedReason(req), kind).toBe(reference(req));
    }
  });

  it('the same reason as the getters give, for any sequence of stream operations (3,000 cases)', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...kinds),
        fc.array(fc.constantFrom(...steps), { maxLength: 6 }),
        fc.boolean(),
        fc.constantFrom(undefined, {}, { x: 1 }, Buffer.alloc(0), 'text'),
        async (kind, ops, tick, parsed) => {
          const req = makeRequest(kind);
          req.on('error', noop);
          for (const op of ops) apply(req, op);
          // Some states (flowing, ended) settle a tick later.
          if (tick) await new Promise((r) => setImmediate(r));
          expect(bodyConsumedReason(req, parsed)).toBe(reference(req, parsed));
          req.destroy();
        },
      ),
      { numRuns: 3000 },
    );
  });

  it('getters that are not Node’s are read as they are', () => {
    expect(bodyConsumedReason(makeRequest('overridden'))).toBe(
      'the request stream was already read to its end',
    );
    expect(bodyConsumedReason(makeRequest('subclass'))).toBe(
      "the request stream already has 6 reader(s) ('data'/'readable' listeners)",
    );
    expect(bodyConsumedReason(makeRequest('own-getter'))).toBe(
      'the request stream is already being read (flowing)',
    );
  });
});
