// Canvas charts of the layer view: histograms of several runs overlaid at one step, a ridgeline
// of histograms over steps, and line charts of scalars with the runs overlaid.

import {formatValue} from './colors.js';

const MARGIN = {left: 56, right: 12, top: 10, bottom: 24};

/** A canvas of `width` x `height` CSS pixels, sharp on high-density screens. */
export function makeCanvas(width, height) {
  const canvas = document.createElement('canvas');
  const ratio = window.devicePixelRatio || 1;
  canvas.width = width * ratio;
  canvas.height = height * ratio;
  canvas.style.width = `${width}px`;
  canvas.style.height = `${height}px`;
  canvas.getContext('2d').scale(ratio, ratio);
  return canvas;
}

/** Density of a [k, 3] histogram: [[left, right, density]] with area 1 (empty: []). */
export function density(rows) {
  const total = rows.reduce((sum, row) => sum + row[2], 0);
  if (!total) return [];
  return rows.map(([left, right, count]) => [left, right, count / total / ((right - left) || 1)]);
}

function frame(canvas, width, height, xRange, yRange, xLabel) {
  const context = canvas.getContext('2d');
  context.clearRect(0, 0, width, height);
  context.strokeStyle = '#999';
  context.fillStyle = '#444';
  context.font = '11px sans-serif';
  context.strokeRect(MARGIN.left, MARGIN.top,
      width - MARGIN.left - MARGIN.right, height - MARGIN.top - MARGIN.bottom);
  context.textAlign = 'left';
  context.fillText(formatValue(xRange[0]), MARGIN.left, height - 8);
  context.textAlign = 'right';
  context.fillText(formatValue(xRange[1]), width - MARGIN.right, height - 8);
  context.textAlign = 'center';
  context.fillText(xLabel, (MARGIN.left + width - MARGIN.right) / 2, height - 8);
  if (yRange) {
    context.textAlign = 'right';
    context.fillText(formatValue(yRange[1]), MARGIN.left - 4, MARGIN.top + 10);
    context.fillText(formatValue(yRange[0]), MARGIN.left - 4, height - MARGIN.bottom);
  }
  const x = (v) => MARGIN.left + (v - xRange[0]) / ((xRange[1] - xRange[0]) || 1) *
      (width - MARGIN.left - MARGIN.right);
  return {context, x};
}

function extent(values) {
  let low = Infinity;
  let high = -Infinity;
  for (const v of values) {
    if (Number.isFinite(v)) {
      low = Math.min(low, v);
      high = Math.max(high, v);
    }
  }
  return Number.isFinite(low) ? [low, high === low ? low + 1 : high] : [0, 1];
}

function stepPath(context, bins, x, y) {
  context.beginPath();
  context.moveTo(x(bins[0][0]), y(0));
  for (const [left, right, value] of bins) {
    context.lineTo(x(left), y(value));
    context.lineTo(x(right), y(value));
  }
  context.lineTo(x(bins[bins.length - 1][1]), y(0));
}

/**
 * Histograms of several runs overlaid as densities on one x axis.
 * @param {!Array<{color: string, rows: !Array}>} series one [k, 3] histogram per run
 */
export function histogramOverlay(series, width = 640, height = 260) {
  const canvas = makeCanvas(width, height);
  const shapes = series.map((s) => ({...s, bins: density(s.rows)})).filter((s) => s.bins.length);
  const xRange = extent(shapes.flatMap((s) => s.bins.flatMap(([l, r]) => [l, r])));
  const yRange = [0, extent(shapes.flatMap((s) => s.bins.map((b) => b[2])))[1]];
  const {context, x} = frame(canvas, width, height, xRange, yRange, 'activation (density)');
  const y = (v) => height - MARGIN.bottom -
      v / yRange[1] * (height - MARGIN.top - MARGIN.bottom);
  for (const shape of shapes) {
    stepPath(context, shape.bins, x, y);
    context.globalAlpha = 0.18;
    context.fillStyle = shape.color;
    context.fill();
    context.globalAlpha = 1;
    context.strokeStyle = shape.color;
    context.lineWidth = 1.5;
    context.stroke();
  }
  canvas.dataset.series = String(shapes.length);
  return canvas;
}

/**
 * Ridgeline: one row per step (oldest at the top), each run's density as a line in it.
 * @param {!Array<{color: string, steps: !Array<number>, rows: !Array}>} series per run
 * @param {number} chosen the step drawn thicker
 */
export function ridgeline(series, chosen, width = 640, rowHeight = 26) {
  const steps = [...new Set(series.flatMap((s) => s.steps))].sort((a, b) => a - b);
  const shown = steps.length > 40 ? steps.filter((_, i) => i % Math.ceil(steps.length / 40) === 0) : steps;
  const height = MARGIN.top + MARGIN.bottom + (shown.length + 2) * rowHeight;
  const canvas = makeCanvas(width, height);
  const all = series.flatMap((s) => s.rows.map(density));
  const xRange = extent(all.flatMap((bins) => bins.flatMap(([l, r]) => [l, r])));
  const peak = extent(all.flatMap((bins) => bins.map((b) => b[2])))[1];
  const {context, x} = frame(canvas, width, height, xRange, null, 'activation, one ridge per step');
  shown.forEach((step, index) => {
    const base = MARGIN.top + (index + 3) * rowHeight;
    context.fillStyle = '#444';
    context.textAlign = 'right';
    context.fillText(String(step), MARGIN.left - 4, base);
    for (const s of series) {
      const at = s.steps.indexOf(step);
      if (at < 0) continue;
      const bins = density(s.rows[at]);
      if (!bins.length) continue;
      stepPath(context, bins, x, (v) => base - v / peak * rowHeight * 2.5);
      context.strokeStyle = s.color;
      context.lineWidth = step === chosen ? 2.5 : 1;
      context.stroke();
    }
  });
  canvas.dataset.series = String(series.filter((s) => s.steps.length).length);
  return canvas;
}

/**
 * One scalar of several runs over steps, with a marker at `chosen`.
 * @param {!Array<{color: string, steps: !Array<number>, values: !Array<number>}>} series
 */
export function lineChart(series, chosen, title, width = 300, height = 150) {
  const canvas = makeCanvas(width, height);
  const xRange = extent(series.flatMap((s) => s.steps));
  const yRange = extent(series.flatMap((s) => s.values));
  const {context, x} = frame(canvas, width, height, xRange, yRange, title);
  const y = (v) => height - MARGIN.bottom -
      (v - yRange[0]) / (yRange[1] - yRange[0]) * (height - MARGIN.top - MARGIN.bottom);
  for (const s of series) {
    context.strokeStyle = s.color;
    context.fillStyle = s.color;
    context.lineWidth = 1.5;
    context.beginPath();
    let drawing = false;
    s.steps.forEach((step, i) => {
      const v = s.values[i];
      if (!Number.isFinite(v)) {
        drawing = false;
        return;
      }
      if (drawing) context.lineTo(x(step), y(v));
      else context.moveTo(x(step), y(v));
      drawing = true;
      if (s.steps.length < 30) context.fillRect(x(step) - 1.5, y(v) - 1.5, 3, 3);
    });
    context.stroke();
  }
  if (Number.isFinite(chosen)) {
    context.strokeStyle = '#9e9e9e';
    context.setLineDash([4, 3]);
    context.lineWidth = 1;
    context.beginPath();
    context.moveTo(x(chosen), MARGIN.top);
    context.lineTo(x(chosen), height - MARGIN.bottom);
    context.stroke();
  }
  canvas.dataset.series = String(series.length);
  return canvas;
}
