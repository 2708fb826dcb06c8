"""The small-batch catalog sweep (chapter 13): runs as a command and returns the spread over seeds."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from npnorm.experiments import EXPERIMENTS, small_batch_catalog
from npnorm.models import norm_layer


def test_small_batch_catalog_returns_every_seed_and_the_spread():
    res = small_batch_catalog(quick=True, norms=("gn", "brn"), batch_sizes=(16,), seeds=2)
    assert res["seeds"] == [0, 1] and res["batch_sizes"] == [16]
    for norm in ("gn", "brn"):
        accs = res["acc"][norm][0]
        assert len(accs) == 2 and all(0.0 <= a <= 1.0 for a in accs)
        assert res["min"][norm][0] <= res["mean"][norm][0] <= res["max"][norm][0]
    assert "small-batch-catalog" in EXPERIMENTS


def test_catalog_norm_layers():
    brn = norm_layer("brn", 4, (3, 3), total_steps=100)
    assert brn.schedule == (10, 60, 40)
    assert type(norm_layer("frn", 4, ())).__name__ == "Identity"       # image-only
    with pytest.raises(ValueError, match="norm must be one of"):
        norm_layer("xx", 4)


def test_the_command_lists_it():
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "-m", "npnorm.experiments", "--list"], capture_output=True, text=True,
                       cwd=root, env={**os.environ, "PYTHONPATH": str(root)})
    assert r.returncode == 0 and "small-batch-catalog" in r.stdout


def test_printed_figures_are_rounded_and_spreads_read_mean_min_max():
    """The command's printout: floats inside lists and dicts to 4 digits (a full-precision float cut
    off at the line width hid results before), spreads over seeds as ``mean [min, max]``."""
    from npnorm.experiments.__main__ import _format

    spreads = [{"mean": 0.0873333333, "min": 0.086, "max": 0.09}, {"mean": 0.266, "min": 0.228, "max": 0.324}]
    assert _format(spreads) == "0.08733 [0.086, 0.09]; 0.266 [0.228, 0.324]"
    assert _format({"a": [0.123456789, {"b": 2.0 / 3.0}]}) == '{"a": [0.1235, {"b": 0.6667}]}'
