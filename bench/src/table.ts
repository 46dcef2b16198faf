/** Renders the benchmark's results as markdown: the table, the ratios and the targets. */
import type { CellResult, Machine } from './run.js';
import { STAGES } from './stages.js';

const MiB = 2 ** 20;
/** icapkit's default `bufferSize` (the profile does not change it). */
export const DEFAULT_BUFFER_SIZE = 50 * MiB;

const FW: Record<string, string> = { express: 'Express', fastify: 'Fastify', koa: 'Koa', hono: 'Hono' };
const SVC: Record<string, string> = {
  avscan: 'c-icap avscan',
  echo: 'c-icap echo',
  '204': 'embedded 204',
};

/** A cell's record before it is measured: what it is, and nothing measured yet. */
export function blankResult(
  of: Pick<CellResult, 'path' | 'kind' | 'framework' | 'service' | 'body' | 'bodyLabel' | 'clients'>,
): CellResult {
  return {
    ...of,
    ok: 0,
    errors: 0,
    rps: 0,
    p50: 0,
    p99: 0,
    peakRss: 0,
    baseRss: 0,
    icapOpened: undefined,
    icapPeakOpen: undefined,
    icapOpenedMeasured: undefined,
    clientCreated: undefined,
    cpuApp: undefined,
    cpuIcap: undefined,
    cpuOrigin: undefined,
    note: undefined,
  };
}

export function pathLabel(r: Pick<CellResult, 'kind' | 'framework' | 'service'>): string {
  switch (r.kind) {
    case 'ceiling':
      return `${FW[r.framework!]}, no scanning (ceiling)`;
    case 'icapkit':
      return `${FW[r.framework!]} + icapkit → ${SVC[r.service!]}`;
    case 'squid':
      return `Squid → ${SVC[r.service!]} → Express`;
    case 'raw':
      return `raw IcapClient → ${SVC[r.service!]}`;
    case 'rawparts':
      return `raw IcapClient, part by part → ${SVC[r.service!]}`;
    case 'floor':
      return `socket floor → ${SVC[r.service!]}`;
    case 'hold':
      return `${FW[r.framework!]} + hold floor → ${SVC[r.service!]}`;
  }
}

const n0 = (v: number) => (v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2));
const ms = (v: number) => (v >= 100 ? v.toFixed(0) : v.toFixed(1));
const ratio = (a: number, b: number | undefined) =>
  b === undefined || b === 0 || a === 0 ? '—' : `${(a / b).toFixed(2)}×`;

function cellKey(r: Pick<CellResult, 'body' | 'clients'>): string {
  return `${r.body}/${r.clients}`;
}

function rssText(r: CellResult): string {
  if (r.peakRss === 0) return '—';
  const growth = r.baseRss > 0 ? ` (+${Math.max(0, (r.peakRss - r.baseRss) / MiB).toFixed(0)})` : '';
  return `${(r.peakRss / MiB).toFixed(0)}${growth}`;
}

function connText(r: CellResult): string {
  if (r.icapOpened === undefined) return '—';
  const client =
    r.clientCreated !== undefined && r.clientCreated !== r.icapOpened ? ` (client: ${r.clientCreated})` : '';
  return `${r.icapOpened} / ${r.icapPeakOpen}${client}`;
}

const pct = (v: number | undefined) => (v === undefined ? '—' : v.toFixed(0));
const us = (v: number | undefined) => (v === undefined ? '—' : v.toFixed(0));

/** The same framework's ceiling in the same cell (no scanning). */
function ceilingOf(results: CellResult[], r: CellResult): CellResult | undefined {
  return results.find(
    (x) =>
      x.kind === 'ceiling' && x.framework === r.framework && x.body === r.body && x.clients === r.clients,
  );
}

/** icapkit's CPU µs per request above its framework's own (the ceiling) in the same cell. */
export function cpuAbove(results: CellResult[], r: CellResult): number | undefined {
  const c = ceilingOf(results, r);
  return r.cpuUsPerReq === undefined || c?.cpuUsPerReq === undefined
    ? undefined
    : r.cpuUsPerReq - c.cpuUsPerReq;
}

/**
 * Requests per CPU-second of every process on the request's path (application or Squid, its
 * origin, the ICAP server): how much of the machine each path needs for the same work, where
 * req/s alone favours a path that spreads over more processes on an idle core.
 */
function perCpu(r: CellResult): number {
  const cpu = ((r.cpuApp ?? 0) + (r.cpuIcap ?? 0) + (r.cpuOrigin ?? 0)) / 100;
  return cpu > 0 ? r.rps / cpu : 0;
}

/** The warm-up's request counts: " and until N requests were answered (10 KiB: M), at most S s". */
export function warmText(m: Pick<Machine, 'warmRequests' | 'warmRequests10k' | 'warmMaxS'>): string {
  const small = m.warmRequests10k !== undefined && m.warmRequests10k !== m.warmRequests;
  if (!m.warmRequests && !(small && m.warmRequests10k)) return '';
  const counts = small
    ? `${m.warmRequests ?? 0} requests were answered (10 KiB cells: ${m.warmRequests10k})`
    : `${m.warmRequests} requests were answered`;
  return ` and until ${counts}, at most ${m.warmMaxS} s`;
}

export function renderReport(
  results: CellResult[],
  m: Machine,
  extra: { cicapTuning: Record<string, number> },
): string {
  const out: string[] = [];
  out.push(
    `Machine: ${m.nproc} CPU (${m.cpuModel}), ${m.ramGiB} GiB RAM, Linux ${m.kernel}, Node ${m.node}; ` +
      `${m.cicap}; ${m.squid}; load: ${m.loadTool}. ${m.date.slice(0, 16).replace('T', ' ')} UTC, ` +
      `${m.mode} mode (warm-up ${m.warmupS} s${warmText(m)}, measure ${m.measureS} s${m.settleS ? ` (10 KiB cells: after the load's first ${m.settleS} s)` : ''}; 32 MiB: ${m.measure32mS} s), ` +
      `whole run ${m.totalS} s.` +
      (m.nodeFlags === undefined
        ? ''
        : ` Node processes started with ${m.nodeFlags.length > 0 ? m.nodeFlags.join(' ') : 'no extra options'}.`),
  );
  out.push('');
  out.push(
    `c-icap: ${Object.entries(extra.cicapTuning)
      .map(([k, v]) => `${k} ${v}`)
      .join(', ')}.`,
  );
  out.push('');
  out.push(
    '| Body | Clients | Path | req/s | p50 ms | p99 ms | peak RSS MiB (growth) | ICAP conns opened / peak open | CPU % app | CPU µs / req app | CPU % ICAP server | Notes |',
  );
  out.push('|---|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|---|');
  const byCell = new Map<string, CellResult[]>();
  for (const r of results) {
    const k = cellKey(r);
    if (!byCell.has(k)) byCell.set(k, []);
    byCell.get(k)!.push(r);
  }
  for (const rows of byCell.values()) {
    for (const r of rows) {
      const gen = r.kind === 'raw' || r.kind === 'rawparts' || r.kind === 'floor';
      const cpuApp = gen ? '—' : pct(r.cpuApp);
      const notes = [
        r.note,
        r.majorGcPerK !== undefined && r.majorGcPerK >= 1
          ? `${r.majorGcPerK.toFixed(0)} mark-compacts per 1000 requests`
          : undefined,
        r.kind === 'squid'
          ? `RSS, CPU %: squid; origin CPU ${pct(r.cpuOrigin)}%; CPU µs: squid + origin`
          : r.kind === 'raw'
            ? 'CPU µs: the load generator (ICAP client alone)'
            : r.kind === 'rawparts'
              ? "CPU µs: the load generator; each part its own REQMOD, 4 at once (icapkit's per-file mode)"
              : r.kind === 'floor'
                ? 'CPU µs: one prebuilt write and a read per exchange (the least a Node client spends)'
                : r.kind === 'hold'
                  ? 'holdfloor.ts instead of icapkit: body held, one bare REQMOD, the held chunks to the handler'
                  : undefined,
      ]
        .filter(Boolean)
        .join('; ');
      out.push(
        `| ${r.bodyLabel} | ${r.clients} | ${pathLabel(r)} | ${n0(r.rps)} | ${ms(r.p50)} | ${ms(r.p99)} | ${gen ? '—' : rssText(r)} | ${connText(r)} | ${cpuApp} | ${us(r.cpuUsPerReq)} | ${pct(r.cpuIcap)} | ${notes} |`,
      );
    }
  }

  // Ratios.
  out.push('');
  out.push('Ratios (requests/s; same body, same clients, same ICAP service):');
  out.push('');
  out.push(
    '| Body | Clients | icapkit path | req/s | ÷ Squid | ÷ Squid per CPU-second | ÷ ceiling (same framework) | ÷ raw ICAP capacity | app CPU µs / req above the ceiling |',
  );
  out.push('|---|--:|---|--:|--:|--:|--:|--:|--:|');
  const find = (rows: CellResult[], pred: (r: CellResult) => boolean) => rows.find(pred);
  for (const rows of byCell.values()) {
    for (const r of rows.filter((x) => x.kind === 'icapkit')) {
      const squid = find(rows, (x) => x.kind === 'squid' && x.service === r.service);
      const ceiling = find(rows, (x) => x.kind === 'ceiling' && x.framework === r.framework);
      const raw = find(rows, (x) => x.kind === 'raw' && x.service === r.service);
      out.push(
        `| ${r.bodyLabel} | ${r.clients} | ${pathLabel(r)} | ${n0(r.rps)} | ${ratio(r.rps, squid?.rps)} | ${squid === undefined ? '—' : ratio(perCpu(r), perCpu(squid))} | ${ratio(r.rps, ceiling?.rps)} | ${ratio(r.rps, raw?.rps)} | ${us(cpuAbove(results, r))} |`,
      );
    }
  }

  const budget = renderMachineBudget(results, m.nproc);
  if (budget.length > 0) {
    out.push('');
    out.push(...budget);
  }
  const staged = results.filter((r) => r.stages !== undefined && r.kind === 'icapkit' && r.ok > 0);
  if (staged.length > 0) {
    out.push('');
    out.push(...renderStages(results, staged));
  }
  out.push('');
  out.push(...renderTargets(results, m.nproc));
  return out.join('\n');
}

/**
 * Where the whole machine's CPU goes per request, for the paths that end in c-icap (icapkit and
 * Squid) and their references in the same cell (the framework alone; the raw IcapClient): the
 * application (or Squid, or the raw generator), Squid's origin, the ICAP server, and the rest (the
 * HTTP load generator, the kernel's softirq work, anything else), from the same window's /proc
 * figures. On a machine near all-busy, req/s is about cores / this total: a path is faster than
 * another by as much CPU per request as it saves, whichever process saves it.
 */
export function renderMachineBudget(results: CellResult[], cores: number): string[] {
  const scanned = results.filter(
    (r) =>
      (r.kind === 'icapkit' || r.kind === 'squid') &&
      (r.service === 'avscan' || r.service === 'echo') &&
      r.cpuMachine !== undefined &&
      r.rps > 0,
  );
  if (scanned.length === 0) return [];
  const cells = new Set(scanned.map(cellKey));
  const rows = results.filter(
    (r) =>
      cells.has(cellKey(r)) &&
      r.cpuMachine !== undefined &&
      r.rps > 0 &&
      (scanned.includes(r) ||
        r.kind === 'ceiling' ||
        ((r.kind === 'raw' || r.kind === 'rawparts') && r.service !== '204')),
  );
  const per = (p: number | undefined, r: CellResult) =>
    p === undefined ? undefined : (p / 100) * (1e6 / r.rps);
  const out = [
    `Where the machine's CPU goes, per request (µs; all ${cores} cores, from /proc over the measured window; "rest" is`,
    "the HTTP load generator, the kernel's softirq work and anything else; for the raw IcapClient the first column is",
    'the ICAP load generator itself; req/s ≈ cores ÷ total when the machine is all busy):',
    '',
    '| Body | Clients | Path | req/s | machine busy % | app, Squid or ICAP generator | origin | ICAP server | rest | total |',
    '|---|--:|---|--:|--:|--:|--:|--:|--:|--:|',
  ];
  for (const r of rows) {
    const app = per(r.cpuApp, r);
    const origin = per(r.cpuOrigin, r);
    const icap = per(r.cpuIcap, r);
    const total = per(r.cpuMachine, r)!;
    const rest = total - (app ?? 0) - (origin ?? 0) - (icap ?? 0);
    out.push(
      `| ${r.bodyLabel} | ${r.clients} | ${pathLabel(r)} | ${n0(r.rps)} | ${pct(r.cpuMachine)} of ${cores * 100} | ${us(app)} | ${r.kind === 'squid' ? us(origin) : '—'} | ${us(icap)} | ${us(Math.max(0, rest))} | ${us(total)} |`,
    );
  }
  return out;
}

/**
 * The most a middleware that cost nothing above the raw IcapClient could answer on this machine
 * in r's cell: its path needs at least what the framework alone costs the machine per request
 * (HTTP load generator, framework, handler, kernel) plus what the raw exchange costs it (ICAP
 * client, ICAP server, kernel), on `cores` cores, and no more than the raw client gets from the
 * ICAP server. undefined when a figure is missing.
 */
export function zeroCostBound(
  results: CellResult[],
  r: CellResult,
  cores: number,
  ceiling = ceilingOf(results, r),
): number | undefined {
  const same = (x: CellResult) => x.body === r.body && x.clients === r.clients;
  // A form scanned per file is read against the raw client sending it part by part, when measured.
  const raw =
    results.find((x) => x.kind === 'rawparts' && x.service === r.service && same(x)) ??
    results.find((x) => x.kind === 'raw' && x.service === r.service && same(x));
  if (raw?.cpuUsPerReqMachine === undefined || ceiling?.cpuUsPerReqMachine === undefined || raw.rps === 0)
    return undefined;
  return Math.min(raw.rps, (cores * 1e6) / (raw.cpuUsPerReqMachine + ceiling.cpuUsPerReqMachine));
}

/**
 * Per request: CPU µs and wall ms in each stage of the scan, the rest of the application's CPU
 * (framework, HTTP, the handler), and the framework's own CPU without scanning in the same cell.
 */
export function renderStages(results: CellResult[], staged: CellResult[]): string[] {
  const out = [
    'Per stage of the scan, per request (CPU µs of the application process / wall ms; CPU is one',
    "request's only with one client):",
    '',
    `| Body | Clients | icapkit path | ${STAGES.join(' | ')} | engine total | rest of the app | app total | ceiling | above the ceiling |`,
    `|---|--:|---|${STAGES.map(() => '--:|').join('')}--:|--:|--:|--:|--:|`,
  ];
  for (const r of staged) {
    const n = r.ok;
    const cells = STAGES.map((s) => {
      const t = r.stages![s];
      return t.n === 0 ? '—' : `${(t.cpuUs / n).toFixed(0)} / ${(t.wallUs / n / 1000).toFixed(2)}`;
    });
    const engine = STAGES.reduce((a, s) => a + r.stages![s].cpuUs, 0) / n;
    const total = r.cpuUsPerReq;
    const ceiling = ceilingOf(results, r)?.cpuUsPerReq;
    out.push(
      `| ${r.bodyLabel} | ${r.clients} | ${pathLabel(r)} | ${cells.join(' | ')} | ${engine.toFixed(0)} | ${total === undefined ? '—' : (total - engine).toFixed(0)} | ${us(total)} | ${us(ceiling)} | ${us(cpuAbove(results, r))} |`,
    );
  }
  return out;
}

export function renderTargets(results: CellResult[], cores = 2): string[] {
  const out: string[] = ['Targets (computed from this run):', ''];
  const icapkit = results.filter((r) => r.kind === 'icapkit');
  const same = (a: CellResult, b: CellResult) => a.body === b.body && a.clients === b.clients;

  /**
   * "≥ goal× Squid" over `cells` (each against Squid with the same ICAP service): how many met,
   * each miss with its zero-cost bound, or why it has none.
   */
  const againstSquid = (cells: CellResult[], goal: number, name: (r: CellResult) => string): string => {
    const missed: string[] = [];
    let ok = 0;
    let all = 0;
    for (const r of cells) {
      const s = results.find((x) => x.kind === 'squid' && x.service === r.service && same(x, r));
      if (!s || s.rps === 0) continue;
      all++;
      const v = r.rps / s.rps;
      if (v >= goal) {
        ok++;
        continue;
      }
      missed.push(`${name(r)}: ${v.toFixed(2)}×${boundText(r, (bound) => `${(bound / s.rps).toFixed(2)}×`)}`);
    }
    return `${ok}/${all} cells met${missed.length ? `; missed: ${missed.join(', ')}` : ''}`;
  };
  /**
   * A miss's zero-cost bound. A framework that ran costlier alone than with icapkit in the same
   * cell (a state a plain Express process can fall into at 1 MiB and stay in) makes that cell's
   * figure no bound: the bound then takes the framework alone at its cheapest with the same body
   * in this run (any number of clients), which can only raise it, and says so.
   */
  const boundText = (r: CellResult, shown: (bound: number) => string): string => {
    const costlier = (c: CellResult | undefined) =>
      c?.cpuUsPerReq !== undefined && r.cpuUsPerReq !== undefined && c.cpuUsPerReq > r.cpuUsPerReq;
    const ceiling = ceilingOf(results, r);
    if (!costlier(ceiling)) {
      const bound = zeroCostBound(results, r, cores);
      return bound === undefined ? '' : ` (at most ${shown(bound)} at zero cost)`;
    }
    const alone = `${FW[r.framework!]} alone cost more CPU per request here, ${us(ceiling!.cpuUsPerReq)} µs, than with icapkit, ${us(r.cpuUsPerReq)}`;
    const cheapest = results
      .filter(
        (x) =>
          x.kind === 'ceiling' &&
          x.framework === r.framework &&
          x.body === r.body &&
          x.cpuUsPerReqMachine !== undefined &&
          !costlier(x),
      )
      .sort((a, b) => a.cpuUsPerReqMachine! - b.cpuUsPerReqMachine!)[0];
    const bound = cheapest === undefined ? undefined : zeroCostBound(results, r, cores, cheapest);
    return bound === undefined
      ? ` (no zero-cost bound: ${alone})`
      : ` (at most ${shown(bound)} at zero cost with ${FW[r.framework!]} alone as at c=${cheapest!.clients}, ${us(cheapest!.cpuUsPerReqMachine)} µs of the machine per request: ${alone})`;
  };
  for (const service of ['avscan', 'echo'] as const)
    out.push(
      `- icapkit ≥ 1.5× Squid req/s (${service}, 10 KiB and 1 MiB): ${againstSquid(
        icapkit.filter((x) => x.service === service && (x.body === '10k' || x.body === '1m')),
        1.5,
        (r) => `${FW[r.framework!]} ${r.bodyLabel} c=${r.clients}`,
      )}`,
    );
  const forms = icapkit.filter((x) => x.service === 'avscan' && x.body === 'mp5');
  if (forms.length > 0)
    out.push(
      `- icapkit ≥ 1.2× Squid forms/s (multipart, avscan; "zero cost" against the raw client sending the form part by part): ${againstSquid(
        forms,
        1.2,
        (r) => `${FW[r.framework!]} c=${r.clients}`,
      )}`,
    );

  const t2: string[] = [];
  let t2ok = 0;
  let t2all = 0;
  for (const r of icapkit.filter((x) => x.service === 'avscan' && x.body === '1m')) {
    const raw = results.find((x) => x.kind === 'raw' && x.service === 'avscan' && same(x, r));
    if (!raw || raw.rps === 0) continue;
    t2all++;
    const v = r.rps / raw.rps;
    if (v >= 0.9) t2ok++;
    else
      t2.push(
        `${FW[r.framework!]} c=${r.clients}: ${(v * 100).toFixed(0)}%${boundText(r, (bound) => `${((bound / raw.rps) * 100).toFixed(0)}%`)}`,
      );
  }
  out.push(
    `- icapkit ≥ 90% of raw ICAP capacity at 1 MiB (avscan): ${t2ok}/${t2all} cells met` +
      (t2.length ? `; missed: ${t2.join(', ')}` : ''),
  );
  out.push(
    '  ("at zero cost": the most a middleware costing the machine nothing beyond the raw IcapClient could answer here,',
    "  min(raw req/s, cores ÷ (the framework alone's machine CPU per request + the raw exchange's)); see the table above)",
  );

  const t5: string[] = [];
  let t5ok = 0;
  let t5all = 0;
  for (const r of icapkit.filter((x) => x.body === '10k' && x.service !== 'echo')) {
    const above = cpuAbove(results, r);
    if (above === undefined) continue;
    t5all++;
    if (above <= 100) t5ok++;
    else t5.push(`${FW[r.framework!]}→${r.service} c=${r.clients}: ${above.toFixed(0)} µs`);
  }
  out.push(
    `- app CPU per scanned 10 KiB request ≤ 100 µs above the framework's own (avscan, 204): ${t5ok}/${t5all} cells met` +
      (t5.length ? `; missed: ${t5.join(', ')}` : ''),
  );
  const refs = results.filter(
    (x) =>
      (x.kind === 'raw' || x.kind === 'floor') &&
      x.service === '204' &&
      x.body === '10k' &&
      x.cpuUsPerReq !== undefined,
  );
  if (refs.length > 0)
    out.push(
      `  (one ICAP exchange at 10 KiB against the 204 server, CPU µs of the client process per request: ${refs
        .map(
          (x) =>
            `${x.kind === 'raw' ? 'raw IcapClient' : 'socket floor'} c=${x.clients}: ${us(x.cpuUsPerReq)}`,
        )
        .join(', ')})`,
    );
  const holds = results.filter((x) => x.kind === 'hold' && cpuAbove(results, x) !== undefined);
  if (holds.length > 0)
    out.push(
      `  (the hold floor, holdfloor.ts in the framework instead of icapkit, CPU µs above the framework's own: ${holds
        .map((x) => `${FW[x.framework!]} c=${x.clients}: ${us(cpuAbove(results, x))}`)
        .join(', ')})`,
    );

  const t3 = icapkit.filter((r) => r.icapOpened !== undefined && r.icapOpened > r.clients);
  out.push(
    `- ≤ 1 ICAP connection per concurrent client: ${icapkit.length - t3.length}/${icapkit.length} cells met` +
      (t3.length
        ? `; missed: ${t3.map((r) => `${FW[r.framework!]}→${r.service} ${r.bodyLabel} c=${r.clients}: ${r.icapOpened}`).join(', ')}`
        : ''),
  );

  // What icapkit adds: the growth beyond that of the same framework without scanning in the
  // same cell (a fresh Node process grows by some 50-70 MiB of heap and code whatever it serves).
  const added = (r: CellResult) => {
    const ceiling = results.find((x) => x.kind === 'ceiling' && x.framework === r.framework && same(x, r));
    const own = r.peakRss - r.baseRss;
    return ceiling === undefined ? own : own - Math.max(0, ceiling.peakRss - ceiling.baseRss);
  };
  const t4 = icapkit.filter((r) => added(r) > r.clients * DEFAULT_BUFFER_SIZE);
  const worst = icapkit.reduce<CellResult | undefined>(
    (w, r) => (w === undefined || added(r) > added(w) ? r : w),
    undefined,
  );
  out.push(
    `- RSS growth beyond the same framework's own ≤ clients × bufferSize (${DEFAULT_BUFFER_SIZE / MiB} MiB): ${icapkit.length - t4.length}/${icapkit.length} cells met` +
      (worst
        ? ` (largest: ${worst.path} ${worst.bodyLabel} c=${worst.clients}: ${(added(worst) / MiB).toFixed(0)} MiB)`
        : '') +
      (t4.length
        ? `; missed: ${t4.map((r) => `${r.path} ${r.bodyLabel} c=${r.clients}: +${(added(r) / MiB).toFixed(0)} MiB`).join(', ')}`
        : ''),
  );
  return out;
}
