/**
 * Secrets in configuration never reach a message or a log: a server URL with credentials is
 * refused by the client (its password masked in every URL error), the CLI never echoes a URL's
 * password nor a malformed --header's value, and the values of the profile's own `icapHeaders`
 * are redacted in the log record (and so in onLog, the logger and the diagnostics channels)
 * whatever their names, while the ICAP server still gets them.
 */
import dc from 'node:diagnostics_channel';
import { request as httpRequest } from 'node:http';
import { createEngine, IcapClient, type IcapEngine, type IcapLog, type PinoLike } from '@icapkit/core';
import { type IcapTestServer, startIcapServer } from '@icapkit/testing';
import { afterEach, describe, expect, it } from 'vitest';
import { run } from '../../packages/cli/test/helpers.js';
import { type ScanServer, startScanServer } from '../support/scan-server.js';

const PASS = 'SEC_URLPASS';

function thrown(f: () => unknown): { code?: string; field?: string; message: string } {
  try {
    f();
  } catch (err) {
    return err as { code?: string; field?: string; message: string };
  }
  return expect.unreachable('should throw');
}

describe('new IcapClient({ url })', () => {
  it.each([`icaps://u:${PASS}@127.0.0.1:11344`, `icap://u:${PASS}@127.0.0.1`, `icap://${PASS}@127.0.0.1`])(
    'refuses credentials in %s without echoing the password',
    (url) => {
      const e = thrown(() => new IcapClient({ url }));
      expect(e).toMatchObject({ code: 'ICAP_ERR_INVALID_ARGUMENT', field: 'url' });
      expect(e.message).toMatch(/must not contain credentials/);
      expect(e.message).not.toContain(PASS);
      expect(e.message).toContain('***@127.0.0.1');
    },
  );

  it('refuses credentials in a URL object too', () => {
    const e = thrown(() => new IcapClient({ url: new URL(`icaps://u:${PASS}@h`) }));
    expect(e.code).toBe('ICAP_ERR_INVALID_ARGUMENT');
    expect(e.message).not.toContain(PASS);
  });

  it.each([
    [`icaps://u:${PASS}@127.0.0.1:999999/avscan`, /invalid ICAP server URL/],
    [`https://u:${PASS}@127.0.0.1/avscan`, /must start with icap:\/\/ or icaps:\/\//],
    [`icap://u:${PASS}@[::1/avscan`, /invalid ICAP server URL/],
    [`icap://u:${PASS}@[::1/avscan?key=${PASS}`, /invalid ICAP server URL/],
  ])('never echoes the password of a URL it cannot use: %s', (url, message) => {
    const e = thrown(() => new IcapClient({ url }));
    expect(e.code).toBe('ICAP_ERR_INVALID_ARGUMENT');
    expect(e.message).toMatch(message);
    expect(e.message).not.toContain(PASS);
    expect(e.message).toContain('***@');
  });
});

describe('the CLI', () => {
  it.each([
    [['scan', 'f', '--server', `icaps://u:${PASS}@127.0.0.1:999999/avscan`], /--server is not a URL/],
    [['scan', 'f', '--server', `https://u:${PASS}@127.0.0.1/avscan`], /--server must start with icap/],
    [['options', `icap://u:${PASS}@h:1x/avscan`], /the ICAP URL is not a URL/],
    [['scan', 'f', '--server', `icap://u:${PASS}@h/avscan`], /cannot carry credentials/],
    [['scan', 'f', '--server', `https://h/avscan?apikey=${PASS}`], /--server must start with icap/],
  ])('never prints a URL password on stderr: %j', async (argv, message) => {
    const r = await run(argv);
    expect(r.code).toBe(64);
    expect(r.stderr).toMatch(message);
    expect(r.stderr + r.stdout).not.toContain(PASS);
  });

  it('takes the URL password from ICAPKIT_SERVER without printing it', async () => {
    const r = await run(['scan', 'f'], { env: { ICAPKIT_SERVER: `icap://u:${PASS}@h:1x/avscan` } });
    expect(r.code).toBe(64);
    expect(r.stderr).not.toContain(PASS);
  });

  it.each([
    ['X-Api-Key SEC_HDRNOCOLON', 'X-Api-Key'],
    ['X-Api-Key\tSEC_HDRNOCOLON', 'X-Api-Key'],
    ['Bad Name: SEC_HDRNOCOLON', 'Bad'],
    ['SEC_HDRNOCOLON', undefined],
    ['{bad}: SEC_HDRNOCOLON', undefined],
  ])('names a malformed --header %j by its name only', async (header, name) => {
    const r = await run(['scan', 'f', '--server', 'icap://h/avscan', '--header', header]);
    expect(r.code).toBe(64);
    expect(r.stderr).toMatch(/--header needs 'Name: value'/);
    expect(r.stderr + r.stdout).not.toContain('SEC_HDRNOCOLON');
    if (name !== undefined) expect(r.stderr).toContain(JSON.stringify(name));
  });
});

describe("the profile's icapHeaders in the log", () => {
  let icap: IcapTestServer | undefined;
  let engine: IcapEngine | undefined;
  let app: ScanServer | undefined;

  afterEach(async () => {
    await app?.close();
    await engine?.close();
    await icap?.close();
    app = undefined;
    engine = undefined;
    icap = undefined;
  });

  const HEADERS = {
    'X-Scanner-Credential': 'SEC_CRED_1',
    'X-Signature': 'SEC_SIG_2',
    'X-License': 'SEC_LIC_3',
    'X-Tenant': 'SEC_TENANT_4',
    'X-MDCLOUD-APIKEY': 'SEC_APIKEY_5',
  };

  function post(url: string): Promise<number> {
    return new Promise((resolve, reject) => {
      const req = httpRequest(
        new URL('/upload/a.txt', url),
        { method: 'POST', headers: { 'content-type': 'text/plain', 'content-length': '5' } },
        (res) => {
          res.resume();
          res.on('end', () => resolve(res.statusCode!));
        },
      );
      req.on('error', reject);
      req.end('hello');
    });
  }

  it.each([
    ['by default', {}],
    ['with redactHeaders: [] (no opt-out)', { redactHeaders: [] as string[] }],
    ['with other redactHeaders', { redactHeaders: ['X-Other'] }],
  ])('are redacted whatever their names (%s), and still sent', async (_, extra) => {
    icap = await startIcapServer({});
    const onLogs: IcapLog[] = [];
    const logged: unknown[] = [];
    const logger = Object.fromEntries(
      ['debug', 'info', 'warn', 'error'].map((level) => [level, (obj: unknown) => logged.push(obj)]),
    ) as unknown as PinoLike;
    const published: unknown[] = [];
    const onEnd = (m: unknown) => published.push(m);
    dc.subscribe('icapkit:scan:end', onEnd);
    try {
      engine = createEngine({
        name: 'p',
        poolGroup: icap.url(),
        serviceUri: '/avscan',
        icapHeaders: HEADERS,
        onLog: (l) => onLogs.push(l),
        logger,
        ...extra,
      });
      app = await startScanServer(engine);
      expect(await post(app.url)).toBe(200);
    } finally {
      dc.unsubscribe('icapkit:scan:end', onEnd);
    }
    const sent = app.logs[0]!.request_logs[0]!.icap_headers_sent_to_server;
    for (const name of Object.keys(HEADERS)) expect(sent).toContain(`${name}: [REDACTED]`);
    expect(onLogs).toHaveLength(1);
    expect(logged.length).toBeGreaterThan(0);
    expect(published.length).toBeGreaterThan(0);
    const everything = JSON.stringify([app.logs, onLogs, logged, published]);
    for (const value of Object.values(HEADERS)) expect(everything).not.toContain(value);
    const got = icap.requests.at(-1)!.headers;
    for (const [name, value] of Object.entries(HEADERS)) expect(got.get(name.toLowerCase())).toBe(value);
  });
});
