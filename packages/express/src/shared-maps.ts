import { IncomingMessage, ServerResponse } from 'node:http';

/**
 * Express gives each request and each response a V8 map (hidden class) of its own: its init
 * middleware swaps their prototypes (`Object.setPrototypeOf(req, app.request)`, the same for
 * `res`), V8 keeps no transitions from a map made by a prototype change, so each property added
 * afterwards (`req.res`, `res.locals`, the router's, ours) makes a new map for that one object.
 * Every property read of it after that, by Express's router, Node's HTTP and stream code, icapkit
 * or the application, misses its inline cache once per request (bench/README.md, seventh round:
 * 38.7 µs per request of V8's miss handling below icapkit's frames alone), and the misses fill
 * V8's megamorphic stub cache with entries for maps used once.
 *
 * Deleting a property that is not the last one added puts an object in dictionary mode, and V8
 * gives dictionary-mode objects of one prototype one shared map (from its normalized-map cache):
 * the inline caches then hold (a hash lookup each) instead of missing. The two symbols below are
 * added and deleted at once, so nothing the application can see changes (own keys, their order,
 * values, descriptors). Express + icapkit at steady state, the request alone: 18–74 µs less CPU
 * per 10 KiB request in each of nine rounds (bench/README.md, eighth round); the response too:
 * about 80 µs less again (twenty-first round).
 *
 * V8's normalized-map cache is a 128-entry table indexed by a hash of the map's prototype. When
 * the request's entry and the response's fall on one slot, each evicts the other at every
 * request, and both then get maps of their own at every request, as without this: in 2 of 80
 * fresh processes of an Express app (the twenty-first round; none in 60 with the request
 * alone). Any other object the application normalizes at every request can do the same when
 * its entry falls on one of theirs (chai's `expect()` did, in tests). Nothing else changes then:
 * the objects are in dictionary mode, as they are otherwise. An object with Node's own
 * prototype shares its maps already and keeps its fast properties; one that cannot take a
 * property (frozen, sealed, a proxy that refuses) is left as it is.
 */
const FIRST = Symbol('icapkit.shareMap.first');
const SECOND = Symbol('icapkit.shareMap.second');

function shareMap(o: object, nodeOwn: object): void {
  if (Object.getPrototypeOf(o) === nodeOwn || !Object.isExtensible(o)) return;
  const t = o as Record<symbol, unknown>;
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

/** One map for all of Express's requests (see above). */
export function shareRequestMap(req: IncomingMessage): void {
  shareMap(req, IncomingMessage.prototype);
}

/** One map for all of Express's responses (see above). */
export function shareResponseMap(res: ServerResponse): void {
  shareMap(res, ServerResponse.prototype);
}
