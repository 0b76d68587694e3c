"""Synthetic g, r, i fields with a known answer for the trail finder's tests: unit sky noise,
Gaussian-profile streaks, round and elongated Gaussian sources."""

import numpy as np

SKY = 10.0


def noise(seed: int, size: int) -> np.ndarray:
    """Three bands of unit sky noise on a flat sky of SKY."""
    return np.random.default_rng(seed).normal(0.0, 1.0, (3, size, size)).astype(np.float32) + SKY


def _grid(cube: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0 : cube.shape[-2], 0 : cube.shape[-1]] + 0.5  # pixel centres
    return yy, xx


def add_streak(cube, band, p, q, peak, sigma=1.8):
    """A Gaussian-profile streak from p to q (array-pixel coordinates) in one band."""
    yy, xx = _grid(cube)
    p, q = np.asarray(p, float), np.asarray(q, float)
    d = q - p
    t = np.clip(((xx - p[0]) * d[0] + (yy - p[1]) * d[1]) / (d @ d), 0, 1)
    dist = np.hypot(xx - (p[0] + t * d[0]), yy - (p[1] + t * d[1]))
    cube[band] += peak * np.exp(-(dist**2) / (2 * sigma**2))
    return cube


def add_ellipse(cube, x, y, peak, major, minor, angle=0.0):
    """An elongated Gaussian (an edge-on disk; major == minor: a round source) in every band."""
    yy, xx = _grid(cube)
    c, s = np.cos(angle), np.sin(angle)
    u, v = (xx - x) * c + (yy - y) * s, -(xx - x) * s + (yy - y) * c
    cube += peak * np.exp(-0.5 * ((u / major) ** 2 + (v / minor) ** 2))
    return cube


def segments(found: list[dict]) -> np.ndarray:
    """find_trails' segments as an (N, 4) array of x1, y1, x2, y2."""
    return np.array([[f["x1"], f["y1"], f["x2"], f["y2"]] for f in found]).reshape(-1, 4)
