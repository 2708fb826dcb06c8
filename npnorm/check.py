"""Check your exercises and get a verdict per task.

In a terminal, from the project folder (``make`` uses the project's own environment, ``.venv``)::

    make check                 # every task
    make check TASK=2.3        # one task; TASK=2 is every task of chapter 2; TASK="2.3 3" both

In a notebook (JupyterLab from ``make lab``; the kernel's own interpreter runs it)::

    %run -m npnorm.check 2.3

Both run the task tests in ``tests/exercises/`` (the same tests CI runs against ``solutions/``)
against the modules in ``exercises/`` and print, task by task as they run, one of

* ``passed``       - every check of the task passes;
* ``FAILED``       - your code runs but gives a wrong answer (or raises): the common mistake it
                     matches, if it is a catalogued one; the first mismatching element and its
                     expected value, or the gradient-check report; and what your code printed;
* ``TIMED OUT``    - the task ran longer than its time limit (a loop that never ends?);
* ``not started``  - the stub still raises ``NotImplementedError("Task ...")``;
* ``in progress``  - some checks pass, the rest reach a function you have not written yet;
* ``waiting``      - its checks need another task you have not written yet.

The list of tasks comes from ``solutions/`` (the project's source of truth), never from the marker
lines of your copy: a task whose ``BEGIN TASK`` / ``END TASK`` lines you deleted is still checked
(with a note). Ctrl-C stops the check and says which task was running. The exit status is 1 when
a started task fails or times out, 0 otherwise (2 for a usage error, 130 after Ctrl-C).

Options: ``--show-output`` shows what your code printed for every task (a failing task's output is
always shown), ``--timeout SECONDS`` sets the time limit per task, ``-v`` lists every check,
``--list`` lists the tasks, ``--exercises-dir PATH`` checks another copy, ``--solutions`` checks
the reference solutions (for teachers and CI). ``python -m npnorm.check --help`` lists them.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import signal
import sys
import textwrap
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TextIO

import pytest

from .exercises import (EXERCISES_DIR, REPO_ROOT, SOLUTIONS_DIR, MarkerError, Task, _in_ipython, check_command,
                        discover_tasks)

TESTS_DIR = REPO_ROOT / "tests" / "exercises"
STUB_RE = re.compile(r"^Task (\d+\.\d+):")
MAX_MESSAGE_LINES = 24
MAX_OUTPUT_LINES = 20
WIDTH = 79
#: Seconds a task may run (all its checks together) before it is stopped.
DEFAULT_TIMEOUT = 60.0
#: Extra seconds before the check gives up on a task stuck where Python cannot interrupt it
#: (a compiled Numba loop): the terminal command then exits.
HARD_GRACE = 15.0
MISTAKE_PREFIX = "This looks like"


class TaskTimeout(BaseException):
    """Raised inside a task's test when the task's time is up (a BaseException, so that an
    ``except Exception`` in the learner's code does not swallow it)."""


@dataclass
class CheckResult:
    """The outcome of one test (one "check") of a task."""

    name: str                 # the test's docstring, or its name
    outcome: str              # "passed", "failed", "timed out", "not started", "waiting"
    message: str = ""
    waiting_for: str = ""
    output: str = ""          # what the learner's code printed during this check


@dataclass
class TaskResult:
    task: Task
    checks: list[CheckResult] = field(default_factory=list)
    markers_missing: bool = False
    seconds: float = 0.0

    @property
    def status(self) -> str:
        outcomes = [c.outcome for c in self.checks]
        if not outcomes:
            return "no checks"
        if "timed out" in outcomes:
            return "TIMED OUT"
        if "failed" in outcomes:
            return "FAILED"
        if all(o == "passed" for o in outcomes):
            return "passed"
        if "passed" in outcomes:
            return "in progress"
        if "not started" in outcomes:
            return "not started"
        return "waiting"

    @property
    def output(self) -> str:
        return "".join(c.output for c in self.checks)


def _doc_line(item: Any) -> str:
    doc = getattr(getattr(item, "function", None), "__doc__", None) or ""
    return doc.strip().splitlines()[0] if doc.strip() else item.name


def _where(excinfo: Any, impl_dir: Path) -> str:
    """'exercises/ch2_batchnorm.py, line 75, in batchnorm_forward' for the innermost frame in the
    learner's files."""
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
    if any(ln.strip().startswith(">>>") for ln in lines):
        keep += [next(ln.strip() for ln in lines if ln.strip().startswith(">>>"))]
    tail = [i for i, ln in enumerate(lines) if ln.startswith("File ")]
    if tail:
        block = lines[tail[-1]:]
        keep += [ln for ln in block if not ln.startswith("During:")][:6]
    return (f"Numba could not compile your kernel ({type(exc).__name__}):\n" + "\n".join(keep) +
            "\ntip: make check TASK=... NUMBA_DISABLE_JIT=1 runs it as plain Python, with an ordinary "
            "traceback.")


def _captured(report: Any) -> str:
    """What the learner's code printed during one test (setup and call), from pytest's capture."""
    parts = []
    for title, text in getattr(report, "sections", ()):
        if title.startswith(("Captured stdout", "Captured stderr")) and text:
            parts.append(text)
    return "".join(parts)


class _Runner:
    """A pytest plugin: keeps the tests of the wanted tasks (in task order), prints each task's line
    as it starts and finishes, enforces the time limit, and records a verdict for every check."""

    def __init__(self, tasks: list[Task], impl_dir: Path, emit: Callable[[TaskResult | None, Task], None] | None,
                 timeout: float | None, hard_exit: bool, out: TextIO) -> None:
        self.tasks = {t.id: t for t in tasks}
        self.impl_dir = impl_dir
        self.emit = emit
        self.timeout = timeout
        self.hard_exit = hard_exit
        self.out = out
        self.results: dict[str, TaskResult] = {t.id: TaskResult(t) for t in tasks}
        self.remaining: dict[str, int] = {}
        self.current: str | None = None
        self.current_check = ""
        self.deadline = 0.0
        self.started = 0.0
        self.expired: set[str] = set()
        self.interrupted: str | None = None
        self._armed = False
        self._fired = False
        self._watchdog: threading.Timer | None = None
        self._old_handler: Any = None
        self._signals = False

    # -- collection: only the wanted tasks, each task's tests together -----------------------------
    def pytest_collection_modifyitems(self, session: Any, config: Any, items: list[Any]) -> None:
        keep, drop = [], []
        for item in items:
            marker = item.get_closest_marker("task")
            (keep if marker and marker.args and marker.args[0] in self.tasks else drop).append(item)
        if drop:
            config.hook.pytest_deselected(items=drop)
        keep.sort(key=lambda it: self.tasks[it.get_closest_marker("task").args[0]].sort_key)
        items[:] = keep
        for item in keep:
            tid = item.get_closest_marker("task").args[0]
            self.remaining[tid] = self.remaining.get(tid, 0) + 1

    # -- the time limit ------------------------------------------------------------------------------
    def _install_alarm(self) -> None:
        if self.timeout is None or not hasattr(signal, "setitimer"):
            return
        if threading.current_thread() is not threading.main_thread():
            return
        self._old_handler = signal.signal(signal.SIGALRM, self._on_alarm)
        self._signals = True

    def _remove_alarm(self) -> None:
        if self._signals:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self._old_handler or signal.SIG_DFL)
            self._signals = False
        self._stop_watchdog()

    def _on_alarm(self, signum: int, frame: Any) -> None:
        self._fired = True
        if self._armed:
            self._armed = False
            raise TaskTimeout(self.current)

    def _stop_watchdog(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    def _stuck(self, task_id: str) -> None:
        """The task is still running well past its limit: Python could not interrupt it."""
        t = self.tasks[task_id]
        message = (f"\n\nTask {t.id} ({t.title}) is still running {self.timeout + HARD_GRACE:.0f} s after it "
                   "started and cannot be interrupted: probably a loop that never ends inside compiled "
                   "(Numba) code.")
        if self.hard_exit:
            self.out.write(message + " Stopping.\n")
            self.out.flush()
            os._exit(3)
        self.out.write(message + " Restart the kernel (Kernel > Restart) to stop it.\n")
        self.out.flush()

    def _start_task(self, task_id: str) -> None:
        self.current = task_id
        self.started = time.perf_counter()
        self.deadline = self.started + (self.timeout or 0.0)
        self._fired = False
        if self.emit:
            self.emit(None, self.tasks[task_id])
        if self.timeout is not None:
            if self._signals:
                signal.setitimer(signal.ITIMER_REAL, self.timeout)
            self._watchdog = threading.Timer(self.timeout + HARD_GRACE, self._stuck, args=(task_id,))
            self._watchdog.daemon = True
            self._watchdog.start()

    def _finish_task(self, task_id: str) -> None:
        if self._signals:
            signal.setitimer(signal.ITIMER_REAL, 0)
        self._stop_watchdog()
        result = self.results[task_id]
        result.seconds = time.perf_counter() - self.started
        self.current = None
        if self.emit:
            self.emit(result, result.task)

    # -- running ---------------------------------------------------------------------------------------
    def pytest_sessionstart(self, session: Any) -> None:
        self._install_alarm()

    def pytest_sessionfinish(self, session: Any, exitstatus: Any) -> None:
        self._remove_alarm()

    def pytest_keyboard_interrupt(self, excinfo: Any) -> None:
        self.interrupted = self.current
        self._remove_alarm()

    @staticmethod
    def _task_of(item: Any) -> str:
        return item.get_closest_marker("task").args[0]

    def pytest_runtest_protocol(self, item: Any, nextitem: Any) -> None:
        tid = self._task_of(item)
        if self.current != tid:
            self._start_task(tid)
        self.current_check = _doc_line(item)

    def pytest_runtest_logfinish(self, nodeid: str, location: Any) -> None:
        tid = self.current
        if tid is None:
            return
        self.remaining[tid] -= 1
        if self.remaining[tid] == 0:
            self._finish_task(tid)

    def pytest_runtest_setup(self, item: Any) -> None:
        tid = self._task_of(item)
        if tid in self.expired or self._fired:
            self.expired.add(tid)
            raise TaskTimeout(tid)
        self._armed = True

    def pytest_runtest_teardown(self, item: Any) -> None:
        self._armed = False

    def pytest_runtest_call(self, item: Any) -> None:
        self._armed = True

    def _record(self, item: Any, result: CheckResult) -> None:
        self.results[self._task_of(item)].checks.append(result)

    @staticmethod
    def _with_notes(exc: BaseException, message: str) -> str:
        notes = [n for n in getattr(exc, "__notes__", ()) if str(n).startswith(MISTAKE_PREFIX)]
        return "\n".join([*notes, message]) if notes else message

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: Any, call: Any):
        report = yield
        self._armed = False
        output = _captured(report) if call.when == "call" or call.excinfo is not None else ""
        name = _doc_line(item)
        own = self._task_of(item)
        if call.when == "call" and call.excinfo is None:
            self._record(item, CheckResult(name, "passed", output=output))
            return report
        if call.excinfo is None or call.when == "teardown":
            return report
        if call.excinfo.errisinstance(KeyboardInterrupt):
            return report
        exc = call.excinfo.value
        if isinstance(exc, TaskTimeout):
            self.expired.add(own)
            if not any(c.outcome == "timed out" for c in self.results[own].checks):
                self._record(item, CheckResult(name, "timed out", output=output, message=(
                    f"stopped after {self.timeout:g} s (the time limit of a task): is there a loop that never "
                    "ends? Where it was:\n" + (_where(call.excinfo, self.impl_dir) or "(not in your file)"))))
            return report
        if call.excinfo.errisinstance(pytest.skip.Exception):
            return report
        if isinstance(exc, NotImplementedError) and STUB_RE.match(str(exc)):
            stub_task = STUB_RE.match(str(exc)).group(1)
            if stub_task == own:
                self._record(item, CheckResult(name, "not started", output=output))
            else:
                self._record(item, CheckResult(name, "waiting", waiting_for=stub_task, output=output))
            return report
        if isinstance(exc, AssertionError) and type(exc).__name__ == "TaskFailure":
            message = str(exc)
        elif isinstance(exc, SyntaxError):
            message = f"your file does not compile: {exc.msg} ({Path(exc.filename or '?').name}, line {exc.lineno})"
        elif type(exc).__module__.startswith("numba"):
            message = _numba_message(exc)
        else:
            first = (str(exc).strip().splitlines() or [""])[0]
            message = f"your code raised {type(exc).__name__}: {first}"
            where = _where(call.excinfo, self.impl_dir)
            if where:
                message += f"\nat {where}"
            message = self._with_notes(exc, message)
        self._record(item, CheckResult(name, "failed", message, output=output))
        return report


# -- choosing tasks ---------------------------------------------------------------------------------------

REQUEST_RE = re.compile(r"^(?:task)?[\s_-]*(\d+)(?:\s*[.\-_ ]\s*(\d+))?[.:]?$", re.IGNORECASE)


def normalize_request(text: str) -> str:
    """``"2.3"``, ``"task-2-3"``, ``"Task 2.3"``, ``"2_3"`` -> ``"2.3"``; ``"2"`` -> ``"2"``.
    Anything else is returned stripped (and then reported as unknown)."""
    m = REQUEST_RE.match(text.strip())
    if not m:
        return text.strip()
    return f"{int(m[1])}.{int(m[2])}" if m[2] else str(int(m[1]))


class UnknownTask(KeyError):
    pass


def select_tasks(tasks: dict[str, Task], requested: list[str]) -> list[Task]:
    """Tasks named by id (``2.3``, also ``task-2-3``) or by chapter (``2``); all of them when nothing is
    requested. Raises :class:`UnknownTask` with a message for the learner."""
    if not requested:
        return list(tasks.values())
    chapters = sorted({t.chapter for t in tasks.values()})
    chosen: dict[str, Task] = {}
    text = " ".join(requested).replace(",", " ")
    for raw in re.findall(r"(?i)(?:task[\s_-]*)?\d+(?:\s*[.\-_]\s*\d+)?[.:]?|\S+", text):
        r = normalize_request(raw)
        if r in tasks:
            chosen[r] = tasks[r]
        elif r.isdigit() and int(r) in chapters:
            chosen.update({t.id: t for t in tasks.values() if t.chapter == int(r)})
        elif r.isdigit():
            raise UnknownTask(f"chapter {r} has no exercises. Chapters with exercises: "
                              f"{', '.join(map(str, chapters))}.")
        elif re.fullmatch(r"\d+\.\d+", r) and int(r.split(".")[0]) in chapters:
            ids = [t.id for t in tasks.values() if t.chapter == int(r.split(".")[0])]
            raise UnknownTask(f"there is no task {r}; chapter {r.split('.')[0]} has tasks {', '.join(ids)}.")
        else:
            raise UnknownTask(f"no task {raw!r}. Tasks: {', '.join(tasks)} (or a chapter number).")
    return sorted(chosen.values(), key=lambda t: t.sort_key)


# -- running -----------------------------------------------------------------------------------------------

def run_checks(selected: list[Task], impl_dir: Path, impl: str = "exercises", *,
               emit: Callable[[TaskResult | None, Task], None] | None = None, timeout: float | None = DEFAULT_TIMEOUT,
               hard_exit: bool = False, out: TextIO | None = None) -> tuple[list[TaskResult], str, str | None]:
    """Run the task tests of ``selected`` against the modules in ``impl_dir``.

    Returns the verdicts, pytest's own output (only needed when pytest itself fails) and the id of the
    task that was running when Ctrl-C was pressed (None otherwise). ``emit(result, task)`` is called
    when a task starts (``result`` None) and when it finishes.
    """
    out = out or sys.stdout
    modules = sorted({t.module for t in selected})
    files = [str(TESTS_DIR / f"test_{m}.py") for m in modules if (TESTS_DIR / f"test_{m}.py").is_file()]
    runner = _Runner(selected, impl_dir, emit, timeout, hard_exit, out)
    args = [*files, "-q", "-p", "no:cacheprovider", "--rootdir", str(REPO_ROOT), "-c", str(REPO_ROOT / "pyproject.toml"),
            f"--impl={impl}", f"--exercises-dir={impl_dir}", "-o", "console_output_style=classic"]
    buffer = io.StringIO()
    env_addopts = os.environ.pop("PYTEST_ADDOPTS", None)
    try:
        with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
            code = pytest.main(args, plugins=[runner]) if files else 5
    finally:
        runner._remove_alarm()
        if env_addopts is not None:
            os.environ["PYTEST_ADDOPTS"] = env_addopts
    if runner.interrupted is None and int(code) == 2 and "KeyboardInterrupt" in buffer.getvalue():
        runner.interrupted = runner.current or "?"
    if runner.interrupted is None and int(code) not in (0, 1, 5):
        raise RuntimeError(f"the test run itself failed (pytest exit code {int(code)}):\n{buffer.getvalue()}")
    return [runner.results[t.id] for t in selected], buffer.getvalue(), runner.interrupted


# -- the report ----------------------------------------------------------------------------------------------

def _wrap(text: str, prefix: str, limit: int | None = MAX_MESSAGE_LINES) -> list[str]:
    """``text`` indented by ``prefix``, every line folded to the page width, at most ``limit`` lines."""
    lines: list[str] = []
    for raw in text.splitlines() or [""]:
        lead = raw[:len(raw) - len(raw.lstrip())]
        room = max(WIDTH - len(prefix) - len(lead), 20)
        first = textwrap.wrap(raw.strip(), room, break_long_words=True, break_on_hyphens=False) or [""]
        folded = [first[0]]
        if len(first) > 1:
            rest = raw.strip()[len(first[0]):].strip()
            folded += textwrap.wrap(rest, room - 2, break_long_words=True, break_on_hyphens=False)
        lines += [prefix + lead + folded[0]] + [prefix + lead + "  " + f for f in folded[1:]]
    if limit is not None and len(lines) > limit:
        lines = lines[:limit] + [f"{prefix}... ({len(lines) - limit} more lines)"]
    return lines


def task_label(task: Task) -> str:
    label = f"  {task.id:<5}{task.title} "
    if len(label) > 60:
        label = label[:57] + "... "
    return f"{label:.<64} "


def task_details(r: TaskResult, impl_dir: Path, *, verbose: bool = False, show_output: bool = False) -> list[str]:
    """The lines printed under a task's verdict."""
    out: list[str] = []
    t = r.task
    status = r.status
    if status == "in progress":
        n_pass = sum(c.outcome == "passed" for c in r.checks)
        out += _wrap(f"({n_pass} of {len(r.checks)} checks pass; the rest reach code you have not "
                     "written yet)", "       ")
    elif status == "waiting":
        needs = sorted({c.waiting_for for c in r.checks if c.waiting_for})
        out += _wrap(f"(needs task {', '.join(needs)} first)", "       ")
    if r.markers_missing:
        out += _wrap(f"note: its BEGIN/END TASK {t.id} lines are missing from your file (checked "
                     "anyway; put them back so that the file can be regenerated)", "       ")
    failing = status in ("FAILED", "TIMED OUT")
    named: set[str] = set()
    if failing or verbose:
        for c in r.checks:
            if c.outcome in ("failed", "timed out"):
                out += _wrap(f"x {c.name}", "       ", None)
                message = c.message
                head, sep, rest = message.partition("\n\nThe check's own report:\n")
                if sep and head.startswith(MISTAKE_PREFIX):
                    # the same catalogued mistake is named once per task, not under every check
                    message = f"(the same common mistake as above)\n{rest}" if head in named else message
                    named.add(head)
                out += _wrap(message, "         ")
            elif verbose:
                out += _wrap(f"{'+' if c.outcome == 'passed' else '-'} {c.name}: {c.outcome}", "       ", None)
        if failing:
            out += _wrap(f"(your code: {impl_dir.name}/{t.module}.py, {', '.join(t.functions)})", "       ")
    printed = r.output
    if printed.strip() and (failing or show_output):
        out.append("       what your code printed:")
        out += _wrap(printed.rstrip("\n"), "       | ", MAX_OUTPUT_LINES)
    return out


def format_report(results: list[TaskResult], impl_dir: Path, titles: dict[int, str], verbose: bool = False,
                  show_output: bool = False) -> str:
    """The whole report at once (the command prints the same lines as the tasks run)."""
    out = [f"Checking {impl_dir}"]
    chapter = None
    for r in results:
        if r.task.chapter != chapter:
            chapter = r.task.chapter
            out += ["", chapter_heading(chapter, titles)]
        out.append(task_label(r.task) + r.status)
        out += task_details(r, impl_dir, verbose=verbose, show_output=show_output)
    out += ["", *summary(results, impl_dir)]
    return "\n".join(out)


def chapter_heading(chapter: int, titles: dict[int, str]) -> str:
    return f"Chapter {chapter} - {titles.get(chapter, '')}".rstrip(" -")


def summary(results: list[TaskResult], impl_dir: Path) -> list[str]:
    counts: dict[str, int] = {}
    for r in results:
        counts[r.status] = counts.get(r.status, 0) + 1
    order = ("passed", "FAILED", "TIMED OUT", "in progress", "waiting", "not started", "no checks")
    lines = [", ".join(f"{counts[s]} {s.lower()}" for s in order if counts.get(s)) + "."]
    todo = [r.task for r in results if r.status in ("not started", "in progress", "waiting")]
    if counts.get("FAILED") or counts.get("TIMED OUT"):
        lines.append("Fix the task(s) above, then run the same command again.")
    elif todo:
        t = todo[0]
        lines += _wrap(f"Next: task {t.id} - {impl_dir.name}/{t.module}.py, {', '.join(t.functions)}", "", None)
        lines.append(f"then: {check_command(t.id)}")
    elif results:
        lines.append("All selected tasks pass. Well done.")
    return lines


def _chapter_titles(directory: Path) -> dict[int, str]:
    titles = {}
    for path in directory.glob("ch[0-9]*_*.py"):
        m = re.search(r'"""Chapter (\d+) - ([^\n]+?)\.?\n', path.read_text(encoding="utf-8"))
        if m:
            titles[int(m[1])] = m[2]
    return titles


def _learner_markers(impl_dir: Path) -> tuple[set[str], str]:
    """The task ids whose markers are present in the learner's files, and a warning if they cannot
    be read (malformed markers are reported, never fatal: the tasks come from solutions/)."""
    try:
        return set(discover_tasks(impl_dir)), ""
    except MarkerError as exc:
        found: set[str] = set()
        for path in impl_dir.glob("ch[0-9]*_*.py"):
            found |= set(re.findall(r"#\s*BEGIN TASK (\d+\.\d+):", path.read_text(encoding="utf-8")))
        return found, f"note: {exc} (the check goes on: the tasks come from solutions/)"


def _other_clone_warning() -> str:
    """A warning when the npnorm being run is not the clone the current directory belongs to (a moved
    clone whose environment still points at the old place)."""
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "npnorm" / "check.py").is_file() and (folder / "solutions").is_dir():
            if folder != REPO_ROOT.resolve():
                return (f"warning: you are in the project at {folder}, but this npnorm comes from {REPO_ROOT}; "
                        f"its exercises are the ones checked. Run `make check` from {folder} "
                        "(it rebuilds the environment for the new place).")
            return ""
    return ""


def _display(path: Path) -> str:
    """``path`` relative to the current directory when it is inside it (shorter lines)."""
    try:
        return str(path.relative_to(Path.cwd().resolve())) + os.sep
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="make check TASK=... | python -m npnorm.check",
        description="Check your exercises: a verdict per task, printed as each task runs.",
        epilog="Exit status: 1 if a started task fails or times out, 0 otherwise, 2 on a usage error, "
               "130 after Ctrl-C.")
    parser.add_argument("tasks", nargs="*", metavar="TASK", help="task ids (2.3) or chapters (2); default: all")
    parser.add_argument("--exercises-dir", type=Path, default=None, metavar="PATH",
                        help=f"the exercise modules to check (default: {EXERCISES_DIR})")
    parser.add_argument("--solutions", action="store_true",
                        help="check the reference solutions instead (for teachers and CI)")
    parser.add_argument("-v", "--verbose", action="store_true", help="list every check, not only failures")
    parser.add_argument("--show-output", action="store_true",
                        help="show what your code printed for every task (always shown for a failing task)")
    parser.add_argument("--timeout", type=float, default=float(os.environ.get("NPNORM_CHECK_TIMEOUT", DEFAULT_TIMEOUT)),
                        metavar="SECONDS", help="time limit per task (default: %(default)g; 0 = none)")
    parser.add_argument("--list", action="store_true", help="list the tasks and exit")
    args = parser.parse_args(argv)

    impl = "solutions" if args.solutions else "exercises"
    impl_dir = (SOLUTIONS_DIR if args.solutions else (args.exercises_dir or EXERCISES_DIR)).expanduser().resolve()
    tasks = discover_tasks(SOLUTIONS_DIR)            # the source of truth, never the learner's copy
    if not impl_dir.is_dir() or not any(impl_dir.glob("ch[0-9]*_*.py")):
        print(f"error: no exercise modules (ch<N>_<topic>.py) in {impl_dir}", file=sys.stderr)
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
    except UnknownTask as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 2
    present, marker_note = _learner_markers(impl_dir)
    titles = _chapter_titles(SOLUTIONS_DIR)
    out = sys.stdout
    warning = _other_clone_warning()
    if warning:
        print("\n".join(_wrap(warning, "", None)), file=out)
    print(f"Checking {_display(impl_dir)}", file=out)
    if marker_note:
        print("\n".join(_wrap(marker_note, "", None)), file=out)
    state: dict[str, Any] = {"chapter": None, "shown": set()}

    def emit(result: TaskResult | None, task: Task) -> None:
        if result is None:
            if task.chapter != state["chapter"]:
                state["chapter"] = task.chapter
                out.write("\n" + chapter_heading(task.chapter, titles) + "\n")
            out.write(task_label(task))
        else:
            state["shown"].add(task.id)
            result.markers_missing = task.id not in present and not args.solutions
            lines = [result.status, *task_details(result, impl_dir, verbose=args.verbose,
                                                  show_output=args.show_output)]
            out.write("\n".join(lines) + "\n")
        out.flush()

    timeout = args.timeout if args.timeout and args.timeout > 0 else None
    try:
        results, _, interrupted = run_checks(selected, impl_dir, impl, emit=emit, timeout=timeout,
                                             hard_exit=not _in_ipython(), out=out)
    except RuntimeError as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        return 2
    if interrupted is not None:
        t = tasks.get(interrupted)
        what = f"task {t.id} ({t.title}, {impl_dir.name}/{t.module}.py)" if t else "the check"
        print(f"\n\nInterrupted (Ctrl-C) while {what} was running. Nothing after it was checked.", file=out)
        return 130
    for r in results:                                    # tasks without any test: never started
        if r.task.id not in state["shown"]:
            emit(None, r.task)
            emit(r, r.task)
    print("", file=out)
    print("\n".join(summary(results, impl_dir)), file=out)
    return 1 if any(r.status in ("FAILED", "TIMED OUT") for r in results) else 0


def _exit(code: int) -> None:
    """Exit with ``code`` from a terminal; in a notebook (``%run -m npnorm.check``) only return, since
    IPython shows a non-zero ``SystemExit`` as a traceback."""
    if not _in_ipython():
        sys.exit(code)


if __name__ == "__main__":
    _exit(main())
