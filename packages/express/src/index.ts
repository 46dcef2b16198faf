import type { IncomingMessage, ServerResponse } from 'node:http';
import {
  type ContinueServer,
  createEngine,
  drainAfterAnswer,
  drainLimits,
  guardExpectContinue,
  type IcapEngine,
  type IcapProfile,
  type IcapRequestInfo,
  type PinoLike,
  rearmRequest,
  requestInfo,
  type StartupReport,
} from '@icapkit/core';

export * from './analytics.js';

/**
 * Express middleware: every request the profile's rules select is scanned by the ICAP server
 * before the next handler runs. Blocked uploads get 403, oversized ones 413, scanner failures
 * 503 (or pass, per the profile); approved requests reach the next handler with their body
 * readable again (body parsers and multer work as usual), a rewritten body when the ICAP
 * server modified it, and `req.icap` describing the scan.
 *
 *   app.use(icap({ name: 'uploads', poolGroup: 'icap://127.0.0.1:1344', serviceUri: '/avscan' }));
 *
 * Works with Express 5 and 4 (typed against node:http, so it has no dependency on express).
 */

declare module 'node:http' {
  interface IncomingMessage {
    /** Set by @icapkit/express once the request was scanned (or not). */
    icap?: IcapRequestInfo;
  }
}

type Next = (err?: unknown) => void;

export interface IcapMiddleware {
  (req: IncomingMessage, res: ServerResponse, next: Next): void;
  /** The engine (servers, health, status). */
  readonly engine: IcapEngine;
  /** Closes the engine's ICAP connections and probes. */
  close(): Promise<void>;
  /**
   * Answers requests with `Expect: 100-continue` that would be refused anyway (413, 415)
   * before they send their body: `mw.guardExpectContinue(app.listen(3000))`. Returns the server.
   */
  guardExpectContinue<S extends ContinueServer>(server: S): S;
  /**
   * The start-up check: OPTIONS to every ICAP server. Per the profile's `startupCheck`, rejects
   * naming each server that did not answer ('fail', default), warns ('warn') or does nothing
   * ('off'): `await mw.ready()` before `app.listen()`.
   */
  ready(): Promise<StartupReport>;
}

export interface IcapExpressOptions {
  /** Share an engine between middlewares (the profile is then ignored). */
  engine?: IcapEngine | undefined;
}

export function icap(profile: IcapProfile, options: IcapExpressOptions = {}): IcapMiddleware {
  const engine = options.engine ?? createEngine(profile);
  const middleware = (req: IncomingMessage, res: ServerResponse, next: Next): void => {
    run(engine, req, res).then(
      (proceed) => {
        if (proceed) next();
      },
      (err: unknown) => next(err),
    );
  };
  return Object.assign(middleware, {
    engine,
    close: () => engine.close(),
    ready: () => engine.ready(),
    guardExpectContinue<S extends ContinueServer>(server: S): S {
      guardExpectContinue(server, (req) => engine.preflight(req));
      return server;
    },
  });
}

export default icap;

/** Scans and applies the outcome. True when the next handler should run. */
async function run(engine: IcapEngine, req: IncomingMessage, res: ServerResponse): Promise<boolean> {
  const ac = new AbortController();
  const onClose = () => {
    if (!res.writableFinished) ac.abort();
  };
  res.once('close', onClose);
  const logger = (req as { log?: PinoLike }).log;
  const outcome = await engine.scan(req, {
    signal: ac.signal,
    logger: isLogger(logger) ? logger : undefined,
    requestId: requestId(req),
  });
  res.removeListener('close', onClose);
  res.once('close', () => outcome.dispose());
  req.icap = requestInfo(outcome);
  switch (outcome.kind) {
    case 'aborted':
      if (!res.destroyed) res.destroy();
      return false;
    case 'respond':
      // The rest of an unread body is still read (bounded), so the client gets the answer.
      if (outcome.closeConnection) drainAfterAnswer(req, drainLimits(engine));
      if (!res.headersSent) {
        res.writeHead(outcome.status, outcome.headers.flat());
        res.end(outcome.body);
      }
      return false;
    case 'rewrite':
      rearmRequest(req, {
        body: outcome.body,
        contentLength: outcome.contentLength,
        headers: outcome.headers,
        method: outcome.method,
        url: outcome.url,
      });
      // Express routes on originalUrl too: keep them in step with the rewritten URL.
      if ('originalUrl' in req) (req as { originalUrl: string }).originalUrl = outcome.url;
      break;
    case 'pass':
      // A re-serialised multipart form comes with its own content-type (a fresh boundary).
      if (outcome.body !== null)
        rearmRequest(req, {
          body: outcome.body,
          contentLength: outcome.contentLength ?? 0,
          headers: outcome.headers,
        });
      break;
  }
  for (const [name, value] of outcome.responseHeaders) res.setHeader(name, value);
  // The application's status, for the record (the analytics page shows it).
  res.once('finish', () => engine.responded(outcome.log, res.statusCode));
  return true;
}

function isLogger(v: unknown): v is PinoLike {
  if (typeof v !== 'object' || v === null) return false;
  const l = v as Record<string, unknown>;
  return ['debug', 'info', 'warn', 'error'].every((m) => typeof l[m] === 'function');
}

function requestId(req: IncomingMessage): string | undefined {
  const id = (req as { id?: unknown }).id;
  if (typeof id === 'string' || typeof id === 'number') return String(id);
  const header = req.headers['x-request-id'];
  return typeof header === 'string' && /^[\w.-]{1,128}$/.test(header) ? header : undefined;
}
