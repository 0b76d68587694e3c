// The image viewer's DOM: display controls, drawing tools, the canvas stage and the status line.

import { LIMITS, STRETCHES } from "./stretch.js";

let viewerCount = 0;  // unique ids for aria references when a page holds several viewers

const LIMIT_LABELS = { zscale: "ZScale", minmax: "min–max" };
const DRAWING_KEYS = " Drawing: a adds a mark, n picks the next, arrows move it, Shift+arrows resize, Delete removes.";

function make(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key in node && !key.includes("-")) node[key] = value;
    else node.setAttribute(key, value);
  }
  node.append(...children);
  return node;
}

function select(cls, options, value) {
  return make("select", { class: cls }, ...optionElements(options, value));
}

function optionElements(options, value) {
  return options.map(([v, text]) => make("option", { value: v, selected: v === value }, text));
}

function field(label, control, cls = "") {
  return make("label", { class: `iv-field ${cls}`.trim() }, make("span", {}, label), control);
}

function button(cls, text, label, props = {}) {
  return make("button", { type: "button", class: cls, title: label, "aria-label": label, ...props }, text);
}

/** Build the viewer inside `container`; returns the elements the viewer talks to. */
export function buildViewerDom(container, tools, colourOf) {
  const id = `iv-${++viewerCount}`;
  const ui = {};
  ui.band = select("iv-band", [["colour", "Colour"]], "colour");
  ui.stretch = select("iv-stretch", Object.keys(STRETCHES).map((s) => [s, s]), "asinh");
  ui.limits = select("iv-limits", LIMITS.map((l) => [l, LIMIT_LABELS[l] || `${l}%`]), "zscale");
  ui.q = make("input", { type: "range", class: "iv-q", min: 1, max: 20, step: 0.5, value: 8 });
  ui.range = make("input", { type: "range", class: "iv-range", min: 1, max: 60, step: 1, value: 8 });
  ui.invert = button("iv-invert", "Invert", "Invert colours (i)", { "aria-pressed": "false" });
  ui.zoomOut = button("iv-zoom-out", "−", "Zoom out (−)");
  ui.zoomIn = button("iv-zoom-in", "+", "Zoom in (+)");
  ui.reset = button("iv-reset", "Reset", "Reset the view (0)");
  // On a narrow viewer the display settings fold away behind a toggle; the buttons used most stay in sight.
  ui.displayToggle = button("iv-display-toggle", "Display", "Show the display settings",
    { "aria-expanded": "false", "aria-controls": `${id}-display` });
  const settings = make("span", { class: "iv-display", id: `${id}-display` },
    field("Bands", ui.band),
    field("Stretch", ui.stretch, "iv-grey"),
    field("Limits", ui.limits, "iv-grey"),
    field("Softening Q", ui.q, "iv-colour"),
    field("Range ×σ", ui.range, "iv-colour"));
  const display = make("div", { class: "iv-toolbar", role: "toolbar", "aria-label": "Image display" },
    ui.displayToggle, settings, ui.invert, make("span", { class: "iv-zoom" }, ui.zoomOut, ui.zoomIn, ui.reset));

  ui.toolButtons = [];
  ui.count = make("span", { class: "iv-count", "aria-live": "polite" });
  ui.remove = button("iv-delete", "Delete", "Delete the selected mark (Delete)", { disabled: true });
  ui.toolHelp = make("p", { class: "iv-tool-help", id: `${id}-tool-help` });
  const drawing = [];
  if (tools.length) {
    const pan = button("iv-tool", "Pan", "Pan and select: drag moves the image", { dataset: { tool: "pan" } });
    ui.toolButtons.push(pan);
    for (const tool of tools) {
      const swatch = make("span", { class: `iv-swatch iv-swatch-${tool.type}`, "aria-hidden": "true" });
      const b = make("button", { type: "button", class: "iv-tool", dataset: { tool: String(tool.index) },
        title: tool.help || tool.label, "aria-describedby": `${id}-tool-help` }, swatch, tool.label);
      b.style.setProperty("--iv-colour", colourOf(tool.index));
      ui.toolButtons.push(b);
    }
    drawing.push(make("div", { class: "iv-tools", role: "toolbar", "aria-label": "Drawing tools" },
      ...ui.toolButtons, ui.remove, ui.count), ui.toolHelp);
  }

  ui.canvas = make("canvas", { class: "iv-canvas" });
  ui.stage = make("div", { class: "iv-stage", tabIndex: 0, role: "application", "aria-roledescription": "sky image",
    "aria-label": "Sky image", "aria-describedby": `${id}-keys` }, ui.canvas);
  ui.readout = make("span", { class: "iv-readout", "aria-hidden": "true" });
  ui.notice = make("span", { class: "iv-notice", role: "status" });
  const keys = make("p", { class: "iv-keys", id: `${id}-keys` },
    "Keys: + − zoom, arrows pan, 0 reset, i invert, s stretch.",
    tools.length ? DRAWING_KEYS : "");
  ui.root = make("div", { class: "iv", dataset: { state: "empty" } },
    display, ...drawing, ui.stage, make("div", { class: "iv-status" }, ui.readout, ui.notice), keys);
  container.replaceChildren(ui.root);
  return ui;
}

/** Offer "Colour" (3+ bands) and every band by name; keep the volunteer's choice when the new subject has it. */
export function setBandOptions(selectElement, bands, wanted) {
  const options = bands.length >= 3 ? [["colour", `Colour (${bands.slice(0, 3).join(", ")})`]] : [];
  bands.forEach((name, b) => options.push([String(b), name]));
  const values = options.map(([v]) => v);
  const value = values.includes(wanted) ? wanted : values[0];
  selectElement.replaceChildren(...optionElements(options, value));
  selectElement.value = value;
  return value;
}
