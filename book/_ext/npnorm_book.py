"""Sphinx hooks for the npnorm book.

* Jupyter Book always loads sphinx-thebe (live code cells via Binder). This book runs offline and
  has thebe switched off, yet the extension still injects its loader on every page - twice, which
  throws a JavaScript ``SyntaxError`` and names a CDN URL. We drop those scripts from every page.
* Two editions from one source. ``hide_solutions`` (sphinx-exercise's option, set by
  ``npnorm/tools/build_book.py --learner``) makes this the learner edition; the tag ``learner`` or
  ``teacher`` is set accordingly, so ``{only} learner`` / ``{only} teacher`` blocks describe the
  edition a reader holds.
* ``{literalinclude}`` takes one more option, ``:task: 2.3``: the listing is the answer to that
  exercise task. The teacher edition shows it; the learner edition shows, in its place, a note
  naming the task and the exercise file where the learner writes that code.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from docutils import nodes
from docutils.parsers.rst import directives
from sphinx.directives.code import LiteralInclude

ROOT = Path(__file__).resolve().parents[2]


def _drop_thebe(app, pagename: str, templatename: str, context: dict[str, Any], doctree) -> None:
    scripts = context.get("script_files")
    if not scripts:
        return
    keep = []
    for script in scripts:
        body = getattr(script, "attributes", {}).get("body", "") or ""
        if "sphinx-thebe" in str(script) or "THEBE_JS_URL" in body:
            continue
        keep.append(script)
    scripts[:] = keep


def _edition_tag(app, config) -> None:
    edition = "learner" if getattr(config, "hide_solutions", False) else "teacher"
    app.tags.add(edition)


def _task_file(task: str) -> str:
    """``exercises/ch2_batchnorm.py`` for task ``2.3`` (from the solutions' file names)."""
    chapter = task.split(".")[0]
    found = sorted((ROOT / "solutions").glob(f"ch{chapter}_*.py"))
    return f"exercises/{found[0].name}" if found else "exercises/"


class TaskLiteralInclude(LiteralInclude):
    """``literalinclude`` with ``:task: N.k``: hidden in the learner edition (see the module docstring)."""

    option_spec = {**LiteralInclude.option_spec, "task": directives.unchanged_required}

    def run(self) -> list[nodes.Node]:
        task = self.options.pop("task", None)
        if task is None:
            return super().run()
        if not re.fullmatch(r"\d+\.\d+", task.strip()):
            raise self.error(f":task: must be a task id such as 2.3, not {task!r}")
        task = task.strip()
        if not getattr(self.env.config, "hide_solutions", False):
            return super().run()
        obj = self.options.get("pyobject", "this code")
        text = (f"Left out of the learner edition: {obj} is what exercise {task} asks you to write "
                f"(in {_task_file(task)}; check it with make check TASK={task}).")
        note = nodes.admonition(classes=["note", "task-listing-hidden"])
        note += nodes.title(text=f"Task {task}")
        note += nodes.paragraph(text=text)
        return [note]


def setup(app) -> dict[str, Any]:
    app.connect("html-page-context", _drop_thebe, priority=900)
    app.connect("config-inited", _edition_tag)
    app.add_directive("literalinclude", TaskLiteralInclude, override=True)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "version": "2"}
