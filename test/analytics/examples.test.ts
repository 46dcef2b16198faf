/**
 * The Express, Fastify and Koa examples serve the log analytics page at /icap-analytics/: to local connections by
 * default, to whoever presents ICAP_ANALYTICS_TOKEN when it is set. The start-up banner says so.
 */
import { eicar } from '@icapkit/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ANALYTICS_PATH, banner, configFromEnv } from '../../examples/shared/demo.js';
import { EXAMPLES, type Example, type ExampleName, postFile, send } from '../demo/helpers.js';

const TOKEN = 'an-example-token-of-some-length';

type WithAnalytics = Example & { analyticsUrl: string };

async function overview(demo: WithAnalytics, headers: Record<string, string> = {}) {
  const res = await send(`${demo.analyticsUrl}api/overview`, { headers });
  expect(res.status).toBe(200);
  return res.json() as {
    stored: number;
    actions: Record<string, number>;
    records: Array<{ files: string[] }>;
  };
}

/** The Node req/res examples mount the page; examples/hono (Web Request/Response) does not. */
const WITH_ANALYTICS = (Object.keys(EXAMPLES) as ExampleName[]).filter((name) => name !== 'hono');

describe.each(WITH_ANALYTICS)('examples/%s log analytics', (name) => {
  let demo: WithAnalytics;
  let guarded: WithAnalytics;

  beforeAll(async () => {
    demo = (await EXAMPLES[name]({ port: 0, print: () => {} })) as WithAnalytics;
    guarded = (await EXAMPLES[name]({
      port: 0,
      print: () => {},
      analyticsToken: TOKEN,
    } as never)) as WithAnalytics;
  });
  afterAll(async () => {
    await demo?.close();
    await guarded?.close();
  });

  it('serves the page at /icap-analytics/ to local connections', async () => {
    expect(demo.analyticsUrl).toBe(`${demo.url}${ANALYTICS_PATH}/`);
    const page = await send(demo.analyticsUrl);
    expect(page.status).toBe(200);
    expect(page.text).toContain('<h1>ICAP log analytics</h1>');
    expect(page.headers['content-security-policy']).toMatch(/script-src 'sha256-/);
  });

  it('shows the uploads and the upload page visits, not its own requests', async () => {
    await send(`${demo.url}/`);
    expect(
      (await postFile(`${demo.url}/upload`, { name: 'notes.txt', data: Buffer.from('hello') })).status,
    ).toBe(200);
    expect((await postFile(`${demo.url}/upload`, { name: 'eicar.com', data: eicar() })).status).toBe(403);
    await send(demo.analyticsUrl);
    const o = await overview(demo);
    expect(o.actions).toMatchObject({ ICAP_PASSED: 1, ICAP_BLOCKED: 1, ICAP_DISABLED: 1 });
    expect(o.stored).toBe(3);
    expect(o.records.flatMap((r) => r.files).sort()).toEqual(['eicar.com', 'notes.txt']);
  });

  it('with ICAP_ANALYTICS_TOKEN: 401 and a Basic challenge without it, the page with it', async () => {
    const refused = await send(guarded.analyticsUrl);
    expect(refused.status).toBe(401);
    expect(refused.headers['www-authenticate']).toMatch(/^Basic realm=/);
    const basic = `Basic ${Buffer.from(`ops:${TOKEN}`).toString('base64')}`;
    expect((await send(guarded.analyticsUrl, { headers: { authorization: basic } })).status).toBe(200);
    expect((await overview(guarded, { authorization: `Bearer ${TOKEN}` })).stored).toBe(0);
  });
});

describe('the analytics settings of the examples', () => {
  it('reads ICAP_ANALYTICS_TOKEN', () => {
    expect(configFromEnv({}).analyticsToken).toBeUndefined();
    expect(configFromEnv({ ICAP_ANALYTICS_TOKEN: ` ${TOKEN} ` }).analyticsToken).toBe(TOKEN);
  });

  it('the banner names the page and who may see it, never the token', () => {
    const base = {
      framework: 'Express',
      url: 'http://127.0.0.1:3000',
      icapUrl: 'icap://127.0.0.1:1344',
      serviceUri: '/avscan',
      embedded: true,
      failOpen: false,
      eicar: eicar(),
      analyticsUrl: 'http://127.0.0.1:3000/icap-analytics/',
    };
    const local: string = banner({ ...base, analyticsToken: undefined });
    expect(local).toContain('log analytics http://127.0.0.1:3000/icap-analytics/');
    expect(local).toContain('connections from this machine only');
    const withToken: string = banner({ ...base, analyticsToken: TOKEN });
    expect(withToken).toContain('token required');
    expect(withToken).not.toContain(TOKEN);
  });
});
