// Small inline-SVG plots for the scientists' pages: bars, lines, a heatmap and a reliability
// diagram. Each draws into an <svg viewBox="0 0 W H"> and scales with it; styles in dashboard.css.

const NS = "http://www.w3.org/2000/svg";
const PAD = { left: 40, right: 10, top: 18, bottom: 28 };

export function el(tag, attrs = {}, text = "") {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text) node.textContent = text;
  return node;
}

function size(svg) {
  const [, , w, h] = svg.getAttribute("viewBox").split(/\s+/).map(Number);
  return { w, h, x0: PAD.left, x1: w - PAD.right, y0: h - PAD.bottom, y1: PAD.top };
}

function scale(d0, d1, r0, r1) {
  const span = d1 - d0 || 1;
  return (v) => r0 + ((v - d0) / span) * (r1 - r0);
}

function niceTicks(lo, hi, n = 4) {
  const step = Math.pow(10, Math.floor(Math.log10((hi - lo) / n || 1)));
  const mult = [1, 2, 5, 10].find((m) => (hi - lo) / (m * step) <= n) ?? 10;
  const s = mult * step;
  const ticks = [];
  for (let t = Math.ceil(lo / s) * s; t <= hi + 1e-9; t += s) ticks.push(+t.toFixed(10));
  return ticks;
}

function axes(svg, box, xs, ys, { xTicks = [], yTicks = [], xLabel = "", yLabel = "", fmtX = String, fmtY = String }) {
  const g = el("g", { class: "axis" });
  g.append(el("line", { x1: box.x0, y1: box.y0, x2: box.x1, y2: box.y0 }));
  g.append(el("line", { x1: box.x0, y1: box.y0, x2: box.x0, y2: box.y1 }));
  for (const t of yTicks) {
    g.append(el("line", { x1: box.x0 - 3, x2: box.x0, y1: ys(t), y2: ys(t) }));
    g.append(el("text", { x: box.x0 - 5, y: ys(t) + 3, "text-anchor": "end" }, fmtY(t)));
  }
  for (const t of xTicks) {
    g.append(el("line", { x1: xs(t), x2: xs(t), y1: box.y0, y2: box.y0 + 3 }));
    g.append(el("text", { x: xs(t), y: box.y0 + 13, "text-anchor": "middle" }, fmtX(t)));
  }
  if (xLabel) g.append(el("text", { x: (box.x0 + box.x1) / 2, y: box.h - 2, "text-anchor": "middle" }, xLabel));
  if (yLabel) g.append(el("text", { x: 2, y: 10 }, yLabel));
  svg.append(g);
}

function empty(svg, message) {
  const box = size(svg);
  svg.replaceChildren(el("text", { x: box.w / 2, y: box.h / 2, "text-anchor": "middle" }, message));
}

// values: [{label, value}] drawn left to right; every `labelEvery`-th label is written under its bar.
export function barChart(svg, values, { labelEvery = 1, title = (d) => `${d.label}: ${d.value}` } = {}) {
  svg.replaceChildren();
  const box = size(svg);
  const max = Math.max(1, ...values.map((d) => d.value));
  const ys = scale(0, max, box.y0, box.y1);
  const step = (box.x1 - box.x0) / Math.max(1, values.length);
  axes(svg, box, null, ys, { yTicks: niceTicks(0, max).filter(Number.isInteger) });
  values.forEach((d, i) => {
    const x = box.x0 + i * step;
    const bar = el("rect", { class: "bar", x: x + 0.5, y: ys(d.value), width: Math.max(1, step - 1), height: box.y0 - ys(d.value) });
    bar.append(el("title", {}, title(d)));
    svg.append(bar);
    if (i % labelEvery === 0) svg.append(el("text", { x: x + step / 2, y: box.y0 + 13, "text-anchor": "middle" }, d.label));
  });
}

// series: [{points: [[x, y], ...], cls: "" | "second", name}]; nulls in y are skipped.
export function lineChart(svg, series, { xLabel = "", yLabel = "", yMin = null, yMax = null, fmtY = (v) => v.toFixed(2) } = {}) {
  svg.replaceChildren();
  const points = series.flatMap((s) => s.points.filter(([, y]) => y !== null && Number.isFinite(y)));
  if (!points.length) return empty(svg, "nothing measured yet");
  const box = size(svg);
  const xsAll = points.map(([x]) => x);
  const ysAll = points.map(([, y]) => y);
  let [lo, hi] = [yMin ?? Math.min(...ysAll), yMax ?? Math.max(...ysAll)];
  if (lo === hi) [lo, hi] = [lo - 0.05, hi + 0.05];
  const [xlo, xhi] = [Math.min(...xsAll), Math.max(...xsAll)];
  const xs = scale(xlo, xhi === xlo ? xlo + 1 : xhi, box.x0 + 6, box.x1 - 6);
  const ys = scale(lo, hi, box.y0, box.y1);
  axes(svg, box, xs, ys, { xTicks: niceTicks(xlo, xhi === xlo ? xlo + 1 : xhi), yTicks: niceTicks(lo, hi), xLabel, yLabel, fmtY });
  for (const s of series) {
    const pts = s.points.filter(([, y]) => y !== null && Number.isFinite(y));
    if (!pts.length) continue;
    svg.append(el("polyline", { class: `line ${s.cls ?? ""}`, points: pts.map(([x, y]) => `${xs(x)},${ys(y)}`).join(" ") }));
    for (const [x, y] of pts) {
      const dot = el("circle", { class: "dot", cx: xs(x), cy: ys(y), r: 3 });
      dot.append(el("title", {}, `${s.name ?? ""} ${x}: ${fmtY(y)}`.trim()));
      svg.append(dot);
    }
  }
}

// A K x K matrix of counts; each cell coloured by its share of the row, its count written in it.
export function heatmap(svg, labels, matrix) {
  svg.replaceChildren();
  const box = size(svg);
  const left = 90, top = 14, k = labels.length;
  const cell = Math.min((box.w - left - 4) / k, (box.h - top - 40) / k);
  matrix.forEach((row, i) => {
    const total = row.reduce((a, b) => a + b, 0) || 1;
    svg.append(el("text", { x: left - 4, y: top + (i + 0.5) * cell + 3, "text-anchor": "end" }, labels[i].slice(0, 14)));
    row.forEach((count, j) => {
      const share = count / total;
      const x = left + j * cell, y = top + i * cell;
      const rect = el("rect", { x, y, width: cell - 1, height: cell - 1, fill: `rgba(244, 162, 89, ${0.08 + 0.92 * share})` });
      rect.append(el("title", {}, `crowd ${labels[i]}, model ${labels[j]}: ${count} (${(100 * share).toFixed(0)}% of the row)`));
      svg.append(rect, el("text", { class: `cell-text${share < 0.45 ? " light" : ""}`, x: x + cell / 2, y: y + cell / 2 }, String(Math.round(count))));
    });
  });
  labels.forEach((label, j) => {
    svg.append(el("text", { x: left + (j + 0.5) * cell, y: top + k * cell + 12, "text-anchor": "middle" }, label.slice(0, 10)));
  });
  svg.append(el("text", { x: left + (k * cell) / 2, y: top + k * cell + 28, "text-anchor": "middle" }, "model's answer"));
}

// Reliability diagram (Guo+2017, fig. 1): n equal-width confidence bins over [0, 1]; each bin's
// accuracy as a bar, its mean confidence as a tick, its share of subjects as a faint bar behind.
export function reliabilityDiagram(svg, { confidence, accuracy, count }) {
  svg.replaceChildren();
  const box = size(svg);
  const xs = scale(0, 1, box.x0, box.x1);
  const ys = scale(0, 1, box.y0, box.y1);
  const ticks = [0, 0.25, 0.5, 0.75, 1];
  axes(svg, box, xs, ys, { xTicks: ticks, yTicks: ticks, xLabel: "confidence", yLabel: "accuracy" });
  const n = confidence.length;
  const maxCount = Math.max(1, ...count);
  for (let i = 0; i < n; i++) {
    const [lo, hi] = [xs(i / n), xs((i + 1) / n)];
    const share = count[i] / maxCount;
    svg.append(el("rect", { class: "bar count", x: lo + 1, y: ys(share), width: hi - lo - 2, height: box.y0 - ys(share) }));
    if (accuracy[i] === null || confidence[i] === null) continue;
    const bar = el("rect", { class: "bar", x: lo + 1, y: ys(accuracy[i]), width: hi - lo - 2, height: box.y0 - ys(accuracy[i]) });
    bar.append(el("title", {}, `confidence ${confidence[i].toFixed(2)}: accuracy ${accuracy[i].toFixed(2)} on ${count[i]} subjects`));
    svg.append(bar, el("line", { class: "diagonal", x1: lo + 1, x2: hi - 1, y1: ys(confidence[i]), y2: ys(confidence[i]) }));
  }
  svg.append(el("line", { class: "diagonal", x1: xs(0), y1: ys(0), x2: xs(1), y2: ys(1) }));
}

export { empty as emptyPlot };
