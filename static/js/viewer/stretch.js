// Display limits and stretches for FITS pixels, applied in the browser.
//
// Stretches follow the definitions in astropy.visualization (LinearStretch, SqrtStretch,
// LogStretch a=1000, AsinhStretch a=0.1); ZScale is IRAF's `zscale` algorithm as documented
// for IRAF's display task and astropy.visualization.ZScaleInterval; the colour composite is
// Lupton et al. 2004 (PASP 116, 133), normalised like astropy's LuptonAsinhStretch so that it
// matches the server-rendered preview (labeler/subjects/rendering.py).

export const STRETCHES = {
  linear: (x) => x,
  sqrt: (x) => Math.sqrt(x),
  log: (x) => Math.log(1000 * x + 1) / Math.log(1001),
  asinh: (x) => Math.asinh(x / 0.1) / Math.asinh(1 / 0.1),
};

export const LIMITS = ["zscale", "99.5", "99", "98", "95", "minmax"];

/** Finite values of a band, in their original order. */
function finiteValues(values) {
  const out = new Float32Array(values.length);
  let n = 0;
  for (let i = 0; i < values.length; i++) if (Number.isFinite(values[i])) out[n++] = values[i];
  return out.subarray(0, n);
}

function medianOfSorted(sorted) {
  const n = sorted.length;
  if (!n) return NaN;
  const mid = n >> 1;
  return n % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/** Least-squares line y = slope * i + intercept through the samples not flagged bad. */
function fitLine(samples, bad) {
  let n = 0, sx = 0, sy = 0, sxx = 0, sxy = 0;
  for (let i = 0; i < samples.length; i++) {
    if (bad[i]) continue;
    n += 1; sx += i; sy += samples[i]; sxx += i * i; sxy += i * samples[i];
  }
  const denominator = n * sxx - sx * sx;
  const slope = denominator ? (n * sxy - sx * sy) / denominator : 0;
  return { slope, intercept: (sy - slope * sx) / n };
}

/** Population standard deviation of the values not flagged bad (n of them). */
function standardDeviation(values, bad, n) {
  let sum = 0;
  for (let i = 0; i < values.length; i++) if (!bad[i]) sum += values[i];
  const mean = sum / n;
  let squares = 0;
  for (let i = 0; i < values.length; i++) if (!bad[i]) squares += (values[i] - mean) ** 2;
  return Math.sqrt(squares / n);
}

/** Grow each rejected sample to its neighbours: window [i - floor(grow/2), i + floor((grow-1)/2)]. */
function dilate(bad, grow) {
  const out = new Uint8Array(bad.length);
  const before = grow >> 1, after = (grow - 1) >> 1;
  for (let i = 0; i < bad.length; i++) {
    if (!bad[i]) continue;
    const from = Math.max(0, i - after), to = Math.min(bad.length - 1, i + before);
    for (let j = from; j <= to; j++) out[j] = 1;
  }
  return out;
}

/**
 * IRAF zscale display limits [lo, hi] of one band (non-finite values ignored).
 *
 * Take about nSamples evenly strided pixels, sort them, fit a straight line to value against rank
 * with iterative krej-sigma rejection (rejected samples grown by 1% of the sample), and span the
 * line's range over the sample, its slope divided by `contrast`, around the median. If too many
 * samples are rejected the limits are the sample's minimum and maximum.
 */
export function zscale(values, { nSamples = 1000, contrast = 0.25, maxReject = 0.5, minPixels = 5,
  krej = 2.5, maxIterations = 5 } = {}) {
  const finite = finiteValues(values);
  if (!finite.length) return [0, 1];
  const stride = Math.max(1, Math.floor(finite.length / nSamples));
  const npix = Math.min(nSamples, Math.ceil(finite.length / stride));
  const samples = new Float64Array(npix);
  for (let i = 0; i < npix; i++) samples[i] = finite[i * stride];
  samples.sort();

  let lo = samples[0], hi = samples[npix - 1];
  const minGood = Math.max(minPixels, Math.floor(npix * maxReject));
  const grow = Math.max(1, Math.floor(npix * 0.01));
  let bad = new Uint8Array(npix);
  let nGood = npix, lastNGood = npix + 1, fit = null;
  for (let iteration = 0; iteration < maxIterations; iteration++) {
    if (nGood >= lastNGood || nGood < minGood) break;
    fit = fitLine(samples, bad);
    const residual = samples.map((v, i) => v - (fit.slope * i + fit.intercept));
    const threshold = krej * standardDeviation(residual, bad, nGood);
    for (let i = 0; i < npix; i++) if (Math.abs(residual[i]) > threshold) bad[i] = 1;
    bad = dilate(bad, grow);
    lastNGood = nGood;
    nGood = bad.reduce((count, b) => count + (b ? 0 : 1), 0);
  }
  if (fit && nGood >= minGood) {
    const slope = fit.slope / contrast;
    const center = (npix - 1) >> 1;
    const median = medianOfSorted(samples);
    lo = Math.max(lo, median - (center - 1) * slope);
    hi = Math.min(hi, median + (npix - center) * slope);
  }
  return [lo, hi];
}

/** numpy-style (linear interpolation) percentile of an ascending array. */
function percentileOfSorted(sorted, percent) {
  const position = (percent / 100) * (sorted.length - 1);
  const below = Math.floor(position);
  const above = Math.min(sorted.length - 1, below + 1);
  return sorted[below] + (position - below) * (sorted[above] - sorted[below]);
}

/**
 * Median absolute deviation from `centre` of an ascending array, without a second sort: the deviations
 * grow outward from the centre on both sides, so merging the two runs visits them in order.
 */
function medianDeviation(sorted, centre) {
  const n = sorted.length;
  let right = 0;
  for (let step = 1 << 30; step; step >>= 1) if (right + step <= n && sorted[right + step - 1] < centre) right += step;
  let left = right - 1;
  const next = () => (right >= n || (left >= 0 && centre - sorted[left] <= sorted[right] - centre)
    ? centre - sorted[left--] : sorted[right++] - centre);
  let deviation = NaN;
  for (let k = 0; k <= (n - 1) >> 1; k++) deviation = next();
  return n % 2 ? deviation : (deviation + next()) / 2;
}

/** Statistics computed once per band and subject, so that every later redraw is a single pass. */
export function bandStatistics(values) {
  const sorted = finiteValues(values).slice().sort();
  const sigma = sorted.length ? 1.4826 * medianDeviation(sorted, medianOfSorted(sorted)) : NaN;
  return { sorted, zscale: zscale(values), sigma };
}

/** Display limits [lo, hi] of a band: "zscale", "minmax", or the central percent kept ("99.5" keeps 0.25–99.75). */
export function limitsFor(stats, mode) {
  const { sorted } = stats;
  let limits;
  if (!sorted.length) limits = [0, 1];
  else if (mode === "zscale") limits = stats.zscale;
  else if (mode === "minmax") limits = [sorted[0], sorted[sorted.length - 1]];
  else {
    const cut = (100 - Number(mode)) / 2;
    limits = [percentileOfSorted(sorted, cut), percentileOfSorted(sorted, 100 - cut)];
  }
  const [lo, hi] = limits;
  return hi > lo ? [lo, hi] : [lo, lo + (Math.abs(lo) || 1)];  // a flat band still gets a usable range
}

// Painters write RGBA in display order: data row 0 is the BOTTOM row of the picture (FITS convention).
// Non-finite pixels stay transparent so the viewer's "masked" background shows through.

/** One band in grey: clip to [lo, hi], normalise, stretch. */
export function paintBand(rgba, values, width, height, { lo, hi, stretch, invert }) {
  const curve = STRETCHES[stretch];
  const span = hi - lo;
  for (let row = 0; row < height; row++) {
    const target = (height - 1 - row) * width;
    for (let col = 0; col < width; col++) {
      const v = values[row * width + col];
      const o = 4 * (target + col);
      if (!Number.isFinite(v)) { rgba[o + 3] = 0; continue; }
      const grey = 255 * curve(Math.min(1, Math.max(0, (v - lo) / span)));
      rgba[o] = rgba[o + 1] = rgba[o + 2] = invert ? 255 - grey : grey;
      rgba[o + 3] = 255;
    }
  }
}

/**
 * Lupton+2004 colour composite of three bands (red, green, blue planes, fluxes).
 *
 * I = mean of the bands after subtracting `minimum`; each band is scaled by f(I)/I with
 * f(I) = asinh(Q I / stretch) * 0.1 / asinh(0.1 Q), so colours keep the flux ratios; a pixel whose
 * brightest channel exceeds 1 is scaled down as a whole rather than clipped (no colour shift).
 */
export function paintLupton(rgba, [red, green, blue], width, height, { minimum, stretch, Q, invert }) {
  const soften = Q / stretch;
  const slope = 0.1 / Math.asinh(0.1 * Q);
  for (let row = 0; row < height; row++) {
    const target = (height - 1 - row) * width;
    for (let col = 0; col < width; col++) {
      const i = row * width + col;
      const o = 4 * (target + col);
      const r = red[i] - minimum, g = green[i] - minimum, b = blue[i] - minimum;
      const intensity = (r + g + b) / 3;
      if (!Number.isFinite(intensity)) { rgba[o + 3] = 0; continue; }
      const factor = intensity > 0 ? (Math.asinh(intensity * soften) * slope) / intensity : 0;
      const R = r > 0 ? r * factor : 0, G = g > 0 ? g * factor : 0, B = b > 0 ? b * factor : 0;
      let brightest = R > G ? R : G;
      if (B > brightest) brightest = B;
      const scale = brightest > 1 ? 255 / brightest : 255;
      // Truncate to 8 bits as astropy's uint8 output does ((x * 255) | 0 floors a positive x).
      const levelR = (R * scale) | 0, levelG = (G * scale) | 0, levelB = (B * scale) | 0;
      rgba[o] = invert ? 255 - levelR : levelR;
      rgba[o + 1] = invert ? 255 - levelG : levelG;
      rgba[o + 2] = invert ? 255 - levelB : levelB;
      rgba[o + 3] = 255;
    }
  }
}
