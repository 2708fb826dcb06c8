# Your exercise file, generated from solutions/ch1_gradcheck.py
# by `python -m npnorm.exercises generate`. Write your code between the two
# marker lines of each task (replace the `raise`), then check it with
#     make check TASK=<task id>        (in a terminal)
#     %run -m npnorm.check <task id>   (in a notebook)
# Regenerating never overwrites a file you have changed.
"""Chapter 1 - Gradient checking.

Every backward pass in this course is judged by a gradient check, so you build
one first.

A backward pass receives ``dout``, the gradient of some scalar loss with
respect to the output of a function ``f``, and must return the gradient of that
loss with respect to the input. Whatever the loss was, that is the gradient of
the scalar

    L(x) = sum(dout * f(x))

so a numerical estimate of dL/dx, one element at a time, tells you whether a
backward pass is right. Take ``dout`` random: with ``dout = 1`` the true input
gradient of a normalization layer is exactly zero and a backward pass that
returns zeros would pass.

Tasks
-----
1.1  numerical_gradient - the two-point central difference
1.2  relative_error and gradient_check - compare, and report the worst element

Self-check: ``.venv/bin/python exercises/ch1_gradcheck.py``.
Full check: ``make check TASK=1`` (in a notebook: ``%run -m npnorm.check 1``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from npnorm.exercises import fingerprint


def numerical_gradient(
    f: Callable[[np.ndarray], np.ndarray],
    x: np.ndarray,
    dout: np.ndarray,
    h: float = 1e-5,
) -> np.ndarray:
    """Two-point central-difference estimate of the gradient of ``L(x) =
    sum(dout * f(x))``.

    .. math::
       \\frac{\\partial L}{\\partial x_i}
       \\approx \\frac{L(x + h e_i) - L(x - h e_i)}{2h}

    Parameters
    ----------
    f : callable
        Takes an array shaped like ``x``, returns an array shaped like
        ``dout``.
    x : ndarray, float64, any shape
        Where to differentiate. You may change it in place, one element at a
        time, but every element must hold its original value again when you
        return.
    dout : ndarray, shape of ``f(x)``
        The upstream gradient.
    h : float
        The step.

    Returns
    -------
    grad : ndarray, float64, shape of ``x``

    Hints
    -----
    * ``for idx in np.ndindex(x.shape):`` visits every index of an array of any
      shape.
    * For each index: remember ``x[idx]``, set it to ``old + h``, evaluate L,
      set it to ``old - h``, evaluate L, put ``old`` back.
    * The one-sided difference ``(L(x + h) - L(x)) / h`` has an error
      proportional to ``h`` (about 1e-5 here) and will not pass; the central
      one is proportional to ``h**2``.

    Self-check: task 1.1 in ``.venv/bin/python exercises/ch1_gradcheck.py``
    (``self_check_1_1`` below).
    """
    # BEGIN TASK 1.1: the central-difference numerical gradient
    raise NotImplementedError(
        'Task 1.1: the central-difference numerical gradient - not written '
        'yet (exercise 1.1 of chapter 1). Check it with: make check TASK=1.1 '
        '(in a notebook: %run -m npnorm.check 1.1)')
    # END TASK 1.1


def relative_error(
    analytic: np.ndarray, numeric: np.ndarray, floor: float = 1e-4
) -> np.ndarray:
    """Elementwise relative error with a floored denominator.

    .. math:: r_i = \\frac{|a_i - n_i|}{\\max(|a_i| + |n_i|,\\ \\text{floor})}

    The floor stops elements whose true gradient is (nearly) zero from turning
    round-off noise into a huge relative error.

    Parameters
    ----------
    analytic, numeric : ndarray, same shape

    Returns
    -------
    ndarray, float64, same shape, every entry in [0, 1]
    """
    # BEGIN TASK 1.2: relative error and a gradient checker
    raise NotImplementedError(
        'Task 1.2: relative error and a gradient checker - not written yet '
        '(exercise 1.2 of chapter 1). Check it with: make check TASK=1.2 (in '
        'a notebook: %run -m npnorm.check 1.2)')
    # END TASK 1.2


def gradient_check(
    f: Callable[[np.ndarray], np.ndarray],
    x: np.ndarray,
    analytic: np.ndarray,
    dout: np.ndarray,
    h: float = 1e-5,
    floor: float = 1e-4,
) -> tuple[float, tuple[int, ...]]:
    """Compare an analytic gradient with :func:`numerical_gradient` and report
    the worst element.

    Parameters
    ----------
    f, x, dout, h
        As for :func:`numerical_gradient` (the analytic gradient is that of
        ``sum(dout * f(x))``).
    analytic : ndarray, shape of ``x``
        The gradient your backward pass claims.
    floor : float
        As for :func:`relative_error`.

    Returns
    -------
    max_rel_error : float
        The largest elementwise relative error. A correct float64 backward pass
        typically scores 1e-11 to 1e-8 with this two-point formula; 1e-2 or
        more means a bug.
    worst_index : tuple of int
        Where it occurs (a tuple with one int per dimension of ``x``).

    Hints
    -----
    * Use your ``numerical_gradient`` and ``relative_error``.
    * ``np.argmax`` returns a flat index; ``np.unravel_index`` turns it into a
      tuple.
    """
    # BEGIN TASK 1.2: relative error and a gradient checker
    raise NotImplementedError(
        'Task 1.2: relative error and a gradient checker - not written yet '
        '(exercise 1.2 of chapter 1). Check it with: make check TASK=1.2 (in '
        'a notebook: %run -m npnorm.check 1.2)')
    # END TASK 1.2


# -- self-checks: `.venv/bin/python exercises/ch1_gradcheck.py` ---------------

def self_check_1_1() -> float:
    """Task 1.1: the numerical gradient of L(x) = sum(dout * tanh(x @ A)) for a
    random x (4, 3), A (3, 2) and dout (4, 2), summed with fixed weights (every
    element counts); you should get about
    -2.069996."""
    rng = np.random.default_rng(1)
    a = rng.standard_normal((3, 2))
    x = rng.standard_normal((4, 3))
    dout = rng.standard_normal((4, 2))
    grad = numerical_gradient(lambda z: np.tanh(z @ a), x, dout)
    return fingerprint(grad=(grad, (4, 3)))


def self_check_1_2() -> float:
    """Task 1.2: the gradient of sum(dout * x**2) for a random dout, claimed
    with one element 1.25 times too large and one exactly zero: the worst
    relative error is 0.25 / 2.25, and gradient_check must also say where it
    is; you should get about 0.1111111."""
    rng = np.random.default_rng(2)
    x = rng.uniform(1.0, 2.0, (3, 4)) * rng.choice([-1.0, 1.0], (3, 4))
    dout = rng.uniform(0.5, 2.0, (3, 4)) * rng.choice([-1.0, 1.0], (3, 4))
    x[0, 3] = 0.0             # a zero gradient: the floor keeps 0 / 0 out
    analytic = 2.0 * x * dout
    analytic[1, 2] *= 1.25
    err, worst = gradient_check(np.square, x, analytic, dout)
    if tuple(np.atleast_1d(worst).tolist()) != (1, 2):
        raise ValueError(f"gradient_check says the worst element is at "
                         f"{worst}; it is at (1, 2) (one int per dimension "
                         "of x)")
    return float(err)


if __name__ == "__main__":
    from npnorm.exercises import self_check_main

    self_check_main(globals())
