"""``python -m npnorm.check`` end to end, in subprocesses, on temporary copies of the exercises (the real
exercises/ directory is never modified): not started, passed, failed with a pointed message, exit codes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from npnorm.exercises import REPO_ROOT, SOLUTIONS_DIR, generate, replace_task_regions

ALL_TASKS = 16


def run_check(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), NUMBA_CACHE_DIR=str(cwd / ".numba_cache"))
    env.pop("PYTEST_ADDOPTS", None)
    return subprocess.run([sys.executable, "-m", "npnorm.check", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def pristine(tmp_path: Path) -> Path:
    """A freshly generated, untouched copy of the exercises."""
    ex = tmp_path / "exercises"
    generate(SOLUTIONS_DIR, ex, log=lambda _: None)
    return ex


def _fill(ex: Path, chapter: str, tasks: set[str], source: str | None = None) -> None:
    """Copy the solution (or a mistaken version of it) of ``tasks`` into the learner's file."""
    path = ex / f"{chapter}.py"
    src = source if source is not None else (SOLUTIONS_DIR / f"{chapter}.py").read_text(encoding="utf-8")
    path.write_text(replace_task_regions(path.read_text(encoding="utf-8"), src, tasks), encoding="utf-8")


def test_untouched_exercises_are_all_not_started(pristine: Path, tmp_path: Path):
    run = run_check("--exercises-dir", str(pristine), cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.count("not started") == ALL_TASKS + 1, run.stdout        # every task + the summary
    assert f"{ALL_TASKS} not started." in run.stdout
    assert "Next: task 1.1" in run.stdout


def test_a_copied_solution_passes_from_another_directory(pristine: Path, tmp_path: Path):
    _fill(pristine, "ch2_batchnorm", {"2.1", "2.3"})
    elsewhere = tmp_path / "somewhere" / "else"
    elsewhere.mkdir(parents=True)
    run = run_check("2", "--exercises-dir", str(pristine), cwd=elsewhere)
    assert run.returncode == 0, run.stdout + run.stderr
    lines = {line.split()[0]: line for line in run.stdout.splitlines() if line.startswith("  2.")}
    assert lines["2.1"].endswith("passed") and lines["2.3"].endswith("passed"), run.stdout
    assert lines["2.2"].endswith("not started") and lines["2.4"].endswith("not started"), run.stdout
    assert "2 passed, 2 not started." in run.stdout


def test_plausible_mistakes_fail_with_a_pointed_message(pristine: Path, tmp_path: Path):
    solution = (SOLUTIONS_DIR / "ch2_batchnorm.py").read_text(encoding="utf-8")
    # 2.3: the x_hat * sum(g * x_hat) term forgotten
    _fill(pristine, "ch2_batchnorm", {"2.3"},
          solution.replace(" - x_hat * np.sum(g * x_hat, axis=0, keepdims=True))", ")"))
    # 2.1: normalizing with the unbiased variance
    _fill(pristine, "ch2_batchnorm", {"2.1"},
          solution.replace("var = np.mean(xc * xc, axis=0, keepdims=True)\n    std = np.sqrt(var + eps)\n    rstd",
                           "var = np.var(x, axis=0, ddof=1, keepdims=True)\n    std = np.sqrt(var + eps)\n    rstd"))
    # 3.2: a shape error inside the learner's code
    _fill(pristine, "ch3_layernorm", {"3.2"}, (SOLUTIONS_DIR / "ch3_layernorm.py").read_text(encoding="utf-8")
          .replace("x_hat = x * rstd\n", "x_hat = x * rstd.T\n"))
    # 5.1: a file that does not compile
    ch5 = pristine / "ch5_adain.py"
    ch5.write_text(ch5.read_text(encoding="utf-8").replace("    # BEGIN TASK 5.1: AdaIN forward and backward to content and style\n",
                                                          "    # BEGIN TASK 5.1: AdaIN forward and backward to content and style\n    x = (\n", 1))
    run = run_check("2.1", "2.3", "3.2", "1.1", "5", "--exercises-dir", str(pristine), cwd=tmp_path)
    out = run.stdout
    assert run.returncode == 1, out + run.stderr
    assert "4 failed, 1 not started." in out, out
    assert "your file does not compile" in out and "ch5_adain.py, line" in out, out
    # the gradient failure: which input, worst relative error, where, the expected range, a hint
    assert "-> dx is wrong: at index" in out and "A correct float64 backward scores below 1e-07" in out, out
    assert "x_hat * mean(g * x_hat)" in out, out
    # the forward failure: the first mismatching element and its expected value
    assert "out (x of shape (6, 4), eps=1e-05) is wrong: first mismatch at index (0, 0)" in out, out
    assert "the variance is the biased one" in out, out
    # the exception: its type and the learner's line
    assert "your code raised ValueError" in out and "ch3_layernorm.py, line" in out and "rstd.T" in out, out


def test_usage_errors(tmp_path: Path, pristine: Path):
    run = run_check("9.9", "--exercises-dir", str(pristine), cwd=tmp_path)
    assert run.returncode == 2 and "no task '9.9'" in run.stderr
    run = run_check("--exercises-dir", str(tmp_path / "missing"), cwd=tmp_path)
    assert run.returncode == 2 and "no exercise modules" in run.stderr
