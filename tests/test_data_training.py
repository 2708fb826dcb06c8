"""Data sets (deterministic, well-formed) and the training loop (reproducible, honest bookkeeping)."""

import numpy as np
import pytest

from npnorm import nn
from npnorm.data import SHAPE_CLASSES, make_gaussian_mixture, make_moons, make_shapes, make_spirals, train_test_split
from npnorm.training import evaluate, fit, layer_statistics, recompute_batchnorm_statistics


def test_shapes_are_deterministic_balanced_and_varied():
    X, y = make_shapes(200, seed=3)
    X2, y2 = make_shapes(200, seed=3)
    np.testing.assert_array_equal(X, X2)
    np.testing.assert_array_equal(y, y2)
    assert X.shape == (200, 1, 16, 16) and X.dtype == np.float32 and y.dtype == np.int64
    assert np.bincount(y, minlength=10).tolist() == [20] * 10
    assert len(SHAPE_CLASSES) == 10
    assert not np.array_equal(make_shapes(200, seed=4)[0], X)
    # photometric variation: per-image means and spreads differ a lot
    means, stds = X.mean(axis=(1, 2, 3)), X.std(axis=(1, 2, 3))
    assert means.std() > 0.3 and stds.max() / stds.min() > 4
    Xc, _ = make_shapes(50, size=28, seed=0, photometric=False, noise=0.0)
    assert Xc.shape == (50, 1, 28, 28) and Xc.min() >= 0.0 and Xc.max() <= 1.0
    with pytest.raises(ValueError, match="size"):
        make_shapes(10, size=4)


def test_toy_sets():
    for make, k in ((make_moons, 2), (lambda **kw: make_spirals(n_classes=3, **kw), 3),
                    (lambda **kw: make_gaussian_mixture(n_classes=4, **kw), 4)):
        X, y = make(n_samples=301, seed=1)
        X2, y2 = make(n_samples=301, seed=1)
        np.testing.assert_array_equal(X, X2)
        assert X.shape == (301, 2) and y.shape == (301,) and set(np.unique(y)) == set(range(k))
    Xtr, ytr, Xte, yte = train_test_split(*make_moons(100), test_fraction=0.2)
    assert len(Xtr) == 80 and len(Xte) == 20


def _mlp(seed=0):
    return nn.Sequential(nn.Linear(2, 16, rng=seed), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3, rng=seed + 1))


def test_fit_is_reproducible_and_learns():
    X, y = make_gaussian_mixture(400, n_classes=3, spread=6.0, seed=0)
    runs = []
    for _ in range(2):
        model = _mlp()
        runs.append(fit(model, nn.CrossEntropyLoss(), nn.SGD(model, lr=0.1, momentum=0.9), X, y, epochs=3,
                        batch_size=16, seed=5, X_val=X, y_val=y, progress=False))
    a, b = runs
    assert a.step_loss == b.step_loss and a.val_acc == b.val_acc
    assert len(a.step_loss) == 3 * (400 // 16) and len(a.train_acc) == 3
    assert a.train_loss[-1] < a.train_loss[0] and a.val_acc[-1] > 0.9


def test_fit_stops_on_divergence():
    X, y = make_gaussian_mixture(200, n_classes=3, seed=0)
    model = nn.Sequential(nn.Linear(2, 32, rng=0), nn.ReLU(), nn.Linear(32, 32, rng=1), nn.ReLU(), nn.Linear(32, 3, rng=2))
    hist = fit(model, nn.CrossEntropyLoss(), nn.SGD(model, lr=1e3, momentum=0.9), X * 100, y, epochs=5,
               batch_size=20, progress=False)
    assert hist.diverged and len(hist.train_loss) < 5


def test_progress_bar_can_be_turned_off(capsys, monkeypatch):
    X, y = make_gaussian_mixture(64, n_classes=2, seed=0)
    model = _mlp()
    monkeypatch.setenv("NPNORM_PROGRESS", "0")
    fit(model, nn.CrossEntropyLoss(), nn.SGD(model, lr=0.1), X, y, epochs=1, batch_size=16, progress=True)
    assert capsys.readouterr().err == ""
    monkeypatch.delenv("NPNORM_PROGRESS")
    fit(model, nn.CrossEntropyLoss(), nn.SGD(model, lr=0.1), X, y, epochs=1, batch_size=16, progress=True)
    assert "training" in capsys.readouterr().err


def test_layer_statistics_and_evaluate_leave_the_model_alone():
    X, y = make_gaussian_mixture(64, n_classes=3, seed=0)
    model = _mlp()
    before = model[1].running_mean.copy()
    rows = layer_statistics(model, nn.CrossEntropyLoss(), X, y)
    assert [r["layer"] for r in rows] == ["Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert rows[1]["act_mean"] == pytest.approx(0.0, abs=1e-12) and rows[0]["weight_grad_norm"] > 0
    evaluate(model, nn.CrossEntropyLoss(), X, y, mode="train")
    np.testing.assert_array_equal(model[1].running_mean, before)
    model.eval()
    evaluate(model, nn.CrossEntropyLoss(), X, y, mode="train")
    assert not model.training


def test_recomputed_batchnorm_statistics_are_the_data_statistics():
    X, y = make_gaussian_mixture(96, n_classes=3, seed=0)
    model = _mlp()
    model.train()
    for _ in range(3):
        model(X[:10] * 3)                       # stale, unrelated running statistics
    recompute_batchnorm_statistics(model, X, batch_size=32)
    h = model[0](X)
    means = h.reshape(3, 32, -1).mean(axis=1)
    variances = h.reshape(3, 32, -1).var(axis=1, ddof=1)
    np.testing.assert_allclose(model[1].running_mean, h.mean(axis=0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(model[1].running_mean, means.mean(axis=0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(model[1].running_var, variances.mean(axis=0), rtol=1e-12)
    assert model[1].momentum == 0.1 and model.training


def test_fit_records_layer_statistics_and_checks_arguments():
    X, y = make_gaussian_mixture(64, n_classes=3, seed=0)
    model = _mlp()
    hist = fit(model, nn.CrossEntropyLoss(), nn.SGD(model, lr=0.1), X, y, epochs=2, batch_size=16, progress=False,
               track_stats=True, stats_batch=32)
    assert len(hist.stats) == 3 and len(hist.stats[0]) == 4     # at init + after each epoch, one row per layer
    assert hist.stats[0][0]["weight_norm"] != hist.stats[-1][0]["weight_norm"]
    with pytest.raises(ValueError, match="batch_size"):
        fit(model, nn.CrossEntropyLoss(), nn.SGD(model, lr=0.1), X, y, batch_size=65, progress=False)
    with pytest.raises(ValueError, match="samples"):
        fit(model, nn.CrossEntropyLoss(), nn.SGD(model, lr=0.1), X, y[:10], progress=False)
