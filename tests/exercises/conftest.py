"""Fixtures of the exercise task tests: the implementation under test is chosen by ``--impl``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from npnorm.exercises import EXERCISES_DIR, SOLUTIONS_DIR, load_module


@pytest.fixture(scope="session")
def impl_dir(request: pytest.FixtureRequest) -> Path:
    """The directory of chapter modules under test: solutions/ (default) or the learner's exercises/."""
    if request.config.getoption("--impl") == "solutions":
        return SOLUTIONS_DIR
    custom = request.config.getoption("--exercises-dir")
    return Path(custom).resolve() if custom else EXERCISES_DIR


@pytest.fixture(scope="session")
def load(impl_dir: Path) -> Callable[[str], ModuleType]:
    """``load("ch2_batchnorm")`` imports that chapter module from the implementation under test."""
    return lambda name: load_module(impl_dir / f"{name}.py")


@pytest.fixture(scope="session")
def load_solution() -> Callable[[str], ModuleType]:
    """Always the reference solutions (for the mutation tests, whatever --impl says)."""
    return lambda name: load_module(SOLUTIONS_DIR / f"{name}.py")
