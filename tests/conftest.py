"""Shared fixtures. Gradient checks are float64 and seeded, so every failure is reproducible."""

import os

# The tests multiply small matrices; on a shared 2-core machine a multi-threaded BLAS spends more time
# synchronizing its threads than computing (measured: the experiment tests run about 2x faster in wall
# time, with 4x less CPU, on one thread). Must be set before NumPy is imported; an explicit setting wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pytest

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
