/**
 * app/api/upload/route.ts of a Next.js (App Router) app: every upload is scanned by the ICAP
 * server before the handler reads a byte of it.
 *
 *   curl -F file=@README.md http://localhost:3000/api/upload      → 200 { ok, file, size, icap }
 *   curl -F file=@eicar.com http://localhost:3000/api/upload      → 403 (icapkit's block page)
 *
 * The handler gets the approved request (a NextRequest stays a NextRequest): `formData()`,
 * `json()`, `arrayBuffer()` read the bytes the ICAP server scanned.
 */
import { type IcapProfile, withIcap } from '@icapkit/web';

// ICAP speaks TCP: the route runs on Node.js, never on the Edge runtime.
export const runtime = 'nodejs';
// Each upload is its own request: nothing to prerender or cache.
export const dynamic = 'force-dynamic';

const profile: IcapProfile = {
  name: 'uploads',
  poolGroup: process.env.ICAP_URL ?? 'icap://127.0.0.1:1344', // or a list of servers, or pools by priority
  serviceUri: process.env.ICAP_SERVICE ?? '/avscan',
  bufferSize: '50mb', // larger uploads: 413
  failAction: 'fail-closed', // ICAP server down: 503
  connection: { connectTimeout: 2000 },
};

// One engine (ICAP connection pools, health checks) for this route, made on its first request.
export const POST = withIcap(profile, async (request: Request, _context: unknown, icap) => {
  const form = await request.formData();
  const file = form.get('file');
  if (!(file instanceof File)) {
    return Response.json(
      { ok: false, error: 'Send a multipart form with the file in the field "file".' },
      { status: 400 },
    );
  }
  const data = new Uint8Array(await file.arrayBuffer());
  return Response.json({ ok: true, file: file.name, size: data.length, icap: { action: icap.action } });
});
