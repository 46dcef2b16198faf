/**
 * The log analytics page on a phone (Chromium at 390 × 844): the page never scrolls sideways
 * (tables scroll in their own box), pool names never wrap letter by letter, an opened record
 * stays inside the screen; page views are hidden until asked for; enum values read as words
 * with the raw value in the tooltip; durations and sizes carry their unit; a passed request
 * shows the application's HTTP status.
 *
 * Skipped when /usr/bin/chromium is missing, except with CI=true, where that is an error.
 */
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createLogAnalytics, type LogAnalytics, loopbackOnly } from '@icapkit/core';
import express from 'express';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { haveChromium, launchChromium, readable } from '../support/browser.js';
import { entry, FakeEngine, record, serverStatus } from './records.js';

const POOLS = ['primary-scanners-eu-west-1', 'secondary-scanners-us-east-2', 'cdr'];

describe.skipIf(!haveChromium)('log analytics page at 390 px wide', () => {
  let browser: Browser;
  let server: Server;
  let analytics: LogAnalytics;
  let url: string;

  beforeAll(async () => {
    const engine = new FakeEngine('uploads-with-a-long-profile-name');
    engine.health = POOLS.map((pool, i) =>
      serverStatus({
        pool,
        server: `icap://scanner-${i}.internal.example.net:1344`,
        state: i === 1 ? 'unknown' : 'up',
      }),
    );
    analytics = createLogAnalytics({ engine, guard: loopbackOnly });
    for (let i = 0; i < 6; i++) {
      const pool = POOLS[i % POOLS.length]!;
      const server = `icap://scanner-${i % POOLS.length}.internal.example.net:1344`;
      engine.emit(
        record(i === 2 ? 'ICAP_BLOCKED' : 'ICAP_PASSED', {
          uri_path: `/api/v2/customers/${1000 + i}/documents/quarterly-report-with-a-long-name-${i}.pdf`,
          file_names: [`quarterly-report-with-a-long-name-${i}.pdf`],
          duration: 1234 + i,
          request_body_length: 123_456,
          ...(i === 2 ? {} : { http_response_code: 201 }),
          request_logs: [
            entry({
              action: i === 2 ? 'ICAP_BLOCKED' : 'ICAP_PASSED',
              pool_name: { val: pool, crc32: i },
              icap_absolute_uri: `${server}/avscan`,
              latency: String(12 + i),
              vendor: i === 3 ? 'ICAP_VENDOR_OPSWAT' : 'ICAP_VENDOR_GENERIC',
              ...(i === 2
                ? {
                    threat_id: 'Eicar-Test-Signature',
                    violations: [
                      {
                        file_name: 'quarterly-report-with-a-long-name-2.pdf',
                        threat_name: 'Eicar-Test-Signature',
                        resolution: 'ICAP_FILE_NOT_REPAIRED',
                      },
                    ],
                  }
                : {}),
            }),
          ],
        }),
      );
    }
    // Page views: a GET of a page and the favicon.
    for (const path of ['/', '/favicon.ico'])
      engine.emit(
        record('ICAP_DISABLED', { policy_reason: 'no-body', http_method: 'HTTP_METHOD_GET', uri_path: path }),
      );
    const app = express();
    app.use('/icap-analytics', (req, res, next) => {
      if (!analytics.owns(req.url)) return next();
      void analytics.handle(req, res, req.url);
    });
    server = app.listen(0, '127.0.0.1');
    await new Promise<void>((resolve) => server.once('listening', () => resolve()));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/icap-analytics/`;
    browser = await launchChromium();
  });

  afterAll(async () => {
    await browser?.close();
    analytics?.close();
    if (server !== undefined) {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });

  async function phone(): Promise<{ page: Page; problems: string[] }> {
    const context = await browser.newContext({ viewport: { width: 390, height: 844 } });
    const page = await context.newPage();
    const problems: string[] = [];
    page.on('pageerror', (err) => problems.push(`pageerror: ${err.message}`));
    page.on('console', (msg) => {
      if (msg.type() === 'error') problems.push(`console: ${msg.text()}`);
    });
    return { page, problems };
  }

  const ready = (page: Page, summary: RegExp) =>
    page.waitForFunction(
      (source) =>
        document.body.dataset.state === 'ready' &&
        new RegExp(source).test(document.getElementById('summary')?.textContent ?? ''),
      summary.source,
      { timeout: 10_000 },
    );

  const pageWidth = (page: Page) => page.evaluate(() => document.scrollingElement!.scrollWidth);

  it('fits the screen: no sideways scrolling, pool names on one or two lines', async () => {
    const { page, problems } = await phone();
    await page.goto(url);
    await ready(page, /^6 of 8 records, 2 page views hidden/);
    expect(await pageWidth(page)).toBeLessThanOrEqual(390);

    // Every pool name, in the pools table and in the servers table: at most two lines high.
    const cells = page.locator('#pools td:first-child button.value, #servers button.value[data-key="pool"]');
    expect(await cells.count()).toBe(POOLS.length * 2);
    const heights = await cells.evaluateAll((els) =>
      els.map((el) => {
        const style = getComputedStyle(el);
        const line = Number.parseFloat(style.lineHeight);
        const chrome =
          Number.parseFloat(style.paddingTop) +
          Number.parseFloat(style.paddingBottom) +
          Number.parseFloat(style.borderTopWidth) +
          Number.parseFloat(style.borderBottomWidth);
        return { text: el.textContent, lines: (el.getBoundingClientRect().height - chrome) / line };
      }),
    );
    for (const h of heights) expect(h.lines, `${h.text} takes ${h.lines} lines`).toBeLessThanOrEqual(2.05);
    // A table wider than the screen scrolls inside its own box.
    const box = await page.locator('#pools').evaluate((tbody) => {
      const scroll = tbody.closest('.scroll')!;
      return { client: scroll.clientWidth, overflow: getComputedStyle(scroll).overflowX };
    });
    expect(box.client).toBeLessThanOrEqual(390);
    expect(box.overflow).toBe('auto');

    // An opened record (long field names, a violations table) stays inside the screen.
    const blocked = page.locator('#records > li.rec').filter({ hasText: 'Eicar-Test-Signature' });
    await blocked.locator('button.toggle').click();
    await blocked.locator('.detail .record').waitFor({ timeout: 10_000 });
    expect(await pageWidth(page)).toBeLessThanOrEqual(390);
    const detail = await readable(blocked.locator('.detail'));
    // Units on durations and sizes; enums as words.
    expect(detail).toMatch(/duration\s+1\.24 s/); // 1236 ms
    expect(detail).toContain('14 ms'); // the ICAP transaction's latency
    expect(detail).toContain('121 KiB (123456 bytes)');
    expect(detail).toContain('REQMOD');
    expect(detail).not.toContain('ICAP_METHOD_REQMOD');
    expect(detail).toContain('file not repaired');
    expect(await blocked.locator('.detail .enum[title="ICAP_FILE_NOT_REPAIRED"]').count()).toBe(1);
    expect(problems).toEqual([]);
    await page.context().close();
  });

  it('page views only when asked; vendors as words; passed requests with their HTTP status', async () => {
    const { page, problems } = await phone();
    await page.goto(url);
    await ready(page, /^6 of 8 records, 2 page views hidden/);
    const rows = page.locator('#records > li.rec');
    expect(await rows.count()).toBe(6);
    expect(await readable(page.locator('#records'))).not.toContain('favicon');
    const vendors = page.locator('#facet-vendor button.value');
    expect(await vendors.allTextContents()).toEqual(['Generic', 'OPSWAT MetaDefender']);
    expect(await vendors.first().getAttribute('title')).toBe('Filter: vendor = ICAP_VENDOR_GENERIC');
    const passed = rows.filter({ has: page.locator('button.value[data-value="ICAP_PASSED"]') });
    expect(await passed.count()).toBe(5);
    for (const text of await passed.allInnerTexts()) {
      expect(text).toContain('HTTP 201');
      expect(text).toMatch(/ICAP 1\d ms · total 1\.2\d s/);
    }
    // The unknown server says so.
    expect(await readable(page.locator('#servers tr', { hasText: 'scanner-1' }).locator('.state'))).toBe(
      'unknown',
    );
    expect(await readable(page.locator(`#pools tr[data-pool="${POOLS[1]}"] td`).nth(2))).toBe(
      '0 of 1 up, 1 not yet answered',
    );

    await page.locator('#pageviews').check();
    await ready(page, /^8 of 8 records \(/);
    expect(await rows.count()).toBe(8);
    expect(await readable(page.locator('#records'))).toContain('/favicon.ico');
    expect(new URL(page.url()).searchParams.get('pageViews')).toBe('show');
    // The address keeps the choice.
    await page.reload();
    await ready(page, /^8 of 8 records \(/);
    expect(await page.locator('#pageviews').isChecked()).toBe(true);
    expect(await pageWidth(page)).toBeLessThanOrEqual(390);
    expect(problems).toEqual([]);
    await page.context().close();
  });
});
