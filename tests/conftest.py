"""Shared fixtures. Gradient checks are float64 and seeded, so every failure is reproducible."""

import os

import numpy as np
import pytest

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
