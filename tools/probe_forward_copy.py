"""How much of a statistics layer's forward pass is the private copy of ``x``? (a diagnostic, issue 19)

Times, interleaved in one process (minimum of ``--repeats`` rounds), the fused LayerNorm and GroupNorm
forward drivers with the copy (what the layers run: ``_*_fwd_keep_parallel``) and without it
(``_*_fwd_parallel``, what the kernels run when ``x`` is already a private array), a plain
``np.copyto`` of ``x``, and PyTorch's forward under ``torch.no_grad()`` and with autograd. Run with the
benchmark environment (it needs PyTorch):

    PYTHONPATH=$PWD .venv-bench/bin/python tools/probe_forward_copy.py --threads 2

Not a test and not part of npnorm: timings are printed, never asserted.
"""

from __future__ import annotations

import argparse
import time

import numba
import numpy as np


def _cases(dtype: str, threads: int):
    import torch
    from npnorm.kernels.statistics import groupnorm as kgn, layernorm as kln

    rng = np.random.default_rng(0)
    out = {}
    # LayerNorm (4096, 1024), the benchmark's first case
    x = (3 + 2 * rng.standard_normal((4096, 1024))).astype(dtype)
    n, m = x.shape
    y, keep = np.empty_like(x), np.empty_like(x)
    w, b, mean, rstd = np.ones(m), np.zeros(m), np.empty(n), np.empty(n)
    xt, wt, bt = torch.from_numpy(x), torch.ones(m, dtype=torch.from_numpy(x).dtype), None
    xg = xt.clone().requires_grad_(True)

    def ln_torch_nograd():
        with torch.no_grad():
            torch.nn.functional.layer_norm(xt, (m,), wt, bt, 1e-5)

    out["LayerNorm 4096x1024"] = {
        "kernel + copy": lambda: kln._ln_fwd_keep_parallel(x, w, b, 1e-5, y, mean, rstd, keep, threads),
        "kernel, no copy": lambda: kln._ln_fwd_parallel(x, w, b, 1e-5, y, mean, rstd, threads),
        "np.copyto(x)": lambda: np.copyto(keep, x),
        "torch no_grad": ln_torch_nograd,
        "torch autograd": lambda: torch.nn.functional.layer_norm(xg, (m,), wt, bt, 1e-5),
    }
    # GroupNorm (32, 256, 32, 32), G = 32
    g = 32
    x4 = (3 + 2 * rng.standard_normal((32, 256, 32, 32))).astype(dtype)
    x3 = x4.reshape(32, 256, -1)
    y3, k3 = np.empty_like(x3), np.empty_like(x3)
    sc, sh = np.ones((1, 256)), np.zeros((1, 256))
    gm, gv = np.empty(32 * g), np.empty(32 * g)
    x4t = torch.from_numpy(x4)
    x4g = x4t.clone().requires_grad_(True)

    def gn_torch_nograd():
        with torch.no_grad():
            torch.nn.functional.group_norm(x4t, g, None, None, 1e-5)

    out["GroupNorm 32x256x32x32"] = {
        "kernel + copy": lambda: kgn._gn_fwd_keep_parallel(x3, g, sc, sh, 1e-5, y3, gm, gv, k3, threads),
        "kernel, no copy": lambda: kgn._gn_fwd_parallel(x3, g, sc, sh, 1e-5, y3, gm, gv, threads),
        "np.copyto(x)": lambda: np.copyto(k3, x3),
        "torch no_grad": gn_torch_nograd,
        "torch autograd": lambda: torch.nn.functional.group_norm(x4g, g, None, None, 1e-5),
    }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--dtypes", default="float32,float64")
    args = parser.parse_args()
    import torch
    numba.set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    for dtype in args.dtypes.split(","):
        for case, fns in _cases(dtype, args.threads).items():
            for fn in fns.values():
                fn(), fn()
            times = {k: [] for k in fns}
            for _ in range(args.repeats):
                for k, fn in fns.items():
                    t0 = time.perf_counter()
                    fn()
                    times[k].append(time.perf_counter() - t0)
            best = {k: min(v) * 1e3 for k, v in times.items()}
            print(f"{case} {dtype}, {args.threads} threads, min of {args.repeats} (ms): "
                  + ", ".join(f"{k} {v:.2f}" for k, v in best.items()))


if __name__ == "__main__":
    main()
