"""``python -m npnorm.check`` (what ``make check`` and ``%run -m npnorm.check`` run) end to end, in
subprocesses, on temporary copies of the exercises (the real exercises/ directory is never modified):
not started, passed, failed with a pointed message, the learner's output, time limits, Ctrl-C, task
ids spelled in other ways, tasks whose markers were stripped, exit codes, the page width."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from npnorm.check import CheckResult, TaskResult, main, select_tasks, task_details
from npnorm.exercises import REPO_ROOT, SOLUTIONS_DIR, discover_tasks, generate, replace_task_regions

ALL_TASKS = len(discover_tasks(SOLUTIONS_DIR))


def _env(cwd: Path) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), NUMBA_CACHE_DIR=str(cwd / ".numba_cache"))
    env.pop("PYTEST_ADDOPTS", None)
    return env


def run_check(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    run = subprocess.run([sys.executable, "-m", "npnorm.check", *args], cwd=cwd, env=_env(cwd),
                         capture_output=True, text=True, timeout=300)
    wide = [line for line in run.stdout.splitlines() if len(line) > 79 and not line.startswith("Checking /")]
    assert not wide, "the check's report must fit the page (79 columns):\n" + "\n".join(wide)
    return run


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
    assert "Next: task 1.1" in run.stdout and "then: make check TASK=1.1" in run.stdout


def test_a_copied_solution_passes_from_another_directory(pristine: Path, tmp_path: Path):
    _fill(pristine, "ch2_batchnorm", {"2.1", "2.3"})
    elsewhere = tmp_path / "somewhere" / "else"
    elsewhere.mkdir(parents=True)
    run = run_check("2", "--exercises-dir", str(pristine), cwd=elsewhere)
    assert run.returncode == 0, run.stdout + run.stderr
    lines = {line.split()[0]: line for line in run.stdout.splitlines() if line.startswith("  2.")}
    assert lines["2.1"].endswith("passed") and lines["2.3"].endswith("passed"), run.stdout
    assert lines["2.2"].endswith("not started") and lines["2.4"].endswith("not started"), run.stdout
    assert "2 passed, 3 not started." in run.stdout


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
    out = " ".join(run.stdout.split())          # the report is folded to the page width
    assert run.returncode == 1, out + run.stderr
    assert "4 failed, 1 not started." in out, out
    # catalogued mistakes are named
    assert "This looks like a common mistake (missing-variance-term)" in out, out
    assert "This looks like a common mistake (unbiased-variance)" in out, out
    assert "your file does not compile" in out and "ch5_adain.py, line" in out, out
    # the gradient failure: which input, worst relative error, where, the expected range, a hint
    assert "-> dx is wrong: at index" in out and "A correct float64 backward scores below 1e-07" in out, out
    assert "x_hat * mean(g * x_hat)" in out, out
    # the forward failure: the first mismatching element and its expected value
    assert "out (x of shape (6, 4), eps=1e-05) is wrong: first mismatch at index (0, 0)" in out, out
    assert "the variance is the biased one" in out, out
    # the exception: its type and the learner's line
    assert "your code raised ValueError" in out and "ch3_layernorm.py, line" in out and "rstd.T" in out, out


def test_usage_errors(tmp_path: Path, pristine: Path, capsys: pytest.CaptureFixture[str]):
    def usage(*args: str) -> str:
        assert main([*args, "--exercises-dir", str(pristine)]) == 2
        return capsys.readouterr().err

    assert "no task 'x9'" in usage("x9")
    assert "chapter 99 has no exercises. Chapters with exercises: 1, 2" in usage("99")
    assert "there is no task 2.9; chapter 2 has tasks 2.1, 2.2" in usage("2.9")
    assert main(["--exercises-dir", str(tmp_path / "missing")]) == 2
    assert "no exercise modules" in capsys.readouterr().err


@pytest.mark.parametrize("spelling, ids", [
    (["task-2-1"], ["2.1"]), (["Task 2.1"], ["2.1"]), (["2_1"], ["2.1"]), (["task2.1", "3"], ["2.1", "3.1", "3.2"]),
    (["2.3 3"], ["2.3", "3.1", "3.2"]), (["2.1,2.2"], ["2.1", "2.2"]), (["TASK 2.1:"], ["2.1"]),
])
def test_task_ids_spelled_other_ways(spelling: list[str], ids: list[str]):
    assert [t.id for t in select_tasks(discover_tasks(SOLUTIONS_DIR), spelling)] == ids


def test_tasks_come_from_solutions_not_from_the_learners_markers(tmp_path: Path, pristine: Path):
    """Issue 11, item 6: solutions copied in, then every comment stripped (a formatter, a paste)."""
    for path in SOLUTIONS_DIR.glob("ch*.py"):
        (pristine / path.name).write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    ch2 = pristine / "ch2_batchnorm.py"
    ch2.write_text("\n".join(line for line in ch2.read_text(encoding="utf-8").splitlines()
                             if not line.strip().startswith("#")) + "\n", encoding="utf-8")
    run = run_check("1", "2", "--exercises-dir", str(pristine), cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "7 passed." in run.stdout and "All selected tasks pass" in run.stdout, run.stdout
    assert run.stdout.count("BEGIN/END TASK 2.") == 5 and "BEGIN/END TASK 1." not in run.stdout, run.stdout
    assert "lines are missing from your file" in run.stdout, run.stdout


def test_a_failing_tasks_output_is_shown(tmp_path: Path, pristine: Path):
    source = (SOLUTIONS_DIR / "ch2_batchnorm.py").read_text(encoding="utf-8").replace(
        "    mu = x.mean(axis=0, keepdims=True)\n    xc = x - mu\n",
        "    mu = x.mean(axis=0, keepdims=True)\n    print('debug: mu has shape', mu.shape)\n    xc = x - mu + 1\n"
    ).replace("    n = dout.shape[0]\n    dbeta = dout.sum(axis=0)",
              "    n = dout.shape[0]\n    print('staged: n =', n)\n    dbeta = dout.sum(axis=0)")
    _fill(pristine, "ch2_batchnorm", {"2.1", "2.2"}, source)
    run = run_check("2.1", "2.2", "--exercises-dir", str(pristine), cwd=tmp_path)
    assert run.returncode == 1 and "what your code printed:" in run.stdout, run.stdout
    assert "| debug: mu has shape (1, 4)" in run.stdout, run.stdout
    assert "staged: n =" not in run.stdout, run.stdout          # a passing task's output: only on request


def test_show_output_shows_a_passing_tasks_output():
    task = discover_tasks(SOLUTIONS_DIR)["2.2"]
    result = TaskResult(task, [CheckResult("a check", "passed", output="staged: n = 6\n")])
    assert not any("staged" in line for line in task_details(result, SOLUTIONS_DIR))
    shown = task_details(result, SOLUTIONS_DIR, show_output=True)
    assert "       | staged: n = 6" in shown, shown


def _endless(pristine: Path) -> None:
    source = (SOLUTIONS_DIR / "ch3_layernorm.py").read_text(encoding="utf-8").replace(
        "    mu = x.mean(axis=-1, keepdims=True)\n", "    mu = x.mean(axis=-1, keepdims=True)\n    while True:\n        pass\n")
    _fill(pristine, "ch3_layernorm", {"3.1"}, source)
    _fill(pristine, "ch3_layernorm", {"3.2"})


def test_a_task_that_never_ends_is_stopped_and_named(tmp_path: Path, pristine: Path):
    _endless(pristine)
    run = run_check("3", "--timeout", "3", "--exercises-dir", str(pristine), cwd=tmp_path)
    assert run.returncode == 1, run.stdout + run.stderr
    assert re.search(r"^  3\.1 .* TIMED OUT$", run.stdout, re.M), run.stdout
    assert "stopped after 3 s" in run.stdout and "ch3_layernorm.py, line" in run.stdout, run.stdout
    assert re.search(r"^  3\.2 .* passed$", run.stdout, re.M), run.stdout     # the next task still runs


def test_ctrl_c_names_the_running_task(tmp_path: Path, pristine: Path):
    _endless(pristine)
    proc = subprocess.Popen([sys.executable, "-m", "npnorm.check", "3", "--timeout", "0", "--exercises-dir",
                             str(pristine)], cwd=tmp_path, env=_env(tmp_path), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout is not None
    seen = b""
    deadline = time.monotonic() + 120
    while b"3.1  LayerNorm" not in seen and time.monotonic() < deadline:   # the task's line: it is running
        chunk = os.read(proc.stdout.fileno(), 4096)
        if not chunk:
            break
        seen += chunk
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    rest, err = proc.communicate(timeout=60)
    out = (seen + rest).decode()
    assert proc.returncode == 130, out + err.decode()
    assert "Interrupted (Ctrl-C) while task 3.1 (LayerNorm forward and backward" in out, out
    assert "Traceback" not in out + err.decode(), out + err.decode()
