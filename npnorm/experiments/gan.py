"""The experiments of the chapter "Keeping a critic Lipschitz": a GAN on 2-D data with weight clipping,
a gradient penalty, spectral normalization (1 or 5 power steps) or nothing, as functions that return data.

* :func:`gan_lipschitz` - the GAN trained with every method (and the non-saturating loss with and
  without spectral norm) over several seeds, logging during training: the critic's empirical
  Lipschitz constant against the layer-wise bound, spectral norm's power-iteration estimate against
  the exact sigma, modes covered and high-quality samples, the sliced Wasserstein distance to the
  data (and the data-vs-data floor), time per critic step; critic contours with samples over training.
* :func:`critic_fixed_generator` - the critic alone against a fixed "generator" (the data plus
  Gaussian noise, as in the WGAN-GP paper's value-surface figure): value surfaces, the gradient norm
  on and off the interpolation lines, clipped weights piling up at +-c, and the critic's capacity
  under clipping.

Metrics: :func:`sliced_wasserstein`, :func:`mode_stats`, :func:`lipschitz_probe`.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ..data import make_gan_data, mixture_centres
from ..models.gan import GAN, MLPCritic
from .. import nn
from ._framework import experiment, progress, progress_map

__all__ = ["RUNS", "run_label", "sliced_wasserstein", "mode_stats", "lipschitz_probe", "train_gan",
           "gan_lipschitz", "critic_fixed_generator", "GRID_LIMIT"]

CHAPTER = "Keeping a critic Lipschitz"

#: (loss, method, options of :func:`train_gan`) of every run of :func:`gan_lipschitz`.
RUNS = (("wasserstein", "none", {}), ("wasserstein", "clip", {"clip": 0.01}), ("wasserstein", "gp", {"lam": 1.0}),
        ("wasserstein", "gp", {"lam": 10.0}), ("wasserstein", "sn", {"n_power_iterations": 1}),
        ("wasserstein", "sn", {"n_power_iterations": 5}), ("nonsaturating", "none", {}),
        ("nonsaturating", "sn", {"n_power_iterations": 1}))
#: The square [-GRID_LIMIT, GRID_LIMIT]^2 on which critic surfaces are evaluated.
GRID_LIMIT = 2.75
#: Standard deviation of each mixture component (npnorm.data.gan2d's default) and the "high quality" radius.
MODE_STD = 0.05
#: A mode counts as covered when at least this many of the 1000 evaluation samples are high quality near it.
MODE_MIN_SAMPLES = 10


def run_label(loss: str, method: str, opts: dict[str, Any] | None = None) -> str:
    """``"wgan-gp10"`` (lambda 10), ``"wgan-sn5"`` (5 power steps), ``"ns-sn1"``, ...: the name of a run."""
    opts = opts or {}
    prefix = "wgan" if loss == "wasserstein" else "ns"
    suffix = {"sn": f"{opts.get('n_power_iterations', 1)}", "gp": f"{opts.get('lam', 10.0):g}"}.get(method, "")
    return f"{prefix}-{method}{suffix}"


def sliced_wasserstein(a: np.ndarray, b: np.ndarray, n_projections: int = 64, seed: int = 0) -> float:
    r"""Sliced 1-Wasserstein distance between two equal-size point clouds: the mean over random unit
    directions :math:`\theta` of :math:`W_1(\theta^\top a, \theta^\top b)`, which in one dimension is the
    mean absolute difference of the sorted projections."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"sliced_wasserstein: the two samples must have the same shape, got {a.shape} and {b.shape}")
    theta = np.random.default_rng(seed).standard_normal((a.shape[1], n_projections))
    theta /= np.linalg.norm(theta, axis=0)
    pa, pb = np.sort(a @ theta, axis=0), np.sort(b @ theta, axis=0)
    return float(np.mean(np.abs(pa - pb)))


def mode_stats(samples: np.ndarray, centres: np.ndarray, std: float = MODE_STD,
               min_samples: int = MODE_MIN_SAMPLES) -> dict[str, float]:
    """``{"modes": covered modes, "hq": fraction of samples within 3 std of some centre}``; a mode is
    covered when at least ``min_samples`` high-quality samples are nearest to it."""
    d = np.linalg.norm(samples[:, None, :] - centres[None, :, :], axis=2)
    nearest, hq = d.argmin(axis=1), d.min(axis=1) < 3 * std
    counts = np.bincount(nearest[hq], minlength=len(centres))
    return {"modes": int(np.sum(counts >= min_samples)), "hq": float(hq.mean())}


def lipschitz_probe(critic: MLPCritic, real: np.ndarray, fake: np.ndarray, rng: np.random.Generator) -> dict[str, float]:
    """Input-gradient norms of the critic on real points, fake points and random interpolates.

    ``lip`` is the largest of them (the empirical Lipschitz constant), ``bound`` the product of the
    layers' exact spectral norms, ``interp_mean`` / ``interp_std`` the norms at the interpolates (what
    the gradient penalty pushes to 1)."""
    eps = rng.random((len(real), 1))
    interp = eps * real + (1 - eps) * fake
    norms = {k: np.linalg.norm(critic.input_gradient(x), axis=1)
             for k, x in (("real", real), ("fake", fake), ("interp", interp))}
    out = {f"max_{k}": float(v.max()) for k, v in norms.items()}
    out.update(lip=max(out.values()), bound=critic.lipschitz_bound(),
               interp_mean=float(norms["interp"].mean()), interp_std=float(norms["interp"].std()))
    return out


def _grid(n: int) -> np.ndarray:
    t = np.linspace(-GRID_LIMIT, GRID_LIMIT, n)
    xx, yy = np.meshgrid(t, t)
    return np.stack([xx.ravel(), yy.ravel()], axis=1)


def train_gan(dataset: str = "ring", loss: str = "wasserstein", method: str = "gp", n_power_iterations: int = 1,
              iterations: int = 400, hidden: int = 32, depth: int = 3, batch_size: int = 128, n_critic: int = 5,
              lr: float = 1e-3, lam: float = 10.0, clip: float = 0.01, log_every: int = 50,
              snapshots: tuple[int, ...] = (), grid_size: int = 32, n_eval: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Train one GAN and log its measurements every ``log_every`` generator iterations (and at 0).

    The non-saturating loss makes one discriminator step per generator step, the Wasserstein loss
    ``n_critic``. Evaluation uses its own random numbers, so logging does not change training.
    Returns ``{"steps": [...], "lip", "bound", "interp_mean", "interp_std", "swd", "modes", "hq",
    "sigma_ratio" (spectral norm: smallest estimate/exact over the layers), "ms_per_critic_step",
    "snapshots": [{"step", "values" (grid_size^2), "samples"}], "final": {...}}``.
    """
    gan = GAN(loss, method, hidden=hidden, depth=depth, lr=lr, lam=lam, clip=clip,
              n_power_iterations=n_power_iterations, seed=seed)
    data = make_gan_data(dataset, 20000, seed=seed + 1000)
    reference = make_gan_data(dataset, n_eval, seed=seed + 2000)
    centres = mixture_centres(dataset) if dataset in ("ring", "grid") else None
    train_rng = np.random.default_rng(seed + 3000)
    eval_rng = np.random.default_rng(seed + 4000)
    z_eval = eval_rng.standard_normal((n_eval, gan.latent_dim))
    grid = _grid(grid_size)
    hist: dict[str, Any] = {k: [] for k in ("steps", "lip", "bound", "interp_mean", "interp_std", "swd", "modes",
                                            "hq", "sigma_ratio")}
    hist["snapshots"] = []
    steps_per_iter = n_critic if loss == "wasserstein" else 1

    def log(step: int) -> None:
        samples = gan.generator(z_eval)
        probe = lipschitz_probe(gan.critic, reference[:256], samples[:256], eval_rng)
        hist["steps"].append(step)
        for k in ("lip", "bound", "interp_mean", "interp_std"):
            hist[k].append(probe[k])
        hist["swd"].append(sliced_wasserstein(samples, reference, seed=seed))
        stats = mode_stats(samples, centres) if centres is not None else {"modes": None, "hq": None}
        hist["modes"].append(stats["modes"])
        hist["hq"].append(stats["hq"])
        if method == "sn":
            est, exact = gan.critic.sigma_estimates()
            hist["sigma_ratio"].append(float(np.min(est / exact)))
        if step in snapshots:
            hist["snapshots"].append({"step": step, "values": gan.critic.value(grid), "samples": samples[:300]})

    log(0)
    for it in range(1, iterations + 1):
        for _ in range(steps_per_iter):
            gan.critic_step(data[train_rng.integers(0, len(data), batch_size)])
        gan.generator_step(batch_size)
        if it % log_every == 0 or it == iterations:
            log(it)
    hist["ms_per_critic_step"] = 1e3 * float(np.median(gan.critic_seconds))
    hist["final"] = {k: hist[k][-1] for k in ("lip", "bound", "interp_mean", "swd", "modes", "hq")}
    if method == "clip":
        w = np.concatenate([np.ravel(gan.critic.raw_weight(m)) for m in gan.critic.linear_layers()])
        hist["final"]["at_clip"] = float(np.mean(np.abs(w) >= 0.99 * clip))
    return hist


def _spread(values: list[float]) -> dict[str, float]:
    a = np.asarray([v for v in values if v is not None], dtype=np.float64)
    return {"mean": float(a.mean()), "min": float(a.min()), "max": float(a.max())} if a.size else {}


@experiment("gan-lipschitz", "a 2-D GAN with weight clipping, gradient penalty, spectral norm (1 or 5 power "
            "steps) or nothing: Lipschitz constant vs bound, modes, distance, cost", CHAPTER)
def gan_lipschitz(quick: bool = True, seed: int = 0, datasets: tuple[str, ...] | None = None,
                  runs: tuple[tuple[str, str, dict[str, Any]], ...] = RUNS, n_seeds: int | None = None) -> dict[str, Any]:
    """Every run of :data:`RUNS` on each data set, over several seeds.

    Quick: the ring, 3 seeds, 400 generator iterations, width 32, batch 128. Full: ring, grid and swiss
    roll, 5 seeds, 3000 iterations, width 64, batch 256. Snapshots of the critic surface (seed
    ``seed``, first data set) at the start, a quarter of the way and the end.

    Returns ``{"datasets", "seeds", "runs" (labels), "iterations", "history": {dataset: {label: [one
    train_gan dict per seed, without snapshots]}}, "final": {dataset: {label: {metric: {mean, min,
    max}}}}, "swd_floor": {dataset: spread over seeds}, "snapshots": {label: [...]}}``.
    """
    datasets = tuple(datasets or (("ring",) if quick else ("ring", "grid", "swissroll")))
    n_seeds = n_seeds or (3 if quick else 5)
    iterations, hidden, batch, log_every = (400, 32, 128, 50) if quick else (3000, 64, 256, 250)
    seeds = [seed + i for i in range(n_seeds)]
    snap_steps = (0, iterations // 4, iterations)
    labels = [run_label(*r) for r in runs]
    history: dict[str, Any] = {d: {lab: [] for lab in labels} for d in datasets}
    snapshots: dict[str, Any] = {}
    combos = [(d, s, r) for d in datasets for s in seeds for r in runs]
    jobs = [((d, loss, method), dict(iterations=iterations, hidden=hidden, batch_size=batch,
                                     log_every=log_every, seed=s, **opts,
                                     snapshots=snap_steps if (d == datasets[0] and s == seeds[0]) else ()))
            for d, s, (loss, method, opts) in combos]
    for (d, s, (loss, method, opts)), h in zip(combos, progress_map(train_gan, jobs, "GAN runs")):
        lab = run_label(loss, method, opts)
        if h["snapshots"]:
            snapshots[lab] = h["snapshots"]
        del h["snapshots"]
        history[d][lab].append(h)
    final = {d: {lab: {k: _spread([h["final"].get(k) for h in hs])
                       for k in ("lip", "bound", "interp_mean", "swd", "modes", "hq", "at_clip")
                       if any(h["final"].get(k) is not None for h in hs)}
                 | {"ms_per_critic_step": _spread([h["ms_per_critic_step"] for h in hs])}
                 for lab, hs in history[d].items()} for d in datasets}
    floor = {d: _spread([sliced_wasserstein(make_gan_data(d, 1000, seed=s + 2000), make_gan_data(d, 1000, seed=s + 5000),
                                            seed=s) for s in seeds]) for d in datasets}
    return {"datasets": list(datasets), "seeds": seeds, "runs": labels, "iterations": iterations,
            "grid_limit": GRID_LIMIT, "history": history, "final": final, "swd_floor": floor,
            "snapshots": snapshots}


# -- the critic alone ------------------------------------------------------------------------------
FIXED_METHODS = (("none", {}), ("clip", {"clip": 0.01}), ("clip", {"clip": 0.1}), ("gp", {"lam": 10.0}),
                 ("sn", {"n_power_iterations": 1}))


#: Radius of the circle of points far from the data and from every interpolation line (the data sit at
#: radius 2, the fixed generator adds N(0, 1) noise).
FAR_RADIUS = 6.0


def _fixed_label(method: str, opts: dict[str, Any]) -> str:
    if method == "clip":
        return f"clip-{opts['clip']:g}"
    if method == "gp":
        return f"gp-{opts['lam']:g}"
    if method == "sn":
        return f"sn{opts['n_power_iterations']}"
    return method


@experiment("critic-fixed-generator", "the critic alone against data + noise: value surfaces, gradient norms "
            "on and off the interpolation lines, clipped weights at +-c, capacity", CHAPTER)
def critic_fixed_generator(quick: bool = True, seed: int = 0, dataset: str = "ring",
                           methods=FIXED_METHODS, noise: float = 1.0) -> dict[str, Any]:
    """Train only the critic (Wasserstein loss, Adam) to separate the data from a fixed "generator",
    the data plus N(0, noise^2) noise (the WGAN-GP paper's value-surface setting).

    Measured after training, per method: the surface on a grid; input-gradient norms at interpolates
    (the penalty's points), on the grid and on a circle of radius :data:`FAR_RADIUS` (off the
    interpolation lines); the normalized critic
    gap :math:`(E D(\\text{real}) - E D(\\text{fake}))/L_{emp}` - a lower bound of :math:`W_1` for every
    critic, so the larger, the more of its Lipschitz budget the critic uses; the histogram of the
    weights (clipping: mass at +-c); time per critic step. Quick: 600 critic steps, width 64; full: 3000.
    """
    steps, hidden, batch, grid_size = (600, 64, 128, 40) if quick else (3000, 128, 256, 60)
    data = make_gan_data(dataset, 20000, seed=seed + 1)
    rng = np.random.default_rng(seed)
    grid = _grid(grid_size)
    angles = np.linspace(0, 2 * np.pi, 200, endpoint=False)
    far = FAR_RADIUS * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    results: dict[str, Any] = {}
    for method, opts in progress(methods, "critics"):
        lab = _fixed_label(method, opts)
        critic = MLPCritic(2, hidden, 3, "relu", spectral_norm=method == "sn",
                           n_power_iterations=opts.get("n_power_iterations", 1), seed=seed)
        c = opts.get("clip")
        if c:
            critic.clip_(c)
        opt = nn.Adam(critic, lr=1e-3, betas=(0.5, 0.9))
        run_rng = np.random.default_rng(seed + 7)
        seconds, gap_curve = [], []
        for step in range(steps):
            t0 = time.perf_counter()
            real = data[run_rng.integers(0, len(data), batch)]
            fake = data[run_rng.integers(0, len(data), batch)] + noise * run_rng.standard_normal((batch, 2))
            critic.zero_grad()
            d = critic(np.concatenate([real, fake]))[:, 0]
            critic.backward(np.concatenate([np.full(batch, -1.0 / batch), np.full(batch, 1.0 / batch)])[:, None])
            if method == "gp":
                eps = run_rng.random((batch, 1))
                critic.gradient_penalty(eps * real + (1 - eps) * fake, opts["lam"])
            opt.step()
            if c:
                critic.clip_(c)
            seconds.append(time.perf_counter() - t0)
            gap_curve.append(float(d[:batch].mean() - d[batch:].mean()))
        real = data[rng.integers(0, len(data), 1000)]
        fake = data[rng.integers(0, len(data), 1000)] + noise * rng.standard_normal((1000, 2))
        eps = rng.random((1000, 1))
        interp = eps * real + (1 - eps) * fake
        g_interp = np.linalg.norm(critic.input_gradient(interp), axis=1)
        g_grid = np.linalg.norm(critic.input_gradient(grid), axis=1)
        g_far = np.linalg.norm(critic.input_gradient(far), axis=1)
        probe = lipschitz_probe(critic, real, fake, rng)
        lip = max(probe["lip"], float(g_grid.max()))
        gap = float(critic.value(real).mean() - critic.value(fake).mean())
        weights = np.concatenate([np.ravel(critic.raw_weight(m)) for m in critic.linear_layers()])
        if method == "sn":
            weights = np.concatenate([np.ravel(W) for W in critic.weights_and_biases()[0]])
        results[lab] = {
            "values": critic.value(grid), "grad_norm_grid": g_grid, "grad_norm_interp": g_interp,
            "interp_mean": float(g_interp.mean()), "interp_std": float(g_interp.std()),
            "grid_mean": float(g_grid.mean()), "grid_std": float(g_grid.std()),
            "far_mean": float(g_far.mean()), "far_min": float(g_far.min()), "far_max": float(g_far.max()),
            "lip": lip, "bound": critic.lipschitz_bound(), "gap": gap, "normalized_gap": gap / lip,
            "weights": weights, "at_clip": float(np.mean(np.abs(weights) >= 0.99 * c)) if c else None,
            "ms_per_critic_step": 1e3 * float(np.median(seconds)), "gap_curve": gap_curve[::max(1, steps // 100)],
        }
    return {"dataset": dataset, "noise": noise, "steps": steps, "grid_size": grid_size, "grid_limit": GRID_LIMIT,
            "data": data[:500], "methods": list(results), "results": results}
