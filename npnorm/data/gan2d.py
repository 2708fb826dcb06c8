"""Two-dimensional distributions for GAN experiments (the WGAN-GP paper's toy sets), generated from a seed.

* :func:`make_ring` - a ring of 8 Gaussians (radius 2, std 0.05 by default);
* :func:`make_grid` - a 5x5 grid of Gaussians (spacing 1, centres in {-2, ..., 2}^2, std 0.05);
* :func:`make_swiss_roll_2d` - the 2-D swiss roll :math:`t(\\cos t, \\sin t)/7.5` plus noise, with
  :math:`t \\sim U(1.5\\pi, 4.5\\pi)` (the 2-D section of scikit-learn's ``make_swiss_roll``, divided by
  7.5 as in the WGAN-GP toy script).

Every function returns ``X`` float64 of shape ``(n_samples, 2)``; :func:`mixture_centres` gives the
modes and their std for the two mixtures, and :func:`make_gan_data` picks a set by name.

The WGAN-GP toy script uses std 0.02 on a ring of radius 2 (then divides by 1.414), std 0.05 on a grid
of spacing 2 (divided by 2.828); npnorm keeps the centres unscaled and uses std 0.05 for both, so
"within three standard deviations of a mode" is a radius of 0.15.
"""

from __future__ import annotations

import numpy as np

from .._checks import check_positive_int

__all__ = ["GAN_DATASETS", "make_ring", "make_grid", "make_swiss_roll_2d", "mixture_centres", "make_gan_data"]

#: The data sets by name.
GAN_DATASETS = ("ring", "grid", "swissroll")


def _check(n_samples: int, std: float, where: str) -> None:
    check_positive_int(n_samples, "n_samples", where)
    if not (np.isfinite(std) and std >= 0):
        raise ValueError(f"{where}: std must be a finite number >= 0, got {std!r}")


def mixture_centres(name: str, radius: float = 2.0, spacing: float = 1.0) -> np.ndarray:
    """The modes of ``"ring"`` (8 points on a circle, shape (8, 2)) or ``"grid"`` (shape (25, 2))."""
    if name == "ring":
        angles = 2 * np.pi * np.arange(8) / 8
        return radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    if name == "grid":
        ticks = spacing * np.arange(-2, 3, dtype=np.float64)
        return np.array([(a, b) for a in ticks for b in ticks])
    raise ValueError(f"mixture_centres: name must be 'ring' or 'grid', got {name!r}")


def make_ring(n_samples: int = 1000, radius: float = 2.0, std: float = 0.05, seed: int = 0) -> np.ndarray:
    """Equal mixture of 8 isotropic Gaussians of std ``std`` centred on a circle of radius ``radius``."""
    _check(n_samples, std, "make_ring")
    rng = np.random.default_rng(seed)
    centres = mixture_centres("ring", radius)
    return centres[rng.integers(0, 8, n_samples)] + std * rng.standard_normal((n_samples, 2))


def make_grid(n_samples: int = 1000, spacing: float = 1.0, std: float = 0.05, seed: int = 0) -> np.ndarray:
    """Equal mixture of 25 isotropic Gaussians of std ``std`` on the grid ``spacing * {-2..2}^2``."""
    _check(n_samples, std, "make_grid")
    rng = np.random.default_rng(seed)
    centres = mixture_centres("grid", spacing=spacing)
    return centres[rng.integers(0, 25, n_samples)] + std * rng.standard_normal((n_samples, 2))


def make_swiss_roll_2d(n_samples: int = 1000, noise: float = 0.25, scale: float = 1 / 7.5,
                       seed: int = 0) -> np.ndarray:
    """``scale * (t cos t + e1, t sin t + e2)`` with :math:`t \\sim U(1.5\\pi, 4.5\\pi)`, :math:`e \\sim N(0, \\text{noise}^2)`."""
    _check(n_samples, noise, "make_swiss_roll_2d")
    rng = np.random.default_rng(seed)
    t = 1.5 * np.pi * (1.0 + 2.0 * rng.random(n_samples))
    X = np.stack([t * np.cos(t), t * np.sin(t)], axis=1) + noise * rng.standard_normal((n_samples, 2))
    return scale * X


def make_gan_data(name: str, n_samples: int = 1000, seed: int = 0) -> np.ndarray:
    """The set ``name`` in :data:`GAN_DATASETS` with its default parameters."""
    makers = {"ring": make_ring, "grid": make_grid, "swissroll": make_swiss_roll_2d}
    if name not in makers:
        raise ValueError(f"make_gan_data: name must be one of {GAN_DATASETS}, got {name!r}")
    return makers[name](n_samples, seed=seed)
