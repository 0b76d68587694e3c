// Input for the spectrum viewer: pointer gestures (pan, pinch, range zoom, marking, dragging marks and the
// line list), wheel, plot keys and the form controls; plus syncPanel, which mirrors state into the controls.

import { draggedRedshift } from "./lines.js";
import { LOG_NHI } from "./spectrum-ui.js";
import { LYMAN_ALPHA } from "./voigt.js";

const CLICK_SLOP_PX = 5;
const ZOOM_STEP = 1.5;
const PAN_FRACTION = 0.1;
const WHEEL_RATE = 0.002; // zoom factor e^(rate * deltaY in px)

function local(viewer, event) {
  const rect = viewer.ui.canvas.getBoundingClientRect();
  return { px: event.clientX - rect.left, py: event.clientY - rect.top };
}

/** Absorber mark under the pointer (its Lyα marker within reach of a finger or mouse), or -1. */
function absorberAt(viewer, px, pointerType) {
  const reach = pointerType === "mouse" ? 8 : 16;
  let best = -1;
  let bestDistance = reach;
  viewer.marks.forEach((mark, i) => {
    if (mark.log_nhi === undefined) return;
    const distance = Math.abs(viewer.layout.x(LYMAN_ALPHA.rest * (1 + mark.z)) - px);
    if (distance <= bestDistance) [best, bestDistance] = [i, distance];
  });
  return best;
}

function region(viewer, px, py, event) {
  const { box } = viewer.layout;
  if (py < box.top && viewer.ui.lines.checked) return "lines";
  if (py > box.top + box.height || event.shiftKey) return "range";
  return absorberAt(viewer, px, event.pointerType) >= 0 ? "mark" : "plot";
}

function startPinch(viewer) {
  const [a, b] = [...viewer.pointers.values()];
  const { box } = viewer.layout;
  viewer.gesture = {
    kind: "pinch",
    distance: Math.max(Math.abs(a.px - b.px), 20),
    centre: viewer.layout.x.invert((a.px + b.px) / 2),
    span: viewer.view.hi - viewer.view.lo,
    box,
  };
}

function movePinch(viewer, g) {
  const [a, b] = [...viewer.pointers.values()];
  const span = (g.span * g.distance) / Math.max(Math.abs(a.px - b.px), 20);
  const fraction = ((a.px + b.px) / 2 - g.box.left) / g.box.width;
  const lo = g.centre - fraction * span; // the wavelength first between the fingers stays between them
  viewer.setView(lo, lo + span);
}

function onPointerDown(viewer, event) {
  if (!viewer.data || !viewer.layout || (event.pointerType === "mouse" && event.button !== 0)) return;
  event.preventDefault();
  viewer.ui.canvas.focus({ preventScroll: true });
  viewer.keyboardCursor = false;
  viewer.ui.canvas.setPointerCapture(event.pointerId);
  const { px, py } = local(viewer, event);
  viewer.pointers.set(event.pointerId, { px, py });
  if (viewer.pointers.size === 2) return startPinch(viewer);
  if (viewer.pointers.size > 2) return;
  const x = viewer.layout.x;
  const kind = region(viewer, px, py, event);
  const base = { kind, startPx: px, moved: false };
  if (kind === "lines") viewer.gesture = { ...base, from: x.invert(px), zStart: viewer.z };
  else if (kind === "range") viewer.gesture = { ...base, from: x.invert(px), to: x.invert(px) };
  else if (kind === "mark") {
    viewer.gesture = { ...base, index: absorberAt(viewer, px, event.pointerType) };
    viewer.select(viewer.gesture.index);
  } else {
    const perPx = (viewer.view.hi - viewer.view.lo) / viewer.layout.box.width;
    viewer.gesture = { ...base, view: { ...viewer.view }, perPx };
  }
}

function onPointerMove(viewer, event) {
  if (!viewer.data || !viewer.layout) return;
  const { px, py } = local(viewer, event);
  if (viewer.pointers.has(event.pointerId)) movePointer(viewer, event.pointerId, px, py);
  showReadout(viewer, px, py, event);
}

function movePointer(viewer, pointerId, px, py) {
  viewer.pointers.set(pointerId, { px, py });
  const g = viewer.gesture;
  if (!g) return;
  if (g.kind === "pinch") return movePinch(viewer, g);
  if (Math.abs(px - g.startPx) > CLICK_SLOP_PX) g.moved = true;
  if (!g.moved) return;
  const lambda = viewer.layout.x.invert(px);
  if (g.kind === "plot") {
    const shift = (px - g.startPx) * g.perPx; // a drag on the plot pans it
    viewer.setView(g.view.lo - shift, g.view.hi - shift);
  } else if (g.kind === "lines") viewer.setRedshift(draggedRedshift(g.zStart, g.from, lambda));
  else if (g.kind === "range") {
    g.to = lambda;
    viewer.requestDraw();
  } else if (g.kind === "mark") {
    const { lo, hi } = viewer.fullView;
    viewer.marks[g.index].z = Math.min(Math.max(lambda, lo), hi) / LYMAN_ALPHA.rest - 1;
    viewer.refresh();
  }
}

function onPointerUp(viewer, event) {
  if (!viewer.pointers.delete(event.pointerId)) return;
  const g = viewer.gesture;
  if (viewer.pointers.size > 0 || !g) {
    if (g?.kind === "pinch") viewer.gesture = { kind: "done" }; // lifting one finger ends the pinch
    return;
  }
  viewer.gesture = null;
  const { px } = local(viewer, event);
  if (g.kind === "plot" && !g.moved) {
    if (viewer.activeTool !== null) viewer.addAbsorber(viewer.layout.x.invert(px));
    else if (viewer.selected >= 0) viewer.select(-1);
  } else if (g.kind === "mark" && g.moved) viewer.changed();
  else if (g.kind === "lines" && g.moved) viewer.redshiftChosen(viewer.z);
  else if (g.kind === "range" && g.moved) viewer.setView(Math.min(g.from, g.to), Math.max(g.from, g.to));
  viewer.requestDraw();
}

function onPointerCancel(viewer, event) {
  viewer.pointers.delete(event.pointerId);
  if (viewer.gesture?.kind === "range") viewer.requestDraw();
  viewer.gesture = null;
}

function showReadout(viewer, px, py, event) {
  const { box, x } = viewer.layout;
  const inside = px >= box.left && px <= box.left + box.width;
  const kind = inside ? region(viewer, px, py, event) : "";
  const cursors = { lines: "ew-resize", mark: "ew-resize", range: "col-resize" };
  viewer.ui.canvas.style.cursor = cursors[kind] ?? (viewer.activeTool !== null ? "crosshair" : "grab");
  if (!inside) return;
  const lambda = x.invert(px);
  viewer.ui.readout.textContent =
    `λ ${lambda.toFixed(1)} Å · rest ${(lambda / (1 + viewer.z)).toFixed(1)} Å at z = ${viewer.z.toFixed(4)}` +
    ` · as Lyα: z = ${(lambda / LYMAN_ALPHA.rest - 1).toFixed(4)}`;
}

function onWheel(viewer, event) {
  if (!viewer.data || !viewer.layout) return;
  event.preventDefault();
  const pixels = event.deltaMode === 1 ? event.deltaY * 16 : event.deltaY;
  viewer.zoomAt(viewer.layout.x.invert(local(viewer, event).px), Math.exp(pixels * WHEEL_RATE));
}

/** Keys on the focused plot. Unhandled keys (digits, Backspace, Escape, ...) go on to the page. */
function onPlotKey(viewer, event) {
  if (!viewer.data || event.altKey || event.ctrlKey || event.metaKey) return;
  const span = viewer.view.hi - viewer.view.lo;
  const mark = viewer.marks[viewer.selected];
  const direction = { ArrowLeft: -1, ArrowRight: 1, ArrowDown: -1, ArrowUp: 1 }[event.key];
  switch (event.key) {
    case "ArrowLeft":
    case "ArrowRight":
      viewer.pan(direction * (event.shiftKey ? viewer.pixelStep() : PAN_FRACTION * span));
      break;
    case "ArrowUp":
    case "ArrowDown":
      if (mark?.log_nhi === undefined) return;
      viewer.setLogN(mark.log_nhi + direction * (event.shiftKey ? 0.5 : 0.05));
      break;
    case "+":
    case "=":
      viewer.zoomCentre(1 / ZOOM_STEP);
      break;
    case "-":
    case "_":
      viewer.zoomCentre(ZOOM_STEP);
      break;
    case "Home":
      viewer.resetView();
      break;
    case "Enter": // only after keyboard navigation: a mouse user's Enter is the page's "Done"
      if (!viewer.keyboardCursor || viewer.activeTool === null) return;
      viewer.addAbsorber(viewer.cursorWave());
      break;
    case "Delete":
      if (viewer.selected < 0) return;
      viewer.deleteSelected();
      break;
    default:
      return;
  }
  event.preventDefault();
  event.stopPropagation();
  viewer.keyboardCursor = true;
  viewer.requestDraw();
}

/** Typing in the viewer's own inputs must not trigger the page's hotkeys (digits, Backspace, Enter). */
function keepOwnKeys(event) {
  const target = event.target;
  if (target.matches("input[type=number], input[type=range], select")) {
    if (event.key !== "Escape" && event.key !== "Tab") event.stopPropagation();
  } else if (target.matches("button, input[type=checkbox]") && (event.key === "Enter" || event.key === " ")) {
    event.stopPropagation();
  }
}

function listenToControls(viewer) {
  const ui = viewer.ui;
  ui.zoomIn.addEventListener("click", () => viewer.zoomCentre(1 / ZOOM_STEP));
  ui.zoomOut.addEventListener("click", () => viewer.zoomCentre(ZOOM_STEP));
  ui.reset.addEventListener("click", () => viewer.resetView());
  ui.lines.addEventListener("change", () => viewer.requestDraw());
  ui.smooth.addEventListener("change", () => {
    viewer.smoothing = ui.smooth.value;
    if (viewer.data) viewer.applySmoothing();
    viewer.requestDraw();
  });
  for (const button of ui.toolButtons) {
    button.addEventListener("click", () => {
      viewer.activeTool = button.dataset.tool === "" ? null : Number(button.dataset.tool);
      viewer.syncControls();
    });
  }
  for (const input of [ui.zRange, ui.zNumber]) {
    input.addEventListener("input", () => {
      const z = Number(input.value);
      if (input.value !== "" && Number.isFinite(z)) viewer.redshiftChosen(z, input);
    });
  }
  ui.zNumber.addEventListener("change", () => viewer.setRedshift(viewer.z));
  for (const box of ui.zMarks) {
    box.addEventListener("change", () => viewer.toggleRedshiftMark(Number(box.dataset.tool), box.checked));
  }
  if (!ui.markList) return;
  ui.markList.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-index]");
    if (!button) return;
    viewer.select(Number(button.dataset.index));
    if (button.classList.contains("sv-mark-delete")) viewer.deleteSelected();
  });
  for (const input of [ui.nhiRange, ui.nhiNumber]) {
    input.addEventListener("input", () => input.value !== "" && viewer.setLogN(Number(input.value)));
  }
  ui.nhiNumber.addEventListener("change", () => viewer.syncControls());
  ui.deleteButton.addEventListener("click", () => viewer.deleteSelected());
}

export function listenToViewer(viewer) {
  const canvas = viewer.ui.canvas;
  canvas.addEventListener("pointerdown", (e) => onPointerDown(viewer, e));
  canvas.addEventListener("pointermove", (e) => onPointerMove(viewer, e));
  canvas.addEventListener("pointerup", (e) => onPointerUp(viewer, e));
  canvas.addEventListener("pointercancel", (e) => onPointerCancel(viewer, e));
  canvas.addEventListener("pointerleave", () => (viewer.ui.readout.textContent = ""));
  canvas.addEventListener("wheel", (e) => onWheel(viewer, e), { passive: false });
  canvas.addEventListener("keydown", (e) => onPlotKey(viewer, e));
  canvas.addEventListener("focus", () => {
    viewer.keyboardCursor = canvas.matches(":focus-visible");
    viewer.requestDraw();
  });
  canvas.addEventListener("blur", () => viewer.requestDraw());
  viewer.ui.root.addEventListener("keydown", keepOwnKeys);
  listenToControls(viewer);
}

function markItem(viewer, mark, i) {
  const n = viewer.absorberNumber(i);
  const label = viewer.tools.get(mark.tool)?.label ?? "Absorber";
  const select = document.createElement("button");
  select.type = "button";
  select.className = "sv-mark";
  select.dataset.index = String(i);
  select.setAttribute("aria-pressed", String(i === viewer.selected));
  select.textContent = `${n}. ${label}: z = ${mark.z.toFixed(4)}, log N = ${mark.log_nhi.toFixed(2)}`;
  const remove = document.createElement("button");
  remove.type = "button";
  remove.className = "sv-mark-delete";
  remove.dataset.index = String(i);
  remove.setAttribute("aria-label", `Delete absorber ${n}`);
  remove.textContent = "×";
  const item = document.createElement("li");
  item.append(select, remove);
  return item;
}

/** Mirror the viewer's state into its controls (keeping focus where the volunteer is). */
export function syncPanel(viewer) {
  const ui = viewer.ui;
  const ready = Boolean(viewer.data);
  for (const control of [ui.zoomIn, ui.zoomOut, ui.reset, ui.smooth, ui.lines, ui.zRange, ui.zNumber, ...ui.zMarks]) {
    control.disabled = !ready;
  }
  for (const button of ui.toolButtons) {
    button.disabled = !ready;
    const tool = button.dataset.tool === "" ? null : Number(button.dataset.tool);
    button.setAttribute("aria-pressed", String(tool === viewer.activeTool));
  }
  for (const box of ui.zMarks) box.checked = viewer.marks.some((m) => m.tool === Number(box.dataset.tool));
  if (!ui.markList) return;
  const focused = ui.markList.contains(document.activeElement) ? document.activeElement : null;
  const items = viewer.marks.map((m, i) => (m.log_nhi === undefined ? null : markItem(viewer, m, i))).filter(Boolean);
  ui.markList.replaceChildren(...items);
  if (focused) {
    const again = ui.markList.querySelector(`.${focused.className}[data-index="${focused.dataset.index}"]`);
    (again ?? ui.markList.querySelector("button") ?? ui.canvas).focus();
  }
  const mark = viewer.marks[viewer.selected];
  const editable = mark?.log_nhi !== undefined;
  ui.nhiRange.disabled = ui.nhiNumber.disabled = ui.deleteButton.disabled = !editable;
  ui.nhiRange.value = String(editable ? mark.log_nhi : LOG_NHI.initial);
  if (!editable) ui.nhiNumber.value = "";
  else if (document.activeElement !== ui.nhiNumber) ui.nhiNumber.value = mark.log_nhi.toFixed(2);
  ui.root.querySelector(".sv-hint").hidden = items.length > 0;
}
