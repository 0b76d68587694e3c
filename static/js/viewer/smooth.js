// Smoothing of a 1-D spectrum: boxcar or Gaussian kernel, inverse-variance weighted where the error is known.
//
// Each output pixel is Σ k w f / Σ k w over the kernel k, with w = 1/σ² (pixels with no error get the
// median weight, non-finite flux gets 0). Its 1σ error is √(Σ k² w² σ²) / Σ k w = √(Σ k² w) / Σ k w.

export const SMOOTHINGS = Object.freeze([
  { id: "none", label: "None" },
  { id: "boxcar-3", label: "Boxcar 3 px" },
  { id: "boxcar-5", label: "Boxcar 5 px" },
  { id: "boxcar-9", label: "Boxcar 9 px" },
  { id: "gaussian-3", label: "Gaussian 3 px" },
  { id: "gaussian-5", label: "Gaussian 5 px" },
  { id: "gaussian-9", label: "Gaussian 9 px" },
]);

/** Kernel weights for "boxcar-W" (W pixels) or "gaussian-W" (FWHM of W pixels, cut at ±3σ). */
export function kernel(id) {
  const [kind, width] = id.split("-");
  const w = Number(width);
  if (kind === "boxcar") return new Float64Array(w).fill(1);
  if (kind === "gaussian") {
    const sigma = w / 2.3548;
    const half = Math.ceil(3 * sigma);
    return Float64Array.from({ length: 2 * half + 1 }, (_, i) => Math.exp(-0.5 * ((i - half) / sigma) ** 2));
  }
  return Float64Array.of(1);
}

function weights(flux, error) {
  const known = [];
  for (let i = 0; i < error.length; i++) if (error[i] > 0 && Number.isFinite(error[i])) known.push(1 / error[i] ** 2);
  known.sort((a, b) => a - b);
  const fallback = known.length ? known[known.length >> 1] : 1;
  const w = new Float64Array(flux.length);
  for (let i = 0; i < flux.length; i++) {
    if (!Number.isFinite(flux[i])) continue;
    w[i] = error[i] > 0 && Number.isFinite(error[i]) ? 1 / error[i] ** 2 : fallback;
  }
  return w;
}

/**
 * Smooth flux (L,) with its 1σ error (L,) (NaN where unknown).
 * @returns {{flux: Float64Array, error: Float64Array}} error is NaN where the input error was unknown.
 */
export function smoothSpectrum(flux, error, id) {
  if (id === "none") return { flux: Float64Array.from(flux), error: Float64Array.from(error) };
  const k = kernel(id);
  const half = (k.length - 1) >> 1;
  const w = weights(flux, error);
  const outFlux = new Float64Array(flux.length);
  const outError = new Float64Array(flux.length);
  for (let i = 0; i < flux.length; i++) {
    let sum = 0;
    let norm = 0;
    let norm2 = 0;
    for (let j = 0; j < k.length; j++) {
      const p = i + j - half;
      if (p < 0 || p >= flux.length || w[p] === 0) continue;
      const kw = k[j] * w[p];
      sum += kw * flux[p];
      norm += kw;
      norm2 += k[j] * kw;
    }
    outFlux[i] = norm > 0 ? sum / norm : NaN;
    outError[i] = norm > 0 && Number.isFinite(error[i]) ? Math.sqrt(norm2) / norm : NaN;
  }
  return { flux: outFlux, error: outError };
}
