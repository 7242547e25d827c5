// The overview: one heatmap per run, rows = probed outputs in call order (grouped by the first
// component of their path, collapsible), columns = logged steps, colour = the metric's value.
// Each heatmap is drawn as one pixel per cell into an ImageData, then scaled up without
// smoothing, so a cell's centre pixel has exactly the colour of its value.

import {MISSING_COLOR, drawColorBar, formatValue, makeScale} from './colors.js';

const LABEL_WIDTH = 220;

/**
 * Rows of the heatmaps: each output, or one row per collapsed group (the mean of its members).
 * A group is the outputs sharing a first path component, when there are two or more.
 * @return {!Array<{label: string, layers: !Array<string>, group: ?string}>}
 */
export function buildRows(layers, collapsed) {
  const groupOf = (layer) => (layer.includes('/') ? layer.split('/')[0] : null);
  const sizes = new Map();
  for (const layer of layers) {
    const group = groupOf(layer);
    if (group) sizes.set(group, (sizes.get(group) || 0) + 1);
  }
  const rows = [];
  for (const layer of layers) {
    let group = groupOf(layer);
    if (group && sizes.get(group) < 2) group = null;
    if (group && collapsed.has(group)) {
      const last = rows[rows.length - 1];
      if (last && last.group === group) last.layers.push(layer);
      else rows.push({label: `▸ ${group}/ (${sizes.get(group)})`, layers: [layer], group});
    } else {
      rows.push({label: layer, layers: [layer], group});
    }
  }
  return rows;
}

/** Every layer of `matrices` in the order of the first run that holds it. */
export function unionLayers(matrices) {
  const seen = new Set();
  for (const matrix of matrices) for (const layer of matrix.layers) seen.add(layer);
  return [...seen];
}

/** The difference `matrix - reference` at the same layer and step (NaN where either is absent). */
export function difference(matrix, reference) {
  const refRow = new Map(reference.layers.map((layer, i) => [layer, i]));
  const refColumn = new Map(reference.steps.map((step, i) => [step, i]));
  const columns = matrix.steps.length;
  const values = new Float32Array(matrix.values.length).fill(NaN);
  const missing = new Uint8Array(values.length).fill(1);
  matrix.layers.forEach((layer, row) => {
    const r = refRow.get(layer);
    if (r === undefined) return;
    matrix.steps.forEach((step, column) => {
      const c = refColumn.get(step);
      const i = row * columns + column;
      const j = r * reference.steps.length + c;
      if (c === undefined || matrix.missing[i] || reference.missing[j]) return;
      values[i] = matrix.values[i] - reference.values[j];
      missing[i] = 0;
    });
  });
  return {...matrix, values, missing};
}

/**
 * Draw the heatmaps of `panels` into `container` on one colour scale.
 * @return {!Promise} resolved once every heatmap is on its canvas
 * @param {!Element} container
 * @param {{panels: !Array<{run: string, title: string, matrix: !Object}>, metric: string,
 *     log: boolean, centered: boolean, collapsed: !Set<string>, caption: string,
 *     onCell: function(string, number), onToggle: function(string)}} options
 */
export function renderOverview(container, options) {
  const {panels, collapsed} = options;
  container.textContent = '';
  const layers = unionLayers(panels.map((panel) => panel.matrix));
  const rows = buildRows(layers, collapsed);
  const scale = makeScale(panels.map((panel) => panel.matrix.values),
      {log: options.log, diverging: options.centered});
  const bar = document.createElement('div');
  bar.className = 'colorbar-row';
  drawColorBar(bar, scale, options.caption);
  const grid = document.createElement('div');
  grid.className = 'heatmaps';
  const rowHeight = rows.length <= 40 ? 18 : rows.length <= 120 ? 10 : 4;
  const available = Math.max(container.clientWidth - LABEL_WIDTH - 40, 300);
  grid.append(labelColumn(rows, rowHeight, options.onToggle));
  const painted = [];
  for (const panel of panels) {
    const width = Math.max(Math.floor(available / panels.length) - 16, 60);
    const {figure, done} = heatmap(panel, rows, rowHeight, width, scale, options);
    grid.append(figure);
    painted.push(done);
  }
  container.append(bar, grid);
  container.dataset.outputs = String(layers.length);
  container.dataset.metric = options.metric;
  return Promise.all(painted);
}

function labelColumn(rows, rowHeight, onToggle) {
  const column = document.createElement('div');
  column.className = 'labels';
  column.style.paddingTop = '22px';
  for (const row of rows) {
    const label = document.createElement('div');
    label.className = row.group ? 'label grouped' : 'label';
    label.style.height = label.style.lineHeight = `${rowHeight}px`;
    label.style.fontSize = `${Math.min(rowHeight - 2, 12)}px`;
    label.textContent = rowHeight >= 10 ? row.label : '';
    label.title = row.group ? `${row.label} (click: collapse or expand ${row.group}/)` : row.label;
    if (row.group) label.onclick = () => onToggle(row.group);
    column.append(label);
  }
  return column;
}

/** Row values of `matrix`: a collapsed row is the mean of its members' finite values. */
function rowValues(matrix, row) {
  const columns = matrix.steps.length;
  const values = new Float32Array(columns).fill(NaN);
  const missing = new Uint8Array(columns).fill(1);
  const indices = row.layers.map((l) => matrix.rowOf.get(l)).filter((i) => i !== undefined);
  for (let c = 0; c < columns; c++) {
    let sum = 0;
    let count = 0;
    let logged = false;
    for (const r of indices) {
      const i = r * columns + c;
      if (matrix.missing[i]) continue;
      logged = true;
      if (Number.isFinite(matrix.values[i])) {
        sum += matrix.values[i];
        count++;
      }
    }
    if (logged) {
      missing[c] = 0;
      values[c] = count ? sum / count : NaN;
    }
  }
  return {values, missing};
}

function heatmap(panel, rows, rowHeight, width, scale, options) {
  const {matrix} = panel;
  const columns = matrix.steps.length;
  const cellWidth = Math.max(1, Math.min(48, Math.floor(width / Math.max(columns, 1))));
  const figure = document.createElement('figure');
  figure.className = 'heatmap';
  const title = document.createElement('figcaption');
  title.textContent = panel.title;
  const canvas = document.createElement('canvas');
  canvas.width = Math.max(columns * cellWidth, 1);
  canvas.height = Math.max(rows.length * rowHeight, 1);
  Object.assign(canvas.dataset, {
    run: panel.run, rows: String(rows.length), cols: String(columns),
    cellWidth: String(cellWidth), cellHeight: String(rowHeight),
    vmin: String(scale.min), vmax: String(scale.max),
  });
  const pixels = new ImageData(Math.max(columns, 1), Math.max(rows.length, 1));
  const cells = rows.map((row) => rowValues(matrix, row));
  cells.forEach(({values, missing}, r) => {
    for (let c = 0; c < columns; c++) {
      const rgb = missing[c] ? MISSING_COLOR : scale.color(values[c]);
      const offset = 4 * (r * columns + c);
      pixels.data[offset] = rgb[0];
      pixels.data[offset + 1] = rgb[1];
      pixels.data[offset + 2] = rgb[2];
      pixels.data[offset + 3] = 255;
    }
  });
  const context = canvas.getContext('2d');
  context.imageSmoothingEnabled = false;
  const done = createImageBitmap(pixels).then((bitmap) => {
    context.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
    canvas.dataset.painted = 'true';
  });
  const steps = document.createElement('div');
  steps.className = 'steps';
  steps.textContent = columns ? `steps ${matrix.steps[0]} … ${matrix.steps[columns - 1]}` : '';
  const tooltip = document.createElement('div');
  tooltip.className = 'tooltip';
  const at = (event) => {
    const r = Math.floor(event.offsetY / rowHeight);
    const c = Math.floor(event.offsetX / cellWidth);
    return r >= 0 && r < rows.length && c >= 0 && c < columns ? [r, c] : null;
  };
  canvas.onmousemove = (event) => {
    const cell = at(event);
    tooltip.hidden = !cell;
    if (!cell) return;
    const [r, c] = cell;
    const value = cells[r].missing[c] ? 'not logged' : formatValue(cells[r].values[c]);
    tooltip.textContent = `${rows[r].label} · step ${matrix.steps[c]} · ${value}`;
    tooltip.style.left = `${event.offsetX + 12}px`;
    tooltip.style.top = `${event.offsetY + 28}px`;
  };
  canvas.onmouseleave = () => { tooltip.hidden = true; };
  canvas.onclick = (event) => {
    const cell = at(event);
    if (cell) options.onCell(rows[cell[0]].layers[0], matrix.steps[cell[1]]);
  };
  tooltip.hidden = true;
  figure.append(title, canvas, steps, tooltip);
  return {figure, done};
}
