// Requests to the plugin's routes. The iframe's base URL is data/plugin/tbprobe/, so the routes
// are relative paths. Errors arrive as {"error": message} with a 4xx status.

/**
 * GET `route` with `params` (an array of [name, value] pairs; names may repeat).
 * @return {!Promise<!Object>} the parsed JSON
 */
export async function getJson(route, params = []) {
  const query = new URLSearchParams(params).toString();
  const response = await fetch(query ? `${route}?${query}` : route);
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || `${route}: HTTP ${response.status}`);
  return body;
}

/** Run parameters: [['run', a], ['run', b], ...]. */
export function runParams(runs) {
  return runs.map((run) => ['run', run]);
}

/**
 * The overview matrix of one run, decoded: base64 little-endian float32 values, with the cells
 * that hold no value set to NaN and flagged in `missing`.
 */
export function decodeMatrix(matrix) {
  const text = atob(matrix.values);
  const bytes = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
  const values = new Float32Array(bytes.buffer);
  const missing = new Uint8Array(values.length);
  for (const index of matrix.missing) {
    missing[index] = 1;
    values[index] = NaN;
  }
  const rowOf = new Map(matrix.layers.map((layer, row) => [layer, row]));
  return {layers: matrix.layers, steps: matrix.steps, values, missing, rowOf};
}

/** A JSON number of TensorBoard's (non-finite ones arrive as "NaN", "Infinity"). */
export function toNumber(value) {
  return typeof value === 'string' ? Number(value) : value;
}

/** The URL of an image blob from the layer route. */
export function blobUrl(key) {
  return `blob?key=${encodeURIComponent(key)}`;
}
