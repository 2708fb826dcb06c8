r"""The affine-like layer: an affine map whose gradient step moves every sample's output by exactly
the ideal step (Bird, 2025, reconstructed).

**Forward.** For one sample :math:`x \in \mathbb R^D`, weight :math:`W \in \mathbb R^{M\times D}`
and bias :math:`b \in \mathbb R^M`,

.. math::
   s = \sqrt{\|x\|^2 + 1}, \qquad z = \frac{W x + b}{s}
     = [W\;b]\,\frac{[x;\,1]}{\|[x;\,1]\|}.                                          \tag{AL}

It is the ordinary affine map applied to the L2-normalized *augmented* input :math:`[x; 1]` (the
constant 1 is the input the bias multiplies). The map :math:`x \mapsto [x;1]/\|[x;1]\|` is one-to-one
(onto the open upper half of the unit sphere in :math:`\mathbb R^{D+1}`), so - unlike a
normalizer - the layer does not forget :math:`\|x\|`, and it is not scale-invariant:
:math:`z(\alpha x) \ne z(x)`.

**Why.** With :math:`g = \partial L/\partial z` one SGD step changes :math:`W` by
:math:`-\eta\,(g/s)\,x^\top` and :math:`b` by :math:`-\eta\,g/s`; since :math:`z` is linear in
:math:`(W, b)`, the output moves by exactly :math:`-\eta\,g\,(\|x\|^2 + 1)/s^2 = -\eta\,g`: the
factor :math:`\|x\|^2 + 1` of a plain affine layer is gone (:mod:`npnorm.divergence.measure`).

**Backward** (derived in the book, chapter "The affine divergence and PatchNorm"), with
:math:`G = \partial L/\partial z`, rows = samples:

.. math::
   \frac{\partial L}{\partial W} = \Big(\frac{G}{s}\Big)^{\!\top} X, \quad
   \frac{\partial L}{\partial b} = \sum_n \frac{G_n}{s_n}, \quad
   \frac{\partial L}{\partial x_n} = \frac{G_n}{s_n} W - \frac{\langle G_n, z_n\rangle}{s_n^2}\,x_n.
                                                                                     \tag{AL-B}

The last term is the radial correction every L2/RMS backward pass has (here from
:math:`\partial s/\partial x = x/s`).

**Reconstruction, and its evidence.** The paper's full text was not readable when this was written.
The form (AL) is taken from a third-party summary of the paper (papernotes.org: "divide by
:math:`\sqrt{\|x\|^2+1}`", "L2-normalise :math:`[x;1]`") and checked against everything the author
wrote: "affine-like", "inbuilt normalisation whilst preserving DOF", "not scale-invariant", "not a
normaliser". It is also the only per-sample rescaling that cancels the factor exactly. Not known: a
learnable constant in place of the 1, an output gain, and the initialization the paper used. The
initialization here (every entry of :math:`[W\;b]` from :math:`N(0, 1)`) is this library's: the
layer feeds a unit vector to :math:`[W\;b]`, so unit-variance entries give outputs of variance
about 1 whatever :math:`D` is; PyTorch's ``Linear`` default (:math:`\approx 1/\sqrt D`) would give
outputs of size :math:`1/\sqrt D`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._checks import as_float_array, check_dout, check_positive_int
from ..base import Module
from ..nn import init
from .prenorm import radial_scale

__all__ = ["affine_like_forward", "affine_like_backward", "affine_like_backward_staged", "AffineLike"]


def _check_args(x, weight, bias, where):
    x = as_float_array(x, "x", where)
    weight = as_float_array(weight, "weight", where)
    if weight.ndim != 2:
        raise ValueError(f"{where}: weight must have shape (out_features, in_features), got {weight.shape}")
    if x.ndim < 1 or x.shape[-1] != weight.shape[1]:
        raise ValueError(f"{where}: x must have shape (*, in_features={weight.shape[1]}), got {x.shape}")
    if bias is not None:
        bias = as_float_array(bias, "bias", where)
        if bias.shape != (weight.shape[0],):
            raise ValueError(f"{where}: bias must have shape (out_features,) = ({weight.shape[0]},), "
                             f"got {bias.shape}")
    return x, weight, bias


def affine_like_forward(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None
                        ) -> tuple[np.ndarray, dict[str, Any]]:
    """Equation (AL) for ``x`` of shape ``(*, D)``, ``weight`` ``(M, D)``, ``bias`` ``(M,)`` or None.

    Returns ``(z, cache)``; ``z`` has shape ``(*, M)`` and the dtype of ``x`` (computed in float64).
    Without a bias the divisor is still :math:`\\sqrt{\\|x\\|^2 + 1}` (the bias input is there, its
    weight fixed at 0). Raises ``TypeError`` / ``ValueError`` naming the bad argument.
    """
    x, weight, bias = _check_args(x, weight, bias, "affine_like_forward")
    lead, d = x.shape[:-1], x.shape[-1]
    x64 = np.array(x, dtype=np.float64).reshape(-1, d)          # copy: never a view of the caller's x
    w64 = np.array(weight, dtype=np.float64)
    s = radial_scale(np.sum(x64 * x64, axis=1, keepdims=True), "affine", d)   # (N, 1)
    u = x64 @ w64.T
    if bias is not None:
        u += bias
    z = u / s
    cache = {"x": x64, "weight": w64, "s": s, "z": z, "has_bias": bias is not None, "dtype": x.dtype,
             "lead": lead, "out_shape": lead + (weight.shape[0],)}
    return z.reshape(cache["out_shape"]).astype(x.dtype, copy=False), cache


def affine_like_backward(dout: np.ndarray, cache: dict[str, Any]):
    """Equation (AL-B), simplified: returns ``(dx, dweight, dbias)``
    (``dbias`` None without a bias)."""
    G = np.asarray(check_dout(dout, cache["out_shape"],
                              "affine_like_backward"), dtype=np.float64)
    G = G.reshape(-1, cache["weight"].shape[0])
    x, w, s, z = cache["x"], cache["weight"], cache["s"], cache["z"]
    Gs = G / s
    dweight = Gs.T @ x
    dbias = Gs.sum(axis=0) if cache["has_bias"] else None
    dx = Gs @ w - (np.sum(G * z, axis=1, keepdims=True) / s**2) * x
    dx = dx.reshape(cache["lead"] + (x.shape[1],))
    return dx.astype(cache["dtype"], copy=False), dweight, dbias


def affine_like_backward_staged(dout: np.ndarray, cache: dict[str, Any]):
    """Equation (AL-B) staged through the graph
    :math:`q = \\|x\\|^2 \\to s = \\sqrt{q+1} \\to r = 1/s`,
    :math:`u = Wx + b`, :math:`z = u\\,r`, one local derivative per node.
    Same result as :func:`affine_like_backward` (tested); the book derives
    one from the other."""
    G = np.asarray(check_dout(dout, cache["out_shape"],
                              "affine_like_backward_staged"),
                   dtype=np.float64)
    G = G.reshape(-1, cache["weight"].shape[0])
    x, w, s = cache["x"], cache["weight"], cache["s"]
    r = 1.0 / s
    u = cache["z"] * s
    du = G * r                                  # z = u * r
    dr = np.sum(G * u, axis=1, keepdims=True)
    ds = -dr / s**2                             # r = 1 / s
    dq = ds / (2.0 * s)                         # s = sqrt(q + 1)
    dx = du @ w + 2.0 * x * dq                  # u = x W^T + b, q = sum x^2
    dweight = du.T @ x
    dbias = du.sum(axis=0) if cache["has_bias"] else None
    dx = dx.reshape(cache["lead"] + (x.shape[1],))
    return dx.astype(cache["dtype"], copy=False), dweight, dbias


class AffineLike(Module):
    """The affine-like layer :math:`z = (Wx + b)/\\sqrt{\\|x\\|^2 + 1}` (equation AL), a drop-in
    replacement for ``Linear`` that removes the affine divergence (Bird, 2025; reconstructed - see
    the module docstring for the evidence).

    Parameters
    ----------
    in_features, out_features : int >= 1
    bias : bool, default True
        Learnable ``bias`` of shape ``(out_features,)``.
    dtype : default float64
        Dtype of the parameters; the output has the input's dtype.
    rng : numpy Generator or int, optional
        Source of the initial values (default: the library-wide generator, see
        :func:`npnorm.nn.init.manual_seed`).

    Input ``(*, in_features)``, output ``(*, out_features)``; the norm is over the last axis of each
    sample. ``weight`` and ``bias`` start as :math:`N(0, 1)` entries (a reconstruction: the layer
    multiplies :math:`[W\\;b]` with a unit vector, so this gives outputs of variance about 1 for any
    ``in_features``). No running statistics; the same in train and eval mode. PyTorch has no
    equivalent; the names and argument order are ``torch.nn.Linear``'s.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 dtype: Any = np.float64, rng: np.random.Generator | int | None = None) -> None:
        super().__init__()
        self.in_features = check_positive_int(in_features, "in_features", "AffineLike")
        self.out_features = check_positive_int(out_features, "out_features", "AffineLike")
        self.dtype = np.dtype(dtype)
        gen = init.get_rng(rng)
        self.params["weight"] = gen.standard_normal((self.out_features, self.in_features)).astype(self.dtype)
        if bias:
            self.params["bias"] = gen.standard_normal(self.out_features).astype(self.dtype)

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = as_float_array(x, "x", "AffineLike")
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(f"{self!r}: expected input of shape (*, in_features={self.in_features}), "
                             f"got shape {x.shape}")
        out, self._cache = affine_like_forward(x, self.params["weight"], self.params.get("bias"))
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        cache = self._require_cache()
        check_dout(dout, cache["out_shape"], "AffineLike.backward")
        dx, dweight, dbias = affine_like_backward(dout, cache)
        self.grads["weight"] = dweight.astype(self.dtype, copy=False)
        if dbias is not None:
            self.grads["bias"] = dbias.astype(self.dtype, copy=False)
        return dx

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={'bias' in self.params}"


# -- registry ------------------------------------------------------------------------------------
from ..registry import Case, Spec, register  # noqa: E402

register(Spec(
    name="AffineLike", cls=AffineLike, pytorch=None, reference="Bird, 2025 (reconstruction)",
    reduces_over="each sample's features (the norm of [x; 1])",
    differences="No PyTorch layer; weight and bias initialized N(0, 1) (reconstruction).",
    cases=(
        Case("N-in", {"in_features": 5, "out_features": 3}, ((4, 5),)),
        Case("N-L-in", {"in_features": 4, "out_features": 2}, ((2, 3, 4),)),
        Case("no-bias", {"in_features": 3, "out_features": 4, "bias": False}, ((5, 3),)),
    ),
))
