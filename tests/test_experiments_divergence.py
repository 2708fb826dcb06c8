"""The affine-divergence experiments run and return what they promise (quick settings, fixed seeds,
subsets of methods to stay fast). They test the structure and the measurements that are exact, not
the training outcomes, which the book reports with their spread."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from npnorm import experiments as E
from npnorm.experiments._framework import to_jsonable

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def test_mlp_ablation_reports_every_seed_and_a_tuned_rate():
    r = E.mlp_ablation(quick=True, methods=("none", "affine-like"))
    for m in ("none", "affine-like"):
        assert r["best_lr"][m] in r["grid"][m]
        t = r["test"][m]
        assert len(t["per_seed"]) == len(r["seeds"]) >= 3
        assert t["min"] <= t["mean"] <= t["max"]
        assert len(r["val_curve"][m]) == r["epochs"]
    json.dumps(to_jsonable(r))


def test_scale_response_layers():
    r = E.scale_response(quick=True)
    lay, f = r["layer_relative_change"], r["factors"]
    one = f.index(1.0)
    assert all(v[one] == 0.0 for v in lay.values())
    assert max(lay["Linear(L2PreNorm)"]) < 1e-8             # scale-invariant
    assert max(lay["PatchNormConv2d l2"]) < 1e-3            # up to eps
    assert min(v for i, v in enumerate(lay["AffineLike"]) if i != one) > 0.05          # not invariant
    assert min(v for i, v in enumerate(lay["PatchNormConv2d affine"]) if i != one) > 0.05


def test_batch_size_prediction_structure():
    r = E.batch_size_prediction(quick=True, methods=("none", "affine-like"), batch_sizes=(16, 128))
    for regime in ("epochs", "steps"):
        ben = r["regimes"][regime]["benefit"]["affine-like"]
        assert len(ben) == 2 and all(b["min"] <= b["mean"] <= b["max"] for b in ben)
        assert "none" not in r["regimes"][regime]["benefit"]


def test_the_command_lists_the_divergence_experiments():
    out = subprocess.run([sys.executable, "-m", "npnorm.experiments", "--list"], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout
    for name in ("divergence-mlp-ablation", "divergence-cnn-ablation", "divergence-batch-size", "divergence-scale"):
        assert name in out
