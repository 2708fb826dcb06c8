"""Shared fixtures. Gradient checks are float64 and seeded, so every failure is reproducible."""

import os
from pathlib import Path

# Before numba is imported (by npnorm): compiled kernels go to a project-local cache folder
# (the Makefile sets the same), so a second test run loads them instead of compiling again.
os.environ.setdefault("NUMBA_CACHE_DIR", str(Path(__file__).resolve().parents[1] / ".numba_cache"))
# The tests multiply small matrices; on a shared 2-core machine a multi-threaded BLAS spends more time
# synchronizing its threads than computing (measured: the experiment tests run about 2x faster in wall
# time, with 4x less CPU, on one thread). Must be set before NumPy is imported; an explicit setting wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def pytest_addoption(parser: pytest.Parser) -> None:
    # Exercise task tests (tests/exercises/): which implementation to test. CI: the solutions.
    group = parser.getgroup("npnorm exercises")
    group.addoption("--impl", choices=("solutions", "exercises"), default="solutions",
                    help="run the exercise task tests against solutions/ (default) or exercises/")
    group.addoption("--exercises-dir", default=None, metavar="PATH",
                    help="with --impl=exercises: the exercises directory to test (default: exercises/)")
