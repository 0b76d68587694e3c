// The subject's real pixels: fetch `data_url` (little-endian float16, C order (B, H, W)) and turn it into fluxes.

import { decodeFloat16 } from "./float16.js";
import { bandStatistics } from "./stretch.js";

function headerNumbers(response, name, count) {
  const text = response.headers.get(name);
  const numbers = (text || "").split(",").map((part) => Number(part.trim()));
  if (!text || numbers.length !== count || !numbers.every(Number.isFinite)) {
    throw new Error(`bad or missing ${name} header (${text})`);
  }
  return numbers;
}

/**
 * Fetch and decode an image subject's pixel data.
 *
 * Returns {bands: ["g", "r", "i"], width, height, planes: [Float32Array (H*W) fluxes per band],
 * stats: [bandStatistics per band]}. Fluxes are the stored values times the band's X-Skyloop-Scale;
 * NaN and ±inf mark missing pixels. Throws on a failed request or a body that does not match its headers.
 */
export async function fetchPixels(url, { signal } = {}) {
  const response = await fetch(url, { signal });
  if (!response.ok) throw new Error(`pixel data request failed (${response.status})`);
  const [nBands, height, width] = headerNumbers(response, "X-Skyloop-Shape", 3);
  if (![nBands, height, width].every((n) => Number.isInteger(n) && n > 0)) throw new Error("bad X-Skyloop-Shape");
  const scales = headerNumbers(response, "X-Skyloop-Scale", nBands);
  const names = (response.headers.get("X-Skyloop-Bands") || "").split(",").map((b) => b.trim()).filter(Boolean);
  const bands = names.length === nBands ? names : Array.from({ length: nBands }, (_, b) => `band ${b + 1}`);

  const values = decodeFloat16(await response.arrayBuffer());
  const size = height * width;
  if (values.length !== nBands * size) {
    throw new Error(`pixel data has ${values.length} values, expected ${nBands}×${height}×${width}`);
  }
  const planes = bands.map((_, b) => {
    const plane = values.subarray(b * size, (b + 1) * size);
    for (let i = 0; i < size; i++) plane[i] *= scales[b];  // in place: the decoded copy is ours
    return plane;
  });
  return { bands, width, height, planes, stats: planes.map(bandStatistics) };
}
