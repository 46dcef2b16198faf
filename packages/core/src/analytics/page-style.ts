/**
 * The stylesheet of the log analytics page (page.ts): its one <style>, allowed by its hash in
 * the page's Content-Security-Policy. Readable from 390 px wide: tables scroll inside their own
 * box instead of widening the page, names never break letter by letter, the record detail
 * stacks its fields on narrow screens.
 */

export const STYLE = `:root { color-scheme: light; --fg: #1f2328; --muted: #59636e; --line: #d1d9e0; --bg: #f6f8fa; --passed: #1a7f37; --blocked: #cf222e; --modified: #0969da; --failed: #9a6700; --disabled: #59636e; --significant: #8250df; }
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
.chip { display: inline-flex; align-items: center; gap: .3rem; border: 1px solid var(--modified); border-radius: 1rem; padding: .1rem .2rem .1rem .6rem; background: #ddf4ff; max-width: min(40rem, 100%); }
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
.scroll { overflow-x: auto; max-width: 100%; }
table.grid { border-collapse: collapse; width: 100%; }
table.grid th, table.grid td { border-bottom: 1px solid var(--line); padding: .35rem .5rem; text-align: left; vertical-align: top; }
table.grid th { font-weight: 600; color: var(--muted); font-size: .85rem; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.grid .value { overflow-wrap: normal; white-space: nowrap; }
.health .state { font-weight: 600; }
.health.up .state { color: var(--passed); }
.health.suspended .state { color: var(--blocked); }
.health.unknown .state { color: var(--muted); }
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
dl.fields { display: grid; grid-template-columns: minmax(0, max-content) minmax(0, 1fr); gap: .15rem .75rem; margin: 0; }
dl.fields dt { color: var(--muted); font-family: ui-monospace, monospace; font-size: .8rem; overflow-wrap: anywhere; }
dl.fields dd { margin: 0; overflow-wrap: anywhere; }
pre.headers { background: var(--bg); border: 1px solid var(--line); padding: .5rem; overflow-x: auto; font-size: .8rem; white-space: pre-wrap; overflow-wrap: anywhere; margin: 0; }
table.sub { border-collapse: collapse; font-size: .85rem; display: block; max-width: 100%; overflow-x: auto; }
table.sub th, table.sub td { border: 1px solid var(--line); padding: .15rem .4rem; text-align: left; }
.entry { border-top: 1px dashed var(--line); margin-top: .5rem; }
#more { margin-top: .5rem; }
.enum { border-bottom: 1px dotted var(--line); }
@media (max-width: 600px) {
  header { padding: .75rem .75rem .5rem; }
  main { padding: 0 .75rem 1.5rem; }
  .tile { min-width: 6.5rem; padding: .45rem .6rem; }
  .tile .count { font-size: 1.3rem; }
  .panels { grid-template-columns: minmax(0, 1fr); }
  .detail { margin-left: 0; padding: .4rem .5rem; }
  dl.fields { grid-template-columns: minmax(0, 1fr); }
  dl.fields dd { margin-bottom: .35rem; }
}
`;
