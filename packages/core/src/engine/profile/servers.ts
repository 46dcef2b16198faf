/** The profile's `poolGroup`: pools and servers resolved, each server with the TLS options it uses. */

import { isIP } from 'node:net';
import { DEFAULT_ICAP_PORT, DEFAULT_ICAPS_PORT } from '../../client/client.js';
import type { IcapTlsOptions } from '../../client/connection.js';
import { maskUrl } from '../../protocol/shown-uri.js';
import { checkKeys, describe, fail, integer, oneOf } from './check.js';
import type {
  IcapProfile,
  LoadBalancing,
  PoolGroupConfig,
  ResolvedPool,
  ResolvedServer,
  ServerConfig,
} from './types.js';

export function resolvePoolGroup(
  v: IcapProfile['poolGroup'],
  profileName: string,
  tlsDefault: IcapTlsOptions | undefined,
  loadBalancing: LoadBalancing,
): { name: string; pools: ResolvedPool[] } {
  const field = 'profile.poolGroup';
  const defaultName = `${profileName}-pool-group`;
  if (typeof v === 'string' || Array.isArray(v)) {
    const urls: unknown[] = typeof v === 'string' ? [v] : [...(v as readonly unknown[])];
    if (urls.length === 0) fail(field, 'must name at least one ICAP server');
    const servers = urls.map((u, i) =>
      serverFromUrl(u, typeof v === 'string' ? field : `${field}[${i}]`, tlsDefault),
    );
    return {
      name: defaultName,
      pools: [{ name: `${profileName}-pool`, priority: 10, servers, loadBalancing }],
    };
  }
  if (typeof v !== 'object' || v === null) {
    fail(field, `is required: an icap:// URL, a list of URLs, or { pools: [...] } (got ${describe(v)})`);
  }
  const group = v as PoolGroupConfig;
  checkKeys(group, new Set(['name', 'pools']), field);
  if (group.name !== undefined && (typeof group.name !== 'string' || group.name === ''))
    fail(`${field}.name`, 'must be a non-empty string');
  if (!Array.isArray(group.pools) || group.pools.length === 0)
    fail(`${field}.pools`, 'must be a non-empty array of pools');
  const names = new Set<string>();
  const pools = group.pools.map((pool, i): ResolvedPool => {
    const pf = `${field}.pools[${i}]`;
    if (typeof pool !== 'object' || pool === null) fail(pf, 'must be an object');
    checkKeys(pool, new Set(['name', 'priority', 'servers', 'tls', 'loadBalancing']), pf);
    if (typeof pool.name !== 'string' || pool.name === '')
      fail(`${pf}.name`, 'is required: a non-empty string');
    if (names.has(pool.name)) fail(`${pf}.name`, `duplicates pool name ${JSON.stringify(pool.name)}`);
    names.add(pool.name);
    const priority = integer(pool.priority, `${pf}.priority`, 10, 0, 1_000_000, '');
    if (!Array.isArray(pool.servers) || pool.servers.length === 0)
      fail(`${pf}.servers`, 'must be a non-empty array');
    const poolTls = tlsOption(pool.tls, `${pf}.tls`, tlsDefault);
    const servers = (pool.servers as ReadonlyArray<string | ServerConfig>).map((s, k): ResolvedServer => {
      const sf = `${pf}.servers[${k}]`;
      if (typeof s === 'string') return serverFromUrl(s, sf, tlsDefault, poolTls);
      if (typeof s !== 'object' || s === null) fail(sf, 'must be an icap:// URL or { host, port, tls }');
      checkKeys(s, new Set(['host', 'port', 'tls']), sf);
      if (typeof s.host !== 'string' || s.host === '') fail(`${sf}.host`, 'is required');
      const host = hostOf(s.host, `${sf}.host`);
      // A server's own `tls` (true, or some options) adds to its pool's, which add to the profile's.
      const tls = s.tls === undefined ? poolTls : tlsOption(s.tls, `${sf}.tls`, poolTls || tlsDefault);
      const port = integer(s.port, `${sf}.port`, tls ? DEFAULT_ICAPS_PORT : DEFAULT_ICAP_PORT, 1, 65535, '');
      return makeServer(host, port, tls);
    });
    return {
      name: pool.name,
      priority,
      servers,
      loadBalancing: oneOf(
        pool.loadBalancing,
        ['least-outstanding', 'round-robin'],
        `${pf}.loadBalancing`,
        loadBalancing,
      ),
    };
  });
  // Higher priority first; a stable sort keeps the configured order among equals.
  pools.sort((a, b) => b.priority - a.priority);
  return { name: group.name ?? defaultName, pools };
}

function tlsOption(
  v: unknown,
  field: string,
  tlsDefault: IcapTlsOptions | undefined,
): IcapTlsOptions | false {
  if (v === undefined || v === false) return false;
  if (v === true) return tlsDefault ?? {};
  if (typeof v === 'object' && v !== null) return { ...(tlsDefault ?? {}), ...(v as IcapTlsOptions) };
  fail(field, `must be true, false or TLS options (got ${describe(v)})`);
}

/**
 * A server given as a URL. Messages show it with any `user:password@` masked. A URL with
 * credentials is refused (nothing would send them), and so is an `icap://` URL in a pool with
 * `tls`: that pool's uploads are meant to go over TLS, not in cleartext to that one server.
 */
function serverFromUrl(
  u: unknown,
  field: string,
  tlsDefault: IcapTlsOptions | undefined,
  poolTls: IcapTlsOptions | false = false,
): ResolvedServer {
  if (typeof u !== 'string') fail(field, `must be an icap:// or icaps:// URL (got ${describe(u)})`);
  const shown = JSON.stringify(maskUrl(u));
  let url: URL;
  try {
    url = new URL(u);
  } catch {
    fail(field, `is not a valid URL: ${shown}`);
  }
  if (url.protocol !== 'icap:' && url.protocol !== 'icaps:')
    fail(field, `must start with icap:// or icaps:// (got ${shown})`);
  if (url.username !== '' || url.password !== '') {
    fail(
      field,
      `must not contain credentials (user:password@), which are never sent to the server; use profile.icapHeaders for an API key (got ${shown})`,
    );
  }
  if (url.pathname !== '' && url.pathname !== '/') {
    fail(
      field,
      `must not contain a service path (${JSON.stringify(url.pathname)}): set profile.serviceUri instead`,
    );
  }
  const secure = url.protocol === 'icaps:';
  if (!secure && poolTls !== false) {
    fail(field, `is an icap:// URL (cleartext) in a pool with tls: use icaps:// or drop the pool's tls`);
  }
  const tls = secure ? poolTls || tlsDefault || {} : false;
  const port = url.port === '' ? (secure ? DEFAULT_ICAPS_PORT : DEFAULT_ICAP_PORT) : Number(url.port);
  return makeServer(url.hostname.replace(/^\[(.*)\]$/, '$1'), port, tls);
}

/** A DNS name: labels of letters, digits, `-` and `_`, at most 253 characters, a final dot allowed. */
const HOST_NAME =
  /^(?=.{1,253}\.?$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?$/;

/**
 * An object server's `host`: a host name or an IP address (an IPv6 one with or without its
 * brackets), nothing else. Not echoed when refused: `user:password@scanner` puts a secret there.
 */
function hostOf(host: string, field: string): string {
  const bare = host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host;
  if (isIP(bare) !== 0 || (bare === host && HOST_NAME.test(host))) return bare;
  return fail(
    field,
    'must be a host name or an IP address alone: no scheme, user@, port or path (the port is `port`; credentials are never sent to the server, use profile.icapHeaders for an API key)',
  );
}

function makeServer(host: string, port: number, tls: IcapTlsOptions | false): ResolvedServer {
  const h = host.includes(':') ? `[${host}]` : host;
  return { host, port, tls, url: `${tls ? 'icaps' : 'icap'}://${h}:${port}` };
}
