// Interactive 1-D spectrum viewer: flux and 1σ error, zoom/pan, smoothing, a line list at a draggable
// redshift, and marks: damped Lyman-alpha absorbers (z_abs, log N_HI with a live Voigt model) and the
// quasar redshift. The server-rendered preview is shown at once; the plot replaces it when the data arrive.
//
// Keys are handled only while the plot (or one of the viewer's own inputs) has focus, and never the page's
// hotkeys (digits 1-9, Backspace, Escape; Enter only as "mark at the cursor" after keyboard navigation).

import { Z_MAX, Z_MIN } from "./lines.js";
import { lowerBound } from "./plot.js";
import { smoothSpectrum } from "./smooth.js";
import { drawSpectrum } from "./spectrum-draw.js";
import { listenToViewer, syncPanel } from "./spectrum-input.js";
import { buildViewerDom, LOG_NHI } from "./spectrum-ui.js";
import { DEFAULT_B_KMS, LYMAN_ALPHA } from "./voigt.js";

const X_LABEL = "Observed wavelength (Å)";
const PRETTY_FLUX = "Flux (10⁻¹⁷ erg s⁻¹ cm⁻² Å⁻¹)";
const MIN_VIEW_PIXELS = 12; // zooming stops when this many spectrum pixels fill the plot
const round = (v, digits) => Number(v.toFixed(digits));
const clamp = (v, lo, hi) => Math.min(Math.max(v, lo), hi);

/** The data_url JSON -> typed arrays; throws a readable Error when it does not follow the contract. */
export function parseSpectrum(json) {
  const { wavelength, flux, error } = json ?? {};
  if (!Array.isArray(wavelength) || wavelength.length < 2) throw new Error("no wavelength array");
  if (!Array.isArray(flux) || flux.length !== wavelength.length) throw new Error("flux and wavelength differ");
  const wave = Float64Array.from(wavelength, Number);
  for (let i = 1; i < wave.length; i++) {
    if (!(wave[i] > wave[i - 1])) throw new Error("wavelengths are not increasing");
  }
  const asNumber = (v) => (v === null || v === undefined ? NaN : Number(v));
  const sigma = Array.isArray(error) && error.length === wave.length ? error : [];
  return {
    wave,
    flux: Float64Array.from(flux, asNumber),
    error: Float64Array.from({ length: wave.length }, (_, i) => asNumber(sigma[i])),
    zQso: Number.isFinite(json.z_qso) ? json.z_qso : null,
    fluxLabel: fluxLabel(json.units),
  };
}

function fluxLabel(units) {
  const unit = units?.flux;
  if (typeof unit !== "string" || (/1e-17/.test(unit) && /erg/.test(unit))) return PRETTY_FLUX;
  return unit === "unknown" || !unit ? "Flux" : `Flux (${unit})`;
}

export class SpectrumViewer {
  // maxMarks: the workflow's marks.max_marks (absorbers and redshift marks together).
  constructor(container, { tools = [], onChange = () => {}, maxMarks = 50 } = {}) {
    this.tools = new Map(tools.map((t) => [t.index, t]));
    this.onChange = onChange;
    this.maxMarks = maxMarks;
    this.ui = buildViewerDom(container, tools);
    this.ctx = this.ui.canvas.getContext("2d");
    this.data = null;
    this.marks = [];
    this.selected = -1;
    this.z = 0;
    this.smoothing = "none";
    this.activeTool = tools.find((t) => t.type === "absorber")?.index ?? null;
    this.pointers = new Map();
    this.gesture = null;
    this.keyboardCursor = false;
    this.loadToken = 0;
    this.frame = 0;
    this.layout = null;
    this.listen();
    this.syncControls();
    this.resizeObserver = new ResizeObserver(() => this.resize());
    this.resizeObserver.observe(this.ui.stage);
  }

  // ------------------------------------------------------------------ public interface

  async load(subject) {
    const token = ++this.loadToken;
    this.abort?.abort();
    this.abort = new AbortController();
    this.data = null;
    this.marks = [];
    this.selected = -1;
    this.gesture = null;
    this.pointers.clear();
    this.zTouched = false;
    this.setRedshift(initialRedshift(subject?.metadata, null));
    this.showPreview(subject);
    if (!subject?.data_url) return this.fail("this subject has no data address");
    try {
      const response = await fetch(subject.data_url, { signal: this.abort.signal, credentials: "same-origin" });
      if (!response.ok) throw new Error(`the server answered ${response.status}`);
      const data = parseSpectrum(await response.json());
      if (token !== this.loadToken) return;
      this.showData(data, subject);
    } catch (err) {
      if (token === this.loadToken && err.name !== "AbortError") this.fail(err.message);
    }
  }

  getMarks() {
    return this.marks.map((m) =>
      m.log_nhi === undefined
        ? { tool: m.tool, z: round(m.z, 5) }
        : { tool: m.tool, z: round(m.z, 5), log_nhi: round(m.log_nhi, 2) },
    );
  }

  setMarks(marks) {
    this.marks = [];
    for (const mark of Array.isArray(marks) ? marks : []) {
      const tool = this.tools.get(mark?.tool);
      if (!tool || !Number.isFinite(mark.z)) continue;
      if (tool.type === "absorber" && Number.isFinite(mark.log_nhi)) {
        this.marks.push({ tool: tool.index, z: mark.z, log_nhi: clamp(mark.log_nhi, LOG_NHI.min, LOG_NHI.max) });
      } else if (tool.type === "redshift") {
        this.marks.push({ tool: tool.index, z: clamp(mark.z, Z_MIN, Z_MAX) });
        this.zTouched = true; // data arriving later must not move the line list off the volunteer's redshift
        this.setRedshift(mark.z);
      }
    }
    this.selected = -1;
    this.refresh();
  }

  clearMarks() {
    this.marks = [];
    this.selected = -1;
    this.refresh();
  }

  destroy() {
    this.loadToken++;
    this.abort?.abort();
    this.resizeObserver.disconnect();
    cancelAnimationFrame(this.frame);
    this.ui.root.remove();
  }

  // ------------------------------------------------------------------ loading

  showPreview(subject) {
    const { preview, canvas, notice } = this.ui;
    notice.textContent = "";
    canvas.hidden = true;
    preview.hidden = false;
    preview.alt = subject?.external_id ? `Spectrum of ${subject.external_id}` : "Spectrum";
    if (subject?.preview_url) preview.src = subject.preview_url;
    else preview.removeAttribute("src");
    this.syncControls();
  }

  showData(data, subject) {
    this.data = data;
    this.fullView = { lo: data.wave[0], hi: data.wave[data.wave.length - 1] };
    this.setView(this.fullView.lo, this.fullView.hi);
    this.continuumFlux = smoothSpectrum(data.flux, data.error, "boxcar-5").flux;
    this.applySmoothing();
    if (!this.zTouched) this.setRedshift(initialRedshift(subject?.metadata, data.zQso));
    this.ui.preview.hidden = true;
    this.ui.canvas.hidden = false;
    this.ui.canvas.setAttribute("aria-label", `Spectrum plot of ${subject?.external_id ?? "this object"}`);
    this.syncControls();
    this.resize();
  }

  fail(reason) {
    this.ui.notice.textContent = `The interactive spectrum could not be loaded (${reason}); the preview is shown.`;
  }

  applySmoothing() {
    this.shown = smoothSpectrum(this.data.flux, this.data.error, this.smoothing);
  }

  // ------------------------------------------------------------------ state changes

  /** Marks changed by the volunteer: redraw, update the panel and tell the page. */
  changed() {
    this.refresh();
    this.onChange(this.getMarks());
  }

  refresh() {
    this.syncControls();
    this.requestDraw();
  }

  /** Line-list redshift; every redshift mark follows it. `typing` is the input the volunteer is editing. */
  setRedshift(z, typing = null) {
    this.z = clamp(Number.isFinite(z) ? z : 0, Z_MIN, Z_MAX);
    for (const mark of this.marks) if (mark.log_nhi === undefined) mark.z = this.z;
    if (typing !== this.ui.zRange) this.ui.zRange.value = String(this.z);
    if (typing !== this.ui.zNumber) this.ui.zNumber.value = this.z.toFixed(4);
    this.ui.canvas.dataset.z = String(this.z);
    this.requestDraw();
  }

  /** A deliberate redshift change: with exactly one redshift tool, it becomes (or moves) that mark. */
  redshiftChosen(z, typing = null) {
    this.zTouched = true;
    this.setRedshift(z, typing);
    const redshiftTools = [...this.tools.values()].filter((t) => t.type === "redshift");
    const free = this.marks.length < this.maxMarks;
    if (redshiftTools.length === 1 && free && !this.marks.some((m) => m.tool === redshiftTools[0].index)) {
      this.marks.push({ tool: redshiftTools[0].index, z: this.z });
      this.announce(`${redshiftTools[0].label}: z = ${this.z.toFixed(4)}`);
    }
    if (this.marks.some((m) => m.log_nhi === undefined)) this.changed();
    else this.syncControls();
  }

  toggleRedshiftMark(toolIndex, on) {
    this.marks = this.marks.filter((m) => m.tool !== toolIndex);
    if (on && this.marks.length < this.maxMarks) this.marks.push({ tool: toolIndex, z: this.z });
    this.changed();
  }

  addAbsorber(wavelength) {
    if (this.activeTool === null || !this.data) return;
    if (this.marks.length >= this.maxMarks) {
      this.ui.notice.textContent = `At most ${this.maxMarks} marks per spectrum: delete one to add another.`;
      return;
    }
    const z = wavelength / LYMAN_ALPHA.rest - 1;
    this.marks.push({ tool: this.activeTool, z, log_nhi: LOG_NHI.initial });
    this.selected = this.marks.length - 1;
    this.announce(`Absorber ${this.absorberNumber(this.selected)} marked at z = ${z.toFixed(4)}`);
    this.changed();
  }

  setLogN(value) {
    const mark = this.marks[this.selected];
    if (!mark || mark.log_nhi === undefined || !Number.isFinite(value)) return;
    mark.log_nhi = clamp(Math.round(value / LOG_NHI.step) * LOG_NHI.step, LOG_NHI.min, LOG_NHI.max);
    this.changed();
  }

  deleteSelected() {
    if (this.selected < 0) return;
    const number = this.absorberNumber(this.selected);
    this.marks.splice(this.selected, 1);
    this.selected = -1;
    this.announce(`Absorber ${number} deleted`);
    this.changed();
  }

  select(index) {
    this.selected = index;
    this.refresh();
  }

  /** 1-based position of marks[i] among the absorber marks (its label in the plot and the list). */
  absorberNumber(i) {
    return this.marks.slice(0, i + 1).filter((m) => m.log_nhi !== undefined).length;
  }

  announce(text) {
    this.ui.live.textContent = text;
  }

  // ------------------------------------------------------------------ view

  setView(lo, hi) {
    const full = this.fullView;
    const minSpan = MIN_VIEW_PIXELS * pixelStepAt(this.data.wave, (lo + hi) / 2);
    let span = clamp(hi - lo, Math.min(minSpan, full.hi - full.lo), full.hi - full.lo);
    const centre = (lo + hi) / 2;
    lo = clamp(centre - span / 2, full.lo, full.hi - span);
    span = Math.min(span, full.hi - lo);
    this.view = { lo, hi: lo + span };
    this.ui.canvas.dataset.view = `${this.view.lo},${this.view.hi}`; // state for tests and tools, set at once
    this.requestDraw();
  }

  zoomAt(centre, factor) {
    if (!this.data) return;
    const { lo, hi } = this.view;
    this.setView(centre - (centre - lo) * factor, centre + (hi - centre) * factor);
  }

  zoomCentre(factor) {
    if (this.data) this.zoomAt((this.view.lo + this.view.hi) / 2, factor);
  }

  pan(deltaWave) {
    if (this.data) this.setView(this.view.lo + deltaWave, this.view.hi + deltaWave);
  }

  resetView() {
    if (this.data) this.setView(this.fullView.lo, this.fullView.hi);
  }

  /** One spectrum pixel at the cursor, in Å: the fine keyboard pan step. */
  pixelStep() {
    return pixelStepAt(this.data.wave, this.cursorWave());
  }

  cursorWave() {
    return (this.view.lo + this.view.hi) / 2;
  }

  // ------------------------------------------------------------------ drawing

  resize() {
    const { canvas } = this.ui;
    if (canvas.hidden) return;
    const rect = canvas.getBoundingClientRect();
    const ratio = window.devicePixelRatio || 1;
    canvas.width = Math.round(rect.width * ratio);
    canvas.height = Math.round(rect.height * ratio);
    this.size = { width: rect.width, height: rect.height, ratio };
    this.draw();
  }

  requestDraw() {
    if (!this.frame) this.frame = requestAnimationFrame(() => this.draw());
  }

  draw() {
    cancelAnimationFrame(this.frame);
    this.frame = 0;
    if (!this.data || !this.size || this.ui.canvas.hidden) return;
    const { width, height, ratio } = this.size;
    this.ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    this.layout = drawSpectrum(this.ctx, width, height, {
      data: this.data,
      shown: this.shown,
      continuumFlux: this.continuumFlux,
      view: this.view,
      z: this.z,
      showLines: this.ui.lines.checked,
      marks: this.marks,
      selected: this.selected,
      absorberNumber: (i) => this.absorberNumber(i),
      bKms: DEFAULT_B_KMS,
      cursor: this.keyboardCursor && document.activeElement === this.ui.canvas ? this.cursorWave() : null,
      range: this.gesture?.kind === "range" ? this.gesture : null,
      labels: { x: X_LABEL, y: this.data.fluxLabel },
    });
    const { box } = this.layout;
    this.ui.canvas.dataset.box = `${box.left},${box.top},${box.width},${box.height}`;
  }

  syncControls() {
    syncPanel(this);
  }

  listen() {
    listenToViewer(this);
  }
}

/** Starting redshift for the line list: the data's z_qso, else the subject metadata's z_qso or z. */
function initialRedshift(metadata, zQso) {
  const given = [zQso, metadata?.z_qso, metadata?.z].find((z) => z !== null && z !== "" && Number.isFinite(Number(z)));
  return given === undefined ? 0 : Number(given);
}

/** Width in Å of the spectrum pixel nearest `lambda` (pixels need not be uniform in Å). */
export function pixelStepAt(wave, lambda) {
  const i = clamp(lowerBound(wave, lambda), 1, wave.length - 1);
  return wave[i] - wave[i - 1];
}
