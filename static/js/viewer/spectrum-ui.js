// DOM of the spectrum viewer: toolbar, plot stage, redshift row and absorber panel, all labelled.

import { Z_MAX, Z_MIN } from "./lines.js";
import { SMOOTHINGS } from "./smooth.js";

export const LOG_NHI = Object.freeze({ min: 19, max: 23, step: 0.05, initial: 20.3 });
let uid = 0;

function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  node.append(...children);
  return node;
}

function labelledNumber(id, label, { min, max, step, rangeStep = step }, extra = {}) {
  return [
    h("label", { for: `${id}-range`, text: label }),
    h("input", { id: `${id}-range`, type: "range", min, max, step: rangeStep, ...extra }),
    h("input", { id: `${id}-number`, type: "number", min, max, step, "aria-label": `${label} (number)`, ...extra }),
  ];
}

function toolbar() {
  const select = h("select", { class: "sv-smooth" });
  for (const s of SMOOTHINGS) select.append(h("option", { value: s.id, text: s.label }));
  return h(
    "div",
    { class: "sv-bar", role: "toolbar", "aria-label": "Spectrum view" },
    h("button", { type: "button", class: "sv-zoom-in", "aria-label": "Zoom in", title: "Zoom in (+)", text: "+" }),
    h("button", { type: "button", class: "sv-zoom-out", "aria-label": "Zoom out", title: "Zoom out (−)", text: "−" }),
    h("button", { type: "button", class: "sv-reset", title: "Show the whole spectrum (Home)", text: "Reset" }),
    h("label", { class: "sv-field" }, "Smoothing ", select),
    h("label", { class: "sv-field" }, h("input", { type: "checkbox", class: "sv-lines", checked: "" }), " Line list"),
  );
}

function toolPicker(absorberTools) {
  if (!absorberTools.length) return null;
  const group = h("div", { class: "sv-tools", role: "group", "aria-label": "What a click on the plot does" });
  group.append(h("button", { type: "button", class: "sv-tool", "data-tool": "", "aria-pressed": "false" }, "Pan / zoom"));
  for (const tool of absorberTools) {
    const button = h("button", { type: "button", class: "sv-tool", "data-tool": String(tool.index) }, `Mark ${tool.label}`);
    button.setAttribute("aria-pressed", "false");
    if (tool.help) button.title = tool.help;
    group.append(button);
  }
  return group;
}

function redshiftRow(id, redshiftTools) {
  const row = h("div", { class: "sv-redshift" }, ...labelledNumber(`${id}-z`, "Redshift z", {
    min: Z_MIN,
    max: Z_MAX,
    step: 0.0001,
    rangeStep: 0.001,
  }));
  for (const tool of redshiftTools) {
    const box = h("input", { type: "checkbox", class: "sv-z-mark", "data-tool": String(tool.index) });
    const label = h("label", { class: "sv-field" }, box, ` ${tool.label}: use this z`);
    if (tool.help) label.title = tool.help;
    row.append(label);
  }
  return row;
}

function absorberPanel(id) {
  return h(
    "fieldset",
    { class: "sv-absorbers" },
    h("legend", { text: "Absorbers" }),
    h("ol", { class: "sv-mark-list", "aria-label": "Marked absorbers" }),
    h("p", { class: "sv-hint", text: "Click the centre of a trough to mark an absorber, then match the wings." }),
    h("div", { class: "sv-nhi" }, ...labelledNumber(`${id}-nhi`, "log N(HI) / cm⁻²", LOG_NHI, { disabled: "" })),
    h("button", { type: "button", class: "sv-delete", disabled: "", text: "Delete absorber (Del)" }),
  );
}

const KEYS_HELP =
  "Plot keys: ← → pan (Shift: one pixel), + − zoom, Home reset; the dashed cursor marks the centre: " +
  "Enter marks an absorber there, ↑ ↓ change log N(HI) of the selected one (Shift: 0.5), Delete removes it. " +
  "Drag to pan, wheel or pinch to zoom, drag along the axis (or Shift-drag) to zoom to a range, " +
  "drag the line names to change the redshift.";

/** Build the viewer's DOM inside `container`; returns the root and the elements the viewer talks to. */
export function buildViewerDom(container, tools) {
  const id = `sv${++uid}`;
  const absorberTools = tools.filter((t) => t.type === "absorber");
  const redshiftTools = tools.filter((t) => t.type === "redshift");
  const canvas = h("canvas", {
    class: "sv-canvas",
    tabindex: "0",
    role: "application",
    "aria-roledescription": "interactive spectrum",
    "aria-label": "Spectrum plot",
    "aria-describedby": `${id}-keys`,
    hidden: "",
  });
  const preview = h("img", { class: "sv-preview", alt: "" });
  const root = h(
    "div",
    { class: "sv" },
    toolbar(),
    toolPicker(absorberTools) ?? "",
    h("div", { class: "sv-stage" }, preview, canvas),
    h("p", { class: "sv-readout", "aria-hidden": "true" }),
    h("p", { class: "sv-notice", role: "status" }),
    h("p", { class: "sv-live sv-sr-only", "aria-live": "polite" }),
    redshiftRow(id, redshiftTools),
    absorberTools.length ? absorberPanel(id) : "",
    h("p", { class: "sv-keys", id: `${id}-keys`, text: KEYS_HELP }),
  );
  container.append(root);
  const q = (selector) => root.querySelector(selector);
  return {
    root,
    canvas,
    preview,
    stage: q(".sv-stage"),
    readout: q(".sv-readout"),
    notice: q(".sv-notice"),
    live: q(".sv-live"),
    smooth: q(".sv-smooth"),
    lines: q(".sv-lines"),
    zoomIn: q(".sv-zoom-in"),
    zoomOut: q(".sv-zoom-out"),
    reset: q(".sv-reset"),
    toolButtons: [...root.querySelectorAll(".sv-tool")],
    zRange: q(`#${id}-z-range`),
    zNumber: q(`#${id}-z-number`),
    zMarks: [...root.querySelectorAll(".sv-z-mark")],
    markList: q(".sv-mark-list"),
    nhiRange: q(`#${id}-nhi-range`),
    nhiNumber: q(`#${id}-nhi-number`),
    deleteButton: q(".sv-delete"),
  };
}
