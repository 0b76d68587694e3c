"""A small server-drawn SVG of the posterior as votes arrived (no plotting library in the page)."""

from __future__ import annotations

WIDTH, HEIGHT, PAD = 360, 140, 20
COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22"]


def history_lines(history: list[list[float]], labels: list[str]) -> dict:
    """Polyline points per answer for ``history`` (row i: P(answer) after vote i+1), in SVG pixels."""
    n = len(history)
    if not n:
        return {"lines": [], "width": WIDTH, "height": HEIGHT, "n": 0}

    def x(i: int) -> float:
        return PAD + (WIDTH - 2 * PAD) * (i / (n - 1) if n > 1 else 0.5)

    def y(p: float) -> float:
        return HEIGHT - PAD - (HEIGHT - 2 * PAD) * p

    lines = []
    for a, label in enumerate(labels):
        points = " ".join(f"{x(i):.1f},{y(row[a]):.1f}" for i, row in enumerate(history))
        lines.append({"label": label, "points": points, "colour": COLOURS[a % len(COLOURS)], "last": history[-1][a]})
    return {"lines": lines, "width": WIDTH, "height": HEIGHT, "n": n, "pad": PAD,
            "top": PAD, "bottom": HEIGHT - PAD, "right": WIDTH - PAD}  # fmt: skip
