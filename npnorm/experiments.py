"""The experiments of the chapter "Why normalization helps", as functions that return data.

Each experiment takes ``quick`` (a fast setting, used by the tests and the book: a few seconds to a
few tens of seconds) and is otherwise the full setting (each well under two minutes on two cores with
the NumPy reference layers). Every run is seeded: the same call gives the same numbers.

* :func:`compare_normalizers` - the same small CNN trained with no normalization, BN, LN, GN and IN.
* :func:`batch_size_sweep` - BatchNorm against GroupNorm as the batch shrinks to 2.
* :func:`init_scale_sweep` - a deep MLP trained from weights scaled by a factor, with and without
  normalization.
* :func:`depth_statistics` - activation and gradient spread layer by layer at initialization.
* :func:`bn_train_eval_gap` - BatchNorm's train-mode vs eval-mode accuracy, and what recomputing
  the running statistics after training does.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np

from . import nn
from .data import make_shapes, make_spirals, train_test_split
from .training import evaluate, fit, layer_statistics, recompute_batchnorm_statistics

__all__ = ["NORMALIZERS", "norm_layer", "small_cnn", "deep_mlp", "shapes_data", "compare_normalizers",
           "batch_size_sweep", "init_scale_sweep", "depth_statistics", "bn_train_eval_gap"]

#: Short names of the normalizers the experiments compare.
NORMALIZERS = ("none", "bn", "ln", "gn", "in")


def norm_layer(norm: str, channels: int, spatial: tuple[int, ...] = ()) -> nn.Module:
    """A normalization layer for ``channels`` features (``spatial`` = (H, W) for images, () for vectors).

    ``"none"`` is the identity; ``"ln"`` normalizes each sample over all its features (``LayerNorm``
    over ``(C, H, W)``); ``"gn"`` uses groups of 4 channels; ``"in"`` is InstanceNorm with an affine map.
    """
    image = len(spatial) == 2
    if norm == "none":
        return nn.Identity()
    if norm == "bn":
        return nn.BatchNorm2d(channels) if image else nn.BatchNorm1d(channels)
    if norm == "ln":
        return nn.LayerNorm((channels, *spatial))
    if norm == "gn":
        return nn.GroupNorm(max(1, channels // 4), channels)
    if norm == "in":
        if not image:
            raise ValueError("norm_layer: InstanceNorm needs spatial positions; use it in the CNN only")
        return nn.InstanceNorm2d(channels, affine=True)
    raise ValueError(f"norm_layer: norm must be one of {NORMALIZERS}, got {norm!r}")


def small_cnn(norm: str = "bn", width: int = 16, size: int = 16, n_classes: int = 10, seed: int = 0) -> nn.Sequential:
    """Conv-Norm-ReLU-MaxPool twice, then Linear: ``(N, 1, size, size)`` images to ``n_classes`` logits.

    The convolutions have a bias only without normalization (a normalizer removes it anyway).
    """
    rng = np.random.default_rng(seed)
    bias = norm == "none"
    s2, s4 = size // 2, size // 4
    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1, bias=bias, rng=rng), norm_layer(norm, width, (size, size)), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1, bias=bias, rng=rng), norm_layer(norm, 2 * width, (s2, s2)),
        nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(2 * width * s4 * s4, n_classes, rng=rng),
    )


def deep_mlp(norm: str = "none", depth: int = 10, width: int = 64, in_features: int = 2, n_classes: int = 3,
             init_scale: float = 1.0, seed: int = 0) -> nn.Sequential:
    """A stem Linear-ReLU, then ``depth`` hidden blocks Linear-Norm-ReLU of ``width`` units, then a
    Linear classifier.

    A hidden Linear layer has a bias only without normalization: a normalizer would subtract a bias
    (BN) or, worse, mix it into the statistics (LN normalizes :math:`Wh + b` per sample, and when
    :math:`Wh` is small the output is dominated by the constant :math:`b`). The hidden weights are drawn from
    :math:`N(0, (\\text{init\\_scale}\\cdot\\sqrt{2/\\text{fan\\_in}})^2)`: ``init_scale = 1`` is Kaiming
    initialization, which keeps the activation scale roughly constant through ReLU layers; any other
    scale multiplies the activations by roughly ``init_scale`` per layer. The stem keeps PyTorch's
    default initialization and has no normalizer: a normalizer right after a Linear map of 2-D points
    would erase the points' distance from the origin (LayerNorm of :math:`Wx` does not depend on
    :math:`\\|x\\|`), which the spirals need.
    """
    rng = np.random.default_rng(seed)
    layers: list[nn.Module] = [nn.Linear(in_features, width, rng=rng), nn.ReLU()]
    for _ in range(depth):
        lin = nn.Linear(width, width, bias=norm == "none", rng=rng)
        nn.init.kaiming_normal_(lin.params["weight"], nonlinearity="relu", rng=rng)
        lin.params["weight"] *= init_scale
        layers += [lin, norm_layer(norm, width), nn.ReLU()]
    layers.append(nn.Linear(width, n_classes, rng=rng))
    return nn.Sequential(*layers)


def shapes_data(n_samples: int, seed: int = 0):
    """The shapes set split 3:1 into ``(X_train, y_train, X_test, y_test)``, float64."""
    X, y = make_shapes(n_samples, seed=seed)
    return train_test_split(X.astype(np.float64), y, 0.25, seed=seed)


def _train_cnn(norm, data, epochs, batch_size, lr, seed, momentum=0.9):
    Xtr, ytr, Xte, yte = data
    model = small_cnn(norm, seed=seed)
    hist = fit(model, nn.CrossEntropyLoss(), nn.SGD(model, lr=lr, momentum=momentum), Xtr, ytr, epochs=epochs,
               batch_size=batch_size, seed=seed, X_val=Xte, y_val=yte, progress=False)
    return model, hist


def compare_normalizers(quick: bool = True, norms: tuple[str, ...] = NORMALIZERS, seed: int = 0) -> dict[str, Any]:
    """Train :func:`small_cnn` with each normalizer on the shapes set, same data, seed and optimizer
    (SGD, momentum 0.9, learning rate 0.02, batch 32).

    Returns ``{"epochs", "n_train", "histories": {norm: History.as_dict()}, "final_acc": {norm: acc}}``.
    """
    n, epochs = (1600, 3) if quick else (4000, 6)
    data = shapes_data(n, seed)
    histories, final = {}, {}
    for norm in norms:
        _, hist = _train_cnn(norm, data, epochs, 32, 0.02, seed)
        histories[norm] = hist.as_dict()
        final[norm] = hist.final_val_acc
    return {"epochs": epochs, "n_train": len(data[1]), "histories": histories, "final_acc": final}


def batch_size_sweep(quick: bool = True, batch_sizes: tuple[int, ...] | None = None, norms=("bn", "gn"),
                     seed: int = 0) -> dict[str, Any]:
    """Test accuracy (eval mode) of the small CNN with BN and GN for several batch sizes.

    Same number of epochs for every batch size, learning rate scaled linearly with the batch
    (0.02 at batch 32), so every run sees the same samples with comparable step sizes.
    Returns ``{"batch_sizes", "acc": {norm: [acc per batch size]}, "train_acc": {...}}``.
    """
    if batch_sizes is None:
        batch_sizes = (2, 4, 8, 32) if quick else (2, 4, 8, 16, 32)
    n, epochs = (800, 2) if quick else (2400, 3)
    data = shapes_data(n, seed)
    acc = {norm: [] for norm in norms}
    train_acc = {norm: [] for norm in norms}
    for norm in norms:
        for b in batch_sizes:
            _, hist = _train_cnn(norm, data, epochs, b, 0.02 * b / 32, seed)
            acc[norm].append(hist.final_val_acc)
            train_acc[norm].append(hist.train_acc[-1])
    return {"batch_sizes": list(batch_sizes), "acc": acc, "train_acc": train_acc, "epochs": epochs}


def init_scale_sweep(quick: bool = True, scales: tuple[float, ...] | None = None, norms=("none", "bn", "ln"),
                     depth: int = 10, seed: int = 0) -> dict[str, Any]:
    """Train :func:`deep_mlp` (``depth`` hidden layers) on three spirals from weights scaled by each
    factor (1 = Kaiming); final test accuracy per normalizer and scale (chance is 1/3).

    Returns ``{"scales", "acc": {norm: [...]}, "loss": {norm: [final train loss ...]},
    "diverged": {norm: [...]}}``.
    """
    if scales is None:
        scales = (0.25, 0.5, 1.0, 2.0, 4.0) if quick else (0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 10.0)
    n, epochs = (1200, 12) if quick else (2000, 30)
    X, y = make_spirals(n, n_classes=3, noise=0.15, seed=seed)
    Xtr, ytr, Xte, yte = train_test_split(X, y, 0.25, seed=seed)
    out = {"scales": list(scales), "acc": {}, "loss": {}, "diverged": {}, "depth": depth}
    for norm in norms:
        accs, losses, div = [], [], []
        for s in scales:
            model = deep_mlp(norm, depth=depth, init_scale=s, seed=seed)
            hist = fit(model, nn.CrossEntropyLoss(), nn.SGD(model, lr=0.02, momentum=0.9), Xtr, ytr,
                       epochs=epochs, batch_size=32, seed=seed, X_val=Xte, y_val=yte, progress=False)
            accs.append(hist.final_val_acc if not hist.diverged else float("nan"))
            losses.append(hist.train_loss[-1] if hist.train_loss and not hist.diverged else float("nan"))
            div.append(hist.diverged)
        out["acc"][norm], out["loss"][norm], out["diverged"][norm] = accs, losses, div
    return out


def depth_statistics(quick: bool = True, norms=("none", "bn", "ln"), scales=(0.5, 1.0, 2.0), depth: int | None = None,
                     seed: int = 0) -> dict[str, Any]:
    """Standard deviation of the activations (after each ReLU) and of the loss gradient with respect to
    them, layer by layer, for :func:`deep_mlp` at initialization on a batch of spiral points.

    Returns ``{"depth", "scales", "act_std": {(norm, scale): [...]}, "grad_std": {(norm, scale): [...]}}``.
    """
    if depth is None:
        depth = 10 if quick else 20
    X, y = make_spirals(512, n_classes=3, noise=0.15, seed=seed)
    act, grad = {}, {}
    for norm in norms:
        for s in scales:
            model = deep_mlp(norm, depth=depth, init_scale=s, seed=seed)
            rows = [r for r in layer_statistics(model, nn.CrossEntropyLoss(), X, y) if r["layer"] == "ReLU"][1:]
            act[(norm, s)] = [r["act_std"] for r in rows]
            grad[(norm, s)] = [r["grad_std"] for r in rows]
    return {"depth": depth, "scales": list(scales), "norms": list(norms), "act_std": act, "grad_std": grad}


def bn_train_eval_gap(quick: bool = True, batch_sizes: tuple[int, ...] = (4, 32), seed: int = 0) -> dict[str, Any]:
    """Train the BN CNN at each batch size, then measure test accuracy three ways:

    * ``"train_mode"``: normalizing with the statistics of each test batch of 256 (train mode);
    * ``"eval_running"``: eval mode with the running (exponential moving average) statistics;
    * ``"eval_recomputed"``: eval mode after :func:`recompute_batchnorm_statistics` on the training set.

    Returns ``{"batch_sizes", "train_mode": [...], "eval_running": [...], "eval_recomputed": [...],
    "train_acc": [...]}``.
    """
    n, epochs = (800, 2) if quick else (2400, 3)
    data = shapes_data(n, seed)
    Xtr, ytr, Xte, yte = data
    crit = nn.CrossEntropyLoss()
    out = {"batch_sizes": list(batch_sizes), "train_mode": [], "eval_running": [], "eval_recomputed": [],
           "train_acc": []}
    for b in batch_sizes:
        model, hist = _train_cnn("bn", data, epochs, b, 0.02 * b / 32, seed)
        out["train_acc"].append(hist.train_acc[-1])
        out["train_mode"].append(evaluate(model, crit, Xte, yte, batch_size=256, mode="train")[1])
        out["eval_running"].append(evaluate(model, crit, Xte, yte)[1])
        precise = recompute_batchnorm_statistics(copy.deepcopy(model), Xtr, batch_size=256)
        out["eval_recomputed"].append(evaluate(precise, crit, Xte, yte)[1])
    return out
