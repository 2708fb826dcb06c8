r"""Benchmark of the normalizers: textbook NumPy, our NumPy reference, our Numba kernels (and PyTorch).

Run ``python -m npnorm.bench`` (``--help`` for the options). For each case it times, after a warm-up
call, ``--repeats`` runs of the forward pass and of forward + backward, and reports the median with
the min and max. The implementations are timed in turns (one run of each per round, in a new random
order every round), so that other programs slowing the machine down for a while affect all of them alike and
none always finds the cache its predecessor left (which read the same ``x`` and ``dy``). Columns:

``textbook``
    The way most tutorials write it: statistics with ``E[x^2] - E[x]^2`` in the input's dtype, one
    NumPy temporary per operation, a backward pass written node by node.
``reference``
    npnorm's NumPy reference (float64 internally, two-pass statistics): what the book teaches.
``numba``
    npnorm's fused kernels (:mod:`npnorm.kernels`), writing into **preallocated** outputs
    (``out=``, ``dx_out=``, and ``keep_out=``: the private copy of ``x`` that the forward pass writes
    for the backward pass, so that editing ``x`` afterwards cannot change the gradient).
``torch``
    ``torch.nn.functional`` on the CPU, only if ``import torch`` works in this interpreter (never a
    dependency of npnorm). Its forward pass runs under ``torch.no_grad()`` (an inference forward: it
    saves nothing); its forward + backward pass runs with autograd, which saves a *reference* to
    ``x``, not a copy. npnorm's forward is always the training forward, which writes the private copy.

Memory roofline. The traffic model counts, per implementation and pass, the streams of ``x.nbytes``
bytes that implementation must move (:data:`STREAMS`, :func:`streams`): ``(reads, writes)``. A fused
kernel that keeps a private copy of ``x`` reads ``x`` once and writes ``y`` and the copy in its forward
pass, ``(1, 2)``; forward + backward adds a read of the copy, a read of ``dy`` and a write of ``dx``,
``(3, 3)``. PyTorch and the NumPy versions are counted at the minimum of the computation, ``(1, 1)``
and ``(3, 2)`` (the NumPy versions move more, through their temporaries). *Effective bandwidth* is
``(reads + writes) * x.nbytes`` divided by the time.

Three streaming bounds are measured in the same run, on a buffer far larger than the last-level cache
(``DRAM``) and on one that fits in it (``cache``): ``memcpy`` (NumPy's ``copyto``, i.e. glibc
``memcpy``, which uses non-temporal stores for large sizes: the written lines are not read first),
``store`` (a parallel Numba copy loop with ordinary stores: each written line is first read into the
cache, as in every npnorm kernel and in PyTorch's loops) and ``read`` (a parallel Numba sum: reads
only). Copies count the bytes read plus the bytes written, as the kernels do. Every kernel here uses
ordinary stores, so it is placed against the ``store`` bound: ``% bound`` = effective bandwidth /
``store`` bound (DRAM or in-cache, by working set). The ``memcpy`` figure is shown for comparison:
ordinary stores cannot reach it.

Memory patterns (``--patterns``). Two more columns time loops that do no other work (at most one
addition per element) than move exactly the bytes of a memory pattern, in the same rounds as the
implementations: ``pattern``, the fused kernel's (its forward pass reads ``x`` and writes ``y`` and the
private copy, its backward pass reads the copy and ``dy`` and writes ``dx``; families that read twice
read twice), and ``pattern_min``, the same without the private copy, PyTorch's pattern. Preallocated
outputs, ordinary stores. A kernel cannot beat its own pattern by much, so ``torch/pattern`` is about
the best ``layer/torch`` that any kernel keeping the private copy could reach in that run, and
``pattern/kernel`` says how close the kernel is to its pattern. Only for the families whose traffic is
``keep`` or ``keep, two reads``.

Allocations: fresh large arrays can cost more than the arithmetic on these machines (page faults on
new memory). The Numba column writes into preallocated arrays; for the columns that must allocate
(NumPy, PyTorch), the benchmark asks glibc (``mallopt``) to keep freed memory on the heap instead of
returning it to the system, so repeated runs reuse pages. The output states both.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime
import importlib.util
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["BenchCase", "CASES", "IMPLEMENTATIONS", "PATTERNS", "STREAMS", "KEEPS", "PATTERN_MIN", "streams",
           "pattern_impls", "run", "stream_bandwidths", "format_table", "plot", "main"]

IMPLEMENTATIONS = ("textbook", "reference", "numba", "layer", "torch")
#: The memory-pattern loops (``--patterns``, see the module docstring): no other work, the bytes of the
#: fused kernel's pattern (``"pattern"``) or of the same without the private copy (``"pattern_min"``).
PATTERNS = ("pattern", "pattern_min")
#: How PyTorch's forward pass is timed: under ``torch.no_grad()`` (an inference forward, saves
#: nothing) or with autograd recording (the training forward: saves a reference to ``x``).
TORCH_FORWARDS = ("no_grad", "autograd")
PASSES = ("forward", "forward+backward")
#: Streams of ``x.nbytes`` bytes, ``(reads, writes)``, that an implementation must move in each pass,
#: by how it keeps ``x`` for the backward pass:
#:
#: ``"minimum"``: the computation alone (read ``x``, write ``y``; then read ``x`` and ``dy``, write
#: ``dx``). PyTorch (its autograd saves a reference to ``x``), the NumPy versions (which move more,
#: through temporaries), and kernels that keep no copy.
#: ``"keep"``: the forward pass also writes a private copy of ``x`` while it reads it (npnorm's fused
#: kernels: LayerNorm, RMSNorm, GroupNorm, InstanceNorm, AdaGroupNorm, ScaleNorm, L2Norm, DyT); the
#: backward pass reads the copy.
#: ``"keep, two reads"``: as ``"keep"``, but every pass reads its inputs twice (statistics or sums,
#: then the output): BatchNorm, whose channels are spread over the whole array, which does not fit in
#: the caches (a plan that read each channel once, from the cache, measured slower: see
#: :mod:`npnorm.kernels.statistics.batchnorm`).
#: ``"keep, three reads"``: the forward pass reads ``x`` three times (channel means, covariance, then
#: the whitened output with the copy), the backward pass twice (IterNorm).
#: ``"copy and z"`` (PatchNorm, :mod:`npnorm.kernels.divergence.patchnorm`): the forward pass copies
#: ``x`` (read ``x``, write the copy), then reads the copy and writes the output and ``z^w = a/s``
#: (an output-sized array kept for the backward pass); the backward pass reads the copy, ``dy`` and
#: ``z^w`` and writes ``dx``. Output-sized arrays are counted as ``x.nbytes``, which holds for the
#: benchmark's case only (F = C output channels, stride 1, "same" padding). Not counted: the
#: per-position norms ``s`` (float64, ``x.nbytes * 8 / (C * itemsize)``: 1/8 of ``x`` at C = 16 in
#: float32), written forward and read backward, so the effective bandwidth is under-stated by < 3%.
STREAMS = {
    "minimum": {"forward": (1, 1), "forward+backward": (3, 2)},
    "keep": {"forward": (1, 2), "forward+backward": (3, 3)},
    "keep, two reads": {"forward": (2, 2), "forward+backward": (6, 3)},
    "keep, three reads": {"forward": (3, 2), "forward+backward": (7, 3)},
    "copy and z": {"forward": (2, 3), "forward+backward": (5, 4)},
    "two reads": {"forward": (2, 1), "forward+backward": (6, 2)},
}
#: The pattern without the private copy (``"pattern_min"``) of each kind that has a pattern loop.
PATTERN_MIN = {"keep": "minimum", "keep, two reads": "two reads"}
#: How the Numba kernel (and the layer on it) of each family keeps ``x``: a key of :data:`STREAMS`.
KEEPS = {"layernorm": "keep", "rmsnorm": "keep", "groupnorm": "keep", "instancenorm": "keep",
         "batchnorm": "keep, two reads", "qkrms": "keep", "adagroupnorm": "keep", "scalenorm": "keep", "l2norm": "keep",
         "dyt": "keep",
         "patchnorm": "copy and z",         # compute-bound anyway (a convolution)
         # statistics pass (GroupNorm's row kernel), then the affine pass that writes the copy; the
         # backward's row sums, then dx
         "switchnorm": "keep, two reads", "iternorm": "keep, three reads",
         # BatchNorm's statistics and affine kernels; EvoNorm-B0 in training merges the block
         # statistics over the batch before its output pass (and sums over the batch before dx)
         "batchrenorm": "keep, two reads", "evonorm_b0": "keep, two reads",
         # one sample's block (GRN) or one (sample, group) row (EvoNorm-S0) per unit of work: its
         # second pass is counted as a cache hit, which is the lower count if it is not
         "grn": "keep", "grn_cf": "keep", "evonorm_s0": "keep"}


def streams(family: str, impl: str, pss: str) -> tuple[int, int]:
    """``(reads, writes)`` in units of ``x.nbytes`` that ``impl`` must move in pass ``pss`` of ``family``:
    npnorm's kernel, layer and ``"pattern"`` loop per :data:`KEEPS`, the ``"pattern_min"`` loop per
    :data:`PATTERN_MIN`, every other implementation the ``"minimum"``."""
    if impl == "pattern_min":
        return STREAMS[PATTERN_MIN[KEEPS[family]]][pss]
    kind = KEEPS[family] if impl in ("numba", "layer", "pattern") else "minimum"
    return STREAMS[kind][pss]


# -- the textbook versions (deliberately naive: what tutorials write) --------------------------------
def textbook_norm_forward(x, axes, gamma, beta, eps):
    """Standardize over ``axes`` the tutorial way: ``var = E[x^2] - E[x]^2`` in the input's dtype."""
    mu = x.mean(axis=axes, keepdims=True)
    var = (x ** 2).mean(axis=axes, keepdims=True) - mu ** 2
    xhat = (x - mu) / np.sqrt(var + eps)
    out = gamma * xhat + beta
    return out, (x, xhat, mu, var, gamma, eps, axes)


def textbook_norm_backward(dout, cache, param_axes):
    """Node-by-node backward of :func:`textbook_norm_forward`."""
    x, xhat, mu, var, gamma, eps, axes = cache
    m = x.size // mu.size
    dbeta = dgamma = None
    if param_axes is not None:
        dbeta = dout.sum(axis=param_axes)
        dgamma = (dout * xhat).sum(axis=param_axes)
    dxhat = dout * gamma
    dvar = np.sum(dxhat * (x - mu) * -0.5 * (var + eps) ** -1.5, axis=axes, keepdims=True)
    dmu = np.sum(-dxhat / np.sqrt(var + eps), axis=axes, keepdims=True) \
        + dvar * np.mean(-2.0 * (x - mu), axis=axes, keepdims=True)
    dx = dxhat / np.sqrt(var + eps) + dvar * 2.0 * (x - mu) / m + dmu / m
    return dx, dgamma, dbeta


def textbook_rms_forward(x, gamma, eps):
    rms = np.sqrt((x ** 2).mean(axis=-1, keepdims=True) + eps)
    xhat = x / rms
    return gamma * xhat, (x, xhat, rms, gamma)


def textbook_rms_backward(dout, cache):
    x, xhat, rms, gamma = cache
    dgamma = (dout * xhat).reshape(-1, x.shape[-1]).sum(axis=0)
    dxhat = dout * gamma
    drms = -np.sum(dxhat * x, axis=-1, keepdims=True) / rms ** 2
    dx = dxhat / rms + drms * x / (x.shape[-1] * rms)
    return dx, dgamma


def _softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


def textbook_switch_forward(x, gamma, beta, mean_logits, var_logits, eps):
    """SwitchNorm2d the tutorial way: every statistic from ``E[x]`` and ``E[x^2]`` in the input's dtype,
    one temporary per operation (the reference code's unbiased instance variance)."""
    n, c = x.shape[:2]
    xr = x.reshape(n, c, -1)
    m = xr.shape[2]
    mu_in = xr.mean(-1, keepdims=True)
    var_in = ((xr ** 2).mean(-1, keepdims=True) - mu_in ** 2) * (m / (m - 1))
    temp = var_in + mu_in ** 2
    mu_ln = mu_in.mean(1, keepdims=True)
    var_ln = temp.mean(1, keepdims=True) - mu_ln ** 2
    mu_bn = mu_in.mean(0, keepdims=True)
    var_bn = temp.mean(0, keepdims=True) - mu_bn ** 2
    wm, wv = _softmax(mean_logits), _softmax(var_logits)
    mean = wm[0] * mu_in + wm[1] * mu_ln + wm[2] * mu_bn
    var = wv[0] * var_in + wv[1] * var_ln + wv[2] * var_bn
    std = np.sqrt(var + eps)
    xhat = (xr - mean) / std
    out = xhat.reshape(x.shape) * gamma.reshape(1, c, 1, 1) + beta.reshape(1, c, 1, 1)
    return out, (xr, xhat, mean, std, mu_in, mu_ln, mu_bn, var_in, var_ln, var_bn, wm, wv, gamma, m)


def textbook_switch_backward(dout, cache):
    """Node-by-node backward of :func:`textbook_switch_forward`: ``(dx, dgamma, dbeta, dmean_logits,
    dvar_logits)``."""
    xr, xhat, mean, std, mu_in, mu_ln, mu_bn, var_in, var_ln, var_bn, wm, wv, gamma, m = cache
    n, c = xr.shape[:2]
    dyr = dout.reshape(xr.shape)
    dgamma, dbeta = (dyr * xhat).sum(axis=(0, 2)), dyr.sum(axis=(0, 2))
    dxhat = dyr * gamma.reshape(1, c, 1)
    dmean = np.sum(-dxhat / std, axis=-1, keepdims=True)
    dvar = np.sum(dxhat * (xr - mean) * -0.5 / std ** 3, axis=-1, keepdims=True)
    dwm = np.array([np.sum(dmean * mu_in), np.sum(dmean * mu_ln), np.sum(dmean * mu_bn)])
    dwv = np.array([np.sum(dvar * var_in), np.sum(dvar * var_ln), np.sum(dvar * var_bn)])
    dlm, dlv = wm * (dwm - np.sum(wm * dwm)), wv * (dwv - np.sum(wv * dwv))
    dvar_ln, dvar_bn = wv[1] * dvar.sum(1, keepdims=True), wv[2] * dvar.sum(0, keepdims=True)
    dmu_ln = wm[1] * dmean.sum(1, keepdims=True) - 2 * mu_ln * dvar_ln
    dmu_bn = wm[2] * dmean.sum(0, keepdims=True) - 2 * mu_bn * dvar_bn
    dtemp = dvar_ln / c + dvar_bn / n
    dvar_in = wv[0] * dvar + dtemp
    dmu_in = wm[0] * dmean + dmu_ln / c + dmu_bn / n + 2 * mu_in * dtemp
    dex2 = dvar_in * (m / (m - 1))                                 # var_in = (E[x^2] - mu^2) m / (m - 1)
    dmu_in = dmu_in - 2 * mu_in * dex2
    dx = dxhat / std + dmu_in / m + dex2 * 2 * xr / m
    return dx.reshape(dout.shape), dgamma, dbeta, dlm, dlv


def textbook_iternorm_forward(x, gamma, beta, groups, T, eps):
    """IterNorm as a port of the reference code: channels moved to the front (a copy), centred,
    ``X_c X_c^T / m``, ``T`` Newton steps, ``W X_c`` and back, all in the input's dtype."""
    n, c = x.shape[:2]
    xg = np.moveaxis(x, 1, 0).reshape(groups, c // groups, -1)
    m = xg.shape[2]
    xc = xg - xg.mean(axis=2, keepdims=True)
    sigma = xc @ xc.transpose(0, 2, 1) / m + eps * np.eye(c // groups, dtype=x.dtype)
    tr = np.trace(sigma, axis1=1, axis2=2)[:, None, None]
    s_n = sigma / tr
    ps = [np.broadcast_to(np.eye(c // groups, dtype=x.dtype), sigma.shape)]
    for _ in range(T):
        p = ps[-1]
        ps.append(1.5 * p - 0.5 * p @ p @ p @ s_n)
    wm = ps[-1] / np.sqrt(tr)
    xhat = wm @ xc
    out = xhat * gamma.reshape(groups, -1, 1) + beta.reshape(groups, -1, 1)
    out = np.moveaxis(out.reshape((c, n) + x.shape[2:]), 0, 1)
    return out, (xc, xhat, wm, ps, s_n, sigma, tr, gamma, groups)


def textbook_iternorm_backward(dout, cache):
    """Reverse mode through :func:`textbook_iternorm_forward`, node by node, in the input's dtype.

    Self-contained on purpose: the timed baseline repeats the Newton loop of
    :func:`npnorm.statistics.iternorm.newton_whitening_backward` (whose float64 identity would upcast)."""
    xc, xhat, wm, ps, s_n, sigma, tr, gamma, groups = cache
    n, c = dout.shape[:2]
    t_ = lambda a: a.transpose(0, 2, 1)  # noqa: E731
    dyg = np.moveaxis(dout, 1, 0).reshape(groups, c // groups, -1)
    dgamma, dbeta = (dyg * xhat).sum(axis=2).reshape(c), dyg.sum(axis=2).reshape(c)
    dxh = dyg * gamma.reshape(groups, -1, 1)
    dwm, dxc = dxh @ t_(xc), t_(wm) @ dxh
    dp = dwm / np.sqrt(tr)
    dtr = -0.5 * tr ** -1.5 * np.sum(dwm * ps[-1], axis=(1, 2), keepdims=True)
    ds_n = np.zeros_like(s_n)
    for p in reversed(ps[:-1]):
        p2 = p @ p
        ds_n = ds_n - 0.5 * t_(p2 @ p) @ dp
        dp = 1.5 * dp - 0.5 * (dp @ t_(p2 @ s_n) + t_(p) @ dp @ t_(p @ s_n) + t_(p2) @ dp @ t_(s_n))
    dtr = dtr - np.sum(ds_n * sigma, axis=(1, 2), keepdims=True) / tr ** 2
    dsigma = ds_n / tr + dtr * np.eye(sigma.shape[1], dtype=sigma.dtype)
    dxc = dxc + (dsigma + t_(dsigma)) @ xc / xc.shape[2]
    dxg = dxc - dxc.mean(axis=2, keepdims=True)
    return np.moveaxis(dxg.reshape((c, n) + dout.shape[2:]), 0, 1), dgamma, dbeta


def textbook_renorm_forward(x, gamma, beta, running_mean, running_std, rmax, dmax, eps):
    """Batch renormalization the tutorial way: BatchNorm's :func:`textbook_norm_forward` (``E[x^2] -
    E[x]^2`` in the input's dtype) with the scale ``gamma r`` and shift ``gamma d + beta``, ``r`` and
    ``d`` computed from the batch statistics and held constant."""
    axes, chan = (0, 2, 3), (1, -1, 1, 1)
    mu = x.mean(axis=axes)
    std = np.sqrt((x ** 2).mean(axis=axes) - mu ** 2 + eps)
    r = np.clip(std / running_std, 1.0 / rmax, rmax).astype(x.dtype)
    d = np.clip((mu - running_mean) / running_std, -dmax, dmax).astype(x.dtype)
    out, cache = textbook_norm_forward(x, axes, (gamma * r).reshape(chan), (gamma * d + beta).reshape(chan), eps)
    return out, (cache, r, d)


def textbook_renorm_backward(dout, cache):
    """BatchNorm's node-by-node backward with ``gamma r`` as the scale; ``(dx, dgamma, dbeta)``."""
    bn_cache, r, d = cache
    xhat = bn_cache[1]
    chan = (1, -1, 1, 1)
    dx = textbook_norm_backward(dout, bn_cache, None)[0]
    dgamma = (dout * (xhat * r.reshape(chan) + d.reshape(chan))).sum(axis=(0, 2, 3))
    return dx, dgamma, dout.sum(axis=(0, 2, 3))


def textbook_grn_forward(x, gamma, beta, eps, channels_last=True):
    """ConvNeXt V2's GRN as its reference code writes it (in the input's dtype): ``Gx = ||x||_2`` over
    the positions, ``Nx = Gx / (mean_c Gx + eps)``, ``gamma (x Nx) + beta + x``."""
    sp, ch, view = ((1, 2), -1, (1, 1, 1, -1)) if channels_last else ((2, 3), 1, (1, -1, 1, 1))
    gx = np.sqrt((x * x).sum(axis=sp, keepdims=True))
    dn = gx.mean(axis=ch, keepdims=True) + eps
    nx = gx / dn
    return gamma.reshape(view) * (x * nx) + beta.reshape(view) + x, (x, gx, dn, nx, gamma.reshape(view), sp, ch)


def textbook_grn_backward(dout, cache):
    """Node by node: ``dNx``, then ``dGx`` through the mean, then ``dx = dout (1 + gamma Nx) + dGx x / Gx``."""
    x, gx, dn, nx, gamma, sp, ch = cache
    pax = tuple(a for a in range(4) if a != ch % 4)
    dnx = (dout * gamma * x).sum(axis=sp, keepdims=True)
    dgx = dnx / dn - (dnx * gx).sum(axis=ch, keepdims=True) / (x.shape[ch] * dn * dn)
    dx = dout * (1 + gamma * nx) + dgx * x / gx
    return dx, (dout * x * nx).sum(axis=pax), dout.sum(axis=pax)


def textbook_evonorm_b0_forward(x, gamma, beta, v, eps):
    """timm's EvoNorm-B0 in training, one temporary per operation: ``x / max(std_batch, v x +
    std_instance) gamma + beta`` (``np.var``, biased)."""
    chan = (1, -1, 1, 1)
    left = np.sqrt(x.var(axis=(0, 2, 3), keepdims=True) + eps)
    s = np.sqrt(x.var(axis=(2, 3), keepdims=True) + eps)
    right = x * v.reshape(chan) + s
    use_left = left >= right
    u = np.where(use_left, left, right)
    out = x / u * gamma.reshape(chan) + beta.reshape(chan)
    return out, (x, u, use_left, left, s, v.reshape(chan), gamma.reshape(chan))


def textbook_evonorm_b0_backward(dout, cache):
    """Node by node through the maximum and both standard deviations: ``(dx, dgamma, dbeta, dv)``."""
    x, u, use_left, left, s, v, gamma = cache
    n, _, h, w = x.shape
    g = dout * gamma
    du = -g * x / (u * u)
    d_right = np.where(use_left, 0, du)
    d_left = du - d_right
    dx = g / u + d_right * v
    dx = dx + d_right.sum(axis=(2, 3), keepdims=True) * (x - x.mean(axis=(2, 3), keepdims=True)) / (h * w * s)
    dleft = d_left.sum(axis=(0, 2, 3), keepdims=True)
    dx = dx + dleft * (x - x.mean(axis=(0, 2, 3), keepdims=True)) / (n * h * w * left)
    return dx, (dout * x / u).sum(axis=(0, 2, 3)), dout.sum(axis=(0, 2, 3)), (d_right * x).sum(axis=(0, 2, 3))


def textbook_evonorm_s0_forward(x, gamma, beta, v, groups, eps):
    """timm's EvoNorm-S0: ``x sigmoid(v x) / std_group gamma + beta`` (``np.var`` over each group)."""
    chan = (1, -1, 1, 1)
    n, c, h, w = x.shape
    xg = x.reshape(n, groups, -1)
    std = np.sqrt(xg.var(axis=2, keepdims=True) + eps)
    sig = 1 / (1 + np.exp(-x * v.reshape(chan)))
    a = x * sig
    z = (a.reshape(xg.shape) / std).reshape(x.shape)
    return z * gamma.reshape(chan) + beta.reshape(chan), (x, xg, std, sig, a, z, v.reshape(chan), gamma.reshape(chan))


def textbook_evonorm_s0_backward(dout, cache):
    """Node by node through the sigmoid gate and the group std: ``(dx, dgamma, dbeta, dv)``."""
    x, xg, std, sig, a, z, v, gamma = cache
    g = (dout * gamma).reshape(xg.shape)
    da = (g / std).reshape(x.shape)
    dstd = -(g * a.reshape(xg.shape)).sum(axis=2, keepdims=True) / (std * std)
    dsig = sig * (1 - sig)
    xc = xg - xg.mean(axis=2, keepdims=True)
    dx = da * (sig + v * x * dsig) + (dstd * xc / (xg.shape[2] * std)).reshape(x.shape)
    return dx, (dout * z).sum(axis=(0, 2, 3)), dout.sum(axis=(0, 2, 3)), (da * x * x * dsig).sum(axis=(0, 2, 3))


# -- cases ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BenchCase:
    """One benchmark case: a layer family and the full-size input shape."""

    name: str
    family: str          # "layernorm", "rmsnorm", "groupnorm", "instancenorm", "batchnorm", "patchnorm",
    #                      "adagroupnorm", "scalenorm", "l2norm", "qkrms" (RMSNorm over the last axis of
    #                      (N, H, L, head_dim)), "dyt", "switchnorm", "iternorm" (``groups`` groups,
    #                      ITERNORM_T Newton steps)
    shape: tuple[int, ...]
    groups: int = 0

    def sized(self, size: str) -> tuple[int, ...]:
        """The shape for ``size``: ``full`` (the issue's sizes), ``quick`` (batch / 4),
        ``small`` (batch / 16) or ``tiny`` (a few KiB, for tests)."""
        if size == "full":
            return self.shape
        if size == "tiny":
            if len(self.shape) == 2:
                return (4, min(self.shape[1], 64))
            return (2, self.shape[1]) + (2,) * (len(self.shape) - 2)
        div = {"quick": 4, "small": 16}[size]
        return (max(2, self.shape[0] // div),) + self.shape[1:]


CASES = (
    BenchCase("LayerNorm", "layernorm", (4096, 1024)),
    BenchCase("LayerNorm", "layernorm", (12544, 768)),
    BenchCase("RMSNorm", "rmsnorm", (4096, 4096)),
    BenchCase("GroupNorm G=32", "groupnorm", (32, 256, 32, 32), groups=32),
    BenchCase("InstanceNorm2d", "instancenorm", (32, 64, 64, 64)),
    BenchCase("BatchNorm2d train", "batchnorm", (64, 128, 28, 28)),
    # PatchNorm (affine mode), 3x3 kernel, padding 1, as many output as input channels. Compute-bound
    # (a convolution), so the roofline column means little here; "textbook" is the patch-by-patch
    # definition, "torch" the composition conv2d(x, W, b) / sqrt(conv2d(x**2, ones) + 1).
    BenchCase("PatchNormConv2d 3x3", "patchnorm", (16, 16, 32, 32)),
    BenchCase("AdaGroupNorm G=32", "adagroupnorm", (32, 256, 32, 32), groups=32),
    BenchCase("ScaleNorm", "scalenorm", (4096, 1024)),
    BenchCase("L2Norm", "l2norm", (4096, 1024)),
    BenchCase("QK RMSNorm per head", "qkrms", (64, 16, 256, 64)),
    BenchCase("DyT", "dyt", (4096, 1024)),
    # SwitchNorm2d with the BN branch, at a ResNet stage's size; the mixture logits are not the
    # uniform initial ones. "torch" is the composition of the mixture from tensor means.
    BenchCase("SwitchNorm2d", "switchnorm", (32, 128, 28, 28)),
    # IterNorm, 8 groups of d = 16 channels, T = 5: each pass costs O(d) flops per element (compute-,
    # not memory-bound). "torch" is the same graph (centring, covariance, Newton steps) under autograd.
    BenchCase("IterNorm G=8", "iternorm", (64, 128, 16, 16), groups=8),
    # the catalog's layers with a Numba twin (chapter 13); "torch" is the composition of PyTorch
    # operations that computes the same function where PyTorch has no layer (all five)
    BenchCase("BatchRenorm2d train", "batchrenorm", (64, 128, 28, 28)),
    BenchCase("GRN channels-last", "grn", (32, 56, 56, 96)),
    BenchCase("GRN channels-first", "grn_cf", (32, 96, 56, 56)),
    BenchCase("EvoNorm-B0 train", "evonorm_b0", (64, 128, 28, 28)),
    BenchCase("EvoNorm-S0 G=32", "evonorm_s0", (32, 256, 32, 32), groups=32),
)

#: Newton iterations of the IterNorm case (the reference default).
ITERNORM_T = 5
#: Mixture logits (IN, LN, BN) of the SwitchNorm2d case, for the mean and the variance.
SWITCH_LOGITS = (np.array([0.3, -0.2, 0.5]), np.array([-0.4, 0.1, 0.6]))

#: Families of the catalog layers (their PyTorch column is a composition: :func:`_torch_catalog`).
CATALOG_FAMILIES = ("batchrenorm", "grn", "grn_cf", "evonorm_b0", "evonorm_s0")

#: Embedding width of the AdaGroupNorm case (the modulation Linear is (2C, ADAGN_EMB)).
ADAGN_EMB = 128


def _import_torch():
    try:
        import torch  # noqa: F401  (optional: timed only when it happens to be installed)
    except Exception:
        return None
    return torch


def _layer_impl(layer, x, dy):
    """The layer API as a user calls it: ``y = layer(x); layer.backward(dy)``, outputs allocated."""
    def fwd():
        return layer(x), None

    def bwd(_):
        dx = layer.backward(dy)
        return (dx, *(layer.grads[k] for k in layer.params))

    return fwd, bwd


def _implementations(case: BenchCase, x: np.ndarray, dy: np.ndarray, torch_mod,
                     torch_forward: str = "no_grad") -> dict[str, dict[str, Callable]]:
    """``{impl: {pass: callable}}`` for one case and input.

    Every callable returns what it computed - the forward pass ``(out, cache)``, the forward+backward
    pass the gradients ``(dx, dweight[, dbias])`` - so that the tests can check each implementation
    against the reference (``tests/test_bench.py``): a ratio against a wrong baseline would compare
    different computations. ``torch_forward``: PyTorch's forward pass under ``torch.no_grad()``
    (``"no_grad"``, an inference forward) or with autograd recording (``"autograd"``, the training
    forward that the forward + backward pass runs), see :data:`TORCH_FORWARDS`."""
    from . import statistics as S
    from .statistics import batchnorm as bn, groupnorm as gn, instancenorm as inorm, layernorm as ln
    from .kernels.statistics import batchnorm as kbn, groupnorm as kgn, instancenorm as kin, layernorm as kln
    from .adaptive import adagroupnorm as agn
    from .kernels.adaptive import adagroupnorm as kagn

    eps = 1e-5
    fam, dt = case.family, x.dtype
    c = x.shape[-1] if fam in ("layernorm", "rmsnorm", "scalenorm", "l2norm", "qkrms", "dyt", "grn") else x.shape[1]
    rng = np.random.default_rng(0)
    w64, b64 = 1.0 + 0.1 * rng.standard_normal(c), 0.1 * rng.standard_normal(c)
    w, b = w64.astype(dt), b64.astype(dt)
    y, dx, keep = np.empty_like(x), np.empty_like(x), np.empty_like(x)
    ns = (x.shape[-1],)
    chan = (1, -1) + (1,) * (x.ndim - 2)
    # (forward, backward) pairs; PyTorch's entry is already {pass: callable} (_torch_pair)
    impls: dict[str, Any] = {}

    if fam == "layernorm":
        impls["textbook"] = (lambda: textbook_norm_forward(x, (-1,), w, b, eps),
                             lambda c_: textbook_norm_backward(dy, c_[1], (0,)))
        impls["reference"] = (lambda: ln.layer_norm_forward(x, ns, w64, b64, eps),
                              lambda c_: ln.layer_norm_backward(dy, c_[1]))
        impls["numba"] = (lambda: kln.layer_norm_forward(x, ns, w64, b64, eps, out=y, keep_out=keep),
                          lambda c_: kln.layer_norm_backward(dy, c_[1], dx_out=dx))
        layer = S.LayerNorm(ns, eps=eps, dtype=dt)
    elif fam == "rmsnorm":
        impls["textbook"] = (lambda: textbook_rms_forward(x, w, eps), lambda c_: textbook_rms_backward(dy, c_[1]))
        impls["reference"] = (lambda: ln.rms_norm_forward(x, ns, w64, eps),
                              lambda c_: ln.rms_norm_backward(dy, c_[1]))
        impls["numba"] = (lambda: kln.rms_norm_forward(x, ns, w64, eps, out=y, keep_out=keep),
                          lambda c_: kln.rms_norm_backward(dy, c_[1], dx_out=dx))
        layer = S.RMSNorm(ns, eps=eps, dtype=dt)
    elif fam == "groupnorm":
        g = case.groups
        xg_shape = (x.shape[0], g, -1)

        def tb_fwd():
            out, cache = textbook_norm_forward(x.reshape(xg_shape), (2,), 1.0, 0.0, eps)
            return out.reshape(x.shape) * w.reshape(chan) + b.reshape(chan), cache

        def tb_bwd(c_):
            xhat = c_[1][1].reshape(x.shape)
            dw_, db_ = (dy * xhat).sum(axis=(0, 2, 3)), dy.sum(axis=(0, 2, 3))
            dxg = textbook_norm_backward((dy * w.reshape(chan)).reshape(xg_shape), c_[1], None)[0]
            return dxg.reshape(x.shape), dw_, db_

        impls["textbook"] = (tb_fwd, tb_bwd)
        impls["reference"] = (lambda: gn.group_norm_forward(x, g, w64, b64, eps),
                              lambda c_: gn.group_norm_backward(dy, c_[1]))
        impls["numba"] = (lambda: kgn.group_norm_forward(x, g, w64, b64, eps, out=y, keep_out=keep),
                          lambda c_: kgn.group_norm_backward(dy, c_[1], dx_out=dx))
        layer = S.GroupNorm(g, c, eps=eps, dtype=dt)
    elif fam == "instancenorm":
        impls["textbook"] = (lambda: textbook_norm_forward(x, (2, 3), w.reshape(chan), b.reshape(chan), eps),
                             lambda c_: _sum_param_grads(textbook_norm_backward(dy, c_[1], (0, 2, 3))))
        impls["reference"] = (lambda: inorm.instance_norm_forward(x, w64, b64, eps),
                              lambda c_: inorm.instance_norm_backward(dy, c_[1]))
        impls["numba"] = (lambda: kin.instance_norm_forward(x, w64, b64, eps, out=y, keep_out=keep),
                          lambda c_: kin.instance_norm_backward(dy, c_[1], dx_out=dx))
        layer = S.InstanceNorm2d(c, eps=eps, affine=True, dtype=dt)
    elif fam == "batchnorm":
        impls["textbook"] = (lambda: textbook_norm_forward(x, (0, 2, 3), w.reshape(chan), b.reshape(chan), eps),
                             lambda c_: _sum_param_grads(textbook_norm_backward(dy, c_[1], (0, 2, 3))))
        impls["reference"] = (lambda: bn.batch_norm_forward(x, w64, b64, eps),
                              lambda c_: bn.batch_norm_backward(dy, c_[1]))
        impls["numba"] = (lambda: kbn.batch_norm_forward(x, w64, b64, eps, out=y, keep_out=keep),
                          lambda c_: kbn.batch_norm_backward(dy, c_[1], dx_out=dx))
        layer = S.BatchNorm2d(c, eps=eps, dtype=dt)
    elif fam == "patchnorm":
        from .divergence import patchnorm as pn
        from .kernels.divergence import patchnorm as kpn
        wconv64 = rng.standard_normal((c, c, 3, 3))
        impls["textbook"] = (lambda: pn.patch_norm_conv2d_forward_by_patches(x, wconv64, b64, 1, 1),
                             lambda c_: pn.patch_norm_conv2d_backward_by_patches(dy, c_[1]))
        impls["reference"] = (lambda: pn.patch_norm_conv2d_forward(x, wconv64, b64, 1, 1),
                              lambda c_: pn.patch_norm_conv2d_backward(dy, c_[1]))
        impls["numba"] = (lambda: kpn.patch_norm_conv2d_forward(x, wconv64, b64, 1, 1, out=y),
                          lambda c_: kpn.patch_norm_conv2d_backward(dy, c_[1], dx_out=dx))
        w = wconv64.astype(dt)
        from .divergence import PatchNormConv2d
        layer = PatchNormConv2d(c, c, 3, padding=1, dtype=dt)
    elif fam == "adagroupnorm":
        # GroupNorm without affine, then x_hat (1 + scale) + shift with [scale, shift] = Linear(SiLU(emb))
        g = case.groups
        xg_shape = (x.shape[0], g, -1)
        emb = rng.standard_normal((x.shape[0], ADAGN_EMB))
        lw = rng.uniform(-1, 1, (2 * c, ADAGN_EMB)) / np.sqrt(ADAGN_EMB)
        lb = 0.1 * rng.standard_normal(2 * c)

        def tb_fwd():
            e = emb / (1 + np.exp(-emb))
            p = (e @ lw.T + lb).astype(dt)
            sc, sh = p[:, :c, None, None], p[:, c:, None, None]
            xh, cache = textbook_norm_forward(x.reshape(xg_shape), (2,), 1.0, 0.0, eps)
            return xh.reshape(x.shape) * (1 + sc) + sh, (cache, xh, sc)

        def tb_bwd(c_):
            cache, xh, sc = c_[1]
            xh = xh.reshape(x.shape)
            dsc, dsh = (dy * xh).sum(axis=(2, 3)), dy.sum(axis=(2, 3))
            dxg = textbook_norm_backward((dy * (1 + sc)).reshape(xg_shape), cache, None)[0]
            dp = np.concatenate([dsc, dsh], axis=1)                    # d loss / d [scale, shift]
            sig = 1 / (1 + np.exp(-emb))
            demb = (dp @ lw) * (sig * (1 + emb * (1 - sig)))           # through SiLU
            return dxg.reshape(x.shape), demb, dp.T @ (emb * sig), dp.sum(axis=0)

        impls["textbook"] = (tb_fwd, tb_bwd)
        impls["reference"] = (lambda: agn.ada_group_norm_forward(x, emb, lw, lb, g, eps, "silu"),
                              lambda c_: agn.ada_group_norm_backward(dy, c_[1]))
        impls["numba"] = (lambda: kagn.ada_group_norm_forward(x, emb, lw, lb, g, eps, "silu", out=y,
                                                              keep_out=keep),
                          lambda c_: kagn.ada_group_norm_backward(dy, c_[1], dx_out=dx))
        from .adaptive import AdaGroupNorm
        ada = AdaGroupNorm(ADAGN_EMB, c, g, act_fn="silu", eps=eps, dtype=dt)
        ada.params["linear.weight"][...], ada.params["linear.bias"][...] = lw, lb
        impls["layer"] = (lambda: (ada(x, emb), None),
                          lambda _: (*ada.backward(dy), ada.grads["linear.weight"], ada.grads["linear.bias"]))
        if torch_mod is not None:
            impls["torch"] = _torch_adagn(torch_mod, x, dy, emb, lw, lb, g, eps, torch_forward)
    elif fam in ("scalenorm", "l2norm"):
        from .transformer import l2norm as l2
        from .kernels.transformer import l2norm as kl2
        g = 32.0 if fam == "scalenorm" else 1.0
        e = 1e-5 if fam == "scalenorm" else 1e-12

        def tb_fwd():
            n = np.maximum(np.sqrt((x * x).sum(-1, keepdims=True)), e)
            yy = x / n
            return g * yy, (yy, n)

        def tb_bwd(c_):
            yy, n = c_[1]
            u = g * dy
            return (u - yy * (u * yy).sum(-1, keepdims=True)) / n, float((dy * yy).sum())

        impls["textbook"] = (tb_fwd, tb_bwd)
        impls["reference"] = (lambda: l2.scale_norm_forward(x, g, e), lambda c_: l2.scale_norm_backward(dy, c_[1]))
        impls["numba"] = (lambda: kl2.scale_norm_forward(x, g, e, out=y, keep_out=keep),
                          lambda c_: kl2.scale_norm_backward(dy, c_[1], dx_out=dx))
        from .transformer import L2Norm, ScaleNorm
        if fam == "scalenorm":
            layer = ScaleNorm(c, eps=e, dtype=dt)
            layer.params["scale"][...] = g
        else:
            layer = L2Norm(dim=-1, eps=e)
    elif fam == "qkrms":
        hd = (x.shape[-1],)
        impls["textbook"] = (lambda: textbook_rms_forward(x, w, 1e-6), lambda c_: textbook_rms_backward(dy, c_[1]))
        impls["reference"] = (lambda: ln.rms_norm_forward(x, hd, w64, 1e-6),
                              lambda c_: ln.rms_norm_backward(dy, c_[1]))
        impls["numba"] = (lambda: kln.rms_norm_forward(x, hd, w64, 1e-6, out=y, keep_out=keep),
                          lambda c_: kln.rms_norm_backward(dy, c_[1], dx_out=dx))
        layer = S.RMSNorm(hd, eps=1e-6, dtype=dt)
    elif fam == "dyt":
        from .transformer import dyt as dyt_ref
        from .kernels.transformer import dyt as kdyt
        alpha = np.array([0.5])

        def tb_fwd():
            t = np.tanh(0.5 * x)
            return w * t + b, t

        def tb_bwd(c_):
            t = c_[1]
            u = w * dy * (1 - t * t)
            return 0.5 * u, float((x * u).sum()), (dy * t).sum(0), dy.sum(0)

        impls["textbook"] = (tb_fwd, tb_bwd)
        impls["reference"] = (lambda: dyt_ref.dyt_forward(x, alpha, w64, b64),
                              lambda c_: dyt_ref.dyt_backward(dy, c_[1]))
        impls["numba"] = (lambda: kdyt.dyt_forward(x, alpha, w64, b64, out=y, keep_out=keep),
                          lambda c_: kdyt.dyt_backward(dy, c_[1], dx_out=dx))
        from .transformer import DyT
        layer = DyT(c, dtype=dt)
        layer.params["alpha"][...] = alpha
    elif fam == "switchnorm":
        from .statistics import switchnorm as sn
        from .kernels.statistics import switchnorm as ksn
        lm, lv = SWITCH_LOGITS
        impls["textbook"] = (lambda: textbook_switch_forward(x, w, b, lm.astype(dt), lv.astype(dt), eps),
                             lambda c_: textbook_switch_backward(dy, c_[1]))
        impls["reference"] = (lambda: sn.switch_norm_forward(x, w64, b64, lm, lv, eps),
                              lambda c_: sn.switch_norm_backward(dy, c_[1]))
        impls["numba"] = (lambda: ksn.switch_norm_forward(x, w64, b64, lm, lv, eps, out=y, keep_out=keep),
                          lambda c_: ksn.switch_norm_backward(dy, c_[1], dx_out=dx))
        layer = S.SwitchNorm2d(c, eps=eps, dtype=dt)
        layer.params["mean_weight"][...], layer.params["var_weight"][...] = lm, lv
    elif fam == "iternorm":
        from .statistics import iternorm as itn
        from .kernels.statistics import iternorm as kitn
        g, t = case.groups, ITERNORM_T
        impls["textbook"] = (lambda: textbook_iternorm_forward(x, w, b, g, t, eps),
                             lambda c_: textbook_iternorm_backward(dy, c_[1]))
        impls["reference"] = (lambda: itn.iter_norm_forward(x, w64, b64, g, t, eps),
                              lambda c_: itn.iter_norm_backward(dy, c_[1]))
        impls["numba"] = (lambda: kitn.iter_norm_forward(x, w64, b64, g, t, eps, out=y, keep_out=keep),
                          lambda c_: kitn.iter_norm_backward(dy, c_[1], dx_out=dx))
        layer = S.IterNorm(c, num_groups=g, T=t, eps=eps, dtype=dt)
    elif fam in CATALOG_FAMILIES:
        impls, layer, extra = _catalog_impls(case, x, dy, c, w64, b64, w, b, y, dx, keep, rng)
    else:  # pragma: no cover
        raise ValueError(f"unknown family {fam!r}")

    if fam != "adagroupnorm":
        if "weight" in layer.params:
            layer.params["weight"][...] = w
        if "bias" in layer.params:
            layer.params["bias"][...] = b
        impls["layer"] = _layer_impl(layer, x, dy)
    if torch_mod is not None and fam in CATALOG_FAMILIES:
        impls["torch"] = _torch_catalog(torch_mod, case, x, dy, w, b, extra, torch_forward)
    elif torch_mod is not None and fam != "adagroupnorm":
        impls["torch"] = _torch_impl(torch_mod, case, x, dy, w, b, eps, torch_forward)

    result = {}
    for name, pair in impls.items():
        if isinstance(pair, dict):               # PyTorch's passes (_torch_pair): already composed
            result[name] = pair
            continue
        fwd, bwd = pair

        def fwd_bwd(fwd=fwd, bwd=bwd):
            return bwd(fwd())
        result[name] = {"forward": fwd, "forward+backward": fwd_bwd}
    return result


def _catalog_impls(case: BenchCase, x, dy, c, w64, b64, w, b, y, dx, keep, rng):
    """``(impls, layer, extra)`` of a catalog family with ``c`` channels: textbook (on ``w``, ``b``, in
    the input's dtype), reference and Numba kernel (on ``w64``, ``b64``; the kernel into the
    preallocated ``y``, ``dx``, ``keep``), the layer (its weight and bias are set by the caller), and
    the extra constants the PyTorch composition needs."""
    from . import statistics as S
    from .statistics import batchrenorm as brn, evonorm as evo, grn
    from .kernels.statistics import batchrenorm as kbrn, evonorm as kevo, grn as kgrn

    fam, dt = case.family, x.dtype
    impls: dict[str, tuple[Callable, Callable]] = {}
    if fam == "batchrenorm":
        # running statistics that the batch's (mean ~3, std ~2) differ from: r and d in range
        rm, rs, rmax, dmax, eps = 2.5 + 0.1 * rng.standard_normal(c), 1.5 + 0.1 * rng.random(c), 3.0, 5.0, 1e-5
        impls["textbook"] = (lambda: textbook_renorm_forward(x, w, b, rm, rs, rmax, dmax, eps),
                             lambda c_: textbook_renorm_backward(dy, c_[1]))
        impls["reference"] = (lambda: brn.batch_renorm_forward(x, w64, b64, rm, rs, rmax, dmax, eps),
                              lambda c_: brn.batch_renorm_backward(dy, c_[1]))
        impls["numba"] = (lambda: kbrn.batch_renorm_forward(x, w64, b64, rm, rs, rmax, dmax, eps, out=y,
                                                            keep_out=keep),
                          lambda c_: kbrn.batch_renorm_backward(dy, c_[1], dx_out=dx))
        # momentum 0: the running statistics (hence r and d) stay those of the other columns
        layer = S.BatchRenorm2d(c, eps=eps, momentum=0.0, rmax=rmax, dmax=dmax, dtype=dt)
        layer.running_mean, layer.running_std = rm.astype(dt), rs.astype(dt)
        return impls, layer, {"rm": rm, "rs": rs, "rmax": rmax, "dmax": dmax, "eps": eps}
    if fam in ("grn", "grn_cf"):
        last, eps = fam == "grn", 1e-6
        impls["textbook"] = (lambda: textbook_grn_forward(x, w, b, eps, last),
                             lambda c_: textbook_grn_backward(dy, c_[1]))
        impls["reference"] = (lambda: grn.grn_forward(x, w64, b64, eps, last),
                              lambda c_: grn.grn_backward(dy, c_[1]))
        impls["numba"] = (lambda: kgrn.grn_forward(x, w64, b64, eps, last, out=y, keep_out=keep),
                          lambda c_: kgrn.grn_backward(dy, c_[1], dx_out=dx))
        return impls, S.GlobalResponseNorm(c, eps=eps, channels_last=last, dtype=dt), {"eps": eps, "last": last}
    v64 = 1.0 + 0.1 * rng.standard_normal(c)
    v = v64.astype(dt)
    if fam == "evonorm_b0":
        eps = 1e-3
        impls["textbook"] = (lambda: textbook_evonorm_b0_forward(x, w, b, v, eps),
                             lambda c_: textbook_evonorm_b0_backward(dy, c_[1]))
        impls["reference"] = (lambda: evo.evonorm_b0_forward(x, w64, b64, v64, None, eps),
                              lambda c_: evo.evonorm_b0_backward(dy, c_[1]))
        impls["numba"] = (lambda: kevo.evonorm_b0_forward(x, w64, b64, v64, None, eps, out=y, keep_out=keep),
                          lambda c_: kevo.evonorm_b0_backward(dy, c_[1], dx_out=dx))
        layer = S.EvoNorm2dB0(c, eps=eps, dtype=dt)
    else:
        eps, g = 1e-5, case.groups
        impls["textbook"] = (lambda: textbook_evonorm_s0_forward(x, w, b, v, g, eps),
                             lambda c_: textbook_evonorm_s0_backward(dy, c_[1]))
        impls["reference"] = (lambda: evo.evonorm_s0_forward(x, w64, b64, v64, g, eps),
                              lambda c_: evo.evonorm_s0_backward(dy, c_[1]))
        impls["numba"] = (lambda: kevo.evonorm_s0_forward(x, w64, b64, v64, g, eps, out=y, keep_out=keep),
                          lambda c_: kevo.evonorm_s0_backward(dy, c_[1], dx_out=dx))
        layer = S.EvoNorm2dS0(c, groups=g, eps=eps, dtype=dt)
    layer.params["v"][...] = v
    return impls, layer, {"v": v, "eps": eps}


def _torch_catalog(torch, case, x, dy, w, b, extra, torch_forward="no_grad"):
    """The catalog layers as compositions of PyTorch operations (PyTorch has none of them), with
    autograd: batch renorm as ``F.batch_norm`` with detached ``r``, ``d``; GRN as ConvNeXt V2's code;
    EvoNorm-B0/S0 as timm's."""
    F = torch.nn.functional
    fam = case.family
    dt = torch.from_numpy(x).dtype
    inputs = [torch.from_numpy(a) for a in (x, w, b)] + ([torch.from_numpy(extra["v"])] if "v" in extra else [])
    chan = (1, -1, 1, 1)

    def call(xi, wi, bi, vi=None):
        if fam == "batchrenorm":
            with torch.no_grad():
                var, mean = torch.var_mean(xi, dim=(0, 2, 3), unbiased=False)
                std = torch.sqrt(var + extra["eps"])
                rs = torch.from_numpy(extra["rs"]).to(dt)
                r = torch.clamp(std / rs, 1 / extra["rmax"], extra["rmax"])
                d = torch.clamp((mean - torch.from_numpy(extra["rm"]).to(dt)) / rs, -extra["dmax"], extra["dmax"])
            xh = F.batch_norm(xi, None, None, training=True, eps=extra["eps"])
            return (xh * r.view(chan) + d.view(chan)) * wi.view(chan) + bi.view(chan)
        if fam in ("grn", "grn_cf"):
            sp, ch, view = ((1, 2), -1, (1, 1, 1, -1)) if extra["last"] else ((2, 3), 1, chan)
            gx = torch.norm(xi, p=2, dim=sp, keepdim=True)
            nx = gx / (gx.mean(dim=ch, keepdim=True) + extra["eps"])
            return wi.view(view) * (xi * nx) + bi.view(view) + xi
        if fam == "evonorm_b0":
            left = torch.sqrt(xi.var(dim=(0, 2, 3), unbiased=False, keepdim=True) + extra["eps"])
            s = torch.sqrt(xi.var(dim=(2, 3), unbiased=False, keepdim=True) + extra["eps"])
            return xi / torch.maximum(left, xi * vi.view(chan) + s) * wi.view(chan) + bi.view(chan)
        n, c = xi.shape[:2]
        std = torch.sqrt(xi.reshape(n, case.groups, -1).var(dim=-1, unbiased=False, keepdim=True) + extra["eps"])
        a = (xi * torch.sigmoid(xi * vi.view(chan))).reshape(n, case.groups, -1)
        return (a / std).reshape(xi.shape) * wi.view(chan) + bi.view(chan)

    return _torch_pair(torch, call, inputs, torch.from_numpy(dy), torch_forward)


def pattern_impls(family: str, x: np.ndarray, dy: np.ndarray) -> dict[str, dict[str, Callable]]:
    """``{"pattern": {pass: callable}, "pattern_min": {...}}``: loops doing no other work that move the
    bytes of the fused kernel's memory pattern and of the same pattern without the private copy (see
    the module docstring); ``{}`` for a family whose traffic kind has no pattern loop."""
    from .kernels.affine import parallel_copy, parallel_read, stream_add, stream_copy2, stream_read2

    kind = KEEPS[family]
    if kind not in PATTERN_MIN:
        return {}
    twice = kind == "keep, two reads"
    xf, dyf = x.reshape(-1), dy.reshape(-1)
    y, keep, dx = np.empty_like(xf), np.empty_like(xf), np.empty_like(xf)

    def fwd(copy):
        if twice:
            parallel_read(xf)                  # the statistics pass
        if copy:
            stream_copy2(xf, y, keep)          # output and private copy
        else:
            parallel_copy(xf, y)
        return y, keep if copy else xf

    def fwd_bwd(copy):
        _, saved = fwd(copy)
        if twice:
            stream_read2(saved, dyf)           # the sums over x and dy
        stream_add(saved, dyf, dx)
        return dx

    return {name: {"forward": (lambda c=copy: fwd(c)), "forward+backward": (lambda c=copy: fwd_bwd(c))}
            for name, copy in (("pattern", True), ("pattern_min", False))}


def _torch_pair(torch, call, inputs, dyt, torch_forward="no_grad"):
    """``{pass: callable}`` of the PyTorch function ``call(*inputs)``.

    The forward pass runs under ``torch.no_grad()`` on ``inputs`` (``torch_forward="no_grad"``, an
    inference forward) or with autograd on leaf copies of them (``"autograd"``, the training
    forward). The forward + backward pass runs the training forward once, then ``backward(dyt)``,
    and returns the leaves' gradients (in the order of ``inputs``)."""
    leaves = [a.detach().clone().requires_grad_(True) for a in inputs]

    def fwd():
        if torch_forward == "autograd":          # the training forward: records the graph
            return call(*leaves), None
        with torch.no_grad():
            return call(*inputs), None

    def fwd_bwd():
        for a in leaves:
            a.grad = None
        call(*leaves).backward(dyt)
        return tuple(a.grad for a in leaves)

    return {"forward": fwd, "forward+backward": fwd_bwd}


def _sum_param_grads(grads):
    """``(dx, dweight, dbias)`` with the parameter gradients flattened to ``(C,)`` like the others'."""
    dx, *params = grads
    return (dx, *(None if g is None else np.asarray(g).reshape(-1) for g in params))


def _torch_impl(torch, case, x, dy, w, b, eps, torch_forward="no_grad"):
    F = torch.nn.functional
    xt, dyt = torch.from_numpy(x), torch.from_numpy(dy)
    wt, bt = torch.from_numpy(w), torch.from_numpy(b)
    fam = case.family
    ns = (x.shape[-1],)

    def call(xi, wi, bi):
        if fam == "layernorm":
            return F.layer_norm(xi, ns, wi, bi, eps)
        if fam == "rmsnorm":
            return F.rms_norm(xi, ns, wi, eps)
        if fam == "qkrms":
            return F.rms_norm(xi, ns, wi, 1e-6)
        if fam == "scalenorm":
            return 32.0 * F.normalize(xi, p=2, dim=-1, eps=1e-5)
        if fam == "l2norm":
            return F.normalize(xi, p=2, dim=-1, eps=1e-12)
        if fam == "dyt":
            return wi * torch.tanh(0.5 * xi) + bi
        if fam == "groupnorm":
            return F.group_norm(xi, case.groups, wi, bi, eps)
        if fam == "instancenorm":
            return F.instance_norm(xi, weight=wi, bias=bi, eps=eps)
        if fam == "patchnorm":
            ones = torch.ones((1,) + tuple(wi.shape[1:]), dtype=xi.dtype)
            return F.conv2d(xi, wi, bi, 1, 1) / torch.sqrt(F.conv2d(xi * xi, ones, None, 1, 1) + 1)
        if fam == "switchnorm":
            return _torch_switchnorm(torch, xi, wi, bi, eps)
        if fam == "iternorm":
            return _torch_iternorm(torch, xi, wi, bi, case.groups, ITERNORM_T, eps)
        return F.batch_norm(xi, None, None, wi, bi, training=True, eps=eps)

    return _torch_pair(torch, call, [xt, wt, bt], dyt, torch_forward)


def _torch_switchnorm(torch, x, w, b, eps):
    """SwitchNorm2d composed from tensor means (PyTorch has no such layer); the logits are constants."""
    n, c = x.shape[:2]
    xr = x.reshape(n, c, -1)
    mu_in, var_in = xr.mean(-1, keepdim=True), xr.var(-1, keepdim=True)      # unbiased, as the reference
    temp = var_in + mu_in ** 2
    mu_ln = mu_in.mean(1, keepdim=True)
    var_ln = temp.mean(1, keepdim=True) - mu_ln ** 2
    mu_bn = mu_in.mean(0, keepdim=True)
    var_bn = temp.mean(0, keepdim=True) - mu_bn ** 2
    wm, wv = (torch.softmax(torch.from_numpy(z).to(x.dtype), 0) for z in SWITCH_LOGITS)
    mean = wm[0] * mu_in + wm[1] * mu_ln + wm[2] * mu_bn
    var = wv[0] * var_in + wv[1] * var_ln + wv[2] * var_bn
    xhat = ((xr - mean) / torch.sqrt(var + eps)).reshape(x.shape)
    return xhat * w.reshape(1, c, 1, 1) + b.reshape(1, c, 1, 1)


def _torch_iternorm(torch, x, w, b, groups, T, eps):
    """IterNorm's graph in PyTorch (no such layer there): autograd differentiates the Newton steps."""
    n, c = x.shape[:2]
    d = c // groups
    xg = x.transpose(0, 1).reshape(groups, d, -1)
    xc = xg - xg.mean(2, keepdim=True)
    eye = torch.eye(d, dtype=x.dtype)
    sigma = xc @ xc.transpose(1, 2) / xc.shape[2] + eps * eye
    tr = sigma.diagonal(dim1=1, dim2=2).sum(-1).reshape(groups, 1, 1)
    s_n = sigma / tr
    p = eye.expand(groups, d, d)
    for _ in range(T):
        p = 1.5 * p - 0.5 * p @ p @ p @ s_n
    xhat = (p / tr.sqrt()) @ xc
    out = xhat.reshape((c, n) + tuple(x.shape[2:])).transpose(0, 1)
    return out * w.reshape((1, c) + (1,) * (x.dim() - 2)) + b.reshape((1, c) + (1,) * (x.dim() - 2))


# -- a training step of the book's CNN ------------------------------------------------------------
#: The chapter-8 CNN's training step: batch, image size, normalizers.
TRAIN_STEP = {"batch": 64, "size": 16, "norms": ("bn", "gn"), "lr": 0.01, "momentum": 0.9}


def training_step_impls(norm: str, dtype: str, torch_mod, batch: int = 64, size: int = 16) -> dict[str, Callable]:
    """One SGD step (forward, cross-entropy, backward, update) of :func:`npnorm.models.small_cnn` on a
    batch of ``(batch, 1, size, size)`` images, in npnorm (parameters in ``dtype``: float32 is the
    float32 path end to end) and, when ``torch_mod`` is given, the same network in PyTorch."""
    from . import nn
    from .models import small_cnn

    rng = np.random.default_rng(0)
    X = rng.standard_normal((batch, 1, size, size)).astype(dtype)
    y = rng.integers(0, 10, batch)
    model = small_cnn(norm, size=size, dtype=np.dtype(dtype), seed=0)
    crit = nn.CrossEntropyLoss()
    opt = nn.SGD(model, lr=TRAIN_STEP["lr"], momentum=TRAIN_STEP["momentum"])

    def npnorm_step():
        loss = crit(model(X), y)
        model.backward(crit.backward())
        opt.step()
        return loss

    impls = {"layer": npnorm_step}
    if torch_mod is not None:
        impls["torch"] = _torch_training_step(torch_mod, norm, X, y, size)
    return impls


def _torch_training_step(torch, norm, X, y, size):
    tnn = torch.nn
    w = 8

    def norm2d(c):
        return tnn.BatchNorm2d(c) if norm == "bn" else tnn.GroupNorm(max(1, c // 4), c)

    def norm1d(c):
        return tnn.BatchNorm1d(c) if norm == "bn" else tnn.GroupNorm(max(1, c // 4), c)

    s4 = size // 4
    model = tnn.Sequential(
        tnn.Conv2d(1, w, 3, padding=1, bias=False), norm2d(w), tnn.ReLU(), tnn.MaxPool2d(2),
        tnn.Conv2d(w, 2 * w, 3, padding=1, bias=False), norm2d(2 * w), tnn.ReLU(), tnn.MaxPool2d(2),
        tnn.Flatten(), tnn.Linear(2 * w * s4 * s4, 64, bias=False), norm1d(64), tnn.ReLU(), tnn.Linear(64, 10))
    model = model.to(torch.float64 if X.dtype == np.float64 else torch.float32)
    opt = torch.optim.SGD(model.parameters(), lr=TRAIN_STEP["lr"], momentum=TRAIN_STEP["momentum"])
    crit = tnn.CrossEntropyLoss()
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = crit(model(Xt), yt)
        loss.backward()
        opt.step()
        return loss

    return step


def _torch_adagn(torch, x, dy, emb, lw, lb, groups, eps, torch_forward="no_grad"):
    """PyTorch's GroupNorm (no affine) followed by the same modulation, as diffusers' AdaGroupNorm."""
    F = torch.nn.functional
    dt = torch.from_numpy(x).dtype
    xt, dyt = torch.from_numpy(x), torch.from_numpy(dy)
    et = torch.from_numpy(emb).to(dt)
    wt, bt = torch.from_numpy(lw).to(dt), torch.from_numpy(lb).to(dt)

    def call(xi, ei, wi, bi):
        p = F.linear(F.silu(ei), wi, bi)[:, :, None, None]
        scale, shift = p.chunk(2, dim=1)
        return F.group_norm(xi, groups, eps=eps) * (1 + scale) + shift

    return _torch_pair(torch, call, [xt, et, wt, bt], dyt, torch_forward)


# -- measuring -----------------------------------------------------------------------------------
def _time(fn: Callable, repeats: int, warmup: int = 1) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def _time_round_robin(fns: list[Callable], repeats: int, warmup_seconds: float = 0.2) -> list[list[float]]:
    """Time several functions in turns (warm-up, then ``repeats`` rounds of one call each, in a new
    random order every round, seeded), so that a change in the machine's load during the measurement
    hits them all alike, and none always inherits the cache the same predecessor left.

    The warm-up calls each function at least twice (the first call may compile a kernel) and until
    ``warmup_seconds`` have passed: the first calls that allocate large outputs pay page faults until
    the allocator has memory to reuse, and thread pools start lazily."""
    for fn in fns:
        t0, calls = time.perf_counter(), 0
        while calls < 2 or (time.perf_counter() - t0 < warmup_seconds and calls < 50):
            fn()
            calls += 1
    times: list[list[float]] = [[] for _ in fns]
    order = np.random.default_rng(0)             # the same orders in every run
    for _ in range(repeats):
        # a new order every round: no implementation always runs right after the same one (whose reads
        # of x and dy, or freed memory, would leave it a warmer cache)
        for k in order.permutation(len(fns)):
            t0 = time.perf_counter()
            fns[k]()
            times[k].append(time.perf_counter() - t0)
    return times


#: The streaming bounds :func:`stream_bandwidths` measures (see the module docstring).
STREAM_KINDS = ("memcpy", "store", "read")


def stream_bandwidths(nbytes: int = 256 << 20, repeats: int = 10) -> dict[str, float]:
    """Streaming bandwidths in GB/s on a buffer of ``nbytes`` (fastest of ``repeats`` runs each):

    ``"memcpy"``: NumPy's ``copyto`` into a preallocated buffer (glibc ``memcpy``: for large sizes it
    uses non-temporal stores, which do not read the destination lines first); ``"store"``: a parallel
    Numba copy loop with ordinary stores (each destination line is read before it is written, as in
    every kernel here); ``"read"``: a parallel Numba sum (no writes). Copies count read + written bytes.

    The fastest run, not the median: the roofline is what the machine *can* do, and on a machine shared
    with other programs the median would move the line down whenever they are busy."""
    from .kernels.affine import parallel_copy, parallel_read

    src = np.ones(nbytes // 8)
    dst = np.zeros_like(src)
    parallel_copy(src, dst)
    parallel_read(src)
    return {"memcpy": 2 * nbytes / float(np.min(_time(lambda: np.copyto(dst, src), repeats))) / 1e9,
            "store": 2 * nbytes / float(np.min(_time(lambda: parallel_copy(src, dst), repeats))) / 1e9,
            "read": nbytes / float(np.min(_time(lambda: parallel_read(src), repeats))) / 1e9}


def machine_info() -> dict[str, Any]:
    """The CPU model, logical CPUs, SIMD extensions and cache sizes (bytes) of this machine, read from
    ``/proc/cpuinfo`` and ``/sys/devices/system/cpu`` where they exist (Linux), else what
    :mod:`platform` knows."""
    info: dict[str, Any] = {"cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                            "simd": [], "caches": {}}
    try:
        with open("/proc/cpuinfo") as fh:
            text = fh.read()
        for line in text.splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                info["simd"] = [f for f in ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_bf16")
                                if f in flags]
                break
    except OSError:
        pass
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for entry in sorted(os.listdir(base)):
            d = os.path.join(base, entry)
            if not entry.startswith("index"):
                continue
            level = open(os.path.join(d, "level")).read().strip()
            kind = open(os.path.join(d, "type")).read().strip()
            size = open(os.path.join(d, "size")).read().strip()
            mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(size[-1], 1)
            nbytes = int(size.rstrip("KMG")) * mult
            if kind == "Instruction":
                continue
            name = f"L{level}" + ("d" if kind == "Data" else "")
            info["caches"][name] = nbytes
    except (OSError, ValueError):
        pass
    return info


def bounds(info: dict[str, Any], dram_bytes: int | None = None, repeats: int = 10) -> dict[str, Any]:
    """The streaming bounds a kernel is placed against (:func:`stream_bandwidths`, GB/s) on a buffer far
    larger than the last-level cache (``"DRAM"``) and on one that fits in it (``"cache"``), with the
    buffer sizes used."""
    llc = max(info["caches"].values(), default=8 << 20)
    dram = dram_bytes or max(256 << 20, 8 * llc)
    in_cache = max(1 << 20, llc // 4)
    return {"DRAM": stream_bandwidths(dram, repeats), "DRAM_bytes": dram,
            "cache": stream_bandwidths(in_cache, repeats * 4), "cache_bytes": in_cache, "llc_bytes": llc}


def working_set(family: str, impl: str, pss: str, nbytes: int) -> int:
    """Bytes a pass touches: every stream of :func:`streams` (``x``, ``y``, the copy, ``dy``, ``dx``)."""
    return sum(streams(family, impl, pss)) * nbytes


def _threading_layer() -> str | None:
    import numba
    try:
        return numba.threading_layer()
    except ValueError:          # no parallel kernel has run yet
        return None


def _tune_malloc() -> str:
    """Keep freed memory on the heap (glibc), so NumPy/PyTorch temporaries reuse pages across runs."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
        ok = libc.mallopt(M_MMAP_MAX, 0) and libc.mallopt(M_TRIM_THRESHOLD, 1 << 40)
        return "glibc mallopt(M_MMAP_MAX=0, M_TRIM_THRESHOLD=1 TiB)" if ok else "default malloc (mallopt refused)"
    except (OSError, AttributeError):
        return "default malloc (no glibc)"


def _numpy_blas_policy() -> tuple[Any, str]:
    """``(context, description)``: NumPy's BLAS on one thread while the benchmark runs.

    npnorm's matrix products are small (the AdaGN projection, the chapter-8 CNN), and the experiments
    run them on one BLAS thread (:func:`npnorm.experiments._framework.one_blas_thread`). With
    OpenBLAS's default threads, its workers keep spinning after a product and take the cores from the
    Numba kernel that runs next: measured here, AdaGN's forward and backward (projection and fused
    kernel) took 25 ms instead of 7 ms. PyTorch's own threads are not limited (threadpoolctl does not
    see the BLAS inside PyTorch's wheel)."""
    if importlib.util.find_spec("threadpoolctl") is None:
        return contextlib.nullcontext(), "library default (threadpoolctl is not installed)"
    from .experiments._framework import one_blas_thread

    return one_blas_thread(), "1 thread (npnorm's policy for its small products)"


def run(cases=CASES, dtypes=("float32", "float64"), passes=PASSES, size: str = "full", repeats: int = 5,
        threads: int | None = None, implementations=IMPLEMENTATIONS, copy_bytes: int | None = None,
        tune_malloc: bool = True, progress: Callable[[str], None] | None = None,
        train_step: bool = True, torch_forward: str = "no_grad") -> dict[str, Any]:
    """Run the benchmark and return a JSON-ready dict ``{"meta": ..., "results": [...]}``. NumPy's BLAS
    runs on one thread meanwhile (:func:`_numpy_blas_policy`; ``meta["numpy_blas"]`` says which)."""
    blas, blas_text = _numpy_blas_policy()
    with blas:
        data = _run(cases, dtypes, passes, size, repeats, threads, implementations, copy_bytes, tune_malloc,
                    progress, train_step, torch_forward)
    data["meta"]["numpy_blas"] = blas_text
    return data


def _run(cases, dtypes, passes, size, repeats, threads, implementations, copy_bytes, tune_malloc, progress,
         train_step, torch_forward) -> dict[str, Any]:
    import numba

    if torch_forward not in TORCH_FORWARDS:
        raise ValueError(f"torch_forward must be one of {TORCH_FORWARDS}, got {torch_forward!r}")
    if threads is not None:
        numba.set_num_threads(threads)
    threads = numba.get_num_threads()
    torch_mod = _import_torch() if "torch" in implementations else None
    if torch_mod is not None:
        torch_mod.set_num_threads(threads)
    malloc = _tune_malloc() if tune_malloc else "default malloc"
    info = machine_info()
    bw_start = bounds(info, copy_bytes)
    meta = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": info["cpu"], "cpus": os.cpu_count(), "threads": threads, "simd": info["simd"],
        "caches": info["caches"],
        "python": platform.python_version(), "numpy": np.__version__, "numba": numba.__version__,
        "torch": None if torch_mod is None else torch_mod.__version__, "size": size, "repeats": repeats,
        "copy_bandwidth_GBps": None, "copy_bytes": copy_bytes, "bound_kind": "store",
        "outputs": "layer, torch, textbook, reference: outputs allocated per call, as a user gets them; "
                   "numba (the bare kernel): preallocated (out=, dx_out=, keep_out=); " + malloc,
        "traffic_model": "(reads, writes) in units of x.nbytes per implementation and pass, column 'r+w' for "
                         "the kernel: " + "; ".join(f"{k} fwd {v['forward']}, fwd+bwd {v['forward+backward']}"
                                                   for k, v in STREAMS.items())
                         + "; npnorm kernel and layer: " + ", ".join(f"{f} {k}" for f, k in KEEPS.items())
                         + "; textbook, reference, torch: minimum",
        "threading_layer": _threading_layer(), "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
        "torch_forward": torch_forward,
    }
    results: list[dict[str, Any]] = []
    train_results: list[dict[str, Any]] = []
    rng = np.random.default_rng(0)
    for case in cases:
        shape = case.sized(size)
        for dtype in dtypes:
            x = (3.0 + 2.0 * rng.standard_normal(shape)).astype(dtype)
            dy = rng.standard_normal(shape).astype(dtype)
            impls = _implementations(case, x, dy, torch_mod, torch_forward)
            if any(p in implementations for p in PATTERNS):
                impls.update(pattern_impls(case.family, x, dy))
            names = [n for n in implementations if n in impls]
            for pss in passes:
                if progress:
                    progress(f"{case.name} {shape} {dtype} {pss}: {', '.join(names)}")
                timings = _time_round_robin([impls[n][pss] for n in names], repeats)
                for name, times in zip(names, timings):
                    med = float(np.median(times))
                    rd, wr = streams(case.family, name, pss)
                    nbytes = (rd + wr) * x.nbytes
                    results.append({  # roofline fractions are filled in below
                        "case": case.name, "family": case.family, "shape": list(shape), "dtype": dtype,
                        "pass": pss, "impl": name, "streams": [rd, wr], "bytes": nbytes,
                        "MiB": x.nbytes / 2**20,
                        "working_set": working_set(case.family, name, pss, x.nbytes),
                        "times": times, "median": med, "min": float(min(times)), "max": float(max(times)),
                        "GBps": nbytes / med / 1e9, "best_GBps": nbytes / min(times) / 1e9,
                    })
            del impls, x, dy
    if train_step:
        for norm in TRAIN_STEP["norms"]:
            for dtype in dtypes:
                impls_t = training_step_impls(norm, dtype, torch_mod, TRAIN_STEP["batch"], TRAIN_STEP["size"])
                names = [n for n in ("layer", "torch") if n in impls_t]
                if progress:
                    progress(f"training step, CNN with {norm}, {dtype}: {', '.join(names)}")
                timings = _time_round_robin([impls_t[n] for n in names], 5 * repeats)
                for name, times in zip(names, timings):
                    train_results.append({"case": f"CNN step ({norm})", "norm": norm, "dtype": dtype,
                                          "batch": TRAIN_STEP["batch"], "impl": name, "times": times,
                                          "median": float(np.median(times)), "min": float(min(times)),
                                          "max": float(max(times))})
    bw_end = bounds(info, copy_bytes)
    # the fastest of the two measurements of each bound (start and end of the run)
    bw = {lvl: {k: max(bw_start[lvl][k], bw_end[lvl][k]) for k in STREAM_KINDS} for lvl in ("DRAM", "cache")}
    meta.update(bounds_GBps=bw, bounds_start_GBps={lvl: bw_start[lvl] for lvl in ("DRAM", "cache")},
                bounds_end_GBps={lvl: bw_end[lvl] for lvl in ("DRAM", "cache")},
                copy_bandwidth_GBps=bw["DRAM"]["store"], cache_bandwidth_GBps=bw["cache"]["store"],
                cache_copy_bytes=bw_start["cache_bytes"], copy_bytes=bw_start["DRAM_bytes"],
                llc_bytes=bw_start["llc_bytes"])
    for r in results:
        # a working set that fits in half the last-level cache streams from the cache, not from DRAM;
        # every implementation timed here writes with ordinary stores: the "store" copy bound applies
        r["bound"] = "cache" if r["working_set"] <= bw_start["llc_bytes"] // 2 else "DRAM"
        b = bw[r["bound"]]["store"]
        r["bound_GBps"] = b
        r["roofline"], r["best_roofline"] = r["GBps"] / b, r["best_GBps"] / b
    return {"meta": meta, "results": results, "training_step": train_results}


# -- reporting -----------------------------------------------------------------------------------
def format_table(data: dict[str, Any]) -> str:
    """A plain-text table: one row per case, dtype and pass; times in ms (medians).

    ``layer/torch`` is the like-for-like ratio (both allocate their outputs): PyTorch's time divided by
    npnorm's layer API time (> 1: npnorm faster). The bare kernel's bandwidth is placed against the
    bound that applies to its working set (in-cache or DRAM copy)."""
    meta, res = data["meta"], data["results"]
    impls = [i for i in IMPLEMENTATIONS + PATTERNS if any(r["impl"] == i for r in res)]
    patterns = "pattern" in impls and "torch" in impls
    rows: dict[tuple, dict[str, dict]] = {}
    for r in res:
        rows.setdefault((r["case"], tuple(r["shape"]), r["dtype"], r["pass"]), {})[r["impl"]] = r
    head = ["case", "shape", "dtype", "pass", "MiB"] + [f"{i} ms" for i in impls]
    head += ["layer/torch"] if "torch" in impls else []
    head += ["torch/pattern"] if patterns else []
    head += ["r+w", "kernel GB/s", "bound", "% bound", "best %"] + [f"{i}/kernel" for i in impls if i != "numba"]
    lines = []
    for (case, shape, dtype, pss), by in rows.items():
        nb = by.get("numba")
        any_r = next(iter(by.values()))
        line = [case, "x".join(map(str, shape)), dtype, "fwd" if pss == "forward" else "fwd+bwd",
                f"{any_r['MiB']:.1f}"]
        line += [f"{by[i]['median'] * 1e3:.2f}" if i in by else "-" for i in impls]
        if "torch" in impls:
            line.append(f"{by['torch']['median'] / by['layer']['median']:.2f}"
                        if "torch" in by and "layer" in by else "-")
        if patterns:
            line.append(f"{by['torch']['median'] / by['pattern']['median']:.2f}"
                        if "torch" in by and "pattern" in by else "-")
        if nb:
            line += [f"{nb['streams'][0]}+{nb['streams'][1]}", f"{nb['GBps']:.1f}", nb["bound"],
                     f"{100 * nb['roofline']:.0f}%",
                     f"{100 * nb['best_roofline']:.0f}%"]
            line += [f"{by[i]['median'] / nb['median']:.2f}" if i in by else "-" for i in impls if i != "numba"]
        else:
            line += ["-"] * (5 + len(impls) - 1)
        lines.append(line)
    widths = [max(len(str(c)) for c in col) for col in zip(head, *lines)]
    fmt = "  ".join(f"{{:<{w}}}" if k < 4 else f"{{:>{w}}}" for k, w in enumerate(widths))
    caches = ", ".join(f"{k} {v >> 10} KiB" for k, v in meta.get("caches", {}).items()) or "unknown"
    out = [
        f"npnorm benchmark - {meta['date']}",
        f"machine: {meta['machine']}, {meta['cpus']} logical CPUs, SIMD {'/'.join(meta.get('simd') or []) or '?'}, "
        f"caches {caches}",
        f"threads={meta['threads']} (numba and torch), NumPy {meta['numpy']}, Numba {meta['numba']} "
        f"({meta.get('threading_layer')} layer, OMP_WAIT_POLICY={meta.get('OMP_WAIT_POLICY')}), "
        f"PyTorch {meta['torch'] or 'not installed'}; NumPy's BLAS: {meta.get('numpy_blas', '?')}",
        *_bounds_legend(meta),
        f"outputs: {meta['outputs']}",
        f"times: median of {meta['repeats']} runs, implementations in turns (a new random order every round), "
        "after a warm-up; "
        "'layer/torch' > 1: npnorm's layer API faster than PyTorch's module; 'impl/kernel' = impl time / "
        "bare kernel time",
        *(["patterns: 'pattern' and 'pattern_min' move the bytes of the fused kernel's memory pattern with and "
           "without the private copy of x and no other work, preallocated outputs; 'torch/pattern': about the best "
           "'layer/torch' any kernel keeping the private copy could reach in this run"] if patterns else []),
        "forward ('fwd'): npnorm's training forward (it writes the private copy of x) against PyTorch's "
        + ("under torch.no_grad() (an inference forward: saves nothing)"
           if meta.get("torch_forward", "no_grad") == "no_grad" else
           "with autograd recording (the training forward: saves a reference to x)")
        + "; 'fwd+bwd': PyTorch with autograd (it saves a reference to x)",
        "",
        fmt.format(*head),
        fmt.format(*["-" * w for w in widths]),
    ]
    out += [fmt.format(*line) for line in lines]
    steps = data.get("training_step") or []
    if steps:
        out += ["", f"training step of the chapter-8 CNN (batch {steps[0]['batch']}, SGD), median ms; "
                    "torch/npnorm > 1: npnorm faster"]
        by: dict[tuple, dict[str, dict]] = {}
        for r in steps:
            by.setdefault((r["case"], r["dtype"]), {})[r["impl"]] = r
        for (case, dtype), d in by.items():
            line = f"  {case:<14} {dtype:<8} npnorm {d['layer']['median'] * 1e3:7.2f}"
            if "torch" in d:
                line += (f"  torch {d['torch']['median'] * 1e3:7.2f}  "
                         f"torch/npnorm {d['torch']['median'] / d['layer']['median']:.2f}")
            out.append(line)
    return "\n".join(out)


def _bounds_legend(meta: dict[str, Any]) -> list[str]:
    """The lines of the table's header that say what the bounds are and how '% bound' is computed."""
    b, b0, b1 = meta["bounds_GBps"], meta["bounds_start_GBps"], meta["bounds_end_GBps"]

    def level(lvl: str) -> str:
        return ", ".join(f"{k} {b[lvl][k]:.1f}" for k in STREAM_KINDS)

    return [
        f"bounds, GB/s (fastest of the measurements at the start and the end of the run): DRAM "
        f"({meta['copy_bytes'] >> 20} MiB buffer) {level('DRAM')}; in-cache ({meta['cache_copy_bytes'] >> 20} MiB "
        f"buffer) {level('cache')}",
        f"  start: DRAM store {b0['DRAM']['store']:.1f}, memcpy {b0['DRAM']['memcpy']:.1f}; end: DRAM store "
        f"{b1['DRAM']['store']:.1f}, memcpy {b1['DRAM']['memcpy']:.1f}",
        "  memcpy = np.copyto (glibc memcpy, non-temporal stores for large sizes: no read of the written "
        "lines); store = Numba copy loop with ordinary stores (each written line is read first); read = "
        "Numba sum; copies count bytes read + bytes written",
        "  every kernel and PyTorch write with ordinary stores: '% bound' = kernel GB/s / store bound "
        "(DRAM, or in-cache when the working set r+w x MiB fits in half the last-level cache)",
        "traffic model: kernel GB/s = (r+w) x MiB x 1.048576 / numba ms, r reads and w writes of x.nbytes "
        "(column 'r+w', per family below); % bound from the median time, best % from the fastest run",
        f"  {meta['traffic_model']}",
    ]


def plot(data: dict[str, Any], path: str | None = None, dtype: str | None = None):
    """Effective bandwidth of every implementation per case, against the measured copy bandwidth.

    One panel per pass; ``dtype`` picks one dtype (default: the first in the results). Returns the
    matplotlib figure (saved to ``path`` if given).
    """
    import matplotlib
    if path is not None and "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = data["results"]
    dtype = dtype or res[0]["dtype"]
    bw = data["meta"]["copy_bandwidth_GBps"]
    bw_cache = data["meta"].get("cache_bandwidth_GBps")
    impls = [i for i in IMPLEMENTATIONS if any(r["impl"] == i for r in res)]
    passes = [p for p in PASSES if any(r["pass"] == p for r in res)]
    fig, axes = plt.subplots(1, len(passes), figsize=(6.5 * len(passes), 4.2), squeeze=False, sharey=True)
    for ax, pss in zip(axes[0], passes):
        sel = [r for r in res if r["pass"] == pss and r["dtype"] == dtype]
        labels = list(dict.fromkeys(f"{r['case']}\n{'x'.join(map(str, r['shape']))}" for r in sel))
        width = 0.8 / len(impls)
        for k, impl in enumerate(impls):
            vals = {f"{r['case']}\n{'x'.join(map(str, r['shape']))}": r["GBps"] for r in sel if r["impl"] == impl}
            xs = [i + (k - (len(impls) - 1) / 2) * width for i in range(len(labels))]
            ax.bar(xs, [vals.get(lbl, 0.0) for lbl in labels], width, label=impl)
        ax.axhline(bw, color="k", ls="--", lw=1)
        ax.text(len(labels) - 0.5, bw, f"DRAM copy, ordinary stores {bw:.0f} GB/s", ha="right", va="bottom",
                fontsize=8)
        if bw_cache:
            ax.axhline(bw_cache, color="k", ls=":", lw=1)
            ax.text(len(labels) - 0.5, bw_cache, f"in-cache copy, ordinary stores {bw_cache:.0f} GB/s", ha="right",
                    va="bottom",
                    fontsize=8)
        ax.set_xticks(range(len(labels)), labels, fontsize=7)
        ax.set_title(f"{pss}, {dtype}, {data['meta']['threads']} thread(s)")
        ax.set_ylabel("effective GB/s (bytes it must move / time)")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m npnorm.bench", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="float32 only, 3 repeats (under a minute)")
    parser.add_argument("--json", metavar="PATH", help="write all timings to this JSON file")
    parser.add_argument("--plot", metavar="PATH", help="save the bandwidth figure (PNG, SVG, PDF...)")
    parser.add_argument("--repeats", type=int, help="timed runs per measurement (default 5; --quick 3)")
    parser.add_argument("--threads", type=int, help="threads for Numba and PyTorch (default: all)")
    parser.add_argument("--dtypes", default=None, help="comma-separated, default float32,float64 (--quick: float32)")
    parser.add_argument("--cases", default=None, help="comma-separated case-name prefixes, e.g. LayerNorm,RMSNorm")
    parser.add_argument("--no-torch", action="store_true", help="skip PyTorch even if installed")
    parser.add_argument("--no-train-step", action="store_true", help="skip the CNN training-step comparison")
    parser.add_argument("--patterns", action="store_true",
                        help="also time loops doing no other work than move the bytes of the fused kernel's memory "
                             "pattern, with and without the private copy of x (columns pattern, pattern_min)")
    parser.add_argument("--torch-forward", choices=TORCH_FORWARDS, default="no_grad",
                        help="time PyTorch's forward pass under torch.no_grad() (default, an inference forward) or "
                             "with autograd recording (the training forward, like npnorm's layer forward)")
    parser.add_argument("--sizes", choices=("full", "quick", "small", "tiny"), default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    size = args.sizes or "full"
    repeats = args.repeats or (3 if args.quick or size == "tiny" else 5)
    dtypes = tuple(args.dtypes.split(",")) if args.dtypes else (("float32",) if args.quick else ("float32", "float64"))
    for d in dtypes:
        if d not in ("float32", "float64"):
            parser.error(f"--dtypes: expected float32 and/or float64, got {d!r}")
    cases = CASES
    if args.cases:
        wanted = [c.strip() for c in args.cases.split(",")]
        cases = tuple(c for c in CASES if any(c.name.startswith(w) for w in wanted))
        if not cases:
            parser.error(f"--cases: no case starts with {wanted}; cases: {sorted({c.name for c in CASES})}")
    impls = tuple(i for i in IMPLEMENTATIONS if not (args.no_torch and i == "torch"))
    impls += PATTERNS if args.patterns else ()
    copy_bytes = (8 << 20) if size == "tiny" else None
    t0 = time.perf_counter()
    data = run(cases, dtypes, size=size, repeats=repeats, threads=args.threads, implementations=impls,
               copy_bytes=copy_bytes, progress=lambda s: print(f"  {s}", file=sys.stderr, flush=True),
               train_step=not args.no_train_step, torch_forward=args.torch_forward)
    data["meta"]["wall_seconds"] = time.perf_counter() - t0
    print(format_table(data))
    if size != "full":
        print(f"(size '{size}': inputs smaller than the issue's; some may fit in the caches)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(data, fh, indent=1)
        print(f"JSON written to {args.json}")
    if args.plot:
        plot(data, args.plot)
        print(f"figure written to {args.plot}")
    print(f"total {data['meta']['wall_seconds']:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
