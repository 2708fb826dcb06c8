"""What a learner runs works from a fresh clone, a moved clone and the wrong interpreter: the
dependency guard prints how to run npnorm instead of a traceback, Numba's cache stays out of the
source tree without make, and make rebuilds an environment made for another place."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_without_its_dependencies_npnorm_says_how_to_run_it(tmp_path: Path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    # -S: no site-packages, so neither numpy nor numba can be found (an interpreter outside .venv)
    run = subprocess.run([sys.executable, "-S", "-m", "npnorm.check", "2.3"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 1
    assert "Traceback" not in run.stderr, run.stderr
    assert "npnorm needs numpy and numba" in run.stderr and "make check TASK=2.3" in run.stderr, run.stderr
    assert "%run -m npnorm.check 2.3" in run.stderr and "make lab" in run.stderr, run.stderr


def test_numba_cache_is_outside_the_source_tree_without_make(tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["PYTHONPATH"] = str(ROOT)
    code = "import os, npnorm, numba; print(os.environ['NUMBA_CACHE_DIR']); print(numba.config.CACHE_DIR)"
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    env_dir, numba_dir = run.stdout.split()
    assert env_dir == numba_dir == str(ROOT / ".numba_cache")
    assert not Path(env_dir).resolve().is_relative_to((ROOT / "npnorm").resolve())


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_rebuilds_an_environment_made_for_another_place(tmp_path: Path):
    for name in ("Makefile", "requirements.txt", "constraints.txt"):
        shutil.copy(ROOT / name, tmp_path / name)
    site = tmp_path / ".venv" / "lib" / "python3.11" / "site-packages"
    site.mkdir(parents=True)
    (site / "npnorm-project.pth").write_text("/where/the/clone/was\n")
    (tmp_path / ".venv" / ".npnorm-installed").touch()
    run = subprocess.run(["make", "-n", "check", "TASK=2.3"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=60)
    assert "made for /where/the/clone/was" in run.stdout and "rebuilding .venv" in run.stdout, run.stdout
    assert "-m venv" in run.stdout and "npnorm.check 2.3" in run.stdout, run.stdout
    assert not (tmp_path / ".venv").exists()
    # made here: nothing to rebuild
    site.mkdir(parents=True)
    (site / "npnorm-project.pth").write_text(f"{tmp_path}\n")
    (tmp_path / ".venv" / ".npnorm-installed").touch()
    run = subprocess.run(["make", "-n", "check", "TASK=2.3"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=60)
    assert "rebuilding" not in run.stdout and "-m venv" not in run.stdout, run.stdout


def test_lab_notebooks_have_the_included_code_and_no_raw_myst(tmp_path: Path):
    import json

    from npnorm.tools.lab import write_notebooks

    def markdown(folder: Path, name: str) -> str:
        nb = json.loads((folder / f"{name}.ipynb").read_text())
        return "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")

    learner = write_notebooks(tmp_path / "learner", learner=True)
    assert {p.stem for p in learner} >= {"intro", "gradcheck", "batchnorm", "layernorm"}
    for path in learner:
        text = markdown(path.parent, path.stem)
        for raw in ("{literalinclude}", "{include}", "{cite}", "{eq}", "{exercise}", "{solution}", "{doc}"):
            assert raw not in text, f"{path.name}: raw MyST {raw}"
    bn = markdown(tmp_path / "learner", "batchnorm")
    assert "#### Exercise: Task 2.3" in bn and "**Task 2.3** - this listing is left out" in bn
    assert "def batch_norm_backward(" not in bn and "**Solution**" not in bn
    assert "def batch_norm_forward" not in bn or "def batch_norm_backward_staged" not in bn
    teacher = write_notebooks(tmp_path / "teacher", learner=False)
    bn = markdown(teacher[0].parent, "batchnorm")
    assert "def batch_norm_backward(" in bn and "**Solution**" in bn and "def batchnorm_backward_fused" in bn


def test_every_exported_layer_documents_forward_and_backward():
    import inspect

    import npnorm

    for name in npnorm.__all__:
        cls = getattr(npnorm, name)
        if isinstance(cls, type) and issubclass(cls, npnorm.Module) and cls is not npnorm.Module:
            for method in ("forward", "backward"):
                assert inspect.getdoc(getattr(cls, method)), f"{name}.{method} has no docstring"
