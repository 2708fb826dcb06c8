r"""Fused Numba twins of :mod:`npnorm.statistics.evonorm`: EvoNorm-B0 and EvoNorm-S0.

Both are normalization and activation in one layer; the kernels never store a full-size
intermediate (no :math:`u`, no sigmoid, no mask): the backward pass recomputes them elementwise from
the private copy of ``x`` and the small per-set statistics the forward pass saved.

EvoNorm-B0, equations (EB1)-(EB2), on ``x`` viewed as ``(N, C, S)``; one *row* is an (n, c) block
of ``S`` contiguous elements:

* forward: the per-row mean and biased variance (two passes over the cache-resident row) give the
  instance term :math:`s_{nc} = \sqrt{\operatorname{Var}_S + \epsilon}`; in training the same block
  statistics, merged over ``n`` with the law of total variance (equation (BN-merge)), give the
  batch variance, so training reads ``x`` once for the statistics
  (:func:`~npnorm.kernels.statistics.groupnorm.group_stats`) and once for the output; in evaluation
  (``running_var`` given) the statistics and the output are one traversal of each row. The output
  pass computes :math:`u = \max(\sigma_B, v x + s)` and :math:`y = \gamma x / u + \beta` and writes
  the private copy of ``x``.
* backward, pass 1 per row: with :math:`g = \gamma\,dy` and :math:`\partial L/\partial u = -g x/u^2`,
  the row sums :math:`\sum dy\,x/u` (for :math:`d\gamma`), :math:`\sum dy`, and, split by the side
  of the maximum, :math:`\sum \partial L/\partial u` where :math:`vx + s` is larger (for
  :math:`\partial L/\partial s`), :math:`\sum x\,\partial L/\partial u` there (for :math:`dv`) and
  where :math:`\sigma_B` is larger (for :math:`\partial L/\partial\sigma_B`, summed over ``n``);
  pass 2: :math:`dx = g/u + v\,\partial L/\partial u\,[\text{right}]
  + \frac{\partial L}{\partial s}\frac{x - \mu_{nc}}{S s} + \frac{\partial L}{\partial \sigma_B}
  \frac{x - \mu_c}{M \sigma_B}` (the last term in training only, ``M = N S``).

EvoNorm-S0, equation (ES1): one row is an (n, group) block of ``K S`` contiguous elements
(``K = C / G`` channels), exactly GroupNorm's rows:

* forward, one traversal of each row: mean and variance (two passes), then
  :math:`y = \gamma\, x\,\operatorname{sigmoid}(v x) / \sigma_{ng} + \beta` and the copy of ``x``;
* backward, pass 1: per channel :math:`\sum dy\,z`, :math:`\sum dy` and
  :math:`\sum \frac{g}{\sigma} x^2 \operatorname{sigmoid}'(vx)` (for :math:`dv`), per row
  :math:`\sum g a` (for :math:`\partial L/\partial \sigma = -\sum g a/\sigma^2`); pass 2:
  :math:`dx = \frac{g}{\sigma}(\operatorname{sigmoid} + v x\,\operatorname{sigmoid}')
  + \frac{\partial L}{\partial\sigma}\frac{x - \mu}{K S\,\sigma}`.

Every per-row sum goes to its own slot of an ``(N, C)`` (or ``(N, G)``) array, so the parallel
drivers (one contiguous chunk of rows per thread) share no accumulator; the parameter gradients are
summed over the samples afterwards in float64. Accumulation is in float64 whatever the input dtype.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

from ..._checks import check_cache, check_channel_groups
from .. import _common as C
from .._common import jit, pjit
from .groupnorm import _block_stats, group_stats

__all__ = ["evonorm_b0_forward", "evonorm_b0_backward", "evonorm_s0_forward", "evonorm_s0_backward"]


# -- EvoNorm-B0 -----------------------------------------------------------------------------------
@jit
def _b0_fwd_rows(x, left, v, w, b, eps, have_stats, mean, var, out, keep, keep_x, r0, r1):  # pragma: no cover
    """B0 forward of rows ``r0 <= n C + c < r1`` of ``x`` (N, C, S). ``left`` (C,) is the batch (or
    running) standard deviation; the row statistics ``mean``/``var`` (N*C,) are computed here unless
    ``have_stats`` (training: the statistics pass already made them)."""
    nc, s_len = x.shape[1], x.shape[2]
    for r in range(r0, r1):
        n, c = r // nc, r % nc
        if have_stats:
            mu, vr = mean[r], var[r]
        else:                                   # passes 1-2: instance mean and variance of the row
            mu, vr = _block_stats(x, n, c, 1)
            mean[r] = mu
            var[r] = vr
        s = np.sqrt(vr + eps)
        lc, vc, wc, bc = left[c], v[c], w[c], b[c]
        xr, orow = x[n, c], out[n, c]
        for j in range(s_len):                  # output pass: u = max(sigma_B, v x + s), y = w x / u + b
            xv = np.float64(xr[j])
            orow[j] = xv / np.maximum(lc, xv * vc + s) * wc + bc
        if keep_x:                              # the private copy, while the row is in the cache
            krow = keep[n, c]
            for j in range(s_len):
                krow[j] = xr[j]


@pjit
def _b0_fwd_parallel(x, left, v, w, b, eps, have_stats, mean, var, out, keep, keep_x, nchunks):  # pragma: no cover
    nr = x.shape[0] * x.shape[1]
    for t in numba.prange(nchunks):
        _b0_fwd_rows(x, left, v, w, b, eps, have_stats, mean, var, out, keep, keep_x,
                     t * nr // nchunks, (t + 1) * nr // nchunks)


@jit
def _b0_bwd_sums(dy, x, left, v, w, inst_std, sums, r0, r1):  # pragma: no cover - compiled
    """B0 backward pass 1 of rows ``r0 <= n C + c < r1``: ``sums[k, n, c]`` for k = 0: sum dy x/u,
    1: sum dy, 2: sum dL/du where v x + s wins, 3: sum x dL/du there, 4: sum dL/du where sigma_B wins."""
    nc, s_len = x.shape[1], x.shape[2]
    for r in range(r0, r1):
        n, c = r // nc, r % nc
        s = inst_std[n, c]
        lc, vc, wc = left[c], v[c], w[c]
        xr, dr = x[n, c], dy[n, c]
        syz = np.float64(0.0)
        sy = np.float64(0.0)
        sr = np.float64(0.0)
        srx = np.float64(0.0)
        sl = np.float64(0.0)
        for j in range(s_len):                  # branch-free (selects), so that the loop vectorizes
            xv, g0 = np.float64(xr[j]), np.float64(dr[j])
            right = xv * vc + s
            u = np.maximum(lc, right)        # (np.maximum vectorizes; builtin max does not)
            inv = 1.0 / u
            z = xv * inv
            syz += g0 * z
            sy += g0
            du = -g0 * wc * z * inv             # dL/du, g = gamma dy
            du_r = du if lc < right else 0.0    # the share of v x + s (0 where sigma_B is larger)
            sr += du_r
            srx += du_r * xv
            sl += du - du_r
        sums[0, n, c] = syz
        sums[1, n, c] = sy
        sums[2, n, c] = sr
        sums[3, n, c] = srx
        sums[4, n, c] = sl


@pjit
def _b0_bwd_sums_parallel(dy, x, left, v, w, inst_std, sums, nchunks):  # pragma: no cover
    nr = x.shape[0] * x.shape[1]
    for t in numba.prange(nchunks):
        _b0_bwd_sums(dy, x, left, v, w, inst_std, sums, t * nr // nchunks, (t + 1) * nr // nchunks)


@jit
def _b0_bwd_dx(dy, x, left, v, w, inst_mean, inst_std, sums, batch_mean, dleft, training, dx, r0,
               r1):  # pragma: no cover - compiled
    """B0 backward pass 2 of rows ``r0 <= n C + c < r1``: ``dx`` (equations in the module docstring)."""
    nc, s_len = x.shape[1], x.shape[2]
    m_batch = x.shape[0] * s_len
    for r in range(r0, r1):
        n, c = r // nc, r % nc
        mu, s = inst_mean[n, c], inst_std[n, c]
        lc, vc, wc = left[c], v[c], w[c]
        k_inst = sums[2, n, c] / (s_len * s)    # dL/ds / (S s): through the instance std
        k_batch = dleft[c] / (m_batch * lc) if training else 0.0   # dL/dsigma_B / (M sigma_B)
        mb = batch_mean[c]
        xr, dr, dxr = x[n, c], dy[n, c], dx[n, c]
        for j in range(s_len):                  # branch-free: dx = g/u + [right] v dL/du + the std terms
            xv = np.float64(xr[j])
            g = np.float64(dr[j]) * wc
            right = xv * vc + s
            inv = 1.0 / np.maximum(lc, right)
            ginv = g * inv
            val = ginv - (ginv * xv * inv * vc if lc < right else 0.0)
            dxr[j] = val + k_inst * (xv - mu) + k_batch * (xv - mb)


@pjit
def _b0_bwd_dx_parallel(dy, x, left, v, w, inst_mean, inst_std, sums, batch_mean, dleft, training, dx,
                        nchunks):  # pragma: no cover
    nr = x.shape[0] * x.shape[1]
    for t in numba.prange(nchunks):
        _b0_bwd_dx(dy, x, left, v, w, inst_mean, inst_std, sums, batch_mean, dleft, training, dx,
                   t * nr // nchunks, (t + 1) * nr // nchunks)


# -- EvoNorm-S0 -----------------------------------------------------------------------------------
@jit
def _s0_fwd_rows(x, groups, v, w, b, eps, mean, std, out, keep, keep_x, r0, r1):  # pragma: no cover
    """S0 forward of rows ``r0 <= n G + g < r1`` (N, C, S): the group's statistics, then the output."""
    k = x.shape[1] // groups
    s_len = x.shape[2]
    for r in range(r0, r1):
        n, c0 = r // groups, (r % groups) * k
        mu, vr = _block_stats(x, n, c0, k)      # passes 1-2: mean and biased variance of the group
        sd = np.sqrt(vr + eps)
        mean[r] = mu
        std[r] = sd
        for c in range(c0, c0 + k):             # pass 3: y = w x sigmoid(v x) / sigma + b, keep x
            vc, a, bc = v[c], w[c] / sd, b[c]
            xr, orow = x[n, c], out[n, c]
            for j in range(s_len):
                xv = np.float64(xr[j])
                orow[j] = xv / (1.0 + np.exp(-xv * vc)) * a + bc
            if keep_x:                          # the private copy, while the row is in the cache
                krow = keep[n, c]
                for j in range(s_len):
                    krow[j] = xr[j]


@pjit
def _s0_fwd_parallel(x, groups, v, w, b, eps, mean, std, out, keep, keep_x, nchunks):  # pragma: no cover
    nr = mean.shape[0]
    for t in numba.prange(nchunks):
        _s0_fwd_rows(x, groups, v, w, b, eps, mean, std, out, keep, keep_x, t * nr // nchunks,
                     (t + 1) * nr // nchunks)


@jit
def _s0_bwd_rows(dy, x, groups, v, w, mean, std, dx, sums, sig_buf, r0, r1):  # pragma: no cover - compiled
    """S0 backward of rows ``r0 <= n G + g < r1``; fills ``sums[k, n, c]`` for k = 0: sum dy z,
    1: sum dy, 2: sum (g / sigma) x^2 sigmoid'(v x) (this row's share of dv). ``sig_buf`` (K S,) keeps
    the row's sigmoids from pass 1 for pass 2 (one ``exp`` per element, the costly operation here)."""
    k = x.shape[1] // groups
    s_len = x.shape[2]
    m = k * s_len
    for r in range(r0, r1):
        n, c0 = r // groups, (r % groups) * k
        mu, sd = mean[r], std[r]
        sga = np.float64(0.0)
        for c in range(c0, c0 + k):             # pass 1: row and channel sums
            vc, wc = v[c], w[c]
            xr, dr = x[n, c], dy[n, c]
            syz = np.float64(0.0)
            sy = np.float64(0.0)
            sv = np.float64(0.0)
            off = (c - c0) * s_len
            for j in range(s_len):
                xv, g0 = np.float64(xr[j]), np.float64(dr[j])
                sig = 1.0 / (1.0 + np.exp(-xv * vc))
                sig_buf[off + j] = sig
                a = xv * sig
                syz += g0 * a
                sy += g0
                sga += g0 * wc * a
                sv += g0 * xv * xv * sig * (1.0 - sig)
            sums[0, n, c] = syz / sd             # sum dy z, z = a / sigma
            sums[1, n, c] = sy
            sums[2, n, c] = sv * wc / sd
        kstd = -sga / (sd * sd) / (m * sd)      # dL/dsigma / (K S sigma)
        for c in range(c0, c0 + k):             # pass 2: dx
            vc, a_c = v[c], w[c] / sd
            xr, dr, dxr = x[n, c], dy[n, c], dx[n, c]
            off = (c - c0) * s_len
            for j in range(s_len):
                xv = np.float64(xr[j])
                sig = sig_buf[off + j]
                dxr[j] = np.float64(dr[j]) * a_c * (sig + vc * xv * sig * (1.0 - sig)) + kstd * (xv - mu)


@pjit
def _s0_bwd_parallel(dy, x, groups, v, w, mean, std, dx, sums, sig_buf, nchunks):  # pragma: no cover
    nr = mean.shape[0]
    for t in numba.prange(nchunks):             # sig_buf (nchunks, K S): one scratch row per chunk
        _s0_bwd_rows(dy, x, groups, v, w, mean, std, dx, sums, sig_buf[t], t * nr // nchunks,
                     (t + 1) * nr // nchunks)


#: The compiled functions of this module (for the warm-up and the cache checks).
DISPATCHERS = (_b0_fwd_rows, _b0_fwd_parallel, _b0_bwd_sums, _b0_bwd_sums_parallel, _b0_bwd_dx,
               _b0_bwd_dx_parallel, _s0_fwd_rows, _s0_fwd_parallel, _s0_bwd_rows, _s0_bwd_parallel)


# -- entry points with the reference's signatures -------------------------------------------------
def evonorm_b0_forward(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, v: np.ndarray,
                       running_var: np.ndarray | None = None, eps: float = 1e-3, *,
                       out: np.ndarray | None = None, keep_out: np.ndarray | None = None):
    """Fused EvoNorm-B0 forward, equations (EB1)-(EB2); same arguments and results as the reference
    :func:`npnorm.statistics.evonorm.evonorm_b0_forward`, plus ``out`` and ``keep_out``.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)
    weight, bias, v : ndarray, shape (C,)
    running_var : ndarray of shape (C,) or None
        ``None``: training (the biased batch variance); otherwise evaluation with this variance.
    eps : float
        Added inside both square roots.

    Returns
    -------
    out : ndarray, the shape and dtype of ``x``
    cache : dict
        ``batch_var`` (C,), biased, as the reference's (the layer updates ``running_var`` from it);
        the private copy of ``x`` and the per-row and per-channel statistics.
    """
    n, c, s_len = C.ncs(x.shape)
    x3 = C.as_input(x, (n, c, s_len))
    w, b, vv = C.as_f64(weight, (c,), 1.0), C.as_f64(bias, (c,), 0.0), C.as_f64(v, (c,), 1.0)
    training = running_var is None
    mean, var = np.empty(n * c), np.empty(n * c)
    if training:                                # pass 1: block statistics -> instance and batch
        block_mean, block_var = group_stats(x3, c)
        mean[:], var[:] = block_mean.reshape(-1), block_var.reshape(-1)
        batch_mean = block_mean.mean(axis=0)
        batch_var = block_var.mean(axis=0) + ((block_mean - batch_mean) ** 2).mean(axis=0)   # (BN-merge)
    else:
        batch_mean, batch_var = np.zeros(c), np.array(running_var, dtype=np.float64).reshape(c)
    left = np.sqrt(batch_var + eps)                                                        # (EB1)
    y = C.check_out(out, x3.shape, x3.dtype)
    keep, kbuf, keep_x = C.keep_args(x, x3, keep_out)
    args = (x3, left, vv, w, b, float(eps), training, mean, var, y, kbuf, keep_x)
    if C.use_parallel(x3.size):                 # output pass (+ the row statistics in evaluation)
        _b0_fwd_parallel(*args, C.num_chunks(n * c))
    else:
        _b0_fwd_rows(*args, 0, n * c)
    cache = {"backend": "numba", "x": x3 if keep is None else keep, "owns_x": keep is not None, "w": w, "v": vv,
             "left": left, "batch_mean": batch_mean, "inst_mean": mean.reshape(n, c),
             "inst_std": np.sqrt(var.reshape(n, c) + eps), "training": training, "batch_var": batch_var,
             "shape": x.shape, "out_shape": x.shape, "dtype": x.dtype}
    return C.restore(y, x.shape, x.dtype), cache


def evonorm_b0_backward(dout: np.ndarray, cache: dict[str, Any], *, dx_out: np.ndarray | None = None):
    """Fused EvoNorm-B0 backward. Returns ``(dx, dweight, dbias, dv)`` as the reference (float64
    parameter gradients)."""
    dout = check_cache(dout, cache, "evonorm_b0_backward")
    x3 = cache["x"]
    n, c = x3.shape[:2]
    dy3 = C.as_upstream(dout, x3.dtype, x3.shape)
    dx = C.check_out(dx_out, x3.shape, x3.dtype, "dx_out")
    left, vv, w, inst_std = cache["left"], cache["v"], cache["w"], cache["inst_std"]
    sums = np.empty((5, n, c))
    par = C.use_parallel(x3.size)
    if par:                                     # pass 1: row sums
        _b0_bwd_sums_parallel(dy3, x3, left, vv, w, inst_std, sums, C.num_chunks(n * c))
    else:
        _b0_bwd_sums(dy3, x3, left, vv, w, inst_std, sums, 0, n * c)
    dweight, dbias, dv = sums[0].sum(axis=0), sums[1].sum(axis=0), sums[3].sum(axis=0)
    dleft = sums[4].sum(axis=0)                 # dL/dsigma_B (used in training only)
    args = (dy3, x3, left, vv, w, cache["inst_mean"], inst_std, sums, cache["batch_mean"], dleft,
            cache["training"], dx)
    if par:                                     # pass 2: dx
        _b0_bwd_dx_parallel(*args, C.num_chunks(n * c))
    else:
        _b0_bwd_dx(*args, 0, n * c)
    return C.restore(dx, cache["shape"], cache["dtype"]), dweight, dbias, dv


def evonorm_s0_forward(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, v: np.ndarray, groups: int,
                       eps: float = 1e-5, *, out: np.ndarray | None = None, keep_out: np.ndarray | None = None):
    """Fused EvoNorm-S0 forward, equation (ES1), for ``(N, C, H, W)`` input with ``groups`` contiguous
    channel groups; same arguments and results as the reference
    :func:`npnorm.statistics.evonorm.evonorm_s0_forward`, plus ``out`` and ``keep_out``. The cache
    holds the private copy of ``x`` and the per-(sample, group) ``mean`` and ``std`` (N*G,)."""
    n, c, s_len = C.ncs(x.shape)
    groups = check_channel_groups(x, groups, "evonorm_s0_forward")
    x3 = C.as_input(x, (n, c, s_len))
    w, b, vv = C.as_f64(weight, (c,), 1.0), C.as_f64(bias, (c,), 0.0), C.as_f64(v, (c,), 1.0)
    mean, std = np.empty(n * groups), np.empty(n * groups)
    y = C.check_out(out, x3.shape, x3.dtype)
    keep, kbuf, keep_x = C.keep_args(x, x3, keep_out)
    args = (x3, groups, vv, w, b, float(eps), mean, std, y, kbuf, keep_x)
    if C.use_parallel(x3.size):
        _s0_fwd_parallel(*args, C.num_chunks(n * groups))
    else:
        _s0_fwd_rows(*args, 0, n * groups)
    cache = {"backend": "numba", "x": x3 if keep is None else keep, "owns_x": keep is not None, "w": w, "v": vv,
             "groups": groups, "mean": mean, "std": std, "shape": x.shape, "out_shape": x.shape, "dtype": x.dtype}
    return C.restore(y, x.shape, x.dtype), cache


def evonorm_s0_backward(dout: np.ndarray, cache: dict[str, Any], *, dx_out: np.ndarray | None = None):
    """Fused EvoNorm-S0 backward. Returns ``(dx, dweight, dbias, dv)`` as the reference."""
    dout = check_cache(dout, cache, "evonorm_s0_backward")
    x3, groups = cache["x"], cache["groups"]
    n, c = x3.shape[:2]
    dy3 = C.as_upstream(dout, x3.dtype, x3.shape)
    dx = C.check_out(dx_out, x3.shape, x3.dtype, "dx_out")
    sums = np.empty((3, n, c))
    args = (dy3, x3, groups, cache["v"], cache["w"], cache["mean"], cache["std"], dx, sums)
    row = (c // groups) * x3.shape[2]
    if C.use_parallel(x3.size):
        k = C.num_chunks(n * groups)
        _s0_bwd_parallel(*args, np.empty((k, row)), k)
    else:
        _s0_bwd_rows(*args, np.empty(row), 0, n * groups)
    dweight, dbias, dv = (sums[k].sum(axis=0) for k in range(3))
    return C.restore(dx, cache["shape"], cache["dtype"]), dweight, dbias, dv
