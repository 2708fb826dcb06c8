"""Build the npnorm book: ``python -m npnorm.tools.build_book [--learner] [--no-open]``.

What a build does, in order:

1. Copies MathJax from the installed ``mathjax`` package (PyPI: django-static-mathjax) into
   ``book/_build/_offline/_static/mathjax/``; ``html_extra_path`` in ``_config.yml`` merges that
   into the output, where ``mathjax_path`` points, so the HTML typesets equations offline.
2. Writes a generated Jupyter Book config next to the output: ``_config.yml`` plus every
   ``book/bib/*.bib`` file in ``bibtex_bibfiles`` (so new bibliographies need no config edit), and,
   for the learner edition, ``hide_solutions: True``.
3. Runs ``jupyter-book build --all -W --keep-going`` with ``PYTHONPATH`` set to the project root, so
   the notebook kernels import *this* checkout's ``npnorm``. ``--all`` plus
   ``execute_notebooks: force`` means every chapter is executed on every build; a cell error or any
   Sphinx warning fails the build (all warnings are listed first).
4. Prints the ``file://`` URL of the index page and opens it in a browser when one is available.

Exit status: 0 on success, 1 if the build failed or printed any warning.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import time
import webbrowser
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
BOOK = ROOT / "book"
#: A Sphinx warning or error line (after ANSI colours are stripped).
SPHINX_PROBLEM = re.compile(r"(^|: )(WARNING|ERROR|CRITICAL|SEVERE)[:(]")
ANSI = re.compile(r"\x1b\[[0-9;]*m")
#: Log noise of the notebook kernels (not a Sphinx warning): not shown.
KERNEL_NOISE = "Kernel is running over TCP without encryption"
#: Where the HTML of each edition ends up.
OUTPUTS = {"teacher": BOOK / "_build", "learner": BOOK / "_build" / "learner"}


def html_dir(edition: str = "teacher") -> Path:
    """The directory holding ``index.html`` of an edition (``"teacher"`` or ``"learner"``)."""
    return OUTPUTS[edition] / "_build" / "html" if edition == "learner" else OUTPUTS[edition] / "html"


def mathjax_source() -> Path:
    """The ``es5`` directory of the installed MathJax 3 copy."""
    try:
        import mathjax  # django-static-mathjax
    except ImportError as exc:  # pragma: no cover - the pinned requirements install it
        raise SystemExit("MathJax is missing: pip install -r requirements.txt (django-static-mathjax)") from exc
    src = Path(mathjax.__file__).resolve().parent / "static" / "mathjax" / "es5"
    if not (src / "tex-chtml.js").is_file():
        raise SystemExit(f"MathJax not found where expected: {src / 'tex-chtml.js'}")
    return src


def copy_mathjax(dest: Path = BOOK / "_build" / "_offline" / "_static" / "mathjax") -> Path:
    """Copy MathJax into the book's static dir (skipped when an identical copy is already there)."""
    src = mathjax_source()
    marker = dest / ".source"
    stamp = f"{src}\n{(src / 'tex-chtml.js').stat().st_mtime_ns}\n"
    if marker.is_file() and marker.read_text() == stamp and (dest / "tex-chtml.js").is_file():
        return dest
    if dest.exists():
        shutil.rmtree(dest)
    # the speech-rule engine (sre) is only used by the optional accessibility menu; keep everything
    # else so that any TeX extension MathJax autoloads is present
    shutil.copytree(src, dest)
    marker.write_text(stamp)
    return dest


def bib_files() -> list[str]:
    """``references.bib`` plus every ``bib/*.bib`` (other chapters add theirs there), relative to book/."""
    files = ["references.bib"] if (BOOK / "references.bib").is_file() else []
    files += sorted(f"bib/{p.name}" for p in (BOOK / "bib").glob("*.bib"))
    return files


def write_config(edition: str, out: Path, execution_cache: Path | None = None) -> Path:
    """The generated config for one edition (kept next to the output, for inspection).

    ``execution_cache``: execute through a jupyter-cache in that directory instead of ``force``. An
    empty directory executes every chapter and stores the results; a second build with the same
    directory (the other edition, whose code cells are the same) reuses them. Used by the test suite
    to build both editions from one execution; ``make book`` always executes (``force``)."""
    config = yaml.safe_load((BOOK / "_config.yml").read_text())
    if execution_cache is not None:
        config.setdefault("execute", {}).update(execute_notebooks="cache", cache=str(Path(execution_cache).resolve()))
    config["bibtex_bibfiles"] = bib_files()
    # the generated file lives in _build/, so paths Jupyter Book resolves against the config's own
    # directory must be made absolute
    local = config.get("sphinx", {}).get("local_extensions") or {}
    for name, path in local.items():
        local[name] = str((BOOK / path).resolve())
    sphinx_config = config.setdefault("sphinx", {}).setdefault("config", {})
    if edition == "learner":
        sphinx_config["hide_solutions"] = True
        config["title"] = f"{config['title']} (learner edition)"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"_config.{edition}.yml"
    path.write_text("# GENERATED by npnorm/tools/build_book.py from book/_config.yml - do not edit\n"
                    + yaml.safe_dump(config, sort_keys=False))
    return path


def build_env() -> dict[str, str]:
    """The environment for jupyter-book and the notebook kernels it starts."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.setdefault("NUMBA_CACHE_DIR", str(ROOT / ".numba_cache"))
    # the kernels must draw inline (figures in the page), whatever a Makefile exported for tests
    env["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    env.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    return env


def jupyter_book_command() -> list[str]:
    exe = Path(sys.executable).with_name("jupyter-book")
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "jupyter_book.cli.main"]


def build(edition: str = "teacher", quiet: bool = False,
          execution_cache: Path | None = None) -> tuple[int, int, Path]:
    """Build one edition. Returns ``(returncode, number_of_warnings, index_html)``."""
    copy_mathjax()
    out = OUTPUTS[edition]
    shutil.rmtree(html_dir(edition) / "reports", ignore_errors=True)  # stale failure logs
    config = write_config(edition, out, execution_cache)
    cmd = jupyter_book_command() + [
        "build", str(BOOK), "--builder", "html", "--all", "-W", "--keep-going",
        "--config", str(config), "--path-output", str(out if edition == "learner" else BOOK),
    ]
    print("+", " ".join(cmd), flush=True)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=build_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, bufsize=1)
    warnings = 0
    tail: collections.deque[str] = collections.deque(maxlen=60)
    assert proc.stdout is not None
    for line in proc.stdout:
        if KERNEL_NOISE in line:
            continue
        tail.append(line)
        problem = bool(SPHINX_PROBLEM.search(ANSI.sub("", line)))
        warnings += problem
        if not quiet or problem or "Traceback" in line or "Error" in line:
            sys.stdout.write(line)
    rc = proc.wait()
    if rc != 0 and quiet and not warnings:  # a crash rather than a warning: show how it ended
        sys.stdout.write("".join(tail))
    return rc, warnings, html_dir(edition) / "index.html"


def browser_available() -> bool:
    if sys.platform in ("darwin", "win32"):
        return True
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False
    try:
        webbrowser.get()
    except webbrowser.Error:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], prog="python -m npnorm.tools.build_book")
    parser.add_argument("--learner", action="store_true", help="build the learner edition (no solutions)")
    parser.add_argument("--no-open", action="store_true", help="do not try to open a browser")
    parser.add_argument("--quiet", action="store_true", help="print only warnings and errors from Sphinx")
    parser.add_argument("--execution-cache", metavar="DIR", type=Path,
                        help="execute through a jupyter-cache in DIR (an empty DIR executes every chapter; "
                             "a second build with the same DIR reuses the results): both editions from one "
                             "execution")
    args = parser.parse_args(argv)
    edition = "learner" if args.learner else "teacher"
    start = time.perf_counter()
    rc, warnings, index = build(edition, quiet=args.quiet, execution_cache=args.execution_cache)
    elapsed = time.perf_counter() - start
    if rc != 0 or warnings:
        for log in sorted((index.parent / "reports").glob("*.err.log")):
            print(f"\n----- {log} (the failing cell and its traceback) -----")
            print(ANSI.sub("", log.read_text())[-4000:])
        print(f"\nBOOK BUILD FAILED ({edition} edition): exit status {rc}, {warnings} warning/error line(s) "
              f"above, after {elapsed:.0f} s. Every warning is an error in this project.", file=sys.stderr)
        return 1
    url = index.resolve().as_uri()
    print(f"\nBook built ({edition} edition, every chapter executed, 0 warnings) in {elapsed:.0f} s.")
    print(f"Open: {url}")
    if not args.no_open and not os.environ.get("NPNORM_NO_BROWSER") and browser_available():
        try:
            webbrowser.open(url)
        except Exception:  # never fail a good build because no browser could start
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
