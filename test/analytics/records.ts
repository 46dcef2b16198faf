/**
 * Synthetic `icap_log` records for the analytics tests, in the engine's shape, and a fake
 * engine (an AnalyticsSource) that hands them to its listeners.
 */
import type {
  AnalyticsSource,
  IcapAction,
  IcapLog,
  IcapRequestLog,
  LogListener,
  ServerStatus,
} from '@icapkit/core';

let clock = Date.UTC(2026, 0, 1, 12, 0, 0);

export function entry(overrides: Partial<IcapRequestLog> = {}): IcapRequestLog {
  return {
    action: 'ICAP_PASSED',
    icap_method: 'ICAP_METHOD_REQMOD',
    http_method: 'HTTP_METHOD_POST',
    icap_response_code: 204,
    icap_absolute_uri: 'icap://10.0.0.5:1344/avscan',
    complete_body_sent: true,
    pool_name: { val: 'primary', crc32: 1 },
    pool_uuid: 'poolgroup-00000000-0000-0000-0000-000000000000',
    icap_server_ip: '10.0.0.5',
    icap_server_port: 1344,
    latency: '3',
    icap_headers_sent_to_server:
      'Host: 10.0.0.5:1344\r\nAllow: 204\r\nPreview: 12\r\nEncapsulated: req-hdr=0, req-body=120\r\n',
    icap_headers_received_from_server: 'ISTag: "x"\r\nEncapsulated: null-body=0\r\n',
    vendor: 'ICAP_VENDOR_GENERIC',
    ...overrides,
  };
}

export function record(action: IcapAction, overrides: Partial<IcapLog> = {}): IcapLog {
  clock += 1000;
  const blocked = action === 'ICAP_BLOCKED';
  const log: IcapLog = {
    action,
    request_logs:
      action === 'ICAP_DISABLED'
        ? []
        : [
            entry({
              action,
              ...(blocked
                ? {
                    icap_response_code: 200,
                    reason: 'Infected',
                    threat_id: 'Eicar-Test-Signature',
                    violations: [
                      {
                        file_name: 'eicar.com',
                        threat_name: 'Eicar-Test-Signature',
                        resolution: 'ICAP_FILE_NOT_REPAIRED',
                      },
                    ],
                  }
                : {}),
            }),
          ],
    profile_name: 'uploads',
    policy_reason: 'no-rules',
    significant: action !== 'ICAP_PASSED' && action !== 'ICAP_DISABLED',
    significance: blocked ? ['ICAP_BLOCKED'] : action === 'ICAP_FAILED' ? ['ICAP_ERROR'] : [],
    http_method: 'HTTP_METHOD_POST',
    uri_path: '/upload',
    client_ip: '127.0.0.1',
    start_time: clock,
    duration: 5,
    ...(blocked ? { http_response_code: 403 } : {}),
    ...overrides,
  };
  return log;
}

/** An engine stand-in: `emit(log)` delivers to the listeners; `health` is what status() answers. */
export class FakeEngine implements AnalyticsSource {
  readonly profile: { name: string };
  readonly listeners = new Set<LogListener>();
  health: ServerStatus[] = [];

  constructor(name = 'uploads') {
    this.profile = { name };
  }

  addLogListener(listener: LogListener): () => void {
    this.listeners.add(listener);
    return () => {
      this.listeners.delete(listener);
    };
  }

  status(): ServerStatus[] {
    return this.health;
  }

  emit(log: IcapLog): void {
    for (const l of this.listeners) l(log);
  }
}

export function serverStatus(overrides: Partial<ServerStatus> = {}): ServerStatus {
  return {
    pool: 'primary',
    server: 'icap://10.0.0.5:1344',
    state: 'up',
    outstanding: 0,
    consecutiveFailures: 0,
    lastError: undefined,
    connections: { open: 1, busy: 0, idle: 1, connecting: 0, pending: 0, created: 1, limit: 32 },
    ...overrides,
  };
}

/** Total characters of the strings (values and keys) in a value. */
export function charCount(value: unknown): number {
  if (typeof value === 'string') return value.length;
  if (Array.isArray(value)) return value.reduce((n: number, v) => n + charCount(v), 0);
  if (typeof value === 'object' && value !== null) {
    let n = 0;
    for (const [k, v] of Object.entries(value)) n += k.length + charCount(v);
    return n;
  }
  return 0;
}
