"""exercises/ is generated from solutions/ and nothing else: in sync, every stub raises, no answer leaks;
the generator never loses a learner's work; task ids tie solutions, tests, self-checks and the book."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from npnorm import exercises as gen
from npnorm.exercises import (EXERCISES_DIR, MANIFEST_NAME, REPO_ROOT, SOLUTIONS_DIR, MarkerError, discover_tasks,
                              expected_value, find_regions, load_module, make_exercise, self_check_agrees, self_checks,
                              stub_lines)

TASKS = {  # fixed: the book's chapter numbers use them
    "1.1": "ch1_gradcheck", "1.2": "ch1_gradcheck",
    "2.1": "ch2_batchnorm", "2.2": "ch2_batchnorm", "2.3": "ch2_batchnorm", "2.4": "ch2_batchnorm",
    "2.5": "ch2_batchnorm",
    "3.1": "ch3_layernorm", "3.2": "ch3_layernorm",
    "4.1": "ch4_groupnorm", "4.2": "ch4_groupnorm",
    "5.1": "ch5_adain",
    "6.1": "ch6_weightnorm", "6.2": "ch6_weightnorm",
    "7.1": "ch7_numba",
    "9.1": "ch9_adaptive", "9.2": "ch9_adaptive", "9.3": "ch9_adaptive",
    "10.1": "ch10_transformers", "10.2": "ch10_transformers",
    "11.1": "ch11_divergence", "11.2": "ch11_divergence",
    "12.1": "ch12_lipschitz", "12.2": "ch12_lipschitz",
    "13.1": "ch13_catalog", "13.2": "ch13_catalog",
}
BOOK_EXERCISES = REPO_ROOT / "book" / "exercises"


def test_the_tasks_are_the_fixed_ones():
    assert {t.id: t.module for t in discover_tasks(SOLUTIONS_DIR).values()} == TASKS


def test_exercises_are_what_the_solutions_generate():
    result = gen.generate(SOLUTIONS_DIR, EXERCISES_DIR, check=True, log=lambda _: None)
    assert not result.stale, (
        f"exercises/ is out of date for {result.stale}: run `python -m npnorm.exercises generate` and commit. "
        "(If you are a learner working in exercises/, this only means you have edited it.)")
    names = sorted(p.name for p in SOLUTIONS_DIR.glob("ch*.py"))
    assert sorted(p.name for p in EXERCISES_DIR.glob("ch*.py")) == names


def test_manifest_records_the_committed_exercises():
    manifest = json.loads((EXERCISES_DIR / MANIFEST_NAME).read_text())["files"]
    for path in EXERCISES_DIR.glob("ch*.py"):
        assert manifest[path.name] == gen._sha(path.read_text(encoding="utf-8")), path.name


def test_every_stub_is_exactly_one_raise_with_its_task_id():
    for path in EXERCISES_DIR.glob("ch*.py"):
        lines = path.read_text(encoding="utf-8").splitlines()
        for r in find_regions("\n".join(lines), str(path)):
            body = lines[r.begin + 1:r.end]
            expected = [line.rstrip("\n") for line in stub_lines(r.indent, r.task_id, r.title)]
            assert body == expected, f"{path.name}: the region of task {r.task_id} is not just the stub: {body}"


def test_every_stub_raises_not_implemented_error():
    """Loading each pristine exercise module and running its self-checks: every task is 'not started'."""
    for path in sorted(EXERCISES_DIR.glob("ch*.py")):
        printed: list[str] = []
        mod = load_module(path)
        wrong = gen.run_self_checks(vars(mod), out=printed.append)
        assert wrong == 0
        started = [p for p in printed if p.startswith("Task") and "not started" not in p]
        assert not started, f"{path.name}: a stub did not raise NotImplementedError: {started}"


def test_every_task_has_tests_and_every_test_marker_names_a_task():
    marked: dict[str, int] = {}
    for path in Path(__file__).parent.glob("test_ch*.py"):
        for tid in re.findall(r'@pytest\.mark\.task\("([^"]+)"\)', path.read_text(encoding="utf-8")):
            assert TASKS.get(tid) and path.stem == f"test_{TASKS[tid]}", f"{path.name}: marker for task {tid}"
            marked[tid] = marked.get(tid, 0) + 1
    assert set(marked) == set(TASKS)


@pytest.mark.parametrize("chapter", sorted(set(TASKS.values())))
def test_self_checks_state_what_the_solution_gives(chapter):
    """The "you should get about X" numbers in the docstrings and the book are what the solution computes."""
    mod = load_module(SOLUTIONS_DIR / f"{chapter}.py")
    checks = self_checks(vars(mod))
    assert set(checks) == {t for t, c in TASKS.items() if c == chapter}
    number = re.match(r"ch(\d+)_", chapter)[1]                       # two-digit chapters too
    snippet = BOOK_EXERCISES / f"ch{number}.md"
    text = snippet.read_text(encoding="utf-8") if snippet.exists() else ""
    for tid, func in checks.items():
        want = expected_value(func)
        got = float(func())
        assert self_check_agrees(got, want), f"task {tid}: docstring says {want}, solution gives {got}"
        stated = gen.EXPECTED_RE.search(func.__doc__ or "")["value"]
        assert f"about {stated}" in text, f"{snippet.name} must state 'about {stated}' for task {tid}"


def test_book_snippets_cover_every_task():
    for tid, chapter in TASKS.items():
        text = (BOOK_EXERCISES / f"ch{tid.split('.')[0]}.md").read_text(encoding="utf-8")
        label = "task-" + tid.replace(".", "-")
        assert f":label: {label}" in text and f"{{solution}} {label}" in text, (tid, "exercise and solution")
        assert f"make check TASK={tid}" in text and f"exercises/{chapter}.py" in text, tid
        for fn in discover_tasks(SOLUTIONS_DIR)[tid].functions:
            assert f":pyobject: {fn}" in text, (tid, fn)


# -- the generator --------------------------------------------------------------------------------

SOLUTION = '''"""Chapter 9 - Demo."""


def square(x):
    """Return x squared."""
    # hint: kept
    # BEGIN TASK 9.1: squaring
    return x * x
    # END TASK 9.1
'''


def _gen(tmp_path: Path, **kw):
    return gen.generate(tmp_path / "sol", tmp_path / "ex", log=lambda _: None, **kw)


@pytest.fixture
def demo(tmp_path: Path) -> Path:
    (tmp_path / "sol").mkdir()
    (tmp_path / "sol" / "ch9_demo.py").write_text(SOLUTION)
    return tmp_path


def test_generate_writes_stubs_and_a_manifest(demo: Path):
    result = _gen(demo)
    assert result.written == ["ch9_demo.py"]
    text = (demo / "ex" / "ch9_demo.py").read_text()
    assert "return x * x" not in text and "# hint: kept" in text and '"""Return x squared."""' in text
    assert "raise NotImplementedError(\n        'Task 9.1: squaring" in text and "make check TASK=9.1" in text
    assert max(len(line) for line in text.splitlines()) <= 79
    with pytest.raises(NotImplementedError, match=r"^Task 9\.1: squaring"):
        load_module(demo / "ex" / "ch9_demo.py").square(3)
    assert _gen(demo).unchanged == ["ch9_demo.py"]


def test_generate_never_overwrites_a_learners_file(demo: Path):
    _gen(demo)
    mine = (demo / "ex" / "ch9_demo.py").read_text().replace("raise NotImplementedError(", "return x ** 2  # (")
    (demo / "ex" / "ch9_demo.py").write_text(mine)
    (demo / "sol" / "ch9_demo.py").write_text(SOLUTION.replace("Return x squared.", "Return x**2."))
    result = _gen(demo)
    assert result.kept == ["ch9_demo.py"] and not result.ok
    assert (demo / "ex" / "ch9_demo.py").read_text() == mine                    # untouched
    assert "Return x**2." in (demo / "ex" / "ch9_demo.py.new").read_text()      # the new version beside it
    assert gen.main(["generate", "--solutions", str(demo / "sol"), "--exercises", str(demo / "ex")]) == 1
    result = _gen(demo, force=True)
    assert result.forced == ["ch9_demo.py"]
    assert (demo / "ex" / "ch9_demo.py.bak").read_text() == mine                # still not lost
    assert "Return x**2." in (demo / "ex" / "ch9_demo.py").read_text()


def test_generate_leaves_a_learners_file_alone_when_the_course_did_not_change(demo: Path):
    _gen(demo)
    mine = (demo / "ex" / "ch9_demo.py").read_text().replace("raise NotImplementedError(", "return x ** 2  # (")
    (demo / "ex" / "ch9_demo.py").write_text(mine)
    result = _gen(demo)
    assert result.ok and result.yours == ["ch9_demo.py"] and not result.kept
    assert not (demo / "ex" / "ch9_demo.py.new").exists()                  # no copy of the old stub beside it
    assert (demo / "ex" / "ch9_demo.py").read_text() == mine
    assert gen.main(["generate", "--solutions", str(demo / "sol"), "--exercises", str(demo / "ex")]) == 0


def test_generate_updates_untouched_files_and_check_mode_writes_nothing(demo: Path):
    _gen(demo)
    (demo / "sol" / "ch9_demo.py").write_text(SOLUTION.replace("Return x squared.", "Square x."))
    before = (demo / "ex" / "ch9_demo.py").read_text()
    assert _gen(demo, check=True).stale == ["ch9_demo.py"]
    assert (demo / "ex" / "ch9_demo.py").read_text() == before
    assert gen.main(["generate", "--check", "--solutions", str(demo / "sol"), "--exercises", str(demo / "ex")]) == 1
    assert _gen(demo).written == ["ch9_demo.py"]                                # untouched -> updated silently
    assert "Square x." in (demo / "ex" / "ch9_demo.py").read_text()


@pytest.mark.parametrize("bad, message", [
    (SOLUTION.replace("    # END TASK 9.1\n", ""), "never closed"),
    (SOLUTION.replace("# END TASK 9.1", "# END TASK 9.2"), "does not match"),
    (SOLUTION.replace("# BEGIN TASK 9.1: squaring", "# BEGIN TASK 9.1 squaring"), "malformed"),
    ("# BEGIN TASK 9.1: top level\nx = 1\n# END TASK 9.1\n", "inside a function"),
])
def test_malformed_markers_are_reported_with_their_line(bad: str, message: str):
    with pytest.raises(MarkerError, match=message):
        make_exercise(bad, "ch9_demo.py")


@pytest.mark.parametrize("folder", [SOLUTIONS_DIR, EXERCISES_DIR], ids=["solutions", "exercises"])
def test_exercise_files_fit_the_page(folder: Path):
    """A learner reads these files on a page, in an editor split and in JupyterLab: 79 columns."""
    wide = [f"{path.name}:{i}: {len(line)} columns" for path in sorted(folder.glob("ch*.py"))
            for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if len(line) > 79]
    assert not wide, "\n".join(wide)


def test_self_check_script_exits_non_zero_when_a_check_differs_or_raises(tmp_path: Path):
    import os
    import subprocess
    import sys

    ex = tmp_path / "exercises"
    gen.generate(SOLUTIONS_DIR, ex, log=lambda _: None)
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), NUMBA_CACHE_DIR=str(REPO_ROOT / ".numba_cache"))

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, str(ex / "ch2_batchnorm.py")], env=env, capture_output=True,
                              text=True, timeout=120)

    first = run()
    assert first.returncode == 0 and "Task 2.1: not started (the BatchNorm forward pass" in first.stdout, first
    assert "Task 2.1: not started (Task 2.1" not in first.stdout             # the id is not repeated
    solution = (SOLUTIONS_DIR / "ch2_batchnorm.py").read_text(encoding="utf-8")
    path = ex / "ch2_batchnorm.py"
    wrong = solution.replace("var = np.mean(xc * xc, axis=0, keepdims=True)\n    std",
                             "var = np.var(x, axis=0, ddof=1, keepdims=True)\n    std")
    broken = solution.replace("    dbeta = dout.sum(axis=0)\n    dgamma = np.sum(dout * x_hat, axis=0)\n    g =",
                              "    dbeta = dout.sum(axis=1)\n    dgamma = np.sum(dout * x_hat, axis=0)\n    g =")
    assert wrong != solution and broken != solution
    text = gen.replace_task_regions(path.read_text(encoding="utf-8"), wrong, {"2.1"})
    path.write_text(gen.replace_task_regions(text, broken, {"2.3"}), encoding="utf-8")
    second = run()
    assert second.returncode == 1, second
    assert "Task 2.1: you got" in second.stdout and "DIFFERS" in second.stdout, second.stdout
    assert "Task 2.3: your code raised ValueError: dbeta has shape (6,), expected (3,)" in second.stdout, second.stdout
