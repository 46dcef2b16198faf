import { describe, expect, it } from 'vitest';
import { type IcapProfile, parseSize, resolveProfile } from '../../src/engine/profile.js';
import { VENDORS } from '../../src/engine/verdict/index.js';

const base: IcapProfile = { name: 'p', poolGroup: 'icap://127.0.0.1', serviceUri: '/avscan' };

function fails(over: Record<string, unknown>, field: string, message: RegExp) {
  try {
    resolveProfile({ ...base, ...over } as IcapProfile);
    expect.unreachable('profile should be rejected');
  } catch (err) {
    expect(err).toMatchObject({ code: 'ICAP_ERR_INVALID_PROFILE', field });
    expect((err as Error).message).toMatch(message);
  }
}

describe('resolveProfile', () => {
  it('fills the reference defaults', () => {
    const p = resolveProfile(base);
    expect(p).toMatchObject({
      vendor: 'generic',
      allow204: true,
      bufferSize: 50 * 1024 * 1024,
      bufferSizeExceedAction: 'fail-closed',
      enablePreview: true,
      previewSize: 5000,
      responseTimeout: 60_000,
      slowResponseWarningThreshold: 10_000,
      bodyTimeout: 30_000,
      contentEncoding: 'decode',
      failAction: 'fail-closed',
      nsxStatusUrl: 'https://user.lastline.com/portal#/analyst/task/$uuid/overview',
      blockResponse: 'page',
    });
    expect(p.pools).toEqual([
      {
        name: 'p-pool',
        priority: 10,
        loadBalancing: 'least-outstanding',
        servers: [{ host: '127.0.0.1', port: 1344, tls: false, url: 'icap://127.0.0.1:1344' }],
      },
    ]);
  });

  it('accepts the pool group shorthand forms and the full form, ICAPS on 11344', () => {
    const list = resolveProfile({ ...base, poolGroup: ['icap://a:1345', 'icaps://b'] });
    expect(list.pools[0]!.servers.map((s) => s.url)).toEqual(['icap://a:1345', 'icaps://b:11344']);
    const full = resolveProfile({
      ...base,
      tls: { ca: 'CA' },
      poolGroup: {
        name: 'G',
        pools: [
          { name: 'low', priority: 1, servers: ['icap://c'] },
          { name: 'high', priority: 5, tls: true, servers: [{ host: 'd' }], loadBalancing: 'round-robin' },
        ],
      },
    });
    expect(full.poolGroupName).toBe('G');
    expect(full.pools.map((p) => p.name)).toEqual(['high', 'low']);
    expect(full.pools[0]!.servers[0]).toMatchObject({ url: 'icaps://d:11344', tls: { ca: 'CA' } });
    expect(full.pools[0]!.loadBalancing).toBe('round-robin');
  });

  it('accepts every vendor profile', () => {
    expect(VENDORS).toEqual([
      'generic',
      'opswat',
      'nsx-defender',
      'c-icap',
      'kaspersky',
      'eset',
      'symantec',
      'mcafee',
      'trend-micro',
      'sophos',
      'f-secure',
    ]);
    for (const vendor of VENDORS) expect(resolveProfile({ ...base, vendor }).vendor).toBe(vendor);
  });

  it('parses sizes', () => {
    expect(parseSize('50mb', 'f')).toBe(52_428_800);
    expect(parseSize('512 KiB', 'f')).toBe(524_288);
    expect(parseSize('1.5gb', 'f')).toBe(1_610_612_736);
    expect(parseSize(100, 'f')).toBe(100);
    expect(resolveProfile({ ...base, bufferSize: '8mb' }).bufferSize).toBe(8 * 1024 * 1024);
  });

  it.each([
    [{ name: '' }, 'profile.name', /is required/],
    [{ serviceUri: 'avscan' }, 'profile.serviceUri', /starting with '\/'/],
    [{ vendor: 'avira' }, 'profile.vendor', /must be one of 'generic', 'opswat', 'nsx-defender', 'c-icap'/],
    [{ vendor: 'ClamAV' }, 'profile.vendor', /\(got "ClamAV"\); did you mean 'c-icap'\?/],
    [{ vendor: 'Kaspersky' }, 'profile.vendor', /did you mean 'kaspersky'\?/],
    [{ vendor: 42 }, 'profile.vendor', /must be one of .* \(got 42\)$/],
    [{ previewSize: 6000 }, 'profile.previewSize', /integer from 0 to 5000 bytes \(got 6000\)/],
    [{ previewSize: 1.5 }, 'profile.previewSize', /integer from 0 to 5000/],
    [{ responseTimeout: 10 }, 'profile.responseTimeout', /from 50 to 3600000 ms/],
    [{ bodyTimeout: 0 }, 'profile.bodyTimeout', /from 50 to 3600000 ms/],
    [{ contentEncoding: 'inflate' }, 'profile.contentEncoding', /'decode', 'refuse'/],
    [{ bufferSize: '50 parsecs' }, 'profile.bufferSize', /size such as '50mb'/],
    [{ bufferSize: 0 }, 'profile.bufferSize', /from 1 byte to 4gb/],
    [{ failAction: 'closed' }, 'profile.failAction', /'fail-closed', 'fail-open'/],
    [{ bufferSizeExceedAction: 413 }, 'profile.bufferSizeExceedAction', /'fail-closed', 'fail-open'/],
    [{ allow204: 'yes' }, 'profile.allow204', /true or false/],
    [{ poolGroup: undefined }, 'profile.poolGroup', /is required/],
    [{ poolGroup: [] }, 'profile.poolGroup', /at least one/],
    [{ poolGroup: 'http://x' }, 'profile.poolGroup', /icap:\/\/ or icaps:\/\//],
    [{ poolGroup: 'icap://x/avscan' }, 'profile.poolGroup', /serviceUri/],
    [{ poolGroup: { pools: [] } }, 'profile.poolGroup.pools', /non-empty array/],
    [
      { poolGroup: { pools: [{ name: 'a', servers: [] }] } },
      'profile.poolGroup.pools[0].servers',
      /non-empty/,
    ],
    [
      { poolGroup: { pools: [{ name: 'a', servers: [{ host: 'h', port: 70000 }] }] } },
      'profile.poolGroup.pools[0].servers[0].port',
      /1 to 65535/,
    ],
    [
      {
        poolGroup: {
          pools: [
            { name: 'a', servers: ['icap://h'] },
            { name: 'a', servers: ['icap://h'] },
          ],
        },
      },
      'profile.poolGroup.pools[1].name',
      /duplicates/,
    ],
    [{ nsxDefenderConfig: { statusUrl: 'ftp://x' } }, 'profile.nsxDefenderConfig.statusUrl', /http\(s\) URL/],
    [{ onLog: 'console' }, 'profile.onLog', /function/],
    [{ logger: { info() {} } }, 'profile.logger', /pino-compatible/],
    [{ icapHeaders: { 'X-Key': 'a\nb' } }, 'profile.icapHeaders.X-Key', /without CR, LF/],
    [{ icapHeaders: { Encapsulated: 'x' } }, 'profile.icapHeaders.Encapsulated', /cannot be overridden/],
    [{ bufferSzie: 10 }, 'profile.bufferSzie', /is not a known option/],
    [{ connection: { maxConnections: 0 } }, 'profile.connection.maxConnections', /from 1 to 10000/],
    [{ rules: [{ name: 'r', action: 'nope' }] }, 'profile.rules[0].action', /'enable-icap' or 'skip'/],
  ])('%j is rejected naming %s', (over, field, message) => {
    fails(over, field, message);
  });

  it('redacts every one of its own ICAP headers by default, whatever its name', () => {
    const p = resolveProfile({
      ...base,
      icapHeaders: { 'X-MDCLOUD-APIKEY': 'secret', 'X-Custom-Token': 't', 'X-Plain': 'v' },
    });
    expect(p.redactHeaders.has('x-mdcloud-apikey')).toBe(true);
    expect(p.redactHeaders.has('x-custom-token')).toBe(true);
    expect(p.redactHeaders.has('x-plain')).toBe(true);
    expect(p.redactHeaders.has('x-other')).toBe(false);
  });
});
