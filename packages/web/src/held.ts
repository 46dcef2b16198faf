/**
 * When the body an approved request holds is freed (campaign-br BR3). A handler may read the
 * body after it returned its `Response`: Hono's `stream()` / `streamSSE()` callbacks, or a
 * `ReadableStream` whose `start()` reads `request.text()`, run once the response has started.
 * Freeing the body when the handler returns left such a read hanging (a body handed back in
 * the Node request never ended) or failing (a premature close). So what the handler did not
 * read is freed when its response is done: the Node response closing (@hono/node-server's
 * `env.outgoing`: sent, or the client gone), or else the response body ending, failing or
 * being cancelled. A response without a body is done at once.
 */

/** The disposers (from {@link onceDisposer}) that have run: nothing left to free. */
const spent = new WeakSet<() => void>();

/** `fn`, run at most once; {@link disposeWhenSent} knows when it has run. */
export function onceDisposer(fn: () => void): () => void {
  let done = false;
  const dispose = () => {
    if (done) return;
    done = true;
    spent.add(dispose);
    fn();
  };
  return dispose;
}

/** What is read of @hono/node-server's `env.outgoing` (a Node `ServerResponse`). */
interface OutgoingLike {
  once(event: 'close', listener: () => void): unknown;
  destroyed?: boolean;
  writableFinished?: boolean;
}

function outgoingOf(env: unknown): OutgoingLike | undefined {
  if (typeof env !== 'object' || env === null) return undefined;
  const outgoing = (env as { outgoing?: unknown }).outgoing;
  if (typeof outgoing !== 'object' || outgoing === null) return undefined;
  return typeof (outgoing as OutgoingLike).once === 'function' ? (outgoing as OutgoingLike) : undefined;
}

/**
 * Runs `dispose` once `response` is done (see above), and returns the response to send: the
 * same one, or (without a Node response to watch) one whose body tells when it is done.
 * A disposer that has run already (nothing held: a body read to its end, none at all) costs nothing.
 */
export function disposeWhenSent(response: Response, dispose: () => void, env: unknown): Response {
  if (spent.has(dispose)) return response;
  const body = response.body;
  if (body === null) {
    dispose();
    return response;
  }
  const outgoing = outgoingOf(env);
  if (outgoing !== undefined) {
    if (outgoing.destroyed === true || outgoing.writableFinished === true) dispose();
    else outgoing.once('close', dispose);
    return response;
  }
  const reader = body.getReader();
  const watched = new ReadableStream<Uint8Array>({
    async pull(controller) {
      try {
        const step = await reader.read();
        if (step.done) {
          dispose();
          controller.close();
        } else controller.enqueue(step.value);
      } catch (err) {
        dispose();
        controller.error(err);
      }
    },
    cancel(reason) {
      dispose();
      return reader.cancel(reason);
    },
  });
  return new Response(watched, response);
}
