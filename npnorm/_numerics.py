"""Numerically stable elementary functions that several families share.

Infrastructure: imports nothing from npnorm.
"""

from __future__ import annotations

import numpy as np

__all__ = ["sigmoid"]


def sigmoid(z: np.ndarray) -> np.ndarray:
    r"""The logistic function :math:`1 / (1 + e^{-z})`, elementwise, float64 for float64 input.

    Computed from :math:`e^{-|z|}`, which never overflows: for :math:`z \ge 0` as
    :math:`1 / (1 + e^{-z})`, for :math:`z < 0` as :math:`e^{z} / (1 + e^{z})`. The textbook form
    overflows (with a RuntimeWarning) for :math:`z < -709` in float64, although the value is just
    0. NaN stays NaN."""
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
