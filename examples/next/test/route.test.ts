/**
 * The Next.js example (app/api/upload/route.ts): its types against Next's route-module contract
 * (test/next-contract.ts, with the TypeScript compiler), and the exported POST called with a
 * Request directly, as Next calls it, against the embedded ICAP server.
 */
import { fileURLToPath } from 'node:url';
import { EICAR_NAME, eicar, type IcapTestServer, startIcapServer } from '@icapkit/testing';
import ts from 'typescript';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const here = (p: string) => fileURLToPath(new URL(p, import.meta.url));
const src = (pkg: string) => fileURLToPath(new URL(`../../../packages/${pkg}/src/index.ts`, import.meta.url));

/** Type errors of `root` (with `overlay` files read from memory instead of the disk). */
function typeErrors(root: string, overlay: Record<string, string> = {}): string[] {
  const options: ts.CompilerOptions = {
    target: ts.ScriptTarget.ES2023,
    lib: ['lib.es2023.d.ts'],
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    types: ['node'],
    typeRoots: [fileURLToPath(new URL('../../../node_modules/@types', import.meta.url))],
    strict: true,
    exactOptionalPropertyTypes: true,
    noUncheckedIndexedAccess: true,
    skipLibCheck: true,
    noEmit: true,
    // What Next resolves from node_modules, the sources here.
    paths: { '@icapkit/web': [src('web')], '@icapkit/core': [src('core')] },
  };
  const host = ts.createCompilerHost(options);
  const read = host.readFile.bind(host);
  const exists = host.fileExists.bind(host);
  const get = host.getSourceFile.bind(host);
  host.readFile = (f) => overlay[f] ?? read(f);
  host.fileExists = (f) => f in overlay || exists(f);
  host.getSourceFile = (f, lang, onError, create) =>
    f in overlay ? ts.createSourceFile(f, overlay[f]!, lang) : get(f, lang, onError, create);
  const program = ts.createProgram([root], options, host);
  return ts
    .getPreEmitDiagnostics(program)
    .map((d) => `${d.file?.fileName ?? ''}: ${ts.flattenDiagnosticMessageText(d.messageText, '\n')}`);
}

describe('the Next.js example route', () => {
  it("type-checks against Next's route-module contract", () => {
    expect(typeErrors(here('./next-contract.ts'))).toEqual([]);
  }, 120_000);

  it('the contract check can fail: a handler with synchronous params (Next 14) and an unknown export are errors', () => {
    const route = here('../app/api/upload/route.ts');
    const bad = `import { withIcap } from '@icapkit/web';
export const config = { api: { bodyParser: false } };
export const POST = withIcap({ name: 'x', poolGroup: 'icap://127.0.0.1:1344', serviceUri: '/avscan' },
  async (_request: Request, context: { params: { id: string } }) => Response.json(context.params.id));
`;
    const errors = typeErrors(here('./next-contract.ts'), { [route]: bad });
    expect(errors.join('\n')).toMatch(/onlyKnownExports|unknownExport/);
    expect(errors.join('\n')).toMatch(/params/);
  }, 120_000);
});

describe('the Next.js example route, called with a Request', () => {
  let server: IcapTestServer;
  let route: typeof import('../app/api/upload/route.js');
  beforeAll(async () => {
    server = await startIcapServer({});
    process.env.ICAP_URL = server.url();
    route = await import('../app/api/upload/route.js');
  });
  afterAll(async () => {
    await route?.POST.close();
    await server?.close();
    delete process.env.ICAP_URL;
  });

  const upload = (name: string, data: Uint8Array, headers: Record<string, string> = {}) => {
    const form = new FormData();
    form.append('file', new File([data], name, { type: 'application/octet-stream' }));
    return new Request('http://localhost:3000/api/upload', { method: 'POST', body: form, headers });
  };
  const context = { params: Promise.resolve({}) };

  it("a clean upload reaches the handler: the handler's response, with the bytes sent", async () => {
    const data = new TextEncoder().encode('quarterly report\n'.repeat(1000));
    const res = await route.POST(upload('report.txt', data), context);
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({
      ok: true,
      file: 'report.txt',
      size: data.length,
      icap: { action: 'ICAP_PASSED' },
    });
  });

  it('EICAR: 403 (problem+json for Accept: application/json), the handler is not called', async () => {
    const res = await route.POST(upload('eicar.com', eicar(), { accept: 'application/json' }), context);
    expect(res.status).toBe(403);
    expect(res.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    expect(await res.json()).toMatchObject({ status: 403, threat: EICAR_NAME });
  });
});
