/**
 * campaign-bs BS4: every 1xx but 101 before the final answer is interim (RFC 9110 §15.2, whose
 * codes ICAP's follow): 102 Processing, 103 Early Hints are read past to the final answer (a block
 * blocks, a clean 204 passes), their fields read for a threat as a 100's are; only a 100 is the
 * go-ahead for the rest of a preview.
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { Handler } from '../support/scripted-icap.js';
import {
  BLOCK,
  CLEAN_204,
  expectBlocked,
  expectPassed,
  FRAMEWORKS,
  later,
  MODES,
  THREAT,
  upload,
} from './odd-answers.js';

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const INTERIMS = ['102 Processing', '103 Early Hints', '199 Misc'];
const interim = (status: string, fields = '') => `ICAP/1.0 ${status}\r\nISTag: "x1"\r\n${fields}\r\n`;

describe.each(FRAMEWORKS)('%s', (framework) => {
  describe.each(MODES)('%s', (mode) => {
    it.each(INTERIMS)('%s, then the block 80 ms later: blocked', async (status) => {
      const h: Handler = (r) => {
        r.sock.write(interim(status));
        later(r, 80, BLOCK);
      };
      expectBlocked(await upload(framework, mode, h, cleanups));
    });
    it.each(INTERIMS)('%s naming the threat, then a clean 204: blocked', async (status) => {
      const h: Handler = (r) => {
        r.sock.write(interim(status, THREAT));
        later(r, 80, CLEAN_204);
      };
      expectBlocked(await upload(framework, mode, h, cleanups));
    });
  });
  it.each(INTERIMS)('%s twice, then a clean 204 (same segment and later): passed', async (status) => {
    const h: Handler = (r) => {
      r.sock.write(`${interim(status)}${interim(status)}`);
      later(r, 80, CLEAN_204);
    };
    expectPassed(await upload(framework, 'fail-closed', h, cleanups));
  });
});

describe('only 100 is the go-ahead for the rest of a preview', () => {
  it('a 102 answering the preview, then a 204: the rest is never sent, the upload passes', async () => {
    let restSent = false;
    const h: Handler = (r) => {
      restSent = true;
      r.sock.write(CLEAN_204);
    };
    const out = await upload(
      'express5',
      'fail-closed',
      h,
      cleanups,
      { previewSize: 4, previewMinBodySize: 0 },
      { optionsHeaders: 'Preview: 4\r\n', continueHead: `${interim('102 Processing')}${CLEAN_204}` },
    );
    expectPassed(out);
    expect(restSent).toBe(false);
  });
});
