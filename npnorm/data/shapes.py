"""A procedurally generated image classification set: ten classes of shapes and textures.

``make_shapes(n_samples, size=16, seed=0)`` draws grey-scale images of shape ``(1, size, size)``:

====  ================  ====  ====================
0     disk              5     diagonal cross (x)
1     ring              6     triangle
2     filled square     7     horizontal stripes
3     square outline    8     vertical stripes
4     plus              9     checkerboard
====  ================  ====  ====================

Every image varies in position, size, rotation (up to +-20 degrees; the x is the plus turned by 45),
stripe period and phase, and - what makes the set hard for a network without normalization - in its
**photometry**: a random contrast spanning a factor of ~10, random polarity (dark on light or light on
dark), a random brightness offset, a linear background ramp and pixel noise. The pixels are therefore
neither zero-mean nor unit-scale, and differ in scale from image to image.

Deterministic: the same arguments give the same images (float32) and labels (int64).
"""

from __future__ import annotations

import numpy as np

from .._checks import check_positive_int

__all__ = ["SHAPE_CLASSES", "make_shapes", "train_test_split"]

SHAPE_CLASSES = ("disk", "ring", "square", "square outline", "plus", "x", "triangle",
                 "horizontal stripes", "vertical stripes", "checkerboard")


def _render(label: int, u: np.ndarray, v: np.ndarray, r: np.ndarray, period: np.ndarray, phase: np.ndarray) -> np.ndarray:
    """Intensity in [0, 1] of class ``label`` on rotated, centred coordinates ``u, v`` (shape (n, s, s))."""
    def soft(d):  # 1 inside (d < 0), 0 outside, one-pixel anti-aliased edge
        return np.clip(0.5 - d, 0.0, 1.0)

    d = np.hypot(u, v)
    cheb = np.maximum(np.abs(u), np.abs(v))
    arm = np.maximum(np.minimum(np.abs(u), np.abs(v)) - 0.9, np.maximum(np.abs(u), np.abs(v)) - r)
    if label == 0:
        return soft(d - r)
    if label == 1:
        return soft(np.abs(d - 0.8 * r) - 0.9)
    if label == 2:
        return soft(cheb - 0.8 * r)
    if label == 3:
        return soft(np.abs(cheb - 0.75 * r) - 0.7)
    if label in (4, 5):          # plus; the x is the plus with coordinates turned by 45 degrees
        return soft(arm)
    if label == 6:               # triangle (apex down on screen): three half-planes
        edge = np.maximum.reduce([-v - 0.5 * r, v + np.sqrt(3) * np.abs(u) - r])
        return soft(edge)
    wave = np.sin(2 * np.pi * v / period + phase) if label == 7 else (
        np.sin(2 * np.pi * u / period + phase) if label == 8 else
        np.sin(np.pi * u / period + phase) * np.sin(np.pi * v / period + phase))
    return np.clip(0.5 + 1.5 * wave, 0.0, 1.0)


def make_shapes(n_samples: int = 3000, size: int = 16, seed: int = 0, noise: float = 0.25,
                photometric: bool = True):
    """``(X, y)``: ``X`` float32 ``(n_samples, 1, size, size)``, ``y`` int64 in 0..9 (balanced, shuffled).

    ``noise`` is the std of the pixel noise relative to the shape's contrast; ``photometric=False``
    turns off the random contrast, polarity, offset and background ramp (a much easier set).
    """
    check_positive_int(n_samples, "n_samples", "make_shapes")
    check_positive_int(size, "size", "make_shapes")
    if size < 8:
        raise ValueError(f"make_shapes: size must be >= 8 pixels to draw the shapes, got {size}")
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n_samples) % 10).astype(np.int64)
    scale = size / 16.0
    grid = np.arange(size, dtype=np.float64) + 0.5
    X = np.empty((n_samples, 1, size, size), dtype=np.float32)
    for label in range(10):
        idx = np.flatnonzero(labels == label)
        n = idx.size
        if n == 0:
            continue
        cx, cy = (rng.uniform(-2.0, 2.0, (2, n)) * scale + size / 2)[:, :, None, None]
        r = (rng.uniform(3.5, 6.0, n) * scale)[:, None, None]
        theta = np.deg2rad(rng.uniform(-20, 20, n) + (45.0 if label == 5 else 0.0))[:, None, None]
        period = (rng.uniform(3.0, 5.0, n) * scale)[:, None, None]
        phase = rng.uniform(0, 2 * np.pi, n)[:, None, None]
        dx = grid[None, None, :] - cx
        dy = grid[None, :, None] - cy
        u = np.cos(theta) * dx + np.sin(theta) * dy
        v = -np.sin(theta) * dx + np.cos(theta) * dy
        img = _render(label, u, v, r, period, phase)
        img = img + noise * rng.standard_normal(img.shape)
        if photometric:
            contrast = np.exp(rng.uniform(np.log(0.3), np.log(3.0), n))[:, None, None]
            polarity = rng.choice([-1.0, 1.0], n)[:, None, None]
            offset = rng.uniform(-1.0, 2.0, n)[:, None, None]
            ramp = rng.normal(0, 0.03, (2, n))[:, :, None, None] / scale
            img = polarity * contrast * img + offset + ramp[0] * dx + ramp[1] * dy
        X[idx, 0] = img.astype(np.float32)
    return X, labels


def train_test_split(X: np.ndarray, y: np.ndarray, test_fraction: float = 0.25, seed: int = 0):
    """Shuffle and split: ``(X_train, y_train, X_test, y_test)``."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"train_test_split: test_fraction must be in (0, 1), got {test_fraction!r}")
    order = np.random.default_rng(seed).permutation(len(y))
    n_test = int(round(test_fraction * len(y)))
    test, train = order[:n_test], order[n_test:]
    return X[train], y[train], X[test], y[test]
