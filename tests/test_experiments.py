"""The experiments of "Why normalization helps" reproduce the known effects (quick settings, fixed
seeds). Each assertion leaves a wide margin: they test the effect, not the exact numbers."""

import numpy as np
import pytest

from npnorm import experiments as E
from npnorm.models import NORMALIZERS

pytestmark = pytest.mark.slow


def test_every_normalizer_beats_no_normalization():
    r = E.compare_normalizers(quick=True)
    acc = r["final_acc"]
    assert set(acc) == set(NORMALIZERS)
    for norm in ("bn", "ln", "gn", "in"):
        assert acc[norm] > acc["none"] + 0.05, acc
    assert all(len(h["val_acc"]) == r["epochs"] for h in r["histories"].values())


def test_batchnorm_fails_at_batch_size_2_groupnorm_does_not():
    r = E.batch_size_sweep(quick=True, batch_sizes=(2, 32))
    bn, gn = r["acc"]["bn"], r["acc"]["gn"]
    assert bn[0] < gn[0] - 0.2, r          # batch 2
    assert bn[1] > 0.4 and gn[0] > 0.4, r  # both train at batch 32, GN also at batch 2


def test_poor_init_scale_breaks_the_plain_deep_mlp_not_the_normalized_one():
    r = E.init_scale_sweep(quick=True, scales=(0.25, 1.0, 4.0))
    none, bn, ln = r["acc"]["none"], r["acc"]["bn"], r["acc"]["ln"]
    fails = [np.isnan(a) or a < 0.5 for a in none]
    assert fails == [True, False, True], r
    assert min(bn) > 0.9, r
    assert ln[1] > 0.8 and ln[2] > 0.9, r


def test_layernorm_small_init_kills_units_unless_the_learning_rate_shrinks():
    r = E.dead_units(quick=True, runs=(("bn", 0.25, 0.02), ("ln", 0.25, 0.02), ("ln", 0.25, 0.0005)))
    (bn_acc, ln_acc, ln_slow_acc), dead = r["acc"], r["dead_final"]
    assert r["dead_init"][0] == 0.0 and dead[0] < 0.02 and bn_acc > 0.9, r   # BN keeps every unit alive
    assert dead[1] > 0.3 and dead[1] > r["dead_init"][1] + 0.1 and ln_acc < 0.5, r
    assert ln_slow_acc > 0.8 and dead[2] < dead[1] - 0.2, r


def test_statistics_by_depth():
    r = E.depth_statistics(quick=True)
    act = r["act_std"]
    assert act[("none", 0.5)][-1] < 0.1 * act[("none", 0.5)][0]     # vanishing
    assert act[("none", 2.0)][-1] > 10 * act[("none", 2.0)][0]      # exploding
    for s in r["scales"]:
        ratio = act[("bn", s)][-1] / act[("bn", s)][0]
        assert 0.5 < ratio < 2.0
    np.testing.assert_allclose(act[("ln", 0.5)], act[("ln", 2.0)], rtol=1e-3)  # scale invariant


def test_recomputing_batchnorm_statistics_closes_the_train_eval_gap():
    r = E.bn_train_eval_gap(quick=True)
    assert r["same_weights"]
    assert r["eval_recomputed"][-1] > r["eval_running"][-1] + 0.05, r      # stale EMA (momentum 0.001)
    for rec, tm in zip(r["eval_recomputed"], r["train_mode"]):
        assert abs(rec - tm) < 0.05, r


def test_learning_rate_sweep_reports_every_seed_and_learning_rate():
    from npnorm.experiments import EXPERIMENTS, learning_rate_sweep

    assert "learning-rate-sweep" in EXPERIMENTS
    res = learning_rate_sweep(quick=True, lrs=(0.01, 0.1), seeds=(0, 1), depth=3)
    for key in ("loss", "acc", "diverged"):
        for norm in ("none", "bn"):
            assert [len(v) for v in res[key][norm]] == [2, 2]
    # BatchNorm trains at the moderate learning rate on every seed
    assert all(np.isfinite(v) and v < 1.0 for v in res["loss"]["bn"][0])


def test_layernorm_trains_at_batch_size_2_where_batchnorm_does_not():
    res = E.ln_vs_bn_batch_size(quick=True, batch_sizes=(2,), seeds=(0, 1))
    assert np.median(res["acc"]["ln"][0]) > np.median(res["acc"]["bn"][0]) + 0.2


def test_weight_norm_training_v_never_shrinks_without_weight_decay():
    res = E.weight_norm_training(quick=True, scales=(1.0,), lrs=(0.05,), seeds=(0,))
    assert res["v_norm"][0.0][-1] >= res["v_norm"][0.0][0]
    assert res["v_norm"][0.01][-1] < res["v_norm"][0.01][0]
    assert len(res["final_loss"]["wn"][0.05][1.0]) == 1
