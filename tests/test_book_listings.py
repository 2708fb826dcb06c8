"""The code the book includes from the library fits the page (79 columns), line by line.

The book shows library code with ``{literalinclude}`` (``:pyobject:``, ``:lines:``,
``:start-after:``/``:end-before:``, ``:start-at:``/``:end-at:``). The library is written wider
than the page, so only the functions and classes the book includes are held to the page width.
The included text is cut out by Sphinx's own reader (``LiteralIncludeReader``, the code the
``{literalinclude}`` directive runs), so the lines checked are exactly the lines printed:
decorators included for ``:pyobject:``, a method keeps its class indentation.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from sphinx.directives.code import LiteralIncludeReader

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
WIDTH = 79

INCLUDE = re.compile(r"^(?:`{3,}|:{3,})\{literalinclude\}[ \t]+(\S+)[ \t]*\n"
                     r"((?:[ \t]*:[\w-]+:[^\n]*\n)*)", re.M)
OPTION = re.compile(r"^[ \t]*:([\w-]+):[ \t]*(.*?)[ \t]*$", re.M)
#: Options that choose what is shown (those Sphinx's reader applies to the text).
SELECTING = ("pyobject", "lines", "start-after", "end-before", "start-at", "end-at", "dedent",
             "prepend", "append", "lineno-match")


def _pages() -> list[Path]:
    return sorted(p for p in BOOK.rglob("*.md") if "_build" not in p.relative_to(BOOK).parts)


def _what(options: dict[str, str]) -> str:
    if "pyobject" in options:
        return options["pyobject"]
    return " ".join(f":{k}: {options[k]}" for k in SELECTING if k in options) or "(whole file)"


def _unquote(value: str) -> str:
    # MyST passes option values through YAML, so ``:start-at: "FASTMATH ="`` is the bare text
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def listings() -> list[tuple[str, str, Path, dict[str, str]]]:
    """(page, what, included file, selecting options) of every ``{literalinclude}`` in the book."""
    out = []
    for page in _pages():
        for target, block in INCLUDE.findall(page.read_text()):
            options = {k: _unquote(v) for k, v in OPTION.findall(block)}
            # "/x" is relative to the book's source directory, "x" to the page (as in Sphinx)
            path = (BOOK / target.lstrip("/")) if target.startswith("/") else (page.parent / target)
            out.append((str(page.relative_to(BOOK)), _what(options), path.resolve(),
                        {k: v for k, v in options.items() if k in SELECTING}))
    return out


def included_lines(path: Path, options: dict[str, str]) -> tuple[list[str], int]:
    """The lines the directive prints (exactly, via Sphinx's reader) and the file line of the
    first one."""
    opts: dict = dict(options)
    if "dedent" in opts:
        opts["dedent"] = int(opts["dedent"]) if opts["dedent"] else None
    reader = LiteralIncludeReader(str(path), opts, SimpleNamespace(source_encoding="utf-8-sig"))
    text, _ = reader.read()
    lines = text.splitlines()
    # find where the listing starts in the file, for file:line messages
    source = path.read_text().splitlines()
    first = next((i + 1 for i in range(len(source))
                  if source[i:i + len(lines)] == lines), 0) if lines else 0
    return lines, first


def too_wide(path: Path, options: dict[str, str]) -> list[str]:
    lines, first = included_lines(path, options)
    rel = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    return [f"{rel}:{first + i if first else '?'}: {len(line)} columns"
            for i, line in enumerate(lines) if len(line.rstrip("\n")) > WIDTH]


ALL = listings()


def test_the_parser_finds_the_listings():
    kinds = {what for _, what, _, _ in ALL}
    assert len(ALL) >= 60, f"only {len(ALL)} literalincludes found: the pattern is broken"
    assert {"batch_norm_backward", "GAN.critic_step", "SpectralNorm.forward"} <= kinds
    assert any(w.startswith(":start-at:") for w in kinds), "the :start-at: listing was not found"


def test_pyobject_listing_includes_decorators_and_the_whole_body():
    """Checked against a listing whose function is decorated: the decorator is printed."""
    hits = [(p, o) for _, what, p, o in ALL
            if what == "learning_rate_sweep" and p.name == "why_normalization.py"]
    assert hits, "the book no longer includes learning_rate_sweep"
    lines, first = included_lines(*hits[0])
    assert lines[0].startswith("@experiment("), lines[0]
    assert any(line.lstrip().startswith("def learning_rate_sweep(") for line in lines)
    assert lines[-1].lstrip().startswith("return"), lines[-1]
    assert first > 0


def test_the_reader_applies_every_selecting_option(tmp_path):
    """``:lines:`` and the marker options cut what Sphinx prints (the book uses the markers)."""
    src = tmp_path / "mod.py"
    src.write_text("a = 1\n# start\nb = 2\nc = 3\n# end\nd = 4\n")
    assert included_lines(src, {"lines": "3-4"}) == (["b = 2", "c = 3"], 3)
    assert included_lines(src, {"start-after": "# start", "end-before": "# end"}) == \
        (["b = 2", "c = 3"], 3)
    assert included_lines(src, {"start-at": "c =", "end-at": "d ="}) == \
        (["c = 3", "# end", "d = 4"], 4)
    src.write_text("x = 0\n" + "y = " + "1 + " * 30 + "1\n")
    assert too_wide(src, {"lines": "2"}) == [f"{src}:2: 125 columns"]
    assert too_wide(src, {"lines": "1"}) == []
    block = "```{literalinclude} ../m.py\n:language: python\n:lines: 2-3\n:task: 1.1\n```\n"
    target, options = INCLUDE.findall(block)[0]
    assert target == "../m.py" and dict(OPTION.findall(options))["lines"] == "2-3"


@pytest.mark.parametrize("page, what, path, options",
                         [pytest.param(*item, id=f"{item[0]}:{item[1]}") for item in ALL])
def test_included_code_fits_the_page(page, what, path, options):
    bad = too_wide(path, options)
    assert not bad, (f"book/{page} includes {what} with lines over {WIDTH} columns "
                     "(rewrap them in the library):\n  " + "\n  ".join(bad))
