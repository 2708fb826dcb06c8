"""Shared fixtures. Gradient checks are float64 and seeded, so every failure is reproducible."""

import os

import numpy as np
import pytest

os.environ.setdefault("MPLBACKEND", "Agg")


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
