"""Labelled 2-D point clouds drawn along four outlines: the data of the 2-D diffusion experiments.

``make_shapes_2d(n_samples, noise=0.05, seed=0)`` returns ``(X, y)``: ``X`` float64 ``(n, 2)``,
``y`` int64 in 0..3 (balanced, shuffled). Class 0 is a circle, 1 a square outline, 2 a plus sign and
3 a triangle outline, each about 2 units across, centred on the four corners of a square of side 3
(the whole set fits in about [-2.6, 2.6]^2, standard deviation about 1.6 per coordinate), with
isotropic Gaussian jitter of std ``noise``. Points are spread uniformly along each outline.
Deterministic: the same arguments give the same points.
"""

from __future__ import annotations

import numpy as np

from .._checks import check_positive_int

__all__ = ["SHAPE_2D_CLASSES", "make_shapes_2d"]

SHAPE_2D_CLASSES = ("circle", "square", "plus", "triangle")
_CENTRES = np.array([[-1.5, 1.5], [1.5, 1.5], [1.5, -1.5], [-1.5, -1.5]])


def _polyline(corners: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Points at arc-length fractions ``u`` in [0, 1) along the closed polygon ``corners``."""
    seg = np.roll(corners, -1, axis=0) - corners
    length = np.hypot(seg[:, 0], seg[:, 1])
    cum = np.concatenate([[0.0], np.cumsum(length)]) / length.sum()
    k = np.clip(np.searchsorted(cum, u, side="right") - 1, 0, len(corners) - 1)
    frac = (u - cum[k]) / (cum[k + 1] - cum[k])
    return corners[k] + frac[:, None] * seg[k]


def _outline(label: int, u: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if label == 0:                                     # circle of radius 1
        a = 2 * np.pi * u
        return np.stack([np.cos(a), np.sin(a)], axis=1)
    if label == 1:                                     # square outline, side 1.8
        return _polyline(np.array([[-0.9, -0.9], [0.9, -0.9], [0.9, 0.9], [-0.9, 0.9]]), u)
    if label == 2:                                     # plus: two bars of length 2
        bar = 2 * (2 * u % 1.0) - 1
        horiz = u < 0.5
        return np.stack([np.where(horiz, bar, 0.0), np.where(horiz, 0.0, bar)], axis=1)
    h = np.sqrt(3.0)                                   # triangle outline, side 2
    return _polyline(np.array([[-1.0, -h / 3], [1.0, -h / 3], [0.0, 2 * h / 3]]), u)


def make_shapes_2d(n_samples: int = 4000, noise: float = 0.05, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(X, y)``: ``n_samples`` points on the four labelled outlines (see the module docstring)."""
    n = check_positive_int(n_samples, "n_samples", "make_shapes_2d")
    if not noise >= 0:
        raise ValueError(f"make_shapes_2d: noise must be >= 0, got {noise!r}")
    rng = np.random.default_rng(seed)
    y = np.arange(n) % len(SHAPE_2D_CLASSES)
    rng.shuffle(y)
    X = np.empty((n, 2))
    for k in range(len(SHAPE_2D_CLASSES)):
        idx = np.flatnonzero(y == k)
        X[idx] = _outline(k, rng.random(idx.size), rng) + _CENTRES[k]
    X += noise * rng.standard_normal(X.shape)
    return X, y.astype(np.int64)
