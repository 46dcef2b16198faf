/**
 * A pool's `tls` reaches every server of the pool: an `icap://` URL in such a pool is refused
 * (no silent cleartext), an `icaps://` URL takes the pool's TLS options, and an object server's
 * own `tls` adds to the pool's options rather than replacing them with the profile's.
 * Server URLs with credentials are refused, and no message echoes a password; so is an object
 * server whose `host` is anything but a host name or an IP address (`user:password@scanner`).
 */
import { describe, expect, it } from 'vitest';
import { type IcapProfile, resolveProfile } from '../../src/engine/profile.js';

const base: IcapProfile = { name: 'p', poolGroup: 'icap://127.0.0.1', serviceUri: '/avscan' };

function rejection(over: Partial<IcapProfile>): { code: string; field: string; message: string } {
  try {
    resolveProfile({ ...base, ...over } as IcapProfile);
  } catch (err) {
    const e = err as { code: string; field: string; message: string };
    return { code: e.code, field: e.field, message: e.message };
  }
  return expect.unreachable('profile should be rejected');
}

describe('a pool with tls', () => {
  it.each([
    ['tls: true', true],
    ['tls: { ca }', { ca: 'POOL-CA' }],
    ['tls: {}', {}],
  ] as const)('refuses an icap:// URL server (%s), naming the server', (_, tls) => {
    const e = rejection({
      poolGroup: {
        pools: [
          { name: 'plain', servers: ['icap://a'] },
          { name: 'secure', tls, servers: ['icaps://b', 'icap://scanner.example:1344'] },
        ],
      },
    });
    expect(e.code).toBe('ICAP_ERR_INVALID_PROFILE');
    expect(e.field).toBe('profile.poolGroup.pools[1].servers[1]');
    expect(e.message).toContain('profile.poolGroup.pools[1].servers[1]');
    expect(e.message).toContain("use icaps:// or drop the pool's tls");
  });

  it('still accepts icap:// URLs in a pool without tls (or with tls: false)', () => {
    const p = resolveProfile({
      ...base,
      tls: { ca: 'PROFILE-CA' },
      poolGroup: {
        pools: [
          { name: 'a', servers: ['icap://a'] },
          { name: 'b', tls: false, servers: ['icap://b'] },
        ],
      },
    });
    expect(p.pools.flatMap((x) => x.servers.map((s) => [s.url, s.tls]))).toEqual([
      ['icap://a:1344', false],
      ['icap://b:1344', false],
    ]);
  });

  it("gives an icaps:// URL server the pool's TLS options (over the profile's)", () => {
    const p = resolveProfile({
      ...base,
      tls: { ca: 'PROFILE-CA', minVersion: 'TLSv1.3' },
      poolGroup: { pools: [{ name: 's', tls: { ca: 'POOL-CA' }, servers: ['icaps://b:2000'] }] },
    });
    expect(p.pools[0]!.servers[0]).toEqual({
      host: 'b',
      port: 2000,
      url: 'icaps://b:2000',
      tls: { ca: 'POOL-CA', minVersion: 'TLSv1.3' },
    });
  });

  it("merges an object server's own tls with the pool's options, then the profile's", () => {
    const p = resolveProfile({
      ...base,
      tls: { minVersion: 'TLSv1.3', ca: 'PROFILE-CA' },
      poolGroup: {
        pools: [
          {
            name: 's',
            tls: { ca: 'POOL-CA' },
            servers: [
              { host: 'a', tls: true },
              { host: 'b', tls: { servername: 'scan.example' } },
              { host: 'c' },
            ],
          },
        ],
      },
    });
    expect(p.pools[0]!.servers.map((s) => s.tls)).toEqual([
      { ca: 'POOL-CA', minVersion: 'TLSv1.3' },
      { ca: 'POOL-CA', minVersion: 'TLSv1.3', servername: 'scan.example' },
      { ca: 'POOL-CA', minVersion: 'TLSv1.3' },
    ]);
  });

  it("gives an object server's tls: true the profile's options in a pool without tls", () => {
    const p = resolveProfile({
      ...base,
      tls: { ca: 'PROFILE-CA' },
      poolGroup: { pools: [{ name: 's', servers: [{ host: 'a', tls: true }] }] },
    });
    expect(p.pools[0]!.servers[0]).toMatchObject({ url: 'icaps://a:11344', tls: { ca: 'PROFILE-CA' } });
  });
});

describe('credentials in a server URL', () => {
  it.each([
    ['profile.poolGroup', 'icaps://user:S3CRETPASS@scanner.example'],
    ['profile.poolGroup', 'icap://user:S3CRETPASS@scanner.example:1344'],
    ['profile.poolGroup', 'icap://S3CRETPASS@scanner.example'],
  ])('are refused at start-up (%s = %s), without echoing the password', (field, url) => {
    const e = rejection({ poolGroup: url });
    expect(e).toMatchObject({ code: 'ICAP_ERR_INVALID_PROFILE', field });
    expect(e.message).toMatch(/must not contain credentials/);
    expect(e.message).not.toContain('S3CRETPASS');
    expect(e.message).toContain('***@scanner.example');
  });

  it('are refused in a list and in a pool, naming the exact field', () => {
    expect(rejection({ poolGroup: ['icap://a', 'icaps://u:S3CRETPASS@b'] }).field).toBe(
      'profile.poolGroup[1]',
    );
    const e = rejection({
      poolGroup: { pools: [{ name: 'x', tls: true, servers: ['icaps://u:S3CRETPASS@b'] }] },
    });
    expect(e.field).toBe('profile.poolGroup.pools[0].servers[0]');
    expect(e.message).not.toContain('S3CRETPASS');
  });
});

describe('server URLs in start-up errors', () => {
  it.each([
    ['https://user:S3CRETPASS@scanner.example', /must start with icap:\/\/ or icaps:\/\//],
    ['icaps://user:S3CRETPASS@scanner.example:99999', /is not a valid URL/],
    ['icaps://user:S3C/RET@PASS@scanner.example:99999', /is not a valid URL/],
    ['icap://user:S3CRETPASS@[::1', /is not a valid URL/],
  ])('never echo the password of %s', (url, message) => {
    const e = rejection({ poolGroup: url });
    expect(e.code).toBe('ICAP_ERR_INVALID_PROFILE');
    expect(e.message).toMatch(message);
    expect(e.message).not.toMatch(/S3C|RET|PASS|user/);
    expect(e.message).toContain('***@');
  });

  it('never echo a query (a key may be there) of a URL they refuse', () => {
    const e = rejection({ poolGroup: 'https://scanner.example/?apikey=S3CRETKEY' });
    expect(e.message).toContain('"https://scanner.example/?***"');
    expect(e.message).not.toContain('S3CRETKEY');
    const c = rejection({ poolGroup: 'icaps://u:S3CRETPASS@scanner.example/avscan?apikey=S3CRETKEY' });
    expect(c.message).toMatch(/must not contain credentials/);
    expect(c.message).not.toMatch(/S3CRET/);
  });

  it('never echo the value in an icapHeaders key that is not a header name', () => {
    const e = rejection({ icapHeaders: { 'X-Api-Key: S3CRETKEY': '' } });
    expect(e).toMatchObject({ code: 'ICAP_ERR_INVALID_PROFILE', field: 'profile.icapHeaders' });
    expect(e.message).toContain('"X-Api-Key"');
    expect(e.message).not.toContain('S3CRETKEY');
  });

  it('never echo a password in an nsxDefenderConfig.statusUrl', () => {
    const e = rejection({ nsxDefenderConfig: { statusUrl: 'ftp://u:S3CRETPASS@lastline.example/$uuid' } });
    expect(e.field).toBe('profile.nsxDefenderConfig.statusUrl');
    expect(e.message).not.toContain('S3CRETPASS');
  });
});

describe("an object server's host", () => {
  it.each([
    'user:S3CRETPASS@scanner.example',
    'S3CRETPASS@scanner.example',
    'scanner.example:1344',
    'icap://scanner.example',
    'scanner.example/avscan',
    ' scanner.example',
    'scanner example',
    'scanner..example',
    '-scanner.example',
    '[scanner.example]',
    '[::1',
    'x'.repeat(64),
  ])('%j is refused at start-up, naming the field, without echoing it', (host) => {
    const e = rejection({ poolGroup: { pools: [{ name: 'p', servers: [{ host, port: 1344 }] }] } });
    expect(e).toMatchObject({
      code: 'ICAP_ERR_INVALID_PROFILE',
      field: 'profile.poolGroup.pools[0].servers[0].host',
    });
    expect(e.message).toMatch(/must be a host name or an IP address alone/);
    expect(e.message).not.toContain('S3CRETPASS');
    expect(e.message).not.toContain(host);
  });

  it.each([
    ['scanner.example', 'icap://scanner.example:1344'],
    ['scanner_1.internal.', 'icap://scanner_1.internal.:1344'],
    ['localhost', 'icap://localhost:1344'],
    ['10.0.0.5', 'icap://10.0.0.5:1344'],
    ['::1', 'icap://[::1]:1344'],
    ['[::1]', 'icap://[::1]:1344'],
    ['fe80::1', 'icap://[fe80::1]:1344'],
  ])('%j is taken (%s)', (host, url) => {
    const p = resolveProfile({
      ...base,
      poolGroup: { pools: [{ name: 'p', servers: [{ host, port: 1344 }] }] },
    });
    expect(p.pools[0]!.servers[0]).toMatchObject({ url });
  });
});
