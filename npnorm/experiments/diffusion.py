"""The experiments of the chapter "Adaptive normalization": a DDPM on labelled 2-D points whose
denoiser reads the timestep and the class through adaptive normalization in every block.

* :func:`diffusion_2d` - the conditional model against the same model without the timestep:
  sliced Wasserstein distance to held-out data (with the data-vs-data floor) and the fraction of
  class-conditional samples that land in the asked class.
* :func:`diffusion_ablations` - over several seeds: the timestep through adaptive norm vs
  concatenated to the input vs not given; class through AdaGN / adaLN / adaLN-Zero vs none;
  injection in every block vs the first only; adaLN-Zero's zero init vs the default init (training
  curves).
* :func:`diffusion_guidance` - classifier-free guidance: one network trained with a null class,
  sampled at several guidance scales.
* :func:`diffusion_shapes` - the image capstone: a conv denoiser (GroupNorm + AdaGN at two
  resolutions) on the 16x16 procedural shapes.

Measures (:func:`sliced_wasserstein`, :func:`in_class_fraction`) are plain functions so that the
tests and the book use the same ones. Training runs single-threaded NumPy (set
``OMP_NUM_THREADS=1``: BLAS threads only slow these small matrices down).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from .. import nn
from ..data import make_shapes_2d
from ..models.ddpm import Schedule, linear_betas, sample, train_step
from ..models.denoiser import Denoiser2D
from ._framework import experiment, progress

__all__ = ["sliced_wasserstein", "in_class_fraction", "train_denoiser", "evaluate_denoiser", "diffusion_2d",
           "diffusion_ablations", "diffusion_guidance", "diffusion_shapes", "ShapeClassifier", "shapes_setting",
           "ABLATIONS", "NUM_STEPS"]

CHAPTER = "Adaptive normalization"

#: Sampling clips the predicted clean point to [-CLIP, CLIP] per coordinate (the data lie within 2.7).
CLIP = 3.0

#: Diffusion steps T (with the beta range scaled by 1000 / T, see :func:`npnorm.models.ddpm.linear_betas`).
NUM_STEPS = 50


def sliced_wasserstein(a: np.ndarray, b: np.ndarray, n_proj: int = 200, seed: int = 0) -> float:
    """Sliced 2-Wasserstein distance between two equal-size point sets ``(n, d)``.

    Both sets are projected on ``n_proj`` random unit directions (fixed by ``seed``); in one
    dimension the optimal matching pairs the sorted projections, so the distance per direction is
    the RMS difference of the sorted values. Returns the square root of the mean over directions
    of the squared 1-D distances.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"sliced_wasserstein: the two sets must have the same shape, got {a.shape} and {b.shape}")
    d = np.random.default_rng(seed).standard_normal((n_proj, a.shape[1]))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    pa, pb = np.sort(a @ d.T, axis=0), np.sort(b @ d.T, axis=0)
    return float(np.sqrt(np.mean((pa - pb) ** 2)))


def in_class_fraction(points: np.ndarray, asked: np.ndarray, X_ref: np.ndarray, y_ref: np.ndarray) -> float:
    """Fraction of ``points`` whose nearest reference point has the asked label (NaN points count as misses)."""
    d2 = ((points[:, None, :] - X_ref[None, :, :]) ** 2).sum(axis=-1)
    labels = y_ref[np.argmin(np.where(np.isfinite(d2), d2, np.inf), axis=1)]
    return float(np.mean((labels == asked) & np.all(np.isfinite(points), axis=1)))


def train_denoiser(config: dict[str, Any], X: np.ndarray, y: np.ndarray, steps: int, batch: int, lr: float,
                   seed: int, curve_every: int = 50, class_dropout: float = 0.0):
    """Train a :class:`Denoiser2D` built from ``config``; returns ``(model, schedule, curve, seconds)``,
    ``curve`` the mean loss of every ``curve_every`` steps."""
    sched = Schedule(linear_betas(NUM_STEPS))
    model = Denoiser2D(num_classes=int(y.max()) + 1, num_steps=NUM_STEPS, seed=seed, **config)
    opt = nn.Adam(model, lr=lr)
    rng = np.random.default_rng(seed + 1000)
    losses = []
    start = time.perf_counter()
    for _ in range(steps):
        idx = rng.integers(0, len(X), batch)
        losses.append(train_step(model, opt, sched, X[idx], y[idx], rng, class_dropout))
    seconds = time.perf_counter() - start
    k = max(1, steps // curve_every)
    curve = np.asarray(losses[:k * curve_every]).reshape(k, -1).mean(axis=1)
    return model, sched, curve, seconds


def evaluate_denoiser(model, sched, X_eval: np.ndarray, X_ref: np.ndarray, y_ref: np.ndarray, seed: int,
                      guidance: float = 0.0) -> dict[str, Any]:
    """Sample as many points as ``X_eval`` has, balanced over the classes (asked labels); SWD to
    ``X_eval`` and the in-class fraction against ``(X_ref, y_ref)``."""
    n = len(X_eval)
    k = model.num_classes
    asked = np.arange(n) % k
    with np.errstate(over="ignore", invalid="ignore"):      # a model not told t may diverge while sampling
        pts, _ = sample(model, sched, n, asked if model.class_cond else None, np.random.default_rng(seed + 2000),
                        guidance=guidance, clip=CLIP)
    finite = np.all(np.isfinite(pts))
    return {"swd": sliced_wasserstein(pts, X_eval) if finite else float("inf"),
            "in_class": in_class_fraction(pts, asked, X_ref, y_ref), "points": pts, "asked": asked}


def _data(n_train: int, n_eval: int, seed: int):
    X, y = make_shapes_2d(n_train, seed=seed)
    Xh, yh = make_shapes_2d(3 * n_eval, seed=seed + 1)      # held out: eval set, floor set, reference set
    return X, y, Xh[:n_eval], Xh[n_eval:2 * n_eval], Xh[2 * n_eval:], yh[2 * n_eval:]


def _setting(quick: bool) -> dict[str, Any]:
    if quick:
        return {"n_train": 4000, "n_eval": 600, "steps": 1500, "batch": 256, "lr": 2e-3, "width": 64}
    return {"n_train": 8000, "n_eval": 2000, "steps": 5000, "batch": 256, "lr": 2e-3, "width": 96}


@experiment("diffusion-2d", "DDPM on labelled 2-D shapes with AdaGN conditioning: distance to data and "
            "in-class fraction, with and without the timestep", CHAPTER)
def diffusion_2d(quick: bool = True, seed: int = 0) -> dict[str, Any]:
    """The conditional denoiser (AdaGN in every block, timestep + class embedding) against the same
    network not told the timestep.

    Returns the setting, the data-vs-data floor of the distance, and per model: ``swd``,
    ``in_class``, ``seconds`` (training time), the loss ``curve``, the ``samples`` and asked labels;
    for the conditional model also the denoising ``trajectory`` ``{t: points}`` of 400 samples.
    """
    s = _setting(quick)
    X, y, X_eval, X_floor, X_ref, y_ref = _data(s["n_train"], s["n_eval"], seed)
    out: dict[str, Any] = {"setting": s, "num_steps": NUM_STEPS, "floor": sliced_wasserstein(X_eval, X_floor),
                           "models": {}}
    for name, config in progress([("conditional", {"t_mode": "adaptive"}), ("no timestep", {"t_mode": "none"})],
                                 "models"):
        model, sched, curve, secs = train_denoiser(dict(config, width=s["width"], emb_dim=s["width"]), X, y,
                                                   s["steps"], s["batch"], s["lr"], seed)
        ev = evaluate_denoiser(model, sched, X_eval, X_ref, y_ref, seed)
        rec = {"swd": ev["swd"], "in_class": ev["in_class"], "seconds": secs, "curve": curve,
               "samples": ev["points"], "asked": ev["asked"]}
        if name == "conditional":
            keep = (NUM_STEPS, 40, 30, 20, 10, 5, 0)
            _, traj = sample(model, sched, 400, np.arange(400) % 4, np.random.default_rng(seed + 3000), keep=keep,
                             clip=CLIP)
            rec["trajectory"] = {int(t): traj[t] for t in keep}
        out["models"][name] = rec
    return out


#: The ablation variants: name -> Denoiser2D arguments (everything else as the baseline: AdaGN in
#: every block, timestep and class in the shared embedding).
ABLATIONS: dict[str, dict[str, Any]] = {
    "AdaGN, t + class, every block": {},
    "t concatenated to the input": {"t_mode": "concat"},
    "no t": {"t_mode": "none"},
    "adaLN (no gate)": {"norm": "adaln"},
    "adaLN-Zero, zero init": {"norm": "adaln-zero"},
    "adaLN-Zero, default init": {"norm": "adaln-zero", "zero_init": False},
    "no class": {"class_cond": False},
    "first block only": {"inject": "first"},
}


@experiment("diffusion-ablations", "2-D DDPM ablations over seeds: how the timestep and class enter, "
            "every block vs first, adaLN-Zero init", CHAPTER)
def diffusion_ablations(quick: bool = True, seed: int = 0, seeds: int | None = None,
                        variants: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Train every variant of :data:`ABLATIONS` with ``seeds`` seeds (3 quick, 5 full), starting at ``seed``.

    Quick: width 32, 500 steps of batch 128 (a few seconds per run); full: width 64, 3000 steps of
    batch 256. Returns the setting, the floor, and per variant the per-seed lists ``swd``,
    ``in_class``, ``final_loss``, ``seconds``, the loss ``curves`` (mean of every 25 steps), and the
    samples of the first seed.
    """
    if quick:
        s = {"n_train": 4000, "n_eval": 400, "steps": 500, "batch": 128, "lr": 3e-3, "width": 32}
    else:
        s = {"n_train": 8000, "n_eval": 1000, "steps": 3000, "batch": 256, "lr": 2e-3, "width": 64}
    n_seeds = seeds if seeds is not None else (3 if quick else 5)
    names = list(variants) if variants is not None else list(ABLATIONS)
    X, y, X_eval, X_floor, X_ref, y_ref = _data(s["n_train"], s["n_eval"], seed)
    out: dict[str, Any] = {"setting": s, "seeds": list(range(seed, seed + n_seeds)),
                           "floor": sliced_wasserstein(X_eval, X_floor), "variants": {}}
    for name in progress(names, "variants"):
        config = dict(ABLATIONS[name], width=s["width"], emb_dim=s["width"])
        rec: dict[str, Any] = {"config": ABLATIONS[name], "swd": [], "in_class": [], "final_loss": [],
                               "seconds": [], "curves": []}
        for k in range(n_seeds):
            model, sched, curve, secs = train_denoiser(config, X, y, s["steps"], s["batch"], s["lr"], seed + k,
                                                       curve_every=25)
            ev = evaluate_denoiser(model, sched, X_eval, X_ref, y_ref, seed + k)
            rec["swd"].append(ev["swd"])
            rec["in_class"].append(ev["in_class"])
            rec["final_loss"].append(float(curve[-4:].mean()))
            rec["seconds"].append(secs)
            rec["curves"].append(curve)
            if k == 0:
                rec["samples"], rec["asked"] = ev["points"], ev["asked"]
        out["variants"][name] = rec
    return out


@experiment("diffusion-guidance", "classifier-free guidance on the 2-D DDPM: one network trained with a null "
            "class, sampled with guidance scales", CHAPTER)
def diffusion_guidance(quick: bool = True, seed: int = 0,
                       scales: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0, 4.0)) -> dict[str, Any]:
    """Classifier-free guidance (Ho & Salimans): train the conditional denoiser with the label replaced by
    the null class 10% of the time, then sample with ``eps = (1 + w) eps(x, t, y) - w eps(x, t, null)``.

    Returns the setting, the floor, and per guidance scale ``w`` the distance to held-out data, the
    in-class fraction, and the mean distance of each sample to its nearest held-out point of the asked
    class (how tightly samples sit on their outline).
    """
    s = _setting(quick)
    X, y, X_eval, X_floor, X_ref, y_ref = _data(s["n_train"], s["n_eval"], seed)
    model, sched, curve, secs = train_denoiser({"width": s["width"], "emb_dim": s["width"]}, X, y, s["steps"],
                                               s["batch"], s["lr"], seed, class_dropout=0.1)
    out: dict[str, Any] = {"setting": s, "class_dropout": 0.1, "floor": sliced_wasserstein(X_eval, X_floor),
                           "seconds": secs, "scales": {}}
    for w in progress(scales, "guidance scales"):
        ev = evaluate_denoiser(model, sched, X_eval, X_ref, y_ref, seed, guidance=w)
        pts, asked = ev["points"], ev["asked"]
        near = [np.sqrt(((pts[asked == k, None, :] - X_ref[None, y_ref == k, :]) ** 2).sum(-1)).min(axis=1)
                for k in range(model.num_classes)]
        out["scales"][float(w)] = {"swd": ev["swd"], "in_class": ev["in_class"],
                                   "dist_to_class": float(np.mean(np.concatenate(near)))}
    return out


def _nearest_label(images: np.ndarray, X_ref: np.ndarray, y_ref: np.ndarray) -> np.ndarray:
    """Label of the nearest reference image in pixel space (squared distance), in chunks."""
    a = images.reshape(len(images), -1)
    b = X_ref.reshape(len(X_ref), -1)
    bb = (b * b).sum(axis=1)
    out = np.empty(len(a), dtype=np.int64)
    for i in range(0, len(a), 256):
        chunk = a[i:i + 256]
        out[i:i + 256] = y_ref[np.argmin(bb[None, :] - 2.0 * chunk @ b.T, axis=1)]
    return out


def _clean_shapes(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The capstone's images: shapes without photometric variation or pixel noise, in [-1, 1]."""
    from ..data import make_shapes

    X, y = make_shapes(n, noise=0.0, photometric=False, seed=seed)
    return 2.0 * X.astype(np.float64) - 1.0, y


class ShapeClassifier:
    """The in-class measure of the image capstone: the label of the nearest real image in pixel
    space, among the training images and ``n_extra`` more drawn from the same generator (a
    reference set of 7000 by default). :meth:`accuracy` on held-out real images is the ceiling of
    the in-class fraction: a perfect generator scores about that, not 1."""

    def __init__(self, X_train: np.ndarray, y_train: np.ndarray, n_extra: int = 5000, seed: int = 0) -> None:
        Xe, ye = _clean_shapes(n_extra, seed + 7)
        self.X, self.y = np.concatenate([X_train, Xe]), np.concatenate([y_train, ye])

    def predict(self, images: np.ndarray) -> np.ndarray:
        return _nearest_label(np.asarray(images, dtype=np.float64), self.X, self.y)

    def accuracy(self, images: np.ndarray, labels: np.ndarray) -> float:
        return float(np.mean(self.predict(images) == labels))


def shapes_setting(quick: bool) -> dict[str, Any]:
    """The capstone's quick (the book's) or full setting."""
    if quick:
        return {"n_train": 2000, "steps": 500, "batch": 16, "lr": 3e-3, "channels": 16, "ema": 0.98, "T": 100,
                "sample_steps": 25, "per_class": 12}
    return {"n_train": 5000, "steps": 3000, "batch": 32, "lr": 2e-3, "channels": 24, "ema": 0.995, "T": 100,
            "sample_steps": 50, "per_class": 20}


@experiment("diffusion-shapes", "image capstone: class-conditional DDPM on the 16x16 procedural shapes with a "
            "conv denoiser (GroupNorm + AdaGN at two resolutions)", CHAPTER)
def diffusion_shapes(quick: bool = True, seed: int = 0) -> dict[str, Any]:
    """Train :class:`npnorm.models.conv_denoiser.ConvDenoiser` on clean shapes (no photometric
    variation, no pixel noise, scaled to [-1, 1]) with T = 100 and the cosine schedule, keep an
    exponential moving average of the weights, then sample ``per_class`` images of every class in
    ``sample_steps`` respaced ancestral steps with the averaged weights.

    Quick: 500 Adam steps of batch 16, 16 channels, 25 sampling steps (about half a minute on one
    core); full: 3000 steps of batch 32, 24 channels, 50 sampling steps (about ten minutes).
    The in-class fraction is measured by :class:`ShapeClassifier` (nearest real image); its
    accuracy on 1000 held-out real images is reported as the ceiling.

    Returns the setting, the loss ``curve`` (mean of every 25 steps), ``in_class`` and its
    ``per_class`` values, ``ceiling`` and ``ceiling_per_class``, ``seconds`` (training) and
    ``sample_seconds``, the ``samples`` ``(classes * per_class, 16, 16)`` with their ``asked``
    labels and ``predicted`` labels, ``real`` (one held-out real image per class), and the
    ``trajectory`` of the first sample of every class: ``{sampling steps left: images (10, 16, 16)}``
    (``sample_steps`` is the starting noise, 0 the samples).
    """
    from ..models.conv_denoiser import ConvDenoiser
    from ..models.ddpm import EMA, cosine_betas, respace

    s = shapes_setting(quick)
    X, y = _clean_shapes(s["n_train"], seed)
    Xh, yh = _clean_shapes(1000, seed + 1)
    clf = ShapeClassifier(X, y, seed=seed)
    sched = Schedule(cosine_betas(s["T"]))
    model = ConvDenoiser(num_classes=10, channels=s["channels"], num_steps=s["T"], seed=seed)
    opt = nn.Adam(model, lr=s["lr"])
    ema = EMA(model, s["ema"], start=50)
    rng = np.random.default_rng(seed + 1000)
    losses = []
    start = time.perf_counter()
    for _ in progress(range(s["steps"]), "steps"):
        idx = rng.integers(0, len(X), s["batch"])
        losses.append(train_step(model, opt, sched, X[idx], y[idx], rng))
        ema.update()
    seconds = time.perf_counter() - start
    ema.copy_to()
    short, timesteps = respace(sched, s["sample_steps"])
    asked = np.repeat(np.arange(10), s["per_class"])
    keep = tuple(range(short.num_steps, -1, -max(1, short.num_steps // 5)))
    start = time.perf_counter()
    imgs, traj = sample(model, short, len(asked), asked, np.random.default_rng(seed + 2000), shape=(1, 16, 16),
                        clip=1.0, timesteps=timesteps, keep=keep + ((0,) if 0 not in keep else ()))
    sample_seconds = time.perf_counter() - start
    first = np.arange(10) * s["per_class"]
    pred = clf.predict(imgs)
    pred_h = clf.predict(Xh)
    k = max(1, s["steps"] // 25)
    curve = np.asarray(losses[:k * 25]).reshape(k, -1).mean(axis=1)
    return {"setting": s, "seconds": seconds, "sample_seconds": sample_seconds, "curve": curve,
            "in_class": float(np.mean(pred == asked)),
            "per_class": [float(np.mean(pred[asked == c] == c)) for c in range(10)],
            "ceiling": float(np.mean(pred_h == yh)),
            "ceiling_per_class": [float(np.mean(pred_h[yh == c] == c)) for c in range(10)],
            "samples": imgs[:, 0], "asked": asked, "predicted": pred,
            "real": np.stack([Xh[np.flatnonzero(yh == c)[0], 0] for c in range(10)]),
            "trajectory": {k: traj[k][first, 0] for k in sorted(traj, reverse=True)}}
