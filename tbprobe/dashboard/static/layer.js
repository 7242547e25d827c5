// The layer view: for one probed output, the histograms of the selected runs overlaid at a
// chosen step (or as a ridgeline over steps), its scalars with the runs overlaid, and its images
// (feature maps, heatmap, attention) of the runs side by side at that step.

import {blobUrl, toNumber} from './api.js';
import {histogramOverlay, lineChart, ridgeline} from './charts.js';
import {RUN_COLORS} from './colors.js';

const HIDDEN_SCALARS = new Set(['mean_minus_std', 'mean_plus_std']);

/** The last index of `steps` (sorted) at or before `step`; -1 when all come after it. */
export function indexAtOrBefore(steps, step) {
  let found = -1;
  steps.forEach((s, i) => { if (s <= step) found = i; });
  return found;
}

/**
 * Draw the layer view of `data` (the layer route's answer) into `container`.
 * @param {{tag: string, data: !Object, runs: !Array<string>, titles: !Object<string, string>,
 *     step: ?number, mode: string, metrics: !Array<string>, onStep: function(number),
 *     onMode: function(string)}} options
 */
export function renderLayer(container, options) {
  const {data, runs} = options;
  container.textContent = '';
  const color = (run) => RUN_COLORS[runs.indexOf(run) % RUN_COLORS.length];
  const steps = [...new Set(runs.flatMap((run) => data.runs[run].histograms.steps))]
      .sort((a, b) => a - b);
  const step = steps.includes(options.step) ? options.step : steps[steps.length - 1];
  container.dataset.tag = options.tag;
  container.dataset.step = String(step);

  const controls = document.createElement('div');
  controls.className = 'layer-controls';
  const heading = document.createElement('h2');
  heading.textContent = options.tag;
  const slider = document.createElement('input');
  Object.assign(slider, {type: 'range', min: 0, max: Math.max(steps.length - 1, 0),
    value: Math.max(steps.indexOf(step), 0), className: 'step-slider'});
  slider.oninput = () => options.onStep(steps[Number(slider.value)]);
  const stepLabel = document.createElement('span');
  stepLabel.textContent = `step ${step ?? '-'}`;
  const mode = document.createElement('select');
  mode.className = 'histogram-mode';
  for (const [value, text] of [['overlay', 'overlay at step'], ['ridgeline', 'ridgeline']]) {
    mode.append(new Option(text, value, false, value === options.mode));
  }
  mode.onchange = () => options.onMode(mode.value);
  controls.append(heading, slider, stepLabel, mode, legend(runs, options.titles, color));

  const histograms = document.createElement('div');
  histograms.className = 'histograms';
  if (options.mode === 'ridgeline') {
    histograms.append(ridgeline(runs.map((run) => ({
      color: color(run), ...data.runs[run].histograms,
    })), step));
  } else {
    histograms.append(histogramOverlay(runs.map((run) => {
      const {steps: logged, rows} = data.runs[run].histograms;
      const at = indexAtOrBefore(logged, step);
      return {color: color(run), rows: at < 0 ? [] : rows[at]};
    })));
  }
  histograms.firstChild.classList.add('histogram-chart');

  container.append(controls, histograms, scalarCharts(options, color, step),
      imageRows(options, step));
}

function legend(runs, titles, color) {
  const list = document.createElement('span');
  list.className = 'legend';
  for (const run of runs) {
    const item = document.createElement('span');
    item.style.color = color(run);
    item.textContent = `■ ${titles[run]}`;
    list.append(item);
  }
  return list;
}

function scalarCharts(options, color, step) {
  const {data, runs} = options;
  const section = document.createElement('div');
  section.className = 'scalars';
  const names = new Set(runs.flatMap((run) => Object.keys(data.runs[run].scalars)));
  const ordered = [...options.metrics.filter((m) => names.has(m)),
    ...[...names].filter((m) => !options.metrics.includes(m)).sort()];
  for (const name of ordered.filter((m) => !HIDDEN_SCALARS.has(m))) {
    const series = runs.filter((run) => data.runs[run].scalars[name]).map((run) => ({
      color: color(run),
      steps: data.runs[run].scalars[name].steps,
      values: data.runs[run].scalars[name].values.map(toNumber),
    }));
    const chart = lineChart(series, step, name);
    chart.dataset.metric = name;
    section.append(chart);
  }
  return section;
}

function imageRows(options, step) {
  const {data, runs} = options;
  const section = document.createElement('div');
  section.className = 'images';
  const tags = [...new Set(runs.flatMap((run) => Object.keys(data.runs[run].images)))].sort();
  for (const tag of tags) {
    const row = document.createElement('div');
    row.className = 'image-row';
    const title = document.createElement('h3');
    title.textContent = tag;
    row.append(title);
    for (const run of runs) {
      const images = data.runs[run].images[tag];
      const figure = document.createElement('figure');
      const caption = document.createElement('figcaption');
      const at = images ? indexAtOrBefore(images.steps, step) : -1;
      if (at < 0) {
        caption.textContent = `${options.titles[run]}: no image at step ${step}`;
      } else {
        caption.textContent = `${options.titles[run]} · step ${images.steps[at]}`;
        for (const key of images.blobs[at]) {
          const image = new Image();
          image.src = blobUrl(key);
          image.alt = `${tag} of ${run} at step ${images.steps[at]}`;
          image.dataset.run = run;
          figure.append(image);
        }
      }
      figure.prepend(caption);
      row.append(figure);
    }
    section.append(row);
  }
  return section;
}
