"""The experiments of the chapter "The affine divergence and PatchNorm", as functions that return data.

Every experiment is run over several seeds and reports the spread (mean, min, max), including effects
that do not show. ``quick=True`` is the setting the book executes (seconds each); ``quick=False`` the
longer one.

* :func:`mlp_ablation` - an MLP on the flattened procedural shapes with no normalization, BatchNorm,
  LayerNorm, RMSNorm or affine-like layers; the learning rate tuned per method on a grid.
* :func:`cnn_ablation` - a small CNN: plain convolutions, +BatchNorm, +GroupNorm, PatchNorm
  convolutions; learning rate tuned per method.
* :func:`batch_size_prediction` - the paper's prediction that the benefit of divergence-correcting
  layers shrinks as the batch grows while BatchNorm's does not; fixed epochs and fixed steps.
* :func:`scale_response` - what the missing scale invariance changes: outputs of single layers for
  scaled inputs, and MLPs trained on scaled data.

Data: :func:`npnorm.data.make_shapes` (16x16 images, 10 classes, random contrast, polarity and offset,
so that the input norms vary by a factor of about 20) - raw, not standardized, which is where the
divergence ``||x||^2 + 1`` varies most between samples. Optimizer: SGD with momentum 0.9, mean loss
over the batch.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import nn
from ..data import make_shapes, train_test_split
from ..divergence import AffineLike, L2PreNorm, PatchNormConv2d
from ..models.divergence import CNN_METHODS, MLP_METHODS, divergence_cnn, divergence_mlp
from ..training import evaluate, fit
from ._framework import experiment, progress

__all__ = ["divergence_data", "mlp_ablation", "cnn_ablation", "batch_size_prediction", "scale_response",
           "LR_GRID", "MLP_QUICK_GRID", "CNN_QUICK_GRID", "MLP_LR"]

CHAPTER = "The affine divergence and PatchNorm"

#: The full learning-rate grid (every method, ``quick=False``).
LR_GRID = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
#: ``quick=True``: three points of :data:`LR_GRID` per method, around the best point of a pilot run
#: (seed 0, one run per point of the full grid, 2000 samples, 5 epochs). The affine-like and PatchNorm
#: layers take learning rates 30-100 times larger: their activation step is the ideal step, not
#: ``||x||^2 + 1`` times it. ``quick=False`` searches the whole grid for every method.
MLP_QUICK_GRID = {"none": (0.01, 0.03, 0.1), "bn": (0.01, 0.03, 0.1), "ln": (0.01, 0.03, 0.1),
                  "rms": (0.01, 0.03, 0.1), "affine-like": (0.3, 1.0, 3.0)}
CNN_QUICK_GRID = {"plain": (0.03, 0.1), "bn": (0.01, 0.03), "gn": (0.03, 0.1), "patchnorm": (0.1, 0.3)}
#: The learning rate of each MLP method in the batch-size and scale experiments: its best point in the
#: quick ablation at batch 32 (``mlp_ablation(quick=True)``, mean over 3 seeds).
MLP_LR = {"none": 0.03, "bn": 0.03, "ln": 0.03, "rms": 0.03, "affine-like": 1.0}


def divergence_data(n_samples: int, seed: int = 0, flat: bool = False):
    """Shapes split into train / validation / test (56% / 19% / 25%), float64, raw pixel values.
    Returns ``(Xtr, ytr, Xval, yval, Xte, yte)``; ``flat=True`` flattens each image to 256 features."""
    X, y = make_shapes(n_samples, seed=seed)
    X = X.astype(np.float64)
    if flat:
        X = X.reshape(len(X), -1)
    Xtr, ytr, Xte, yte = train_test_split(X, y, 0.25, seed=seed)
    Xtr, ytr, Xval, yval = train_test_split(Xtr, ytr, 0.25, seed=seed + 1)
    return Xtr, ytr, Xval, yval, Xte, yte


def _spread(values) -> dict[str, float]:
    v = np.asarray(values, dtype=np.float64)
    return {"mean": float(np.nanmean(v)), "min": float(np.nanmin(v)), "max": float(np.nanmax(v))}


def _ablation(make, methods, grids, data, epochs, seeds, batch_size, desc):
    Xtr, ytr, Xval, yval, Xte, yte = data
    crit = nn.CrossEntropyLoss()
    runs = [(m, lr, s) for m in methods for lr in grids[m] for s in seeds]
    res: dict[tuple, dict] = {}
    for m, lr, s in progress(runs, desc):
        model = make(m, s)
        hist = fit(model, crit, nn.SGD(model, lr=lr, momentum=0.9), Xtr, ytr, epochs=epochs,
                   batch_size=batch_size, seed=s, X_val=Xval, y_val=yval, progress=False)
        test = float("nan") if hist.diverged else evaluate(model, crit, Xte, yte)[1]
        res[(m, lr, s)] = {"val": hist.val_acc if not hist.diverged else [float("nan")] * epochs,
                           "loss": hist.train_loss if not hist.diverged else [float("nan")] * epochs,
                           "test": test}
    out: dict[str, Any] = {"methods": list(methods), "grid": {m: list(grids[m]) for m in methods},
                           "seeds": list(seeds), "epochs": epochs, "n_train": len(ytr), "batch_size": batch_size,
                           "val_by_lr": {}, "best_lr": {}, "test": {}, "val_curve": {}, "loss_curve": {}}
    for m in methods:
        finals = [np.nanmean([res[(m, lr, s)]["val"][-1] for s in seeds]) for lr in grids[m]]
        out["val_by_lr"][m] = [float(f) for f in finals]
        best = grids[m][int(np.nanargmax(finals))] if np.any(np.isfinite(finals)) else grids[m][0]
        out["best_lr"][m] = best
        out["test"][m] = _spread([res[(m, best, s)]["test"] for s in seeds])
        out["test"][m]["per_seed"] = [res[(m, best, s)]["test"] for s in seeds]
        out["val_curve"][m] = np.nanmean([res[(m, best, s)]["val"] for s in seeds], axis=0).tolist()
        out["loss_curve"][m] = np.nanmean([res[(m, best, s)]["loss"] for s in seeds], axis=0).tolist()
    return out


@experiment("divergence-mlp-ablation", "MLP on flattened shapes: no norm / BN / LN / RMSNorm / affine-like, "
            "learning rate tuned per method", CHAPTER)
def mlp_ablation(quick: bool = True, seed: int = 0, methods: tuple[str, ...] = MLP_METHODS) -> dict[str, Any]:
    """Train :func:`~npnorm.models.divergence_mlp` (2 hidden layers of 64) with each method for every
    learning rate of its grid and every seed; pick each method's learning rate by the mean final
    validation accuracy over the seeds; report the test accuracy at that rate (mean, min, max over
    seeds) and the mean validation-accuracy and training-loss curves.

    Returns ``{"methods", "grid", "seeds", "epochs", "best_lr", "val_by_lr", "test": {m: {mean, min,
    max, per_seed}}, "val_curve", "loss_curve", ...}``.
    """
    n, epochs, n_seeds = (2400, 10, 3) if quick else (4000, 20, 5)
    grids = MLP_QUICK_GRID if quick else {m: LR_GRID for m in methods}
    data = divergence_data(n, seed, flat=True)
    return _ablation(lambda m, s: divergence_mlp(m, seed=s), methods, grids, data, epochs,
                     list(range(seed, seed + n_seeds)), 32, "MLP runs (method, lr, seed)")


@experiment("divergence-cnn-ablation", "small CNN: plain / BN / GN / PatchNorm convolutions, learning rate "
            "tuned per method", CHAPTER)
def cnn_ablation(quick: bool = True, seed: int = 0, methods: tuple[str, ...] = CNN_METHODS) -> dict[str, Any]:
    """Train :func:`~npnorm.models.divergence_cnn` with each method over a learning-rate grid and
    seeds, as :func:`mlp_ablation`. Returns the same structure."""
    n, epochs, n_seeds = (1600, 4, 3) if quick else (4000, 8, 3)
    grids = CNN_QUICK_GRID if quick else {m: LR_GRID[1:7] for m in methods}
    data = divergence_data(n, seed)
    return _ablation(lambda m, s: divergence_cnn(m, seed=s), methods, grids, data, epochs,
                     list(range(seed, seed + n_seeds)), 32, "CNN runs (method, lr, seed)")


def _train_steps(model, X, y, steps, batch_size, lr, seed):
    """``steps`` SGD steps (momentum 0.9) on batches drawn by reshuffling every epoch."""
    crit, opt = nn.CrossEntropyLoss(), nn.SGD(model, lr=lr, momentum=0.9)
    rng = np.random.default_rng(seed)
    order, pos = rng.permutation(len(X)), 0
    model.train()
    for _ in range(steps):
        if pos + batch_size > len(X):
            order, pos = rng.permutation(len(X)), 0
        idx = order[pos:pos + batch_size]
        pos += batch_size
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            loss = crit(model(X[idx]), y[idx])
            if not np.isfinite(loss):
                return False
            opt.zero_grad()
            model.backward(crit.backward())
            opt.step()
    return True


@experiment("divergence-batch-size", "does the benefit of divergence-correcting layers shrink with the batch "
            "size (and BatchNorm's not)? fixed epochs and fixed steps", CHAPTER)
def batch_size_prediction(quick: bool = True, seed: int = 0, methods: tuple[str, ...] = ("none", "bn",
                          "affine-like"), batch_sizes: tuple[int, ...] | None = None) -> dict[str, Any]:
    """Test accuracy of :func:`divergence_mlp` per method and batch size, in two regimes: the same
    number of epochs for every batch size (fewer steps for larger batches) and the same number of
    steps (more samples for larger batches). Learning rates: :data:`MLP_LR` (each method's best at
    batch 32), the same for every batch size (the loss is the batch mean).

    The *benefit* of a method is its accuracy minus that of ``"none"`` at the same batch size, seed and
    regime. Returns ``{"batch_sizes", "regimes": {"epochs": {...}, "steps": {...}}}`` with, per regime,
    ``"acc"`` and ``"benefit"``: ``{method: [spread per batch size]}``, and the slope of the mean
    benefit against log2(batch size).
    """
    if batch_sizes is None:
        batch_sizes = (8, 32, 128) if quick else (4, 8, 16, 32, 64, 128, 256)
    n, n_seeds, epochs, steps = (2000, 3, 5, 200) if quick else (4000, 5, 10, 600)
    Xtr, ytr, _, _, Xte, yte = divergence_data(n, seed, flat=True)
    crit = nn.CrossEntropyLoss()
    seeds = list(range(seed, seed + n_seeds))
    acc = {r: {m: np.full((len(batch_sizes), n_seeds), np.nan) for m in methods} for r in ("epochs", "steps")}
    runs = [(r, m, i, j) for r in ("epochs", "steps") for m in methods for i in range(len(batch_sizes))
            for j in range(n_seeds)]
    for r, m, i, j in progress(runs, "runs (regime, method, batch, seed)"):
        b, s = batch_sizes[i], seeds[j]
        model = divergence_mlp(m, seed=s)
        n_steps = epochs * (len(Xtr) // b) if r == "epochs" else steps
        if _train_steps(model, Xtr, ytr, n_steps, b, MLP_LR[m], s):
            acc[r][m][i, j] = evaluate(model, crit, Xte, yte)[1]
    out: dict[str, Any] = {"batch_sizes": list(batch_sizes), "methods": list(methods), "seeds": seeds,
                           "epochs": epochs, "steps": steps, "lr": {m: MLP_LR[m] for m in methods}, "regimes": {}}
    logb = np.log2(batch_sizes)
    for r in ("epochs", "steps"):
        reg = {"acc": {}, "benefit": {}, "benefit_slope": {}}
        for m in methods:
            reg["acc"][m] = [_spread(acc[r][m][i]) for i in range(len(batch_sizes))]
            if m != "none":
                ben = acc[r][m] - acc[r]["none"]
                reg["benefit"][m] = [_spread(ben[i]) for i in range(len(batch_sizes))]
                slopes = [float(np.polyfit(logb, ben[:, j], 1)[0]) for j in range(n_seeds)
                          if np.all(np.isfinite(ben[:, j]))]
                reg["benefit_slope"][m] = _spread(slopes) if slopes else None
        out["regimes"][r] = reg
    return out


@experiment("divergence-scale", "scale (in)variance: single layers and trained MLPs on inputs scaled by a "
            "factor, affine-like vs LayerNorm", CHAPTER)
def scale_response(quick: bool = True, seed: int = 0, factors: tuple[float, ...] | None = None) -> dict[str, Any]:
    """Two measurements.

    * ``"layer_relative_change"``: for inputs :math:`\\alpha x`, the relative change
      :math:`\\|f(\\alpha x) - f(x)\\|/\\|f(x)\\|` of single layers (random parameters): ``Linear``,
      ``LayerNorm`` after ``Linear`` (no bias), ``Linear`` after ``L2PreNorm``, ``AffineLike``,
      ``PatchNormConv2d`` (affine and l2 modes).
    * ``"trained_test_accuracy"``: test accuracy of :func:`divergence_mlp` (none, ln, affine-like; each at its
      :data:`MLP_LR`) trained on the flattened shapes multiplied by each factor (mean, min, max over seeds).
    """
    if factors is None:
        factors = (0.01, 1.0, 100.0) if quick else (0.001, 0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)
    rng = np.random.default_rng(seed)
    x = rng.normal(0.5, 1.0, (64, 32))
    img = rng.normal(0.5, 1.0, (4, 2, 8, 8))
    lin = nn.Linear(32, 16, rng=rng)
    lin_nb = nn.Linear(32, 16, bias=False, rng=rng)
    ln = nn.LayerNorm(16)
    pre = L2PreNorm()
    al = AffineLike(32, 16, rng=rng)
    pn_a = PatchNormConv2d(2, 4, 3, padding=1, rng=rng)
    pn_l = PatchNormConv2d(2, 4, 3, padding=1, mode="l2", rng=rng)
    pn_l.params["bias"] = rng.normal(0, 1, 4)
    layers = {"Linear": (lambda v: lin(v), x), "LayerNorm(Linear)": (lambda v: ln(lin_nb(v)), x),
              "Linear(L2PreNorm)": (lambda v: lin(pre(v)), x), "AffineLike": (lambda v: al(v), x),
              "PatchNormConv2d affine": (lambda v: pn_a(v), img), "PatchNormConv2d l2": (lambda v: pn_l(v), img)}
    layer_out = {}
    for name, (f, inp) in layers.items():
        ref = f(inp)
        layer_out[name] = [float(np.linalg.norm(f(a * inp) - ref) / np.linalg.norm(ref)) for a in factors]

    methods = ("none", "ln", "affine-like")
    n, epochs, n_seeds = (2000, 6, 3) if quick else (4000, 10, 4)
    Xtr, ytr, _, _, Xte, yte = divergence_data(n, seed, flat=True)
    crit = nn.CrossEntropyLoss()
    seeds = list(range(seed, seed + n_seeds))
    accs = {m: np.full((len(factors), n_seeds), np.nan) for m in methods}
    runs = [(m, i, j) for m in methods for i in range(len(factors)) for j in range(n_seeds)]
    for m, i, j in progress(runs, "runs (method, factor, seed)"):
        model = divergence_mlp(m, seed=seeds[j])
        a = factors[i]
        hist = fit(model, crit, nn.SGD(model, lr=MLP_LR[m], momentum=0.9), a * Xtr, ytr, epochs=epochs,
                   batch_size=32, seed=seeds[j], progress=False)
        if not hist.diverged:
            accs[m][i, j] = evaluate(model, crit, a * Xte, yte)[1]
    return {"factors": list(factors), "layer_relative_change": layer_out, "methods": list(methods), "seeds": seeds,
            "trained_test_accuracy": {m: [_spread(accs[m][i]) for i in range(len(factors))] for m in methods},
            "lr": {m: MLP_LR[m] for m in methods}}
