// Pointer gestures on the image viewer's stage (mouse, pen and touch alike, through Pointer Events):
// drag pans or draws (by mode), marks are selected by tap, moved by drag and reshaped by their handles,
// wheel and two-finger pinch zoom about the pointer.

import { anchorOf, boxBetween, clampPoint, hitTest, moveMark, reshapeMark, screenSize } from "./draw.js";

const CLICK_SLOP = 4;       // px a press may wander and still count as a tap
const MIN_MARK_SIZE = 3;    // px: anything smaller was a slip, not a mark
const TOLERANCE = { mouse: 8, pen: 12, touch: 22 };  // px around marks and handles that still hits them

export class Gestures {
  constructor(viewer) {
    this.viewer = viewer;
    this.pointers = new Map();  // pointerId -> {x, y} in stage px
    this.gesture = null;
    const stage = viewer.ui.stage;
    this.handlers = {
      pointerdown: (e) => this.down(e),
      pointermove: (e) => this.move(e),
      pointerup: (e) => this.up(e, false),
      pointercancel: (e) => this.up(e, true),
      pointerleave: () => viewer.showReadout(null),
      wheel: (e) => this.wheel(e),
    };
    for (const [type, handler] of Object.entries(this.handlers)) {
      stage.addEventListener(type, handler, { passive: false });  // not passive: wheel and touch must not scroll
    }
  }

  detach() {
    const stage = this.viewer.ui.stage;
    for (const [type, handler] of Object.entries(this.handlers)) stage.removeEventListener(type, handler);
  }

  local(e) {
    const box = this.viewer.ui.stage.getBoundingClientRect();
    return { x: e.clientX - box.left, y: e.clientY - box.top };
  }

  dataPoint(p) {
    const { view } = this.viewer;
    return clampPoint(view.toData(p.x, p.y), view.width, view.height);
  }

  down(e) {
    const middle = e.pointerType === "mouse" && e.button === 1;  // a middle-button drag always pans
    if (e.pointerType === "mouse" && e.button !== 0 && !middle) return;
    e.preventDefault();
    this.viewer.ui.stage.focus({ preventScroll: true });
    this.viewer.ui.stage.setPointerCapture(e.pointerId);
    const p = this.local(e);
    this.pointers.set(e.pointerId, p);
    if (this.pointers.size === 2) return this.startPinch();
    if (this.pointers.size > 2) return;
    const tolerance = TOLERANCE[e.pointerType] ?? TOLERANCE.mouse;
    this.gesture = middle ? { kind: "pan", last: p, tapped: null } : this.choose(p, tolerance);
    this.gesture.origin = p;
    this.gesture.moved = false;
  }

  /** Decide what a one-pointer press does, from what lies under it and the active tool. */
  choose(p, tolerance) {
    const { viewer } = this;
    const hit = hitTest(viewer.marks, p, viewer.view, tolerance, viewer.selected);
    const tool = viewer.drawingTool();
    if (hit?.part === "handle") {
      const mark = viewer.marks[hit.index];
      const anchor = anchorOf(mark, hit.handle);
      return { kind: "reshape", index: hit.index, handle: hit.handle, anchor, original: mark };
    }
    // A box's interior is grabbed when it is selected or in pan mode; otherwise drawing starts there (nested objects).
    if (hit && (hit.part === "edge" || hit.index === viewer.selected || tool === null)) {
      viewer.select(hit.index);
      return { kind: "move", index: hit.index, start: this.dataPoint(p), original: viewer.marks[hit.index] };
    }
    if (tool !== null) return { kind: "draw", tool, start: this.dataPoint(p), tapped: hit ? hit.index : null };
    return { kind: "pan", last: p, tapped: null };
  }

  startPinch() {
    this.abandon();
    const [a, b] = [...this.pointers.values()];
    this.gesture = { kind: "pinch", distance: Math.hypot(a.x - b.x, a.y - b.y), centre: midpoint(a, b) };
  }

  move(e) {
    const p = this.local(e);
    if (!this.pointers.has(e.pointerId)) {
      if (e.pointerType === "mouse") this.viewer.showReadout(p);
      return;
    }
    this.pointers.set(e.pointerId, p);
    const g = this.gesture;
    if (!g) return;
    const { viewer } = this;
    if (g.kind === "pinch") return this.pinch();
    if (!g.moved && Math.hypot(p.x - g.origin.x, p.y - g.origin.y) < CLICK_SLOP) return;
    g.moved = true;
    if (g.kind === "pan") {
      viewer.view.panBy(p.x - g.last.x, p.y - g.last.y);
      g.last = p;
    } else if (g.kind === "draw") {
      viewer.draft = draftMark(g.tool, g.start, this.dataPoint(p));
    } else if (g.kind === "move") {
      const q = this.dataPoint(p);
      const { width, height } = viewer.view;
      viewer.marks[g.index] = moveMark(g.original, q.x - g.start.x, q.y - g.start.y, width, height);
    } else if (g.kind === "reshape") {
      viewer.marks[g.index] = reshapeMark(g.original, g.handle, g.anchor, this.dataPoint(p));
    }
    if (e.pointerType === "mouse") viewer.showReadout(p);
    viewer.requestDraw();
  }

  pinch() {
    const [a, b] = [...this.pointers.values()];
    const g = this.gesture;
    const distance = Math.hypot(a.x - b.x, a.y - b.y);
    const centre = midpoint(a, b);
    const { view } = this.viewer;
    view.panBy(centre.x - g.centre.x, centre.y - g.centre.y);
    if (g.distance > 0 && distance > 0) view.zoomAt(distance / g.distance, centre.x, centre.y);
    Object.assign(g, { distance, centre });
    this.viewer.requestDraw();
  }

  up(e, cancelled) {
    if (!this.pointers.delete(e.pointerId)) return;
    const g = this.gesture;
    if (!g) return;
    if (g.kind === "pinch") {
      if (this.pointers.size < 2) this.gesture = null;  // the finger left behind does nothing until lifted
      return;
    }
    this.gesture = null;
    if (cancelled) return this.restore(g);
    this.finish(g);
  }

  finish(g) {
    const { viewer } = this;
    if (g.kind === "draw") {
      const draft = viewer.draft;
      viewer.draft = null;
      if (draft && screenSize(draft, viewer.view) >= MIN_MARK_SIZE) viewer.addMark(draft);
      else viewer.select(g.tapped);
    } else if (g.kind === "pan") {
      if (!g.moved) viewer.select(null);
    } else if (g.moved) {
      if (screenSize(viewer.marks[g.index], viewer.view) < 1) viewer.marks[g.index] = g.original;  // squashed flat
      viewer.marksChanged();
    }
    viewer.requestDraw();
  }

  /** Undo whatever the gesture in progress did (a second finger arrived, or the browser took the pointer). */
  abandon() {
    if (this.gesture) this.restore(this.gesture);
    this.gesture = null;
  }

  restore(g) {
    const { viewer } = this;
    viewer.draft = null;
    if (g.kind === "move" || g.kind === "reshape") viewer.marks[g.index] = g.original;
    viewer.requestDraw();
  }

  wheel(e) {
    e.preventDefault();
    const p = this.local(e);
    const steps = e.deltaMode === 1 ? e.deltaY / 3 : e.deltaY / 100;  // lines or pixels -> notches
    this.viewer.view.zoomAt(Math.pow(1.25, -steps), p.x, p.y);
    this.viewer.requestDraw();
  }
}

function midpoint(a, b) {
  return { x: (a.x + b.x) / 2, y: (a.y + b.y) / 2 };
}

function draftMark(tool, start, end) {
  if (tool.type === "box") return boxBetween(tool.index, start, end);
  return { tool: tool.index, x1: start.x, y1: start.y, x2: end.x, y2: end.y };
}
