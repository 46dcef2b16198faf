/**
 * A scanner whose signature is anchored at offset 0 of the object (EICAR's own rule: the file
 * starts with it; ClamAV's hash and offset-0 signatures behave alike): it blocks an object
 * that starts with EICAR and passes any other. What the BOM tests (campaign-br BR8) need: the
 * text a reader extracts must have been scanned as an object of its own.
 */
import type { IcapProfile } from '@icapkit/core';
import { eicar } from '@icapkit/testing';
import { afterAll, beforeAll } from 'vitest';
import { rawExchange } from './raw-http.js';
import { type ScriptedIcap, scripted } from './scripted-icap.js';

export const E = eicar();
export const BOM = Buffer.from([0xef, 0xbb, 0xbf]);
export const THREAT =
  'ICAP/1.0 200 OK\r\nISTag: "x1"\r\nX-Infection-Found: Type=0; Resolution=2; Threat=Eicar-Test-Signature;\r\nEncapsulated: null-body=0\r\n\r\n';
const CLEAN = 'ICAP/1.0 204 No Content\r\nISTag: "x1"\r\nEncapsulated: null-body=0\r\n\r\n';

/** Starts the scanner for the calling file's tests (beforeAll) and stops it after them. */
export function anchoredScanner(): { profile(): IcapProfile; readonly scanner: ScriptedIcap } {
  let scanner: ScriptedIcap | undefined;
  beforeAll(async () => {
    scanner = await scripted((r) => r.sock.write(r.body.subarray(0, E.length).equals(E) ? THREAT : CLEAN));
  });
  afterAll(() => scanner?.close());
  return {
    profile: () => ({ name: 'br8', poolGroup: scanner!.url, serviceUri: '/avscan', startupCheck: 'off' }),
    get scanner() {
      return scanner!;
    },
  };
}

/** POSTs `body` as UTF-8 text to `url`/upload over one raw connection; the answer's status. */
export async function postText(url: string, body: Buffer): Promise<number | undefined> {
  const r = await rawExchange(
    url,
    [
      Buffer.concat([
        Buffer.from(
          `POST /upload HTTP/1.1\r\nHost: a\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n`,
        ),
        body,
      ]),
    ],
    { responses: 1, waitMs: 5000 },
  );
  return r.responses[0]?.status;
}
