/**
 * Debian's Chromium, driven by playwright-core, for the browser tests. Missing Chromium skips
 * those tests, except with CI=true, where it is an error.
 */
import { existsSync } from 'node:fs';
import { type Browser, chromium, type Locator } from 'playwright-core';

export const CHROMIUM = '/usr/bin/chromium';
export const haveChromium = existsSync(CHROMIUM);
if (!haveChromium && process.env.CI === 'true') {
  throw new Error(`CI=true but ${CHROMIUM} is missing: apt-get install -y chromium`);
}

/** Headless, and nothing that would reach for the network this machine does not have. */
const ARGS = [
  '--headless=new',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

export function launchChromium(): Promise<Browser> {
  return chromium.launch({ executablePath: CHROMIUM, args: ARGS, timeout: 30_000 });
}

/** The text a person reads: rendered, so hidden elements and CSS count (unlike textContent). */
export function readable(locator: Locator): Promise<string> {
  // biome-ignore lint/performance/useDomNodeTextContent: the rendered text is the point here
  return locator.innerText();
}
