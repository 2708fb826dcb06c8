"""Two-dimensional toy classification sets, generated from a seed (no downloads).

Every function returns ``(X, y)`` with ``X`` float64 of shape ``(n_samples, 2)`` (or ``n_dims``) and
``y`` int64 class labels, shuffled; the same seed gives the same data.
"""

from __future__ import annotations

import numpy as np

from .._checks import check_positive_int

__all__ = ["make_moons", "make_spirals", "make_gaussian_mixture"]


def _split_counts(n: int, k: int) -> list[int]:
    return [n // k + (1 if i < n % k else 0) for i in range(k)]


def _shuffle(X: np.ndarray, y: np.ndarray, rng: np.random.Generator):
    order = rng.permutation(len(y))
    return X[order], y[order]


def make_moons(n_samples: int = 400, noise: float = 0.1, seed: int = 0):
    """Two interleaving half circles (the classic "two moons"), with Gaussian noise of std ``noise``."""
    check_positive_int(n_samples, "n_samples", "make_moons")
    rng = np.random.default_rng(seed)
    n0, n1 = _split_counts(n_samples, 2)
    t0 = rng.uniform(0, np.pi, n0)
    t1 = rng.uniform(0, np.pi, n1)
    upper = np.stack([np.cos(t0), np.sin(t0)], axis=1)
    lower = np.stack([1.0 - np.cos(t1), 0.5 - np.sin(t1)], axis=1)
    X = np.concatenate([upper, lower]) + noise * rng.standard_normal((n_samples, 2))
    y = np.concatenate([np.zeros(n0, np.int64), np.ones(n1, np.int64)])
    return _shuffle(X, y, rng)


def make_spirals(n_samples: int = 600, n_classes: int = 3, noise: float = 0.2, turns: float = 1.0, seed: int = 0):
    """``n_classes`` interleaved spiral arms. Point :math:`t \\in [0, 1]` of arm :math:`k` sits at radius
    :math:`t` and angle :math:`2\\pi(\\text{turns}\\,t + k/K)` plus noise of std ``noise`` (in radians)."""
    check_positive_int(n_samples, "n_samples", "make_spirals")
    check_positive_int(n_classes, "n_classes", "make_spirals")
    rng = np.random.default_rng(seed)
    Xs, ys = [], []
    for k, n in enumerate(_split_counts(n_samples, n_classes)):
        t = rng.uniform(0.05, 1.0, n)
        angle = 2 * np.pi * (turns * t + k / n_classes) + noise * rng.standard_normal(n)
        Xs.append(np.stack([t * np.cos(angle), t * np.sin(angle)], axis=1))
        ys.append(np.full(n, k, np.int64))
    return _shuffle(np.concatenate(Xs), np.concatenate(ys), rng)


def make_gaussian_mixture(n_samples: int = 600, n_classes: int = 4, n_dims: int = 2, spread: float = 3.0,
                          std: float = 1.0, seed: int = 0):
    """One isotropic Gaussian blob (std ``std``) per class, centres drawn from :math:`N(0, \\text{spread}^2)`."""
    check_positive_int(n_samples, "n_samples", "make_gaussian_mixture")
    check_positive_int(n_classes, "n_classes", "make_gaussian_mixture")
    check_positive_int(n_dims, "n_dims", "make_gaussian_mixture")
    rng = np.random.default_rng(seed)
    centres = spread * rng.standard_normal((n_classes, n_dims))
    Xs, ys = [], []
    for k, n in enumerate(_split_counts(n_samples, n_classes)):
        Xs.append(centres[k] + std * rng.standard_normal((n, n_dims)))
        ys.append(np.full(n, k, np.int64))
    return _shuffle(np.concatenate(Xs), np.concatenate(ys), rng)
