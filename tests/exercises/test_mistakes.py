"""Every catalogued mistake is recognized, by name, and no self-check passes it.

Each chapter's task test module (``tests/exercises/test_ch<N>_*.py``, including the chapters other
contributors add) defines ``MISTAKES: list[Mistake]``. For every one of them, generically:

* the mistake is planted into a copy of ``solutions/<chapter>.py`` (the task's function replaced by
  the catalogued wrong implementation), and ``npnorm.check`` is run on that copy for the task: the
  task must FAIL and the report must carry *that* mistake's message - and no other mistake of the
  same task, so each message is earned;
* the chapter's numeric self-check for the task (``self_check_<N>_<k>``) must not say "matches".

A new entry in any catalogue is covered without touching this file.
"""

from __future__ import annotations

import importlib
import io
from pathlib import Path

import pytest
from task_helpers import Mistake

from npnorm.check import run_checks
from npnorm.exercises import SOLUTIONS_DIR, discover_tasks, load_module, self_check_agrees, self_checks

HERE = Path(__file__).resolve().parent


def catalogue() -> list[tuple[str, str, Mistake]]:
    """(test module, chapter module, mistake) for every catalogued mistake of every chapter."""
    found = []
    for path in sorted(HERE.glob("test_ch*.py")):
        module = importlib.import_module(path.stem)
        chapter = getattr(module, "CHAPTER", path.stem.removeprefix("test_"))
        for mistake in getattr(module, "MISTAKES", ()):
            found.append((path.stem, chapter, mistake))
    return found


CATALOGUE = catalogue()


def plant(tmp_path: Path, test_module: str, chapter: str, mistake: Mistake) -> Path:
    """A copy of the chapter's solutions in which ``mistake.function`` is the catalogued wrong one."""
    text = (SOLUTIONS_DIR / f"{chapter}.py").read_text(encoding="utf-8")
    text += (
        "\n\n# -- planted by tests/exercises/test_mistakes.py --\n"
        "import sys as _sys\n"
        f"_sys.path.insert(0, {str(HERE)!r})\n"
        f"import {test_module} as _catalogue  # noqa: E402\n"
        f"globals()[{mistake.function!r}] = next(m.wrong for m in _catalogue.MISTAKES\n"
        f"                                     if m.task == {mistake.task!r} and m.name == {mistake.name!r})\n"
    )
    folder = tmp_path / "exercises"
    folder.mkdir()
    (folder / f"{chapter}.py").write_text(text, encoding="utf-8")
    return folder


def test_every_chapter_with_tasks_has_a_catalogue():
    tasks = discover_tasks(SOLUTIONS_DIR)
    covered = {m.task for _, _, m in CATALOGUE}
    missing = sorted(set(tasks) - covered, key=lambda t: tuple(map(int, t.split("."))))
    assert not missing, f"tasks without any catalogued mistake (MISTAKES in their test module): {missing}"


def test_catalogue_entries_are_well_formed():
    tasks = discover_tasks(SOLUTIONS_DIR)
    seen = set()
    for test_module, chapter, m in CATALOGUE:
        assert m.task in tasks and tasks[m.task].module == chapter, (test_module, m.task)
        assert (m.task, m.name) not in seen, f"two mistakes named {m.name!r} in task {m.task}"
        seen.add((m.task, m.name))
        solution = load_module(SOLUTIONS_DIR / f"{chapter}.py")
        assert callable(getattr(solution, m.function, None)), f"{m.task} {m.name}: no function {m.function}"
        assert len(m.message) > 20, (m.task, m.name)


@pytest.mark.parametrize("test_module, chapter, mistake", CATALOGUE,
                         ids=[f"{m.task}-{m.name}" for _, _, m in CATALOGUE])
def test_the_check_names_the_mistake(tmp_path: Path, test_module: str, chapter: str, mistake: Mistake):
    folder = plant(tmp_path, test_module, chapter, mistake)
    task = discover_tasks(SOLUTIONS_DIR)[mistake.task]
    (result,), log, interrupted = run_checks([task], folder, out=io.StringIO(), timeout=120)
    assert interrupted is None, log
    report = "\n".join(c.message for c in result.checks)
    assert result.status == "FAILED", f"{mistake.task} {mistake.name}: the check says {result.status}\n{report}"
    assert mistake.message in report, f"{mistake.task} {mistake.name} is not named:\n{report}"
    others = [m.name for _, _, m in CATALOGUE if m.task == mistake.task and m is not mistake and m.message in report]
    assert not others, f"{mistake.task} {mistake.name}: the report also names {others}:\n{report}"


@pytest.mark.parametrize("test_module, chapter, mistake", CATALOGUE,
                         ids=[f"{m.task}-{m.name}" for _, _, m in CATALOGUE])
def test_no_self_check_passes_the_mistake(tmp_path: Path, test_module: str, chapter: str, mistake: Mistake):
    folder = plant(tmp_path, test_module, chapter, mistake)
    module = load_module(folder / f"{chapter}.py", fresh=True)
    check = self_checks(vars(module)).get(mistake.task)
    if check is None:
        pytest.fail(f"task {mistake.task} has no self-check (self_check_{mistake.task.replace('.', '_')})")
    from npnorm.exercises import expected_value

    try:
        got = float(check())
    except Exception:  # noqa: BLE001 - raising is a failed self-check
        return
    assert not self_check_agrees(got, expected_value(check)), (
        f"{mistake.task} {mistake.name}: the self-check gives {got:.7g}, which 'matches'")
