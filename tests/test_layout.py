"""The layout is the map of the field: families as subpackages, kernels mirrored, infrastructure small
and at the top and never importing a family, and no stale module path in the prose."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import npnorm
from npnorm.registry import FAMILIES, family_of, specs

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "npnorm"
NORMALIZER_FAMILIES = [f for f in FAMILIES if f != "nn"]
#: Top-level modules that are infrastructure: they must not import any family (no upward imports).
INFRASTRUCTURE = ("base", "registry", "backend", "gradcheck", "_checks", "_numerics")


def test_top_level_is_small():
    modules = sorted(p.stem for p in PKG.glob("*.py") if p.stem not in ("__init__", "__main__"))
    assert len(modules) <= 10, f"npnorm/ has {len(modules)} top-level modules: {modules}"


def test_every_family_is_a_subpackage_with_a_docstring():
    for family in FAMILIES:
        mod = importlib.import_module(f"npnorm.{family}")
        assert (mod.__doc__ or "").strip(), f"npnorm.{family} has no docstring saying what belongs there"


def test_every_registered_normalizer_lives_in_its_family():
    for spec in specs():
        home = family_of(spec.cls)
        assert home, f"{spec.name}: class {spec.cls.__module__}.{spec.cls.__qualname__} is outside every family"
        assert home == spec.family, f"{spec.name}: registered as {spec.family}, defined in npnorm.{home}"


def test_register_rejects_a_family_that_is_not_the_home():
    from npnorm.registry import Case, Spec, register
    with pytest.raises(ValueError, match="defined in npnorm.statistics"):
        register(Spec(name="_misfiled", cls=npnorm.LayerNorm, family="weights",
                      cases=(Case("x", {"normalized_shape": 3}, ((2, 3),)),)))
    assert "_misfiled" not in npnorm.registry.REGISTRY


def test_kernels_mirror_the_families():
    """``npnorm/kernels/<family>/<layer>.py`` is the twin of ``npnorm/<family>/<layer>.py``."""
    for family_dir in (p for p in (PKG / "kernels").iterdir() if p.is_dir() and not p.name.startswith("_")):
        assert family_dir.name in NORMALIZER_FAMILIES, f"kernels/{family_dir.name} is not a family"
        for kernel in family_dir.glob("*.py"):
            if kernel.stem == "__init__":
                continue
            twin = PKG / family_dir.name / kernel.name
            assert twin.exists(), f"{kernel.relative_to(ROOT)} has no NumPy reference at {twin.relative_to(ROOT)}"


def _imports(path: Path) -> list[str]:
    """Absolute module names a file imports (relative imports resolved)."""
    tree = ast.parse(path.read_text())
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            names.append(mod)
            names += [f"{mod}.{a.name}" for a in node.names]
    return names


@pytest.mark.parametrize("module", INFRASTRUCTURE)
def test_infrastructure_does_not_import_a_family(module):
    bad = [n for n in _imports(PKG / f"{module}.py")
           if any(n == f"npnorm.{f}" or n.startswith(f"npnorm.{f}.") for f in FAMILIES)
           or n.startswith("npnorm.kernels") or n.startswith("npnorm.experiments")
           or n.startswith("npnorm.models")]
    assert not bad, f"npnorm/{module}.py imports upward into {bad}"


def test_families_are_importable_on_their_own():
    """No import cycle: each family (and the kernels, models, experiments) imports first in a fresh
    interpreter."""
    for name in [*FAMILIES, "kernels", "models", "experiments"]:
        code = f"import npnorm.{name}"
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
        assert r.returncode == 0, f"{code} failed:\n{r.stderr[-2000:]}"


# --- prose: every path and module the book and the guides name exists -------------------------

PROSE = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", ROOT / "exercises" / "README.md",
         ROOT / "solutions" / "README.md", *sorted((ROOT / "book").glob("*.md")),
         *sorted((ROOT / "book" / "exercises").glob("*.md"))]
PATH_RE = re.compile(r"(?<![\w/.])(?:\.\./)?(npnorm/[\w/]*\w(?:\.py)?)")
MODULE_RE = re.compile(r"(?<![\w.])(npnorm(?:\.[a-z_][a-z0-9_]*)+)")


def _names_in_prose():
    for doc in PROSE:
        if not doc.exists():
            continue
        text = doc.read_text()
        for m in PATH_RE.finditer(text):
            yield doc, "path", m.group(1)
        for m in MODULE_RE.finditer(text):
            yield doc, "module", m.group(1)


def _resolves(dotted: str) -> bool:
    """``npnorm.a.b.c`` names a module, or an attribute reachable from the longest module prefix."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        name = ".".join(parts[:i])
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:
            found = False
        if found:
            obj = importlib.import_module(name)
            for attr in parts[i:]:
                if not hasattr(obj, attr):
                    return False
                obj = getattr(obj, attr)
            return True
    return False


def test_no_stale_module_path_in_the_prose():
    stale = []
    for doc, kind, name in _names_in_prose():
        if "foonorm" in name:          # CONTRIBUTING.md's made-up example layer
            continue
        ok = (ROOT / name).exists() if kind == "path" else _resolves(name)
        if not ok:
            stale.append(f"{doc.relative_to(ROOT)}: {name}")
    assert not stale, "names that do not exist:\n" + "\n".join(sorted(set(stale)))


DOCSTRING_REF_RE = re.compile(r":(?:mod|func|class|meth|data|attr):`~?(npnorm(?:\.\w+)+)`")


def test_no_stale_cross_reference_in_docstrings():
    """Every ``:mod:`npnorm...``` (``:func:``, ``:class:``, ...) in the library's docstrings resolves."""
    stale = []
    for path in sorted(PKG.rglob("*.py")):
        for m in DOCSTRING_REF_RE.finditer(path.read_text()):
            if not _resolves(m.group(1)):
                stale.append(f"{path.relative_to(ROOT)}: {m.group(1)}")
    assert not stale, "docstring references that do not exist:\n" + "\n".join(sorted(set(stale)))


def test_the_stale_path_check_can_fail():
    assert not _resolves("npnorm.layernorm")          # the flat layout's path
    assert _resolves("npnorm.statistics.layernorm.layer_norm_forward")
    assert not (ROOT / "npnorm/experiments.py").exists()


# --- experiments as commands --------------------------------------------------------------------

def _run(*args):
    return subprocess.run([sys.executable, "-m", "npnorm.experiments", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=600)


def test_experiments_list_names_every_registered_experiment():
    from npnorm.experiments import EXPERIMENTS
    r = _run("--list")
    assert r.returncode == 0, r.stderr
    for name, exp in EXPERIMENTS.items():
        assert re.search(rf"^\s+{re.escape(name)}\s+\S", r.stdout, re.M), f"{name} missing from --list"
        assert exp.description and exp.chapter


def test_every_chapter_8_experiment_is_a_command():
    from npnorm.experiments import EXPERIMENTS
    assert {"compare-normalizers", "batch-size-sweep", "init-scale-sweep", "dead-units", "depth-statistics",
            "bn-train-eval-gap"} <= set(EXPERIMENTS)


def test_an_experiment_runs_from_the_command_and_writes_its_figures(tmp_path):
    out = tmp_path / "d.json"
    r = _run("depth-statistics", "--quick", "--seed", "3", "--json", str(out))
    assert r.returncode == 0, r.stderr
    assert "models (norm, scale)" in r.stderr            # the progress bar
    record = json.loads(out.read_text())
    assert record["experiment"] == "depth-statistics" and record["setting"] == "quick" and record["seed"] == 3
    # the JSON holds the numbers the book's plot is made of: the function's own return value
    from npnorm.experiments import depth_statistics, to_jsonable
    assert record["results"] == to_jsonable(depth_statistics(quick=True, seed=3))


def test_unknown_experiment_is_a_clear_error():
    r = _run("no-such-thing")
    assert r.returncode == 2 and "no experiment named 'no-such-thing'" in r.stderr
