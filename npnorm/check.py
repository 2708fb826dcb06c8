"""``python -m npnorm.check [TASK ...]``: check your exercises and get a verdict per task.

Runs the task tests in ``tests/exercises/`` (the same tests CI runs against ``solutions/``) against the
modules in ``exercises/`` and prints, for every task, one of

* ``passed``       - every check of the task passes;
* ``FAILED``       - your code runs but gives a wrong answer (or raises): the first mismatching element
                     and its expected value, or the gradient-check report - which input, the worst
                     relative error, where, and the range a correct answer scores;
* ``not started``  - the stub still raises ``NotImplementedError("Task ...")``;
* ``in progress``  - some checks pass, the rest reach a function you have not written yet;
* ``waiting``      - its checks need another task you have not written yet.

TASK is a task id (``2.3``) or a chapter (``2``); without one, every task is checked. The exit status is
1 when a started task fails, 0 otherwise (2 for a usage error).

Examples::

    python -m npnorm.check            # everything
    python -m npnorm.check 2.3 3      # task 2.3 and every task of chapter 3
    python -m npnorm.check --exercises-dir ~/my-exercises 1.1
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .exercises import EXERCISES_DIR, REPO_ROOT, SOLUTIONS_DIR, MarkerError, Task, discover_tasks

TESTS_DIR = REPO_ROOT / "tests" / "exercises"
STUB_RE = re.compile(r"^Task (\d+\.\d+):")
MAX_MESSAGE_LINES = 14


@dataclass
class CheckResult:
    """The outcome of one test (one "check") of a task."""

    name: str                 # the test's docstring, or its name
    outcome: str              # "passed", "failed", "not started", "waiting"
    message: str = ""
    waiting_for: str = ""


@dataclass
class TaskResult:
    task: Task
    checks: list[CheckResult] = field(default_factory=list)

    @property
    def status(self) -> str:
        outcomes = [c.outcome for c in self.checks]
        if not outcomes:
            return "no checks"
        if "failed" in outcomes:
            return "FAILED"
        if all(o == "passed" for o in outcomes):
            return "passed"
        if "passed" in outcomes:
            return "in progress"
        if all(o == "not started" for o in outcomes):
            return "not started"
        if "not started" in outcomes:
            return "not started"
        return "waiting"


def _doc_line(item: Any) -> str:
    doc = getattr(getattr(item, "function", None), "__doc__", None) or ""
    return doc.strip().splitlines()[0] if doc.strip() else item.name


def _where(excinfo: Any, impl_dir: Path) -> str:
    """'exercises/ch2_batchnorm.py, line 75, in batchnorm_forward' for the innermost frame in the learner's files."""
    for entry in reversed(list(excinfo.traceback)):
        path = Path(str(entry.path))
        try:
            rel = path.resolve().relative_to(impl_dir.resolve())
        except ValueError:
            continue
        line = entry.lineno + 1
        source = str(entry.statement).strip() if entry.statement is not None else ""
        return f"{impl_dir.name}/{rel}, line {line}, in {entry.name}" + (f":\n    {source}" if source else "")
    return ""


def _numba_message(exc: BaseException) -> str:
    """Numba's compile errors, shortened to what points at the learner's line."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    lines = [ln for ln in text.splitlines() if ln.strip()]
    keep = lines[:1]
    for marker in ("No implementation of function", "Unknown attribute", "NameError", "Cannot unify",
                   "Untyped global name", "Invalid use of"):
        keep += [ln.strip() for ln in lines[1:] if marker in ln][:1]
    if any(ln.startswith(">>>") or ln.strip().startswith(">>>") for ln in lines):
        keep += [next(ln.strip() for ln in lines if ln.strip().startswith(">>>"))]
    tail = [i for i, ln in enumerate(lines) if ln.startswith("File ")]
    if tail:
        block = lines[tail[-1]:]
        keep += [ln for ln in block if not ln.startswith("During:")][:6]
    return (f"Numba could not compile your kernel ({type(exc).__name__}):\n" + "\n".join(keep) +
            "\ntip: NUMBA_DISABLE_JIT=1 python -m npnorm.check ... runs it as plain Python, with an ordinary traceback.")


class _Collector:
    """A pytest plugin: keeps the tests of the wanted tasks and records a verdict for each."""

    def __init__(self, wanted: set[str], impl_dir: Path) -> None:
        self.wanted = wanted
        self.impl_dir = impl_dir
        self.results: dict[str, list[CheckResult]] = {}

    def pytest_collection_modifyitems(self, session: Any, config: Any, items: list[Any]) -> None:
        keep, drop = [], []
        for item in items:
            marker = item.get_closest_marker("task")
            (keep if marker and marker.args and marker.args[0] in self.wanted else drop).append(item)
        if drop:
            config.hook.pytest_deselected(items=drop)
        items[:] = keep

    def _record(self, item: Any, result: CheckResult) -> None:
        task_id = item.get_closest_marker("task").args[0]
        self.results.setdefault(task_id, []).append(result)

    def pytest_runtest_makereport(self, item: Any, call: Any) -> None:
        if call.when == "call" and call.excinfo is None:
            self._record(item, CheckResult(_doc_line(item), "passed"))
            return
        if call.excinfo is None or call.excinfo.errisinstance(KeyboardInterrupt):
            return
        if call.when == "teardown":
            return
        exc = call.excinfo.value
        name = _doc_line(item)
        own = item.get_closest_marker("task").args[0]
        if isinstance(exc, NotImplementedError) and STUB_RE.match(str(exc)):
            stub_task = STUB_RE.match(str(exc)).group(1)
            if stub_task == own:
                self._record(item, CheckResult(name, "not started"))
            else:
                self._record(item, CheckResult(name, "waiting", waiting_for=stub_task))
            return
        if isinstance(exc, AssertionError) and type(exc).__name__ == "TaskFailure":
            message = str(exc)
        elif isinstance(exc, SyntaxError):
            message = (f"your file does not compile: {exc.msg} ({Path(exc.filename or '?').name}, line {exc.lineno})")
        elif type(exc).__module__.startswith("numba"):
            message = _numba_message(exc)
        else:
            first = (str(exc).strip().splitlines() or [""])[0]
            message = f"your code raised {type(exc).__name__}: {first}"
            where = _where(call.excinfo, self.impl_dir)
            if where:
                message += f"\nat {where}"
        self._record(item, CheckResult(name, "failed", message))


def _chapter_titles(directory: Path) -> dict[int, str]:
    titles = {}
    for path in directory.glob("ch[0-9]*_*.py"):
        m = re.search(r'"""Chapter (\d+) - ([^\n]+?)\.?\n', path.read_text(encoding="utf-8"))
        if m:
            titles[int(m[1])] = m[2]
    return titles


def select_tasks(tasks: dict[str, Task], requested: list[str]) -> list[Task]:
    """Tasks named by id ("2.3") or by chapter ("2"); all of them when nothing is requested."""
    if not requested:
        return list(tasks.values())
    chosen: dict[str, Task] = {}
    for r in requested:
        r = r.strip().removeprefix("task").removeprefix("Task").strip()
        if r in tasks:
            chosen[r] = tasks[r]
        elif r.isdigit() and any(t.chapter == int(r) for t in tasks.values()):
            chosen.update({t.id: t for t in tasks.values() if t.chapter == int(r)})
        else:
            raise KeyError(r)
    return sorted(chosen.values(), key=lambda t: t.sort_key)


def run_checks(selected: list[Task], impl_dir: Path, impl: str = "exercises") -> tuple[list[TaskResult], str]:
    """Run the task tests of ``selected`` against the modules in ``impl_dir``; return the verdicts and
    pytest's own output (only needed when pytest itself fails)."""
    import pytest

    files = sorted({str(p) for t in selected for p in TESTS_DIR.glob(f"test_{t.module}.py")})
    collector = _Collector({t.id for t in selected}, impl_dir)
    args = [*files, "-q", "-p", "no:cacheprovider", "--rootdir", str(REPO_ROOT), "-c", str(REPO_ROOT / "pyproject.toml"),
            f"--impl={impl}", f"--exercises-dir={impl_dir}", "-o", "console_output_style=classic"]
    buffer = io.StringIO()
    env_addopts = os.environ.pop("PYTEST_ADDOPTS", None)
    try:
        with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
            code = pytest.main(args, plugins=[collector])
    finally:
        if env_addopts is not None:
            os.environ["PYTEST_ADDOPTS"] = env_addopts
    if int(code) not in (0, 1, 5):
        raise RuntimeError(f"the test run itself failed (pytest exit code {int(code)}):\n{buffer.getvalue()}")
    return [TaskResult(t, collector.results.get(t.id, [])) for t in selected], buffer.getvalue()


def _indent(text: str, prefix: str) -> str:
    lines = text.splitlines()
    if len(lines) > MAX_MESSAGE_LINES:
        lines = lines[:MAX_MESSAGE_LINES] + [f"... ({len(lines) - MAX_MESSAGE_LINES} more lines)"]
    return "\n".join(prefix + line for line in lines)


def format_report(results: list[TaskResult], impl_dir: Path, titles: dict[int, str], verbose: bool = False) -> str:
    out = [f"Checking {impl_dir}"]
    chapter = None
    counts: dict[str, int] = {}
    for r in results:
        t = r.task
        if t.chapter != chapter:
            chapter = t.chapter
            out.append("")
            out.append(f"Chapter {chapter} - {titles.get(chapter, '')}".rstrip(" -"))
        status = r.status
        counts[status] = counts.get(status, 0) + 1
        detail = ""
        if status == "in progress":
            n_pass = sum(c.outcome == "passed" for c in r.checks)
            detail = f" ({n_pass} of {len(r.checks)} checks pass; the rest reach code you have not written yet)"
        elif status == "waiting":
            needs = sorted({c.waiting_for for c in r.checks if c.waiting_for})
            detail = f" (needs task {', '.join(needs)} first)"
        label = f"  {t.id:<5}{t.title} "
        out.append(f"{label:.<64} {status}{detail}")
        if status == "FAILED" or verbose:
            for c in r.checks:
                if c.outcome == "failed":
                    out.append(f"       x {c.name}")
                    out.append(_indent(c.message, "         "))
                elif verbose:
                    out.append(f"       {'+' if c.outcome == 'passed' else '-'} {c.name}: {c.outcome}")
            if status == "FAILED":
                out.append(f"       (your code: {impl_dir.name}/{t.module}.py, {', '.join(t.functions)})")
    out.append("")
    order = ("passed", "FAILED", "in progress", "waiting", "not started", "no checks")
    out.append(", ".join(f"{counts[s]} {s.lower()}" for s in order if counts.get(s)) + ".")
    todo = [r.task for r in results if r.status in ("not started", "in progress", "waiting")]
    if counts.get("FAILED"):
        out.append("Fix the failed task(s) above, then run the same command again.")
    elif todo:
        t = todo[0]
        out.append(f"Next: task {t.id} - {impl_dir.name}/{t.module}.py, {', '.join(t.functions)}; "
                   f"then: python -m npnorm.check {t.id}")
    elif results:
        out.append("All selected tasks pass. Well done.")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m npnorm.check",
                                     description="Check your exercises: a verdict per task.",
                                     epilog="Exit status: 1 if a started task fails, 0 otherwise, 2 on a usage error.")
    parser.add_argument("tasks", nargs="*", metavar="TASK", help="task ids (2.3) or chapters (2); default: all")
    parser.add_argument("--exercises-dir", type=Path, default=None, metavar="PATH",
                        help=f"the exercise modules to check (default: {EXERCISES_DIR})")
    parser.add_argument("--solutions", action="store_true",
                        help="check the reference solutions instead (for teachers and CI)")
    parser.add_argument("-v", "--verbose", action="store_true", help="list every check, not only failures")
    parser.add_argument("--list", action="store_true", help="list the tasks and exit")
    args = parser.parse_args(argv)

    impl = "solutions" if args.solutions else "exercises"
    impl_dir = (SOLUTIONS_DIR if args.solutions else (args.exercises_dir or EXERCISES_DIR)).expanduser().resolve()
    try:
        tasks = discover_tasks(impl_dir)
    except MarkerError as exc:
        print(f"error: {exc}\n(a BEGIN TASK / END TASK marker line was changed or deleted; restore it)", file=sys.stderr)
        return 2
    if not tasks:
        print(f"error: no exercise modules with tasks in {impl_dir}", file=sys.stderr)
        return 2
    if not TESTS_DIR.is_dir():
        print(f"error: the task tests are missing ({TESTS_DIR})", file=sys.stderr)
        return 2
    if args.list:
        for t in tasks.values():
            print(f"{t.id:>5}  {t.title}  ({t.module}.py: {', '.join(t.functions)})")
        return 0
    try:
        selected = select_tasks(tasks, args.tasks)
    except KeyError as exc:
        print(f"error: no task {exc.args[0]!r}. Tasks: {', '.join(tasks)} (or a chapter number).", file=sys.stderr)
        return 2
    try:
        results, _ = run_checks(selected, impl_dir, impl)
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_report(results, impl_dir, _chapter_titles(impl_dir), args.verbose))
    return 1 if any(r.status == "FAILED" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
