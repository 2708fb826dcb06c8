# Your exercise file, generated from solutions/ch7_numba.py
# by `python -m npnorm.exercises generate`. Write your code between the two
# marker lines of each task (replace the `raise`), then check it with
#     make check TASK=<task id>        (in a terminal)
#     %run -m npnorm.check <task id>   (in a notebook)
# Regenerating never overwrites a file you have changed.
"""Chapter 7 - Making it fast.

A fused LayerNorm forward with Numba. The NumPy LayerNorm reads ``x`` several
times and allocates a temporary for every intermediate (``x - mu``, its square,
``x_hat``...). A compiled kernel can do each row in three sweeps over the same
D numbers - mean, variance, output - with a handful of scalars and no
temporaries.

Two rules keep it accurate, even for float32 input:

* **two passes**: the mean first, then the mean of squared deviations. The
  one-pass ``mean(x**2) - mean(x)**2`` cancels catastrophically when the mean
  is large compared with the spread;
* **float64 accumulators**: sum float32 numbers into a float64 scalar; write
  the output in x's dtype.

Tasks
-----
7.1  _layernorm_rows - the @njit kernel (the wrapper around it is given)

Tip: ``make check TASK=7.1 NUMBA_DISABLE_JIT=1`` runs your kernel as plain
Python, with ordinary tracebacks (slow, but easy to debug).

Self-check: ``.venv/bin/python exercises/ch7_numba.py``.
Full check: ``make check TASK=7`` (in a notebook: ``%run -m npnorm.check 7``).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from npnorm.exercises import fingerprint


@njit
def _layernorm_rows(
    x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float,
    out: np.ndarray,
) -> None:
    """LayerNorm of every row of ``x`` (R, D), written into ``out`` (R, D, x's
    dtype).

    For each row r::

        mean = sum_j x[r, j] / D                        (pass 1, float64
        accumulator) var  = sum_j (x[r, j] - mean)**2 / D            (pass 2,
        float64 accumulator) rstd = 1 / sqrt(var + eps)
        out[r, j] = (x[r, j] - mean) * rstd * gamma[j] + beta[j]

    Parameters
    ----------
    x : ndarray, shape (R, D), float32 or float64, C-contiguous
    gamma, beta : ndarray, shape (D,), float64
    eps : float
    out : ndarray, shape (R, D), dtype of ``x``; fill it, return nothing

    Hints
    -----
    * Plain Python loops: ``for r in range(x.shape[0]):`` and ``for j in
      range(d):``. Numba compiles them to machine code; do not call
      ``x.mean()`` on whole rows (that allocates).
    * ``acc = np.float64(0.0)`` makes a float64 accumulator; ``acc += x[r, j]``
      then accumulates in float64 even for float32 ``x``. (Compiled, a plain
      ``acc = 0.0`` is float64 too; but with ``NUMBA_DISABLE_JIT=1`` the loop
      runs as plain Python, where NumPy 2 keeps ``0.0 + np.float32(...)`` in
      float32 - so write the dtype out and both agree.)
    * ``np.sqrt`` works on scalars inside @njit.
    """
    # BEGIN TASK 7.1: a fused Numba LayerNorm forward
    raise NotImplementedError(
        'Task 7.1: a fused Numba LayerNorm forward - not written yet '
        '(exercise 7.1 of chapter 7). Check it with: make check TASK=7.1 (in '
        'a notebook: %run -m npnorm.check 7.1)')
    # END TASK 7.1


def layernorm_forward_numba(
    x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float = 1e-5
) -> np.ndarray:
    """LayerNorm over the last axis of ``x`` (..., D) with the kernel above
    (given; not a task).

    Returns an array of ``x``'s shape and dtype. The first call for each dtype
    compiles the kernel (about a second); later calls run at compiled speed.
    """
    rows = np.ascontiguousarray(x).reshape(-1, x.shape[-1])
    out = np.empty_like(rows)
    gamma = np.asarray(gamma, dtype=np.float64)
    beta = np.asarray(beta, dtype=np.float64)
    _layernorm_rows(rows, gamma, beta, float(eps), out)
    return out.reshape(x.shape)


# -- self-checks: `.venv/bin/python exercises/ch7_numba.py` -------------------

def self_check_7_1() -> float:
    """Task 7.1: out for float32 rows near 1000 with a spread of 0.01, and for
    float64 rows near 1e4 with a spread of 1e-3, every element weighted; you
    should get about 25.09262."""
    rng = np.random.default_rng(8)
    gamma = np.linspace(0.5, 1.5, 16)
    beta = np.full(16, 0.25)
    results = {}
    x32 = (1000.0 + 0.01 * rng.standard_normal((4, 16))).astype(np.float32)
    x64 = 1e4 + 1e-3 * rng.standard_normal((3, 16))
    cases = (("out_float32", x32, 1e-5), ("out_float64", x64, 1e-12))
    for name, x, eps in cases:
        out = layernorm_forward_numba(x, gamma, beta, eps)
        if np.shape(out) != x.shape or np.asarray(out).dtype != x.dtype:
            raise ValueError(f"out must have x's shape {x.shape} and dtype "
                             f"{x.dtype}")
        results[name] = (out, x.shape)
    return fingerprint(**results)


if __name__ == "__main__":
    from npnorm.exercises import self_check_main

    self_check_main(globals())
