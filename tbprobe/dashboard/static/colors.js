// Colour scales of the tbprobe dashboard: viridis for values, a blue-white-red diverging map
// for differences, a categorical palette for runs. The control points are matplotlib's
// `viridis` (33 points) and `RdBu_r` (17 points), linearly interpolated (within 3/255 of them).

const VIRIDIS = [
  68, 1, 84, 71, 13, 96, 72, 24, 106, 72, 35, 116, 71, 45, 123, 69, 55, 129, 66, 64, 134, 62,
  73, 137, 59, 82, 139, 55, 91, 141, 51, 99, 141, 47, 107, 142, 44, 114, 142, 41, 122, 142, 38,
  130, 142, 35, 137, 142, 33, 145, 140, 31, 152, 139, 31, 160, 136, 34, 167, 133, 40, 174, 128,
  50, 182, 122, 63, 188, 115, 78, 195, 107, 94, 201, 98, 112, 207, 87, 132, 212, 75, 152, 216,
  62, 173, 220, 48, 194, 223, 35, 216, 226, 25, 236, 229, 27, 253, 231, 37,
];
const RDBU = [
  5, 48, 97, 23, 82, 144, 42, 113, 178, 63, 142, 192, 107, 172, 209, 155, 201, 224, 194, 221,
  236, 224, 236, 243, 247, 246, 246, 251, 229, 216, 251, 204, 180, 245, 170, 137, 228, 128, 102,
  208, 85, 72, 186, 40, 50, 147, 14, 38, 103, 0, 31,
];

/** Cells that hold no value: light grey. Logged NaN or infinity: magenta. */
export const MISSING_COLOR = [224, 224, 224];
export const NONFINITE_COLOR = [255, 0, 255];
export const RUN_COLORS = [
  '#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd',
  '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf',
];

function interpolate(table, t) {
  const points = table.length / 3 - 1;
  const x = Math.min(Math.max(t, 0), 1) * points;
  const i = Math.min(Math.floor(x), points - 1);
  const f = x - i;
  return [0, 1, 2].map((c) =>
    Math.round(table[3 * i + c] * (1 - f) + table[3 * (i + 1) + c] * f));
}

/** The viridis colour [r, g, b] (0-255) of `t` in [0, 1]. */
export function viridis(t) {
  return interpolate(VIRIDIS, t);
}

/** The diverging colour of `t` in [0, 1]; 0.5 is white. */
export function diverging(t) {
  return interpolate(RDBU, t);
}

/**
 * A colour scale over every finite value of `arrays`.
 * Linear: min..max. Log: log10 over the positive values (zero and below take the low end).
 * Diverging: symmetric around zero, -max|v|..max|v|.
 * @param {!Array<!Float32Array>} arrays values (NaN marks "no value")
 * @param {{log: boolean, diverging: boolean}} options
 */
export function makeScale(arrays, {log = false, diverging: centered = false} = {}) {
  let min = Infinity;
  let max = -Infinity;
  for (const values of arrays) {
    for (const v of values) {
      if (!Number.isFinite(v) || (log && v <= 0)) continue;
      const x = centered ? Math.abs(v) : v;
      if (x < min) min = x;
      if (x > max) max = x;
    }
  }
  if (!Number.isFinite(min)) [min, max] = [log ? 1 : 0, log ? 10 : 1];
  if (centered) [min, max] = [-max, max];
  const transform = log ? Math.log10 : (v) => v;
  const low = transform(min);
  const span = transform(max) - low || 1;
  const colormap = centered ? diverging : viridis;
  // 1024 precomputed colours: a heatmap of 500,000 cells looks each up without allocating.
  const lut = Array.from({length: 1024}, (_, i) => colormap(i / 1023));
  return {
    min, max, log, centered,
    /** Position of `v` in [0, 1] (clamped). */
    position(v) {
      if (log && v <= 0) return 0;
      return Math.min(Math.max((transform(v) - low) / span, 0), 1);
    },
    /** Colour [r, g, b] of a logged value `v`. */
    color(v) {
      return Number.isFinite(v) ? lut[Math.round(this.position(v) * 1023)] : NONFINITE_COLOR;
    },
  };
}

/** A short label of a number: 4 significant digits, exponent when far from 1. */
export function formatValue(v) {
  if (typeof v === 'string') return v;
  if (!Number.isFinite(v)) return String(v);
  if (v === 0) return '0';
  const magnitude = Math.abs(v);
  return magnitude >= 1e4 || magnitude < 1e-3 ? v.toExponential(3) : String(+v.toPrecision(4));
}

/** A horizontal colour bar of `scale` with its end values, into `container`. */
export function drawColorBar(container, scale, caption) {
  container.textContent = '';
  const canvas = document.createElement('canvas');
  canvas.width = 240;
  canvas.height = 12;
  canvas.className = 'colorbar';
  const context = canvas.getContext('2d');
  for (let x = 0; x < canvas.width; x++) {
    const [r, g, b] = (scale.centered ? diverging : viridis)(x / (canvas.width - 1));
    context.fillStyle = `rgb(${r},${g},${b})`;
    context.fillRect(x, 0, 1, canvas.height);
  }
  const low = document.createElement('span');
  low.textContent = formatValue(scale.min);
  const high = document.createElement('span');
  high.textContent = formatValue(scale.max) + (scale.log ? ' (log)' : '');
  const label = document.createElement('span');
  label.className = 'caption';
  label.textContent = caption;
  container.append(label, low, canvas, high);
  container.dataset.min = String(scale.min);
  container.dataset.max = String(scale.max);
}
