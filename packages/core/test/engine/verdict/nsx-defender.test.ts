import { describe, expect, it } from 'vitest';
import {
  DEFAULT_NSX_STATUS_URL,
  readVerdict,
  type VerdictOptions,
} from '../../../src/engine/verdict/index.js';
import { Headers } from '../../../src/protocol/headers.js';
import {
  EICAR_MD5,
  NSX_BAD_LASTLINE_VALUES,
  NSX_BLOCKED,
  NSX_KNOWN_NOT_BLOCKED,
  NSX_UUID,
  NSX_VIRUS_ID_ONLY,
} from './fixtures.js';
import { bareInput, inputOf } from './parse.js';

const ON: VerdictOptions = { nsxStatusUrl: DEFAULT_NSX_STATUS_URL, forwardLastlineHeaders: true };
const OFF: VerdictOptions = { nsxStatusUrl: DEFAULT_NSX_STATUS_URL, forwardLastlineHeaders: false };
const STATUS_URL = `https://user.lastline.com/portal#/analyst/task/${NSX_UUID}/overview`;

describe('NSX Defender (Lastline)', () => {
  it('the default status URL template', () => {
    expect(DEFAULT_NSX_STATUS_URL).toBe('https://user.lastline.com/portal#/analyst/task/$uuid/overview');
  });

  it('blocks on both ICAP header forms and fills nsx_defender_log', () => {
    const v = readVerdict('nsx-defender', inputOf(NSX_BLOCKED), ON);
    expect(v.kind).toBe('blocked');
    expect(v.reason).toBe('Infected');
    expect(v.threat_id).toBe(`LastlineArtifact(score=100;md5=${EICAR_MD5};uuid=${NSX_UUID})`);
    expect(v.nsx_defender_log).toEqual({
      score: 100,
      task_uuid: NSX_UUID,
      status_url: STATUS_URL,
      status: 'known',
    });
    expect(v.opswat_log).toBeUndefined();
    // Type=0;Resolution=1: the draft's "repaired", but an infection was found: blocked.
    expect(v.violations).toEqual([
      {
        file_name: '',
        threat_name: `LastlineArtifact(score=100;md5=${EICAR_MD5};uuid=${NSX_UUID})`,
        resolution: 'ICAP_FILE_REPAIRED',
      },
    ]);
  });

  it('forwards X-Lastline-Status/Score/Task to the client when on, nothing when off', () => {
    expect(readVerdict('nsx-defender', inputOf(NSX_BLOCKED), ON).client_headers).toEqual([
      ['X-Lastline-Status', 'known'],
      ['X-Lastline-Score', '100'],
      ['X-Lastline-Task', NSX_UUID],
    ]);
    const off = readVerdict('nsx-defender', inputOf(NSX_BLOCKED), OFF);
    expect(off.client_headers).toEqual([]);
    expect(off.nsx_defender_log?.score).toBe(100);
  });

  it('reads the X-Virus-ID form (task_uuid=) alone', () => {
    const v = readVerdict('nsx-defender', inputOf(NSX_VIRUS_ID_ONLY), ON);
    expect(v.kind).toBe('blocked');
    expect(v.threat_id).toBe(`LastlineArtifact(score=87;md5=${EICAR_MD5};task_uuid=${NSX_UUID})`);
    expect(v.nsx_defender_log).toEqual({ score: 87, task_uuid: NSX_UUID, status_url: STATUS_URL });
    expect(v.client_headers).toEqual([]);
  });

  it('the generic vendor blocks on the same headers but fills no NSX log or client headers', () => {
    const v = readVerdict('generic', inputOf(NSX_BLOCKED), ON);
    expect(v.kind).toBe('blocked');
    expect(v.threat_id).toBe(`LastlineArtifact(score=100;md5=${EICAR_MD5};uuid=${NSX_UUID})`);
    expect(v.nsx_defender_log).toBeUndefined();
    expect(v.client_headers).toEqual([]);
    expect(readVerdict('generic', inputOf(NSX_VIRUS_ID_ONLY), ON).kind).toBe('blocked');
  });

  it('a known score of 85 without any block signal is not a block; headers from the modified request', () => {
    const v = readVerdict('nsx-defender', inputOf(NSX_KNOWN_NOT_BLOCKED), ON);
    expect(v.kind).toBe('adapted');
    expect(v.threat_id).toBeUndefined();
    expect(v.nsx_defender_log).toEqual({
      score: 85,
      task_uuid: NSX_UUID,
      status_url: STATUS_URL,
      status: 'known',
    });
    expect(v.client_headers).toEqual([
      ['X-Lastline-Status', 'known'],
      ['X-Lastline-Score', '85'],
      ['X-Lastline-Task', NSX_UUID],
    ]);
  });

  it('drops X-Lastline-* values outside the documented forms', () => {
    const v = readVerdict('nsx-defender', inputOf(NSX_BAD_LASTLINE_VALUES), ON);
    expect(v.kind).toBe('adapted');
    expect(v.client_headers).toEqual([]);
    expect(v.nsx_defender_log).toEqual({});
  });

  it('drops values carrying CR/LF and takes a dashed UUID; replaces every $uuid of a custom template', () => {
    const dashed = '0f8fad5b-d9cb-469f-a165-70867728950e';
    const input = bareInput(200);
    input.httpResponse = {
      startLine: 'HTTP/1.1 403 Forbidden',
      status: 403,
      reason: 'Forbidden',
      version: 'HTTP/1.1',
      raw: Buffer.alloc(0),
      headers: new Headers([
        ['X-Lastline-Status', 'new\r\nSet-Cookie: a=b'],
        ['X-Lastline-Score', '42\n'],
        ['X-Lastline-Task', dashed],
      ]),
    };
    const v = readVerdict('nsx-defender', input, {
      nsxStatusUrl: 'https://defender.example/task/$uuid?again=$uuid',
      forwardLastlineHeaders: true,
    });
    expect(v.kind).toBe('blocked');
    expect(v.reason).toBe('Forbidden');
    expect(v.client_headers).toEqual([
      ['X-Lastline-Score', '42'],
      ['X-Lastline-Task', dashed],
    ]);
    expect(v.nsx_defender_log).toEqual({
      score: 42,
      task_uuid: dashed,
      status_url: `https://defender.example/task/${dashed}?again=${dashed}`,
    });
  });

  it('no status_url without a uuid; a 204 is clean', () => {
    const v = readVerdict('nsx-defender', bareInput(204), ON);
    expect(v.kind).toBe('clean');
    expect(v.nsx_defender_log).toEqual({});
    const noUuid = readVerdict(
      'nsx-defender',
      bareInput(200, [['X-Virus-ID', 'LastlineArtifact(score=70;md5=;task_uuid=)']]),
      ON,
    );
    expect(noUuid.kind).toBe('blocked');
    expect(noUuid.nsx_defender_log).toEqual({ score: 70 });
  });
});

describe('NSX Defender: X-Lastline-* the client sent, returned with its request (campaign-z Z8)', () => {
  const BODY = 'upload';
  const answer = (req: string) =>
    'ICAP/1.0 200 OK\r\nISTag: "LL-ICAP-0001"\r\n' +
    `Encapsulated: req-hdr=0, req-body=${Buffer.byteLength(req)}\r\n\r\n${req}` +
    `${BODY.length.toString(16)}\r\n${BODY}\r\n0\r\n\r\n`;
  const CLIENT = 'ffffffffffffffffffffffffffffffff';
  const clientFields: Array<[string, string]> = [
    ['X-Lastline-Status', 'known'],
    ['X-Lastline-Score', '0'],
    ['X-Lastline-Task', CLIENT],
  ];
  const sent = new Headers([['Host', 'app.example'], ...clientFields]);
  const head = (defender: boolean) =>
    'POST /upload HTTP/1.1\r\nHost: app.example\r\n' +
    clientFields.map(([n, v]) => `${n}: ${v}\r\n`).join('') +
    (defender
      ? `X-Lastline-Status: blacklist\r\nX-Lastline-Score: 95\r\nX-Lastline-Task: ${NSX_UUID}\r\n`
      : '') +
    `Content-Length: ${BODY.length}\r\n\r\n`;

  it("the Defender's own values win, in the log and in the forwarded headers", () => {
    const v = readVerdict('nsx-defender', inputOf(answer(head(true))), { ...ON, sentHeaders: sent });
    expect(v.nsx_defender_log).toEqual({
      score: 95,
      task_uuid: NSX_UUID,
      status_url: STATUS_URL,
      status: 'blacklist',
    });
    expect(v.client_headers).toEqual([
      ['X-Lastline-Status', 'blacklist'],
      ['X-Lastline-Score', '95'],
      ['X-Lastline-Task', NSX_UUID],
    ]);
  });

  it('the client alone: none of its values is taken for the Defender’s', () => {
    const v = readVerdict('nsx-defender', inputOf(answer(head(false))), { ...ON, sentHeaders: sent });
    expect(v.nsx_defender_log).toEqual({});
    expect(v.client_headers).toEqual([]);
    // Without the request's fields (the CLI, a stray answer), the returned head is read as before.
    expect(readVerdict('nsx-defender', inputOf(answer(head(false))), ON).nsx_defender_log?.score).toBe(0);
  });
});

describe('NSX Defender: the client cannot crowd out the Defender’s values (campaign-aa AA7)', () => {
  it('every score 0-100 from the client, then the Defender’s 95: 95', () => {
    const BODY = 'upload';
    const scores = Array.from({ length: 101 }, (_, i) => `X-Lastline-Score: ${i}\r\n`).join('');
    const req = `POST /upload HTTP/1.1\r\nHost: app.example\r\n${scores}X-Lastline-Score: 95\r\nContent-Length: ${BODY.length}\r\n\r\n`;
    const answer =
      'ICAP/1.0 200 OK\r\nISTag: "LL-ICAP-0001"\r\n' +
      `Encapsulated: req-hdr=0, req-body=${Buffer.byteLength(req)}\r\n\r\n${req}` +
      `${BODY.length.toString(16)}\r\n${BODY}\r\n0\r\n\r\n`;
    const sent = new Headers(
      Array.from({ length: 101 }, (_, i): [string, string] => ['X-Lastline-Score', String(i)]),
    );
    const v = readVerdict('nsx-defender', inputOf(answer), { ...ON, sentHeaders: sent });
    expect(v.nsx_defender_log?.score).toBe(95);
  });
});
