import { createHash } from 'node:crypto';
import { STYLE } from './page-style.js';

/**
 * The log analytics page: one self-contained HTML document (inline stylesheet and script, no
 * external resource) that reads `api/overview` and `api/records/<id>` next to its own URL. It
 * holds no data itself: every value arrives as JSON and is put in the page with `textContent`,
 * `setAttribute` and `dataset`, never parsed as markup, so file names, threat names and header
 * values from the log show as the text they are. Its Content-Security-Policy allows exactly its
 * own script and stylesheet (by hash), requests to its own origin, and nothing else; Trusted Types
 * are enforced, so no code path can assign a string to innerHTML.
 *
 * Enum values show as words (`ICAP_VENDOR_GENERIC` as "Generic", `CLIENT_TIMEOUT` as "client
 * timed out", the raw value in the tooltip; the JSON keeps the raw values), durations with
 * their unit, requests without a body ("page views") hidden unless the toggle asks for them.
 *
 * This file is the one exception to the 600-line limit on source files (its bulk is the page's
 * markup and script, one template each; the stylesheet lives in page-style.ts);
 * test/engine/architecture.test.ts allows it.
 */

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
  const VENDORS = {
    ICAP_VENDOR_GENERIC: 'Generic',
    ICAP_VENDOR_OPSWAT: 'OPSWAT MetaDefender',
    ICAP_VENDOR_LASTLINE: 'NSX Defender (Lastline)',
    ICAP_VENDOR_CICAP: 'c-icap',
    ICAP_VENDOR_KASPERSKY: 'Kaspersky',
    ICAP_VENDOR_ESET: 'ESET',
    ICAP_VENDOR_SYMANTEC: 'Symantec',
    ICAP_VENDOR_MCAFEE: 'McAfee',
    ICAP_VENDOR_TRENDMICRO: 'Trend Micro',
    ICAP_VENDOR_SOPHOS: 'Sophos',
    ICAP_VENDOR_FSECURE: 'F-Secure',
  };
  const SIGNIFICANCE = {
    ICAP_BLOCKED: 'blocked',
    ICAP_MODIFIED: 'modified',
    ICAP_ERROR: 'ICAP error',
    SLOW_RESPONSE: 'slow response',
    BUFFER_SIZE_EXCEEDED: 'over bufferSize',
    FAIL_OPEN: 'failed open',
    CLIENT_ABORTED: 'client went away',
    CLIENT_TIMEOUT: 'client timed out',
    UNSCANNABLE: 'unscannable',
    MULTIPART_REFUSED: 'form refused',
    CONTENT_TYPE_REFUSED: 'content type refused',
    CONTENT_ENCODING_REFUSED: 'encoding refused',
    REQUEST_REFUSED: 'request refused',
    PARTS_REMOVED: 'parts removed',
    DECODED_STRINGS: 'decoded strings scanned',
    CLIENT_LIMITED: 'too many uploads',
    CONTENT_PROVOKED: 'scan failed on the upload',
  };
  /** Record fields in ms, and in bytes. */
  const MS_FIELDS = new Set(['duration', 'latency']);
  const BYTE_FIELDS = new Set(['request_body_length', 'modified_content_length', 'preview_size']);
  /** Record fields whose values are enum names. */
  const ENUM_FIELDS = new Set(['icap_method', 'resolution', 'vendor', 'significance', 'action']);
  const STEP = 100;
  const MAX_LIMIT = 500;

  const api = (location.pathname.endsWith('/') ? location.pathname : location.pathname + '/') + 'api/';
  const filters = [];
  const expanded = new Set();
  const cache = new Map();
  let limit = STEP;
  let pageViews = new URLSearchParams(location.search).get('pageViews') === 'show';
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

  /** Words for an enum value: ICAP_VENDOR_GENERIC is "Generic", FILE_NOT_REPAIRED "file not repaired". */
  function label(key, value) {
    const v = String(value);
    if (key === 'action' && Object.hasOwn(ACTION_NAME, v)) return ACTION_NAME[v];
    if (key === 'vendor' && Object.hasOwn(VENDORS, v)) return VENDORS[v];
    if (key === 'significance' && Object.hasOwn(SIGNIFICANCE, v)) return SIGNIFICANCE[v];
    if (key === 'icap_method') return v.replace(/^ICAP_METHOD_/, '');
    if (ENUM_FIELDS.has(key) && /^[A-Z][A-Z0-9_]+$/.test(v)) return v.replace(/^ICAP_(VENDOR_)?/, '').toLowerCase().replace(/_/g, ' ');
    return v;
  }

  function fmtBytes(n) {
    if (typeof n !== 'number' || !Number.isFinite(n)) return String(n);
    if (n < 1024) return n + ' bytes';
    const units = ['KiB', 'MiB', 'GiB'];
    let v = n / 1024;
    let i = 0;
    while (v >= 1024 && i < units.length - 1) {
      v /= 1024;
      i++;
    }
    return v.toFixed(v < 10 ? 1 : 0) + ' ' + units[i] + ' (' + n + ' bytes)';
  }

  /** A value that adds the filter "key = value" when clicked (an enum shows as words). */
  function chip(key, value, text) {
    const shown = text === undefined ? label(key, value) : String(text);
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
    if (pageViews) p.set('pageViews', 'show');
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
    p.set('pageViews', pageViews ? 'show' : 'hide');
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
    const views = data.pageViews || { count: 0, hidden: false };
    byId('summary').textContent =
      data.matched + ' of ' + data.stored + ' records' + (data.filters.length > 0 ? ' match the filters' : '') +
      (views.hidden && views.count > 0 ? ', ' + views.count + ' page ' + (views.count === 1 ? 'view' : 'views') + ' hidden' : '') +
      ' (the ring keeps the last ' + data.capacity + ')';
    byId('pageviews').checked = pageViews;
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
        h('td', { text: p.up === null ? '–' : p.up + ' of ' + p.servers.length + ' up' + (p.unknown > 0 ? ', ' + p.unknown + ' not yet answered' : '') }),
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
        r.status !== null ? chip('status', String(r.status), 'HTTP ' + r.status) : null,
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
    if (MS_FIELDS.has(key) && v !== '' && Number.isFinite(Number(v))) return h('span', { text: fmtMs(Number(v)) });
    if (BYTE_FIELDS.has(key) && typeof v === 'number') return h('span', { text: fmtBytes(v) });
    if (ENUM_FIELDS.has(key) && typeof v === 'string') return h('span', { className: 'enum', title: v, text: label(key, v) });
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
  byId('pageviews').addEventListener('change', (ev) => {
    pageViews = ev.target.checked;
    changed();
  });
  // The next refresh 5 s after the last one ended: a slow answer never piles requests up.
  let live = false;
  async function tick() {
    timer = null;
    await load();
    if (live && timer === null) timer = setTimeout(tick, 5000);
  }
  byId('live').addEventListener('change', (ev) => {
    live = ev.target.checked;
    if (timer !== null) clearTimeout(timer);
    timer = live ? setTimeout(tick, 5000) : null;
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
<label title="Requests without a body (GET, HEAD, favicon): never scanned"><input type="checkbox" id="pageviews"> show page views</label>
<span id="status" role="status" aria-live="polite"></span>
</div>
<ul id="chips" class="chips" aria-label="Filters"></ul>
</header>
<main>
<section aria-labelledby="h-actions"><h2 id="h-actions">Actions</h2><div id="actions" class="tiles"></div></section>
<section aria-labelledby="h-latency"><h2 id="h-latency">ICAP latency</h2><div id="latency" class="chart"></div><p id="latency-stats" class="muted"></p></section>
<section aria-labelledby="h-servers"><h2 id="h-servers">Servers</h2>
<div class="scroll"><table class="grid"><thead><tr><th>server</th><th>pools</th><th>health now</th><th>transactions</th><th>passed</th><th>blocked</th><th>modified</th><th>failed</th><th>mean latency</th></tr></thead><tbody id="servers"></tbody></table></div></section>
<section aria-labelledby="h-pools"><h2 id="h-pools">Pools</h2>
<div class="scroll"><table class="grid"><thead><tr><th>pool</th><th>servers</th><th>health now</th><th>transactions</th><th>passed</th><th>blocked</th><th>modified</th><th>failed</th><th>mean latency</th></tr></thead><tbody id="pools"></tbody></table></div></section>
<section aria-labelledby="h-facets"><h2 id="h-facets">Top values</h2><div id="facets" class="panels"></div></section>
<section aria-labelledby="h-significant"><h2 id="h-significant">Significant entries</h2><ol id="significant-list" class="records"></ol></section>
<section aria-labelledby="h-records"><h2 id="h-records">Records</h2><p id="listed" class="muted"></p><ol id="records" class="records"></ol><button type="button" id="more" hidden>Show more</button></section>
</main>
<noscript><p>This page needs JavaScript. The data it shows is at api/overview.</p></noscript>
<script>${SCRIPT}</script>
</body>
</html>
`;
