/**
 * The log analytics page in Debian's Chromium (playwright-core), with real records: uploads
 * scanned by a real c-icap + ClamAV (clean files, EICAR twice, one of them with a file name
 * that is HTML), through a pool group whose first pool is a server that refuses connections
 * (failover, then suspension), plus a profile whose only server is unreachable (503).
 *
 * A person reads the counts, clicks a threat and sees only its records, opens one and reads
 * its ICAP headers, removes the filter, clicks an action count, a server, a latency bar. The
 * page's strict CSP must not get in the way (no violation, no script error), and hostile values
 * show as text: no element is ever made of them.
 *
 * Skipped when c-icap or /usr/bin/chromium is missing, except with CI=true, where that is an error.
 * ICAPKIT_SCREENSHOTS=/some/dir keeps screenshots of each state.
 */
import { mkdir } from 'node:fs/promises';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { createLogAnalytics, type LogAnalytics, loopbackOnly } from '@icapkit/core';
import { icap, icapAnalytics } from '@icapkit/express';
import express from 'express';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deadIcapUrl, postFile, send } from '../demo/helpers.js';
import { haveChromium, launchChromium, readable } from '../support/browser.js';
import { type CIcapServer, describeWithCIcap, startCIcap } from '../support/c-icap.js';
import { EICAR_THREAT, eicarBytes } from '../support/eicar.js';
import { entry, FakeEngine, record } from './records.js';

const HOSTILE_FILE = '<img src=x onerror=alert(1)>.com';
const SHOTS = process.env.ICAPKIT_SCREENSHOTS;

interface Watched {
  page: Page;
  /** Script errors, CSP violations and dialogs (alert) seen so far. */
  problems: string[];
}

/** A page that records every script error, CSP violation and dialog. */
async function watchedPage(browser: Browser): Promise<Watched> {
  const context = await browser.newContext({ viewport: { width: 1200, height: 900 } });
  const page = await context.newPage();
  const problems: string[] = [];
  page.on('pageerror', (err) => problems.push(`pageerror: ${err.message}`));
  page.on('console', (msg) => {
    if (msg.type() === 'error') problems.push(`console: ${msg.text()}`);
  });
  page.on('dialog', (dialog) => {
    problems.push(`dialog: ${dialog.message()}`);
    void dialog.dismiss();
  });
  // Injected by the browser itself (not an inline script of the page, so the CSP does not apply).
  await page.exposeFunction('__reportViolation', (text: string) => problems.push(`csp: ${text}`));
  await page.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (e) => {
      (window as unknown as { __reportViolation(t: string): void }).__reportViolation(
        `${e.violatedDirective} ${e.blockedURI}`,
      );
    });
  });
  return { page, problems };
}

/** Waits until the page has rendered the answer for `filters` filters. */
async function settled(page: Page, filters: number): Promise<void> {
  await page.waitForFunction(
    (n) => document.body.dataset.state === 'ready' && document.body.dataset.filters === String(n),
    filters,
    { timeout: 10_000 },
  );
}

async function shot(page: Page, name: string): Promise<void> {
  if (SHOTS === undefined) return;
  await mkdir(SHOTS, { recursive: true });
  await page.screenshot({ path: join(SHOTS, `analytics-${name}.png`), fullPage: true });
}

const rows = (page: Page) => page.locator('#records > li.rec');
const tileCount = (page: Page, action: string) =>
  readable(page.locator(`#actions button[data-value="${action}"] .count`));

describeWithCIcap('log analytics page in Chromium, with records from c-icap', () => {
  describe.skipIf(!haveChromium)('with Chromium', () => {
    let cicap: CIcapServer;
    let server: Server;
    let scan: ReturnType<typeof icap>;
    let unreachable: ReturnType<typeof icap>;
    let analytics: ReturnType<typeof icapAnalytics>;
    let browser: Browser;
    let watched: Watched;
    let page: Page;
    let pageUrl: string;
    let dead: string;
    let cicapServer: string;

    beforeAll(async () => {
      cicap = await startCIcap();
      cicapServer = `icap://127.0.0.1:${cicap.port}`;
      dead = await deadIcapUrl();
      scan = icap({
        name: 'uploads',
        poolGroup: {
          name: 'av-group',
          pools: [
            { name: 'primary', priority: 20, servers: [dead] },
            { name: 'backup', priority: 10, servers: [cicapServer] },
          ],
        },
        serviceUri: '/avscan',
        health: { failureLimit: 2, probeInterval: 3_600_000 },
        connection: { connectTimeout: 2000 },
      });
      unreachable = icap({
        name: 'unreachable',
        poolGroup: dead,
        serviceUri: '/avscan',
        connection: { connectTimeout: 2000 },
      });
      analytics = icapAnalytics([scan, unreachable], { guard: loopbackOnly });
      const app = express();
      app.use('/icap-analytics', analytics);
      const done = (req: express.Request, res: express.Response) => {
        req.resume();
        req.on('end', () => res.json({ ok: true }));
      };
      app.post('/upload', scan, done);
      app.get('/upload', scan, (_req, res) => {
        res.send('the form');
      });
      app.post('/upload-unreachable', unreachable, done);
      server = app.listen(0, '127.0.0.1');
      await new Promise<void>((resolve) => server.once('listening', () => resolve()));
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
      pageUrl = `${url}/icap-analytics/`;

      // The records: each answer is what the scan decided.
      const statuses: number[] = [];
      for (let i = 1; i <= 4; i++) {
        const data = Buffer.from(`quarterly report ${i}\n`.repeat(200));
        statuses.push((await postFile(`${url}/upload`, { name: `report-${i}.txt`, data })).status);
      }
      statuses.push((await postFile(`${url}/upload`, { name: 'eicar.com', data: eicarBytes() })).status);
      statuses.push((await postFile(`${url}/upload`, { name: HOSTILE_FILE, data: eicarBytes() })).status);
      statuses.push((await send(`${url}/upload`)).status);
      statuses.push(
        (await postFile(`${url}/upload-unreachable`, { name: 'late.txt', data: Buffer.from('x') })).status,
      );
      expect(statuses).toEqual([200, 200, 200, 200, 403, 403, 200, 503]);
      expect(analytics.analytics.ring.size).toBe(8);

      browser = await launchChromium();
      watched = await watchedPage(browser);
      page = watched.page;
    });

    afterAll(async () => {
      await browser?.close();
      analytics?.close();
      if (server !== undefined) {
        server.closeAllConnections();
        await new Promise<void>((resolve) => server.close(() => resolve()));
      }
      await scan?.close();
      await unreachable?.close();
      await cicap?.stop();
    });

    it('shows the counts by action, the servers with their health, and a latency chart with bars', async () => {
      await page.goto(pageUrl);
      await settled(page, 0);
      await expect(readable(page.locator('h1'))).resolves.toBe('ICAP log analytics');
      // The GET of the form is a page view: hidden unless asked for.
      await expect(readable(page.locator('#summary'))).resolves.toMatch(
        /^7 of 8 records, 1 page view hidden/,
      );
      await expect(tileCount(page, 'ICAP_PASSED')).resolves.toBe('4');
      await expect(tileCount(page, 'ICAP_BLOCKED')).resolves.toBe('2');
      await expect(tileCount(page, 'ICAP_FAILED')).resolves.toBe('1');
      await expect(tileCount(page, 'ICAP_DISABLED')).resolves.toBe('0');
      await expect(tileCount(page, 'ICAP_MODIFIED')).resolves.toBe('0');
      expect(await rows(page).count()).toBe(7);
      // Passed uploads show the application's status; enums show as words, the raw value kept.
      const passed = rows(page).filter({ has: page.locator('button.value[data-value="ICAP_PASSED"]') });
      expect(await passed.count()).toBe(4);
      for (const text of await passed.allInnerTexts()) expect(text).toContain('HTTP 200');
      const vendor = page.locator('#facet-vendor button.value').first();
      expect(await vendor.textContent()).toBe('Generic');
      expect(await vendor.getAttribute('data-value')).toBe('ICAP_VENDOR_GENERIC');

      // The refusing server: suspended in the profile that failed over, three failed transactions.
      const deadRow = page.locator(`#servers tr[data-server="${dead}"]`);
      const deadText = await readable(deadRow);
      expect(deadText).toContain('suspended');
      expect(deadText).toContain('uploads');
      expect(deadText).toContain('unreachable');
      expect(await readable(deadRow.locator('td').nth(3))).toBe('3'); // transactions
      expect(await readable(deadRow.locator('td').nth(7))).toBe('3'); // failed
      const cicapRow = page.locator(`#servers tr[data-server="${cicapServer}"]`);
      expect(await readable(cicapRow)).toContain('up');
      expect(await readable(cicapRow.locator('td').nth(3))).toBe('6');
      expect(await readable(page.locator('#pools'))).toContain('backup');

      const bars = page.locator('#latency-chart g.bar');
      expect(await bars.count()).toBe(12);
      const counts = await bars.evaluateAll((gs) => gs.map((g) => Number(g.getAttribute('data-count'))));
      expect(counts.reduce((a, b) => a + b, 0)).toBe(7); // every record with an ICAP transaction
      const heights = await page
        .locator('#latency-chart g.bar rect.fill')
        .evaluateAll((rs) => rs.map((r) => Number(r.getAttribute('height'))));
      expect(heights.filter((h) => h > 0).length).toBeGreaterThanOrEqual(1);
      expect(Math.max(...heights)).toBe(140); // the tallest bar fills the chart
      await shot(page, '1-overview');
    });

    it('shows a file name that is HTML as text; no element is made of it', async () => {
      const file = page.locator('#facet-file button.value', { hasText: HOSTILE_FILE });
      expect(await file.count()).toBe(1);
      expect(await file.textContent()).toBe(HOSTILE_FILE);
      expect(await page.locator('img').count()).toBe(0);
      expect(await page.locator('[onerror]').count()).toBe(0);
      expect(watched.problems).toEqual([]);
    });

    it('clicking a threat shows only its records, and the aggregates follow', async () => {
      await page.locator('#facet-threat button.value', { hasText: EICAR_THREAT }).click();
      await settled(page, 1);
      const chips = page.locator('#chips li.chip');
      expect(await chips.count()).toBe(1);
      expect(await chips.first().locator('.chip-key').textContent()).toBe('threat:');
      expect(await chips.first().locator('.chip-value').textContent()).toBe(EICAR_THREAT);
      expect(await rows(page).count()).toBe(2);
      for (const text of await rows(page).allInnerTexts()) expect(text).toContain(EICAR_THREAT);
      await expect(tileCount(page, 'ICAP_BLOCKED')).resolves.toBe('2');
      await expect(tileCount(page, 'ICAP_PASSED')).resolves.toBe('0');
      await expect(readable(page.locator('#summary'))).resolves.toMatch(/^2 of 8 records match the filters/);
      expect(new URL(page.url()).searchParams.get('threat')).toBe(EICAR_THREAT);
      await shot(page, '2-threat');
    });

    it('a record opens to the whole record, with the ICAP headers sent and received', async () => {
      const row = rows(page).filter({ hasText: HOSTILE_FILE });
      await row.locator('button.toggle').click();
      const received = row.locator('pre[data-headers="icap_headers_received_from_server"]');
      await received.waitFor({ timeout: 10_000 });
      const got = await received.textContent();
      expect(got).toContain(
        'X-Infection-Found: Type=0; Resolution=2; Threat=Eicar-Test-Signature.UNOFFICIAL;',
      );
      expect(got).toMatch(/ISTag: "/);
      const sent = await row.locator('pre[data-headers="icap_headers_sent_to_server"]').textContent();
      expect(sent).toContain(`Host: 127.0.0.1:${cicap.port}`);
      expect(sent).toMatch(/Encapsulated: req-hdr=0, req-body=\d+/);
      const detail = await readable(row.locator('.detail'));
      expect(detail).toContain('Record #');
      expect(detail).toContain('ICAP transaction 1 of 1: blocked');
      expect(detail).toContain('Infected');
      expect(await row.locator('.detail button.value[data-key="file"]').first().textContent()).toBe(
        HOSTILE_FILE,
      );
      expect(await row.locator('button.toggle').getAttribute('aria-expanded')).toBe('true');
      expect(await page.locator('img').count()).toBe(0);
      await shot(page, '3-record');
    });

    it('removing the filter shows every record; an action count narrows to that action', async () => {
      await page.locator('#chips li.chip button.remove').click();
      await settled(page, 0);
      expect(await rows(page).count()).toBe(7);
      await expect(readable(page.locator('#summary'))).resolves.toMatch(/^7 of 8 records/);
      // Asked for, the page view is there too (and in the address), then hidden again.
      await page.locator('#pageviews').check();
      await page.waitForFunction(
        () =>
          document.body.dataset.state === 'ready' &&
          /^8 of 8/.test(document.getElementById('summary')!.textContent ?? ''),
        null,
        { timeout: 10_000 },
      );
      expect(await rows(page).count()).toBe(8);
      await expect(tileCount(page, 'ICAP_DISABLED')).resolves.toBe('1');
      expect(new URL(page.url()).searchParams.get('pageViews')).toBe('show');
      await page.locator('#pageviews').uncheck();
      await page.waitForFunction(
        () =>
          document.body.dataset.state === 'ready' &&
          /^7 of 8/.test(document.getElementById('summary')!.textContent ?? ''),
        null,
        { timeout: 10_000 },
      );
      expect(await rows(page).count()).toBe(7);

      await page.locator('#actions button[data-value="ICAP_PASSED"]').click();
      await settled(page, 1);
      expect(await rows(page).count()).toBe(4);
      const actions = await page
        .locator('#records > li.rec button.value[data-key="action"]')
        .allTextContents();
      expect(actions).toEqual(['passed', 'passed', 'passed', 'passed']);
      await shot(page, '4-passed');
    });

    it('filters combine: passed, through the refusing server', async () => {
      await page.locator(`#servers tr[data-server="${dead}"] button.value[data-key="server"]`).click();
      await settled(page, 2);
      expect(await page.locator('#chips li.chip').count()).toBe(2);
      // The two uploads that failed over before the server was suspended.
      expect(await rows(page).count()).toBe(2);
      await page.locator('#clear').click();
      await settled(page, 0);
      expect(await rows(page).count()).toBe(7);
    });

    it('a latency bar is a filter too', async () => {
      // The tallest bar (the first one, when the latencies of a run put two at the same height).
      const bar = page
        .locator('#latency-chart g.bar')
        .filter({ has: page.locator('rect.fill[height="140"]') })
        .first();
      const count = Number(await bar.getAttribute('data-count'));
      const label = await bar.getAttribute('data-value');
      await bar.click();
      await settled(page, 1);
      expect(await readable(page.locator('#chips li.chip'))).toContain(label!);
      expect(await rows(page).count()).toBe(count);
      expect(watched.problems).toEqual([]);
      await shot(page, '5-latency');
    });
  });
});

describe.skipIf(!haveChromium)('log analytics page in Chromium: hostile values', () => {
  const THREAT = `Worm "double" 'single' <svg onload=alert(2)> </script>`;
  const FILE = '"><img src=x onerror=alert(3)>';
  let browser: Browser;
  let server: Server;
  let analytics: LogAnalytics;

  beforeAll(async () => {
    const engine = new FakeEngine('uploads');
    analytics = createLogAnalytics({ engine, guard: loopbackOnly });
    engine.emit(
      record('ICAP_BLOCKED', {
        uri_path: '/up"load<b>bold</b>',
        file_names: [FILE],
        request_logs: [
          entry({
            action: 'ICAP_BLOCKED',
            vendor: 'ICAP_VENDOR_LASTLINE',
            threat_id: THREAT,
            file_name: FILE,
            violations: [{ file_name: FILE, threat_name: THREAT, resolution: 'ICAP_FILE_NOT_REPAIRED' }],
            icap_headers_received_from_server: 'X-Note: <script>alert(4)</script>\r\n',
            nsx_defender_log: { score: 90, task_uuid: 'abc', status_url: 'javascript:alert(5)' },
          }),
          entry({
            action: 'ICAP_BLOCKED',
            vendor: 'ICAP_VENDOR_LASTLINE',
            nsx_defender_log: {
              score: 100,
              task_uuid: 'def',
              status_url: 'https://user.lastline.com/portal#/analyst/task/def/overview',
            },
          }),
        ],
      }),
    );
    const app = express();
    app.use('/icap-analytics', (req, res, next) => {
      if (!analytics.owns(req.url)) return next();
      void analytics.handle(req, res, req.url);
    });
    server = app.listen(0, '127.0.0.1');
    await new Promise<void>((resolve) => server.once('listening', () => resolve()));
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

  it('shows them as text, and makes a link only of the http(s) status URL', async () => {
    const { page, problems } = await watchedPage(browser);
    await page.goto(`http://127.0.0.1:${(server.address() as AddressInfo).port}/icap-analytics`);
    await settled(page, 0);
    expect(await page.locator('#facet-threat button.value').first().textContent()).toBe(THREAT);
    expect(await page.locator('#facet-file button.value').first().textContent()).toBe(FILE);
    expect(await page.locator('#facet-path button.value').first().textContent()).toBe('/up"load<b>bold</b>');
    await page.locator('#records button.toggle').first().click();
    await page.locator('#records .detail .record').waitFor({ timeout: 10_000 });
    const detail = page.locator('#records .detail');
    expect(
      await detail.locator('pre[data-headers="icap_headers_received_from_server"]').first().textContent(),
    ).toBe('X-Note: <script>alert(4)</script>\r\n');
    const links = detail.locator('a');
    expect(await links.count()).toBe(1);
    expect(await links.getAttribute('href')).toBe(
      'https://user.lastline.com/portal#/analyst/task/def/overview',
    );
    expect(await links.getAttribute('rel')).toBe('noopener noreferrer nofollow');
    expect(await readable(detail)).toContain('javascript:alert(5)');
    expect(await page.locator('a[href^="javascript"]').count()).toBe(0);
    // Only the page's own elements: no image, no script besides its one, one SVG (the chart), no <b>.
    expect(await page.locator('img, b, [onerror], [onload]').count()).toBe(0);
    expect(await page.locator('script').count()).toBe(1);
    expect(await page.locator('svg').count()).toBe(1);
    // Clicking the hostile threat filters on it, exactly.
    await page.locator('#facet-threat button.value').first().click();
    await settled(page, 1);
    expect(new URL(page.url()).searchParams.get('threat')).toBe(THREAT);
    expect(await rows(page).count()).toBe(1);
    expect(problems).toEqual([]);
    await page.context().close();
  });
});
