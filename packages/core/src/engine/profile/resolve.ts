/** resolveProfile: an IcapProfile validated, with every default filled in. */

import { tmpdir } from 'node:os';
import { isSafeFieldValue, isToken } from '../../protocol/headers.js';
import { maskQuery, maskUrl } from '../../protocol/shown-uri.js';
import { compilePolicy } from '../policy.js';
import { DEFAULT_NSX_STATUS_URL } from '../verdict/index.js';
import { bool, checkKeys, describe, fail, integer, oneOf, parseSize, vendorOf } from './check.js';
import { ALWAYS_REDACTED, PROFILE_DEFAULTS, PROFILE_KEYS } from './defaults.js';
import { resolvePoolGroup } from './servers.js';
import type { IcapProfile, MultipartLimits, ResolvedProfile } from './types.js';

const MAX_BUFFER = 4 * 1024 ** 3;

export function resolveProfile(profile: IcapProfile): ResolvedProfile {
  if (typeof profile !== 'object' || profile === null || Array.isArray(profile)) {
    fail('profile', `must be an object (got ${describe(profile)})`);
  }
  checkKeys(profile, PROFILE_KEYS, 'profile');
  const p = profile as IcapProfile;
  if (typeof p.name !== 'string' || p.name.trim() === '')
    fail('profile.name', `is required: a non-empty string (got ${describe(p.name)})`);
  // No whitespace or control character: the request line could not carry it (the encoder
  // refuses it at every request). What is shown of it has its arguments masked (shown-uri.ts).
  if (typeof p.serviceUri !== 'string' || !/^\/[^\s\x00-\x1f\x7f]*$/.test(p.serviceUri)) {
    const got = typeof p.serviceUri === 'string' ? describe(maskQuery(p.serviceUri)) : describe(p.serviceUri);
    fail(
      'profile.serviceUri',
      `must be the service path starting with '/', without spaces or control characters, e.g. '/avscan' (got ${got})`,
    );
  }
  const tlsDefault = p.tls;
  if (tlsDefault !== undefined && (typeof tlsDefault !== 'object' || tlsDefault === null)) {
    fail('profile.tls', `must be an object of TLS options (got ${describe(tlsDefault)})`);
  }
  const loadBalancing = oneOf(
    p.loadBalancing,
    ['least-outstanding', 'round-robin'],
    'profile.loadBalancing',
    'least-outstanding',
  );
  const { name: poolGroupName, pools } = resolvePoolGroup(p.poolGroup, p.name, tlsDefault, loadBalancing);

  const bufferSize = parseSize(p.bufferSize ?? PROFILE_DEFAULTS.bufferSize, 'profile.bufferSize');
  if (!Number.isInteger(bufferSize) || bufferSize < 1 || bufferSize > MAX_BUFFER) {
    fail('profile.bufferSize', `must be from 1 byte to 4gb (got ${describe(p.bufferSize)})`);
  }
  const responseTimeout = integer(
    p.responseTimeout,
    'profile.responseTimeout',
    PROFILE_DEFAULTS.responseTimeout,
    50,
    3_600_000,
    'ms',
  );
  const nsx = p.nsxDefenderConfig;
  if (nsx !== undefined) {
    if (typeof nsx !== 'object' || nsx === null) fail('profile.nsxDefenderConfig', 'must be an object');
    checkKeys(nsx, new Set(['statusUrl', 'forwardLastlineHeaders']), 'profile.nsxDefenderConfig');
    if (
      nsx.statusUrl !== undefined &&
      (typeof nsx.statusUrl !== 'string' || !/^https?:\/\//.test(nsx.statusUrl))
    ) {
      fail(
        'profile.nsxDefenderConfig.statusUrl',
        `must be an http(s) URL template with $uuid (got ${describe(typeof nsx.statusUrl === 'string' ? maskUrl(nsx.statusUrl) : nsx.statusUrl)})`,
      );
    }
  }
  if (p.onLog !== undefined && typeof p.onLog !== 'function')
    fail('profile.onLog', `must be a function (got ${describe(p.onLog)})`);
  if (p.logger !== undefined) {
    for (const level of ['debug', 'info', 'warn', 'error'] as const) {
      if (typeof (p.logger as unknown as Record<string, unknown>)[level] !== 'function') {
        fail('profile.logger', `must be a pino-compatible logger with a ${level}() method`);
      }
    }
  }
  const icapHeaders: Array<[string, string]> = [];
  if (p.icapHeaders !== undefined) {
    if (typeof p.icapHeaders !== 'object' || p.icapHeaders === null)
      fail('profile.icapHeaders', 'must be an object of header names to values');
    for (const [k, v] of Object.entries(p.icapHeaders)) {
      // Only what looks like the name is shown: a key such as 'X-Api-Key: value' holds a secret.
      if (!isToken(k))
        fail(
          'profile.icapHeaders',
          `has a key that is not a valid header name (${describe(k.split(/[\s:]/)[0]!.slice(0, 40))})`,
        );
      if (typeof v !== 'string' || !isSafeFieldValue(v))
        fail(`profile.icapHeaders.${k}`, 'must be a string without CR, LF or NUL');
      if (['host', 'encapsulated', 'preview', 'allow'].includes(k.toLowerCase())) {
        fail(`profile.icapHeaders.${k}`, 'is set by the client itself and cannot be overridden');
      }
      icapHeaders.push([k, v]);
    }
  }
  const redact = new Set(ALWAYS_REDACTED);
  if (p.redactHeaders !== undefined) {
    if (!Array.isArray(p.redactHeaders)) fail('profile.redactHeaders', 'must be an array of header names');
    p.redactHeaders.forEach((h, i) => {
      if (typeof h !== 'string' || !isToken(h)) fail(`profile.redactHeaders[${i}]`, 'must be a header name');
      redact.add(h.toLowerCase());
    });
  }
  // The profile's own ICAP headers are configuration constants (API keys, tenants, licences):
  // their values are redacted whatever their names, and nothing in the profile can unredact them.
  for (const [k] of icapHeaders) redact.add(k.toLowerCase());
  const conn = p.connection ?? {};
  if (typeof conn !== 'object' || conn === null) fail('profile.connection', 'must be an object');
  checkKeys(
    conn,
    new Set([
      'maxConnections',
      'connectTimeout',
      'keepAliveTimeout',
      'ioTimeout',
      'stallTimeout',
      'queueTimeout',
    ]),
    'profile.connection',
  );
  const health = p.health ?? {};
  if (typeof health !== 'object' || health === null) fail('profile.health', 'must be an object');
  checkKeys(
    health,
    new Set(['failureLimit', 'probeInterval', 'maxProbeInterval', 'successThreshold']),
    'profile.health',
  );
  const maxConnections = integer(
    conn.maxConnections,
    'profile.connection.maxConnections',
    PROFILE_DEFAULTS.maxConnections,
    1,
    10_000,
    'connections',
  );
  // Half the connections may carry bodies still arriving; the rest stay for bodies that are here.
  const maxStreamingUploads = integer(
    p.maxStreamingUploads,
    'profile.maxStreamingUploads',
    Math.max(1, Math.floor(maxConnections / 2)),
    0,
    maxConnections,
    'uploads (connection.maxConnections)',
  );
  const connectTimeout = integer(
    conn.connectTimeout,
    'profile.connection.connectTimeout',
    PROFILE_DEFAULTS.connectTimeout,
    1,
    3_600_000,
    'ms',
  );
  const stallTimeout = integer(
    conn.stallTimeout,
    'profile.connection.stallTimeout',
    Math.max(1, Math.floor(responseTimeout / 3)),
    1,
    3_600_000,
    'ms',
  );
  const probeInterval = integer(
    health.probeInterval,
    'profile.health.probeInterval',
    PROFILE_DEFAULTS.probeInterval,
    10,
    3_600_000,
    'ms',
  );

  const previewMinBodySize = parseSize(
    p.previewMinBodySize ?? PROFILE_DEFAULTS.previewMinBodySize,
    'profile.previewMinBodySize',
  );
  if (!Number.isInteger(previewMinBodySize) || previewMinBodySize < 0 || previewMinBodySize > MAX_BUFFER) {
    fail('profile.previewMinBodySize', `must be from 0 to 4gb (got ${describe(p.previewMinBodySize)})`);
  }
  const memoryThreshold = parseSize(
    p.memoryThreshold ?? PROFILE_DEFAULTS.memoryThreshold,
    'profile.memoryThreshold',
  );
  if (!Number.isInteger(memoryThreshold) || memoryThreshold < 0 || memoryThreshold > MAX_BUFFER) {
    fail('profile.memoryThreshold', `must be from 0 to 4gb (got ${describe(p.memoryThreshold)})`);
  }
  if (p.spoolDir !== undefined && (typeof p.spoolDir !== 'string' || p.spoolDir === '')) {
    fail('profile.spoolDir', `must be a folder path (got ${describe(p.spoolDir)})`);
  }
  let allowedContentTypes: string[] | undefined;
  if (p.allowedContentTypes !== undefined) {
    if (!Array.isArray(p.allowedContentTypes) || p.allowedContentTypes.length === 0) {
      fail('profile.allowedContentTypes', 'must be a non-empty array of media types');
    }
    allowedContentTypes = p.allowedContentTypes.map((t, i) => {
      const lower = typeof t === 'string' ? t.trim().toLowerCase() : '';
      if (!/^[a-z0-9!#$&^_.+-]+\/(?:\*|[a-z0-9!#$&^_.+-]+)$/.test(lower)) {
        fail(
          `profile.allowedContentTypes[${i}]`,
          `is not a media type such as 'image/png' or 'image/*' (got ${describe(t)})`,
        );
      }
      return lower;
    });
  }
  const limits = p.multipartLimits ?? {};
  if (typeof limits !== 'object' || limits === null) fail('profile.multipartLimits', 'must be an object');
  checkKeys(
    limits,
    new Set([
      'files',
      'fields',
      'parts',
      'fileSize',
      'fieldSize',
      'fieldNameSize',
      'headerPairs',
      'headerSize',
    ]),
    'profile.multipartLimits',
  );
  const lim = (k: keyof MultipartLimits, fallback: number, max: number) =>
    integer(limits[k], `profile.multipartLimits.${k}`, fallback, 1, max, k.endsWith('Size') ? 'bytes' : '');

  const metricsOptions = p.metrics ?? {};
  if (typeof metricsOptions !== 'object' || metricsOptions === null)
    fail('profile.metrics', 'must be an object');
  checkKeys(metricsOptions, new Set(['registry', 'prefix']), 'profile.metrics');
  const reg = metricsOptions.registry as unknown as Record<string, unknown> | undefined;
  if (
    reg !== undefined &&
    (typeof reg?.registerMetric !== 'function' || typeof reg.removeSingleMetric !== 'function')
  ) {
    fail('profile.metrics.registry', 'must be a prom-client Registry (registerMetric, removeSingleMetric)');
  }
  if (metricsOptions.prefix !== undefined && !/^[a-zA-Z_:][a-zA-Z0-9_:]*$/.test(metricsOptions.prefix)) {
    fail(
      'profile.metrics.prefix',
      `must be a valid Prometheus metric name prefix (got ${describe(metricsOptions.prefix)})`,
    );
  }

  return {
    name: p.name,
    poolGroupName,
    pools,
    serviceUri: p.serviceUri,
    vendor: vendorOf(p.vendor),
    allow204: bool(p.allow204, 'profile.allow204', PROFILE_DEFAULTS.allow204),
    bufferSize,
    bufferSizeExceedAction: oneOf(
      p.bufferSizeExceedAction,
      ['fail-closed', 'fail-open'],
      'profile.bufferSizeExceedAction',
      PROFILE_DEFAULTS.bufferSizeExceedAction,
    ),
    enablePreview: bool(p.enablePreview, 'profile.enablePreview', PROFILE_DEFAULTS.enablePreview),
    previewSize: integer(
      p.previewSize,
      'profile.previewSize',
      PROFILE_DEFAULTS.previewSize,
      0,
      5000,
      'bytes',
    ),
    adaptivePreview: bool(p.adaptivePreview, 'profile.adaptivePreview', PROFILE_DEFAULTS.adaptivePreview),
    previewMinBodySize,
    responseTimeout,
    slowResponseWarningThreshold: integer(
      p.slowResponseWarningThreshold,
      'profile.slowResponseWarningThreshold',
      PROFILE_DEFAULTS.slowResponseWarningThreshold,
      1,
      3_600_000,
      'ms',
    ),
    bodyTimeout: integer(
      p.bodyTimeout,
      'profile.bodyTimeout',
      PROFILE_DEFAULTS.bodyTimeout,
      50,
      3_600_000,
      'ms',
    ),
    ...intakeOptions(p, previewMinBodySize, bufferSize),
    failAction: oneOf(
      p.failAction,
      ['fail-closed', 'fail-open'],
      'profile.failAction',
      PROFILE_DEFAULTS.failAction,
    ),
    nsxStatusUrl: nsx?.statusUrl ?? DEFAULT_NSX_STATUS_URL,
    forwardLastlineHeaders: bool(
      nsx?.forwardLastlineHeaders,
      'profile.nsxDefenderConfig.forwardLastlineHeaders',
      true,
    ),
    policy: compilePolicy(p.rules, 'profile.rules'),
    onLog: p.onLog,
    logger: p.logger,
    blockResponse: oneOf(
      p.blockResponse,
      ['page', 'relay'],
      'profile.blockResponse',
      PROFILE_DEFAULTS.blockResponse,
    ),
    icapHeaders,
    sendClientIp: bool(p.sendClientIp, 'profile.sendClientIp', false),
    absoluteUri: bool(p.absoluteUri, 'profile.absoluteUri', true),
    transferIgnore: oneOf(p.transferIgnore, ['off', 'extension'], 'profile.transferIgnore', 'off'),
    redactHeaders: redact,
    maxConnections,
    maxStreamingUploads,
    connectTimeout,
    keepAliveTimeout: integer(
      conn.keepAliveTimeout,
      'profile.connection.keepAliveTimeout',
      PROFILE_DEFAULTS.keepAliveTimeout,
      1,
      3_600_000,
      'ms',
    ),
    ioTimeout: integer(conn.ioTimeout, 'profile.connection.ioTimeout', responseTimeout, 1, 3_600_000, 'ms'),
    stallTimeout,
    queueTimeout: integer(
      conn.queueTimeout,
      'profile.connection.queueTimeout',
      Math.min(connectTimeout, stallTimeout),
      1,
      3_600_000,
      'ms',
    ),
    failureLimit: integer(
      health.failureLimit,
      'profile.health.failureLimit',
      PROFILE_DEFAULTS.failureLimit,
      1,
      1000,
      'failures',
    ),
    probeInterval,
    maxProbeInterval: Math.max(
      probeInterval,
      integer(
        health.maxProbeInterval,
        'profile.health.maxProbeInterval',
        PROFILE_DEFAULTS.maxProbeInterval,
        10,
        3_600_000,
        'ms',
      ),
    ),
    successThreshold: integer(
      health.successThreshold,
      'profile.health.successThreshold',
      PROFILE_DEFAULTS.successThreshold,
      1,
      1000,
      'successes',
    ),

    memoryThreshold,
    spoolDir: p.spoolDir ?? tmpdir(),
    allowedContentTypes,
    multipart: oneOf(p.multipart, ['per-file', 'whole'], 'profile.multipart', PROFILE_DEFAULTS.multipart),
    otherMultipart: oneOf(
      p.otherMultipart,
      ['refuse', 'whole'],
      'profile.otherMultipart',
      PROFILE_DEFAULTS.otherMultipart,
    ),
    multipartFields: oneOf(
      p.multipartFields,
      ['scan', 'skip'],
      'profile.multipartFields',
      PROFILE_DEFAULTS.multipartFields,
    ),
    infectedPartAction: oneOf(
      p.infectedPartAction,
      ['block', 'strip'],
      'profile.infectedPartAction',
      PROFILE_DEFAULTS.infectedPartAction,
    ),
    multipartConcurrency: integer(
      p.multipartConcurrency,
      'profile.multipartConcurrency',
      PROFILE_DEFAULTS.multipartConcurrency,
      1,
      64,
      'parts',
    ),
    multipartLimits: {
      files: lim('files', 1000, 100_000),
      fields: lim('fields', 1000, 100_000),
      parts: lim('parts', 2000, 200_000),
      fileSize: lim('fileSize', bufferSize, MAX_BUFFER),
      fieldSize: lim('fieldSize', 1024 * 1024, MAX_BUFFER),
      fieldNameSize: lim('fieldNameSize', 200, 64 * 1024),
      headerPairs: lim('headerPairs', 100, 10_000),
      headerSize: lim('headerSize', 16 * 1024, 1024 * 1024),
    },
    metrics: metricsOptions,
    contentEncoding: oneOf(p.contentEncoding, ['decode', 'refuse'], 'profile.contentEncoding', 'decode'),
    startupCheck: oneOf(p.startupCheck, ['fail', 'warn', 'off'], 'profile.startupCheck', 'fail'),
  };
}

/** The intake options (see IcapProfile: bodyDeadline ... drainAfterAnswer). */
function intakeOptions(
  p: IcapProfile,
  previewMinBodySize: number,
  bufferSize: number,
): Pick<
  ResolvedProfile,
  | 'bodyDeadline'
  | 'holdBodySize'
  | 'minBodyRate'
  | 'lengthRequired'
  | 'maxBodiesPerClient'
  | 'drainBytes'
  | 'drainTimeout'
> {
  const holdBodySize = parseSize(p.holdBodySize ?? previewMinBodySize, 'profile.holdBodySize');
  if (!Number.isInteger(holdBodySize) || holdBodySize < 0 || holdBodySize > MAX_BUFFER)
    fail('profile.holdBodySize', `must be from 0 to 4gb (got ${describe(p.holdBodySize)})`);
  const minBodyRate = parseSize(p.minBodyRate ?? PROFILE_DEFAULTS.minBodyRate, 'profile.minBodyRate');
  if (!Number.isInteger(minBodyRate) || minBodyRate < 0 || minBodyRate > MAX_BUFFER)
    fail('profile.minBodyRate', `must be from 0 to 4gb per second (got ${describe(p.minBodyRate)})`);
  const drain = p.drainAfterAnswer ?? {};
  if (typeof drain !== 'object' || drain === null)
    fail('profile.drainAfterAnswer', `must be an object (got ${describe(drain)})`);
  const drainBytes = parseSize(drain.bytes ?? PROFILE_DEFAULTS.drainBytes, 'profile.drainAfterAnswer.bytes');
  if (!Number.isInteger(drainBytes) || drainBytes < 0 || drainBytes > MAX_BUFFER)
    fail('profile.drainAfterAnswer.bytes', `must be from 0 to 4gb (got ${describe(drain.bytes)})`);
  return {
    bodyDeadline: integer(
      p.bodyDeadline,
      'profile.bodyDeadline',
      PROFILE_DEFAULTS.bodyDeadline,
      50,
      86_400_000,
      'ms',
    ),
    // A body larger than bufferSize is refused anyway: holding more than that means holding it whole.
    holdBodySize: Math.min(holdBodySize, bufferSize),
    minBodyRate,
    lengthRequired: bool(p.lengthRequired, 'profile.lengthRequired', false),
    maxBodiesPerClient:
      p.maxBodiesPerClient === undefined
        ? undefined
        : integer(p.maxBodiesPerClient, 'profile.maxBodiesPerClient', 0, 1, 1_000_000, 'uploads'),
    drainBytes,
    drainTimeout: integer(
      drain.timeout,
      'profile.drainAfterAnswer.timeout',
      PROFILE_DEFAULTS.drainTimeout,
      0,
      3_600_000,
      'ms',
    ),
  };
}
