"""JupyterLab for learners: ``make lab`` (``python -m npnorm.tools.lab [--teacher] [JUPYTER ARGS]``).

* **The whole project is served** (not only ``book/``), so the chapters, ``exercises/`` (the files a
  learner edits) and ``solutions/`` are all reachable from the file browser.
* **Chapters as readable notebooks.** The chapters are MyST-markdown files (``book/*.md``). Opened
  directly, JupyterLab (with Jupytext) shows them as notebooks, but the MyST-only parts - the
  ``{literalinclude}`` listings, ``{include}``-d exercises, ``{cite}``, ``{eq}``, labels, exercise
  and solution boxes - appear as raw directive text, and the included code is missing. So this
  command first writes ``notebooks/<chapter>.ipynb`` (not committed) from every chapter of
  ``book/_toc.yml``: the same code cells, and markdown in which every listing is the included code
  itself, every exercise is written out, and roles become plain text. The learner edition (the
  default) leaves out solutions and the listings an exercise asks for, as ``make book-learner``
  does; ``--teacher`` keeps them. Opening JupyterLab on ``notebooks/intro.ipynb``.
* Jupytext stays the default viewer for ``.md`` files (a project-local settings directory,
  ``.jupyter-lab-settings/``), so the chapter sources still open as notebooks for editing; saving
  writes the ``.md`` back without outputs.

The kernel imports this checkout's ``npnorm`` (``PYTHONPATH`` is set to the project root); in a
notebook, ``%run -m npnorm.check 2.3`` checks an exercise with the kernel's own interpreter.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BOOK = ROOT / "book"
NOTEBOOKS = ROOT / "notebooks"
SETTINGS = ROOT / ".jupyter-lab-settings"
VIEWER_FILE = SETTINGS / "@jupyterlab" / "docmanager-extension" / "plugin.jupyterlab-settings"
DEFAULT_VIEWERS = {"markdown": "Jupytext Notebook", "myst": "Jupytext Notebook"}

FENCE_OPEN = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|:{3,})\{(?P<name>[\w:-]+)\}[ \t]*(?P<arg>.*)$")
ROLE = re.compile(r"\{(?P<role>[\w:-]+)\}`(?P<text>[^`]*)`")


def write_settings() -> Path:
    """Make Jupytext Notebook the default viewer for .md files (keeping other saved settings)."""
    config = {}
    if VIEWER_FILE.is_file():
        try:
            config = json.loads(VIEWER_FILE.read_text())
        except json.JSONDecodeError:
            config = {}
    config.setdefault("defaultViewers", {}).update(DEFAULT_VIEWERS)
    VIEWER_FILE.parent.mkdir(parents=True, exist_ok=True)
    VIEWER_FILE.write_text(json.dumps(config, indent=2))
    return VIEWER_FILE


# -- MyST -> notebook markdown ------------------------------------------------------------------------------

def python_object(source: str, name: str) -> str:
    """The source of a function or class (``Class.method`` too) in a module's text, as Sphinx's
    ``:pyobject:`` takes it."""
    tree = ast.parse(source)
    lines = source.splitlines()
    scope: list[ast.stmt] = list(tree.body)
    node = None
    for part in name.split("."):
        node = next((n for n in scope if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                     and n.name == part), None)
        if node is None:
            raise KeyError(f"no {name} in the module")
        scope = list(getattr(node, "body", []))
    assert node is not None
    start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])]) - 1
    text = "\n".join(lines[start:node.end_lineno])
    indent = len(text) - len(text.lstrip())
    return "\n".join(line[indent:] for line in text.splitlines())


def _resolve(path: str, base: Path) -> Path:
    return (BOOK / path.lstrip("/")) if path.startswith("/") else (base / path)


def _options(body: list[str]) -> tuple[dict[str, str], list[str]]:
    options: dict[str, str] = {}
    i = 0
    while i < len(body) and re.match(r"^\s*:[\w-]+:", body[i]):
        m = re.match(r"^\s*:([\w-]+):\s*(.*)$", body[i])
        assert m is not None
        options[m[1]] = m[2].strip()
        i += 1
    return options, body[i:]


def _literalinclude(arg: str, options: dict[str, str], base: Path, learner: bool) -> str:
    task = options.get("task")
    if learner and task:
        return (f"> **Task {task}** - this listing is left out of the learner edition: "
                f"`{options.get('pyobject', 'this code')}` is what exercise {task} asks you to write.")
    path = _resolve(arg.strip(), base)
    text = path.read_text(encoding="utf-8")
    if "pyobject" in options:
        text = python_object(text, options["pyobject"])
    elif "lines" in options:
        keep: list[str] = []
        all_lines = text.splitlines()
        for part in options["lines"].split(","):
            a, _, b = part.partition("-")
            keep += all_lines[int(a) - 1:int(b or a)]
        text = "\n".join(keep)
    if "start-after" in options:
        text = text.split(options["start-after"], 1)[-1].split("\n", 1)[-1]
    if "end-before" in options:
        text = text.split(options["end-before"], 1)[0]
    language = options.get("language", "python")
    return f"```{language}\n{text.rstrip()}\n```"


def _roles(text: str) -> str:
    def role(m: re.Match[str]) -> str:
        name, body = m["role"], m["text"]
        shown = re.sub(r"\s*<[^>]*>$", "", body) if "<" in body else body
        if name == "cite" or name.startswith("cite:"):
            return "[" + ", ".join(k.strip() for k in body.split(",")) + "]"
        if name in ("eq", "numref", "ref", "doc", "term", "download"):
            return f"({shown})" if name == "eq" else shown
        if name == "math":
            return f"${body}$"
        if name.startswith("glue"):
            return f"*[{body.split(':')[0]}: computed in a cell above]*"
        return shown
    return ROLE.sub(role, text)


def myst_to_markdown(text: str, base: Path = BOOK, learner: bool = True) -> str:
    """Notebook markdown for a MyST markdown cell: directives written out, includes resolved."""
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        m = FENCE_OPEN.match(lines[i])
        if not m:
            line = lines[i]
            if re.match(r"^\s*\([\w:.-]+\)=\s*$", line):          # a label target: (name)=
                i += 1
                continue
            out.append(_roles(line))
            i += 1
            continue
        fence, name, arg = m["fence"], m["name"], m["arg"]
        j = i + 1
        while j < len(lines) and lines[j].strip() != fence:
            j += 1
        options, body = _options(lines[i + 1:j])
        content = "\n".join(body).strip("\n")
        i = j + 1
        if name == "literalinclude":
            out.append(_literalinclude(arg, options, base, learner))
        elif name == "include":
            path = _resolve(arg.strip(), base)
            out.append(myst_to_markdown(path.read_text(encoding="utf-8"), path.parent, learner))
        elif name == "only":
            if arg.strip() == ("learner" if learner else "teacher"):
                out.append(myst_to_markdown(content, base, learner))
        elif name == "solution":
            if not learner:
                out.append("**Solution**\n\n" + myst_to_markdown(content, base, learner))
        elif name == "exercise":
            out.append(f"#### Exercise: {_roles(arg)}\n\n" + myst_to_markdown(content, base, learner))
        elif name == "math":
            label = f" \\tag{{{options['label']}}}" if "label" in options else ""
            out.append(f"$$\n{content}{label}\n$$")
        elif name in ("code-cell",):
            out.append(f"```python\n{content}\n```")
        elif name in ("figure", "image"):
            out.append(f"![{content or arg}]({arg.strip()})")
        else:                                                   # admonitions: note, tip, admonition, ...
            title = _roles(arg) if arg.strip() else name.capitalize()
            inner = myst_to_markdown(content, base, learner)
            out.append("\n".join([f"> **{title}**", ">"] + [f"> {ln}" if ln else ">" for ln in inner.splitlines()]))
    return "\n".join(out)


def chapters() -> list[str]:
    """The chapter files of ``book/_toc.yml``, in order (the root first)."""
    import yaml

    toc = yaml.safe_load((BOOK / "_toc.yml").read_text())
    names = [toc["root"]]
    for part in toc.get("parts", []):
        names += [c["file"] for c in part.get("chapters", [])]
    names += [c["file"] for c in toc.get("chapters", [])]
    return names


def write_notebooks(out: Path = NOTEBOOKS, learner: bool = True) -> list[Path]:
    """``notebooks/<chapter>.ipynb`` for every chapter (see the module docstring)."""
    import jupytext

    out.mkdir(parents=True, exist_ok=True)
    (out / "README.md").write_text(
        "# Generated by `make lab` - do not edit\n\nThe book's chapters as notebooks, with every listing "
        "and exercise written out. The sources are `book/*.md`; edit those. Your exercises are in "
        "`exercises/`; check one from a notebook with `%run -m npnorm.check 2.3`.\n")
    written = []
    for name in chapters():
        source = BOOK / f"{name}.md"
        nb = jupytext.read(source)
        for cell in nb.cells:
            if cell.cell_type == "markdown":
                cell.source = myst_to_markdown(cell.source, source.parent, learner)
        edition = "learner" if learner else "teacher"
        note = jupytext.reads(f"*Generated from `book/{name}.md` by `make lab` ({edition} edition): edit "
                              "that file, not this notebook.*", fmt="md").cells[0]
        nb.cells.insert(0, note)
        nb.metadata.pop("jupytext", None)
        target = out / f"{Path(name).name}.ipynb"
        jupytext.write(nb, target, fmt="ipynb")
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make lab", description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", action="store_true", help="keep solutions in the notebooks")
    parser.add_argument("--no-launch", action="store_true", help="write the notebooks, do not start JupyterLab")
    args, rest = parser.parse_known_args(argv if argv is not None else sys.argv[1:])
    written = write_notebooks(learner=not args.teacher)
    print(f"wrote {len(written)} chapter notebooks to {NOTEBOOKS.relative_to(ROOT)}/")
    if args.no_launch:
        return 0
    write_settings()
    env = dict(os.environ)
    env["JUPYTERLAB_SETTINGS_DIR"] = str(SETTINGS)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.setdefault("NUMBA_CACHE_DIR", str(ROOT / ".numba_cache"))
    env.pop("MPLBACKEND", None)  # inline figures in the notebooks
    exe = Path(sys.executable).with_name("jupyter-lab")
    cmd = [str(exe)] if exe.is_file() else [shutil.which("jupyter-lab") or "jupyter-lab"]
    cmd += [f"--ServerApp.root_dir={ROOT}", "--LabApp.default_url=/lab/tree/notebooks/intro.ipynb", *rest]
    if hasattr(os, "geteuid") and os.geteuid() == 0 and "--allow-root" not in cmd:
        cmd.append("--allow-root")  # containers often run as root; JupyterLab refuses without it
    os.execvpe(cmd[0], cmd, env)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
