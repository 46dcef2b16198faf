/**
 * perfsplit.js sorts `perf report --sort dso,sym` lines into where the app's CPU went: each
 * sample's share lands in the first category whose test matches.
 */
import { describe, expect, it } from 'vitest';
import { icMissSplit, STAGE_OF_FILE, split, stageOfFrame } from '../src/perfsplit.js';

const REPORT = `
# Samples: 12K of event 'cpu-clock:pppH'
#
# Overhead  Shared Object        Symbol
    14.35%  node                 [.] sha1_block_data_order_shaext
    11.21%  node                 [.] v8::internal::ConcurrentMarking::RunMajor
     5.61%  node                 [.] v8::internal::MarkingVisitorBase<v8::internal::ConcurrentMarkingVisitor, v8::internal::ConcurrentMarkingState>::ProcessStrongHeapObject<v8::internal::FullHeapObjectSlot>
     5.49%  node                 [.] v8::internal::Scavenger::ScavengeObject<v8::internal::FullHeapObjectSlot>
     3.44%  [kernel.kallsyms]    [k] _copy_from_iter
     2.70%  node                 [.] Builtins_LoadIC
     1.59%  node                 [.] v8::internal::HeapObject::SizeFromMap
     0.78%  [JIT] tid 32725      [.] JS:*analyse file:///work/main/packages/core/dist/engine/verdict/generic.js:65:24
     0.65%  node                 [.] Builtins_CompileLazy
     0.56%  node                 [.] v8::internal::compiler::GraphReducer::ReduceTop
     0.50%  node                 [.] v8::internal::Runtime_SetKeyedProperty
     0.40%  node                 [.] node::crypto::Hash::HashUpdate
     2.27%  libc.so.6            [.] __memmove_avx_unaligned_erms
     0.10%  libstdc++.so.6.0.30  [.] operator new
`;

describe('perfsplit', () => {
  it('sorts each symbol into one category and keeps every sample', () => {
    const parts = split(REPORT);
    const get = (k: string) => Number((parts.get(k) ?? 0).toFixed(2));
    expect(get('SHA-1 of the bench handler')).toBe(14.35);
    expect(get('V8 garbage collector')).toBe(23.9);
    expect(get('kernel')).toBe(3.44);
    expect(get('V8 builtins (ICs, calls, allocation)')).toBe(2.7);
    expect(get('V8 compilers (JIT)')).toBe(1.21);
    expect(get('JavaScript (JIT code)')).toBe(0.78);
    expect(get('V8 runtime')).toBe(0.5);
    expect(get('Node.js and libuv (C++)')).toBe(0.4);
    expect(get('libc (memcpy, malloc)')).toBe(2.27);
    expect(get('other')).toBe(0.1);
    const sum = [...parts.values()].reduce((a, b) => a + b, 0);
    expect(sum).toBeCloseTo(
      14.35 + 11.21 + 5.61 + 5.49 + 3.44 + 2.7 + 1.59 + 0.78 + 0.65 + 0.56 + 0.5 + 0.4 + 2.27 + 0.1,
      5,
    );
  });

  it('counts inline-cache misses below an icapkit frame apart from those with none on the stack', () => {
    const stack = (...frames: string[]) =>
      frames.map((f, i) => `\t    ${(0x1000 + i).toString(16)} ${f}+0x1f`).join('\n');
    const script = [
      // a miss inside Node's Readable.on, called by the store: icapkit's
      stack(
        'v8::internal::LookupIterator::LookupInRegularHolder<false>',
        'v8::internal::Runtime_LoadIC_Miss',
        'Builtins_CEntry_Return1_ArgvOnStack_NoBuiltinExit',
        'JS:*Readable.on node:internal/streams/readable:1127:33',
        'JS:*attach file:///work/main/packages/core/dist/engine/body/store.js:117:11',
        'JS:*run file:///work/main/packages/core/dist/engine/scan/scan.js:102:14',
      ),
      // a map change in the re-arm
      stack(
        'v8::internal::Map::CopyAddDescriptor',
        'v8::internal::Runtime_StoreIC_Miss',
        'JS:*rearmRequest file:///work/main/packages/core/dist/node/handoff.js:24:29',
      ),
      // icapkit's own work without a miss
      stack('JS:*#fast file:///work/main/packages/core/dist/protocol/encoder.js:312:10'),
      // a miss in Express alone
      stack('v8::internal::Runtime_LoadIC_Miss', 'JS:*next /x/node_modules/express/lib/router/index.js:1:1'),
      // a miss above the icapkit frame (icapkit called from code that missed) is not icapkit's
      stack(
        'JS:*#fast file:///work/main/packages/core/dist/protocol/encoder.js:312:10',
        'v8::internal::Runtime_LoadIC_Miss',
      ),
      // nothing of either
      stack('tcp_sendmsg', '__GI___writev'),
    ].join('\n\n');
    const m = icMissSplit(script);
    expect(m.samples).toBe(6);
    expect(m.underIcapkit).toBe(4);
    expect(m.missUnderIcapkit).toBe(2);
    expect(m.missElsewhere).toBe(1);
    expect([...m.byFrame]).toEqual([
      ['JS:*attach core/dist/engine/body/store.js:117:11', 1],
      ['JS:*rearmRequest core/dist/node/handoff.js:24:29', 1],
    ]);
    // Every sample under an icapkit frame lands in the part of the scan of the innermost one.
    expect(Object.fromEntries(m.byStage)).toEqual({
      'intake (the body store; its replays)': 1,
      'outcome (verdict, log record, hand-off, response watch)': 1,
      'exchange: ICAP client and protocol': 2,
    });
  });

  it('names the part of the scan of each file of the built packages', () => {
    const OUTCOME = 'outcome (verdict, log record, hand-off, response watch)';
    const cases: Array<[file: string, part: string]> = [
      ['express/dist/index.js', 'adapter (framework glue)'],
      ['fastify/dist/index.js', 'adapter (framework glue)'],
      ['core/dist/engine/scan/admission.js', 'admission'],
      ['core/dist/engine/request.js', 'admission'],
      ['core/dist/engine/policy/readings.js', 'admission'],
      ['core/dist/engine/scan/intake.js', 'intake (the body store; its replays)'],
      ['core/dist/engine/body/cursor.js', 'intake (the body store; its replays)'],
      ['core/dist/engine/scan/exchange.js', 'exchange: engine (attempts, retries, watch)'],
      ['core/dist/engine/scan/attempt-watch.js', 'exchange: engine (attempts, retries, watch)'],
      ['core/dist/client/transaction.js', 'exchange: ICAP client and protocol'],
      ['core/dist/protocol/parser.js', 'exchange: ICAP client and protocol'],
      ['core/dist/engine/scan/outcome.js', OUTCOME],
      ['core/dist/engine/log.js', OUTCOME],
      ['core/dist/engine/verdict/generic.js', OUTCOME],
      ['core/dist/node/response-watch.js', OUTCOME],
      ['core/dist/engine/scan/scan.js', "the scan's driver (scan.ts, engine.ts)"],
      ['core/dist/engine/engine.js', "the scan's driver (scan.ts, engine.ts)"],
      ['core/dist/errors.js', 'other icapkit code'],
    ];
    const got = cases.map(([file]) => stageOfFrame(`JS:*x file:///w/packages/${file}:1:1`));
    expect(got).toEqual(cases.map(([, part]) => part));
    expect(STAGE_OF_FILE.length).toBe(7);
  });
});
