"""Exercises and solutions from one source.

``solutions/`` holds one module per book chapter (``ch2_batchnorm.py`` ...). The part of a function a
learner writes is marked::

    def batchnorm_backward_fused(dout, cache):
        \"\"\"Docstring, shapes and hints: kept in the exercise.\"\"\"
        # hints written as comments above the marker are kept too
        # BEGIN TASK 2.3: the fused backward pass
        ...the answer...
        # END TASK 2.3

``python -m npnorm.exercises generate`` writes ``exercises/`` from ``solutions/``: every marked region
becomes one line, ``raise NotImplementedError("Task 2.3: ...")``, between the same two marker lines
(so the learner knows where to write). A task may span several functions (a forward and its backward):
every region with the same id belongs to that task.

Learners' work is never lost. ``exercises/.generated.json`` records a hash of every file as it was
generated; a file whose content no longer matches (the learner edited it) is never overwritten: the new
version is written beside it as ``<name>.py.new`` and the command exits with status 1. ``--force``
overwrites anyway, after copying the learner's file to ``<name>.py.bak``. ``--check`` writes nothing
and exits with status 1 when ``exercises/`` is out of date (CI runs it through the test suite).

The same module loads an implementation module by path (``load_module``), lists the tasks
(``discover_tasks``) and runs the numeric self-checks at the bottom of every chapter module
(``run_self_checks``).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import re
import shutil
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = [
    "REPO_ROOT",
    "SOLUTIONS_DIR",
    "EXERCISES_DIR",
    "MANIFEST_NAME",
    "Task",
    "MarkerError",
    "find_regions",
    "discover_tasks",
    "make_exercise",
    "generate",
    "load_module",
    "replace_task_regions",
    "run_self_checks",
    "self_check_main",
    "fingerprint",
    "check_command",
    "stub_message",
    "stub_lines",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS_DIR = REPO_ROOT / "solutions"
EXERCISES_DIR = REPO_ROOT / "exercises"
MANIFEST_NAME = ".generated.json"
CHAPTER_GLOB = "ch[0-9]*_*.py"

TASK_ID = r"(?P<id>\d+\.\d+)"
BEGIN_RE = re.compile(r"^(?P<indent>[ \t]*)# BEGIN TASK " + TASK_ID + r": (?P<title>\S.*?)\s*$")
END_RE = re.compile(r"^(?P<indent>[ \t]*)# END TASK " + TASK_ID + r"\s*$")
ANY_MARKER_RE = re.compile(r"#\s*(BEGIN|END)\s+TASK\b")
DEF_RE = re.compile(r"^(?P<indent>[ \t]*)def (?P<name>\w+)\s*\(")
EXPECTED_RE = re.compile(r"you\s+should\s+get\s+about\s+(?P<value>[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)")


class MarkerError(ValueError):
    """A malformed BEGIN/END TASK marker (the message names the file and line)."""


@dataclass(frozen=True)
class Region:
    """One marked region: lines ``begin`` and ``end`` (0-based, the marker lines themselves)."""

    task_id: str
    title: str
    begin: int
    end: int
    indent: str
    function: str


@dataclass
class Task:
    """An exercise: its id, title, chapter module and the functions a learner writes."""

    id: str
    title: str
    module: str                     # "ch2_batchnorm"
    functions: list[str] = field(default_factory=list)

    @property
    def chapter(self) -> int:
        return int(self.id.split(".")[0])

    @property
    def sort_key(self) -> tuple[int, int]:
        major, minor = self.id.split(".")
        return int(major), int(minor)


def stub_message(task_id: str, title: str) -> str:
    """The message of the ``NotImplementedError`` a stub raises. It starts with ``Task <id>:`` -
    ``npnorm.check`` relies on that to tell "not started" from "failed"."""
    chapter = task_id.split(".")[0]
    return (f"Task {task_id}: {title} - not written yet (exercise {task_id} of chapter {chapter}). "
            f"Check it with: make check TASK={task_id} (in a notebook: %run -m npnorm.check {task_id})")


def find_regions(text: str, filename: str = "<text>") -> list[Region]:
    """Every marked region of a module's source, in order. Raises :class:`MarkerError` on unmatched,
    nested or malformed markers."""
    lines = text.splitlines()
    regions: list[Region] = []
    open_: tuple[int, re.Match[str]] | None = None
    for i, line in enumerate(lines):
        b, e = BEGIN_RE.match(line), END_RE.match(line)
        if not b and not e and ANY_MARKER_RE.search(line):
            raise MarkerError(f"{filename}:{i + 1}: malformed task marker {line.strip()!r}; expected "
                              "'# BEGIN TASK <chapter>.<n>: <title>' or '# END TASK <chapter>.<n>'")
        if b:
            if open_ is not None:
                raise MarkerError(f"{filename}:{i + 1}: BEGIN TASK {b['id']} inside the region of task "
                                  f"{open_[1]['id']} opened on line {open_[0] + 1}")
            open_ = (i, b)
        elif e:
            if open_ is None:
                raise MarkerError(f"{filename}:{i + 1}: END TASK {e['id']} without a BEGIN")
            start, bm = open_
            if e["id"] != bm["id"] or e["indent"] != bm["indent"]:
                raise MarkerError(f"{filename}:{i + 1}: END TASK {e['id']} does not match BEGIN TASK "
                                  f"{bm['id']} on line {start + 1} (ids and indentation must agree)")
            regions.append(Region(bm["id"], bm["title"], start, i, bm["indent"],
                                  _enclosing_function(lines, start, bm["indent"], filename)))
            open_ = None
    if open_ is not None:
        raise MarkerError(f"{filename}:{open_[0] + 1}: BEGIN TASK {open_[1]['id']} is never closed")
    return regions


def _enclosing_function(lines: list[str], start: int, indent: str, filename: str) -> str:
    for j in range(start - 1, -1, -1):
        d = DEF_RE.match(lines[j])
        if d and len(d["indent"]) < len(indent):
            return d["name"]
    raise MarkerError(f"{filename}:{start + 1}: a task region must sit inside a function body")


def discover_tasks(directory: Path | str = SOLUTIONS_DIR) -> dict[str, Task]:
    """The tasks marked in the chapter modules of ``directory`` (solutions or exercises), by id."""
    tasks: dict[str, Task] = {}
    for path in sorted(Path(directory).glob(CHAPTER_GLOB)):
        for r in find_regions(path.read_text(encoding="utf-8"), str(path)):
            t = tasks.get(r.task_id)
            if t is None:
                t = tasks[r.task_id] = Task(r.task_id, r.title, path.stem)
            elif t.module != path.stem or t.title != r.title:
                raise MarkerError(f"{path}: task {r.task_id} is marked with different titles or in "
                                  f"different files ({t.module}: {t.title!r} vs {path.stem}: {r.title!r})")
            if r.function not in t.functions:
                t.functions.append(r.function)
    return dict(sorted(tasks.items(), key=lambda kv: kv[1].sort_key))


def _header(solution_name: str) -> str:
    return (
        f"# Your exercise file, generated from solutions/{solution_name}\n"
        "# by `python -m npnorm.exercises generate`. Write your code between the two\n"
        "# marker lines of each task (replace the `raise`), then check it with\n"
        "#     make check TASK=<task id>        (in a terminal)\n"
        "#     %run -m npnorm.check <task id>   (in a notebook)\n"
        "# Regenerating never overwrites a file you have changed.\n"
    )


def stub_lines(indent: str, task_id: str, title: str, width: int = 79) -> list[str]:
    """The stub that replaces a task region: one ``raise NotImplementedError(...)`` statement whose
    message (:func:`stub_message`) is split into string pieces so that no line is wider than
    ``width``."""
    import textwrap

    inner = indent + " " * 4
    room = max(width - len(inner) - 3, 20)          # the quotes, and a closing parenthesis
    pieces = textwrap.wrap(stub_message(task_id, title), room, drop_whitespace=False,
                           break_on_hyphens=False)
    lines = [f"{indent}raise NotImplementedError(\n"]
    lines += [f"{inner}{piece!r}\n" for piece in pieces]
    lines[-1] = lines[-1].rstrip("\n") + ")\n"
    return lines


def make_exercise(solution_text: str, solution_name: str = "solution.py") -> str:
    """The learner's version of a solution module: every marked region replaced by a stub."""
    lines = solution_text.splitlines(keepends=True)
    out: list[str] = []
    pos = 0
    for r in find_regions(solution_text, solution_name):
        out.extend(lines[pos:r.begin + 1])                          # everything up to the BEGIN line
        out.extend(stub_lines(r.indent, r.task_id, r.title))
        pos = r.end                                                 # keep the END line
    out.extend(lines[pos:])
    body = "".join(out)
    return _header(solution_name) + body


def replace_task_regions(target_text: str, source_text: str, task_ids: set[str] | None = None) -> str:
    """Copy the bodies of the marked regions of ``source_text`` into the same regions of ``target_text``
    (matched by task id and order). Used by tests to "copy a solution in" and by teachers to fill an
    exercise file from a solution."""
    src = find_regions(source_text)
    dst = find_regions(target_text)
    src_lines = source_text.splitlines(keepends=True)
    dst_lines = target_text.splitlines(keepends=True)
    by_id: dict[str, list[Region]] = {}
    for r in src:
        by_id.setdefault(r.task_id, []).append(r)
    out: list[str] = []
    pos = 0
    seen: dict[str, int] = {}
    for r in dst:
        if task_ids is not None and r.task_id not in task_ids:
            continue
        k = seen.get(r.task_id, 0)
        seen[r.task_id] = k + 1
        s = by_id[r.task_id][k]
        out.extend(dst_lines[pos:r.begin + 1])
        out.extend(src_lines[s.begin + 1:s.end])
        pos = r.end
    out.extend(dst_lines[pos:])
    return "".join(out)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _read_manifest(exercises: Path) -> dict[str, str]:
    path = exercises / MANIFEST_NAME
    if not path.exists():
        return {}
    return dict(json.loads(path.read_text(encoding="utf-8")).get("files", {}))


def _write_manifest(exercises: Path, files: Mapping[str, str]) -> None:
    data = {
        "comment": "sha256 of each exercise file as generated from solutions/ (python -m npnorm.exercises "
                   "generate). A file whose hash differs was changed by you and is never overwritten.",
        "files": dict(sorted(files.items())),
    }
    (exercises / MANIFEST_NAME).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


@dataclass
class GenerateResult:
    written: list[str] = field(default_factory=list)     # created or updated
    unchanged: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)        # learner-modified, new version written beside
    forced: list[str] = field(default_factory=list)      # learner-modified, overwritten (backup .bak)
    stale: list[str] = field(default_factory=list)       # --check: would change
    yours: list[str] = field(default_factory=list)       # learner-modified, no new version to offer

    @property
    def ok(self) -> bool:
        return not self.kept and not self.stale


def generate(solutions: Path | str = SOLUTIONS_DIR, exercises: Path | str = EXERCISES_DIR, *,
             force: bool = False, check: bool = False, log: Callable[[str], None] = print) -> GenerateResult:
    """Write the exercise modules from the solution modules (see the module docstring for the rules)."""
    solutions, exercises = Path(solutions), Path(exercises)
    sources = sorted(solutions.glob(CHAPTER_GLOB))
    if not sources:
        raise FileNotFoundError(f"no chapter modules ({CHAPTER_GLOB}) in {solutions}")
    discover_tasks(solutions)                      # validates markers across files
    manifest = _read_manifest(exercises)
    result = GenerateResult()
    if not check:
        exercises.mkdir(parents=True, exist_ok=True)
    for src in sources:
        name = src.name
        new = make_exercise(src.read_text(encoding="utf-8"), name)
        target = exercises / name
        current = target.read_text(encoding="utf-8") if target.exists() else None
        if current == new:
            result.unchanged.append(name)
            manifest[name] = _sha(new)
            continue
        if check:
            result.stale.append(name)
            continue
        learner_changed = current is not None and manifest.get(name) != _sha(current)
        if learner_changed and manifest.get(name) == _sha(new):
            # the learner changed the file, and the course did not: nothing to merge, nothing to write
            result.yours.append(name)
            continue
        if learner_changed and not force:
            beside = target.with_name(name + ".new")
            beside.write_text(new, encoding="utf-8")
            result.kept.append(name)
            log(f"KEPT {target}: you have changed it, so it was not overwritten. The newly generated version "
                f"is in {beside.name}; merge by hand, or rerun with --force to overwrite (your file is then "
                f"copied to {name}.bak first).")
            continue
        if learner_changed:
            shutil.copyfile(target, target.with_name(name + ".bak"))
            result.forced.append(name)
            log(f"OVERWROTE {target} (--force); your version is saved as {name}.bak")
        target.write_text(new, encoding="utf-8")
        manifest[name] = _sha(new)
        result.written.append(name)
        log(f"wrote {target}")
    if check:
        for name in result.stale:
            log(f"OUT OF DATE: {exercises / name} differs from what solutions/{name} generates")
    else:
        _write_manifest(exercises, manifest)
    return result


# -- loading an implementation by path --------------------------------------------------------------

def load_module(path: Path | str, *, fresh: bool = False) -> ModuleType:
    """Import the module at ``path`` under a name unique to that path (so ``solutions/ch2_batchnorm.py``
    and ``exercises/ch2_batchnorm.py`` can be loaded side by side)."""
    path = Path(path).resolve()
    if not path.exists():
        raise FileNotFoundError(f"no such exercise module: {path}")
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:10]
    name = f"_npnorm_task_{path.stem}_{digest}"
    if not fresh and name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


# -- numeric self-checks ------------------------------------------------------------------------------

def expected_value(func: Callable[..., Any]) -> float:
    """The number stated in a self-check's docstring ("you should get about X")."""
    m = EXPECTED_RE.search(func.__doc__ or "")
    if not m:
        raise ValueError(f"{func.__name__}: its docstring must say 'you should get about <number>'")
    return float(m["value"])


def self_checks(namespace: Mapping[str, Any]) -> dict[str, Callable[[], float]]:
    """The ``self_check_<chapter>_<n>`` functions of a chapter module, by task id."""
    found = {}
    for name, obj in namespace.items():
        m = re.fullmatch(r"self_check_(\d+)_(\d+)", name)
        if m and callable(obj):
            found[f"{m[1]}.{m[2]}"] = obj
    return dict(sorted(found.items(), key=lambda kv: tuple(int(p) for p in kv[0].split("."))))


#: How close a self-check's result must be to the stated value (relative; the values are stated to
#: seven significant digits, and every self-check is a float64 computation).
SELF_CHECK_RTOL = 1e-6


def self_check_agrees(got: float, want: float) -> bool:
    """Whether a self-check's result ``got`` agrees with the stated value ``want``."""
    return abs(got - want) <= SELF_CHECK_RTOL * max(abs(want), 1e-2)


def fingerprint(**results: tuple[Any, tuple[int, ...]]) -> float:
    """One number that depends on every element of every result: ``sum(result * weights)`` with
    fixed random weights of the expected shape. A self-check returns it so that a mistake in any
    element of any returned array changes the number (and a wrong shape is named).

    ``fingerprint(dx=(dx, (6, 3)), dgamma=(dgamma, (3,)))``
    """
    import numpy as np

    rng = np.random.default_rng(20240607)
    total = 0.0
    for name, (value, shape) in results.items():
        if value is None:
            raise ValueError(f"{name} is None; expected an array of shape {tuple(shape)}")
        arr = np.asarray(value, dtype=np.float64)
        if arr.shape != tuple(shape):
            raise ValueError(f"{name} has shape {arr.shape}, expected {tuple(shape)}")
        weights = rng.uniform(0.5, 1.5, tuple(shape))
        total += float(np.sum(arr * weights))
    return total


def run_self_checks(namespace: Mapping[str, Any], out: Callable[[str], None] = print) -> int:
    """Run every self-check of a chapter module and print what you got next to what you should get.

    Called from the ``if __name__ == "__main__":`` block of each chapter module, which exits with
    status 1 when this returns a non-zero count. Returns the number of self-checks that ran and
    disagree with the stated value or raised (tasks not started do not count).
    """
    wrong = 0
    for task_id, func in self_checks(namespace).items():
        want = expected_value(func)
        try:
            got = float(func())
        except NotImplementedError as exc:
            if str(exc).startswith("Task "):
                title = str(exc).split(" - ")[0].split(": ", 1)[-1]
                out(f"Task {task_id}: not started ({title})")
                continue
            out(f"Task {task_id}: your code raised NotImplementedError: {exc} ... DIFFERS")
            wrong += 1
            continue
        except Exception as exc:  # noqa: BLE001 - show the learner what went wrong, keep going
            out(f"Task {task_id}: your code raised {type(exc).__name__}: {exc} ... DIFFERS")
            wrong += 1
            continue
        close = self_check_agrees(got, want)
        verdict = "matches" if close else "DIFFERS"
        out(f"Task {task_id}: you got {got:.7g}; you should get about {want:.7g} ... {verdict}")
        wrong += not close
    verb = "differs" if wrong == 1 else "differ"
    out(f"{wrong} of the self-checks above {verb}." if wrong else "No self-check differs.")
    out(f"Full check (a gradient check and a diagnosis): {check_command()}")
    return wrong


def self_check_main(namespace: Mapping[str, Any]) -> None:
    """The ``__main__`` block of a chapter module: run its self-checks; exit with status 1 if any differs
    (when run as a script; in a notebook it only prints)."""
    wrong = run_self_checks(namespace)
    if wrong and not _in_ipython():
        raise SystemExit(1)


# -- how to run the check, spelled the same everywhere ------------------------------------------------

def _in_ipython() -> bool:
    """True inside a Jupyter kernel or an IPython shell (where ``SystemExit`` shows as a traceback)."""
    shell = sys.modules.get("IPython")
    try:
        return shell is not None and shell.get_ipython() is not None  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001
        return False


def check_command(task: str = "", notebook: bool | None = None) -> str:
    """The command that checks ``task`` (``"2.3"``, a chapter ``"2"``, or everything for ``""``):
    ``make check TASK=2.3`` in a terminal, ``%run -m npnorm.check 2.3`` in a notebook."""
    if notebook is None:
        notebook = _in_ipython()
    if notebook:
        return f"%run -m npnorm.check {task}".rstrip()
    return f"make check TASK={task}" if task else "make check"


# -- command line -----------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m npnorm.exercises",
        description="Generate the learner's exercises/ from solutions/ (stubs raise NotImplementedError).")
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="write exercises/ from solutions/")
    gen.add_argument("--solutions", type=Path, default=SOLUTIONS_DIR, help="solution modules (default: %(default)s)")
    gen.add_argument("--exercises", type=Path, default=EXERCISES_DIR, help="where to write (default: %(default)s)")
    gen.add_argument("--force", action="store_true",
                     help="overwrite exercise files you have changed (each is first copied to <name>.bak)")
    gen.add_argument("--check", action="store_true",
                     help="write nothing; exit 1 if exercises/ is not what solutions/ generates")
    lst = sub.add_parser("list", help="list the tasks")
    lst.add_argument("--solutions", type=Path, default=SOLUTIONS_DIR)
    args = parser.parse_args(argv)
    try:
        if args.command == "list":
            for t in discover_tasks(args.solutions).values():
                print(f"{t.id:>5}  {t.title}  ({t.module}.py: {', '.join(t.functions)})")
            return 0
        result = generate(args.solutions, args.exercises, force=args.force, check=args.check)
    except (MarkerError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.check:
        print("exercises/ is up to date." if result.ok else "exercises/ is out of date: run python -m npnorm.exercises generate")
    else:
        print(f"{len(result.written)} written, {len(result.unchanged)} unchanged, "
              f"{len(result.yours)} yours with no update, {len(result.kept)} kept (changed by you; the "
              f"update is beside it as .new), {len(result.forced)} overwritten with --force.")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
