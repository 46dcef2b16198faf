/**
 * The demo page in a real browser: the Express example (what `pnpm demo` starts) with the
 * embedded ICAP server, Debian's Chromium driven by playwright-core. A person picks a clean
 * file and reads that it was accepted, picks EICAR and reads that it was blocked and why, and
 * without JavaScript gets the server's own pages. Screenshots of every state go to a temporary
 * folder (ICAPKIT_SCREENSHOTS=/some/dir keeps them there, to look at).
 *
 * Skipped when /usr/bin/chromium is missing, except with CI=true, where that is an error.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EICAR_NAME, eicar } from '@icapkit/testing';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { haveChromium, launchChromium, readable } from '../support/browser.js';
import { deadIcapUrl, EXAMPLES, type Example } from './helpers.js';

describe.skipIf(!haveChromium)('demo page in Chromium', () => {
  let browser: Browser;
  let demo: Example;
  let files: string;
  let shots: string;
  const keepShots = process.env.ICAPKIT_SCREENSHOTS;
  const started: Example[] = [];
  const clean = randomBytes(3000);
  let cleanPath: string;
  let eicarPath: string;

  const shot = async (page: Page, name: string) => {
    await page.screenshot({ path: join(shots, `${name}.png`), fullPage: true });
  };
  const newPage = async (javaScriptEnabled = true) => {
    const context = await browser.newContext({ javaScriptEnabled, viewport: { width: 900, height: 700 } });
    return context.newPage();
  };

  beforeAll(async () => {
    files = await mkdtemp(join(tmpdir(), 'icapkit-demo-files-'));
    shots = keepShots ?? (await mkdtemp(join(tmpdir(), 'icapkit-demo-shots-')));
    await mkdir(shots, { recursive: true });
    cleanPath = join(files, 'holiday-notes.txt');
    eicarPath = join(files, 'eicar.com');
    await writeFile(cleanPath, clean);
    await writeFile(eicarPath, eicar());
    demo = await EXAMPLES.express({ port: 0, print: () => {} });
    started.push(demo);
    // Playwright gives the browser a fresh user-data dir of its own, removed on close.
    browser = await launchChromium();
  });

  afterAll(async () => {
    await browser?.close();
    await Promise.all(started.map((d) => d.close()));
    await rm(files, { recursive: true, force: true });
    if (keepShots === undefined) await rm(shots, { recursive: true, force: true });
  });

  it('shows the upload form', async () => {
    const page = await newPage();
    await page.goto(`${demo.url}/`);
    await expect(readable(page.getByRole('heading', { level: 1 }))).resolves.toBe('Upload a file');
    expect(await page.getByLabel('File to upload').isVisible()).toBe(true);
    expect(await page.getByRole('button', { name: 'Upload and scan' }).isVisible()).toBe(true);
    await shot(page, '1-page');
    await page.context().close();
  });

  it('says a clean file was accepted, in green', async () => {
    const page = await newPage();
    await page.goto(`${demo.url}/`);
    await page.setInputFiles('#file', cleanPath);
    await page.getByRole('button', { name: 'Upload and scan' }).click();
    const result = page.locator('#result[data-verdict=clean]');
    await result.waitFor();
    const text = await readable(result);
    expect(text).toContain('Clean — holiday-notes.txt (2.9 KB) was accepted');
    expect(text).toContain(createHash('sha256').update(clean).digest('hex'));
    expect(await result.evaluate((el) => getComputedStyle(el).backgroundColor)).toBe('rgb(218, 251, 225)');
    await shot(page, '2-clean');
    await page.context().close();
  });

  it('says EICAR was blocked and names the threat, in red', async () => {
    const page = await newPage();
    await page.goto(`${demo.url}/`);
    await page.setInputFiles('#file', eicarPath);
    await page.getByRole('button', { name: 'Upload and scan' }).click();
    const result = page.locator('#result[data-verdict=blocked]');
    await result.waitFor();
    const text = await readable(result);
    expect(text).toContain(`Blocked — eicar.com: ${EICAR_NAME}`);
    expect(text).toContain('The content scanner found a threat in this upload, so it was not accepted.');
    expect(await result.evaluate((el) => getComputedStyle(el).backgroundColor)).toBe('rgb(255, 235, 233)');
    await shot(page, '3-blocked');

    // The "Try the EICAR test file" button builds the file in the page: the same verdict.
    await page.getByRole('button', { name: 'Try the EICAR test file' }).click();
    await page.locator('#result[data-verdict=blocked] .headline').getByText(`Blocked — eicar.com`).waitFor();
    await page.context().close();
  });

  it('without JavaScript: the form posts and the server answers with its own pages', async () => {
    const page = await newPage(false);
    await page.goto(`${demo.url}/`);
    expect(await page.getByRole('button', { name: 'Try the EICAR test file' }).isVisible()).toBe(false);

    await page.setInputFiles('#file', eicarPath);
    const [blocked] = await Promise.all([
      page.waitForNavigation(),
      page.getByRole('button', { name: 'Upload and scan' }).click(),
    ]);
    expect(blocked?.status()).toBe(403);
    await expect(readable(page.getByRole('heading', { level: 1 }))).resolves.toBe('Upload blocked');
    expect(await readable(page.locator('body'))).toContain(`Threat: ${EICAR_NAME}`);
    await shot(page, '4-nojs-blocked');

    await page.goBack();
    await page.setInputFiles('#file', cleanPath);
    const [accepted] = await Promise.all([
      page.waitForNavigation(),
      page.getByRole('button', { name: 'Upload and scan' }).click(),
    ]);
    expect(accepted?.status()).toBe(200);
    await expect(readable(page.getByRole('heading', { level: 1 }))).resolves.toBe(
      'Clean — holiday-notes.txt (2.9 KB) was accepted',
    );
    await shot(page, '5-nojs-clean');
    await page.context().close();
  });

  it('says when the scanner is unavailable (503) or the file too large (413)', async () => {
    const down = await EXAMPLES.express({ port: 0, icapUrl: await deadIcapUrl(), print: () => {} });
    started.push(down);
    const page = await newPage();
    await page.goto(`${down.url}/`);
    await page.setInputFiles('#file', cleanPath);
    await page.getByRole('button', { name: 'Upload and scan' }).click();
    const unavailable = page.locator('#result[data-verdict=unavailable]');
    await unavailable.waitFor();
    expect(await readable(unavailable)).toContain('Scanner unavailable (503)');
    expect(await readable(unavailable)).toContain('Try again in 30 s.');
    await shot(page, '6-unavailable');

    const small = await EXAMPLES.express({ port: 0, maxUpload: 1024, print: () => {} });
    started.push(small);
    await page.goto(`${small.url}/`);
    await page.setInputFiles('#file', cleanPath);
    await page.getByRole('button', { name: 'Upload and scan' }).click();
    const tooLarge = page.locator('#result[data-verdict=too-large]');
    await tooLarge.waitFor();
    expect(await readable(tooLarge)).toContain('Too large (413)');
    await shot(page, '7-too-large');
    await page.context().close();
  });
});
