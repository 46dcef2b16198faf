/**
 * An application (test/conformance/apps.ts) scanning with a scripted ICAP server
 * (scripted-icap.ts): the set-up of the tests that script the server's answers byte by byte and
 * look at what the application did (status, handler, record).
 */
import type { IcapLog, IcapProfile } from '@icapkit/core';
import { type App, type Framework, startApp } from '../conformance/apps.js';
import { send } from './http-client.js';
import { type Handler, type ScriptedIcap, type ScriptedOptions, scripted } from './scripted-icap.js';

export interface ScriptedApp {
  icap: ScriptedIcap;
  app: App;
  /** The records the middleware wrote, in order. */
  logs: IcapLog[];
  /** POST /raw with `body` (application/octet-stream): the status and body of the answer. */
  post(body: Buffer): ReturnType<typeof send>;
}

/**
 * `framework` scanning with `handler`'s server, profile `{ name: 't', serviceUri: '/avscan' }`
 * plus `profile`. Both are closed by the functions pushed to `cleanups` (the caller runs them
 * after each test, last first).
 */
export async function scriptedApp(
  framework: Framework,
  handler: Handler,
  profile: Partial<IcapProfile>,
  cleanups: Array<() => Promise<void>>,
  options: ScriptedOptions = {},
): Promise<ScriptedApp> {
  const icap = await scripted(handler, options);
  cleanups.push(icap.close);
  const logs: IcapLog[] = [];
  const app = await startApp(framework, {
    name: 't',
    poolGroup: icap.url,
    serviceUri: '/avscan',
    onLog: (l: IcapLog) => logs.push(l),
    ...profile,
  } as IcapProfile);
  cleanups.push(app.close);
  const post = (body: Buffer) =>
    send(app.url, '/raw', { method: 'POST', headers: { 'content-type': 'application/octet-stream' }, body });
  return { icap, app, logs, post };
}
