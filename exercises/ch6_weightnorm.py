# Your exercise file, generated from solutions/ch6_weightnorm.py
# by `python -m npnorm.exercises generate`. Write your code between the two
# marker lines of each task (replace the `raise`), then check it with
#     make check TASK=<task id>        (in a terminal)
#     %run -m npnorm.check <task id>   (in a notebook)
# Regenerating never overwrites a file you have changed.
"""Chapter 6 - Weight and spectral normalization.

These normalize a layer's **weight**, not its activations.

* **Spectral norm** divides a weight matrix W by its largest singular value
  sigma(W), estimated cheaply by power iteration with a vector ``u`` kept from
  one training step to the next
  (``torch.nn.utils.parametrizations.spectral_norm``; a weight with more than
  two dimensions is flattened to ``(out, -1)``).
* **Weight norm** reparametrizes ``w = g * v / ||v||``: a direction ``v`` and a
  length ``g``, with the norm taken per output unit (over every axis but
  ``dim``, 0 by default) as in ``torch.nn.utils.parametrizations.weight_norm``.

Tasks
-----
6.1  power_iteration - u, v and sigma (u first, as in the chapter)
6.2  weightnorm_backward - the gradients dv and dg from dw

Self-check: ``.venv/bin/python exercises/ch6_weightnorm.py``.
Full check: ``make check TASK=6`` (in a notebook: ``%run -m npnorm.check 6``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from npnorm.exercises import fingerprint


def l2_normalize(a: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """``a / max(||a||, eps)`` (as ``torch.nn.functional.normalize``): a unit
    vector, and no division by zero for a zero vector."""
    return a / max(float(np.linalg.norm(a)), eps)


def power_iteration(
    W: np.ndarray, u: np.ndarray, v: np.ndarray, n_iters: int = 1,
    eps: float = 1e-12,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Estimate the largest singular value of ``W`` by power iteration, in the
    order of the chapter (``npnorm.SpectralNorm``, PyTorch's
    ``torch.nn.utils.parametrizations.spectral_norm``), which keeps both
    vectors from one training step to the next.

    Repeat ``n_iters`` times::

        u = normalize(W @ v)
        v = normalize(W.T @ u)

    and then estimate ``sigma = u @ W @ v`` with the new ``u`` and ``v``.
    Each round multiplies the error of ``v`` by about
    ``(sigma_2 / sigma_1)**2``, so one round per training step is enough once
    the vectors have converged (PyTorch's default ``n_power_iterations=1``).

    Parameters
    ----------
    W : ndarray, shape (out, in)
    u : ndarray, shape (out,)
        The current estimate of the top left singular vector (unit norm).
    v : ndarray, shape (in,)
        The current estimate of the top right singular vector (unit norm).
        Modify neither in place.
    n_iters : int >= 1
    eps : float
        For :func:`l2_normalize`.

    Returns
    -------
    u : ndarray, shape (out,), unit norm
    v : ndarray, shape (in,), unit norm
    sigma : float
        The estimate of the largest singular value; it never exceeds the
        true one.

    Hints
    -----
    * Use ``l2_normalize`` above.
    * Check yourself with ``np.linalg.norm(W, 2)``, the exact largest
      singular value.

    Self-check: ``self_check_6_1`` below.
    """
    # BEGIN TASK 6.1: spectral norm's power iteration
    raise NotImplementedError(
        "Task 6.1: spectral norm's power iteration - not written yet "
        '(exercise 6.1 of chapter 6). Check it with: make check TASK=6.1 (in '
        'a notebook: %run -m npnorm.check 6.1)')
    # END TASK 6.1


def _norm_axes(ndim: int, dim: int | None) -> tuple[int, ...]:
    if dim is None:
        return tuple(range(ndim))
    dim = dim % ndim
    return tuple(a for a in range(ndim) if a != dim)


def weightnorm_forward(
    v: np.ndarray, g: np.ndarray, dim: int | None = 0
) -> tuple[np.ndarray, dict[str, Any]]:
    """``w = g * v / ||v||`` with the norm over every axis except ``dim``
    (given; not a task).

    Parameters
    ----------
    v : ndarray, any shape, e.g. (out, in) or (out, in, kh, kw)
    g : ndarray, the shape of ``||v||`` with ``keepdims`` - e.g. (out, 1) or
        (out, 1, 1, 1) for ``dim=0`` (as PyTorch's ``weight_g``); shape () for
        ``dim=None`` (one norm over all of v).
    dim : int or None

    Returns
    -------
    w : ndarray, shape of ``v``
    cache : dict with ``v``, ``g``, ``norm`` (shape of ``g``) and ``axes`` (the
        reduced axes)
    """
    axes = _norm_axes(v.ndim, dim)
    norm = np.sqrt(np.sum(v * v, axis=axes, keepdims=dim is not None))
    w = g * v / norm
    return w, {"v": v, "g": g, "norm": norm, "axes": axes,
               "keepdims": dim is not None}


def weightnorm_backward(
    dw: np.ndarray, cache: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray]:
    """Backward pass of :func:`weightnorm_forward`: the gradients with respect
    to ``v`` and ``g``.

    With :math:`n = \\|v\\|` (per output unit):

    .. math::
       \\frac{\\partial L}{\\partial g} = \\frac{\\sum dw\\, v}{n}, \\qquad
       \\frac{\\partial L}{\\partial v} = \\frac{g}{n}\\,dw
       - \\frac{g}{n^2}\\frac{\\partial L}{\\partial g}\\, v

    The second term removes the part of ``dw`` along ``v``: changing the length
    of ``v`` does not change ``w``, so ``dv`` is orthogonal to ``v``.

    Parameters
    ----------
    dw : ndarray, shape of ``v``
    cache : dict from :func:`weightnorm_forward`

    Returns
    -------
    dv : ndarray, shape of ``v``
    dg : ndarray, shape of ``g``

    Hints
    -----
    * Sum over ``cache["axes"]`` with ``keepdims=cache["keepdims"]`` to get
      ``g``'s shape.
    * Check: ``np.sum(dv * v, axis=cache["axes"])`` should be ~0.

    Self-check: ``self_check_6_2`` below.
    """
    # BEGIN TASK 6.2: weight norm's backward pass
    raise NotImplementedError(
        "Task 6.2: weight norm's backward pass - not written yet (exercise "
        '6.2 of chapter 6). Check it with: make check TASK=6.2 (in a '
        'notebook: %run -m npnorm.check 6.2)')
    # END TASK 6.2


# -- self-checks: `.venv/bin/python exercises/ch6_weightnorm.py` --------------

def self_check_6_1() -> float:
    """Task 6.1: u, v and sigma after one step from the given u and v, every
    element weighted; you should get about 4.489875 (sigma alone converges to
    np.linalg.norm(W, 2))."""
    rng = np.random.default_rng(6)
    W = rng.standard_normal((4, 3))
    u = l2_normalize(rng.standard_normal(4))
    v = l2_normalize(rng.standard_normal(3))
    u, v, sigma = power_iteration(W, u, v, n_iters=1)
    return fingerprint(u=(u, (4,)), v=(v, (3,)), sigma=(sigma, ()))


def self_check_6_2() -> float:
    """Task 6.2: dv and dg for a (3, 4) weight with dim=0, every element
    weighted; you should get about -2.71035."""
    rng = np.random.default_rng(7)
    v = 0.5 + rng.standard_normal((3, 4))
    g = rng.uniform(0.5, 2.0, size=(3, 1)) * np.array([[1.0], [-1.0], [1.0]])
    dw = rng.standard_normal((3, 4))
    _, cache = weightnorm_forward(v, g, dim=0)
    dv, dg = weightnorm_backward(dw, cache)
    return fingerprint(dv=(dv, (3, 4)), dg=(dg, (3, 1)))


if __name__ == "__main__":
    from npnorm.exercises import self_check_main

    self_check_main(globals())
