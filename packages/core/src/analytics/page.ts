import { createHash } from 'node:crypto';

/**
 * The log analytics page: one self-contained HTML document (inline stylesheet and script, no
 * external resource) that reads `api/overview` and `api/records/<id>` next to its own URL. It
 * holds no data itself: every value arrives as JSON and is put in the page with `textContent`,
 * `setAttribute` and `dataset`, never parsed as markup, so file names, threat names and header
 * values from the log show as the text they are. Its Content-Security-Policy allows exactly its
 * own script and stylesheet (by hash), requests to its own origin, and nothing else; Trusted Types
 * are enforced, so no code path can assign a string to innerHTML.
 *
 * This file is the one exception to the 600-line limit on source files (its bulk is the page's
 * markup, stylesheet and script, one template each); test/engine/architecture.test.ts allows it.
 */

/** The stylesheet (the page's one <style>, allowed by its hash). */
const STYLE = `:root { color-scheme: light; --fg: #1f2328; --muted: #59636e; --line: #d1d9e0; --bg: #f6f8fa; --passed: #1a7f37; --blocked: #cf222e; --modified: #0969da; --failed: #9a6700; --disabled: #59636e; --significant: #8250df; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); margin: 0; background: #fff; }
header { padding: 1rem 1.5rem .5rem; border-bottom: 1px solid var(--line); background: var(--bg); }
h1 { font-size: 1.35rem; margin: 0 0 .25rem; }
h2 { font-size: 1.05rem; margin: 1.25rem 0 .5rem; }
h3 { font-size: .95rem; margin: 0 0 .4rem; }
h4 { font-size: .9rem; margin: .75rem 0 .3rem; }
h5 { font-size: .8rem; margin: .5rem 0 .2rem; color: var(--muted); }
main { padding: 0 1.5rem 2rem; }
.sr { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); }
.muted, .none, .hint { color: var(--muted); }
.error { color: var(--blocked); }
.controls { display: flex; gap: 1rem; align-items: center; flex-wrap: wrap; }
#summary { margin: 0 0 .5rem; }
button { font: inherit; cursor: pointer; }
.chips { list-style: none; display: flex; flex-wrap: wrap; gap: .4rem; padding: .75rem 0 0; margin: 0; }
.chip { display: inline-flex; align-items: center; gap: .3rem; border: 1px solid var(--modified); border-radius: 1rem; padding: .1rem .2rem .1rem .6rem; background: #ddf4ff; max-width: 40rem; }
.chip-key { color: var(--muted); }
.chip-value { overflow-wrap: anywhere; }
.chip .remove { border: 0; background: none; font-size: 1rem; line-height: 1; padding: 0 .35rem; border-radius: 1rem; }
.chip .remove:hover { background: #b6e3ff; }
.tiles { display: flex; gap: .6rem; flex-wrap: wrap; }
.tile { display: flex; flex-direction: column; align-items: flex-start; min-width: 8rem; padding: .6rem .9rem; border: 1px solid var(--line); border-left: 5px solid var(--disabled); border-radius: .4rem; background: #fff; text-align: left; }
.tile:hover { background: var(--bg); }
.tile .count { font-size: 1.6rem; font-weight: 600; }
.tile.passed { border-left-color: var(--passed); }
.tile.blocked { border-left-color: var(--blocked); }
.tile.modified { border-left-color: var(--modified); }
.tile.failed { border-left-color: var(--failed); }
.tile.significant { border-left-color: var(--significant); }
.value { border: 1px solid var(--line); background: var(--bg); border-radius: .3rem; padding: 0 .35rem; margin: 0 .15rem .15rem 0; color: inherit; max-width: 100%; overflow-wrap: anywhere; text-align: left; }
.value:hover { border-color: var(--modified); background: #ddf4ff; }
.value.action.passed { color: var(--passed); }
.value.action.blocked { color: var(--blocked); font-weight: 600; }
.value.action.modified { color: var(--modified); }
.value.action.failed { color: var(--failed); font-weight: 600; }
.value.action.disabled { color: var(--disabled); }
.panels { display: grid; grid-template-columns: repeat(auto-fill, minmax(16rem, 1fr)); gap: .75rem; }
.panel { border: 1px solid var(--line); border-radius: .4rem; padding: .6rem .75rem; }
.facet { list-style: none; margin: 0; padding: 0; }
.facet li { display: grid; grid-template-columns: 1fr auto; gap: 0 .5rem; align-items: center; margin-bottom: .25rem; }
.facet .n { font-variant-numeric: tabular-nums; }
.facet meter { grid-column: 1 / -1; width: 100%; height: .35rem; }
table.grid { border-collapse: collapse; width: 100%; }
table.grid th, table.grid td { border-bottom: 1px solid var(--line); padding: .35rem .5rem; text-align: left; vertical-align: top; }
table.grid th { font-weight: 600; color: var(--muted); font-size: .85rem; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.grid td:first-child .value { overflow-wrap: normal; white-space: nowrap; }
.health .state { font-weight: 600; }
.health.up .state { color: var(--passed); }
.health.suspended .state { color: var(--blocked); }
.last-error { color: var(--muted); font-size: .85rem; overflow-wrap: anywhere; }
.chart svg { width: 100%; max-width: 56rem; height: auto; display: block; }
.chart .axis { stroke: var(--line); }
.chart .bar { cursor: pointer; }
.chart .bar .hit { fill: transparent; }
.chart .bar .fill { fill: var(--modified); }
.chart .bar:hover .fill, .chart .bar:focus .fill { fill: #0550ae; }
.chart .bar:focus { outline: none; }
.chart .bar:focus .hit { fill: #ddf4ff; }
.chart text { font-size: 10px; text-anchor: middle; fill: var(--fg); }
.chart text.label { fill: var(--muted); font-size: 9px; }
.records { list-style: none; margin: 0; padding: 0; }
.rec { border-bottom: 1px solid var(--line); padding: .35rem 0; }
.rec .line { display: flex; flex-wrap: wrap; align-items: baseline; gap: .25rem; }
.rec .time { color: var(--muted); font-variant-numeric: tabular-nums; margin-right: .25rem; }
.toggle { border: 1px solid var(--line); background: #fff; border-radius: .3rem; width: 1.7rem; }
.detail { margin: .5rem 0 .5rem 2rem; padding: .5rem .75rem; border-left: 3px solid var(--line); background: #fbfcfd; }
dl.fields { display: grid; grid-template-columns: max-content 1fr; gap: .15rem .75rem; margin: 0; }
dl.fields dt { color: var(--muted); font-family: ui-monospace, monospace; font-size: .8rem; }
dl.fields dd { margin: 0; overflow-wrap: anywhere; }
pre.headers { background: var(--bg); border: 1px solid var(--line); padding: .5rem; overflow-x: auto; font-size: .8rem; white-space: pre-wrap; overflow-wrap: anywhere; margin: 0; }
table.sub { border-collapse: collapse; font-size: .85rem; }
table.sub th, table.sub td { border: 1px solid var(--line); padding: .15rem .4rem; text-align: left; }
.entry { border-top: 1px dashed var(--line); margin-top: .5rem; }
#more { margin-top: .5rem; }
`;

/** The script (the page's one <script>, allowed by its hash). */
const SCRIPT = String.raw`(() => {
  'use strict';
  const SVG = 'http://www.w3.org/2000/svg';
  const ACTIONS = [
    ['ICAP_PASSED', 'passed'],
    ['ICAP_BLOCKED', 'blocked'],
    ['ICAP_MODIFIED', 'modified'],
    ['ICAP_FAILED', 'failed'],
    ['ICAP_DISABLED', 'disabled'],
  ];
  const ACTION_NAME = Object.fromEntries(ACTIONS);
  const LABELS = {
    action: 'action',
    significant: 'significant',
    significance: 'significance',
    threat: 'threat',
    rule: 'rule',
    server: 'server',
    pool: 'pool',
    vendor: 'vendor',
    latency: 'latency',
    error: 'error',
    file: 'file',
    method: 'method',
    path: 'path',
    status: 'HTTP status',
    icap_status: 'ICAP status',
    profile: 'profile',
    client: 'client',
  };
  const FACETS = [
    ['threat', 'Top threats'],
    ['rule', 'Top rules'],
    ['significance', 'Significance'],
    ['vendor', 'Vendors'],
    ['error', 'Errors'],
    ['file', 'Files'],
    ['path', 'Paths'],
    ['method', 'Methods'],
    ['status', 'HTTP status sent'],
    ['icap_status', 'ICAP status received'],
    ['profile', 'Profiles'],
    ['client', 'Clients'],
  ];
  const STEP = 100;
  const MAX_LIMIT = 500;

  const api = (location.pathname.endsWith('/') ? location.pathname : location.pathname + '/') + 'api/';
  const filters = [];
  const expanded = new Set();
  const cache = new Map();
  let limit = STEP;
  let seq = 0;
  let timer = null;

  for (const [key, value] of new URLSearchParams(location.search)) {
    if (Object.hasOwn(LABELS, key) && filters.length < 32) filters.push({ key, value: value.slice(0, 512) });
  }

  const byId = (id) => document.getElementById(id);

  /** An element with text (never markup) and attributes set through the DOM. */
  function h(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'text') node.textContent = String(v);
      else if (k === 'className') node.className = v;
      else if (k.startsWith('data-')) node.dataset[k.slice(5).replace(/-([a-z])/g, (_, c) => c.toUpperCase())] = String(v);
      else node.setAttribute(k, String(v));
    }
    for (const c of children.flat(Infinity)) {
      if (c === undefined || c === null || c === false) continue;
      node.append(typeof c === 'string' || typeof c === 'number' ? String(c) : c);
    }
    return node;
  }

  function svg(tag, attrs) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    return node;
  }

  /** A value that adds the filter "key = value" when clicked. */
  function chip(key, value, text) {
    const shown = text === undefined ? String(value) : String(text);
    return h('button', {
      type: 'button',
      className: 'value' + (key === 'action' ? ' action ' + ACTION_NAME[value] : ''),
      'data-key': key,
      'data-value': value,
      title: 'Filter: ' + LABELS[key] + ' = ' + value,
      text: shown,
    });
  }

  function fmtMs(ms) {
    if (ms === null || ms === undefined) return '–';
    return ms < 1000 ? ms + ' ms' : (ms / 1000).toFixed(ms < 10000 ? 2 : 1) + ' s';
  }

  function fmtTime(ms) {
    const d = new Date(ms);
    return Number.isNaN(d.getTime()) ? String(ms) : d.toLocaleString();
  }

  function link(url) {
    let parsed = null;
    try {
      parsed = new URL(String(url));
    } catch {
      parsed = null;
    }
    if (parsed !== null && (parsed.protocol === 'http:' || parsed.protocol === 'https:')) {
      return h('a', { href: parsed.href, rel: 'noopener noreferrer nofollow', target: '_blank', text: String(url) });
    }
    return h('span', { text: String(url) });
  }

  function setState(state, text) {
    document.body.dataset.state = state;
    const s = byId('status');
    s.textContent = text;
    s.className = state === 'error' ? 'error' : '';
  }

  function query() {
    const p = new URLSearchParams();
    for (const f of filters) p.append(f.key, f.value);
    return p;
  }

  function changed() {
    const q = query().toString();
    history.replaceState(null, '', location.pathname + (q ? '?' + q : ''));
    limit = STEP;
    load();
  }

  function addFilter(key, value) {
    if (!Object.hasOwn(LABELS, key) || filters.length >= 32) return;
    if (!filters.some((f) => f.key === key && f.value === value)) filters.push({ key, value });
    changed();
  }

  async function getJson(url) {
    const res = await fetch(url, { headers: { accept: 'application/json' }, credentials: 'same-origin', cache: 'no-store' });
    if (!res.ok) throw new Error('HTTP ' + res.status);
    return res.json();
  }

  async function load() {
    const mine = ++seq;
    setState('loading', 'Loading…');
    const p = query();
    p.set('limit', String(limit));
    try {
      const data = await getJson(api + 'overview?' + p.toString());
      if (mine !== seq) return;
      render(data);
      setState('ready', 'Updated ' + new Date(data.generatedAt).toLocaleTimeString());
    } catch (err) {
      if (mine === seq) setState('error', 'Could not load the overview: ' + (err && err.message ? err.message : String(err)));
    }
  }

  function render(data) {
    document.body.dataset.filters = String(data.filters.length);
    byId('summary').textContent =
      data.matched + ' of ' + data.stored + ' records' + (data.filters.length > 0 ? ' match the filters' : '') +
      ' (the ring keeps the last ' + data.capacity + ')';
    renderChips();
    renderActions(data);
    renderFacets(data);
    renderServers(data);
    renderPools(data);
    renderLatency(data);
    renderList(byId('significant-list'), 'significant', data.significantRecords, 'No significant records.');
    renderList(byId('records'), 'records', data.records, 'No records.');
    const more = byId('more');
    more.hidden = !(data.records.length < data.matched && limit < MAX_LIMIT);
    byId('listed').textContent = data.records.length + ' of ' + data.matched + ' shown';
  }

  function renderChips() {
    const box = byId('chips');
    const items = filters.map((f, i) =>
      h('li', { className: 'chip' },
        h('span', { className: 'chip-key', text: LABELS[f.key] + ':' }),
        h('span', { className: 'chip-value', text: f.value }),
        h('button', { type: 'button', className: 'remove', 'data-remove': i, 'aria-label': 'Remove filter ' + LABELS[f.key] + ' = ' + f.value, title: 'Remove this filter', text: '×' }),
      ),
    );
    if (filters.length > 1) items.push(h('li', {}, h('button', { type: 'button', id: 'clear', text: 'Clear all' })));
    if (filters.length === 0) items.push(h('li', { className: 'hint', text: 'No filters: click any value to add one.' }));
    box.replaceChildren(...items);
  }

  function renderActions(data) {
    const tiles = ACTIONS.map(([a, name]) =>
      h('button', { type: 'button', className: 'tile ' + name, 'data-key': 'action', 'data-value': a, title: 'Filter: action = ' + a },
        h('span', { className: 'count', text: data.actions[a] }),
        h('span', { className: 'label', text: name }),
      ),
    );
    tiles.push(
      h('button', { type: 'button', className: 'tile significant', 'data-key': 'significant', 'data-value': 'yes', title: 'Filter: significant = yes' },
        h('span', { className: 'count', text: data.significant }),
        h('span', { className: 'label', text: 'significant' }),
      ),
    );
    byId('actions').replaceChildren(...tiles);
  }

  function renderFacets(data) {
    const panels = FACETS.map(([dim, title]) => {
      const facet = data.facets[dim];
      const top = facet ? facet.top : [];
      const list = h('ol', { className: 'facet', 'data-dimension': dim });
      for (const v of top) {
        list.append(
          h('li', {},
            chip(dim, v.value),
            h('span', { className: 'n', text: v.count }),
            h('meter', { min: 0, max: Math.max(1, data.matched), value: v.count, 'aria-hidden': 'true' }),
          ),
        );
      }
      if (top.length === 0) list.append(h('li', { className: 'none', text: 'none' }));
      if (facet && facet.others > 0) list.append(h('li', { className: 'none', text: '+ ' + facet.others + ' more' }));
      return h('section', { className: 'panel', id: 'facet-' + dim }, h('h3', { text: title }), list);
    });
    byId('facets').replaceChildren(...panels);
  }

  function countCells(row) {
    return ACTIONS.slice(0, 4).map(([a]) => h('td', { className: 'num', text: row.actions[a] }));
  }

  function renderServers(data) {
    const rows = data.servers.map((s) => {
      const health = s.health.length === 0
        ? h('span', { className: 'muted', text: 'not in the profile' })
        : s.health.map((x) =>
            h('div', { className: 'health ' + x.state },
              h('span', { className: 'state', text: x.state }),
              ' ',
              h('span', { className: 'muted', text: x.profile + ' · ' + x.connections.open + ' open · ' + x.outstanding + ' outstanding' + (x.consecutiveFailures > 0 ? ' · ' + x.consecutiveFailures + ' failures in a row' : '') }),
              x.lastError ? h('div', { className: 'last-error', text: 'last error: ' + x.lastError }) : null,
            ),
          );
      return h('tr', { 'data-server': s.server },
        h('td', {}, chip('server', s.server)),
        h('td', {}, s.pools.map((p) => chip('pool', p))),
        h('td', {}, health),
        h('td', { className: 'num', text: s.transactions }),
        countCells(s),
        h('td', { className: 'num', text: fmtMs(s.meanLatency) }),
      );
    });
    if (rows.length === 0) rows.push(h('tr', {}, h('td', { colspan: 9, className: 'none', text: 'No servers.' })));
    byId('servers').replaceChildren(...rows);
  }

  function renderPools(data) {
    const rows = data.pools.map((p) =>
      h('tr', { 'data-pool': p.pool },
        h('td', {}, chip('pool', p.pool)),
        h('td', {}, p.servers.map((s) => chip('server', s))),
        h('td', { text: p.up === null ? '–' : p.up + ' of ' + p.servers.length + ' up' }),
        h('td', { className: 'num', text: p.transactions }),
        countCells(p),
        h('td', { className: 'num', text: fmtMs(p.meanLatency) }),
      ),
    );
    if (rows.length === 0) rows.push(h('tr', {}, h('td', { colspan: 9, className: 'none', text: 'No pools.' })));
    byId('pools').replaceChildren(...rows);
  }

  function renderLatency(data) {
    const L = data.latency;
    const W = 60;
    const H = 140;
    const top = 16;
    const n = L.buckets.length;
    const max = Math.max(1, ...L.buckets.map((b) => b.count));
    const chart = svg('svg', { viewBox: '0 0 ' + n * W + ' ' + (H + top + 30), role: 'img', 'aria-label': 'ICAP latency distribution', id: 'latency-chart' });
    chart.append(svg('line', { x1: 0, y1: top + H + 0.5, x2: n * W, y2: top + H + 0.5, class: 'axis' }));
    L.buckets.forEach((b, i) => {
      const height = b.count === 0 ? 0 : Math.max(2, Math.round((b.count / max) * H));
      const g = svg('g', { class: 'bar', role: 'button', tabindex: 0, 'data-key': 'latency', 'data-value': b.label, 'data-count': b.count, 'aria-label': 'latency ' + b.label + ': ' + b.count + ' records' });
      const title = svg('title');
      title.textContent = b.label + ': ' + b.count + ' records';
      g.append(title);
      g.append(svg('rect', { class: 'hit', x: i * W, y: 0, width: W, height: top + H + 30 }));
      g.append(svg('rect', { class: 'fill', x: i * W + 8, y: top + H - height, width: W - 16, height }));
      const count = svg('text', { x: i * W + W / 2, y: top + H - height - 4, class: 'count' });
      count.textContent = String(b.count);
      const label = svg('text', { x: i * W + W / 2, y: top + H + 16, class: 'label' });
      label.textContent = b.label;
      g.append(count, label);
      chart.append(g);
    });
    byId('latency').replaceChildren(chart);
    byId('latency-stats').textContent = L.count === 0
      ? 'No ICAP transactions among the matching records.'
      : L.count + ' records with an ICAP transaction · median ' + fmtMs(L.p50) + ' · 95th percentile ' + fmtMs(L.p95) + ' · slowest ' + fmtMs(L.max);
  }

  function renderList(box, list, records, empty) {
    const items = records.map((r) => recordRow(r, list));
    if (items.length === 0) items.push(h('li', { className: 'none', text: empty }));
    box.replaceChildren(...items);
  }

  /** One record of a list; its whole record opens below it (the list remembers which are open). */
  function recordRow(r, list) {
    const key = list + ':' + r.id;
    const open = expanded.has(key);
    const detail = h('div', { className: 'detail', hidden: !open });
    const toggle = h('button', { type: 'button', className: 'toggle', 'data-toggle': key, 'aria-expanded': open ? 'true' : 'false', 'aria-label': 'Show the whole record #' + r.id, title: 'Show the whole record', text: open ? '▾' : '▸' });
    const row = h('li', { className: 'rec', 'data-id': r.id },
      h('div', { className: 'line' },
        toggle,
        h('span', { className: 'time', text: fmtTime(r.time) }),
        chip('action', r.action, ACTION_NAME[r.action] || r.action),
        chip('method', r.method),
        chip('path', r.path),
        r.status !== null ? chip('status', String(r.status)) : null,
        r.threats.map((t) => chip('threat', t)),
        r.files.map((f) => chip('file', f)),
        r.significance.map((s) => chip('significance', s)),
        r.error !== null ? chip('error', r.error) : null,
        h('span', { className: 'muted', text: 'ICAP ' + fmtMs(r.latency) + ' · total ' + fmtMs(r.duration) }),
        r.truncated ? h('span', { className: 'muted', text: '(cut)' }) : null,
      ),
      detail,
    );
    if (open) fill(detail, r.id);
    return row;
  }

  async function fill(detail, id) {
    if (cache.has(id)) {
      detail.replaceChildren(renderRecord(cache.get(id)));
      return;
    }
    detail.replaceChildren(h('p', { className: 'muted', text: 'Loading the record…' }));
    try {
      const rec = await getJson(api + 'records/' + encodeURIComponent(String(id)));
      cache.set(id, rec);
      if (cache.size > 200) cache.delete(cache.keys().next().value);
      detail.replaceChildren(renderRecord(rec));
    } catch (err) {
      detail.replaceChildren(h('p', { className: 'error', text: 'Could not load the record: ' + (err && err.message ? err.message : String(err)) }));
    }
  }

  function toggleRecord(button) {
    const key = button.dataset.toggle;
    const row = button.closest('.rec');
    const detail = row.querySelector('.detail');
    const open = !expanded.has(key);
    if (open) expanded.add(key);
    else expanded.delete(key);
    button.setAttribute('aria-expanded', open ? 'true' : 'false');
    button.textContent = open ? '▾' : '▸';
    detail.hidden = !open;
    if (open) fill(detail, Number(row.dataset.id));
  }

  // ---------------------------------------------------------------- the whole record

  const DIM_OF = {
    action: 'action',
    profile_name: 'profile',
    rule_name: 'rule',
    significance: 'significance',
    uri_path: 'path',
    client_ip: 'client',
    http_response_code: 'status',
    error_code: 'error',
    file_names: 'file',
    file_name: 'file',
    threat_id: 'threat',
    threat_name: 'threat',
    vendor: 'vendor',
    icap_response_code: 'icap_status',
  };

  function valueNode(key, v, dims) {
    const dim = dims[key];
    if (Array.isArray(v)) {
      if (v.length === 0) return h('span', { className: 'muted', text: 'none' });
      if (v.every((x) => typeof x !== 'object' || x === null)) return h('span', {}, v.map((x) => [valueNode(key, x, dims), ' ']));
      return table(v, dims);
    }
    if (v !== null && typeof v === 'object') return fields(v, dims);
    if (key.endsWith('_url') && typeof v === 'string') return link(v);
    if (dim !== undefined && (typeof v === 'string' || typeof v === 'number')) return chip(dim, String(v));
    if (key === 'http_method' && typeof v === 'string') return chip('method', v.replace(/^HTTP_METHOD_/, ''));
    if (key === 'start_time' && typeof v === 'number') return h('span', { text: fmtTime(v) + ' (' + new Date(v).toISOString() + ')' });
    return h('span', { text: String(v) });
  }

  function fields(obj, dims, skip) {
    const dl = h('dl', { className: 'fields' });
    for (const [k, v] of Object.entries(obj)) {
      if (skip && skip.includes(k)) continue;
      dl.append(h('dt', { text: k }), h('dd', {}, valueNode(k, v, dims)));
    }
    return dl;
  }

  function table(rows, dims) {
    const keys = [];
    for (const r of rows) for (const k of Object.keys(r || {})) if (!keys.includes(k)) keys.push(k);
    return h('table', { className: 'sub' },
      h('thead', {}, h('tr', {}, keys.map((k) => h('th', { text: k })))),
      h('tbody', {}, rows.map((r) => h('tr', {}, keys.map((k) => h('td', {}, r && r[k] !== undefined ? valueNode(k, r[k], dims) : ''))))),
    );
  }

  function serverOf(uri) {
    const m = /^(icaps?:\/\/[^/?#]+)/i.exec(String(uri || ''));
    return m ? m[1] : null;
  }

  function renderEntry(e, i, n) {
    const dims = Object.assign({}, DIM_OF);
    delete dims.action; // a transaction's own action; the record's is the filter
    const server = serverOf(e.icap_absolute_uri);
    const section = h('section', { className: 'entry' },
      h('h4', { text: 'ICAP transaction ' + (i + 1) + ' of ' + n + ': ' + (ACTION_NAME[e.action] || e.action) }),
      h('p', {},
        server ? chip('server', server) : null,
        e.pool_name && e.pool_name.val ? chip('pool', e.pool_name.val) : null,
      ),
      fields(Object.assign({}, e, { pool_name: e.pool_name ? e.pool_name.val : undefined }), Object.assign(dims, { pool_name: 'pool' }), ['icap_headers_sent_to_server', 'icap_headers_received_from_server']),
    );
    for (const [k, title] of [['icap_headers_sent_to_server', 'ICAP headers sent to the server'], ['icap_headers_received_from_server', 'ICAP headers received from the server']]) {
      if (typeof e[k] === 'string') section.append(h('h5', { text: title }), h('pre', { className: 'headers', 'data-headers': k, text: e[k] }));
    }
    return section;
  }

  function renderRecord(rec) {
    const log = rec.log || {};
    const entries = Array.isArray(log.request_logs) ? log.request_logs : [];
    const box = h('div', { className: 'record', 'data-record': rec.id },
      h('h3', { text: 'Record #' + rec.id }),
      rec.truncated ? h('p', { className: 'muted', text: 'Some values of this record were cut to fit the ring\u2019s size limits.' }) : null,
      fields(log, DIM_OF, ['request_logs']),
    );
    if (entries.length === 0) box.append(h('p', { className: 'muted', text: 'No ICAP transaction.' }));
    entries.forEach((e, i) => box.append(renderEntry(e || {}, i, entries.length)));
    return box;
  }

  // ---------------------------------------------------------------- events

  document.addEventListener('click', (ev) => {
    const target = ev.target instanceof Element ? ev.target : null;
    if (target === null) return;
    const toggle = target.closest('[data-toggle]');
    if (toggle) return toggleRecord(toggle);
    const remove = target.closest('[data-remove]');
    if (remove) {
      filters.splice(Number(remove.dataset.remove), 1);
      return changed();
    }
    if (target.closest('#clear')) {
      filters.length = 0;
      return changed();
    }
    if (target.closest('#more')) {
      limit = Math.min(MAX_LIMIT, limit + STEP);
      return load();
    }
    if (target.closest('#refresh')) return load();
    const value = target.closest('[data-key]');
    if (value) {
      ev.preventDefault();
      addFilter(value.dataset.key, value.dataset.value);
    }
  });
  document.addEventListener('keydown', (ev) => {
    const target = ev.target instanceof Element ? ev.target : null;
    if (target === null || (ev.key !== 'Enter' && ev.key !== ' ')) return;
    const bar = target.closest('g[data-key]');
    if (bar) {
      ev.preventDefault();
      addFilter(bar.dataset.key, bar.dataset.value);
    }
  });
  byId('live').addEventListener('change', (ev) => {
    if (timer !== null) clearInterval(timer);
    timer = ev.target.checked ? setInterval(load, 5000) : null;
  });

  load();
})();
`;

function sha256Source(text: string): string {
  return `'sha256-${createHash('sha256').update(text, 'utf8').digest('base64')}'`;
}

/** The page's Content-Security-Policy. */
export const PAGE_CSP = [
  "default-src 'none'",
  `script-src ${sha256Source(SCRIPT)}`,
  `style-src ${sha256Source(STYLE)}`,
  "connect-src 'self'",
  "img-src 'none'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
  "require-trusted-types-for 'script'",
  "trusted-types 'none'",
].join('; ');

/** The Content-Security-Policy of every other answer (JSON, errors). */
export const DATA_CSP = "default-src 'none'; frame-ancestors 'none'";

export const PAGE_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>ICAP log analytics</title>
<style>${STYLE}</style>
</head>
<body data-state="loading">
<header>
<h1>ICAP log analytics</h1>
<p id="summary">Loading…</p>
<div class="controls">
<button type="button" id="refresh">Refresh</button>
<label><input type="checkbox" id="live"> refresh every 5 s</label>
<span id="status" role="status" aria-live="polite"></span>
</div>
<ul id="chips" class="chips" aria-label="Filters"></ul>
</header>
<main>
<section aria-labelledby="h-actions"><h2 id="h-actions">Actions</h2><div id="actions" class="tiles"></div></section>
<section aria-labelledby="h-latency"><h2 id="h-latency">ICAP latency</h2><div id="latency" class="chart"></div><p id="latency-stats" class="muted"></p></section>
<section aria-labelledby="h-servers"><h2 id="h-servers">Servers</h2>
<table class="grid"><thead><tr><th>server</th><th>pools</th><th>health now</th><th>transactions</th><th>passed</th><th>blocked</th><th>modified</th><th>failed</th><th>mean latency</th></tr></thead><tbody id="servers"></tbody></table></section>
<section aria-labelledby="h-pools"><h2 id="h-pools">Pools</h2>
<table class="grid"><thead><tr><th>pool</th><th>servers</th><th>health now</th><th>transactions</th><th>passed</th><th>blocked</th><th>modified</th><th>failed</th><th>mean latency</th></tr></thead><tbody id="pools"></tbody></table></section>
<section aria-labelledby="h-facets"><h2 id="h-facets">Top values</h2><div id="facets" class="panels"></div></section>
<section aria-labelledby="h-significant"><h2 id="h-significant">Significant entries</h2><ol id="significant-list" class="records"></ol></section>
<section aria-labelledby="h-records"><h2 id="h-records">Records</h2><p id="listed" class="muted"></p><ol id="records" class="records"></ol><button type="button" id="more" hidden>Show more</button></section>
</main>
<noscript><p>This page needs JavaScript. The data it shows is at api/overview.</p></noscript>
<script>${SCRIPT}</script>
</body>
</html>
`;
