// Plot helpers for canvas charts: linear scales, "nice" ticks, robust ranges and axes.

/** A linear map from data [d0, d1] to pixels [p0, p1], with its inverse. */
export function linearScale(d0, d1, p0, p1) {
  const k = (p1 - p0) / (d1 - d0 || 1);
  const scale = (v) => p0 + (v - d0) * k;
  scale.invert = (p) => d0 + (p - p0) / k;
  return scale;
}

/** Tick values at 1, 2 or 5 × 10^n spacing, about `count` of them, inside [lo, hi]. */
export function niceTicks(lo, hi, count) {
  const span = hi - lo;
  if (!(span > 0) || !(count > 0)) return { step: 0, ticks: [] };
  const raw = span / count;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * magnitude).find((s) => s >= raw) ?? 10 * magnitude;
  const ticks = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) ticks.push(Math.abs(v) < step * 1e-9 ? 0 : v);
  return { step, ticks };
}

/** Tick label with as many decimals as the step needs. */
export function formatTick(value, step) {
  const decimals = Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
  return value.toFixed(Math.min(decimals, 6));
}

/** q-th percentile (0-100) of the finite values of `values` (linear interpolation); NaN when none. */
export function percentile(values, q) {
  return percentiles(values, [q])[0];
}

/** Several percentiles of the finite values, sorting once. */
export function percentiles(values, qs) {
  const finite = Float64Array.from(Array.prototype.filter.call(values, Number.isFinite)).sort();
  return qs.map((q) => {
    if (!finite.length) return NaN;
    const pos = (q / 100) * (finite.length - 1);
    const lo = Math.floor(pos);
    const hi = Math.min(lo + 1, finite.length - 1);
    return finite[lo] + (finite[hi] - finite[lo]) * (pos - lo);
  });
}

/** First index i with sorted[i] >= value (binary search). */
export function lowerBound(sorted, value) {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (sorted[mid] < value) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/**
 * A y range that ignores spikes: the 1st-99.5th percentiles of the visible values, always including zero
 * (absorption troughs reach it), padded by 8%.
 */
export function robustRange(values) {
  const [p1, p99] = percentiles(values, [1, 99.5]);
  if (!Number.isFinite(p1)) return [0, 1];
  let lo = Math.min(p1, 0);
  let hi = Math.max(p99, lo + 1e-6);
  const pad = 0.08 * (hi - lo);
  lo -= pad;
  hi += pad;
  return [lo, hi];
}

/**
 * Axes in the plot rectangle `box` ({left, top, width, height}, CSS px) for scales x and y.
 * style: {ink, grid, font}; labels: {x, y}.
 */
export function drawAxes(ctx, box, x, y, labels, style) {
  const xr = [x.invert(box.left), x.invert(box.left + box.width)];
  const yr = [y.invert(box.top + box.height), y.invert(box.top)];
  const xt = niceTicks(xr[0], xr[1], Math.max(2, Math.floor(box.width / 90)));
  const yt = niceTicks(yr[0], yr[1], Math.max(2, Math.floor(box.height / 45)));
  ctx.save();
  ctx.font = style.font;
  ctx.strokeStyle = style.grid;
  ctx.lineWidth = 1;
  ctx.beginPath();
  for (const v of xt.ticks) {
    const px = Math.round(x(v)) + 0.5;
    ctx.moveTo(px, box.top);
    ctx.lineTo(px, box.top + box.height);
  }
  for (const v of yt.ticks) {
    const py = Math.round(y(v)) + 0.5;
    ctx.moveTo(box.left, py);
    ctx.lineTo(box.left + box.width, py);
  }
  ctx.stroke();
  ctx.strokeStyle = style.ink;
  ctx.strokeRect(box.left + 0.5, box.top + 0.5, box.width - 1, box.height - 1);
  ctx.fillStyle = style.ink;
  ctx.textAlign = "center";
  ctx.textBaseline = "top";
  for (const v of xt.ticks) ctx.fillText(formatTick(v, xt.step), x(v), box.top + box.height + 4);
  ctx.fillText(labels.x, box.left + box.width / 2, box.top + box.height + 20);
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  for (const v of yt.ticks) ctx.fillText(formatTick(v, yt.step), box.left - 4, y(v));
  ctx.translate(12, box.top + box.height / 2);
  ctx.rotate(-Math.PI / 2);
  ctx.textAlign = "center";
  ctx.fillText(labels.y, 0, 0);
  ctx.restore();
}
