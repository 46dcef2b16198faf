import { IncomingMessage } from 'node:http';

/**
 * Express gives each request a V8 map (hidden class) of its own: its init middleware swaps the
 * request's prototype (`Object.setPrototypeOf(req, app.request)`), V8 keeps no transitions from
 * a map made by a prototype change, so each property added afterwards (`req.res`, `req.next`, the
 * router's, ours) makes a new map for that one object. Every property read of it after that, by
 * Express's router, Node's streams, icapkit or the application, misses its inline cache once per
 * request (bench/README.md, seventh round: 38.7 µs per request of V8's miss handling below
 * icapkit's frames alone).
 *
 * Deleting a property that is not the last one added puts an object in dictionary mode, and V8
 * gives dictionary-mode objects of one prototype one shared map (from its normalized-map cache):
 * the inline caches then hold (a hash lookup each) instead of missing. The two symbols below are
 * added and deleted at once, so nothing the application can see changes (own keys, their order,
 * values, descriptors). Express + icapkit at steady state: 18–74 µs less CPU per 10 KiB request
 * in each of nine rounds (bench/README.md, eighth round).
 *
 * The request only: V8's normalized-map cache is a 128-entry table indexed by a hash of the map's
 * prototype, and with the response normalized too, the two evicted each other's entry in some
 * processes, every request then getting a map of its own again (test/engine/express-maps.test.ts).
 * Any other object the application normalizes at every request can do the same when its entry
 * falls on the request's (chai's `expect()` did, in 4 test processes in 60 under load): the
 * requests then have maps of their own, as without this, and nothing else changes. A request with
 * Node's own prototype shares its maps already and keeps its fast properties; one that cannot
 * take a property (frozen, sealed, a proxy that refuses) is left as it is.
 */
const FIRST = Symbol('icapkit.shareMap.first');
const SECOND = Symbol('icapkit.shareMap.second');

export function shareRequestMap(req: IncomingMessage): void {
  if (Object.getPrototypeOf(req) === IncomingMessage.prototype || !Object.isExtensible(req)) return;
  const t = req as unknown as Record<symbol, unknown>;
  try {
    t[FIRST] = undefined;
    t[SECOND] = undefined;
    // FIRST is not the last property added: deleting it normalises the object.
    delete t[FIRST];
    delete t[SECOND];
  } catch {
    // A proxy's trap may refuse: the object stays as it was, less what was added.
    try {
      delete t[FIRST];
      delete t[SECOND];
    } catch {
      // Nothing more a refusing proxy lets us undo.
    }
  }
}
