// Marks in data coordinates (x = column, y = row, y upward): geometry, hit tests and painting.
// box: {tool, x, y, width, height} with (x, y) its lowest column and row; line: {tool, x1, y1, x2, y2}.

export const TOOL_COLOURS = ["#ffd166", "#06d6a0", "#ef476f", "#4cc9f0", "#f78c6b", "#c77dff", "#9ef01a", "#ff99c8"];

export const isBox = (mark) => "width" in mark;

const clamp = (v, lo, hi) => Math.min(hi, Math.max(lo, v));

export function clampPoint({ x, y }, width, height) {
  return { x: clamp(x, 0, width), y: clamp(y, 0, height) };
}

/** The box spanned by two opposite corners, whichever way round they are. */
export function boxBetween(tool, a, b) {
  const x = Math.min(a.x, b.x), y = Math.min(a.y, b.y);
  return { tool, x, y, width: Math.abs(a.x - b.x), height: Math.abs(a.y - b.y) };
}

/** A mark shifted by (dx, dy) data pixels, but never past the image's edges. */
export function moveMark(mark, dx, dy, width, height) {
  if (isBox(mark)) {
    return { ...mark, x: clamp(mark.x + dx, 0, width - mark.width), y: clamp(mark.y + dy, 0, height - mark.height) };
  }
  const sx = clamp(dx, -Math.min(mark.x1, mark.x2), width - Math.max(mark.x1, mark.x2));
  const sy = clamp(dy, -Math.min(mark.y1, mark.y2), height - Math.max(mark.y1, mark.y2));
  return { ...mark, x1: mark.x1 + sx, y1: mark.y1 + sy, x2: mark.x2 + sx, y2: mark.y2 + sy };
}

/** A mark from outside (an earlier classification) pulled inside the image. */
export function clampMark(mark, width, height) {
  if (isBox(mark)) {
    const a = clampPoint({ x: mark.x, y: mark.y }, width, height);
    const b = clampPoint({ x: mark.x + mark.width, y: mark.y + mark.height }, width, height);
    return boxBetween(mark.tool, a, b);
  }
  const p1 = clampPoint({ x: mark.x1, y: mark.y1 }, width, height);
  const p2 = clampPoint({ x: mark.x2, y: mark.y2 }, width, height);
  return { tool: mark.tool, x1: p1.x, y1: p1.y, x2: p2.x, y2: p2.y };
}

/** Grab points: the four corners of a box, the two ends of a line. */
export function handlesOf(mark) {
  if (isBox(mark)) {
    const { x, y, width, height } = mark;
    return [
      { name: "x0y0", x, y }, { name: "x1y0", x: x + width, y },
      { name: "x0y1", x, y: y + height }, { name: "x1y1", x: x + width, y: y + height },
    ];
  }
  return [{ name: "p1", x: mark.x1, y: mark.y1 }, { name: "p2", x: mark.x2, y: mark.y2 }];
}

/** The point that stays put while a handle is dragged: the opposite corner, or the other end. */
export function anchorOf(mark, handle) {
  if (isBox(mark)) {
    const [, column, , row] = handle;  // "x0y1": the dragged corner is at the low x and the high y
    return { x: column === "0" ? mark.x + mark.width : mark.x, y: row === "0" ? mark.y + mark.height : mark.y };
  }
  return handle === "p1" ? { x: mark.x2, y: mark.y2 } : { x: mark.x1, y: mark.y1 };
}

/** The mark reshaped so that its dragged handle sits at `point` and its anchor stays. */
export function reshapeMark(mark, handle, anchor, point) {
  if (isBox(mark)) return boxBetween(mark.tool, anchor, point);
  return handle === "p1"
    ? { tool: mark.tool, x1: point.x, y1: point.y, x2: anchor.x, y2: anchor.y }
    : { tool: mark.tool, x1: anchor.x, y1: anchor.y, x2: point.x, y2: point.y };
}

function distanceToSegment(p, a, b) {
  const dx = b.x - a.x, dy = b.y - a.y;
  const length2 = dx * dx + dy * dy;
  const t = length2 ? clamp(((p.x - a.x) * dx + (p.y - a.y) * dy) / length2, 0, 1) : 0;
  return Math.hypot(p.x - (a.x + t * dx), p.y - (a.y + t * dy));
}

function screenCorners(mark, view) {
  const a = view.toScreen(mark.x, mark.y + mark.height);  // top-left on screen
  const b = view.toScreen(mark.x + mark.width, mark.y);    // bottom-right on screen
  return { left: a.x, top: a.y, right: b.x, bottom: b.y };
}

/**
 * What is under the screen point p: {index, part} with part "handle" (+ handle name, selected mark only),
 * "edge" (a box's outline or a line) or "inside" (a box's interior); null when nothing is.
 * Later marks lie on top, so they win.
 */
export function hitTest(marks, p, view, tolerance, selected) {
  if (selected !== null && marks[selected]) {
    for (const h of handlesOf(marks[selected])) {
      const s = view.toScreen(h.x, h.y);
      if (Math.hypot(p.x - s.x, p.y - s.y) <= tolerance) return { index: selected, part: "handle", handle: h.name };
    }
  }
  let inside = null;
  for (let i = marks.length - 1; i >= 0; i--) {
    const mark = marks[i];
    if (isBox(mark)) {
      const r = screenCorners(mark, view);
      const within = (v, lo, hi) => v >= lo - tolerance && v <= hi + tolerance;
      if (!within(p.x, r.left, r.right) || !within(p.y, r.top, r.bottom)) continue;
      const nearEdge = Math.min(Math.abs(p.x - r.left), Math.abs(p.x - r.right),
        Math.abs(p.y - r.top), Math.abs(p.y - r.bottom)) <= tolerance;
      if (nearEdge) return { index: i, part: "edge" };
      if (inside === null) inside = { index: i, part: "inside" };
    } else if (distanceToSegment(p, view.toScreen(mark.x1, mark.y1), view.toScreen(mark.x2, mark.y2)) <= tolerance) {
      return { index: i, part: "edge" };
    }
  }
  return inside;
}

/** Size of a mark on screen in px (the smaller side of a box, the length of a line): tiny ones are slips. */
export function screenSize(mark, view) {
  if (isBox(mark)) return Math.min(mark.width, mark.height) * view.scale;
  return Math.hypot(mark.x2 - mark.x1, mark.y2 - mark.y1) * view.scale;
}

/** Paint the marks over the image, in screen space so they stay sharp and aligned at any zoom. */
export function paintMarks(ctx, marks, view, { colourOf, selected, handleRadius }) {
  marks.forEach((mark, i) => {
    const colour = colourOf(mark.tool);
    const chosen = i === selected;
    ctx.lineWidth = chosen ? 3 : 2;
    ctx.strokeStyle = "#000a";  // dark under-stroke: visible on bright and faint sky alike
    ctx.setLineDash([]);
    trace(ctx, mark, view);
    ctx.lineWidth += 2;
    ctx.stroke();
    ctx.lineWidth -= 2;
    ctx.strokeStyle = colour;
    if (chosen) ctx.setLineDash([8, 4]);
    ctx.stroke();
    ctx.setLineDash([]);
    if (!chosen) return;
    ctx.fillStyle = colour;
    for (const h of handlesOf(mark)) {
      const s = view.toScreen(h.x, h.y);
      ctx.beginPath();
      ctx.arc(s.x, s.y, handleRadius, 0, 2 * Math.PI);
      ctx.fill();
      ctx.lineWidth = 1.5;
      ctx.strokeStyle = "#000";
      ctx.stroke();
    }
  });
}

function trace(ctx, mark, view) {
  ctx.beginPath();
  if (isBox(mark)) {
    const r = screenCorners(mark, view);
    ctx.rect(r.left, r.top, r.right - r.left, r.bottom - r.top);
  } else {
    const a = view.toScreen(mark.x1, mark.y1), b = view.toScreen(mark.x2, mark.y2);
    ctx.moveTo(a.x, a.y);
    ctx.lineTo(b.x, b.y);
  }
}

/** Marks as the API takes them: plain objects, corners rounded to 0.01 pixel (so still inside), no zero sizes. */
export function exportMark(mark) {
  const r = (v) => Math.round(v * 100) / 100;
  if (isBox(mark)) {
    const x = r(mark.x), y = r(mark.y);
    return { tool: mark.tool, x, y, width: Math.max(0.01, r(r(mark.x + mark.width) - x)),
      height: Math.max(0.01, r(r(mark.y + mark.height) - y)) };
  }
  return { tool: mark.tool, x1: r(mark.x1), y1: r(mark.y1), x2: r(mark.x2), y2: r(mark.y2) };
}
