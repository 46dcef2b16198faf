/**
 * Next.js's contract for an App Router route module, written structurally (Next itself is not
 * installed here: it weighs hundreds of megabytes). `next build` generates the same checks for
 * every app/**\/route.ts: only the exports below, each HTTP method a handler taking the
 * request (a NextRequest) and the context (`params` is a Promise since Next 15), returning a
 * Response. route.test.ts type-checks this file with the TypeScript compiler.
 */
import * as entry from '../app/api/upload/route.js';

/** NextRequest, as far as a handler can tell: a Request with Next's extras. */
declare class NextRequest extends Request {
  readonly nextUrl: URL;
  readonly cookies: { get(name: string): { name: string; value: string } | undefined };
}
type RouteContext = { params: Promise<Record<string, string | string[] | undefined>> };
type RouteHandler = (
  request: NextRequest,
  context: RouteContext,
) => Response | undefined | Promise<Response | undefined>;

interface RouteModule {
  GET?: RouteHandler;
  HEAD?: RouteHandler;
  OPTIONS?: RouteHandler;
  POST?: RouteHandler;
  PUT?: RouteHandler;
  DELETE?: RouteHandler;
  PATCH?: RouteHandler;
  runtime?: 'nodejs' | 'edge' | 'experimental-edge';
  dynamic?: 'auto' | 'force-dynamic' | 'error' | 'force-static';
  dynamicParams?: boolean;
  revalidate?: number | false;
  fetchCache?:
    | 'auto'
    | 'force-no-store'
    | 'only-no-store'
    | 'default-no-store'
    | 'default-cache'
    | 'only-cache'
    | 'force-cache';
  preferredRegion?: 'auto' | 'global' | 'home' | string | string[];
  maxDuration?: number;
}

/** A route module exports nothing else (`next build` fails on an unknown export). */
type Unknown = Exclude<keyof typeof entry, keyof RouteModule>;
export const onlyKnownExports: [Unknown] extends [never] ? true : { unknownExport: Unknown } = true;
export const routeModule: RouteModule = entry;
