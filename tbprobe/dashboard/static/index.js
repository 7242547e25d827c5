// The tbprobe tab of TensorBoard. TensorBoard loads this ES module in an iframe and calls
// `render()`. The page holds the run and metric controls, the findings of the runs, and either
// the overview (one heatmap per run) or the layer view of one probed output. Only what is on
// screen is fetched: the chosen metric of the chosen runs, or the chosen layer.

import {decodeMatrix, getJson, runParams} from './api.js';
import {renderLayer} from './layer.js';
import {difference, renderOverview} from './overview.js';

const state = {
  index: {runs: {}, metrics: []},
  selected: [],
  metric: null,
  log: false,
  reference: '',
  collapsed: new Set(),
  view: 'overview',
  tag: null,
  step: null,
  histogramMode: 'overlay',
};
// The overview is fetched again after TensorBoard's default reload interval, for live runs.
const FRESH_MS = 30000;
const matrices = new Map(); // `${metric}\n${run}` -> {matrix, time fetched}
let prefetches = 0; // generation of the latest background prefetch
const layers = new Map(); // `${tag}\n${runs}` -> layer route answer
const page = {};

/** A run's title: TensorBoard's run name without the `/probe` folder tbprobe writes to. */
function title(run) {
  return run.endsWith('/probe') ? run.slice(0, -'/probe'.length) : run;
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

export async function render() {
  const stylesheet = element('link');
  stylesheet.rel = 'stylesheet';
  stylesheet.href = new URL('./style.css', import.meta.url).href;
  document.head.append(stylesheet);
  page.controls = element('div', 'controls');
  page.error = element('div', 'error');
  page.findings = element('div', 'findings');
  page.overview = element('div', 'overview');
  page.layer = element('div', 'layer-view');
  document.body.append(page.controls, page.error, page.findings, page.overview, page.layer);
  // The first overview (first metric, every run) is asked for beside the run list.
  let first;
  try {
    [state.index, first] = await Promise.all([
      getJson('runs'), getJson('overview').catch(() => null),
    ]);
  } catch (error) {
    return showError(error);
  }
  const runs = Object.keys(state.index.runs);
  if (!runs.length) {
    page.overview.textContent = 'No tbprobe run yet: log one with tbprobe.Probe or ProbeCallback.';
    return;
  }
  if (first) store(first);
  state.selected = runs;
  state.metric = first ? first.metric : state.index.metrics[0];
  drawControls();
  setInterval(() => {
    if (state.view === 'overview' && !document.hidden) showOverview();
  }, FRESH_MS);
  await Promise.all([showOverview(), showFindings()]);
}

function showError(error) {
  page.error.textContent = error ? String(error.message || error) : '';
}

function drawControls() {
  const {controls} = page;
  controls.textContent = '';
  const runBox = element('span', 'runs');
  for (const run of Object.keys(state.index.runs)) {
    const label = element('label');
    const box = element('input');
    Object.assign(box, {type: 'checkbox', checked: state.selected.includes(run), value: run});
    box.onchange = () => {
      state.selected = Object.keys(state.index.runs).filter((r) =>
        r === run ? box.checked : state.selected.includes(r));
      refresh();
    };
    label.append(box, ` ${title(run)}`);
    runBox.append(label);
  }
  const metric = select('metric', state.index.metrics.map((m) => [m, m]), state.metric, (v) => {
    state.metric = v;
    refresh();
  });
  const scale = select('scale', [['linear', 'linear'], ['log', 'log']],
      state.log ? 'log' : 'linear', (v) => {
        state.log = v === 'log';
        refresh();
      });
  const compare = select('compare',
      [['', 'values'], ...Object.keys(state.index.runs).map((r) => [r, `difference from ${title(r)}`])],
      state.reference, (v) => {
        state.reference = v;
        refresh();
      });
  const back = element('button', 'back', '← overview');
  back.onclick = () => {
    state.view = 'overview';
    refresh();
  };
  back.hidden = state.view !== 'layer';
  controls.append(back, labelled('runs', runBox), labelled('metric', metric),
      labelled('scale', scale), labelled('colour', compare));
}

function select(name, options, value, onChange) {
  const node = element('select', `select-${name}`);
  for (const [optionValue, text] of options) {
    node.append(new Option(text, optionValue, false, optionValue === value));
  }
  node.onchange = () => onChange(node.value);
  return node;
}

function labelled(text, control) {
  const wrapper = element('label', 'control');
  wrapper.append(element('span', 'control-name', text), control);
  return wrapper;
}

function refresh() {
  drawControls();
  showFindings();
  return state.view === 'layer' ? showLayer() : showOverview();
}

/** Keep the matrices of an overview answer. */
function store(answer) {
  for (const [run, matrix] of Object.entries(answer.runs)) {
    matrices.set(`${answer.metric}\n${run}`, {matrix: decodeMatrix(matrix), time: performance.now()});
  }
}

/** The overview matrices of `metric` for `runs`, in one request for those not fetched lately. */
async function fetchMatrices(metric, runs) {
  const fresh = (run) => {
    const entry = matrices.get(`${metric}\n${run}`);
    return entry && performance.now() - entry.time < FRESH_MS;
  };
  const stale = runs.filter((run) => !fresh(run));
  if (stale.length) store(await getJson('overview', [['metric', metric], ...runParams(stale)]));
  return runs.map((run) => matrices.get(`${metric}\n${run}`).matrix);
}

/** Fetch the other metrics of `runs`, one metric a request, so that switching is instant. */
async function prefetchMetrics(runs) {
  const generation = ++prefetches;
  delete page.overview.dataset.prefetched;
  for (const metric of state.index.metrics) {
    const logging = runs.filter((run) => state.index.runs[run].metrics.includes(metric));
    if (generation !== prefetches) return;
    try {
      await fetchMatrices(metric, logging);
    } catch (error) {
      return;
    }
  }
  page.overview.dataset.prefetched = 'true';
}

async function showOverview() {
  page.layer.hidden = true;
  page.overview.hidden = false;
  delete page.overview.dataset.painted;
  const {metric, reference} = state;
  const runs = state.selected.filter((run) => state.index.runs[run].metrics.includes(metric));
  const wanted = reference && !runs.includes(reference) ? [...runs, reference] : runs;
  let fetched;
  try {
    fetched = await fetchMatrices(metric, wanted);
    showError(null);
  } catch (error) {
    return showError(error);
  }
  if (state.view !== 'overview' || state.metric !== metric || state.reference !== reference) return;
  const byRun = new Map(wanted.map((run, i) => [run, fetched[i]]));
  const shown = reference ? runs.filter((run) => run !== reference) : runs;
  const panels = shown.map((run) => ({
    run,
    title: reference ? `${title(run)} − ${title(reference)}` : title(run),
    matrix: reference ? difference(byRun.get(run), byRun.get(reference)) : byRun.get(run),
  }));
  await renderOverview(page.overview, {
    panels, metric, log: state.log && !reference, centered: Boolean(reference),
    collapsed: state.collapsed,
    caption: reference ? `${metric}: run − ${title(reference)}` : metric,
    onCell: (tag, step) => openLayer(tag, step),
    onToggle: (group) => {
      if (state.collapsed.has(group)) state.collapsed.delete(group);
      else state.collapsed.add(group);
      showOverview();
    },
  });
  page.overview.dataset.painted = 'true';
  performance.mark(`tbprobe-overview-painted-${metric}`);
  prefetchMetrics(wanted);
}

/** Open the layer view of `tag` at `step` (from a heatmap cell or a finding). */
export function openLayer(tag, step) {
  Object.assign(state, {view: 'layer', tag, step});
  drawControls();
  return showLayer();
}

async function showLayer() {
  page.overview.hidden = true;
  page.layer.hidden = false;
  const runs = state.selected.filter((run) =>
    state.index.runs[run].layers.includes(state.tag) ||
    state.index.runs[run].histograms.includes(state.tag));
  const key = `${state.tag}\n${runs.join('\n')}`;
  try {
    if (!layers.has(key)) layers.set(key, await getJson('layer', [['tag', state.tag], ...runParams(runs)]));
    showError(null);
  } catch (error) {
    return showError(error);
  }
  renderLayer(page.layer, {
    tag: state.tag, data: layers.get(key), runs,
    titles: Object.fromEntries(runs.map((run) => [run, title(run)])),
    step: state.step, mode: state.histogramMode, metrics: state.index.metrics,
    onStep: (step) => {
      state.step = step;
      showLayer();
    },
    onMode: (mode) => {
      state.histogramMode = mode;
      showLayer();
    },
  });
}

async function showFindings() {
  const runs = state.selected.filter((run) => state.index.runs[run].health);
  page.findings.textContent = '';
  if (!runs.length) return;
  let answer;
  try {
    answer = await getJson('findings', runParams(runs));
  } catch (error) {
    return showError(error);
  }
  page.findings.append(element('h2', '', 'Findings'));
  for (const [run, found] of Object.entries(answer.runs)) {
    const block = element('div', 'run-findings');
    block.append(element('h3', '', `${title(run)} (step ${found.step})`));
    if (!found.rows.length) block.append(element('pre', '', found.text));
    for (const row of found.rows) {
      const tag = row.layer || row.tag || row.output;
      const since = parseInt(String(row.since ?? row.step ?? found.step).replace(/[^0-9-]/g, ''), 10);
      const line = element('div', 'finding');
      const text = Object.entries(row)
          .filter(([name]) => !['layer', 'tag', 'output'].includes(name))
          .map(([name, value]) => `${name}: ${value}`).join(' · ');
      if (tag) {
        const link = element('a', 'finding-link', tag);
        link.href = '#';
        link.onclick = (event) => {
          event.preventDefault();
          openLayer(tag, Number.isFinite(since) ? since : found.step);
        };
        line.append(link, ' ');
      }
      line.append(text);
      block.append(line);
    }
    page.findings.append(block);
  }
}
