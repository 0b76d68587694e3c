// Drawing of the spectrum plot on a 2-D canvas: flux steps, 1σ band, line list, absorbers with their
// Voigt models, keyboard cursor and zoom-range selection. Pure rendering: the viewer owns the state.

import { localContinuum } from "./continuum.js";
import { linesInRange } from "./lines.js";
import { drawAxes, linearScale, lowerBound, robustRange } from "./plot.js";
import { LYMAN_ALPHA, LYMAN_BETA, lineTau, wingHalfWidth } from "./voigt.js";

export const COLOURS = Object.freeze({
  paper: "#ffffff",
  ink: "#1b1f24",
  grid: "#e4e7eb",
  band: "#c9d3df",
  flux: "#111418",
  line: "#6b4fbb",
  absorber: "#0b7a75",
  selected: "#c2410c",
  model: "#d62728",
  cursor: "#1f6feb",
  range: "rgba(31, 111, 235, 0.15)",
});
const TAU_EDGE = 0.05; // the model is drawn, and the continuum windows start, where τ falls below this

/** Plot rectangle (CSS px) inside a canvas of the given size: room for labels left, line names on top. */
export function plotBox(width, height) {
  const narrow = width < 480;
  const left = narrow ? 50 : 60;
  const top = 24;
  const bottom = 40;
  return { left, top, width: Math.max(width - left - 10, 10), height: Math.max(height - top - bottom, 10), narrow };
}

/** Scales for the current view: x over [view.lo, view.hi] Å, y robust over the visible flux. */
export function scalesFor(state, box) {
  const { wave } = state.data;
  const i0 = Math.max(lowerBound(wave, state.view.lo) - 1, 0);
  const i1 = Math.min(lowerBound(wave, state.view.hi) + 1, wave.length);
  const [ylo, yhi] = robustRange(state.shown.flux.subarray(i0, i1));
  return {
    x: linearScale(state.view.lo, state.view.hi, box.left, box.left + box.width),
    y: linearScale(ylo, yhi, box.top + box.height, box.top),
    i0,
    i1,
  };
}

function pixelEdges(wave, i) {
  const left = i > 0 ? (wave[i - 1] + wave[i]) / 2 : wave[i] - (wave[i + 1] - wave[i]) / 2;
  const right = i < wave.length - 1 ? (wave[i] + wave[i + 1]) / 2 : wave[i] + (wave[i] - wave[i - 1]) / 2;
  return [left, right];
}

/** Flux as steps with its 1σ band; when pixels outnumber screen columns, a min/max envelope per column. */
function drawSeries(ctx, state, box, s) {
  const { wave } = state.data;
  const { flux, error } = state.shown;
  const perColumn = s.i1 - s.i0 > 2 * box.width;
  const columns = new Map(); // column -> [fmin, fmax, bandLo, bandHi]
  ctx.fillStyle = COLOURS.band;
  ctx.strokeStyle = COLOURS.flux;
  ctx.lineWidth = 1;
  ctx.beginPath();
  let pen = false;
  for (let i = s.i0; i < s.i1; i++) {
    const f = flux[i];
    if (!Number.isFinite(f)) {
      pen = false;
      continue;
    }
    const e = error[i];
    if (perColumn) {
      const c = Math.floor(s.x(wave[i]));
      const lo = Number.isFinite(e) ? f - e : f;
      const hi = Number.isFinite(e) ? f + e : f;
      const col = columns.get(c);
      if (col) columns.set(c, [Math.min(col[0], f), Math.max(col[1], f), Math.min(col[2], lo), Math.max(col[3], hi)]);
      else columns.set(c, [f, f, lo, hi]);
      continue;
    }
    const [l, r] = pixelEdges(wave, i).map(s.x);
    if (Number.isFinite(e)) ctx.fillRect(l, s.y(f + e), r - l, s.y(f - e) - s.y(f + e));
    if (pen) ctx.lineTo(l, s.y(f));
    else ctx.moveTo(l, s.y(f));
    ctx.lineTo(r, s.y(f));
    pen = true;
  }
  if (perColumn) {
    for (const [c, [, , lo, hi]] of columns) ctx.fillRect(c, s.y(hi), 1, s.y(lo) - s.y(hi));
    for (const [c, [fmin, fmax]] of columns) {
      ctx.moveTo(c + 0.5, s.y(fmax));
      ctx.lineTo(c + 0.5, s.y(fmin) + 0.5);
    }
  }
  ctx.stroke();
}

function verticalLine(ctx, px, box, colour, dash, width = 1) {
  ctx.save();
  ctx.strokeStyle = colour;
  ctx.lineWidth = width;
  ctx.setLineDash(dash);
  ctx.beginPath();
  ctx.moveTo(Math.round(px) + 0.5, box.top);
  ctx.lineTo(Math.round(px) + 0.5, box.top + box.height);
  ctx.stroke();
  ctx.restore();
}

/** Line list: dashed markers in the plot, names in the strip above it (a name is skipped if it would overlap). */
function drawLineList(ctx, state, box, s) {
  ctx.save();
  ctx.fillStyle = "#f3f0fb";
  ctx.fillRect(box.left, 0, box.width, box.top - 2);
  ctx.font = box.narrow ? "10px system-ui, sans-serif" : "11px system-ui, sans-serif";
  ctx.textBaseline = "middle";
  const middle = (box.top - 2) / 2;
  const zLabel = `z = ${state.z.toFixed(4)} ⇆`; // the strip is the handle that drags the redshift
  const zLeft = box.left + box.width - 4 - ctx.measureText(zLabel).width;
  ctx.fillStyle = COLOURS.line;
  ctx.textAlign = "right";
  ctx.fillText(zLabel, box.left + box.width - 4, middle);
  ctx.textAlign = "center";
  let lastRight = -Infinity;
  for (const line of linesInRange(state.z, state.view.lo, state.view.hi)) {
    const px = s.x(line.wave);
    verticalLine(ctx, px, box, COLOURS.line, [4, 3]);
    const half = ctx.measureText(line.name).width / 2 + 3;
    if (px - half < lastRight || px + half > zLeft) continue;
    ctx.fillStyle = COLOURS.line;
    ctx.fillText(line.name, px, middle);
    lastRight = px + half;
  }
  ctx.restore();
}

/** C(λ)·exp(−τ(λ)) of one line of an absorber, evaluated per screen column, over the continuum it sits on. */
function drawVoigtModel(ctx, state, box, s, mark, line, dash) {
  const centre = line.rest * (1 + mark.z);
  const half = wingHalfWidth(mark.z, mark.log_nhi, TAU_EDGE, state.bKms, line);
  const continuum = localContinuum(state.data.wave, state.continuumFlux, centre, half, mark.z);
  if (!continuum) return;
  const pxLo = Math.max(Math.floor(s.x(centre - 1.5 * half)), box.left);
  const pxHi = Math.min(Math.ceil(s.x(centre + 1.5 * half)), box.left + box.width);
  if (pxHi <= pxLo) return;
  const lambdas = Float64Array.from({ length: pxHi - pxLo + 1 }, (_, k) => s.x.invert(pxLo + k));
  const tau = lineTau(lambdas, mark.z, mark.log_nhi, state.bKms, line);
  ctx.save();
  ctx.strokeStyle = COLOURS.model;
  ctx.setLineDash([2, 3]);
  ctx.beginPath();
  lambdas.forEach((l, k) => (k ? ctx.lineTo(pxLo + k, s.y(continuum(l))) : ctx.moveTo(pxLo, s.y(continuum(l)))));
  ctx.stroke();
  ctx.setLineDash(dash);
  ctx.lineWidth = 2;
  ctx.beginPath();
  lambdas.forEach((l, k) => {
    const model = s.y(continuum(l) * Math.exp(-tau[k]));
    if (k) ctx.lineTo(pxLo + k, model);
    else ctx.moveTo(pxLo, model);
  });
  ctx.stroke();
  ctx.restore();
}

function drawAbsorbers(ctx, state, box, s) {
  state.marks.forEach((mark, i) => {
    if (mark.log_nhi === undefined) return;
    const selected = i === state.selected;
    drawVoigtModel(ctx, state, box, s, mark, LYMAN_ALPHA, []);
    drawVoigtModel(ctx, state, box, s, mark, LYMAN_BETA, [6, 3]);
    const colour = selected ? COLOURS.selected : COLOURS.absorber;
    const px = s.x(LYMAN_ALPHA.rest * (1 + mark.z));
    verticalLine(ctx, s.x(LYMAN_BETA.rest * (1 + mark.z)), box, colour, [1, 3]);
    verticalLine(ctx, px, box, colour, [], selected ? 3 : 2);
    ctx.save();
    ctx.fillStyle = colour;
    ctx.beginPath(); // a grab handle at the top of the marker
    ctx.arc(px, box.top + 10, selected ? 9 : 7, 0, 2 * Math.PI);
    ctx.fill();
    ctx.fillStyle = "#fff";
    ctx.font = "bold 11px system-ui, sans-serif";
    ctx.textAlign = "center";
    ctx.textBaseline = "middle";
    ctx.fillText(String(state.absorberNumber(i)), px, box.top + 10);
    ctx.restore();
  });
}

function drawOverlays(ctx, state, box, s) {
  if (state.cursor !== null) verticalLine(ctx, s.x(state.cursor), box, COLOURS.cursor, [6, 4], 2);
  if (state.range) {
    const [a, b] = [s.x(state.range.from), s.x(state.range.to)].sort((p, q) => p - q);
    ctx.fillStyle = COLOURS.range;
    ctx.fillRect(a, box.top, b - a, box.height);
  }
}

/**
 * Paint everything. state: {data: {wave}, shown: {flux, error}, continuumFlux, view: {lo, hi}, z, showLines,
 * marks, selected, absorberNumber(i), bKms, cursor (Å or null), range ({from, to} Å or null), labels: {x, y}}.
 * @returns the plot box and scales, for hit-testing pointer events
 */
export function drawSpectrum(ctx, width, height, state) {
  const box = plotBox(width, height);
  const s = scalesFor(state, box);
  ctx.fillStyle = COLOURS.paper;
  ctx.fillRect(0, 0, width, height);
  const font = box.narrow ? "10px system-ui, sans-serif" : "12px system-ui, sans-serif";
  drawAxes(ctx, box, s.x, s.y, state.labels, { ink: COLOURS.ink, grid: COLOURS.grid, font });
  ctx.save();
  ctx.beginPath();
  ctx.rect(box.left, box.top, box.width, box.height);
  ctx.clip();
  drawSeries(ctx, state, box, s);
  ctx.restore();
  ctx.save();
  ctx.beginPath();
  ctx.rect(box.left, 0, box.width, box.top + box.height); // line names sit above the plot
  ctx.clip();
  if (state.showLines) drawLineList(ctx, state, box, s);
  drawAbsorbers(ctx, state, box, s);
  drawOverlays(ctx, state, box, s);
  ctx.restore();
  return { box, x: s.x, y: s.y };
}
