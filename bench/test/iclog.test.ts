/**
 * iclog.js counts V8's IC misses (`--log-ic`) in a window of the log, each in the function its
 * code object belongs to, and says whose code that is.
 */
import { describe, expect, it } from 'vitest';
import { icMisses, ownerOf, renderIcMisses } from '../src/iclog.js';

const LOG = [
  'code-creation,JS,10,100,0x1000,0x100,"*send /x/node_modules/.pnpm/express@5.3.0/node_modules/express/lib/response.js:126:25"',
  'code-creation,JS,10,101,0x2000,0x100,"*#onClose file:///w/packages/core/dist/node/response-watch.js:36:16"',
  'LoadIC,0x1010,200,129,18,N,N,0xabc,req,,',
  // The window starts here.
  'LoadIC,0x1020,300,132,18,N,N,0xabc,app,,',
  'code-move,0x2000,0x3000',
  'LoadIC,0x3004,301,41,47,N,N,0xdef,writableFinished,,',
  'StoreIC,0x1030,302,140,2,N,N,0xabc,locals,,',
  'LoadIC,0x9999,303,1,1,N,N,0xabc,lost,,',
  '',
].join('\n');
const FROM = LOG.indexOf('LoadIC,0x1020');

describe('IC log', () => {
  it('counts the misses in the window only, each in its function (moved code too)', () => {
    const misses = icMisses(LOG, FROM, LOG.length);
    expect(misses.map((m) => [m.kind, m.key, ownerOf(m.fn)])).toEqual([
      ['LoadIC', 'app', 'dependency'],
      ['LoadIC', 'writableFinished', 'icapkit'],
      ['StoreIC', 'locals', 'dependency'],
      ['LoadIC', 'lost', 'unknown'],
    ]);
    expect(misses[1]!.position).toBe('41:47');
  });

  it('gives per-request counts by owner and by function', () => {
    const text = renderIcMisses(icMisses(LOG, FROM, LOG.length), 2, 10).join('\n');
    expect(text).toContain('IC misses per request: 2.00 (4 over 2 requests)');
    expect(text).toContain('| dependency | 1.00 |');
    expect(text).toContain('| icapkit | 0.50 |');
    expect(text).toContain('| *#onClose packages/core/dist/node/response-watch.js:36:16 | 0.50 |');
  });

  it('tells Node, the bench and dependencies apart', () => {
    expect(ownerOf('*write_ node:_http_outgoing:898:16')).toBe('node');
    expect(ownerOf('* file:///w/bench/dist/app.js:143:59')).toBe('bench');
    expect(ownerOf('*run file:///w/packages/core/dist/engine/scan/exchange.js:96:14')).toBe('icapkit');
  });
});
