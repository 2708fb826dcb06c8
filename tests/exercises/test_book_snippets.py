"""The per-chapter exercise snippets (book/exercises/ch*.md) build without a warning when included in a
chapter - in the teacher edition (solutions folded under each exercise, code included from solutions/)
and in the learner edition (hide_solutions: no solution at all)."""

from __future__ import annotations

import html
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from npnorm.exercises import REPO_ROOT, SOLUTIONS_DIR

#: The chapters with exercise snippets (book/exercises/ch<n>.md).
CHAPTERS = (*range(1, 8), *range(9, 14))

# The configuration the book needs for the snippets (also described in book/exercises/README.md).
CONFIG = """\
title: exercise snippets
execute:
  execute_notebooks: "off"
exclude_patterns: ["exercises/*", "_build"]
sphinx:
  extra_extensions: [sphinx_exercise, sphinx_togglebutton]
  config:
    hide_solutions: {hide}
"""


def _jupyter_book() -> str:
    exe = Path(sys.executable).parent / "jupyter-book"
    found = str(exe) if exe.exists() else shutil.which("jupyter-book")
    if not found:
        pytest.skip("jupyter-book is not installed")
    return found


def _build(root: Path, hide: bool) -> dict[str, str]:
    book = root / "book"
    shutil.rmtree(book / "_build", ignore_errors=True)
    (book / "_config.yml").write_text(CONFIG.format(hide=str(hide).lower()))
    run = subprocess.run([_jupyter_book(), "build", str(book), "-W", "-n", "--keep-going"],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    pages = {}
    for n in CHAPTERS:
        rel = f"part/ch{n}.html" if n == 3 else f"ch{n}.html"
        raw = (book / "_build" / "html" / rel).read_text(encoding="utf-8")
        pages[f"ch{n}"] = html.unescape(re.sub(r"<[^>]+>", "", raw))
    return pages


@pytest.mark.slow
def test_snippets_build_in_both_editions(tmp_path: Path):
    book = tmp_path / "book"
    shutil.copytree(REPO_ROOT / "book" / "exercises", book / "exercises")
    shutil.copytree(SOLUTIONS_DIR, tmp_path / "solutions")
    (book / "part").mkdir()
    (book / "intro.md").write_text("# Intro\n")
    chapters = []
    for n in CHAPTERS:
        # chapter 3 lives one folder deeper: the snippets' code includes must not depend on where they are included from
        name, inc = (f"part/ch{n}", f"../exercises/ch{n}.md") if n == 3 else (f"ch{n}", f"exercises/ch{n}.md")
        (book / f"{name}.md").write_text(f"# Chapter {n}\n\n## Exercises\n\n```{{include}} {inc}\n```\n")
        chapters.append(f"  - file: {name}")
    (book / "_toc.yml").write_text("format: jb-book\nroot: intro\nchapters:\n" + "\n".join(chapters) + "\n")

    teacher = _build(tmp_path, hide=False)
    assert "def batchnorm_backward_fused" in teacher["ch2"] and "def layernorm_backward" in teacher["ch3"]
    assert "def _layernorm_rows" in teacher["ch7"] and "Task 7.1 - a fused Numba LayerNorm forward" in teacher["ch7"]

    learner = _build(tmp_path, hide=True)
    for ch, text in learner.items():
        assert "you should get about" in text and "make check TASK=" in text, ch
        assert "def " not in text, f"{ch}: the learner edition shows solution code"


# The library functions whose listing in a chapter would show the answer to an exercise task: the
# learner edition hides them (``:task:`` on the ``{literalinclude}``, see book/_ext/npnorm_book.py).
TASK_LISTINGS = {
    "numerical_gradient": "1.1", "batch_norm_backward_staged": "2.2", "batch_norm_backward": "2.3",
    "standardize_backward": "3.1", "layer_norm_backward": "3.1", "rms_norm_backward": "3.2",
    "group_norm_forward": "4.1", "group_norm_backward": "4.1", "adain_backward": "5.1",
    "power_iteration": "6.1", "weight_norm_backward": "6.2", "_ln_fwd_rows": "7.1",
    "ada_group_norm_forward": "9.1", "ada_group_norm_backward": "9.1", "modulate_backward": "9.1",
    "adaln_zero_backward": "9.3", "l2_normalize_backward_staged": "10.1", "l2_normalize_backward": "10.1",
    "qk_logits_backward": "10.2", "affine_like_backward_staged": "11.1", "affine_like_backward": "11.1",
    "patch_sq_norms": "11.2", "patch_norm_conv2d_forward": "11.2", "gradient_penalty_backward_staged": "12.1",
    "gradient_penalty_backward": "12.1", "chan_merge": "13.1", "local_response_norm_backward": "13.2",
}


def test_chapter_listings_of_task_answers_are_hidden_in_the_learner_edition():
    blocks = re.findall(r"```\{literalinclude\}[^\n]*\n((?::[\w-]+:[^\n]*\n)*)", "".join(
        p.read_text(encoding="utf-8") for p in sorted((REPO_ROOT / "book").glob("*.md"))))
    seen = set()
    for options in blocks:
        obj = re.search(r":pyobject: (\S+)", options)
        if obj and obj[1] in TASK_LISTINGS:
            seen.add(obj[1])
            assert f":task: {TASK_LISTINGS[obj[1]]}" in options, f"{obj[1]} must be marked :task: {TASK_LISTINGS[obj[1]]}"
    assert seen == set(TASK_LISTINGS), f"listings not found in the chapters: {set(TASK_LISTINGS) - seen}"
