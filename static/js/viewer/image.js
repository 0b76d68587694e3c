// FITS-native image viewer: the server's PNG preview paints at once, then the real pixels (float16 over the wire)
// are stretched in the browser as the volunteer chooses; boxes and lines are drawn over them in data coordinates.
//
//   const viewer = new ImageViewer(element, {tools: [{index: 0, type: "box", label: "Galaxy"}], onChange});
//   await viewer.load(subject); viewer.getMarks();
//
// Marks: box {tool, x, y, width, height} ((x, y) = lowest column and row), line {tool, x1, y1, x2, y2}, in pixels
// of the data array with row 0 at the BOTTOM (FITS). The viewer never handles digits 1-9, Backspace, Enter or
// Escape (the classify page's hotkeys); keys it does handle get preventDefault().
//
// State for pages and tests, as data attributes: .iv[data-state] loading | preview | pixels | preview-only | failed;
// .iv[data-band|stretch|invert], .iv[data-limits] "lo,hi" (one band, flux units) or .iv[data-lupton]
// "minimum,stretch,Q" (colour); .iv-stage[data-view] "scale,left,top" maps data to stage px:
// sx = left + x * scale, sy = top + (height - y) * scale.

import { buildViewerDom, setBandOptions } from "./controls.js";
import { TOOL_COLOURS, clampMark, exportMark, isBox, moveMark, paintMarks } from "./draw.js";
import { Gestures } from "./gestures.js";
import { fetchPixels } from "./pixels.js";
import { STRETCHES, limitsFor, paintBand, paintLupton } from "./stretch.js";
import { View } from "./view.js";

const MASKED = "#5a2a5a";  // pixels with no data (NaN) show through in this colour
const STRETCH_ORDER = Object.keys(STRETCHES);
const FIELDS = new Set(["INPUT", "SELECT", "TEXTAREA"]);

export class ImageViewer {
  constructor(container, { tools = [], onChange = () => {}, maxMarks = Infinity } = {}) {
    this.tools = tools;
    this.onChange = onChange;
    this.maxMarks = maxMarks;
    this.ui = buildViewerDom(container, tools, (index) => this.colourOf(index));
    this.view = new View();
    this.marks = [];
    this.draft = null;         // the mark being drawn, not yet added
    this.selected = null;      // index into marks
    this.mode = tools.length ? String(tools[0].index) : "pan";
    this.extentKnown = false;  // marks need the data array's size: from metadata.shape or the pixels
    this.pixels = null;
    this.preview = null;
    this.loadToken = 0;
    this.bitmap = document.createElement("canvas");  // the stretched pixels at 1 screen px per data pixel
    this.coarsePointer = window.matchMedia?.("(pointer: coarse)").matches ?? false;  // fingers: bigger handles
    this.gestures = new Gestures(this);
    this.bindControls();
    this.resizeObserver = new ResizeObserver(() => this.fitCanvas());
    this.resizeObserver.observe(this.ui.stage);
    this.setMode(this.mode);
  }

  // ---- public interface ----

  /** Show a subject: the preview at once, then the real pixels. Resolves when they show (or the preview stays). */
  async load(subject) {
    const token = ++this.loadToken;
    this.abort?.abort();
    this.abort = new AbortController();
    this.gestures.abandon();
    Object.assign(this, { pixels: null, preview: null, marks: [], draft: null, selected: null, extentKnown: false,
      dataFailed: false });
    this.notify("");
    this.select(null);  // also redraws: the previous subject goes at once
    this.showMarkCount();
    this.setState(subject ? "loading" : "empty");
    if (!subject) return;
    this.ui.stage.setAttribute("aria-label", `Sky image ${subject.external_id ?? ""}`.trim());
    const shape = subject.metadata?.shape;
    if (Array.isArray(shape) && shape.length === 3 && shape.every((n) => Number.isInteger(n) && n > 0)) {
      this.view.setExtent(shape[2], shape[1]);
      this.extentKnown = true;
    }
    this.showPreview(subject.preview_url, token);
    try {
      if (!subject.data_url) throw new Error("this subject has no pixel data");
      const pixels = await fetchPixels(subject.data_url, { signal: this.abort.signal });
      if (token !== this.loadToken) return;
      this.showPixels(pixels);
    } catch (err) {
      if (token !== this.loadToken) return;  // a newer subject took over
      this.dataFailed = true;
      this.setState(this.preview ? "preview-only" : "failed");
      const drawing = this.tools.length && !this.extentKnown ? " Drawing needs them: please reload." : "";
      this.notify(`Showing the preview image: the pixel data did not load (${err.message}).${drawing}`);
    }
  }

  getMarks() {
    return this.marks.map(exportMark);
  }

  /** Marks of an earlier classification, to edit them (pulled inside the image if need be). */
  setMarks(marks) {
    const { width, height } = this.view;
    // Before the image's size is known they are kept as given; showPixels pulls them inside.
    const inside = (marks || []).map((m) => (this.extentKnown ? clampMark(m, width, height) : { ...m }));
    this.marks = inside.filter((m) => !isBox(m) || (m.width > 0 && m.height > 0));
    this.selected = null;
    this.marksChanged();
  }

  clearMarks() {
    this.marks = [];
    this.selected = null;
    this.marksChanged();
  }

  destroy() {
    this.loadToken += 1;
    this.abort?.abort();
    this.gestures.detach();
    this.resizeObserver.disconnect();
    document.removeEventListener("keydown", this.keyHandler);
    cancelAnimationFrame(this.frame);
    this.ui.root.remove();
  }

  // ---- loading and painting ----

  showPreview(url, token) {
    if (!url) return;
    const image = new Image();
    image.onload = () => {
      if (token !== this.loadToken || this.pixels) return;
      this.preview = image;
      if (!this.extentKnown) this.view.setExtent(image.naturalWidth, image.naturalHeight);
      this.setState(this.dataFailed ? "preview-only" : "preview");
      this.requestDraw();
    };
    image.onerror = () => {
      if (token === this.loadToken && !this.pixels) this.notify("The preview image did not load.");
    };
    image.src = url;
  }

  showPixels(pixels) {
    this.pixels = pixels;
    if (!this.extentKnown || this.view.width !== pixels.width || this.view.height !== pixels.height) {
      this.view.setExtent(pixels.width, pixels.height);
      if (this.marks.length) this.setMarks(this.marks);  // pulled inside the (new) extent
    }
    this.extentKnown = true;
    this.bitmap.width = pixels.width;
    this.bitmap.height = pixels.height;
    this.display.band = setBandOptions(this.ui.band, pixels.bands, this.display.band);
    this.setState("pixels");
    this.render();
  }

  /** Stretch the pixels into the bitmap with the current display settings. */
  render() {
    const { pixels, display, ui } = this;
    if (!pixels) return;
    const colour = display.band === "colour";
    ui.root.classList.toggle("iv-is-colour", colour);
    const { width, height } = pixels;
    const image = new ImageData(width, height);
    if (colour) {
      // Lupton+2004 defaults scaled to the noise, as the server preview: minimum -1σ, range 8σ, Q 8.
      const sigma = robustNoise(pixels.stats);
      const settings = { minimum: -sigma, stretch: display.range * sigma, Q: display.q, invert: display.invert };
      paintLupton(image.data, [pixels.planes[2], pixels.planes[1], pixels.planes[0]], width, height, settings);
      ui.root.dataset.lupton = `${settings.minimum},${settings.stretch},${settings.Q}`;
      delete ui.root.dataset.limits;
    } else {
      const b = Number(display.band);
      const [lo, hi] = limitsFor(pixels.stats[b], display.limits);
      const settings = { lo, hi, stretch: display.stretch, invert: display.invert };
      paintBand(image.data, pixels.planes[b], width, height, settings);
      ui.root.dataset.limits = `${lo},${hi}`;
      delete ui.root.dataset.lupton;
    }
    Object.assign(ui.root.dataset, { band: colour ? "colour" : pixels.bands[display.band], stretch: display.stretch,
      invert: String(display.invert) });
    this.bitmap.getContext("2d").putImageData(image, 0, 0);
    this.requestDraw();
  }

  fitCanvas() {
    const { stage, canvas } = this.ui;
    const ratio = window.devicePixelRatio || 1;
    const { width, height } = stage.getBoundingClientRect();
    canvas.width = Math.max(1, Math.round(width * ratio));
    canvas.height = Math.max(1, Math.round(height * ratio));
    this.view.setScreen(width, height);
    this.draw();
  }

  requestDraw() {
    this.publishView();
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = null;
      this.draw();
    });
  }

  draw() {
    const { canvas } = this.ui;
    const { view } = this;
    const ctx = canvas.getContext("2d");
    const ratio = canvas.width / Math.max(1, view.screenWidth);
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    const source = this.pixels ? this.bitmap : this.preview;
    if (source) {
      const [w, h] = [view.width * view.scale, view.height * view.scale];
      ctx.fillStyle = MASKED;
      ctx.fillRect(view.left, view.top, w, h);
      ctx.imageSmoothingEnabled = false;  // real pixels, nearest neighbour
      ctx.drawImage(source, view.left, view.top, w, h);
    }
    const all = this.draft ? [...this.marks, this.draft] : this.marks;
    paintMarks(ctx, all, view, { colourOf: (t) => this.colourOf(t), selected: this.selected,
      handleRadius: this.coarsePointer ? 11 : 6 });
    this.publishView();
  }

  /** "scale,left,top" on the stage (screen px per data pixel; the image's top-left corner): for tests and tools. */
  publishView() {
    const { view } = this;
    this.ui.stage.dataset.view = `${view.scale},${view.left},${view.top}`;
  }

  // ---- marks ----

  colourOf(toolIndex) {
    const position = this.tools.findIndex((t) => t.index === toolIndex);
    return TOOL_COLOURS[(position < 0 ? toolIndex : position) % TOOL_COLOURS.length];
  }

  /** The drawing tool in use, or null in pan mode or before the image's size is known. */
  drawingTool() {
    if (this.mode === "pan" || !this.extentKnown) return null;
    return this.tools.find((t) => String(t.index) === this.mode) ?? null;
  }

  addMark(mark) {
    if (this.marks.length >= this.maxMarks) {
      this.notify(`At most ${this.maxMarks} marks per image.`);
      return;
    }
    this.marks.push(mark);
    this.selected = this.marks.length - 1;
    this.marksChanged();
  }

  select(index) {
    this.selected = index ?? null;
    this.ui.remove.disabled = this.selected === null;
    this.requestDraw();
  }

  selectNext() {
    this.select(((this.selected ?? -1) + 1) % this.marks.length);
  }

  deleteSelected() {
    if (this.selected === null) return;
    this.marks.splice(this.selected, 1);
    this.selected = null;
    this.marksChanged();
  }

  marksChanged() {
    this.select(this.selected !== null && this.selected < this.marks.length ? this.selected : null);
    this.showMarkCount();
    this.onChange(this.getMarks());
  }

  showMarkCount() {
    const n = this.marks.length;
    this.ui.count.textContent = `${n} mark${n === 1 ? "" : "s"}`;
    this.ui.count.title = this.tools.map((t) => `${t.label}: ${this.marks.filter((m) => m.tool === t.index).length}`)
      .join(", ");
  }

  /** Keyboard drawing: a mark of the active tool in the middle of what is on screen. */
  addMarkAtCentre() {
    const tool = this.drawingTool();
    if (!tool) return;
    const { view } = this;
    const c = view.toData(view.screenWidth / 2, view.screenHeight / 2);
    const half = Math.min(view.width, view.height, view.screenWidth / view.scale) / 10;
    const mark = tool.type === "box"
      ? { tool: tool.index, x: c.x - half, y: c.y - half, width: 2 * half, height: 2 * half }
      : { tool: tool.index, x1: c.x - half, y1: c.y, x2: c.x + half, y2: c.y };
    this.addMark(clampMark(mark, view.width, view.height));
  }

  /** Arrow keys on the selected mark: move it, or with Shift grow/shrink it (a line: its second end). */
  nudgeSelected(dx, dy, resize) {
    const { view } = this;
    const mark = this.marks[this.selected];
    let next;
    if (!resize) next = moveMark(mark, dx, dy, view.width, view.height);
    else if (isBox(mark)) {
      next = { ...mark, width: Math.max(0.5, mark.width + dx), height: Math.max(0.5, mark.height + dy) };
    }
    else next = { ...mark, x2: mark.x2 + dx, y2: mark.y2 + dy };
    this.marks[this.selected] = clampMark(next, view.width, view.height);
    this.marksChanged();
  }

  // ---- controls ----

  bindControls() {
    const { ui } = this;
    this.display = { band: "colour", stretch: "asinh", limits: "zscale", invert: false, q: 8, range: 8 };
    const update = (key, value) => {
      this.display[key] = value;
      this.render();
    };
    ui.band.addEventListener("change", () => update("band", ui.band.value));
    ui.stretch.addEventListener("change", () => update("stretch", ui.stretch.value));
    ui.limits.addEventListener("change", () => update("limits", ui.limits.value));
    ui.q.addEventListener("input", () => update("q", Number(ui.q.value)));
    ui.range.addEventListener("input", () => update("range", Number(ui.range.value)));
    ui.invert.addEventListener("click", () => this.toggleInvert());
    ui.displayToggle.addEventListener("click", () => {
      const open = ui.root.classList.toggle("iv-display-open");
      ui.displayToggle.setAttribute("aria-expanded", String(open));
    });
    ui.zoomIn.addEventListener("click", () => this.zoom(1.5));
    ui.zoomOut.addEventListener("click", () => this.zoom(1 / 1.5));
    ui.reset.addEventListener("click", () => this.resetView());
    ui.remove.addEventListener("click", () => this.deleteSelected());
    for (const b of ui.toolButtons) b.addEventListener("click", () => this.setMode(b.dataset.tool));
    ui.stage.addEventListener("pointerdown", (e) => { this.coarsePointer = e.pointerType === "touch"; });
    this.keyHandler = (e) => this.onKey(e);
    document.addEventListener("keydown", this.keyHandler);
  }

  setMode(mode) {
    this.mode = mode;
    for (const b of this.ui.toolButtons) b.setAttribute("aria-pressed", String(b.dataset.tool === mode));
    const tool = this.tools.find((t) => String(t.index) === mode);
    this.ui.toolHelp.textContent = tool
      ? tool.help || `Drag to draw: ${tool.label}.`
      : "Drag to move the image; tap a mark to select it.";
    this.ui.stage.dataset.mode = tool ? tool.type : "pan";
  }

  toggleInvert() {
    this.display.invert = !this.display.invert;
    this.ui.invert.setAttribute("aria-pressed", String(this.display.invert));
    this.render();
  }

  cycleStretch() {
    const next = STRETCH_ORDER[(STRETCH_ORDER.indexOf(this.display.stretch) + 1) % STRETCH_ORDER.length];
    this.ui.stretch.value = next;
    this.display.stretch = next;
    if (this.display.band === "colour" && this.pixels) {
      // Stretches apply to one band: show the middle (r) band rather than ignore the key.
      this.display.band = this.ui.band.value = String(Math.min(1, this.pixels.bands.length - 1));
    }
    this.notify(`Stretch: ${next}`);
    this.render();
  }

  zoom(factor) {
    const { view } = this;
    view.zoomAt(factor, view.screenWidth / 2, view.screenHeight / 2);
    this.requestDraw();
  }

  resetView() {
    this.view.reset();
    this.requestDraw();
  }

  onKey(e) {
    if (e.defaultPrevented || e.ctrlKey || e.metaKey || e.altKey) return;
    const target = e.target;
    const ours = this.ui.root.contains(target);
    if (!ours && target !== document.body && target !== document.documentElement) return;  // another control's key
    if (FIELDS.has(target.tagName) || target.isContentEditable) return;
    const arrows = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, 1], ArrowDown: [0, -1] };
    if (e.key in arrows) {
      const [dx, dy] = arrows[e.key];
      if (this.selected !== null && ours) this.nudgeSelected(dx, dy, e.shiftKey);
      else {
        const step = e.shiftKey ? 160 : 40;  // screen px
        this.view.panBy(-dx * step, dy * step);
        this.requestDraw();
      }
    } else if (e.key === "+" || e.key === "=") this.zoom(1.5);
    else if (e.key === "-" || e.key === "_") this.zoom(1 / 1.5);
    else if (e.key === "0") this.resetView();
    else if (e.key === "i" || e.key === "I") this.toggleInvert();
    else if (e.key === "s" || e.key === "S") this.cycleStretch();
    else if ((e.key === "a" || e.key === "A") && ours) this.addMarkAtCentre();
    else if ((e.key === "n" || e.key === "N") && ours && this.marks.length) this.selectNext();
    else if (e.key === "Delete" && ours) this.deleteSelected();
    else return;
    e.preventDefault();
  }

  // ---- status ----

  setState(state) {
    this.ui.root.dataset.state = state;
  }

  notify(text) {
    this.ui.notice.textContent = text;
  }

  /** Pixel readout under the pointer: position and value(s) in flux units. */
  showReadout(p) {
    const { view, pixels, ui } = this;
    const q = p && view.toData(p.x, p.y);
    if (!q || !pixels || q.x < 0 || q.y < 0 || q.x >= view.width || q.y >= view.height) {
      ui.readout.textContent = "";
      return;
    }
    const i = Math.floor(q.y) * pixels.width + Math.floor(q.x);
    const shown = this.display.band === "colour" ? pixels.bands.map((_, b) => b) : [Number(this.display.band)];
    const values = shown.map((b) => `${pixels.bands[b]} ${formatFlux(pixels.planes[b][i])}`).join("  ");
    ui.readout.textContent = `x ${q.x.toFixed(1)}  y ${q.y.toFixed(1)}  ${values}`;
  }
}

function formatFlux(v) {
  return Number.isFinite(v) ? Number(v.toPrecision(4)).toString() : "no data";
}

/** One noise level for the colour composite: the median of the bands' MAD-based sigmas (as the server preview). */
function robustNoise(stats) {
  const sigmas = stats.slice(0, 3).map((s) => s.sigma).filter((s) => Number.isFinite(s) && s > 0).sort((a, b) => a - b);
  if (!sigmas.length) {
    const spans = stats.map((s) => (s.sorted.length ? s.sorted[s.sorted.length - 1] - s.sorted[0] : 0));
    return Math.max(...spans) / 10 || 1;  // a noiseless image: a tenth of its range
  }
  const mid = sigmas.length >> 1;
  return sigmas.length % 2 ? sigmas[mid] : (sigmas[mid - 1] + sigmas[mid]) / 2;
}
