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


# -- naming a catalogued mistake ------------------------------------------------------------------

def _implementation_module(item: pytest.Item) -> ModuleType | None:
    """The chapter module a task test runs (the value of its fixture that loaded it)."""
    for value in getattr(item, "funcargs", {}).values():
        if isinstance(value, ModuleType) and value.__name__.startswith("_npnorm_task_"):
            return value
    return None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    """Around every task test: record the calls of the functions the task's catalogued mistakes are made
    in; when the test fails, name each catalogued mistake that reproduces the learner's results."""
    from task_helpers import Recorder, TaskFailure, mistake_message, recognize

    marker = item.get_closest_marker("task")
    task = marker.args[0] if marker and marker.args else None
    mistakes = [m for m in getattr(getattr(item, "module", None), "MISTAKES", ()) if m.task == task]
    module = _implementation_module(item) if mistakes else None
    if module is None:
        return (yield)
    with Recorder(module, sorted({m.function for m in mistakes})) as recorder:
        try:
            return (yield)
        except NotImplementedError:
            raise
        except Exception as exc:
            found = recognize(mistakes, recorder)
            if not found:
                raise
            if isinstance(exc, TaskFailure):
                raise TaskFailure(f"{mistake_message(found)}\n\nThe check's own report:\n{exc}") from None
            exc.add_note(mistake_message(found))
            raise
